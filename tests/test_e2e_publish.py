"""End to end: real publishers upload to a running pkgserver, and pip and uv install the result.

Every test starts ``pkgserver run -P <htpasswd> --disable-fallback <pkgdir>`` on 127.0.0.1 (the
htpasswd made with ``pkgserver passwd``), publishes with a real client in an isolated environment
(fresh HOME and XDG directories, no pip/uv/twine/poetry/pdm/hatch/flit settings of this machine, the
null keyring), then checks that the package directory holds exactly the uploaded bytes, that
``/simple/<project>/`` lists them with their sha256, and that pip and uv install the wheels.

twine and uv come from the test extras. poetry, pdm, hatch and flit are found on PATH or in
``.ci/.clients/bin``, where ``bash .ci/install-clients.sh`` puts them; a missing one skips its test,
except when ``CI`` is set, where it fails (CI must never skip a publisher silently).

Nothing leaves 127.0.0.1: distributions are made by ``builders.py`` or built by the clients
themselves (poetry-core and flit_core in-process), and installs are wheels-only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urljoin

import pytest
from builders import make_sdist, make_wheel
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from server import Server, client_env, output, run_client, running_server

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
CLIENTS_BIN = ROOT / ".ci" / ".clients" / "bin"
PY = sys.executable
USER = "publisher"
PASSWORD = "s3cret-Pa55word"
CLIENT_TIMEOUT = 180.0


# -- finding the clients (fixtures listed before ``index``: a skip starts no server) ----------
def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def find_client(name: str) -> str:
    """A publisher's executable: on PATH, else in .ci/.clients/bin; else skip (fail under CI)."""
    found = shutil.which(name) or shutil.which(name, path=str(CLIENTS_BIN))
    if found:
        return found
    message = (
        f"{name} is not installed: run `bash .ci/install-clients.sh` (it installs poetry, pdm, "
        f"hatch and flit into .ci/.clients/ and links them into {CLIENTS_BIN})"
    )
    if _ci():
        pytest.fail(f"{message}; CI is set, so a missing publisher fails instead of skipping")
    pytest.skip(message)


@pytest.fixture
def poetry() -> str:
    return find_client("poetry")


@pytest.fixture
def pdm() -> str:
    return find_client("pdm")


@pytest.fixture
def hatch() -> str:
    return find_client("hatch")


@pytest.fixture
def flit() -> str:
    return find_client("flit")


def twine_bin() -> str:
    found = shutil.which("twine", path=os.path.dirname(PY)) or shutil.which(
        "twine", path=os.path.join(sys.prefix, "bin")
    )
    if not found:
        pytest.fail("twine is not installed in the test environment: it is part of the test extras")
    return found


def uv_bin() -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        pytest.fail("uv is not installed in the test environment: it is part of the test extras")


# -- running clients -------------------------------------------------------------------------------
def run(
    cmd: Sequence[str | os.PathLike[str]],
    env: dict[str, str],
    *,
    cwd: Path | None = None,
    ok: bool | None = True,
    timeout: float = CLIENT_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    return run_client(cmd, env, cwd=cwd, ok=ok, timeout=timeout)


# Settings of the machine or the user that would change what a publisher does.
_PUBLISHER_PREFIXES = ("TWINE_", "POETRY_", "PDM_", "HATCH_", "FLIT_", "VIRTUALENV_", "KEYRING_")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """client_env (fresh HOME, no pip/uv configuration) made safe for publishers too."""
    env = client_env(tmp_path)
    for key in list(env):
        if key.upper().startswith(_PUBLISHER_PREFIXES) or key == "PYTHON_KEYRING_BACKEND":
            del env[key]
    base = tmp_path / "client-home"
    for d in ("xdg-data", "xdg-state"):
        (base / d).mkdir(parents=True, exist_ok=True)
    env.update(
        XDG_DATA_HOME=str(base / "xdg-data"),
        XDG_STATE_HOME=str(base / "xdg-state"),
        # Never a desktop keyring, never a prompt: credentials come from the test or nowhere.
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
        # Wide, plain output, so that messages are not wrapped or coloured mid-word.
        COLUMNS="200",
        TERM="dumb",
        # poetry and pdm would otherwise make a virtualenv for the project (and virtualenv may
        # look for newer seed wheels online); publishing needs none.
        POETRY_VIRTUALENVS_CREATE="false",
        PDM_PYTHON=PY,
        PDM_CHECK_UPDATE="false",
        VIRTUALENV_NO_PERIODIC_UPDATE="1",
    )
    return env


def write_pypirc(
    env: dict[str, str], url: str, username: str = USER, password: str = PASSWORD
) -> Path:
    """~/.pypirc naming one index server, ``corp`` (read by twine, flit and distutils)."""
    path = Path(env["HOME"]) / ".pypirc"
    path.write_text(
        textwrap.dedent(
            f"""\
            [distutils]
            index-servers = corp

            [corp]
            repository = {url}
            username = {username}
            password = {password}
            """
        )
    )
    return path


# -- the index -------------------------------------------------------------------------------------
class Index(NamedTuple):
    srv: Server
    pkgdir: Path
    htpasswd: Path

    @property
    def url(self) -> str:
        return self.srv.url


def make_htpasswd(path: Path, user: str = USER, password: str = PASSWORD) -> Path:
    """``pkgserver passwd FILE USER`` with the password on standard input."""
    subprocess.run(
        [PY, "-m", "pkgserver", "passwd", path, user],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert path.read_text().startswith(f"{user}:$2"), path.read_text()
    return path


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    pkgdir = tmp_path / "packages"
    pkgdir.mkdir()
    htpasswd = make_htpasswd(tmp_path / "htpasswd")
    with running_server("-P", htpasswd, "--disable-fallback", pkgdir) as srv:
        yield Index(srv, pkgdir, htpasswd)


# -- checks ----------------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def project_of(filename: str) -> str:
    if filename.endswith(".whl"):
        return canonicalize_name(parse_wheel_filename(filename)[0])
    return canonicalize_name(parse_sdist_filename(filename)[0])


def stored(pkgdir: Path) -> dict[str, str]:
    """{relative path: sha256} of every file in the package directory, hidden ones included
    (a failed or repeated upload must leave no temporary file behind), except the server's
    record of hosted project names (.pkgserver/)."""
    return {
        rel: sha256(p)
        for p in sorted(pkgdir.rglob("*"))
        if p.is_file() and not (rel := p.relative_to(pkgdir).as_posix()).startswith(".pkgserver/")
    }


def assert_published(index: Index, *local: Path) -> None:
    """Each local file is stored under its own name with the same bytes, listed on
    /simple/<project>/ (JSON and HTML) with that sha256, and downloadable from its link."""
    for path in local:
        digest = sha256(path)
        there = index.pkgdir / path.name
        assert there.is_file(), (
            f"{path.name} is not in the package directory: {stored(index.pkgdir)}"
        )
        assert sha256(there) == digest, f"{path.name}: stored bytes differ from the uploaded file"
        project = project_of(path.name)
        index.srv.wait_listed(project, path.name)
        page = index.srv.project_json(project).json()
        entry = next(f for f in page["files"] if f["filename"] == path.name)
        assert entry["hashes"]["sha256"] == digest, entry
        assert entry["size"] == path.stat().st_size, entry
        html = index.srv.get(f"/simple/{project}/", accept="text/html").text
        assert f">{path.name}</a>" in html and f"#sha256={digest}" in html, html
        url = urljoin(f"{index.url}simple/{project}/", entry["url"])
        assert url.startswith(index.url), url
        res = index.srv.get(url[len(index.url) - 1 :])
        assert res.status == 200 and res.body == path.read_bytes(), (url, res.status)


def installed(python: Path, env: dict[str, str]) -> dict[str, str]:
    """{normalized name: version} of everything in the environment of ``python``."""
    code = (
        "import importlib.metadata as m, json\n"
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    res = run([python, "-I", "-c", code], env)
    return {canonicalize_name(k): v for k, v in json.loads(res.stdout).items()}


def assert_installs(
    url: str,
    env: dict[str, str],
    where: Path,
    requirements: dict[str, str],
    modules: Sequence[str],
) -> None:
    """pip (the test environment's, with --python) and uv each install ``{project: version}``
    from ``<url>simple/`` into a new environment, wheels only; then every module imports."""
    pins = [f"{name}=={version}" for name, version in requirements.items()]
    expected = {canonicalize_name(k): v for k, v in requirements.items()}
    check = "import " + ", ".join(modules) if modules else "pass"

    venv = where / "pip-venv"
    run([PY, "-m", "venv", "--without-pip", venv], env)
    py = venv / "bin" / "python"
    index_args = ["--index-url", url + "simple/"]
    run(
        [PY, "-m", "pip", "--python", py, "install", "--only-binary=:all:", *index_args, *pins], env
    )
    assert installed(py, env) == expected
    run([py, "-c", check], env)

    uv = uv_bin()
    venv = where / "uv-venv"
    run([uv, "venv", "--python", PY, venv], env)
    py = venv / "bin" / "python"
    run([uv, "pip", "install", "--python", py, "--no-build", *index_args, *pins], env)
    assert installed(py, env) == expected
    run([py, "-c", check], env)


class Published(NamedTuple):
    pkgdir: Path
    project: str
    version: str
    module: str | None  # None: sdist only


# What the publisher tests uploaded, for the last test to install all together.
PUBLISHED: list[Published] = []


def record(index: Index, project: str, version: str, module: str | None) -> None:
    PUBLISHED.append(Published(index.pkgdir, project, version, module))


# -- twine -----------------------------------------------------------------------------------------
def test_twine_upload_with_pypirc_is_idempotent_and_refuses_other_bytes(
    index: Index, env: dict[str, str], tmp_path: Path
) -> None:
    twine = twine_bin()
    dist = tmp_path / "dist"
    wheel = make_wheel(dist, "twine-corp-demo", "1.0", summary="published by twine -r corp")
    sdist = make_sdist(dist, "twine-corp-demo", "1.0", summary="published by twine -r corp")
    write_pypirc(env, index.url)
    upload = [twine, "upload", "-r", "corp", "--non-interactive", "--disable-progress-bar"]

    run([*upload, wheel, sdist], env)
    assert_published(index, wheel, sdist)
    before = stored(index.pkgdir)
    assert sorted(before) == sorted([sdist.name, wheel.name])

    # A CI re-run: the identical files again succeed and change nothing.
    res = run([*upload, wheel, sdist], env)
    assert "ERROR" not in output(res), output(res)
    assert stored(index.pkgdir) == before

    # Other bytes under an existing name: 409 "File already exists"; the stored file stays.
    other = make_wheel(tmp_path / "other", "twine-corp-demo", "1.0", summary="something else")
    assert other.name == wheel.name and sha256(other) != sha256(wheel)
    res = run([*upload, other], env, ok=False)
    out = output(res)
    assert "409" in out and "File already exists" in out, out
    assert stored(index.pkgdir) == before

    assert_installs(index.url, env, tmp_path, {"twine-corp-demo": "1.0"}, ["twine_corp_demo"])
    record(index, "twine-corp-demo", "1.0", "twine_corp_demo")


def test_twine_upload_to_legacy_url(index: Index, env: dict[str, str], tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    wheel = make_wheel(dist, "twine-legacy-demo", "2.0", summary="to /legacy/")
    sdist = make_sdist(dist, "twine-legacy-demo", "2.0", summary="to /legacy/")
    upload = [twine_bin(), "upload", "--repository-url", index.url + "legacy/"]
    upload += ["-u", USER, "-p", PASSWORD, "--non-interactive", "--disable-progress-bar"]
    run([*upload, wheel, sdist], env)
    assert_published(index, wheel, sdist)
    assert sorted(stored(index.pkgdir)) == sorted([sdist.name, wheel.name])
    assert_installs(index.url, env, tmp_path, {"twine-legacy-demo": "2.0"}, ["twine_legacy_demo"])
    record(index, "twine-legacy-demo", "2.0", "twine_legacy_demo")


@pytest.mark.parametrize(
    ("username", "password", "status"),
    [
        (USER, "wrong-password", "403 Forbidden"),
        ("nobody", PASSWORD, "403 Forbidden"),
        # Empty on the command line: twine sends no Authorization header at all.
        ("", "", "401 Unauthorized"),
    ],
    ids=["wrong-password", "unknown-user", "no-credentials"],
)
def test_twine_upload_refused_without_valid_credentials(
    index: Index, env: dict[str, str], tmp_path: Path, username: str, password: str, status: str
) -> None:
    wheel = make_wheel(tmp_path / "dist", "twine-denied", "1.0")
    upload = [twine_bin(), "upload", "--repository-url", index.url, "-u", username, "-p", password]
    res = run([*upload, "--non-interactive", "--disable-progress-bar", wheel], env, ok=False)
    assert status in output(res), output(res)
    assert stored(index.pkgdir) == {}
    assert index.srv.get("/simple/twine-denied/").status == 404


# -- uv --------------------------------------------------------------------------------------------
def test_uv_publish(index: Index, env: dict[str, str], tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    wheel = make_wheel(dist, "uv-publish-demo", "1.0", summary="published by uv")
    sdist = make_sdist(dist, "uv-publish-demo", "1.0", summary="published by uv")
    publish = [uv_bin(), "publish", "--publish-url", index.url, "--username", USER]
    publish += ["--password", PASSWORD, "--trusted-publishing", "never"]
    run([*publish, wheel, sdist], env)
    assert_published(index, wheel, sdist)
    before = stored(index.pkgdir)
    # Again without --check-url: uploaded again, answered 200 for identical bytes.
    run([*publish, wheel, sdist], env)
    assert stored(index.pkgdir) == before
    assert_installs(index.url, env, tmp_path, {"uv-publish-demo": "1.0"}, ["uv_publish_demo"])
    record(index, "uv-publish-demo", "1.0", "uv_publish_demo")


def test_uv_publish_with_check_url_skips_existing(
    index: Index, env: dict[str, str], tmp_path: Path
) -> None:
    dist = tmp_path / "dist"
    wheel = make_wheel(dist, "uv-check-demo", "1.0", summary="published by uv --check-url")
    sdist = make_sdist(dist, "uv-check-demo", "1.0", summary="published by uv --check-url")
    publish = [uv_bin(), "publish", "--publish-url", index.url]
    publish += ["--check-url", index.url + "simple/", "--username", USER, "--password", PASSWORD]
    publish += ["--trusted-publishing", "never"]
    run([*publish, wheel, sdist], env)
    assert_published(index, wheel, sdist)
    before = stored(index.pkgdir)
    # The second run reads /simple/uv-check-demo/, finds both files with matching hashes, skips.
    res = run([*publish, wheel, sdist], env)
    out = output(res)
    for f in (wheel, sdist):
        assert re.search(rf"{re.escape(f.name)} already exists", out), out
    assert stored(index.pkgdir) == before
    assert_installs(index.url, env, tmp_path, {"uv-check-demo": "1.0"}, ["uv_check_demo"])
    record(index, "uv-check-demo", "1.0", "uv_check_demo")


# -- poetry ----------------------------------------------------------------------------------------
def poetry_project(path: Path, name: str, version: str) -> Path:
    module = name.replace("-", "_")
    (path / module).mkdir(parents=True)
    (path / module / "__init__.py").write_text(f'"""{name}"""\n\n__version__ = "{version}"\n')
    (path / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [project]
            name = "{name}"
            version = "{version}"
            description = "A tiny project published by poetry"
            requires-python = ">=3.8"

            [build-system]
            requires = ["poetry-core>=2.0"]
            build-backend = "poetry.core.masonry.api"
            """
        )
    )
    return path


def test_poetry_publish(poetry: str, index: Index, env: dict[str, str], tmp_path: Path) -> None:
    project = poetry_project(tmp_path / "poetry-proj", "poetry-demo", "0.1.0")
    # `poetry build` uses poetry-core in-process: no network.
    run([poetry, "build", "--no-interaction"], env, cwd=project)
    wheel = project / "dist" / "poetry_demo-0.1.0-py3-none-any.whl"
    sdist = project / "dist" / "poetry_demo-0.1.0.tar.gz"
    assert wheel.is_file() and sdist.is_file(), list((project / "dist").iterdir())
    run([poetry, "config", "repositories.corp", index.url], env, cwd=project)
    env.update(POETRY_HTTP_BASIC_CORP_USERNAME=USER, POETRY_HTTP_BASIC_CORP_PASSWORD=PASSWORD)
    publish = [poetry, "publish", "-r", "corp", "--no-interaction"]

    run(publish, env, cwd=project)
    assert_published(index, wheel, sdist)
    before = stored(index.pkgdir)
    run(publish, env, cwd=project)  # identical bytes again: fine
    assert stored(index.pkgdir) == before

    # Rebuilt with other content under the same names: refused (409), skipped with
    # --skip-existing; the stored files stay as they were.
    kept = {p.name: p.read_bytes() for p in (wheel, sdist)}
    (project / "poetry_demo" / "__init__.py").write_text('__version__ = "0.1.0"\nCHANGED = 1\n')
    run([poetry, "build", "--no-interaction"], env, cwd=project)
    assert wheel.read_bytes() != kept[wheel.name]
    res = run(publish, env, cwd=project, ok=False)
    assert "HTTP Error 409: File already exists" in output(res), output(res)
    res = run([*publish, "--skip-existing"], env, cwd=project)
    assert output(res).count("File exists. Skipping") == 2, output(res)
    assert stored(index.pkgdir) == before

    # Install the first build (what the index holds), not the rebuilt one.
    for name, data in kept.items():
        (project / "dist" / name).write_bytes(data)
    assert_installs(index.url, env, tmp_path, {"poetry-demo": "0.1.0"}, ["poetry_demo"])
    record(index, "poetry-demo", "0.1.0", "poetry_demo")


# -- pdm -------------------------------------------------------------------------------------------
def test_pdm_publish(pdm: str, index: Index, env: dict[str, str], tmp_path: Path) -> None:
    project = tmp_path / "pdm-proj"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "pdm-demo"\nversion = "0.2.0"\nrequires-python = ">=3.8"\n'
    )
    wheel = make_wheel(project / "dist", "pdm-demo", "0.2.0", summary="published by pdm")
    sdist = make_sdist(project / "dist", "pdm-demo", "0.2.0", summary="published by pdm")
    publish = [pdm, "publish", "--no-build", "-r", index.url, "-u", USER, "-P", PASSWORD]

    run(publish, env, cwd=project)
    assert_published(index, wheel, sdist)
    before = stored(index.pkgdir)
    run(publish, env, cwd=project)
    assert stored(index.pkgdir) == before

    other = make_wheel(tmp_path / "other", "pdm-demo", "0.2.0", summary="something else")
    shutil.copy(other, wheel)
    res = run(publish, env, cwd=project, ok=False)
    # pdm prints the status line only ("Client error '409 Conflict' for url ..."), not the body.
    assert "409 Conflict" in output(res), output(res)
    # --skip-existing treats 409 as "already there": success, nothing changed.
    res = run([*publish, "--skip-existing"], env, cwd=project)
    assert f"Skipping {wheel.name} because it appears to already exist" in output(res), output(res)
    assert stored(index.pkgdir) == before

    assert_installs(index.url, env, tmp_path, {"pdm-demo": "0.2.0"}, ["pdm_demo"])
    record(index, "pdm-demo", "0.2.0", "pdm_demo")


# -- hatch -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["", "legacy/"], ids=["root", "legacy"])
def test_hatch_publish(
    hatch: str, index: Index, env: dict[str, str], tmp_path: Path, path: str
) -> None:
    name = "hatch-demo" if not path else "hatch-legacy-demo"
    work = tmp_path / "hatch-proj"
    wheel = make_wheel(work / "dist", name, "0.3.0", summary="published by hatch")
    sdist = make_sdist(work / "dist", name, "0.3.0", summary="published by hatch")
    # hatch first reads <repo>+simple/<project>/ (devpi's layout) to skip files already there.
    publish = [hatch, "publish", "-n", "-r", index.url + path, "-u", USER, "-a", PASSWORD]

    run([*publish, wheel, sdist], env, cwd=work)
    assert_published(index, wheel, sdist)
    before = stored(index.pkgdir)
    res = run([*publish, wheel, sdist], env, cwd=work)
    out = output(res)
    for f in (wheel, sdist):
        assert re.search(rf"{re.escape(f.name)} \.\.\. already exists", out), out
    assert stored(index.pkgdir) == before

    module = name.replace("-", "_")
    assert_installs(index.url, env, tmp_path, {name: "0.3.0"}, [module])
    record(index, name, "0.3.0", module)


# -- flit ------------------------------------------------------------------------------------------
def flit_project(path: Path, name: str, version: str) -> Path:
    module = name.replace("-", "_")
    path.mkdir(parents=True)
    (path / f"{module}.py").write_text(
        f'"""A tiny module published by flit."""\n\n__version__ = "{version}"\n'
    )
    (path / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [build-system]
            requires = ["flit_core>=3.4,<5"]
            build-backend = "flit_core.buildapi"

            [project]
            name = "{name}"
            authors = [{{name = "CI", email = "ci@example.invalid"}}]
            dynamic = ["version", "description"]
            requires-python = ">=3.8"
            """
        )
    )
    return path


def flit_dist(project: Path, name: str, version: str) -> tuple[Path, Path]:
    stem = f"{name.replace('-', '_')}-{version}"
    wheel = project / "dist" / f"{stem}-py3-none-any.whl"
    sdist = project / "dist" / f"{stem}.tar.gz"
    assert wheel.is_file() and sdist.is_file(), list((project / "dist").iterdir())
    return wheel, sdist


def test_flit_publish_with_pypirc(
    flit: str, index: Index, env: dict[str, str], tmp_path: Path
) -> None:
    project = flit_project(tmp_path / "flit-proj", "flit-demo", "0.4.0")
    write_pypirc(env, index.url)
    # flit builds the wheel and the sdist itself (flit_core), then uploads both.
    run([flit, "publish", "--repository", "corp"], env, cwd=project)
    wheel, sdist = flit_dist(project, "flit-demo", "0.4.0")
    assert_published(index, wheel, sdist)
    before = stored(index.pkgdir)
    # flit builds are reproducible, so publishing again sends the same bytes: accepted.
    run([flit, "publish", "--repository", "corp"], env, cwd=project)
    assert stored(index.pkgdir) == before
    assert_installs(index.url, env, tmp_path, {"flit-demo": "0.4.0"}, ["flit_demo"])
    record(index, "flit-demo", "0.4.0", "flit_demo")


def test_flit_publish_with_environment(
    flit: str, index: Index, env: dict[str, str], tmp_path: Path
) -> None:
    project = flit_project(tmp_path / "flit-proj", "flit-env-demo", "0.5.0")
    env.update(FLIT_INDEX_URL=index.url + "legacy/", FLIT_USERNAME=USER, FLIT_PASSWORD=PASSWORD)
    run([flit, "publish"], env, cwd=project)
    wheel, sdist = flit_dist(project, "flit-env-demo", "0.5.0")
    assert_published(index, wheel, sdist)
    assert_installs(index.url, env, tmp_path, {"flit-env-demo": "0.5.0"}, ["flit_env_demo"])
    record(index, "flit-env-demo", "0.5.0", "flit_env_demo")


# -- setup.py sdist upload (the standard library's distutils) --------------------------------------
def test_setup_py_sdist_upload(index: Index, env: dict[str, str], tmp_path: Path) -> None:
    project = tmp_path / "distutils-proj"
    project.mkdir()
    (project / "distutils_demo.py").write_text('VERSION = "0.6"\n')
    (project / "setup.py").write_text(
        textwrap.dedent(
            """\
            from distutils.core import setup

            setup(
                name="distutils-demo",
                version="0.6",
                description="published with setup.py sdist upload",
                author="CI",
                author_email="ci@example.invalid",
                url="http://example.invalid/",
                py_modules=["distutils_demo"],
            )
            """
        )
    )
    write_pypirc(env, index.url)
    # The standard library's distutils, not the copy inside setuptools (which has no upload).
    env["SETUPTOOLS_USE_DISTUTILS"] = "stdlib"
    cmd = [PY, "-W", "ignore::DeprecationWarning", "setup.py", "sdist", "upload", "-r", "corp"]
    res = run(cmd, env, cwd=project)
    assert "Server response (200)" in output(res), output(res)
    # distutils names the sdist after the project as written, hyphen included.
    sdist = project / "dist" / "distutils-demo-0.6.tar.gz"
    assert_published(index, sdist)
    assert sorted(stored(index.pkgdir)) == [sdist.name]
    # Building this sdist needs setuptools and wheel from an index; none is reachable here, so
    # pip and uv installs are checked on the wheels of the other publishers only.
    record(index, "distutils-demo", "0.6", None)


# -- everything together ---------------------------------------------------------------------------
def test_everything_published_installs_together(env: dict[str, str], tmp_path: Path) -> None:
    """One server over every package directory the publisher tests filled: pip and uv install
    all published wheels into one environment each."""
    if not PUBLISHED:
        pytest.skip("no publisher test ran in this session (run the whole file)")
    htpasswd = make_htpasswd(tmp_path / "htpasswd")
    roots = sorted({p.pkgdir for p in PUBLISHED})
    with running_server("-P", htpasswd, "--disable-fallback", *roots) as srv:
        for p in PUBLISHED:
            srv.wait_listed(p.project)
        index_page = srv.get("/simple/", accept="application/vnd.pypi.simple.v1+json").json()
        listed = {x["name"] for x in index_page["projects"]}
        assert {p.project for p in PUBLISHED} <= listed, listed
        wheels = [p for p in PUBLISHED if p.module]
        assert_installs(
            srv.url,
            env,
            tmp_path,
            {p.project: p.version for p in wheels},
            [p.module for p in wheels if p.module],
        )
