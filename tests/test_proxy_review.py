"""The caching proxy (--proxy) reviewed as an attacker and a careful user would: each test here
is a bug that was found and fixed (the scripted upstream of test_proxy.py plays the upstream).
"""

from __future__ import annotations

import argparse
import errno
import gzip
import hashlib
import http.client
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from builders import make_wheel
from test_proxy import JSON_TYPE, Upstream, cache_files, proxied_app, wheel_bytes

from pkgserver import mirror
from pkgserver.proxy import DirectoryProxyStore, Fetcher
from pkgserver.server import make_server


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    try:
        up.stop()
    except OSError:
        pass


@contextmanager
def serving(app: Any) -> Iterator[int]:
    """The WSGI app behind pkgserver's waitress on 127.0.0.1 (what a client really sees)."""
    server = make_server(app, host="127.0.0.1", port=0, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield server.effective_port
    finally:
        server.close()


def html_page(name: str, filename: str, digest: str) -> tuple[int, dict[str, str], bytes]:
    """A PEP 503 page (no sizes: HTML has none) listing one file at /files/<filename>."""
    body = f'<a href="../../files/{filename}#sha256={digest}">{filename}</a>'.encode()
    return 200, {"Content-Type": "text/html"}, body


def chunked(data: bytes) -> Any:
    """An upstream answer without Content-Length (chunked), as many servers stream files."""

    def handler(h: Any) -> None:
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for i in range(0, len(data), 65536):
            part = data[i : i + 65536]
            h.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        h.wfile.write(b"0\r\n\r\n")

    return handler


# -- integrity ------------------------------------------------------------------------------------
def test_a_file_of_unknown_length_is_never_sent_whole_unless_it_matched(
    tmp_path: Path, upstream: Upstream
) -> None:
    """No size on the page, no Content-Length from the upstream: the answer had no length
    either, and a body cut short at a mismatch ended like a whole one (chunked)."""
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    upstream.routes["/simple/lib-c/"] = html_page("lib-c", "lib_c-1.0.tar.gz", digest)
    upstream.routes["/files/lib_c-1.0.tar.gz"] = chunked(data[:-1] + b"X")
    upstream.routes["/simple/lib-d/"] = html_page("lib-d", "lib_d-1.0.tar.gz", digest)
    upstream.routes["/files/lib_d-1.0.tar.gz"] = chunked(data)
    root = tmp_path / "root"
    root.mkdir()
    app, _, _ = proxied_app(root, upstream)
    with serving(app.app) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/proxy/lib-c/lib_c-1.0.tar.gz")
        res = conn.getresponse()
        try:
            body = res.read()
        except http.client.IncompleteRead:
            body = None  # cut short: what a client must see
        assert res.status == 502 or body is None, "a complete body under a hash it does not have"
        conn.close()
        # A file that matches is sent whole, with its length.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/proxy/lib-d/lib_d-1.0.tar.gz")
        res = conn.getresponse()
        assert res.status == 200 and res.getheader("Content-Length") == str(len(data))
        assert res.read() == data
        conn.close()
    assert cache_files(root) == [
        "files/lib-d/lib_d-1.0.tar.gz",
        "pages/lib-c.json",
        "pages/lib-d.json",
    ]