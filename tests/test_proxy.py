"""The caching proxy (--proxy): pkgserver.upstream, pkgserver.proxy and their routes.

The upstream is a real HTTP server on 127.0.0.1 (``Upstream``, in this process) whose answers
each test writes, and which counts what it was asked; the app is driven with webtest.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import webtest
from builders import make_wheel
from conftest import scan
from forms import upload_form

from pkgserver import proxy as proxy_mod
from pkgserver.app import create_app
from pkgserver.catalog import Catalog
from pkgserver.config import Settings
from pkgserver.hosted import HostedNames
from pkgserver.observe import Observer
from pkgserver.proxy import DirectoryProxyStore, Fetcher, Hooks, ProxyCache
from pkgserver.render import HTML, JSON_V1, render_proxied
from pkgserver.upstream import UpstreamPage, UpstreamPageError, parse_page

JSON_TYPE = "application/vnd.pypi.simple.v1+json"


# -- a scripted upstream --------------------------------------------------------------------------
Route = tuple[int, dict[str, str], bytes]


class Upstream:
    """An HTTP server on 127.0.0.1: ``routes[path]`` is (status, headers, body) or a callable
    taking the handler; ``asked`` counts GETs per path, ``seen`` keeps their headers."""

    def __init__(self) -> None:
        self.routes: dict[str, Route | Callable[[Any], None]] = {}
        self.asked: dict[str, int] = {}
        self.seen: list[tuple[str, dict[str, str]]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner.asked[self.path] = owner.asked.get(self.path, 0) + 1
                owner.seen.append((self.path, dict(self.headers)))
                route = owner.routes.get(self.path)
                if route is None:
                    route = (404, {}, b"not here")
                if callable(route):
                    route(self)
                    return
                status, headers, body = route
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple/"
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_project(
        self,
        name: str,
        files: dict[str, bytes],
        *,
        extra: dict[str, dict[str, Any]] | None = None,
        tamper: set[str] = frozenset(),  # type: ignore[assignment]
        etag: str | None = None,
    ) -> None:
        """A project page in JSON (and its files at /files/<filename>)."""
        entries = []
        for filename, data in files.items():
            digest = hashlib.sha256(data).hexdigest()
            served = data[:-1] + bytes([data[-1] ^ 1]) if filename in tamper else data
            self.routes[f"/files/{filename}"] = (200, {}, served)
            entry = {
                "filename": filename,
                "url": f"../../files/{filename}",
                "hashes": {"sha256": digest},
                "size": len(data),
                "upload-time": "2024-01-02T03:04:05.123456Z",
            }
            entry.update((extra or {}).get(filename, {}))
            entries.append(entry)
        doc = {"meta": {"api-version": "1.1"}, "name": name, "versions": [], "files": entries}
        headers = {"Content-Type": JSON_TYPE}
        if etag:
            headers["ETag"] = etag
        self.routes[f"/simple/{name}/"] = (200, headers, json.dumps(doc).encode())


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    try:
        up.stop()
    except OSError:
        pass


def wheel_bytes(tmp_path: Path, name: str, version: str, **kw: Any) -> tuple[str, bytes]:
    path = make_wheel(tmp_path / "built", name, version, **kw)
    return path.name, path.read_bytes()


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def proxied_app(
    root: Path,
    upstream: Upstream,
    *,
    clock: Clock | None = None,
    offline: bool = False,
    max_bytes: int | None = None,
    fetcher: Fetcher | None = None,
    hosted: HostedNames | None = None,
    store: DirectoryProxyStore | None = None,
    **settings_kw: Any,
) -> tuple[webtest.TestApp, ProxyCache, Observer]:
    settings = Settings(roots=(str(root),), proxy=True, fallback_url=upstream.url, **settings_kw)
    catalog = scan(root) if any(root.iterdir()) else Catalog()
    observer = Observer(catalog, process=False)
    cache = ProxyCache(
        store or DirectoryProxyStore(settings.proxy_location),
        upstream.url,
        ttl=settings.proxy_ttl,
        offline=offline,
        max_bytes=max_bytes,
        fetcher=fetcher,
        clock=clock or time.time,
        hooks=Hooks(observer.proxy_event, observer.proxy_fetched, observer.proxy_evicted),
    )
    observer.proxy_cache_size(lambda: cache.cached_files, lambda: cache.cached_bytes)
    app = create_app(settings, catalog, proxy=cache, observer=observer, hosted=hosted)
    return webtest.TestApp(app, lint=False), cache, observer


def raw_get(app: webtest.TestApp, path: str) -> tuple[int, dict[str, str], bytes]:
    """A GET straight through WSGI (webob refuses a body shorter than its Content-Length,
    which is what a download cut short is)."""
    got: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        got["status"], got["headers"] = int(status.split()[0]), dict(headers)

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "t",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
    }
    body = b"".join(app.app(environ, start_response))
    return got["status"], got["headers"], body


def metric(observer: Observer, what: str, outcome: str) -> float:
    value = observer.registry.get_sample_value(
        "pkgserver_proxy_requests_total", {"what": what, "outcome": outcome}
    )
    return value or 0.0


def cache_files(root: Path) -> list[str]:
    base = root / ".pkgserver" / "proxy"
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


# -- the upstream's page, as untrusted input ------------------------------------------------------
SHA = "a" * 64


def test_a_json_page_keeps_only_files_it_can_serve_safely() -> None:
    files = [
        {
            "filename": "lib_c-1.0-py3-none-any.whl",
            "url": "f/lib_c-1.0-py3-none-any.whl",
            "hashes": {"sha256": SHA.upper()},
            "requires-python": ">=3.8",
            "yanked": "bad",
            "core-metadata": {"sha256": "b" * 64},
            "size": 10,
            "upload-time": "2024-01-02T03:04:05Z",
        },
        # another project's file, a name that is no distribution's, no sha256, a bad scheme,
        # a downgrade to http, a hidden name, a non-dict, an md5 only
        {"filename": "other-1.0.tar.gz", "url": "x", "hashes": {"sha256": SHA}},
        {"filename": "lib_c.exe", "url": "x", "hashes": {"sha256": SHA}},
        {"filename": "lib_c-2.0.tar.gz", "url": "x", "hashes": {}},
        {"filename": "lib_c-3.0.tar.gz", "url": "file:///etc/passwd", "hashes": {"sha256": SHA}},
        {"filename": "lib_c-4.0.tar.gz", "url": "http://evil/x", "hashes": {"sha256": SHA}},
        {"filename": "../lib_c-5.0.tar.gz", "url": "x", "hashes": {"sha256": SHA}},
        "not an object",
        {"filename": "lib_c-6.0.tar.gz", "url": "x", "hashes": {"md5": "0" * 32}},
        {"filename": "lib_c-7.0.tar.gz", "url": "x", "hashes": {"sha256": "zz"}},
    ]
    doc = {"meta": {"api-version": "1.1"}, "name": "lib-c", "files": files}
    page = parse_page(
        json.dumps(doc).encode(), JSON_TYPE, "https://up.example/simple/lib-c/", "lib-c", 1.0
    )
    assert [f.filename for f in page.files] == ["lib_c-1.0-py3-none-any.whl"]
    f = page.files[0]
    assert f.url == "https://up.example/simple/lib-c/f/lib_c-1.0-py3-none-any.whl"
    assert f.sha256 == SHA and f.metadata_sha256 == "b" * 64
    assert (f.requires_python, f.yanked, f.size) == (">=3.8", "bad", 10)
    assert f.upload_time == "2024-01-02T03:04:05Z"
    # Round trip through the cache's own record, checked again on the way in.
    again = UpstreamPage.from_json(page.to_json(), "lib-c")
    assert again.files == page.files


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"{",
        b'{"meta": {"api-version": "2.0"}, "files": []}',
        b'{"meta": {}, "files": 3}',
        b"[" * 100000 + b"]" * 100000,
    ],
)
def test_a_json_page_that_is_not_one_is_refused(body: bytes) -> None:
    with pytest.raises(UpstreamPageError):
        parse_page(body, "application/json", "https://up/simple/x/", "x", 1.0)


def test_an_html_page_is_read_with_its_attributes_and_hostile_values_are_escaped() -> None:
    body = (
        b'<a href="../../f/lib_c-1.0.tar.gz#sha256=' + SHA.encode() + b'" '
        b'data-requires-python="&gt;=3.8" data-yanked="&lt;script&gt;alert(1)&lt;/script&gt;" '
        b'data-dist-info-metadata="sha256=' + b"c" * 64 + b'">lib_c-1.0.tar.gz</a>'
        b'<a href="javascript:alert(1)#sha256=' + SHA.encode() + b'">lib_c-2.0.tar.gz</a>'
        b'<a href="../../f/lib_c-3.0.tar.gz#md5=abc">lib_c-3.0.tar.gz</a>'
        b'<a href="../../f/lib_c-4.0.tar.gz#sha256=' + SHA.encode() + b'" '
        b'data-requires-python="&quot;&gt;&lt;script&gt;">lib_c-4.0.tar.gz</a>'
    )
    page = parse_page(body, "text/html", "http://up/simple/lib-c/", "lib-c", 1.0)
    names = [f.filename for f in page.files]
    assert names == ["lib_c-1.0.tar.gz", "lib_c-4.0.tar.gz"]
    first, fourth = page.files
    assert first.requires_python == ">=3.8" and first.yanked == "<script>alert(1)</script>"
    assert first.metadata_sha256 == "c" * 64
    assert fourth.requires_python is None  # not a specifier set: dropped
    html = render_proxied(page, HTML, "sha256").body.decode()
    assert "<script>" not in html
    assert 'data-yanked="&lt;script&gt;alert(1)&lt;/script&gt;"' in html
    assert 'href="../../proxy/lib-c/lib_c-1.0.tar.gz#sha256=' + SHA + '"' in html
    doc = json.loads(render_proxied(page, JSON_V1, "sha256").body)
    assert doc["files"][0]["url"] == "../../proxy/lib-c/lib_c-1.0.tar.gz"
    assert doc["files"][0]["yanked"] == "<script>alert(1)</script>"
    assert doc["versions"] == ["1.0", "4.0"]


# -- pages through the app ------------------------------------------------------------------------
def test_a_project_not_hosted_is_served_from_the_upstream_with_links_to_the_cache(
    tmp_path: Path, upstream: Upstream
) -> None:
    name, data = wheel_bytes(tmp_path, "lib-c", "1.0")
    upstream.add_project(
        "lib-c",
        {name: data},
        extra={
            name: {
                "requires-python": ">=3.8",
                "yanked": "broken",
                "core-metadata": {"sha256": "d" * 64},
            }
        },
    )
    root = tmp_path / "root"
    root.mkdir()
    app, cache, observer = proxied_app(root, upstream)
    res = app.get("/simple/lib-c/", headers={"Accept": JSON_TYPE})
    doc = res.json
    assert res.headers["Cache-Control"] == "max-age=0, must-revalidate"
    (entry,) = doc["files"]
    assert entry["url"] == f"../../proxy/lib-c/{name}"
    assert entry["hashes"] == {"sha256": hashlib.sha256(data).hexdigest()}
    assert entry["requires-python"] == ">=3.8" and entry["yanked"] == "broken"
    assert entry["core-metadata"] == {"sha256": "d" * 64}
    assert entry["upload-time"] == "2024-01-02T03:04:05.123456Z" and entry["size"] == len(data)
    html = app.get("/simple/lib-c/", headers={"Accept": "text/html"}).text
    assert f'href="../../proxy/lib-c/{name}#sha256=' in html and 'data-yanked="broken"' in html
    # One upstream request for both: the page is cached (JSON asked first, HTML accepted).
    assert upstream.asked["/simple/lib-c/"] == 1
    again = app.get("/simple/lib-c/", headers={"Accept": JSON_TYPE, "If-None-Match": res.etag})
    assert again.status_int == 304
    assert metric(observer, "page", "miss") == 1 and metric(observer, "page", "hit") >= 2
    # Not hosted: the index of hosted projects does not list it.
    assert "lib-c" not in app.get("/simple/").text
    assert cache.names() == ["lib-c"]
    # A name not canonical is redirected to the canonical page, as for hosted ones.
    assert app.get("/simple/Lib_C/").status_int == 301


def test_a_hosted_or_claimed_name_is_never_proxied(tmp_path: Path, upstream: Upstream) -> None:
    root = tmp_path / "root"
    make_wheel(root, "mine", "1.0")
    name, data = wheel_bytes(tmp_path, "mine", "9.0")
    upstream.add_project("mine", {name: data})
    upstream.add_project("gone", {wheel_bytes(tmp_path, "gone", "9.0")[0]: data})
    hosted = HostedNames([str(root)])
    hosted.add(["gone"])  # hosted here once, all its files removed since
    app, cache, _ = proxied_app(root, upstream, hosted=hosted)
    page = app.get("/simple/mine/", headers={"Accept": JSON_TYPE}).json
    assert [f["filename"] for f in page["files"]] == ["mine-1.0-py3-none-any.whl"]
    assert app.get("/simple/gone/", headers={"Accept": JSON_TYPE}).json["files"] == []
    assert app.get(f"/proxy/mine/{name}", status=404)
    assert "/simple/mine/" not in upstream.asked and "/simple/gone/" not in upstream.asked
    assert cache.names() == []


def test_upstream_404_is_a_404_and_a_bad_page_a_502(tmp_path: Path, upstream: Upstream) -> None:
    upstream.routes["/simple/bad/"] = (200, {"Content-Type": "image/png"}, b"\x89PNG")
    root = tmp_path / "root"
    root.mkdir()
    app, _, observer = proxied_app(root, upstream)
    res = app.get("/simple/nothing/", status=404)
    assert "not on the upstream" in res.text
    app.get("/simple/nothing/", status=404)  # answered from memory for a minute
    assert upstream.asked["/simple/nothing/"] == 1
    assert app.get("/simple/bad/", status=502).headers["Cache-Control"] == "no-store"
    assert metric(observer, "page", "error") == 1


# -- files ----------------------------------------------------------------------------------------
def test_a_file_is_fetched_once_verified_kept_and_then_served_from_the_cache(
    tmp_path: Path, upstream: Upstream
) -> None:
    name, data = wheel_bytes(tmp_path, "lib-c", "1.0", body="x = 1\n" * 50_000)
    upstream.add_project("lib-c", {name: data})
    root = tmp_path / "root"
    root.mkdir()
    app, cache, observer = proxied_app(root, upstream)
    app.get("/simple/lib-c/")
    first = app.get(f"/proxy/lib-c/{name}")
    assert first.body == data and first.headers["Content-Length"] == str(len(data))
    assert first.headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    second = app.get(f"/proxy/lib-c/{name}")
    assert second.body == data
    assert upstream.asked[f"/files/{name}"] == 1
    assert cache_files(root) == ["files/lib-c/" + name, "pages/lib-c.json"]
    assert not any(p for p in root.iterdir() if p.name != ".pkgserver")  # none among hosted
    assert metric(observer, "file", "miss") == 1 and metric(observer, "file", "hit") == 1
    assert metric(observer, "page", "hit") == 0  # a file's request is not a page's
    assert cache.cached_bytes == len(data)
    # Ranges and revalidation work on a cached file as on a hosted one.
    part = app.get(f"/proxy/lib-c/{name}", headers={"Range": "bytes=0-9"})
    assert part.status_int == 206 and part.body == data[:10]
    etag = second.headers["ETag"]
    assert app.get(f"/proxy/lib-c/{name}", headers={"If-None-Match": etag}).status_int == 304


def test_a_file_without_the_listed_sha256_is_refused_and_not_kept(
    tmp_path: Path, upstream: Upstream
) -> None:
    name, data = wheel_bytes(tmp_path, "lib-c", "1.0", body="y = 2\n" * 50_000)
    upstream.add_project("lib-c", {name: data}, tamper={name})
    root = tmp_path / "root"
    root.mkdir()
    app, cache, observer = proxied_app(root, upstream)
    for _ in range(2):
        status, headers, body = raw_get(app, f"/proxy/lib-c/{name}")
        # Either refused outright or cut short: never the whole body under that hash.
        assert status == 502 or (status == 200 and len(body) < int(headers["Content-Length"]))
        assert body != data
    # Not cached; the second request is refused without asking (for a minute).
    assert upstream.asked[f"/files/{name}"] == 1
    assert metric(observer, "file", "rejected") == 1
    assert cache_files(root) == ["pages/lib-c.json"]  # no file, no temp file
    assert cache.cached_files == 0
    assert metric(observer, "file", "hit") == 0


def test_metadata_is_fetched_verified_and_cached_like_a_file(
    tmp_path: Path, upstream: Upstream
) -> None:
    name, data = wheel_bytes(tmp_path, "lib-c", "1.0")
    meta = b"Metadata-Version: 2.1\nName: lib-c\nVersion: 1.0\n"
    upstream.add_project(
        "lib-c",
        {name: data},
        extra={name: {"core-metadata": {"sha256": hashlib.sha256(meta).hexdigest()}}},
    )
    upstream.routes[f"/files/{name}.metadata"] = (200, {}, meta)
    root = tmp_path / "root"
    root.mkdir()
    app, _, _ = proxied_app(root, upstream)
    assert app.get(f"/proxy/lib-c/{name}.metadata").body == meta
    assert app.get(f"/proxy/lib-c/{name}.metadata").body == meta
    assert upstream.asked[f"/files/{name}.metadata"] == 1
    assert f"files/lib-c/{name}.metadata" in cache_files(root)


@pytest.mark.parametrize(
    "path",
    [
        "/proxy/lib-c/other-1.0.tar.gz",  # another project's name
        "/proxy/lib-c/lib_c-9.0.tar.gz",  # not on the page
        "/proxy/Lib_C/lib_c-1.0.tar.gz",  # not canonical
        "/proxy/lib-c/.hidden",
        "/proxy/lib-c/..%2f..%2fetc%2fpasswd",
    ],
)
def test_files_not_on_the_page_are_404(tmp_path: Path, upstream: Upstream, path: str) -> None:
    upstream.add_project("lib-c", {"lib_c-1.0.tar.gz": b"sdist bytes"})
    root = tmp_path / "root"
    root.mkdir()
    app, _, _ = proxied_app(root, upstream)
    assert app.get(path, expect_errors=True).status_int == 404
    assert not [p for p in upstream.asked if p.startswith("/files/")]


def test_twenty_requests_for_one_uncached_file_download_it_once(
    tmp_path: Path, upstream: Upstream
) -> None:
    data = os.urandom(3 * 1024 * 1024)
    name = "lib_c-1.0-py3-none-any.whl"
    upstream.add_project("lib-c", {name: data})
    release = threading.Event()

    def slow(handler: Any) -> None:  # the first bytes, then a pause all requests arrive in
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data[:1000])
        handler.wfile.flush()
        release.wait(10)
        handler.wfile.write(data[1000:])

    upstream.routes[f"/files/{name}"] = slow
    root = tmp_path / "root"
    root.mkdir()
    app, cache, _ = proxied_app(root, upstream)
    app.get("/simple/lib-c/")
    bodies: list[bytes] = []
    lock = threading.Lock()

    def fetch() -> None:
        res = app.get(f"/proxy/lib-c/{name}")
        with lock:
            bodies.append(res.body)

    threads = [threading.Thread(target=fetch) for _ in range(20)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    release.set()
    for t in threads:
        t.join(30)
    assert len(bodies) == 20 and all(b == data for b in bodies)
    assert upstream.asked[f"/files/{name}"] == 1
    assert cache.cached_files == 1


# -- the upstream away ----------------------------------------------------------------------------
def test_when_the_upstream_is_away_cached_pages_and_files_are_served_stale(
    tmp_path: Path, upstream: Upstream
) -> None:
    name, data = wheel_bytes(tmp_path, "lib-c", "1.0")
    upstream.add_project("lib-c", {name: data})
    root = tmp_path / "root"
    root.mkdir()
    clock = Clock()
    app, _, observer = proxied_app(root, upstream, clock=clock)
    page = app.get("/simple/lib-c/", headers={"Accept": JSON_TYPE}).json
    app.get(f"/proxy/lib-c/{name}")
    upstream.stop()
    clock.now += 3600  # past the TTL: the upstream would be asked
    started = time.monotonic()
    assert app.get("/simple/lib-c/", headers={"Accept": JSON_TYPE}).json == page
    assert app.get(f"/proxy/lib-c/{name}").body == data
    assert metric(observer, "page", "stale") == 1
    res = app.get("/simple/never-seen/", status=502)
    assert "cannot be read now" in res.text and "never-seen is not cached" in res.text
    assert time.monotonic() - started < 10


def test_a_page_fetch_is_bounded_in_time_and_size(
    tmp_path: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    def silent(handler: Any) -> None:
        time.sleep(5)

    upstream.routes["/simple/slow/"] = silent
    upstream.routes["/simple/huge/"] = (200, {"Content-Type": JSON_TYPE}, b" " * 5000)
    bomb = gzip.compress(b" " * 10_000_000)
    upstream.routes["/simple/bomb/"] = (
        200,
        {"Content-Type": JSON_TYPE, "Content-Encoding": "gzip"},
        bomb,
    )
    monkeypatch.setattr(proxy_mod, "MAX_PAGE", 4096)
    root = tmp_path / "root"
    root.mkdir()
    app, _, _ = proxied_app(root, upstream, fetcher=Fetcher(connect=0.5, deadline=1.0))
    started = time.monotonic()
    assert app.get("/simple/slow/", status=502)
    assert time.monotonic() - started < 4
    assert "larger than 4096" in app.get("/simple/huge/", status=502).text
    assert "larger than 4096" in app.get("/simple/bomb/", status=502).text


def test_redirects_to_other_schemes_or_down_to_http_are_not_followed(upstream: Upstream) -> None:
    upstream.routes["/simple/x/"] = (302, {"Location": "file:///etc/passwd"}, b"")
    fetcher = Fetcher(connect=1.0, deadline=2.0)
    answer = fetcher.get(upstream.url + "x/", {}, 1000)
    assert answer.status == 302 and b"root:" not in answer.body
    with pytest.raises(OSError):
        fetcher.get("file:///etc/passwd", {}, 1000)


def test_a_page_older_than_the_ttl_is_revalidated_with_its_etag(
    tmp_path: Path, upstream: Upstream
) -> None:
    name, data = wheel_bytes(tmp_path, "lib-c", "1.0")
    upstream.add_project("lib-c", {name: data}, etag='"v1"')
    root = tmp_path / "root"
    root.mkdir()
    clock = Clock()
    app, _, observer = proxied_app(root, upstream, clock=clock)
    first = app.get("/simple/lib-c/", headers={"Accept": JSON_TYPE}).json
    clock.now += 599
    app.get("/simple/lib-c/", headers={"Accept": JSON_TYPE})
    assert upstream.asked["/simple/lib-c/"] == 1  # within the TTL: not asked
    upstream.routes["/simple/lib-c/"] = (304, {"ETag": '"v1"'}, b"")
    clock.now += 2
    assert app.get("/simple/lib-c/", headers={"Accept": JSON_TYPE}).json == first
    assert upstream.seen[-1][1].get("If-None-Match") == '"v1"'
    assert metric(observer, "page", "revalidated") == 1


# -- offline, eviction, uploads ---------------------------------------------------------------------
def test_offline_serves_only_the_cache_and_never_asks_the_upstream(
    tmp_path: Path, upstream: Upstream
) -> None:
    name, data = wheel_bytes(tmp_path, "lib-c", "1.0")
    upstream.add_project("lib-c", {name: data})
    root = tmp_path / "root"
    root.mkdir()
    app, _, _ = proxied_app(root, upstream)
    app.get("/simple/lib-c/")
    app.get(f"/proxy/lib-c/{name}")
    asked = dict(upstream.asked)
    clock = Clock()
    clock.now += 10 * 86400
    offline, _, observer = proxied_app(root, upstream, offline=True, clock=clock)
    assert name in offline.get("/simple/lib-c/").text
    assert offline.get(f"/proxy/lib-c/{name}").body == data
    assert "--proxy-offline" in offline.get("/simple/other/", status=404).text
    assert upstream.asked == asked
    assert metric(observer, "page", "refused") == 1


def test_the_least_recently_used_files_are_evicted_beyond_the_size_limit(
    tmp_path: Path, upstream: Upstream
) -> None:
    files = {f"lib_c-{v}.tar.gz": os.urandom(10_000) for v in ("1.0", "2.0", "3.0")}
    upstream.add_project("lib-c", files)
    root = tmp_path / "root"
    root.mkdir()
    app, cache, observer = proxied_app(root, upstream, max_bytes=25_000)
    app.get("/proxy/lib-c/lib_c-1.0.tar.gz")
    app.get("/proxy/lib-c/lib_c-2.0.tar.gz")
    app.get("/proxy/lib-c/lib_c-1.0.tar.gz")  # used again: 2.0 is now the oldest
    app.get("/proxy/lib-c/lib_c-3.0.tar.gz")
    assert cache_files(root) == [
        "files/lib-c/lib_c-1.0.tar.gz",
        "files/lib-c/lib_c-3.0.tar.gz",
        "pages/lib-c.json",
    ]
    assert cache.cached_bytes == 20_000
    assert observer.registry.get_sample_value("pkgserver_proxy_evictions_total") == 1
    assert observer.registry.get_sample_value("pkgserver_proxy_cache_bytes") == 20_000
    # Evicted is not lost: fetched again when asked.
    assert app.get("/proxy/lib-c/lib_c-2.0.tar.gz").body == files["lib_c-2.0.tar.gz"]


def test_a_name_only_cached_cannot_be_uploaded_until_forgotten(
    tmp_path: Path, upstream: Upstream
) -> None:
    name, data = wheel_bytes(tmp_path, "lib-c", "1.0")
    upstream.add_project("lib-c", {name: data})
    root = tmp_path / "root"
    root.mkdir()
    app, cache, _ = proxied_app(root, upstream, authenticate=frozenset(), password_file=None)
    app.get("/simple/lib-c/")
    mine = make_wheel(tmp_path / "mine", "lib-c", "2.0")
    body, ctype = upload_form(mine)
    res = app.post("/", body, headers={"Content-Type": ctype}, expect_errors=True)
    assert res.status_int == 403 and "pkgserver mirror --forget lib-c" in res.text
    assert [p.name for p in root.iterdir()] == [".pkgserver"]
    assert cache.forget("lib-c")
    res = app.post("/", body, headers={"Content-Type": ctype})
    assert res.status_int == 200 and (root / mine.name).exists()


def test_web_pages_show_cached_projects_apart_from_hosted_ones(
    tmp_path: Path, upstream: Upstream
) -> None:
    name, data = wheel_bytes(tmp_path, "lib-c", "1.0")
    upstream.add_project("lib-c", {name: data})
    root = tmp_path / "root"
    make_wheel(root, "mine", "1.0")
    app, _, _ = proxied_app(root, upstream)
    app.get("/simple/lib-c/")
    app.get(f"/proxy/lib-c/{name}")
    listing = app.get("/-/projects/").text
    assert 'id="cached"' in listing and 'href="../../project/lib-c/"' in listing
    assert listing.index("mine") < listing.index('id="cached"')
    page = app.get("/project/lib-c/").text
    assert 'class="badge cached"' in page and upstream.url in page and name in page
    assert app.get("/project/never-seen/", status=404)


@pytest.mark.parametrize(
    "headers",
    [
        {"Accept": "text/html"},
        {"Accept": JSON_TYPE},
        {"Accept": JSON_TYPE, "Accept-Encoding": "gzip"},
    ],
)
def test_the_fast_path_answers_cached_pages_and_files_as_the_routes_do(
    tmp_path: Path, upstream: Upstream, headers: dict[str, str]
) -> None:
    files = {f"lib_c-{i}.0.tar.gz": os.urandom(1000) for i in range(1, 30)}
    upstream.add_project("lib-c", files)
    root = tmp_path / "root"
    root.mkdir()
    fast, cache, observer = proxied_app(root, upstream)
    settings = Settings(roots=(str(root),), proxy=True, fallback_url=upstream.url)
    routes = webtest.TestApp(
        create_app(settings, Catalog(), proxy=cache, observer=observer, fast_path=False),
        lint=False,
    )
    fast.get("/simple/lib-c/")
    fast.get("/proxy/lib-c/lib_c-1.0.tar.gz")
    calls: list[object] = []
    real = fast.app.fast

    def counting(environ: dict[str, Any]) -> Any:
        answer = real(environ)
        calls.append(answer)
        return answer

    fast.app.__dict__["fast"] = counting
    for path in ("/simple/lib-c/", "/proxy/lib-c/lib_c-1.0.tar.gz"):
        calls.clear()
        first = fast.get(path, headers=headers)
        second = routes.get(path, headers=headers)
        assert calls and calls[0] is not None, f"the fast path did not answer {path}"
        assert (first.status, first.body) == (second.status, second.body)
        strip = ("date", "server")
        assert {k.lower(): v for k, v in first.headerlist if k.lower() not in strip} == {
            k.lower(): v for k, v in second.headerlist if k.lower() not in strip
        }
        again = {**headers, "If-None-Match": first.headers["ETag"]}
        assert fast.get(path, headers=again).status_int == 304
        assert routes.get(path, headers=again).status_int == 304


def test_the_upstreams_longer_max_age_is_honoured_and_the_ttl_is_the_floor(
    tmp_path: Path, upstream: Upstream
) -> None:
    name, data = wheel_bytes(tmp_path, "lib-c", "1.0")
    upstream.add_project("lib-c", {name: data})
    status, headers, body = upstream.routes["/simple/lib-c/"]  # type: ignore[misc]
    upstream.routes["/simple/lib-c/"] = (status, {**headers, "Cache-Control": "max-age=1200"}, body)
    root = tmp_path / "root"
    root.mkdir()
    clock = Clock()
    app, _, _ = proxied_app(root, upstream, clock=clock)
    app.get("/simple/lib-c/")
    clock.now += 900  # past the TTL (600), within the upstream's max-age
    app.get("/simple/lib-c/")
    assert upstream.asked["/simple/lib-c/"] == 1
    clock.now += 400
    app.get("/simple/lib-c/")
    assert upstream.asked["/simple/lib-c/"] == 2
    # A restart keeps the max-age with the page.
    again, _, _ = proxied_app(root, upstream, clock=clock)
    clock.now += 900
    again.get("/simple/lib-c/")
    assert upstream.asked["/simple/lib-c/"] == 2


def test_mirror_caches_whole_projects_and_forgets_them(tmp_path: Path, upstream: Upstream) -> None:
    from pkgserver.cli import main

    meta = b"Metadata-Version: 2.1\nName: lib-c\nVersion: 1.0\n"
    name, data = wheel_bytes(tmp_path, "lib-c", "1.0")
    upstream.add_project(
        "lib-c",
        {name: data, "lib_c-0.9.tar.gz": b"old sdist"},
        extra={name: {"core-metadata": {"sha256": hashlib.sha256(meta).hexdigest()}}},
    )
    upstream.routes[f"/files/{name}.metadata"] = (200, {}, meta)
    root = tmp_path / "root"
    root.mkdir()
    make_wheel(root, "mine", "1.0")
    HostedNames([str(root)]).add(["mine"])
    args = ["mirror", str(root), "--fallback-url", upstream.url]
    assert main([*args, "--project", "lib-c"]) == 0
    assert cache_files(root) == [
        "files/lib-c/lib_c-0.9.tar.gz",
        f"files/lib-c/{name}",
        f"files/lib-c/{name}.metadata",
        "pages/lib-c.json",
    ]
    # A hosted project is not mirrored; an unknown one is reported.
    assert main([*args, "--project", "mine"]) == 1
    assert main([*args, "--project", "nothing-here"]) == 1
    assert "/simple/mine/" not in upstream.asked
    assert main(["mirror", str(root), "--forget", "Lib_C"]) == 0
    assert cache_files(root) == []
    assert main(["mirror", str(root)]) == 2  # nothing named


class FullStore(DirectoryProxyStore):
    """A cache that cannot keep anything (a full disk, a bucket away)."""

    def keep(self, temp_path: str, relpath: str) -> Any:
        raise OSError(28, "No space left on device")


def test_a_verified_file_the_cache_cannot_keep_is_still_sent_whole(
    tmp_path: Path, upstream: Upstream
) -> None:
    name, data = wheel_bytes(tmp_path, "lib-c", "1.0", body="z = 3\n" * 20_000)
    upstream.add_project("lib-c", {name: data})
    root = tmp_path / "root"
    root.mkdir()
    store = FullStore(str(root / ".pkgserver" / "proxy"))
    app, cache, _ = proxied_app(root, upstream, store=store)
    status, headers, body = raw_get(app, f"/proxy/lib-c/{name}")
    assert status == 200 and body == data and headers["Content-Length"] == str(len(data))
    assert cache_files(root) == ["pages/lib-c.json"]  # not kept, no temp file left
    assert cache.cached_files == 0


def test_a_cache_the_package_directory_would_list_is_refused(tmp_path: Path) -> None:
    from pkgserver.app import _served_root_holding
    from pkgserver.errors import UsageError

    root = tmp_path / "root"
    root.mkdir()
    for inside in (root / "cache", root, root / "a" / "b"):
        settings = Settings(roots=(str(root),), proxy=True, proxy_cache=str(inside))
        with pytest.raises(UsageError, match="served as hosted"):
            create_app(settings, Catalog())
    assert _served_root_holding(str(root / ".cache" / "x"), [str(root)]) is None
    assert _served_root_holding(str(tmp_path / "elsewhere"), [str(root)]) is None
    assert _served_root_holding("s3://b/p/cache", ["s3://b/p"]) == "s3://b/p"
    assert _served_root_holding("s3://b/p/.pkgserver/proxy", ["s3://b/p"]) is None
    assert _served_root_holding("s3://b/other", ["s3://b/p"]) is None


def test_a_filename_listed_twice_keeps_its_first_entry_and_pages_in_memory_are_bounded(
    tmp_path: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = {
        "meta": {"api-version": "1.1"},
        "files": [
            {"filename": "lib_c-1.0.tar.gz", "url": "a", "hashes": {"sha256": "a" * 64}},
            {"filename": "lib_c-1.0.tar.gz", "url": "b", "hashes": {"sha256": "b" * 64}},
        ],
    }
    page = parse_page(json.dumps(doc).encode(), JSON_TYPE, "http://up/simple/lib-c/", "lib-c", 1)
    assert [(f.url[-1], f.sha256[0]) for f in page.files] == [("a", "a")]
    monkeypatch.setattr(proxy_mod, "ENTRIES_KEPT", 25)
    for n in ("p-a", "p-b", "p-c"):
        upstream.add_project(n, {f"{n.replace('-', '_')}-{i}.0.tar.gz": b"x" for i in range(10)})
    root = tmp_path / "root"
    root.mkdir()
    app, cache, _ = proxied_app(root, upstream)
    for n in ("p-a", "p-b", "p-c"):
        app.get(f"/simple/{n}/")
    assert cache.known("p-a") is None and cache.known("p-c") is not None  # 30 > 25 entries
    app.get("/simple/p-a/")  # read back from the store, not asked again
    assert upstream.asked["/simple/p-a/"] == 1


def test_downloads_at_once_are_bounded(
    tmp_path: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()

    def held(handler: Any) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "3")
        handler.end_headers()
        handler.wfile.write(b"a")
        handler.wfile.flush()
        release.wait(10)
        handler.wfile.write(b"bc")

    upstream.add_project("lib-c", {"lib_c-1.0.tar.gz": b"abc", "lib_c-2.0.tar.gz": b"abc"})
    upstream.routes["/files/lib_c-1.0.tar.gz"] = held
    monkeypatch.setattr(proxy_mod, "MAX_DOWNLOADS", 1)
    root = tmp_path / "root"
    root.mkdir()
    app, _, _ = proxied_app(root, upstream)
    first = threading.Thread(target=lambda: app.get("/proxy/lib-c/lib_c-1.0.tar.gz"))
    first.start()
    deadline = time.monotonic() + 10
    while "/files/lib_c-1.0.tar.gz" not in upstream.asked and time.monotonic() < deadline:
        time.sleep(0.01)
    res = app.get("/proxy/lib-c/lib_c-2.0.tar.gz", status=503)
    assert res.headers["Retry-After"] == "1" and "try again" in res.text
    release.set()
    first.join(10)
    assert app.get("/proxy/lib-c/lib_c-2.0.tar.gz").body == b"abc"


def test_a_file_larger_than_the_cache_is_sent_verified_but_not_kept(
    tmp_path: Path, upstream: Upstream
) -> None:
    big = os.urandom(50_000)
    upstream.add_project("lib-c", {"lib_c-1.0.tar.gz": big})
    root = tmp_path / "root"
    root.mkdir()
    app, cache, _ = proxied_app(root, upstream, max_bytes=10_000)
    status, _, body = raw_get(app, "/proxy/lib-c/lib_c-1.0.tar.gz")
    assert status == 200 and body == big
    assert cache.cached_files == 0 and cache_files(root) == ["pages/lib-c.json"]
