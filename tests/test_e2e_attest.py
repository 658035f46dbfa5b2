"""PEP 740 end to end: real twine uploads real attestations (attestations.py) to a pkgserver
process whose uploads know the projects' trusted publishers; pip and uv then install from the
project pages that link the provenance.

The publishers are given to the server as a user gives them: ``[[publisher]]`` tables of a
rights file (``--rights``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from attestations import GITHUB_SDIST, GITLAB_SDIST, Assets, copy, fetch
from server import Server, client_env, run_client

pytestmark = pytest.mark.e2e

GOOD: dict[str, Any] = {
    "kind": "github",
    "issuer": "https://token.actions.githubusercontent.com",
    "repository": "trailofbits/pypi-attestations",
    "workflow": "release.yml",
    "environment": None,
    "projects": ["pypi-attestations"],
}
GITLAB: dict[str, Any] = {
    "kind": "gitlab",
    "issuer": "https://gitlab.com",
    "repository": "facutuesca/gitlab-oidc-project",
    "workflow": ".gitlab-ci.yml",
    "environment": None,
    "projects": ["gitlab-oidc-project"],
}


@pytest.fixture(scope="module")
def assets() -> Assets:
    return fetch()


def serve(tmp_path: Path, pkgdir: Path, publishers: Sequence[dict[str, Any]]) -> Server:
    tables = []
    for p in publishers:
        issuer = "github" if p["kind"] == "github" else "gitlab"
        lines = [
            "[[publisher]]",
            f'issuer = "{issuer}"',
            f"repository = {json.dumps(p['repository'])}",
            f"workflow = {json.dumps(p['workflow'])}",
            f"projects = {json.dumps(p['projects'])}",
        ]
        if p["environment"]:
            lines.append(f"environment = {json.dumps(p['environment'])}")
        tables.append("\n".join(lines) + "\n")
    rights = tmp_path / "rights.toml"
    rights.write_text("\n".join(tables))
    return Server("-P", ".", "-a", ".", "--rights", rights, "--disable-fallback", pkgdir)


@pytest.fixture
def pkgdir(tmp_path: Path) -> Path:
    folder = tmp_path / "packages"
    folder.mkdir()
    return folder


@pytest.fixture
def index(tmp_path: Path, pkgdir: Path) -> Iterator[Server]:
    with serve(tmp_path, pkgdir, [GOOD, GITLAB]) as srv:
        yield srv


def twine(url: str, files: Sequence[Path], env: dict[str, str], ok: bool) -> str:
    found = shutil.which("twine", path=os.path.dirname(sys.executable)) or "twine"
    cmd = [found, "upload", "--non-interactive", "--disable-progress-bar", "--attestations"]
    cmd += ["--repository-url", url, "-u", "anyone", "-p", "anything", *map(str, files)]
    res = run_client(cmd, env, ok=ok)
    return res.stdout + res.stderr


def listing(folder: Path) -> dict[str, bytes]:
    """The package directory's files (not the server's own records, .pkgserver/)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_twine_attested_upload_is_verified_and_served(
    index: Server, pkgdir: Path, assets: Assets, tmp_path: Path
) -> None:
    env = client_env(tmp_path)
    dist = tmp_path / "dist"
    sdist, attestation = copy(assets, dist, GITHUB_SDIST, GITHUB_SDIST + ".publish.attestation")

    # A tampered attestation: twine is told why, and nothing is stored.
    good = attestation.read_text()
    doc = json.loads(good)
    doc["envelope"]["signature"] = doc["envelope"]["signature"][:-8] + "AAAAAAA="
    attestation.write_text(json.dumps(doc))
    out = twine(index.url, [sdist, attestation], env, ok=False)
    assert "400" in out and "attestations refused" in out, out
    assert listing(pkgdir) == {}

    attestation.write_text(good)
    twine(index.url, [sdist, attestation], env, ok=True)
    assert sorted(listing(pkgdir)) == [GITHUB_SDIST, GITHUB_SDIST + ".provenance.json"]

    page = index.request(
        "GET",
        "/simple/pypi-attestations/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    ).json()
    [entry] = page["files"]
    url = f"{index.url}integrity/pypi-attestations/0.0.19/{GITHUB_SDIST}/provenance"
    assert entry["provenance"] == url
    html = index.request("GET", "/simple/pypi-attestations/").text
    assert f'data-provenance="{url}"' in html
    got = index.request("GET", url[len(index.url) - 1 :])
    assert got.status == 200
    assert got.headers["content-type"] == "application/vnd.pypi.integrity.v1+json"
    # What PyPI serves for this file and attestation.
    assert got.json() == json.loads(assets.read(GITHUB_SDIST + ".provenance"))


def test_another_repositorys_publisher_refuses_the_upload(
    tmp_path: Path, pkgdir: Path, assets: Assets
) -> None:
    other: dict[str, Any] = {**GOOD, "repository": "trailofbits/rfc8785.py"}
    with serve(tmp_path, pkgdir, [other]) as srv:
        files = copy(assets, tmp_path / "dist", GITHUB_SDIST, GITHUB_SDIST + ".publish.attestation")
        out = twine(srv.url, files, client_env(tmp_path), ok=False)
        assert "400" in out and "does not verify" in out, out
        assert listing(pkgdir) == {}
        assert srv.request("GET", "/simple/pypi-attestations/").status == 404


def test_pip_and_uv_install_from_pages_that_link_provenance(
    index: Server, pkgdir: Path, assets: Assets, tmp_path: Path
) -> None:
    env = client_env(tmp_path)
    dist = tmp_path / "dist"
    files = copy(assets, dist, GITLAB_SDIST, GITLAB_SDIST + ".publish.attestation")
    twine(index.url, files, env, ok=True)
    # flit_core, to build the sdist with (uploaded plainly: no publisher, no attestations).
    run_client(
        [
            shutil.which("twine", path=os.path.dirname(sys.executable)) or "twine",
            "upload",
            "--non-interactive",
            "--repository-url",
            index.url,
            "-u",
            "a",
            "-p",
            "b",
            str(assets.flit_core),
        ],
        env,
    )
    assert (pkgdir / (GITLAB_SDIST + ".provenance.json")).is_file()
    page = index.request(
        "GET",
        "/simple/gitlab-oidc-project/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    ).json()
    assert page["files"][0]["provenance"].endswith(f"/{GITLAB_SDIST}/provenance")

    simple = index.url + "simple/"
    for name, cmd in {
        "pip": [sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir"],
        "uv": [
            shutil.which("uv", path=os.path.dirname(sys.executable)) or "uv",
            "pip",
            "install",
            "--no-deps",
            "--no-cache",
            "--python",
            sys.executable,
        ],
    }.items():
        target = tmp_path / f"target-{name}"
        run_client(
            [*cmd, "--index-url", simple, "--target", str(target), "gitlab-oidc-project==0.0.3"],
            env,
        )
        installed = {p.name for p in target.iterdir()}
        assert "gitlab_oidc_project" in installed, (name, installed)
        assert "gitlab_oidc_project-0.0.3.dist-info" in installed, (name, installed)
