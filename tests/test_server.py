"""The waitress server pkgserver runs on: connections stay open after a 304.

waitress 3.0 closes an HTTP/1.1 connection after any answer without a Content-Length, 304s
included; ``pkgserver.server`` keeps those open, since revalidation is what CI fleets do most.
"""

from __future__ import annotations

import http.client
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
from builders import make_wheel
from server import running_server, server_env, serving

App = Callable[[dict[str, Any], Any], list[bytes]]


def exchange(port: int, requests: list[bytes], timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send the requests one by one on one socket, reading each answer; returns everything read
    and whether the server closed the connection by the end."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        for req in requests:
            sock.sendall(req)
            received += _read_answer(sock)
        sock.settimeout(0.5)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
    return received, closed


def _read_answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


def _not_modified(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("304 Not Modified", [("ETag", '"x"')])
    return []


def _unknown_length(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"a", b"b"]


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def test_304_keeps_the_connection_open() -> None:
    with serving(_not_modified) as port:
        received, closed = exchange(port, [GET, GET, GET])
    assert received.count(b"HTTP/1.1 304 Not Modified\r\n") == 3
    assert b"Connection: close" not in received
    assert b"Content-Length" not in received and b"Transfer-Encoding" not in received
    assert not closed


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
    ],
    ids=["client-asks-close", "http-1.0"],
)
def test_304_still_closes_when_the_client_asks_or_speaks_http_1_0(request_line: bytes) -> None:
    with serving(_not_modified) as port:
        received, closed = exchange(port, [request_line])
    assert b" 304 Not Modified\r\n" in received
    assert closed


def test_a_body_of_unknown_length_still_closes_the_connection() -> None:
    # waitress's own rule for bodies it cannot delimit is left alone (it chunks and closes).
    with serving(_unknown_length) as port:
        received, _ = exchange(port, [GET])
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close\r\n" in received


@pytest.mark.e2e
def test_revalidations_of_pages_and_files_share_one_connection(tmp_path: Path) -> None:
    pkgs = tmp_path / "packages"
    pkgs.mkdir()
    wheel = make_wheel(pkgs, "keepalive-demo", "1.0")
    old = time.time() - 60
    os.utime(wheel, (old, old))
    with running_server("--disable-fallback", pkgs) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        page = {"Accept": "text/html"}
        gzipped = {"Accept": "text/html", "Accept-Encoding": "gzip"}
        conn.request("GET", "/simple/keepalive-demo/", headers=page)
        res = conn.getresponse()
        body = res.read()
        assert res.status == 200
        href = urljoin("/simple/keepalive-demo/", body.decode().split('href="')[1].split("#")[0])
        revalidations = []
        for path, headers in [
            ("/simple/keepalive-demo/", page),
            ("/simple/keepalive-demo/", gzipped),
            (href, {}),
        ]:
            conn.request("GET", path, headers=headers)
            res = conn.getresponse()
            res.read()
            etag = res.getheader("ETag")
            assert res.status == 200 and etag
            revalidations.append((path, {**headers, "If-None-Match": etag}))
        sock = conn.sock
        assert sock is not None
        for path, headers in revalidations * 3:
            conn.request("GET", path, headers=headers)
            res = conn.getresponse()
            assert res.read() == b""
            assert res.status == 304, (path, res.status)
            assert res.getheader("Connection") is None
            assert conn.sock is sock, "the server closed the connection after a revalidation"
        conn.close()
        assert "too few bytes" not in srv.output


def test_large_pages_are_sent_whole_from_the_cached_rendering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pages above LARGE_PAGE (the /simple/ index of a big directory) go out through waitress's
    # file wrapper instead of being copied per connection; lowered here so a few projects do.
    from conftest import make_testapp

    from pkgserver import answers as answers_module

    for n in range(30):
        make_wheel(tmp_path, f"bigindex{n}", "1.0")
    old = time.time() - 60
    for p in tmp_path.iterdir():
        os.utime(p, (old, old))
    testapp, _ = make_testapp([tmp_path], disable_fallback=True)
    monkeypatch.setattr(answers_module, "LARGE_PAGE", 64)
    with serving(testapp.app) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        bodies = []
        for method in ("GET", "GET", "HEAD"):
            conn.request(method, "/simple/", headers={"Accept": "text/html"})
            res = conn.getresponse()
            bodies.append(res.read())
            assert res.status == 200
            assert int(res.getheader("Content-Length", "-1")) == len(bodies[0])
        etag = res.getheader("ETag")
        assert etag is not None
        conn.request("GET", "/simple/", headers={"Accept": "text/html", "If-None-Match": etag})
        res = conn.getresponse()
        assert res.status == 304 and res.read() == b""
        conn.close()
    assert bodies[0] == bodies[1] and bodies[2] == b""
    assert bodies[0].count(b"<a ") == 30
    assert bodies[0] == testapp.get("/simple/", headers={"Accept": "text/html"}).body


def test_startup_line_names_every_address_of_a_multi_socket_server() -> None:
    # --host localhost resolving to 127.0.0.1 and ::1 gives waitress's MultiSocketServer, which
    # has no effective_port; the "serving" line must list both instead of crashing.
    from types import SimpleNamespace

    from pkgserver.service import listening as _listening

    multi = SimpleNamespace(effective_listen=[("127.0.0.1", 8080), ("::1", 8080)])
    assert _listening(multi, "localhost") == "http://127.0.0.1:8080/, http://[::1]:8080/"
    single = SimpleNamespace(effective_port=8081)
    assert _listening(single, "0.0.0.0") == "http://0.0.0.0:8081/"
    assert _listening(single, "::") == "http://[::]:8081/"


@pytest.mark.e2e
def test_sigterm_during_a_long_first_scan_stops_promptly(tmp_path: Path) -> None:
    # docker stop during the first start of a large directory: pkgserver is the container's
    # PID 1 and must not ignore SIGTERM until the scan is over.
    import subprocess
    import sys
    import zipfile

    pkgs = tmp_path / "packages"
    pkgs.mkdir()
    for n in range(4000):
        name = f"scanpkg{n}"
        with zipfile.ZipFile(pkgs / f"{name}-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(
                f"{name}-1.0.dist-info/METADATA",
                f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n" + "x" * 20000,
            )
            zf.writestr(f"{name}-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\n")
    old = time.time() - 3600  # settled files: read by the first scan, not deferred
    for p in pkgs.iterdir():
        os.utime(p, (old, old))
    env = server_env({"PKGSERVER_CACHE_DIR": "off"})
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pkgserver",
                "run",
                "-p",
                "0",
                "-i",
                "127.0.0.1",
                "-P",
                ".",
                "-a",
                ".",
                str(pkgs),
            ],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "reading 4000 files" not in log_path.read_text():  # the scan is under way
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.01)
        started = time.monotonic()
        proc.terminate()
        proc.wait(timeout=30)
        stopped_in = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rest = log_path.read_text()
    assert proc.returncode == 0, rest
    assert "stopped before serving" in rest and "Traceback" not in rest, rest
    assert " serving " not in rest
    assert stopped_in < 10, stopped_in
