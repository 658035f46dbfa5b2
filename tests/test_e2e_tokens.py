# ruff: noqa: F811 (the publishers' fixtures are imported from test_e2e_publish)
"""End to end: scoped API tokens with the real publishers and installers.

A token is made with ``pkgserver token create`` (as an administrator would), limited to the
projects ``scoped-*``; twine, uv, poetry, pdm, hatch and flit each publish a ``scoped-...``
project with it (user ``__token__``) and are refused for a project outside that scope, leaving
the directory as it was. A revoked or expired token is refused by a second server process
sharing the directory within a second; pip and uv install with a download-only token.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from builders import make_sdist, make_wheel
from server import Server, output, running_server
from test_e2e_publish import (
    PY,
    USER,
    Index,
    env,  # noqa: F401 (a fixture)
    flit,  # noqa: F401 (a fixture)
    flit_dist,
    flit_project,
    hatch,  # noqa: F401 (a fixture)
    index,  # noqa: F401 (a fixture)
    make_htpasswd,
    pdm,  # noqa: F401 (a fixture)
    poetry,  # noqa: F401 (a fixture)
    poetry_project,
    run,
    stored,
    twine_bin,
    uv_bin,
    write_pypirc,
)

pytestmark = pytest.mark.e2e

TOKEN_USER = "__token__"


def create_token(pkgdir: Path, *args: str) -> str:
    res = subprocess.run(
        [PY, "-m", "pkgserver", "token", "create", "--owner", USER, *args, str(pkgdir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    secret = res.stdout.strip()
    assert secret.startswith("pkgserver-"), res.stdout + res.stderr
    return secret


def revoke_token(pkgdir: Path, secret: str) -> None:
    subprocess.run(
        [PY, "-m", "pkgserver", "token", "revoke", secret.split("-")[1], str(pkgdir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


@pytest.fixture
def token(index: Index) -> str:
    return create_token(index.pkgdir, "--project", "scoped-*", "--description", "CI")


def refused(index: Index, res: subprocess.CompletedProcess[str], project: str) -> None:
    """The client failed with the server's 403, and nothing was stored for ``project``."""
    assert res.returncode != 0, output(res)
    assert "403" in output(res), output(res)
    assert not [name for name in stored(index.pkgdir) if name.startswith(project)]


def test_twine_with_a_scoped_token(
    index: Index,
    env: dict[str, str],
    token: str,
    tmp_path: Path,
) -> None:
    write_pypirc(env, index.url, username=TOKEN_USER, password=token)
    ok = make_wheel(tmp_path / "ok", "scoped-twine", "1.0")
    run([twine_bin(), "upload", "-r", "corp", "--disable-progress-bar", ok], env)
    assert "scoped_twine-1.0-py3-none-any.whl" in stored(index.pkgdir)
    before = stored(index.pkgdir)
    out = make_wheel(tmp_path / "out", "outside-twine", "1.0")
    res = run([twine_bin(), "upload", "-r", "corp", "--disable-progress-bar", out], env, ok=None)
    refused(index, res, "outside_twine")
    assert "does not grant upload on 'outside-twine'" in output(res), output(res)
    assert stored(index.pkgdir) == before


def test_uv_with_a_scoped_token(
    index: Index,
    env: dict[str, str],
    token: str,
    tmp_path: Path,
) -> None:
    publish = [uv_bin(), "publish", "--publish-url", index.url, "--trusted-publishing", "never"]
    publish += ["--username", TOKEN_USER, "--password", token]
    ok = make_wheel(tmp_path / "ok", "scoped-uv", "1.0")
    run([*publish, ok], env)
    assert "scoped_uv-1.0-py3-none-any.whl" in stored(index.pkgdir)
    before = stored(index.pkgdir)
    res = run([*publish, make_wheel(tmp_path / "out", "outside-uv", "1.0")], env, ok=None)
    refused(index, res, "outside_uv")
    assert stored(index.pkgdir) == before
    # uv takes the token alone too (--token sets __token__ as the user).
    other = make_wheel(tmp_path / "ok2", "scoped-uv", "1.1")
    token_only = [uv_bin(), "publish", "--publish-url", index.url, "--trusted-publishing", "never"]
    run([*token_only, "--token", token, other], env)
    assert "scoped_uv-1.1-py3-none-any.whl" in stored(index.pkgdir)


def test_poetry_with_a_scoped_token(
    poetry: str,
    index: Index,
    env: dict[str, str],
    token: str,
    tmp_path: Path,
) -> None:
    run([poetry, "config", "repositories.corp", index.url], env, cwd=tmp_path)
    # poetry's own way of giving a token: pypi-token.<repo> (user __token__).
    env.update(POETRY_PYPI_TOKEN_CORP=token)
    for name, ok in (("scoped-poetry", True), ("outside-poetry", False)):
        project = poetry_project(tmp_path / name, name, "0.1.0")
        run([poetry, "build", "--no-interaction"], env, cwd=project)
        publish = [poetry, "publish", "-r", "corp", "--no-interaction"]
        res = run(publish, env, cwd=project, ok=True if ok else None)
        if ok:
            assert "scoped_poetry-0.1.0-py3-none-any.whl" in stored(index.pkgdir)
        else:
            refused(index, res, "outside_poetry")


def test_pdm_with_a_scoped_token(
    pdm: str,
    index: Index,
    env: dict[str, str],
    token: str,
    tmp_path: Path,
) -> None:
    for name, ok in (("scoped-pdm", True), ("outside-pdm", False)):
        project = tmp_path / name
        project.mkdir()
        (project / "pyproject.toml").write_text(
            f'[project]\nname = "{name}"\nversion = "0.2.0"\nrequires-python = ">=3.8"\n'
        )
        make_wheel(project / "dist", name, "0.2.0")
        make_sdist(project / "dist", name, "0.2.0")
        publish = [pdm, "publish", "--no-build", "-r", index.url, "-u", TOKEN_USER, "-P", token]
        res = run(publish, env, cwd=project, ok=True if ok else None)
        if ok:
            assert "scoped_pdm-0.2.0.tar.gz" in stored(index.pkgdir)
        else:
            refused(index, res, "outside_pdm")


def test_hatch_with_a_scoped_token(
    hatch: str,
    index: Index,
    env: dict[str, str],
    token: str,
    tmp_path: Path,
) -> None:
    for name, ok in (("scoped-hatch", True), ("outside-hatch", False)):
        work = tmp_path / name
        wheel = make_wheel(work / "dist", name, "0.3.0")
        publish = [hatch, "publish", "-n", "-r", index.url, "-u", TOKEN_USER, "-a", token]
        res = run([*publish, wheel], env, cwd=work, ok=True if ok else None)
        if ok:
            assert "scoped_hatch-0.3.0-py3-none-any.whl" in stored(index.pkgdir)
        else:
            refused(index, res, "outside_hatch")


def test_flit_with_a_scoped_token(
    flit: str,
    index: Index,
    env: dict[str, str],
    token: str,
    tmp_path: Path,
) -> None:
    env.update(FLIT_INDEX_URL=index.url, FLIT_USERNAME=TOKEN_USER, FLIT_PASSWORD=token)
    for name, ok in (("scoped-flit", True), ("outside-flit", False)):
        project = flit_project(tmp_path / name, name, "0.4.0")
        res = run([flit, "publish"], env, cwd=project, ok=True if ok else None)
        if ok:
            wheel, _ = flit_dist(project, name, "0.4.0")
            assert wheel.name in stored(index.pkgdir)
        else:
            refused(index, res, "outside_flit")


def _upload_status(srv: Server, wheel: Path, secret: str) -> int:
    """Upload with twine's form through http.client; the status."""
    from forms import upload_form

    body, ctype = upload_form(wheel)
    import base64

    auth = base64.b64encode(f"{TOKEN_USER}:{secret}".encode()).decode()
    res = srv.request(
        "POST", "/", body=body, headers={"Content-Type": ctype, "Authorization": f"Basic {auth}"}
    )
    return res.status


def test_a_revoked_token_is_refused_by_another_replica_within_a_second(
    tmp_path: Path,
) -> None:
    pkgdir = tmp_path / "packages"
    pkgdir.mkdir()
    htpasswd = make_htpasswd(tmp_path / "htpasswd")
    args = ("-P", htpasswd, "--disable-fallback", pkgdir)
    with running_server(*args) as a, running_server(*args) as b:
        secret = create_token(pkgdir, "--project", "scoped-*")
        n = 0

        def try_upload(srv: Server) -> int:
            nonlocal n
            n += 1
            return _upload_status(srv, make_wheel(tmp_path / f"w{n}", "scoped-r", f"1.{n}"), secret)

        assert try_upload(a) == 200
        assert try_upload(b) == 200
        revoke_token(pkgdir, secret)
        revoked = time.monotonic()
        while try_upload(b) != 403:
            assert time.monotonic() - revoked < 5, "the revoked token still works on B"
            time.sleep(0.05)
        took = time.monotonic() - revoked
        print(f"revoked token refused by the other replica after {took:.2f}s")
        assert try_upload(a) == 403
        # Expired: a token that lives 2 seconds, used on both, then refused by both.
        short = create_token(pkgdir, "--project", "scoped-*", "--expires", "2s")
        secret = short
        assert try_upload(b) == 200
        time.sleep(2.1)
        assert try_upload(a) == 403 and try_upload(b) == 403


def test_pip_and_uv_install_with_a_download_token(
    tmp_path: Path,
    env: dict[str, str],
) -> None:
    pkgdir = tmp_path / "packages"
    pkgdir.mkdir()
    make_wheel(pkgdir, "scoped-lib", "1.0")
    make_wheel(pkgdir, "private-lib", "1.0")
    htpasswd = make_htpasswd(tmp_path / "htpasswd")
    args = ("-P", htpasswd, "-a", "update,download,list", "--disable-fallback", pkgdir)
    with running_server(*args) as srv:
        secret = create_token(
            pkgdir, "--action", "download", "--action", "list", "--project", "scoped-*"
        )
        url = srv.url.replace("http://", f"http://{TOKEN_USER}:{secret}@") + "simple/"
        target = tmp_path / "pip-target"
        pip = [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--index-url", url]
        run([*pip, "--target", target, "scoped-lib"], env)
        assert (target / "scoped_lib").is_dir()
        res = run([*pip, "--target", tmp_path / "t2", "private-lib"], env, ok=None)
        # pip says only "no matching distribution" for a 403 on the project page.
        assert res.returncode != 0 and not (tmp_path / "t2").exists(), output(res)
        uv = [uv_bin(), "pip", "install", "--index-url", url, "--no-cache"]
        uv += ["--python", sys.executable]
        run([*uv, "--target", tmp_path / "uv-target", "scoped-lib"], env)
        assert (tmp_path / "uv-target" / "scoped_lib").is_dir()
        res = run([*uv, "--target", tmp_path / "uv2", "private-lib"], env, ok=None)
        assert res.returncode != 0, output(res)


# -- trusted publishing: uv in a (simulated) GitHub Actions run, against a process -----------------
def _uv_trusted_publish(
    srv: Server, issuer: object, relay_port: int, ca: Path, env: dict[str, str], dist: Path
) -> subprocess.CompletedProcess[str]:
    from oidc_issuer import REQUEST_TOKEN

    env = {
        **env,
        "SSL_CERT_FILE": str(ca),
        "GITHUB_ACTIONS": "true",
        "ACTIONS_ID_TOKEN_REQUEST_URL": issuer.request_url,  # type: ignore[attr-defined]
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": REQUEST_TOKEN,
    }
    publish = [uv_bin(), "publish", "--trusted-publishing", "always"]
    publish += ["--publish-url", f"https://127.0.0.1:{relay_port}/legacy/"]
    return run([*publish, *sorted(dist.iterdir())], env, ok=None)


@pytest.mark.parametrize("repository", ["acme/acme-lib", "mallory/acme-lib"])
def test_uv_publishes_with_trusted_publishing(
    tmp_path: Path, env: dict[str, str], repository: str
) -> None:
    """uv asks /_/oidc/audience, gets an ID token from the (local) CI issuer, exchanges it at
    /_/oidc/mint-token for a 15-minute token scoped to the publisher's projects, uploads with
    it as __token__, and hands it back. A run of another repository is refused and changes
    nothing."""
    from oidc_issuer import local_issuer
    from test_oidc import certificates, relay_tls

    pkgdir = tmp_path / "packages"
    pkgdir.mkdir()
    htpasswd = make_htpasswd(tmp_path / "htpasswd")
    with local_issuer() as issuer:
        rights = tmp_path / "rights.toml"
        rights.write_text(
            f'[issuers.ci]\nkind = "github"\nurl = "{issuer.url}"\n\n'
            f'[[publisher]]\nissuer = "ci"\nrepository = "{repository}"\n'
            'workflow = "release.yml"\nenvironment = "pypi"\nprojects = ["acme-lib"]\n'
        )
        ca, cert, key = certificates(tmp_path)
        args = ("-P", htpasswd, "--rights", rights, "--disable-fallback", pkgdir)
        with running_server(*args) as srv:
            relay_port, stop = relay_tls(srv.port, cert, key)
            try:
                dist = tmp_path / "dist"
                make_wheel(dist, "acme-lib", "1.0")
                res = _uv_trusted_publish(srv, issuer, relay_port, ca, env, dist)
                log = srv.output
            finally:
                stop()
    record = pkgdir / ".pkgserver" / "tokens.json"
    tokens = json.loads(record.read_text())["tokens"] if record.exists() else []
    if repository == "acme/acme-lib":
        assert res.returncode == 0, output(res) + log
        assert "acme_lib-1.0-py3-none-any.whl" in stored(pkgdir)
        assert "trusted publishing: minted token" in log, log
        # The upload went in as the minted token, whose owner names the publisher.
        assert "trusted-publisher:github:acme/acme-lib (token " in log, log
        # uv hands the token back after its upload: revoked at once.
        if "burn-token" in log:
            assert tokens == [], tokens
    else:
        assert res.returncode != 0, output(res)
        assert "invalid-publisher" in output(res), output(res)
        assert stored(pkgdir) == {} and tokens == []
