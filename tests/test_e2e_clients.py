"""End to end: pkgserver runs as a process and real pip and uv install from it.

Nothing leaves 127.0.0.1: every server runs with ``--disable-fallback`` or a ``--fallback-url``
pointing at another local pkgserver, clients get an environment without this machine's pip/uv
configuration (``server.client_env``), and installs are wheels-only so no build backend is ever
fetched. Target environments are made with ``python -m venv --without-pip`` (pip installs into
them with ``pip --python``) or ``uv venv``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urljoin

import pytest
from builders import make_sdist, make_wheel
from server import Server, client_env, output, run_client, running_server

pytestmark = pytest.mark.e2e

PY = sys.executable
JSON_V1 = "application/vnd.pypi.simple.v1+json"


def _uv_bin() -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if not found:
            pytest.fail("uv is not installed: it is part of the test extras")
        return found


# -- running clients --------------------------------------------------------------------------------
def run(
    cmd: Sequence[str | os.PathLike[str]],
    env: dict[str, str],
    *,
    ok: bool | None = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run a client; ``ok`` True/False asserts success/failure (None: no check)."""
    return run_client(cmd, env, ok=ok, timeout=timeout)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(python: Path, env: dict[str, str]) -> dict[str, str]:
    """{normalized name: version} of everything in the environment of ``python``."""
    code = (
        "import importlib.metadata as m, json\n"
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    res = run([python, "-I", "-c", code], env)
    return {canonical(k): v for k, v in json.loads(res.stdout).items()}


class Client:
    """pip or uv, driven the way a user would."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.uv = _uv_bin() if name == "uv" else ""

    def __repr__(self) -> str:
        return self.name

    def venv(self, path: Path, env: dict[str, str]) -> Path:
        if self.name == "uv":
            run([self.uv, "venv", "--python", PY, path], env)
        else:
            run([PY, "-m", "venv", "--without-pip", path], env)
        return path / "bin" / "python"

    def install(
        self,
        python: Path,
        env: dict[str, str],
        index_url: str,
        *args: str,
        ok: bool | None = True,
    ) -> subprocess.CompletedProcess[str]:
        if self.name == "uv":
            cmd: list[str | os.PathLike[str]] = [self.uv, "pip", "install", "--python", python]
            cmd += ["--no-build"]
        else:
            cmd = [PY, "-m", "pip", "--python", python, "install", "-v"]
            cmd += ["--only-binary=:all:", "--no-build-isolation"]
        return run([*cmd, "--index-url", index_url, *args], env, ok=ok)

    def show_version(self, python: Path, env: dict[str, str], project: str) -> str:
        if self.name == "uv":
            res = run([self.uv, "pip", "show", "--python", python, project], env)
        else:
            res = run([PY, "-m", "pip", "--python", python, "show", project], env)
        m = re.search(r"^Version: (\S+)$", res.stdout, re.MULTILINE)
        assert m, res.stdout
        return m.group(1)


def pip(
    env: dict[str, str], *args: str | os.PathLike[str], ok: bool | None = True
) -> subprocess.CompletedProcess[str]:
    return run([PY, "-m", "pip", *args], env, ok=ok)


def not_found_message(client: Client, project: str, out: str) -> bool:
    if client.name == "uv":
        return f"{project} was not found in the package registry" in out
    return f"No matching distribution found for {project}" in out


# -- package directories ----------------------------------------------------------------------------
def settled(directory: Path) -> Path:
    """Backdate every file, so a starting server lists them at once (pkgserver waits until a
    file found by a scan is a second old, in case something is still writing it)."""
    old = time.time() - 120
    for p in directory.rglob("*"):
        if p.is_file():
            os.utime(p, (old, old))
    return directory


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return client_env(tmp_path)


@pytest.fixture(params=["pip", "uv"])
def client(request: pytest.FixtureRequest) -> Client:
    return Client(request.param)


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("shared") / "packages"
    for version in ("1.0", "1.5", "1.9"):
        make_wheel(d, "demo-pkg", version, summary="A demo package")
    make_wheel(
        d, "demo-pkg", "1.10", summary="A demo package, newest", requires_dist=["helper-lib>=1"]
    )
    make_sdist(d, "demo-pkg", "1.10", summary="A demo package, newest")
    # In a subfolder, so links are /packages/helper-lib/...
    make_wheel(d / "helper-lib", "helper-lib", "0.9", summary="Helps demos")
    make_wheel(d / "helper-lib", "helper-lib", "1.0", summary="Helps demos")
    make_wheel(d, "py-gated", "1.0", summary="gated", requires_python=">=3.8")
    make_wheel(d, "py-gated", "2.0", summary="gated", requires_python=">=4")
    return settled(d)


@pytest.fixture(scope="module")
def shared(shared_dir: Path) -> Iterator[Server]:
    with running_server("--disable-fallback", shared_dir) as srv:
        srv.wait_listed("demo-pkg", "demo_pkg-1.10-py3-none-any.whl", "demo_pkg-1.10.tar.gz")
        srv.wait_listed("helper-lib", "helper_lib-1.0-py3-none-any.whl")
        srv.wait_listed("py-gated", "py_gated-2.0-py3-none-any.whl")
        yield srv


# -- the helper itself ------------------------------------------------------------------------------
def test_server_starts_answers_health_and_stops_cleanly(tmp_path: Path) -> None:
    d = tmp_path / "packages"
    d.mkdir()
    with running_server("--disable-fallback", d) as srv:
        assert srv.url == f"http://127.0.0.1:{srv.port}/"
        res = srv.get("/health")
        assert res.status == 200, res
        assert srv.proc is not None and srv.proc.poll() is None
    assert srv.proc.returncode == 0


def test_sigterm_logs_shutting_down(tmp_path: Path) -> None:
    with running_server("--disable-fallback", tmp_path) as srv:
        pass
    assert srv.proc is not None and srv.proc.returncode == 0
    assert "shutting down" in srv.output


def test_server_that_cannot_start_is_reported(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="does not exist"):
        with running_server(
            "--disable-fallback", tmp_path / "missing" / "deeper", startup_timeout=20
        ):
            pass


def test_client_env_hides_this_machines_configuration(env: dict[str, str]) -> None:
    assert not any(k.startswith(("PIP_FIND", "PIP_INDEX", "PIP_EXTRA", "UV_INDEX")) for k in env)
    assert env["PIP_CONFIG_FILE"] == os.devnull
    res = pip(env, "config", "list")
    # Only what client_env set (":env:" entries); no file's find-links or extra index.
    lines = res.stdout.splitlines()
    assert lines and all(ln.startswith(":env:.") for ln in lines), res.stdout
    assert not re.search(r"index|find-links", res.stdout), res.stdout


# -- pip ----------------------------------------------------------------------------------------------
def test_pip_installs_newest_version_and_hosted_dependency(
    shared: Server, env: dict[str, str], tmp_path: Path
) -> None:
    pipc = Client("pip")
    py = pipc.venv(tmp_path / "venv", env)
    res = pipc.install(py, env, shared.url + "simple/", "demo-pkg")
    # 1.10 is newer than 1.9 (versions, not strings); it pulls helper-lib>=1, hosted too.
    assert installed(py, env) == {"demo-pkg": "1.10", "helper-lib": "1.0"}
    imported = run(
        [py, "-c", "import demo_pkg, helper_lib; print(demo_pkg.VERSION, helper_lib.VERSION)"], env
    )
    assert imported.stdout.split() == ["1.10", "1.0"]
    assert pipc.show_version(py, env, "demo-pkg") == "1.10"
    # PEP 658: pip resolved from the .metadata files, not by downloading wheels to read them.
    out = output(res)
    base = re.escape(shared.url)
    assert re.search(
        rf"Obtaining dependency information for demo-pkg from {base}packages/demo_pkg-1\.10-py3-none-any\.whl\.metadata",
        out,
    ), out
    assert re.search(
        rf"Obtaining dependency information for helper-lib>=1 from {base}packages/helper-lib/helper_lib-1\.0-py3-none-any\.whl\.metadata",
        out,
    ), out
    assert "WARNING" not in out and "ERROR" not in out, out


def test_pip_index_versions(shared: Server, env: dict[str, str]) -> None:
    res = pip(env, "index", "versions", "--index-url", shared.url + "simple/", "demo-pkg")
    assert res.stdout.splitlines()[:2] == [
        "demo-pkg (1.10)",
        "Available versions: 1.10, 1.9, 1.5, 1.0",
    ], res.stdout


def test_pep658_metadata_file_matches_the_wheel(shared: Server, shared_dir: Path) -> None:
    page = shared.project_json("demo-pkg")
    entry = next(
        f for f in page.json()["files"] if f["filename"] == "demo_pkg-1.10-py3-none-any.whl"
    )
    url = urljoin(shared.url + "simple/demo-pkg/", entry["url"] + ".metadata")  # url is relative
    assert url.startswith(shared.url + "packages/"), url
    res = shared.get(url[len(shared.url) - 1 :])
    assert res.status == 200, res
    with zipfile.ZipFile(shared_dir / "demo_pkg-1.10-py3-none-any.whl") as zf:
        assert res.body == zf.read("demo_pkg-1.10.dist-info/METADATA")
    assert entry["core-metadata"] == {"sha256": hashlib.sha256(res.body).hexdigest()}


def test_pip_download_no_deps(
    shared: Server, shared_dir: Path, env: dict[str, str], tmp_path: Path
) -> None:
    dest = tmp_path / "dl"
    common: list[str | os.PathLike[str]] = [
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-d",
        dest,
        "--index-url",
        shared.url + "simple/",
    ]
    pip(env, *common, "demo-pkg")
    assert sorted(p.name for p in dest.iterdir()) == ["demo_pkg-1.10-py3-none-any.whl"]
    pip(env, *common, "demo-pkg==1.5")
    assert sorted(p.name for p in dest.iterdir()) == [
        "demo_pkg-1.10-py3-none-any.whl",
        "demo_pkg-1.5-py3-none-any.whl",
    ]
    for p in dest.iterdir():
        assert p.read_bytes() == (shared_dir / p.name).read_bytes()


def test_pip_index_url_without_simple(shared: Server, env: dict[str, str], tmp_path: Path) -> None:
    """pypiserver habit: --index-url http://host:port/ and --extra-index-url http://host:port/."""
    pipc = Client("pip")
    py = pipc.venv(tmp_path / "a", env)
    pipc.install(py, env, shared.url, "demo-pkg")
    assert installed(py, env) == {"demo-pkg": "1.10", "helper-lib": "1.0"}

    empty = tmp_path / "empty"
    empty.mkdir()
    with running_server("--disable-fallback", empty) as other:
        py = pipc.venv(tmp_path / "b", env)
        pipc.install(
            py, env, other.url + "simple/", "--extra-index-url", shared.url, "demo-pkg==1.9"
        )
        assert installed(py, env) == {"demo-pkg": "1.9"}
        py = pipc.venv(tmp_path / "c", env)
        pipc.install(py, env, other.url, "--extra-index-url", shared.url.rstrip("/"), "helper-lib")
        assert installed(py, env) == {"helper-lib": "1.0"}


def test_uv_index_url_without_simple(shared: Server, env: dict[str, str], tmp_path: Path) -> None:
    uvc = Client("uv")
    py = uvc.venv(tmp_path / "a", env)
    uvc.install(py, env, shared.url, "demo-pkg")
    assert installed(py, env) == {"demo-pkg": "1.10", "helper-lib": "1.0"}
    empty = tmp_path / "empty"
    empty.mkdir()
    with running_server("--disable-fallback", empty) as other:
        py = uvc.venv(tmp_path / "b", env)
        uvc.install(
            py, env, other.url + "simple/", "--extra-index-url", shared.url, "demo-pkg==1.9"
        )
        assert installed(py, env) == {"demo-pkg": "1.9"}


def test_pip_bundled_with_python_installs(
    shared: Server, env: dict[str, str], tmp_path: Path
) -> None:
    """The (older) pip that ``python -m venv`` puts in a new environment works too."""
    venv = tmp_path / "venv"
    run([PY, "-m", "venv", venv], env)
    py = venv / "bin" / "python"
    run(
        [
            py,
            "-m",
            "pip",
            "install",
            "--only-binary=:all:",
            "--index-url",
            shared.url + "simple/",
            "demo-pkg",
        ],
        env,
    )
    got = installed(py, env)
    assert got["demo-pkg"] == "1.10" and got["helper-lib"] == "1.0", got


# -- uv -----------------------------------------------------------------------------------------------
def test_uv_installs_newest_version_and_hosted_dependency(
    shared: Server, env: dict[str, str], tmp_path: Path
) -> None:
    uvc = Client("uv")
    py = uvc.venv(tmp_path / "venv", env)
    uvc.install(py, env, shared.url + "simple/", "demo-pkg")
    assert installed(py, env) == {"demo-pkg": "1.10", "helper-lib": "1.0"}
    imported = run(
        [py, "-c", "import demo_pkg, helper_lib; print(demo_pkg.VERSION, helper_lib.VERSION)"], env
    )
    assert imported.stdout.split() == ["1.10", "1.0"]
    assert uvc.show_version(py, env, "demo-pkg") == "1.10"


@pytest.mark.parametrize(
    ("requirements", "expected"),
    [
        (["demo-pkg>=1.5,<1.10"], {"demo-pkg": "1.9"}),
        (["demo-pkg==1.0"], {"demo-pkg": "1.0"}),
        (["helper-lib<1"], {"helper-lib": "0.9"}),
        # demo-pkg 1.10 needs helper-lib>=1, which is excluded: back to demo-pkg 1.9.
        (["demo-pkg", "helper-lib!=1.0"], {"demo-pkg": "1.9", "helper-lib": "0.9"}),
    ],
)
def test_version_constraints(
    client: Client,
    shared: Server,
    env: dict[str, str],
    tmp_path: Path,
    requirements: list[str],
    expected: dict[str, str],
) -> None:
    py = client.venv(tmp_path / "venv", env)
    client.install(py, env, shared.url + "simple/", *requirements)
    assert installed(py, env) == expected


def test_requires_python_is_honoured(
    client: Client, shared: Server, env: dict[str, str], tmp_path: Path
) -> None:
    page = shared.project_json("py-gated").json()
    assert {f["filename"]: f.get("requires-python") for f in page["files"]} == {
        "py_gated-1.0-py3-none-any.whl": ">=3.8",
        "py_gated-2.0-py3-none-any.whl": ">=4",
    }
    html = shared.get("/simple/py-gated/", accept="text/html").text
    assert 'data-requires-python="&gt;=4"' in html

    py = client.venv(tmp_path / "venv", env)
    client.install(py, env, shared.url + "simple/", "py-gated")
    assert installed(py, env) == {"py-gated": "1.0"}
    res = client.install(py, env, shared.url + "simple/", "py-gated==2.0", ok=False)
    assert ">=4" in output(res), output(res)


def test_file_names_that_need_quoting(client: Client, env: dict[str, str], tmp_path: Path) -> None:
    """A local version ("+" is %2B in links), a folder with a space, a legacy wheel name."""
    d = tmp_path / "packages"
    make_wheel(d, "local-pkg", "1.0+cpu", summary="local version")
    make_wheel(d / "team a", "spaced-pkg", "1.0", summary="in a folder with a space")
    make_wheel(d, "Legacy.Name", "1.0", filename="Legacy.Name-1.0-py3-none-any.whl")
    make_wheel(
        d, "uses-local", "1.0", requires_dist=["local-pkg==1.0+cpu", "spaced-pkg", "legacy-name"]
    )
    settled(d)
    with running_server("--disable-fallback", d) as srv:
        srv.wait_listed("uses-local")
        srv.wait_listed("legacy-name", "Legacy.Name-1.0-py3-none-any.whl")
        py = client.venv(tmp_path / "venv", env)
        client.install(py, env, srv.url + "simple/", "uses-local")
        assert installed(py, env) == {
            "uses-local": "1.0",
            "local-pkg": "1.0+cpu",
            "spaced-pkg": "1.0",
            "legacy-name": "1.0",
        }


# -- pip search ---------------------------------------------------------------------------------------
def test_pip_search(shared: Server, env: dict[str, str]) -> None:
    # No path in the URL: pip (xmlrpc.client) posts to /RPC2.
    res = pip(env, "search", "--index", shared.url.rstrip("/"), "demo")
    lines = res.stdout.splitlines()
    assert any(
        re.fullmatch(r"demo-pkg \(1\.10\)\s+- A demo package, newest", ln) for ln in lines
    ), res.stdout
    # "demo" is also in helper-lib's summary ("Helps demos"): name or summary matches.
    assert any(re.fullmatch(r"helper-lib \(1\.0\)\s+- Helps demos", ln) for ln in lines), res.stdout
    assert "py-gated" not in res.stdout
    # With a trailing slash pip posts to "/".
    res = pip(env, "search", "--index", shared.url, "GATED")
    assert re.search(r"^py-gated \(2\.0\)\s+- gated$", res.stdout, re.MULTILINE), res.stdout
    # No match: pip's own exit status 23 (NO_MATCHES_FOUND), not an error from the server.
    res = pip(env, "search", "--index", shared.url, "no-such-thing-anywhere", ok=False)
    assert res.returncode == 23, output(res)


# -- fallback -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("upstream") / "packages"
    make_wheel(d, "upstream-only", "2.0", summary="only upstream")
    make_wheel(d, "upstream-only", "3.0", summary="only upstream")
    # Also hosted by the main server, which has 2.0; upstream's 9.0 must never be seen there.
    make_wheel(d, "both-pkg", "1.0", summary="upstream copy")
    make_wheel(d, "both-pkg", "9.0", summary="upstream copy")
    settled(d)
    with running_server("--disable-fallback", d) as srv:
        srv.wait_listed("upstream-only", "upstream_only-3.0-py3-none-any.whl")
        srv.wait_listed("both-pkg", "both_pkg-9.0-py3-none-any.whl")
        yield srv


@pytest.fixture(scope="module")
def main_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("main") / "packages"
    make_wheel(d, "both-pkg", "2.0", summary="main copy")
    make_wheel(d, "app-pkg", "1.0", summary="private app", requires_dist=["upstream-only>=3"])
    return settled(d)


@pytest.fixture(scope="module")
def main(upstream: Server, main_dir: Path) -> Iterator[Server]:
    with running_server("--fallback-url", upstream.url + "simple/", main_dir) as srv:
        srv.wait_listed("both-pkg", "both_pkg-2.0-py3-none-any.whl")
        srv.wait_listed("app-pkg", "app_pkg-1.0-py3-none-any.whl")
        yield srv


def test_fallback_redirects(main: Server, upstream: Server) -> None:
    res = main.get("/simple/upstream-only/", accept=JSON_V1)
    assert res.status == 303, res
    assert res.headers["location"] == upstream.url + "simple/upstream-only/"
    # Straight to the canonical name upstream.
    res = main.get("/simple/Upstream_Only/")
    assert res.status == 303, res
    assert res.headers["location"] == upstream.url + "simple/upstream-only/"
    # Hosted here: answered here, with only the local files.
    res = main.project_json("both-pkg")
    assert res.status == 200, res
    assert [f["filename"] for f in res.json()["files"]] == ["both_pkg-2.0-py3-none-any.whl"]


@pytest.mark.parametrize("simple", ["simple/", ""], ids=["simple", "bare"])
def test_fallback_install(
    client: Client, main: Server, env: dict[str, str], tmp_path: Path, simple: str
) -> None:
    index = main.url + simple
    py = client.venv(tmp_path / "a", env)
    client.install(py, env, index, "upstream-only")
    assert installed(py, env) == {"upstream-only": "3.0"}
    # A private project depending on one that only the upstream index has.
    py = client.venv(tmp_path / "b", env)
    client.install(py, env, index, "app-pkg")
    assert installed(py, env) == {"app-pkg": "1.0", "upstream-only": "3.0"}
    # Hosted nowhere: redirected upstream, where it is a 404, and the client says so.
    res = client.install(py, env, index, "nowhere-pkg", ok=False)
    assert not_found_message(client, "nowhere-pkg", output(res)), output(res)


def test_hosted_project_is_not_taken_from_upstream(
    client: Client, main: Server, env: dict[str, str], tmp_path: Path
) -> None:
    py = client.venv(tmp_path / "venv", env)
    client.install(py, env, main.url + "simple/", "both-pkg")
    assert installed(py, env) == {"both-pkg": "2.0"}  # upstream's newer 9.0 is not merged in
    res = client.install(py, env, main.url + "simple/", "both-pkg==9.0", ok=False)
    assert "9.0" in output(res), output(res)
    assert installed(py, env) == {"both-pkg": "2.0"}


def test_disable_fallback_answers_404(
    client: Client, main_dir: Path, env: dict[str, str], tmp_path: Path
) -> None:
    with running_server("--disable-fallback", main_dir) as srv:
        srv.wait_listed("both-pkg")
        assert srv.get("/simple/upstream-only/").status == 404
        assert srv.project_json("upstream-only").status == 404
        redirect = srv.get("/upstream-only/")  # pypiserver-style URL: to /simple/, then 404 there
        assert redirect.status in (301, 302, 303, 307, 308), redirect
        py = client.venv(tmp_path / "venv", env)
        for index in (srv.url + "simple/", srv.url):
            res = client.install(py, env, index, "upstream-only", ok=False)
            assert not_found_message(client, "upstream-only", output(res)), output(res)
        assert installed(py, env) == {}


# -- files added while running ------------------------------------------------------------------------
def test_wheel_copied_in_is_installable(
    client: Client, env: dict[str, str], tmp_path: Path
) -> None:
    served = tmp_path / "served"
    make_wheel(served, "helper-lib", "1.0")
    settled(served)
    staging = tmp_path / "staging"
    first = make_wheel(staging, "late-pkg", "1.0", summary="arrived late")
    second = make_wheel(staging, "late-pkg", "2.0", summary="arrived later")
    with running_server("--disable-fallback", served) as srv:
        srv.wait_listed("helper-lib")
        assert srv.get("/simple/late-pkg/").status == 404
        py = client.venv(tmp_path / "venv", env)
        client.install(py, env, srv.url + "simple/", "late-pkg", ok=False)

        shutil.copy(first, served / first.name)  # cp: written in place, then closed
        took = srv.wait_listed("late-pkg", first.name, timeout=5)
        assert took < 2.5, took
        client.install(py, env, srv.url + "simple/", "late-pkg")
        assert installed(py, env) == {"late-pkg": "1.0"}

        # A new version, the way rsync and atomic publishers do it: hidden temp file, rename.
        tmp = served / f".{second.name}.part"
        shutil.copy(second, tmp)
        os.rename(tmp, served / second.name)
        took = srv.wait_listed("late-pkg", second.name, timeout=5)
        assert took < 2.5, took
        # Same client cache as before: the project page must not be served stale.
        client.install(py, env, srv.url + "simple/", "--upgrade", "late-pkg")
        assert installed(py, env) == {"late-pkg": "2.0"}

        # Deleted: no longer offered, to the same client cache either.
        (served / second.name).unlink()
        deadline = time.monotonic() + 5
        while second.name in {f["filename"] for f in srv.project_json("late-pkg").json()["files"]}:
            assert time.monotonic() < deadline, "deleted file still listed after 5s"
            time.sleep(0.05)
        py = client.venv(tmp_path / "venv2", env)
        client.install(py, env, srv.url + "simple/", "late-pkg==2.0", ok=False)
        client.install(py, env, srv.url + "simple/", "late-pkg")
        assert installed(py, env) == {"late-pkg": "1.0"}
