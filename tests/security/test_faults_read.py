"""Faults on the read side of a live server: files replaced, removed or truncated behind its
back while they are being downloaded, and files or folders it cannot read.

Whatever happens, nothing listed is served under a hash it does not have: a download either
delivers the bytes the listing named, or fails (a short body, a 404), and once the change has
settled the listing names the bytes on disk.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from builders import big_wheel, make_wheel
from server import Server, without_root_powers

pytestmark = pytest.mark.e2e

SIZE = 48 * 1024 * 1024  # large enough that a download is still running when the file changes


def listed(srv: Server, project: str) -> dict[str, str]:
    res = srv.project_json(project)
    if res.status != 200:
        return {}
    return {f["filename"]: f["hashes"]["sha256"] for f in res.json()["files"]}


def wait_for(check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def slow_download(
    srv: Server, filename: str
) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request("GET", f"/packages/{filename}")
    res = conn.getresponse()
    assert res.status == 200
    return res, conn


def finish(res: http.client.HTTPResponse, first: bytes) -> bytes | None:
    """The rest of the body, or None if it was cut short."""
    try:
        return first + res.read()
    except http.client.IncompleteRead:
        return None


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    root = tmp_path / "packages"
    root.mkdir()
    big_wheel(root, "big", "1.0", SIZE)
    with Server("--disable-fallback", root) as srv:
        srv.wait_listed("big")
        yield srv, root


@pytest.mark.parametrize("how", ["replaced", "removed", "truncated", "rewritten in place"])
def test_a_file_changed_while_it_is_downloaded(live: tuple[Server, Path], how: str) -> None:
    srv, root = live
    name = "big-1.0-py3-none-any.whl"
    path = root / name
    old_hash = listed(srv, "big")[name]
    res, conn = slow_download(srv, name)
    first = res.read(1024 * 1024)  # the transfer has begun
    if how == "replaced":
        staging = root.parent / "staging"
        staging.mkdir()
        new = big_wheel(staging, "big", "1.0", SIZE)
        os.replace(new, path)
    elif how == "removed":
        path.unlink()
    elif how == "truncated":
        with open(path, "r+b") as fh:  # as `truncate -s` does: open, cut, close
            fh.truncate(SIZE // 3)
    else:  # same size, other bytes, written over the old ones
        with open(path, "r+b") as fh:
            fh.seek(SIZE // 2)
            fh.write(os.urandom(4 * 1024 * 1024))
    body = finish(res, first)
    conn.close()
    if body is not None:
        # Delivered in full: it must be the bytes that were listed when it began.
        assert hashlib.sha256(body).hexdigest() == old_hash, (
            f"{how}: served bytes the listing never named"
        )
    # Once settled, the listing names what is on disk, and serves exactly that.
    if how == "removed":
        wait_for(lambda: name not in listed(srv, "big"))
        assert srv.get(f"/packages/{name}").status == 404
        return
    disk_hash = hashlib.sha256(path.read_bytes()).hexdigest()
    wait_for(lambda: listed(srv, "big").get(name) == disk_hash)
    again = srv.get(f"/packages/{name}")
    assert again.status == 200
    assert hashlib.sha256(again.body).hexdigest() == disk_hash
    assert srv.get("/health").status == 200


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "packages"
    d.mkdir()
    try:
        yield d
    finally:
        for p in d.rglob("*"):
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)  # so that tmp_path can be cleaned up


def test_unreadable_files_and_folders_are_skipped_and_the_rest_served(root: Path) -> None:
    make_wheel(root, "fine", "1.0")
    secret = make_wheel(root, "locked", "1.0")
    folder = root / "closed"
    folder.mkdir()
    make_wheel(folder, "hidden", "1.0")
    secret.chmod(0)
    folder.chmod(0)
    srv = Server("--disable-fallback", root, prefix=without_root_powers())
    with srv:
        srv.wait_listed("fine")
        assert srv.get("/health").status == 200
        # Not listed, but claimed: a name with a file here is never sent to the fallback.
        locked = srv.project_json("locked")
        assert locked.status == 200 and locked.json()["files"] == []
        assert srv.project_json("hidden").status == 404  # in a folder it cannot read: unknown
        assert srv.get("/packages/locked-1.0-py3-none-any.whl").status == 404
        page = srv.get("/simple/")
        assert page.status == 200 and "fine" in page.text and "locked" not in page.text
        got = srv.get("/packages/fine-1.0-py3-none-any.whl")
        assert got.status == 200
        assert (
            hashlib.sha256(got.body).hexdigest() == listed(srv, "fine")["fine-1.0-py3-none-any.whl"]
        )
        # Made readable again, they appear without a restart (the rescan or the watch).
        secret.chmod(0o644)
        folder.chmod(0o755)
        os.utime(secret)
        os.utime(folder / "hidden-1.0-py3-none-any.whl")
        wait_for(lambda: bool(listed(srv, "locked")), timeout=90)
    assert "cannot be read" in srv.output or "cannot read" in srv.output, srv.output


@pytest.mark.parametrize("size", [64 * 1024, 4 * 1024 * 1024], ids=["small", "large"])
def test_a_file_rewritten_in_place_with_its_stat_restored(tmp_path: Path, size: int) -> None:
    """Same size, same mtime, other bytes, while the server was down (rsync --inplace -t): the
    index cache, keyed on size, mtime and inode, lists the old hash after the restart. The
    download is refused (small files) or cut short (large ones), the server hashes the file
    again, and lists the new bytes."""
    root = tmp_path / "packages"
    path = big_wheel(root, "inplace", "1.0", size)
    name = path.name
    env = {"PKGSERVER_CACHE_DIR": str(tmp_path / "cache")}
    with Server("--disable-fallback", root, env=env) as srv:
        srv.wait_listed("inplace")
        old_hash = listed(srv, "inplace")[name]
    st = path.stat()
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = os.urandom(16)  # inside the stored member: still a wheel
    with open(path, "r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    new_hash = hashlib.sha256(data).hexdigest()
    assert new_hash != old_hash
    with Server("--disable-fallback", root, env=env) as srv:
        srv.wait_listed("inplace")
        assert listed(srv, "inplace")[name] == old_hash  # the stat cannot tell
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        conn.request("GET", f"/packages/{name}")
        res = conn.getresponse()
        if res.status == 200:
            assert finish(res, b"") is None, "a complete body of bytes the listing never named"
        else:
            assert res.status == 404
        conn.close()
        wait_for(lambda: listed(srv, "inplace").get(name) == new_hash)
        again = srv.get(f"/packages/{name}")
        assert again.status == 200 and hashlib.sha256(again.body).hexdigest() == new_hash
