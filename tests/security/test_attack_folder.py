"""Attacks by someone who can put files into the package directory (scp, a shared volume), on a
live server: odd things where records or listed files are expected, huge sparse files, and files
the server cannot read. The server must keep answering, never hang a thread, never write outside
the directory, and never send a name that has files here to the fallback index.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import time
from pathlib import Path

import pytest
from builders import make_wheel
from server import Server

pytestmark = pytest.mark.e2e

JSON = "application/vnd.pypi.simple.v1+json"


def _rss_mb(srv: Server) -> float:
    assert srv.proc is not None
    with open(f"/proc/{srv.proc.pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _answers_quickly(srv: Server, path: str, seconds: float = 3.0) -> int:
    started = time.monotonic()
    res = srv.request("GET", path, timeout=seconds, headers={"Accept": JSON})
    assert time.monotonic() - started < seconds
    return res.status


def _state(root: Path) -> Path:
    d = root / ".pkgserver"
    d.mkdir(exist_ok=True)
    return d


# -- the records ---------------------------------------------------------------------------------
def test_a_fifo_as_the_hosted_names_hangs_nothing(tmp_path: Path) -> None:
    root = tmp_path / "packages"
    root.mkdir()
    make_wheel(root, "corp-app", "1.0")
    os.mkfifo(_state(root) / "hosted-projects")
    with Server(root) as srv:
        srv.wait_listed("corp-app")
        # It was re-read (and hung a thread) every second: ask for longer than that.
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            assert _answers_quickly(srv, "/health") == 200
            assert _answers_quickly(srv, "/simple/not-ours/") == 303
            time.sleep(0.2)
    assert srv.output.count("hosted-projects: not a regular file") == 1, srv.output


def test_a_link_to_dev_zero_as_the_hosted_names_costs_no_memory(tmp_path: Path) -> None:
    root = tmp_path / "packages"
    root.mkdir()
    make_wheel(root, "corp-app", "1.0")
    (_state(root) / "hosted-projects").symlink_to("/dev/zero")
    with Server(root) as srv:
        srv.wait_listed("corp-app")
        before = _rss_mb(srv)
        for _ in range(15):
            assert _answers_quickly(srv, "/simple/not-ours/") == 303
            time.sleep(0.2)
        assert _rss_mb(srv) - before < 50  # it grew ~1.8 GB/s
    assert "symbolic link" in srv.output


def test_hosted_names_are_never_written_through_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    root = tmp_path / "packages"
    root.mkdir()
    (_state(root) / "hosted-projects").symlink_to(outside)
    with Server(root) as srv:
        make_wheel(root, "newcomer", "1.0")  # a new name: claimed, and recorded if it can be
        srv.wait_listed("newcomer")
        (root / "newcomer-1.0-py3-none-any.whl").unlink()
        time.sleep(0.5)
        assert srv.project_json("newcomer").status == 200  # claimed all the same, in memory
    assert outside.read_text() == "precious\n"


def test_a_swapped_state_folder_is_not_written_through(tmp_path: Path) -> None:
    """The folder itself replaced by a link to another folder the server may write."""
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    victim = victim_dir / "hosted-projects"
    victim.write_text("untouched\n")
    victim.chmod(0o600)
    root = tmp_path / "packages"
    root.mkdir()
    make_wheel(root, "corp-app", "1.0")
    with Server(root) as srv:
        srv.wait_listed("corp-app")
        shutil.rmtree(root / ".pkgserver")
        (root / ".pkgserver").symlink_to(victim_dir)
        make_wheel(root, "newcomer", "1.0")
        srv.wait_listed("newcomer")
        time.sleep(1.2)
        assert srv.project_json("corp-app").status == 200
    assert victim.read_text() == "untouched\n"
    assert victim.stat().st_mode & 0o777 == 0o600
    assert "not a real folder" in srv.output


# -- listed files --------------------------------------------------------------------------------
def test_a_listed_file_swapped_for_a_fifo_is_a_404_not_a_hang(tmp_path: Path) -> None:
    root = tmp_path / "packages"
    root.mkdir()
    wheel = make_wheel(root, "corp-app", "1.0")
    make_wheel(root, "other", "1.0")
    # No watcher (a network filesystem), so the catalog still lists the file when it is asked
    # for: the download itself must not wait on the FIFO.
    with Server(root, "--threads", "4", "--no-watch", "--rescan-interval", "3600") as srv:
        srv.wait_listed("corp-app")
        srv.wait_listed("other")
        # Ask many times over, more than there are worker threads.
        fifo = root / ".fifo"
        os.mkfifo(fifo)
        fifo.rename(wheel)
        path = f"/packages/{wheel.name}"
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(lambda _: _answers_quickly(srv, path), range(32)))
        assert set(statuses) == {404}
        assert _answers_quickly(srv, "/health") == 200
        assert _answers_quickly(srv, "/packages/other-1.0-py3-none-any.whl") == 200


# -- sparse and oversized files ------------------------------------------------------------------
def test_a_huge_sparse_file_neither_delays_the_start_nor_is_hashed(tmp_path: Path) -> None:
    root = tmp_path / "packages"
    root.mkdir()
    make_wheel(root, "corp-app", "1.0")
    with open(root / "sparse-1.0-py3-none-any.whl", "wb") as fh:
        fh.truncate(64 * 1024**3)  # 64 GiB, no disk space
    started = time.monotonic()
    with Server(root) as srv:
        assert time.monotonic() - started < 10  # hashing it took ~220 s before serving
        assert srv.get("/health").status == 200
        srv.wait_listed("corp-app")
        res = srv.project_json("sparse")
        assert res.status == 200 and res.json()["files"] == []  # claimed, not listed
    assert "larger than --max-file-size" in srv.output


def test_a_large_file_is_hashed_while_the_rest_goes_on(tmp_path: Path) -> None:
    root = tmp_path / "packages"
    root.mkdir()
    make_wheel(root, "corp-app", "1.0")
    big = root / "big-1.0-py3-none-any.whl"
    with open(big, "wb") as fh:
        fh.truncate(4 * 1024**3)  # under the limit below: hashed, for a few seconds
    os.utime(big, (time.time() - 60, time.time() - 60))
    with Server(root, "--max-file-size", "8G") as srv:
        first = srv.get("/health")
        srv.wait_listed("corp-app")
        # Meanwhile a copied file is listed, and the big one's name is claimed already.
        make_wheel(root, "newcomer", "1.0")
        took = srv.wait_listed("newcomer", timeout=5)
        res = srv.project_json("big")
        assert res.status == 200
        still_hashing = not res.json()["files"]
        deadline = time.monotonic() + 60
        while srv.get("/health").status != 200:
            assert time.monotonic() < deadline, srv.output
            time.sleep(0.2)
        srv.wait_listed("big", big.name, timeout=30)
    assert took < 2.5
    if still_hashing:  # the usual case: then /health said so
        assert first.status == 503 and b"still being hashed" in first.body


# -- names with files the server skips are still claimed -----------------------------------------
def test_names_of_skipped_files_are_never_sent_to_the_fallback(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = make_wheel(outside, "linked-out", "1.0")
    root = tmp_path / "packages"
    root.mkdir()
    make_wheel(root, "corp-app", "1.0")
    (root / target.name).symlink_to(target)  # a link that leaves the directory: skipped
    (root / "dangling-1.0-py3-none-any.whl").symlink_to(tmp_path / "nowhere")
    odd = os.path.join(os.fsencode(root), b"caf\xe9")  # a folder name that is not UTF-8
    os.mkdir(odd)
    make_wheel(Path(os.fsdecode(odd)), "latin-pkg", "1.0")
    with Server(root) as srv:  # the fallback (PyPI) is on: unknown names are redirected
        srv.wait_listed("corp-app")
        assert srv.project_json("not-ours").status == 303
        for name in ("linked-out", "dangling", "latin-pkg"):
            res = srv.project_json(name)
            assert res.status == 200 and res.json()["files"] == [], name
        # And a file of a new name copied in later: claimed as soon as it is seen.
        (root / "late-1.0-py3-none-any.whl").symlink_to(tmp_path / "nowhere-else")
        time.sleep(0.5)
        assert srv.project_json("late").status == 200


# -- archives that cost CPU without exploding ----------------------------------------------------
def _cpu_seconds(srv: Server) -> float:
    assert srv.proc is not None
    with open(f"/proc/{srv.proc.pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_an_archive_that_costs_a_second_to_refuse_is_refused_once(tmp_path: Path) -> None:
    import bz2
    import tarfile

    root = tmp_path / "packages"
    root.mkdir()
    # A 14 KB .tar.bz2 whose first member is 300 MB of zeros: finding no PKG-INFO takes the
    # scan to its 256 MB bound, about a second of CPU. Asked for again under new Host names
    # (so no rendering is reused), that second was spent on every request.
    member = tarfile.TarInfo("bomb-1.0/big.bin")
    member.size = 300 * 1024 * 1024
    one_mb = bz2.compress(bytes(1024 * 1024), 9)
    (root / "bomb-1.0.tar.bz2").write_bytes(
        bz2.compress(member.tobuf(tarfile.USTAR_FORMAT), 9) + one_mb * 300
    )
    with Server("--disable-fallback", root) as srv:
        srv.wait_listed("bomb")
        before = _cpu_seconds(srv)
        for i in range(12):
            res = srv.request("GET", "/pypi/bomb/json", headers={"Host": f"mirror{i}.example"})
            assert res.status == 200
        spent = _cpu_seconds(srv) - before
    assert spent < 6, f"{spent:.1f} s of CPU for 12 requests"


@pytest.mark.parametrize("size", [20 * 1024**2, 40 * 1024**2], ids=["indexer", "hasher"])
def test_a_file_extended_while_it_is_read_holds_nothing_up(tmp_path: Path, size: int) -> None:
    # The size checked is the size read: a file made 8 TiB (sparse) while it was being hashed
    # held the indexer (or the hasher) for hours, and nothing copied in was seen meanwhile.
    root = tmp_path / "packages"
    root.mkdir()
    old = make_wheel(root, "corp-old", "1.0")
    with Server(root) as srv:
        srv.wait_listed("corp-old")
        big = root / "big-1.0.tar.gz"
        with open(big, "wb") as fh:
            fh.truncate(size)
        assert srv.proc is not None
        fds = Path(f"/proc/{srv.proc.pid}/fd")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # extend it once the server has it open, if we see it
            opened = False
            for fd in list(fds.iterdir()):
                try:
                    opened = os.readlink(fd) == str(big)
                except OSError:
                    continue
                if opened:
                    break
            if opened:
                break
        os.truncate(big, 8 * 1024**4)
        make_wheel(root, "corp-new", "1.0")
        srv.wait_listed("corp-new", timeout=5)
        old.unlink()
        deadline = time.monotonic() + 5
        while srv.project_json("corp-old").json()["files"]:
            assert time.monotonic() < deadline, "a removal was not seen"
            time.sleep(0.1)
        assert srv.get("/health").status == 200
        res = srv.project_json("big")
        assert res.status == 200 and res.json()["files"] == []  # claimed, never listed
