"""The attack suite's harness: a live pkgserver per module, and what every attack ends with.

(Fixtures: conftest.py.)

Each attack asserts its own status code. The ``unchanged`` fixture then checks two things:
- the package directory is byte for byte what it was: no new file, no temp file, nothing lost;
- the server is healthy: /health answers 200, and every seeded file is listed and downloads with
  the sha256 the index lists for it.

The seeded directory holds two projects and, beside the directory, a file the server must never
serve (``SECRET`` marks it).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from builders import make_sdist, make_wheel
from passlib.hash import bcrypt
from server import Response, Server

pytestmark = pytest.mark.e2e

USER = "alice"
PASSWORD = "s3cret-Pa55"
SECRET = "TOP-SECRET-MARKER-7f3a"  # content of a file beside the package directory
SEEDED = {"demo": 2, "other": 1}  # project -> files seeded


def basic(user: str = USER, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def htpasswd_line(user: str, password: str, rounds: int = 4) -> str:
    """A bcrypt entry; 4 rounds keeps a suite of many authenticated requests fast."""
    return f"{user}:{bcrypt.using(ident='2y', rounds=rounds).hash(password)}\n"


class Target:
    """A running server, its package directory, and the checks of the harness."""

    def __init__(self, srv: Server, root: Path, base: Path) -> None:
        self.srv = srv
        self.root = root
        self.base = base

    # -- state -----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, tuple[int, str]]:
        """Every file under the package directory, hidden ones included: relpath -> (size,
        sha256)."""
        out = {}
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                path = Path(dirpath) / name
                data = path.read_bytes()
                out[str(path.relative_to(self.root))] = (
                    len(data),
                    hashlib.sha256(data).hexdigest(),
                )
        return out

    def assert_healthy(self) -> None:
        res = self.srv.get("/health")
        assert res.status == 200, f"/health answered {res.status}"
        for project, count in SEEDED.items():
            listing = self.srv.project_json(project)
            assert listing.status == 200, f"/simple/{project}/ answered {listing.status}"
            files = listing.json()["files"]
            assert len(files) == count, f"{project}: {[f['filename'] for f in files]}"
            for f in files:
                got = self.download(urljoin(f"/simple/{project}/", f["url"]))
                assert got.status == 200, f"{f['filename']}: {got.status}"
                assert hashlib.sha256(got.body).hexdigest() == f["hashes"]["sha256"]

    def download(self, url: str) -> Response:
        parts = urlsplit(url)
        return self.srv.get(parts.path + (f"?{parts.query}" if parts.query else ""))

    # -- requests --------------------------------------------------------------------------
    def post(
        self,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
        auth: str | None = "default",
        path: str = "/",
    ) -> Response:
        sent = {"Content-Type": content_type}
        if auth == "default":
            sent["Authorization"] = basic()
        elif auth is not None:
            sent["Authorization"] = auth
        sent.update(headers or {})
        return self.srv.request("POST", path, body=body, headers=sent, timeout=30)

    def raw(self, request: bytes, timeout: float = 10.0) -> bytes:
        """Send bytes as they are (no client-side checks) and return the whole answer."""
        return raw_exchange(self.srv.port, request, timeout)


def raw_exchange(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    line = answer.split(b"\r\n", 1)[0]
    assert line.startswith(b"HTTP/1."), f"not an HTTP answer: {answer[:200]!r}"
    return int(line.split()[1])


def header_block(answer: bytes) -> bytes:
    return answer.split(b"\r\n\r\n", 1)[0]


def seed(root: Path) -> None:
    root.mkdir(parents=True)
    make_wheel(root, "demo", "1.0", summary="the demo")
    make_sdist(root, "demo", "1.0", summary="the demo", metadata_version="2.2")
    make_wheel(root, "other", "2.0", summary="another")


def start_target(
    base: Path, *args: str, env: Mapping[str, str | None] | None = None, wait: bool = True
) -> Target:
    """Seed ``base``/packages, start a server on it, and (``wait``) wait until it lists the
    seeded projects (not possible when listing needs a password)."""
    root = base / "packages"
    seed(root)
    (base / "secret.txt").write_text(SECRET + "\n")
    htpasswd = base / "htpasswd"
    htpasswd.write_text(htpasswd_line(USER, PASSWORD) + htpasswd_line("bob", "bobs-password"))
    srv = Server("-P", htpasswd, *args, root, env=env)
    srv.start()
    target = Target(srv, root, base)
    for project in SEEDED if wait else ():
        srv.wait_listed(project)
    return target


def new_connection(port: int, timeout: float = 10.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
