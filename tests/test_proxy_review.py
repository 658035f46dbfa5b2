"""The caching proxy (--proxy) reviewed as an attacker and a careful user would: each test here
is a bug that was found and fixed (the scripted upstream of test_proxy.py plays the upstream).
"""

from __future__ import annotations

import argparse
import errno
import gzip
import hashlib
import http.client
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from builders import make_wheel
from server import serving
from test_proxy import (
    JSON_TYPE,
    Clock,
    Upstream,
    cache_files,
    proxied_app,
    raw_get,
    wheel_bytes,
)

from pkgserver import mirror
from pkgserver.errors import UsageError
from pkgserver.proxy import DirectoryProxyStore, Fetcher
from pkgserver.upstream import parse_page


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    try:
        up.stop()
    except OSError:
        pass


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


def test_a_page_cut_short_is_never_taken_for_the_whole_page(
    tmp_path: Path, upstream: Upstream
) -> None:
    """http.client reads a body cut short of its Content-Length as a whole one: an HTML page
    missing its newest files was cached and served (and replaced the good one)."""
    files = {f"lib_c-{v}.tar.gz": os.urandom(100) for v in ("1.0", "2.0")}
    links = "".join(
        f'<a href="../../files/{n}#sha256={hashlib.sha256(d).hexdigest()}">{n}</a>\n'
        for n, d in files.items()
    ).encode()
    cut = links.index(b"<a", 10)  # the first link only

    def truncated(h: Any) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/html")
        h.send_header("Content-Length", str(len(links)))
        h.end_headers()
        h.wfile.write(links[:cut])
        h.close_connection = True

    packed = gzip.compress(links)

    def gzip_truncated(h: Any) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/html")
        h.send_header("Content-Encoding", "gzip")
        h.end_headers()  # no length: the body ends when the connection closes
        h.wfile.write(packed[: len(packed) - 12])
        h.close_connection = True

    upstream.routes["/simple/lib-c/"] = truncated
    upstream.routes["/simple/lib-d/"] = gzip_truncated
    root = tmp_path / "root"
    root.mkdir()
    app, cache, _ = proxied_app(root, upstream)
    res = app.get("/simple/lib-c/", expect_errors=True)
    assert res.status_int == 502 and "cut short" in res.text
    res = app.get("/simple/lib-d/", expect_errors=True)
    assert res.status_int == 502
    assert cache.names() == []


def test_an_upstream_that_does_not_speak_http_or_stops_mid_chunk_is_a_502(
    tmp_path: Path, upstream: Upstream
) -> None:
    """http.client's own errors (IncompleteRead, BadStatusLine, LineTooLong) are no OSError:
    they went up through the route as a 500."""

    def stops_mid_chunk(h: Any) -> None:
        h.send_response(200)
        h.send_header("Content-Type", JSON_TYPE)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        h.wfile.write(b'40\r\n{"meta": {"api-version": "1.1"}')
        h.close_connection = True

    def not_http(h: Any) -> None:
        h.wfile.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        h.close_connection = True

    upstream.routes["/simple/lib-c/"] = stops_mid_chunk
    upstream.routes["/simple/lib-d/"] = not_http
    root = tmp_path / "root"
    root.mkdir()
    app, _, _ = proxied_app(root, upstream)
    assert app.get("/simple/lib-c/", expect_errors=True).status_int == 502
    assert app.get("/simple/lib-d/", expect_errors=True).status_int == 502


# -- liveness -------------------------------------------------------------------------------------
def test_a_page_trickled_byte_by_byte_is_given_up_at_the_deadline(upstream: Upstream) -> None:
    """read(CHUNK) waits for the whole chunk (or the end), a byte at a time within the 5 s
    between bytes: the page's deadline was checked only between such reads, so an upstream
    trickling a page held its lock (and every request for that name) for as long as it liked."""
    gave_up = threading.Event()
    body = b" " * 2000

    def trickle(h: Any) -> None:
        h.send_response(200)
        h.send_header("Content-Type", JSON_TYPE)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        try:
            for i in range(len(body)):
                h.wfile.write(body[i : i + 1])
                h.wfile.flush()
                if gave_up.wait(0.01):
                    return
        except OSError:
            gave_up.set()  # the client closed the connection

    upstream.routes["/simple/slow/"] = trickle
    fetcher = Fetcher(connect=2.0, deadline=0.5)
    with pytest.raises(OSError, match="no whole answer"):
        fetcher.get(upstream.url + "slow/", {}, 10_000)
    assert gave_up.wait(15), "the whole page was read past the deadline"


# -- the cache folder shared -------------------------------------------------------------------------
def test_a_second_process_on_the_cache_folder_leaves_downloads_in_progress_alone(
    tmp_path: Path, upstream: Upstream
) -> None:
    """Opening the store emptied tmp/: `pkgserver mirror` (or a second server) started on the
    cache folder of a running server deleted its downloads in progress, which then failed."""
    data = os.urandom(500_000)
    name = "lib_c-1.0.tar.gz"
    upstream.add_project("lib-c", {name: data})
    release = threading.Event()

    def paused(h: Any) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data[:1000])
        h.wfile.flush()
        release.wait(10)
        h.wfile.write(data[1000:])

    upstream.routes[f"/files/{name}"] = paused
    root = tmp_path / "root"
    root.mkdir()
    _, cache, _ = proxied_app(root, upstream)
    entry = cache.entry("lib-c", name)
    job = cache.download(f"lib-c/{name}", entry.url, entry.sha256, entry.size)
    assert job.started.wait(10)
    DirectoryProxyStore(str(root / ".pkgserver" / "proxy"))  # what mirror does at its start
    release.set()
    assert job.finished_event.wait(30)
    assert job.error is None and job.kept is not None
    assert (root / ".pkgserver/proxy/files/lib-c" / name).read_bytes() == data


def test_a_store_that_cannot_take_a_new_file_is_a_503_not_a_500(
    tmp_path: Path, upstream: Upstream
) -> None:
    """The disk full (or tmp/ unwritable): the download's temporary file could not be made,
    and its OSError went up as a 500."""
    name, data = wheel_bytes(tmp_path, "lib-c", "1.0")
    upstream.add_project("lib-c", {name: data})
    root = tmp_path / "root"
    root.mkdir()
    app, cache, _ = proxied_app(root, upstream)

    def full() -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    cache.store.temp = full  # type: ignore[method-assign]
    res = app.get(f"/proxy/lib-c/{name}", expect_errors=True)
    assert res.status_int == 503 and "No space left" in res.text
    assert res.headers["Cache-Control"] == "no-store"


# -- names ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/project/%00/", "/project/a%00b/"])
def test_a_web_page_of_a_name_that_cannot_be_a_project_is_a_404(
    tmp_path: Path, upstream: Upstream, path: str
) -> None:
    """The cached project's page looked the name up in the cache folder as given: a NUL in
    it was a ValueError (500)."""
    root = tmp_path / "root"
    root.mkdir()
    app, _, _ = proxied_app(root, upstream)
    assert app.get(path, expect_errors=True).status_int == 404


def test_mirror_never_caches_a_name_that_has_files_in_the_package_directory(
    tmp_path: Path, upstream: Upstream
) -> None:
    """mirror's in-process server has an empty catalog and knew hosted names only from the
    hosted-projects record, which lists what a server has seen: files put in DIR since (or a
    DIR never served) were taken from the upstream, the public project of an internal name
    (dependency confusion, and pip download runs an sdist's build to read its metadata)."""
    root = tmp_path / "root"
    make_wheel(root / "sub", "mine", "1.0")  # ours, never seen by a server
    name, data = wheel_bytes(tmp_path, "mine", "9.0")
    upstream.add_project("mine", {name: data})
    parser = argparse.ArgumentParser()
    mirror.add_arguments(parser)
    ns = parser.parse_args([str(root), "--project", "mine", "--fallback-url", upstream.url])
    assert mirror.mirror(ns, {}) == 1
    assert "/simple/mine/" not in upstream.asked
    assert not (root / ".pkgserver" / "proxy" / "pages" / "mine.json").exists()


def test_mirror_takes_only_project_names(tmp_path: Path, upstream: Upstream) -> None:
    """--forget and --project took any text, normalized: "/x/y" stayed an absolute path, and
    os.path.join(pages, "/x/y.json") is /x/y.json: --forget /x/y removed /x/y.json and the
    whole tree /x/y, --project wrote a page there."""
    root = tmp_path / "root"
    root.mkdir()
    # A path normalizing to itself (no "_", "." nor capitals), as /srv/data does.
    outside = Path(tempfile.gettempdir()) / f"pkgserverreview{uuid.uuid4().hex}"
    victim = outside / "victim"
    (victim / "inside").mkdir(parents=True)
    (outside / "victim.json").write_text("{}")
    parser = argparse.ArgumentParser()
    mirror.add_arguments(parser)
    try:
        for option in ("--forget", "--project"):
            args = [str(root), option, str(victim), "--fallback-url", upstream.url]
            with pytest.raises(UsageError, match="invalid project name"):
                mirror.mirror(parser.parse_args(args), {})
        assert (victim / "inside").is_dir() and (outside / "victim.json").read_text() == "{}"
        assert upstream.asked == {}
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def test_upstream_filenames_with_control_characters_are_dropped() -> None:
    """packaging's Version strips whitespace, so "lib_c-1.0\\n.tar.gz" parsed as a distribution
    of lib-c 1.0: such a name became a file of the cache folder and a line break in the log
    lines that name a cached file."""
    digest = "a" * 64
    files = [
        {"filename": f, "url": f"/f/{i}", "hashes": {"sha256": digest}}
        for i, f in enumerate(
            [
                "lib_c-1.0\n.tar.gz",
                "lib_c-1.0-py3-none-any\t.whl",
                "lib_c-\r1.1.zip",
                "lib_c-2.0.tar.gz",
            ]
        )
    ]
    doc = {"meta": {"api-version": "1.1"}, "name": "lib-c", "files": files}
    page = parse_page(
        json.dumps(doc).encode(), JSON_TYPE, "https://up.example/simple/lib-c/", "lib-c", 0.0
    )
    assert [f.filename for f in page.files] == ["lib_c-2.0.tar.gz"]


def test_an_empty_file_that_does_not_match_is_not_sent_as_a_whole_empty_body(
    tmp_path: Path, upstream: Upstream
) -> None:
    """Content-Length: 0 is a whole answer as soon as its headers are sent: an empty file
    whose sha256 is not the listed one cannot be cut short, it must be refused."""
    upstream.add_project(
        "lib-c", {"lib_c-1.0.tar.gz": b"x"}, extra={"lib_c-1.0.tar.gz": {"size": 0}}
    )
    release = threading.Event()

    def empty_then_close(h: Any) -> None:  # no length: its end is when the connection closes
        h.send_response(200)
        h.end_headers()
        release.wait(10)
        h.close_connection = True

    upstream.routes["/files/lib_c-1.0.tar.gz"] = empty_then_close
    root = tmp_path / "root"
    root.mkdir()
    app, _, _ = proxied_app(root, upstream)
    app.get("/simple/lib-c/")
    timer = threading.Timer(0.5, release.set)  # (the route answers before, or waits for it)
    timer.start()
    status, headers, body = raw_get(app, "/proxy/lib-c/lib_c-1.0.tar.gz")
    timer.join()
    assert status == 502 or int(headers["Content-Length"]) > len(body)


def test_a_cached_project_the_upstream_no_longer_has_is_not_asked_for_at_every_request(
    tmp_path: Path, upstream: Upstream
) -> None:
    """The upstream's 404 is remembered for a minute, but only for names without a cached
    page: one the upstream dropped (or a 404 from a CDN gone wrong) sent every request for it
    to the upstream, one at a time behind the page's lock."""
    name, data = wheel_bytes(tmp_path, "lib-c", "1.0")
    upstream.add_project("lib-c", {name: data})
    root = tmp_path / "root"
    root.mkdir()
    clock = Clock()
    app, _, _ = proxied_app(root, upstream, clock=clock)
    app.get("/simple/lib-c/")
    del upstream.routes["/simple/lib-c/"]
    clock.now += 3600
    for _ in range(3):
        app.get("/simple/lib-c/", status=404)
    assert upstream.asked["/simple/lib-c/"] == 2
