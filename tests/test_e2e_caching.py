"""End to end: real pip and uv, with persistent caches, see a change at once (README "Caching").

pkgserver runs as a process; twine uploads; pip (``--cache-dir``) and uv (``--cache-dir``)
install twice with the same cache. What each install asked the server is read from the access
log, split at marker requests (``GET /health?mark=N``) the test sends between installs.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from builders import make_wheel
from conftest import WriteHtpasswd
from server import Server, client_env, run_client, running_server

pytestmark = pytest.mark.e2e

PY = sys.executable
USER, PASSWORD = "alice", "s3cret"
LINE = re.compile(r'"(GET|HEAD) (\S+) HTTP/[\d.]+" (\d{3}) ')


def _uv() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def _twine() -> str:
    found = shutil.which("twine", path=os.path.dirname(PY))
    assert found, "twine is part of the test extras"
    return found


class Clients:
    """pip or uv with one persistent cache, installing into a new environment each time."""

    def __init__(self, name: str, tmp_path: Path) -> None:
        self.name, self.tmp = name, tmp_path
        self.env = client_env(tmp_path)
        self.cache = tmp_path / f"{name}-cache"
        self.count = 0

    def install(self, index: str, project: str, *args: str) -> Path:
        self.count += 1
        venv = self.tmp / f"venv-{self.count}"
        if self.name == "uv":
            run_client([_uv(), "venv", "--python", PY, venv], self.env)
            cmd: list[str | os.PathLike[str]] = [_uv(), "pip", "install", "--no-build"]
            cmd += ["--python", venv / "bin" / "python"]
        else:
            run_client([PY, "-m", "venv", "--without-pip", venv], self.env)
            cmd = [PY, "-m", "pip", "--python", venv / "bin" / "python", "install"]
            cmd += ["--only-binary=:all:", "--no-build-isolation"]
            # pip keeps nothing from a plain-http index it does not trust: without this, its
            # http:// requests go through an adapter with no cache at all.
            cmd += ["--trusted-host", "127.0.0.1"]
        cmd += ["--cache-dir", self.cache, "--index-url", index + "simple/", project, *args]
        run_client(cmd, self.env)
        return venv / "bin" / "python"

    def twine(self, index: str, wheel: Path) -> None:
        cmd = [_twine(), "upload", "--repository-url", index, "-u", USER, "-p", PASSWORD]
        run_client([*cmd, "--non-interactive", "--disable-progress-bar", wheel], self.env)


def module_text(python: Path, module: str) -> str:
    """The installed module's source: which upload the environment got."""
    code = f"import {module}, pathlib; print(pathlib.Path({module}.__file__).read_text())"
    return run_client([python, "-I", "-c", code], client_env(python.parent.parent)).stdout


def mark(srv: Server, n: int) -> None:
    """A line in the access log between two clients' runs."""
    assert srv.request("GET", f"/health?mark={n}").status == 200


def requests_between_marks(output: str) -> list[list[tuple[str, str, int]]]:
    """The access log's (method, path, status), in the stretches before, between and after
    the marks."""
    parts: list[list[tuple[str, str, int]]] = [[]]
    for line in output.splitlines():
        m = LINE.search(line)
        if not m:
            continue
        method, path, status = m.group(1), m.group(2), int(m.group(3))
        if path.startswith("/health?mark="):
            parts.append([])
        else:
            parts[-1].append((method, path, status))
    return parts


@pytest.fixture(params=["pip", "uv"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Clients:
    return Clients(request.param, tmp_path)


@pytest.fixture
def index_args(tmp_path: Path, write_htpasswd: WriteHtpasswd) -> list[str | os.PathLike[str]]:
    root = tmp_path / "packages"
    root.mkdir()
    return ["-P", write_htpasswd(**{USER: PASSWORD}), "-a", "update", root]


# -- a new version is seen by the next install --------------------------------------------------
def test_an_upload_is_seen_at_once_through_a_warm_cache(
    client: Clients, tmp_path: Path, index_args: list[str | os.PathLike[str]]
) -> None:
    dist = tmp_path / "dist"
    with running_server("--disable-fallback", *index_args) as srv:
        client.twine(srv.url, make_wheel(dist, "fresh-demo", "1.0"))
        first = client.install(srv.url, "fresh-demo")
        mark(srv, 1)
        client.twine(srv.url, make_wheel(dist, "fresh-demo", "2.0"))
        second = client.install(srv.url, "fresh-demo")  # at once, the same cache
        mark(srv, 2)
        third = client.install(srv.url, "fresh-demo")  # nothing changed since
        mark(srv, 3)
    assert "VERSION = '1.0'" in module_text(first, "fresh_demo")
    assert "VERSION = '2.0'" in module_text(second, "fresh_demo")
    assert "VERSION = '2.0'" in module_text(third, "fresh_demo")
    parts = requests_between_marks(srv.output)
    page = "/simple/fresh-demo/"
    # The first install fetched the page and the file.
    assert ("GET", page, 200) in parts[0], parts[0]
    # The second asked for the page again (its copy was 1.0's) and was given the new one.
    assert ("GET", page, 200) in parts[1], parts[1]
    assert ("GET", "/packages/fresh_demo-2.0-py3-none-any.whl", 200) in parts[1], parts[1]
    # The third asked again and was told its copy is current: revalidated, never reused blindly.
    assert ("GET", page, 304) in parts[2], parts[2]
    assert ("GET", page, 200) not in parts[2], parts[2]
    # ... and kept the file it has, which never changes under its name (immutable): not asked.
    assert not [r for r in parts[2] if r[1].startswith("/packages/")], parts[2]


# -- --overwrite: the same name, other bytes --------------------------------------------------------
def test_an_overwritten_file_is_not_served_stale_from_the_cache(
    client: Clients, tmp_path: Path, index_args: list[str | os.PathLike[str]]
) -> None:
    wheel = "/packages/over_demo-1.0-py3-none-any.whl"
    with running_server("--disable-fallback", "--overwrite", *index_args) as srv:
        one = make_wheel(tmp_path / "a", "over-demo", "1.0", body="BYTES = 'first'\n")
        client.twine(srv.url, one)
        first = client.install(srv.url, "over-demo")
        mark(srv, 1)
        two = make_wheel(tmp_path / "b", "over-demo", "1.0", body="BYTES = 'second'\n")
        assert one.name == two.name and one.read_bytes() != two.read_bytes()
        client.twine(srv.url, two)
        second = client.install(srv.url, "over-demo")
        mark(srv, 2)
    assert "first" in module_text(first, "over_demo")
    assert "second" in module_text(second, "over_demo"), srv.output
    parts = requests_between_marks(srv.output)
    # The page changed (its sha256) and the file was fetched again, whole.
    assert ("GET", "/simple/over-demo/", 200) in parts[1], parts[1]
    assert ("GET", wheel, 200) in parts[1], parts[1]


# -- the fallback: a redirect to another index -------------------------------------------------------
class _Upstream(http.server.ThreadingHTTPServer):
    """A stand-in for PyPI: one project, its page kept 10 minutes (PyPI's max-age=600)."""

    def __init__(self, wheel: Path) -> None:
        self.wheel = wheel
        self.hits: list[str] = []
        super().__init__(("127.0.0.1", 0), _UpstreamHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class _UpstreamHandler(http.server.BaseHTTPRequestHandler):
    server: _Upstream

    def do_GET(self) -> None:  # (http.server's name)
        self.answer(body=True)

    def do_HEAD(self) -> None:  # uv asks whether ranges are served
        self.answer(body=False)

    def answer(self, body: bool) -> None:
        self.server.hits.append(self.path)
        name = self.server.wheel.name
        if self.path.startswith("/simple/"):
            page = f'<!DOCTYPE html><html><body><a href="/files/{name}">{name}</a></body></html>'
            data, ctype = page.encode(), "text/html"
        elif self.path == f"/files/{name}":
            data, ctype = self.server.wheel.read_bytes(), "application/octet-stream"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "max-age=600, public")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[_Upstream]:
    wheel = make_wheel(tmp_path / "upstream", "corp-thing", "1.0", body="WHO = 'upstream'\n")
    server = _Upstream(wheel)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_name_uploaded_after_a_fallback_redirect(
    client: Clients,
    tmp_path: Path,
    index_args: list[str | os.PathLike[str]],
    upstream: _Upstream,
) -> None:
    """pip asks this index again (the 303 is not stored) and installs the upload. uv stores
    the upstream's page under this index's URL, with the upstream's max-age, so it does not
    ask again until that runs out: the README says so, and what to do about it."""
    args = ["--fallback-url", upstream.url + "simple/", *index_args]
    ours = make_wheel(tmp_path / "ours", "corp-thing", "2.0", body="WHO = 'ours'\n")
    with running_server(*args) as srv:
        first = client.install(srv.url, "corp-thing")
        mark(srv, 1)
        client.twine(srv.url, ours)
        second = client.install(srv.url, "corp-thing")
        mark(srv, 2)
        if client.name == "uv":
            third = client.install(srv.url, "corp-thing", "--refresh-package", "corp-thing")
            mark(srv, 3)
    assert "upstream" in module_text(first, "corp_thing")
    parts = requests_between_marks(srv.output)
    assert ("GET", "/simple/corp-thing/", 303) in parts[0], parts[0]
    if client.name == "pip":
        assert ("GET", "/simple/corp-thing/", 200) in parts[1], parts[1]
        assert "ours" in module_text(second, "corp_thing")
        return
    # uv: the upstream's page, kept under this index's URL, answered the second install
    # without a request to this index; --refresh-package makes it ask.
    assert not [r for r in parts[1] if r[1].startswith("/simple/")], parts[1]
    assert "upstream" in module_text(second, "corp_thing")
    assert ("GET", "/simple/corp-thing/", 200) in parts[2], parts[2]
    assert "ours" in module_text(third, "corp_thing")


def test_uv_asks_again_with_the_index_cache_control_setting(
    tmp_path: Path, index_args: list[str | os.PathLike[str]], upstream: _Upstream
) -> None:
    """What the README tells uv users of a fallback: ``cache-control = { api = ... }`` on the
    index makes uv revalidate this index's pages whatever the upstream's page said."""
    uv = Clients("uv", tmp_path)
    ours = make_wheel(tmp_path / "ours", "corp-thing", "2.0", body="WHO = 'ours'\n")
    with running_server("--fallback-url", upstream.url + "simple/", *index_args) as srv:
        config = tmp_path / "uv.toml"
        config.write_text(
            f'[[index]]\nurl = "{srv.url}simple/"\ndefault = true\n'
            'cache-control = { api = "max-age=0, must-revalidate" }\n'
        )

        def install(n: int) -> Path:
            venv = tmp_path / f"venv-{n}"
            run_client([_uv(), "venv", "--python", PY, venv], uv.env)
            cmd: list[str | os.PathLike[str]] = [_uv(), "pip", "install", "--no-build"]
            cmd += ["--config-file", config]
            cmd += ["--python", venv / "bin" / "python", "--cache-dir", uv.cache, "corp-thing"]
            run_client(cmd, uv.env)
            return venv / "bin" / "python"

        first = install(1)
        mark(srv, 1)
        uv.twine(srv.url, ours)
        second = install(2)
        mark(srv, 2)
    assert "upstream" in module_text(first, "corp_thing")
    assert "ours" in module_text(second, "corp_thing")
    parts = requests_between_marks(srv.output)
    assert ("GET", "/simple/corp-thing/", 200) in parts[1], parts[1]
