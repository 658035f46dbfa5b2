"""Uploads against a real server process: a full disk, kill -9 mid-upload, a vanishing client,
and memory during a 500 MB upload."""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from builders import big_wheel
from forms import streamed_form
from server import Server, running_server

from pkgserver.publish import TEMP_PREFIX

pytestmark = pytest.mark.e2e

AUTH = "Basic " + base64.b64encode(b"alice:s3cret").decode()


def upload(srv: Server, path: Path, timeout: float = 120) -> tuple[int, str]:
    chunks, length, ctype = streamed_form(path)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    conn.request(
        "POST",
        "/",
        body=chunks,
        headers={"Content-Type": ctype, "Content-Length": str(length), "Authorization": AUTH},
    )
    res = conn.getresponse()
    body = res.read().decode()
    conn.close()
    return res.status, body


def leftovers(root: Path) -> list[str]:
    """Hidden files and folders, but for the server's record of hosted names (.pkgserver/)."""
    state = root / ".pkgserver"
    return [
        p.name
        for p in root.rglob("*")
        if p.name.startswith(".") and p != state and state not in p.parents
    ]


def health(srv: Server) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.request("GET", "/health")
    status = conn.getresponse().status
    conn.close()
    return status


def vm_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_answers_507_leaves_nothing_and_a_retry_succeeds(
    small_disk: Path, htpasswd: Path, tmp_path: Path
) -> None:
    big = big_wheel(tmp_path / "dist", "bigpkg", "1.0", 4 * 1024 * 1024)
    small = big_wheel(tmp_path / "dist", "smallpkg", "1.0", 100 * 1024)
    with running_server("-P", str(htpasswd), "--disable-fallback", str(small_disk)) as srv:
        status, body = upload(srv, big)
        assert status == 507, body
        assert "out of disk space" in body
        assert os.listdir(small_disk) == []
        status, body = upload(srv, small)
        assert status == 200, body
        assert (small_disk / small.name).read_bytes() == small.read_bytes()
        # The big file again, once there is room (the disk grew): the retry succeeds.
        subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
        status, body = upload(srv, big)
        assert status == 200, body
        assert health(srv) == 200
    assert leftovers(small_disk) == []


def test_kill_9_mid_upload_then_restart_leaves_a_clean_directory(
    htpasswd: Path, tmp_path: Path
) -> None:
    root = tmp_path / "packages"
    root.mkdir()
    big = big_wheel(tmp_path / "dist", "bigpkg", "1.0", 300 * 1024 * 1024)
    srv = Server("-P", str(htpasswd), "--disable-fallback", str(root))
    srv.start()
    try:
        thread, _ = upload_until_writing(srv, big, root)
        assert srv.proc is not None
        os.kill(srv.proc.pid, signal.SIGKILL)
        thread.join(30)
    finally:
        srv._kill()  # killed on purpose: no complaint about its exit status
    assert not (root / big.name).exists(), "a partial file was published under the final name"
    with running_server("-P", str(htpasswd), "--disable-fallback", str(root)) as again:
        assert leftovers(root) == [], "the restart did not sweep the temp file"
        status, body = upload(again, big)
        assert status == 200, body
        assert (
            hashlib.sha256((root / big.name).read_bytes()).digest()
            == hashlib.sha256(big.read_bytes()).digest()
        )


@pytest.mark.parametrize("grace", ["30", "0"])
def test_sigterm_mid_upload_finishes_it_or_removes_it(
    htpasswd: Path, tmp_path: Path, grace: str
) -> None:
    # docker stop: SIGTERM while an upload is being written into the package directory. Within
    # --shutdown-timeout the upload is published whole and answered; past it, its temp file is
    # removed before the process ends. Either way no partial file stays behind, under any name.
    root = tmp_path / "packages"
    root.mkdir()
    big = big_wheel(tmp_path / "dist", "termpkg", "1.0", 300 * 1024 * 1024)
    srv = Server("-P", str(htpasswd), "--shutdown-timeout", grace, "--disable-fallback", str(root))
    srv.start()
    assert srv.proc is not None
    thread, result = upload_until_writing(srv, big, root)
    os.kill(srv.proc.pid, signal.SIGTERM)
    assert srv.proc.wait(timeout=60) == 0
    thread.join(30)
    srv._close_pipe()  # it has exited; collect what it logged
    assert "shutting down" in srv.output and "Traceback" not in srv.output
    assert leftovers(root) == [], "a temp file outlived the shutdown"
    published = root / big.name
    if grace == "0":
        assert "removed 1 temporary files of uploads interrupted" in srv.output
        assert "requests still running after 0s; abandoned" in srv.output
        assert not published.exists()
        assert not (result and isinstance(result[0], tuple) and result[0][0] == 200), result
    else:
        assert (
            hashlib.sha256(published.read_bytes()).digest()
            == hashlib.sha256(big.read_bytes()).digest()
        )
        # The socket loop runs on during the grace time: the client was told.
        assert result and isinstance(result[0], tuple) and result[0][0] == 200, result


def upload_until_writing(
    srv: Server, path: Path, root: Path
) -> tuple[threading.Thread, list[object]]:
    """Start uploading ``path`` in a thread and return once the server is writing it into
    ``root`` (its temp file is there); the list gets the upload's outcome when it ends."""
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(_try_upload(srv, path)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
        n.startswith(TEMP_PREFIX) for n in os.listdir(root)
    ):
        time.sleep(0.005)
    assert any(n.startswith(TEMP_PREFIX) for n in os.listdir(root)), "the upload never reached disk"
    return thread, result


def _try_upload(srv: Server, path: Path) -> object:
    try:
        return upload(srv, path, timeout=60)
    except OSError as exc:
        return exc


def test_client_that_vanishes_mid_body_leaves_nothing(htpasswd: Path, tmp_path: Path) -> None:
    root = tmp_path / "packages"
    root.mkdir()
    whl = big_wheel(tmp_path / "dist", "pkg", "1.0", 2 * 1024 * 1024)
    chunks, length, ctype = streamed_form(whl)
    body = b"".join(chunks)
    with running_server("-P", str(htpasswd), "--disable-fallback", str(root)) as srv:
        for cut in (10, len(body) // 2, len(body) - 10):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
                sock.sendall(
                    f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {length}\r\nAuthorization: {AUTH}\r\n\r\n".encode()
                    + body[:cut]
                )
            time.sleep(0.2)
            assert os.listdir(root) == []
        assert health(srv) == 200
        status, _ = upload(srv, whl)
        assert status == 200


def test_500_mb_upload_streams_with_flat_memory(htpasswd: Path, tmp_path: Path) -> None:
    root = tmp_path / "packages"
    root.mkdir()
    huge = big_wheel(tmp_path / "dist", "hugepkg", "1.0", 500 * 1024 * 1024)
    with running_server("-P", str(htpasswd), "--disable-fallback", str(root)) as srv:
        assert srv.proc is not None
        small = big_wheel(tmp_path / "dist", "warmup", "1.0", 1024 * 1024)
        assert upload(srv, small)[0] == 200  # warm up every code path first
        before = vm_kb(srv.proc.pid, "VmHWM")
        status, body = upload(srv, huge, timeout=300)
        assert status == 200, body
        peak = vm_kb(srv.proc.pid, "VmHWM")
        grew_mb = (peak - before) / 1024
        print(
            f"MEMORY peak RSS before {before / 1024:.0f} MB, after a 500 MB upload {peak / 1024:.0f} MB"
        )
        assert grew_mb < 64, f"peak RSS grew by {grew_mb:.0f} MB during a 500 MB upload"
        assert (root / huge.name).stat().st_size == huge.stat().st_size
        listed = srv.project_json("hugepkg").json()
        assert (
            listed["files"][0]["hashes"]["sha256"] == hashlib.sha256(huge.read_bytes()).hexdigest()
        )


def test_no_password_ever_reaches_the_log(htpasswd: Path, tmp_path: Path) -> None:
    root = tmp_path / "packages"
    root.mkdir()
    whl = big_wheel(tmp_path / "dist", "pkg", "1.0", 1024)
    chunks, _length, ctype = streamed_form(whl)
    body = b"".join(chunks)
    with running_server(
        "-vv", "-P", str(htpasswd), "-a", "update,list", "--disable-fallback", str(root)
    ) as srv:
        for secret in ("s3cret", "Wr0ngPassw0rd!", "x" * 100):
            token = base64.b64encode(f"alice:{secret}".encode()).decode()
            srv.request(
                "POST",
                "/",
                body=body,
                headers={"Content-Type": ctype, "Authorization": "Basic " + token},
            )
            srv.request("GET", "/simple/", headers={"Authorization": "Basic " + token})
        output = srv.output
    for secret in ("s3cret", "Wr0ngPassw0rd!", "x" * 100):
        assert secret not in output
        assert base64.b64encode(f"alice:{secret}".encode()).decode() not in output
    assert "alice uploaded" in output  # the log does say who uploaded
