"""End to end: the caching proxy (``pkgserver run --proxy``, issue 17) with real pip, uv and twine.

Nothing leaves 127.0.0.1. The upstream is a second pkgserver process (``--disable-fallback``)
serving a dependency tree built here, or, where the upstream must misbehave or be counted, a
small static index (``StaticIndex``, http.server) serving hand-written PEP 503/691 pages.

The tree (the versions an install on this Python must pick are in ``EXPECTED``):

- ``app-a`` 0.9; 1.0 (wheel and sdist) needs ``lib-b>=1`` and ``lib-c``
- ``lib-b`` 0.5; 1.0 (wheel and sdist) needs ``lib-c>=1``; 1.1 yanked; 2.0 Requires-Python >=4
- ``lib-c`` 1.0; 1.2 (wheel and sdist); 1.5 Requires-Python >=4.0
- ``other-d`` 1.0, never fetched through a proxy before its upstream is gone

Clients run without a cache of their own (pip ``--no-cache-dir``, uv ``--no-cache``), so what a
second install gets comes from the proxy's cache (ROOT/.pkgserver/proxy).
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
from builders import big_wheel, make_sdist, make_wheel
from server import Server, client_env, output, run_client, server_env

pytestmark = pytest.mark.e2e

PY = sys.executable
JSON_V1 = "application/vnd.pypi.simple.v1+json"
TREE = ("app-a", "lib-b", "lib-c")
EXPECTED = {"app-a": "1.0", "lib-b": "1.0", "lib-c": "1.2"}
WHEELS = {name: f"{name.replace('-', '_')}-{v}-py3-none-any.whl" for name, v in EXPECTED.items()}
DIST_SUFFIXES = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz", ".egg")
USER, PASSWORD = "alice", "s3cret"


# -- clients ----------------------------------------------------------------------------------------
def _uv() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def _twine() -> str:
    found = shutil.which("twine", path=os.path.dirname(PY))
    assert found, "twine is part of the test extras"
    return found


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def install(
    client: str,
    tmp_path: Path,
    index: str,
    *requirements: str,
    ok: bool = True,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """Install into a new environment with pip or uv and no client cache; returns its python."""
    env = client_env(tmp_path)
    venv = tmp_path / f"venv-{client}-{uuid.uuid4().hex[:8]}"
    python = venv / "bin" / "python"
    if client == "uv":
        run_client([_uv(), "venv", "--python", PY, venv], env)
        cmd: list[str | os.PathLike[str]] = [_uv(), "pip", "install", "--python", python]
        cmd += ["--no-build", "--no-cache"]
    else:
        run_client([PY, "-m", "venv", "--without-pip", venv], env)
        cmd = [PY, "-m", "pip", "--python", python, "install", "--only-binary=:all:"]
        cmd += ["--no-cache-dir"]
    res = run_client([*cmd, "--index-url", index, *requirements], env, ok=ok)
    return python, res


def installed(python: Path) -> dict[str, str]:
    """{normalized name: version} of what the environment holds; each module imported too, so
    the files are really there."""
    code = (
        "import importlib, importlib.metadata as m, json\n"
        "found = {d.metadata['Name']: d.version for d in m.distributions()}\n"
        "for name, version in found.items():\n"
        "    mod = importlib.import_module(name.replace('-', '_'))\n"
        "    assert mod.VERSION == version, (name, mod.VERSION, version)\n"
        "print(json.dumps(found))\n"
    )
    res = run_client([python, "-I", "-c", code], client_env(python.parent.parent))
    return {canonical(k): v for k, v in json.loads(res.stdout).items()}


# -- servers ----------------------------------------------------------------------------------------
def settled(directory: Path) -> Path:
    """Backdate every file, so a starting server lists them at once."""
    old = time.time() - 120
    for p in directory.rglob("*"):
        if p.is_file():
            os.utime(p, (old, old))
    return directory


def dead_url() -> str:
    """The simple URL of a port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/simple/"


def proxy(root: Path, upstream: str, *args: str | os.PathLike[str]) -> Server:
    """A pkgserver proxying ``upstream`` (a simple URL) over the package directory ``root``."""
    return Server("--proxy", "--fallback-url", upstream, *args, root)


def start_upstream(directory: Path) -> Server:
    srv = Server("--disable-fallback", directory).start()
    try:
        for name, wheel in WHEELS.items():
            srv.wait_listed(name, wheel)
        srv.wait_listed("other-d")
    except BaseException:
        srv.stop()
        raise
    return srv


def fetch(srv: Server, path: str, timeout: float = 60) -> tuple[int, bytes, bool]:
    """GET: (status, body, whether the body arrived whole). A response cut short (an aborted
    download) gives complete=False instead of raising."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    try:
        conn.request("GET", path)
        res = conn.getresponse()
        try:
            return res.status, res.read(), True
        except (http.client.IncompleteRead, ConnectionError) as err:
            partial = getattr(err, "partial", b"")
            return res.status, partial if isinstance(partial, bytes) else b"", False
    except ConnectionError:
        return 0, b"", False
    finally:
        conn.close()


def mark(srv: Server) -> str:
    """A unique line in ``srv``'s access log, waited for: the lines before it are all in
    ``srv.output``, whatever the pipe that carries them delays."""
    token = uuid.uuid4().hex
    assert srv.get(f"/health?mark={token}").status == 200
    deadline = time.monotonic() + 10
    while token not in srv.output:
        assert time.monotonic() < deadline, f"the access log did not show the mark {token}"
        time.sleep(0.02)
    return token


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})?\s+(\S+)", line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


# -- the proxy's cache on disk --------------------------------------------------------------------
def cache_dir(root: Path) -> Path:
    return root / ".pkgserver" / "proxy"


def cached(root: Path) -> dict[str, bytes]:
    """{"<name>/<filename>": bytes} of the verified files in the cache."""
    files = cache_dir(root) / "files"
    if not files.is_dir():
        return {}
    return {
        p.relative_to(files).as_posix(): p.read_bytes() for p in files.rglob("*") if p.is_file()
    }


def in_progress(root: Path) -> list[str]:
    tmp = cache_dir(root) / "tmp"
    return sorted(p.name for p in tmp.rglob("*")) if tmp.is_dir() else []


def hosted_files(root: Path) -> list[str]:
    """Distribution files in the package directory itself (outside .pkgserver)."""
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and ".pkgserver" not in p.relative_to(root).parts
        if p.name.endswith(DIST_SUFFIXES)
    )


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    return {
        p.relative_to(root).as_posix(): (
            p.stat().st_size,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in root.rglob("*")
        if p.is_file()
    }


def assert_tree_cached(root: Path, tree: Path) -> None:
    """The wheels of the install are in the proxy's cache, byte for byte the upstream's, and
    not in the package directory."""
    have = cached(root)
    for name, wheel in WHEELS.items():
        key = f"{name}/{wheel}"
        assert key in have, f"{key} not cached; cache holds {sorted(have)}"
        upstream = next(tree.rglob(wheel)).read_bytes()
        assert have[key] == upstream, key
    assert hosted_files(root) == [], "a proxied file landed among the hosted ones"
    assert in_progress(root) == []


# The proxy reads its upstream in blocks of 256 KiB (proxy.CHUNK): a held download must have sent
# more than that for its first bytes to reach the clients.
HELD_AFTER = 1024 * 1024


# -- a tiny static index: an upstream that can lie, be slow, and count ----------------------------
class StaticIndex:
    """Serves fixed bytes per path on 127.0.0.1 and counts the GETs of each path. With ``hold``
    given, a file (a path not under /simple/) is sent as its first HELD_AFTER bytes, then the rest only
    once ``hold`` is set (or after HOLD_TIMEOUT seconds; ``released`` says which), so that a
    test can keep a download in progress while clients ask for it."""

    HOLD_TIMEOUT = 20.0  # (below the proxy's 30 s stall limit)

    def __init__(self, hold: threading.Event | None = None) -> None:
        self.routes: dict[str, tuple[str, bytes]] = {}
        self.gets: Counter[str] = Counter()
        self.hold = hold
        self.released: bool | None = None
        self.lock = threading.Lock()
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with index.lock:
                    index.gets[path] += 1
                route = index.routes.get(path)
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                ctype, body = route
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if path.startswith("/simple/") or index.hold is None:
                    self.wfile.write(body)
                    return
                self.wfile.write(body[:HELD_AFTER])
                self.wfile.flush()
                index.released = index.hold.wait(index.HOLD_TIMEOUT)
                self.wfile.write(body[HELD_AFTER:])

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def add(self, path: str, content_type: str, body: bytes) -> None:
        self.routes[path] = (content_type, body)

    def __enter__(self) -> StaticIndex:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


# -- fixtures -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tree") / "packages"
    make_wheel(d, "lib-c", "1.0", summary="C")
    make_wheel(d, "lib-c", "1.2", summary="C")
    make_sdist(d, "lib-c", "1.2", metadata_version="2.2", summary="C")
    # (a lower bound: uv ignores upper bounds of Requires-Python, as its documentation says)
    make_wheel(d, "lib-c", "1.5", summary="C, for Python 4", requires_python=">=4.0")
    b = d / "lib-b"  # in a subfolder, as directories often are
    make_wheel(b, "lib-b", "0.5", summary="B", requires_dist=["lib-c"])
    make_wheel(b, "lib-b", "1.0", summary="B", requires_dist=["lib-c>=1"])
    make_sdist(b, "lib-b", "1.0", metadata_version="2.2", requires_dist=["lib-c>=1"])
    make_wheel(b, "lib-b", "1.1", summary="B, broken", requires_dist=["lib-c>=1"])
    make_wheel(b, "lib-b", "2.0", summary="B, the future", requires_python=">=4")
    make_wheel(d, "app-a", "0.9", summary="A", requires_dist=["lib-c"])
    make_wheel(d, "app-a", "1.0", summary="A", requires_dist=["lib-b>=1", "lib-c"])
    make_sdist(d, "app-a", "1.0", metadata_version="2.2", requires_dist=["lib-b>=1", "lib-c"])
    make_wheel(d, "other-d", "1.0", summary="D")
    settled(d)
    cmd = [PY, "-m", "pkgserver", "yank", "lib-b", "1.1", "--reason", "broken", str(d)]
    res = subprocess.run(cmd, env=server_env(), capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    return d


@pytest.fixture(scope="module")
def upstream(tree: Path) -> Iterator[Server]:
    srv = start_upstream(tree)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def filled(upstream: Server, tmp_path_factory: pytest.TempPathFactory, tree: Path) -> Path:
    """A proxy's package directory whose cache one install of app-a (by uv) filled."""
    base = tmp_path_factory.mktemp("filled")
    root = base / "packages"
    root.mkdir()
    with proxy(root, upstream.url + "simple/") as px:
        python, _ = install("uv", base, px.url + "simple/", "app-a")
    assert installed(python) == EXPECTED
    assert_tree_cached(root, tree)
    return root


# -- 1. pages: the upstream's, rewritten --------------------------------------------------------------
def test_proxied_page_passes_the_upstream_attributes_through(
    upstream: Server, tree: Path, tmp_path: Path
) -> None:
    root = tmp_path / "packages"
    root.mkdir()
    with proxy(root, upstream.url + "simple/") as px:
        theirs = {f["filename"]: f for f in upstream.project_json("lib-b").json()["files"]}
        res = px.project_json("lib-b")
        assert res.status == 200, res
        ours = {f["filename"]: f for f in res.json()["files"]}
        assert set(ours) == set(theirs)
        for filename, f in ours.items():
            assert f["url"] == f"../../proxy/lib-b/{filename}", f
            assert f["hashes"]["sha256"] == theirs[filename]["hashes"]["sha256"]
            for key in ("requires-python", "yanked", "core-metadata", "size", "upload-time"):
                assert f.get(key) == theirs[filename].get(key), (filename, key)
        assert ours["lib_b-1.1-py3-none-any.whl"]["yanked"] == "broken"
        assert ours["lib_b-2.0-py3-none-any.whl"]["requires-python"] == ">=4"

        # PEP 503 HTML: relative links with the fragment, the attributes escaped.
        html = px.get("/simple/lib-b/", accept="text/html")
        assert html.status == 200, html
        wheel = "lib_b-2.0-py3-none-any.whl"
        link = re.search(rf'<a [^>]*href="([^"]*{re.escape(wheel)}[^"]*)"[^>]*>', html.text)
        assert link, html.text
        sha = theirs[wheel]["hashes"]["sha256"]
        assert link.group(1) == f"../../proxy/lib-b/{wheel}#sha256={sha}"
        assert 'data-requires-python="&gt;=4"' in link.group(0)
        assert 'data-core-metadata="sha256=' in link.group(0)
        assert 'data-yanked="broken"' in html.text

        # PEP 658 metadata through the proxy: the upstream's bytes, matching the advertised hash.
        meta = px.get(f"/proxy/lib-b/{wheel}.metadata")
        assert meta.status == 200, meta
        assert meta.body == upstream.get(f"/packages/lib-b/{wheel}.metadata").body
        assert hashlib.sha256(meta.body).hexdigest() == theirs[wheel]["core-metadata"]["sha256"]

        # A non-canonical name is sent to the canonical page.
        redirect = px.get("/simple/Lib_B/")
        assert redirect.status in (301, 302, 303, 307, 308), redirect
        assert urljoin(px.url + "simple/Lib_B/", redirect.headers["location"]) == (
            px.url + "simple/lib-b/"
        )

        # A name the upstream does not know.
        assert px.get("/simple/no-such-project/").status == 404


# -- 2. a whole tree installs through the proxy, into the cache only ---------------------------------
@pytest.mark.parametrize("client", ["pip", "uv"])
def test_install_through_the_proxy_fills_its_cache(
    client: str, upstream: Server, tree: Path, tmp_path: Path
) -> None:
    root = tmp_path / "packages"
    root.mkdir()
    with proxy(root, upstream.url + "simple/") as px:
        python, _ = install(client, tmp_path, px.url + "simple/", "app-a")
        assert installed(python) == EXPECTED
        assert_tree_cached(root, tree)
        # Nothing proxied is hosted: the project list does not name it.
        listing = px.get("/simple/", accept=JSON_V1)
        assert listing.status == 200, listing
        names = {canonical(p["name"]) for p in listing.json()["projects"]}
        assert not names & set(TREE), names
        metrics = px.get("/metrics").text
        assert metric(metrics, "pkgserver_proxy_requests_total", what="file", outcome="miss") >= 3
        assert metric(metrics, "pkgserver_proxy_bytes_total", direction="fetched") > 0


# -- hosted names are never proxied ------------------------------------------------------------------
def test_a_hosted_name_is_never_proxied(upstream: Server, tmp_path: Path) -> None:
    root = tmp_path / "packages"
    hosted = make_wheel(root, "lib-c", "7.0", summary="ours")
    settled(root)
    with proxy(root, upstream.url + "simple/") as px:
        px.wait_listed("lib-c", hosted.name)
        page = px.project_json("lib-c")
        assert [f["filename"] for f in page.json()["files"]] == [hosted.name]
        assert px.get("/proxy/lib-c/lib_c-1.2-py3-none-any.whl").status == 404
        python, _ = install("uv", tmp_path, px.url + "simple/", "app-a")
        assert installed(python) == {**EXPECTED, "lib-c": "7.0"}
        assert "lib-c" not in {k.split("/")[0] for k in cached(root)}
        assert not (cache_dir(root) / "pages" / "lib-c.json").exists()


def test_disable_fallback_wins_over_proxy(upstream: Server, tmp_path: Path) -> None:
    root = tmp_path / "packages"
    root.mkdir()
    before = mark(upstream)
    with proxy(root, upstream.url + "simple/", "--disable-fallback") as px:
        assert px.get("/simple/app-a/").status == 404
        assert px.get("/proxy/app-a/app_a-1.0-py3-none-any.whl").status == 404
    after = mark(upstream)
    assert cached(root) == {}
    between = upstream.output.split(before, 1)[1].split(after, 1)[0]
    assert "app-a" not in between and "app_a" not in between, between  # never asked


# -- 3. the upstream gone: the cache still installs -------------------------------------------------
def test_upstream_down_installs_from_the_cache(tree: Path, tmp_path: Path) -> None:
    up_dir = tmp_path / "upstream"
    shutil.copytree(tree, up_dir)
    root = tmp_path / "packages"
    root.mkdir()
    up = start_upstream(up_dir)
    try:
        # TTL 0: every page is revalidated, so with the upstream gone each is served stale.
        with proxy(root, up.url + "simple/", "--proxy-ttl", "0") as px:
            python, _ = install("pip", tmp_path, px.url + "simple/", "app-a")
            assert installed(python) == EXPECTED
            # With the upstream there, a page older than the TTL is asked again.
            assert px.project_json("app-a").status == 200
            metrics = px.get("/metrics").text
            assert metric(metrics, "pkgserver_proxy_requests_total", outcome="revalidated") > 0
            assert metric(metrics, "pkgserver_proxy_requests_total", outcome="stale") == 0
            up.stop()

            for client in ("pip", "uv"):
                python, _ = install(client, tmp_path, px.url + "simple/", "app-a")
                assert installed(python) == EXPECTED, client
            metrics = px.get("/metrics").text
            stale = metric(metrics, "pkgserver_proxy_requests_total", outcome="stale")
            assert stale > 0, metrics

            # Never fetched: a clear 502 at once (the connection is refused), not a hang.
            res = px.request("GET", "/simple/other-d/", timeout=60)
            assert res.status == 502, res
            assert "upstream" in res.text.lower(), res.text
            assert_tree_cached(root, tree)
    finally:
        if up.proc is not None and up.proc.poll() is None:
            up.stop()


# -- 4. a file whose bytes do not match the upstream's sha256 ----------------------------------------
def test_tampered_file_is_refused_and_not_kept(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "dist", "bad-pkg", "1.0")
    data = wheel.read_bytes()
    wrong = hashlib.sha256(data + b"tampered").hexdigest()
    page = (
        "<!DOCTYPE html>\n<html><head>"
        '<meta name="pypi:repository-version" content="1.0"><title>Links for bad-pkg</title>'
        "</head><body><h1>Links for bad-pkg</h1>\n"
        f'<a href="../../files/{wheel.name}#sha256={wrong}">{wheel.name}</a><br>\n'
        "</body></html>\n"
    )
    root = tmp_path / "packages"
    root.mkdir()
    with StaticIndex() as static:
        static.add("/simple/bad-pkg/", "text/html; charset=utf-8", page.encode())
        static.add(f"/files/{wheel.name}", "application/octet-stream", data)
        with proxy(root, static.url + "simple/") as px:
            _, res = install("pip", tmp_path, px.url + "simple/", "bad-pkg", ok=False)
            fetched = static.gets[f"/files/{wheel.name}"]
            assert fetched >= 1, output(res)
            assert cached(root) == {}
            assert in_progress(root) == []

            # Asked again: nothing was kept, and the upstream is not asked again for a minute
            # (a tampered file fetched over and over would multiply the upstream's traffic).
            status, body, _ = fetch(px, f"/proxy/bad-pkg/{wheel.name}")
            assert status == 502 and b"did not have the sha256" in body, (status, body[:200])
            assert static.gets[f"/files/{wheel.name}"] == fetched
            metrics = px.get("/metrics").text
            assert metric(metrics, "pkgserver_proxy_requests_total", outcome="rejected") >= 1
            assert cached(root) == {}
            assert in_progress(root) == []
            assert hosted_files(root) == []
            assert "does not have the sha256 its upstream page lists" in px.output


# -- 5. twenty clients, one download -----------------------------------------------------------------
def test_concurrent_requests_share_one_download(tmp_path: Path) -> None:
    wheel = big_wheel(tmp_path / "dist", "big_pkg", "1.0", 4 * 1024 * 1024)
    data = wheel.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    page = {
        "meta": {"api-version": "1.1"},
        "name": "big-pkg",
        "versions": ["1.0"],
        "files": [
            {
                "filename": wheel.name,
                "url": f"../../files/{wheel.name}",
                "hashes": {"sha256": sha},
                "size": len(data),
            }
        ],
    }
    root = tmp_path / "packages"
    root.mkdir()
    n = 20
    hold = threading.Event()  # the upstream sends the rest once all twenty have an answer
    answered = 0
    lock = threading.Lock()
    barrier = threading.Barrier(n)
    results: list[tuple[int, bytes, bool] | BaseException | None] = [None] * n

    def get(port: int, i: int) -> None:
        nonlocal answered
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            barrier.wait(30)
            conn.request("GET", f"/proxy/big-pkg/{wheel.name}")
            res = conn.getresponse()
            with lock:
                answered += 1
                if answered == n:
                    hold.set()
            try:
                results[i] = (res.status, res.read(), True)
            except http.client.IncompleteRead as err:
                results[i] = (res.status, err.partial, False)
        except BaseException as err:
            results[i] = err
        finally:
            conn.close()

    with StaticIndex(hold=hold) as static:
        static.add("/simple/big-pkg/", JSON_V1, json.dumps(page).encode())
        static.add(f"/files/{wheel.name}", "application/octet-stream", data)
        # More waitress threads than clients: each streamed answer holds one until it ends.
        with proxy(root, static.url + "simple/", "--threads", str(n + 4)) as px:
            listed = px.project_json("big-pkg")
            assert listed.status == 200, listed
            assert listed.json()["files"][0]["url"] == f"../../proxy/big-pkg/{wheel.name}"

            threads = [threading.Thread(target=get, args=(px.port, i)) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert not any(t.is_alive() for t in threads)
            # All twenty were answered while the one upstream download was held in progress.
            assert static.released is True, f"{answered} of {n} answered during the download"
            for i, result in enumerate(results):
                assert isinstance(result, tuple), (i, result)
                status, body, complete = result
                assert status == 200 and complete, (i, status, complete, len(body))
                assert hashlib.sha256(body).hexdigest() == sha, (i, len(body))
            assert static.gets[f"/files/{wheel.name}"] == 1, static.gets
            assert cached(root) == {f"big-pkg/{wheel.name}": data}
            assert in_progress(root) == []


# -- 6. offline: only the cache ------------------------------------------------------------------------
def test_offline_installs_from_a_filled_cache(filled: Path, tmp_path: Path) -> None:
    with Server("--proxy-offline", "--fallback-url", dead_url(), filled) as px:
        python, _ = install("pip", tmp_path, px.url + "simple/", "app-a")
        assert installed(python) == EXPECTED
        assert px.get("/simple/other-d/").status == 404
        assert px.get("/proxy/other-d/other_d-1.0-py3-none-any.whl").status == 404
        # Cached, but never downloaded: the page lists it; the file is not there.
        assert px.get("/proxy/lib-b/lib_b-0.5-py3-none-any.whl").status == 404


# -- 7. a cached name cannot be uploaded ----------------------------------------------------------------
def test_upload_of_a_cached_project_is_refused(
    filled: Path, upstream: Server, tmp_path: Path, write_htpasswd: Any
) -> None:
    htpasswd = write_htpasswd(**{USER: PASSWORD})
    wheel = make_wheel(tmp_path / "dist", "lib-c", "9.0", summary="not the real lib-c")
    args: list[str | os.PathLike[str]] = ["-P", htpasswd, "-a", "update"]
    with proxy(filled, upstream.url + "simple/", *args) as px:
        before = snapshot(filled)
        cmd: list[str | os.PathLike[str]] = [_twine(), "upload", "--repository-url", px.url]
        cmd += ["-u", USER, "-p", PASSWORD, "--non-interactive", "--disable-progress-bar", wheel]
        res = run_client(cmd, client_env(tmp_path), ok=False)
        out = output(res)
        assert "403" in out, out
        assert "--forget" in out, out
        assert snapshot(filled) == before
        page = px.project_json("lib-c")
        assert page.status == 200, page
        assert "lib_c-9.0-py3-none-any.whl" not in {f["filename"] for f in page.json()["files"]}


# -- 8. pkgserver mirror fills the cache for an offline server ----------------------------------------
def test_mirror_fills_the_cache_for_offline_use(
    upstream: Server, tree: Path, tmp_path: Path
) -> None:
    root = tmp_path / "packages"
    root.mkdir()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("app-a\n")
    # The mirror runs pip download: it gets the clients' isolation (no pip configuration).
    env = client_env(tmp_path)
    env["PKGSERVER_CACHE_DIR"] = str(tmp_path / "pkgserver-cache")
    cmd: list[str | os.PathLike[str]] = [PY, "-m", "pkgserver", "mirror"]
    cmd += ["--fallback-url", upstream.url + "simple/", root, "-r", requirements]
    cmd += ["--only-binary", ":all:"]
    run_client(cmd, env)
    assert_tree_cached(root, tree)

    with Server("--proxy-offline", "--fallback-url", dead_url(), root) as px:
        python, _ = install("pip", tmp_path, px.url + "simple/", "-r", str(requirements))
        assert installed(python) == EXPECTED
