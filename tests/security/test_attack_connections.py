"""Connection exhaustion (slowloris) against a live server, with its default settings.

One anonymous client opened 398 connections and sent half a request on each; with waitress's
connection limit reached, nothing else was accepted and ``/health`` went off the air. The
attacker here connects from 127.0.0.2 (loopback is a /8), the health check from 127.0.0.1.
"""

from __future__ import annotations

import http.client
import resource
import socket
import time
from pathlib import Path

import pytest
from builders import make_wheel
from server import Server

pytestmark = pytest.mark.e2e

ATTACKER = "127.0.0.2"


@pytest.fixture(autouse=True)
def _enough_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard or hard == resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))


def _half_requests(port: int, count: int) -> list[socket.socket]:
    """``count`` connections from ATTACKER, each with half a request's headers sent."""
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.bind((ATTACKER, 0))
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /simple/ HTTP/1.1\r\nHost: x\r\nX-a: ")
        except OSError:
            s.close()
            continue
        socks.append(s)
    return socks


def _closed_by_server(s: socket.socket) -> bool:
    s.settimeout(0.01)
    try:
        return s.recv(1) == b""
    except (TimeoutError, BlockingIOError):
        return False
    except OSError:
        return True


def _health_time(port: int) -> float:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    return time.monotonic() - started


def test_one_client_holding_many_half_requests_cannot_take_health_off_the_air(
    tmp_path: Path,
) -> None:
    make_wheel(tmp_path, "corp-app", "1.0")
    with Server("--disable-fallback", tmp_path) as srv:
        socks = _half_requests(srv.port, 1200)
        try:
            time.sleep(0.5)
            assert _health_time(srv.port) < 2.0  # it could not connect at all before
            res = srv.project_json("corp-app")
            assert res.status == 200
            # Beyond half the limit, its new connections were closed at once.
            closed = sum(_closed_by_server(s) for s in socks)
            assert closed >= 1200 - 600, closed
        finally:
            for s in socks:
                s.close()
    assert "closing its new ones" in srv.output


def test_half_sent_headers_are_dropped_after_the_header_timeout(tmp_path: Path) -> None:
    with Server("--disable-fallback", "--header-timeout", "1", tmp_path) as srv:
        socks = _half_requests(srv.port, 5)
        idle = socket.create_connection(("127.0.0.1", srv.port))  # no bytes at all: idle
        try:
            deadline = time.monotonic() + 6
            while not all(_closed_by_server(s) for s in socks):
                assert time.monotonic() < deadline, "half requests were not dropped"
                time.sleep(0.1)
            assert not _closed_by_server(idle)  # an idle keep-alive lasts --channel-timeout
            assert _health_time(srv.port) < 2.0
        finally:
            for s in [*socks, idle]:
                s.close()


def test_a_slow_upload_body_is_not_cut_by_the_header_timeout(tmp_path: Path) -> None:
    # The headers came in time; a body may take longer than the header timeout while it
    # flows at a reasonable rate (here 2 KB/s over 3 s, with a 1 s header timeout).
    with Server("--disable-fallback", "--header-timeout", "1", tmp_path) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port))
        try:
            body = b":action=remove_pkg&name=corp&version=1.0&pad=" + b"x" * 6000
            s.sendall(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
                b"\r\nContent-Length: %d\r\n\r\n" % len(body)
            )
            step = len(body) // 6 + 1
            for i in range(0, len(body), step):  # 6 pieces over ~3 s
                s.sendall(body[i : i + step])
                time.sleep(0.5)
            s.settimeout(5)
            assert s.recv(12).startswith(b"HTTP/1.1 ")  # answered (403: uploads are off)
        finally:
            s.close()


def test_a_body_trickled_slower_than_500_bytes_a_second_is_dropped(tmp_path: Path) -> None:
    # Complete headers, then a byte now and then: never idle, never "sending headers". The
    # body must keep to 500 B/s over twice the header timeout (here 2 s).
    with Server("--disable-fallback", "--header-timeout", "1", tmp_path) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port))
        try:
            s.sendall(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
                b"\r\nContent-Length: 1000\r\n\r\n"
            )
            deadline = time.monotonic() + 12
            closed = False
            while time.monotonic() < deadline and not closed:
                try:
                    s.sendall(b"a")
                except OSError:
                    closed = True
                    break
                time.sleep(0.5)
                closed = _closed_by_server(s)
            assert closed, "a trickled body held its connection"
            assert _health_time(srv.port) < 2.0
        finally:
            s.close()
