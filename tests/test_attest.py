"""PEP 740 attestations at upload (pkgserver.attest, upload.Uploads' publishers) and the
provenance served for them, on the WSGI app with real attestations from PyPI (attestations.py).
The same through real twine, pip and uv against a pkgserver process: test_e2e_attest.py."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import webtest
from attestations import GITHUB_SDIST, GITLAB_SDIST, Assets, fetch
from builders import make_sdist, make_wheel
from conftest import scan
from forms import multipart
from webtest import TestApp, TestResponse

from pkgserver import attest
from pkgserver.app import create_app
from pkgserver.catalog import Catalog
from pkgserver.config import Settings
from pkgserver.rights import Publisher
from pkgserver.upload import Uploads

GITHUB = "https://token.actions.githubusercontent.com"
GOOD = Publisher(
    "github", GITHUB, "trailofbits/pypi-attestations", "release.yml", None, ("pypi-attestations",)
)
GITLAB = Publisher(
    "gitlab",
    "https://gitlab.com",
    "facutuesca/gitlab-oidc-project",
    ".gitlab-ci.yml",
    None,
    ("gitlab-oidc-project",),
)
OTHER_REPO = dataclasses.replace(GOOD, repository="trailofbits/rfc8785.py")
PROVENANCE_URL = (
    "http://localhost:80/integrity/pypi-attestations/0.0.19/pypi_attestations-0.0.19.tar.gz"
    "/provenance"
)


@pytest.fixture(scope="module")
def assets() -> Assets:
    return fetch()


def make_app(
    root: Path, publishers: Sequence[Publisher] = (), **upload_kw: Any
) -> tuple[TestApp, Catalog]:
    """An app whose uploads know these publishers (what the rights file will give them)."""
    settings = Settings(roots=(str(root),), authenticate=frozenset())  # -P . -a .
    catalog = scan(root)
    uploads = Uploads(
        settings.roots,
        catalog,
        publishers=lambda project: [p for p in publishers if p.covers(project)],
        **upload_kw,
    )
    return webtest.TestApp(create_app(settings, catalog, uploads=uploads)), catalog


def upload(app: TestApp, name: str, data: bytes, attestations: str | None = None) -> TestResponse:
    fields = [(":action", "file_upload"), ("protocol_version", "1")]
    if attestations is not None:
        fields.append(("attestations", attestations))
    body, ctype = multipart(fields, [("content", name, data)])
    return app.request(
        "/", method="POST", body=body, environ={"CONTENT_TYPE": ctype}, expect_errors=True
    )


def field(assets: Assets, *names: str) -> str:
    """The attestations field as twine sends it: a JSON array of the attestation files."""
    return json.dumps([json.loads(assets.read(n)) for n in names])


def files_in(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def simple_json(app: TestApp, project: str) -> dict[str, Any]:
    res = app.get(f"/simple/{project}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    return dict(res.json)


# -- the field, as untrusted JSON --------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("not json", "not valid JSON"),
        ("{}", "JSON array"),
        ("[]", "JSON array"),
        ("[1]", "JSON object"),
        ("[NaN]", "not valid JSON"),
        ("[" * 40 + "]" * 40, "nests too deep"),
        (json.dumps([{}] * (attest.MAX_ATTESTATIONS + 1)), "at most"),
        (json.dumps([{"x": "a" * attest.MAX_FIELD_BYTES}]), "larger than"),
    ],
)
def test_a_malformed_field_is_refused_before_any_verification(text: str, why: str) -> None:
    with pytest.raises(attest.AttestationRefused, match=why):
        attest.parse_field(text)


def test_brackets_inside_strings_are_not_nesting() -> None:
    assert attest.parse_field(json.dumps([{"s": "[[[[" * 20}]))[0]["s"] == "[[[[" * 20


# -- a project with a trusted publisher --------------------------------------------------------
def test_attestations_that_verify_become_the_files_provenance(root: Path, assets: Assets) -> None:
    app, catalog = make_app(root, [GOOD])
    sent = field(assets, GITHUB_SDIST + ".publish.attestation")
    res = upload(app, GITHUB_SDIST, assets.read(GITHUB_SDIST), sent)
    assert res.status_int == 200, res.text
    stored = (root / (GITHUB_SDIST + ".provenance.json")).read_bytes()
    assert not (root / (GITHUB_SDIST + ".attestations.json")).exists()
    listed = catalog.snapshot.file(GITHUB_SDIST)
    assert listed is not None
    assert listed.provenance_sha256 == hashlib.sha256(stored).hexdigest()

    got = app.get(PROVENANCE_URL.replace("http://localhost:80", ""))
    assert got.content_type == "application/vnd.pypi.integrity.v1+json"
    assert got.body == stored
    # What PyPI serves for this very file and attestation, to the byte once parsed.
    assert got.json == json.loads(assets.read(GITHUB_SDIST + ".provenance"))
    assert got.json["attestation_bundles"][0]["publisher"] == {
        "kind": "GitHub",
        "repository": "trailofbits/pypi-attestations",
        "workflow": "release.yml",
        "environment": None,
    }
    etag = got.headers["ETag"]
    assert app.get(got.request.path, headers={"If-None-Match": etag}, status=304)


def test_the_simple_pages_link_the_provenance_absolutely(root: Path, assets: Assets) -> None:
    make_sdist(root, "pypi-attestations", "0.0.18")  # a file without provenance
    app, _ = make_app(root, [GOOD])
    sent = field(assets, GITHUB_SDIST + ".publish.attestation")
    assert upload(app, GITHUB_SDIST, assets.read(GITHUB_SDIST), sent).status_int == 200

    files = {f["filename"]: f for f in simple_json(app, "pypi-attestations")["files"]}
    assert files[GITHUB_SDIST]["provenance"] == PROVENANCE_URL
    assert files["pypi_attestations-0.0.18.tar.gz"]["provenance"] is None

    html = app.get("/simple/pypi-attestations/").text
    assert f'data-provenance="{PROVENANCE_URL}"' in html
    assert html.count("data-provenance=") == 1
    # Behind a proxy's name, the pages say that name (they are rendered per base URL).
    other = app.get(
        "/simple/pypi-attestations/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
        extra_environ={"HTTP_HOST": "index.example:8443", "wsgi.url_scheme": "https"},
    ).json
    urls = [f["provenance"] for f in other["files"] if f["provenance"]]
    assert urls == [PROVENANCE_URL.replace("http://localhost:80", "https://index.example:8443")]


def test_both_kinds_of_attestation_are_bundled_under_their_publisher(
    root: Path, assets: Assets
) -> None:
    app, _ = make_app(root, [OTHER_REPO, GOOD])
    sent = field(assets, GITHUB_SDIST + ".publish.attestation", GITHUB_SDIST + ".slsa.attestation")
    assert upload(app, GITHUB_SDIST, assets.read(GITHUB_SDIST), sent).status_int == 200
    doc = json.loads((root / (GITHUB_SDIST + ".provenance.json")).read_bytes())
    [bundle] = doc["attestation_bundles"]
    assert bundle["publisher"]["repository"] == "trailofbits/pypi-attestations"
    statements = [
        json.loads(base64.b64decode(a["envelope"]["statement"])) for a in bundle["attestations"]
    ]
    assert [s["predicateType"] for s in statements] == [
        "https://docs.pypi.org/attestations/publish/v1",
        "https://slsa.dev/provenance/v1",
    ]


def test_a_gitlab_publisher(root: Path, assets: Assets) -> None:
    app, _ = make_app(root, [GITLAB])
    sent = field(assets, GITLAB_SDIST + ".publish.attestation")
    assert upload(app, GITLAB_SDIST, assets.read(GITLAB_SDIST), sent).status_int == 200
    got = app.get(f"/integrity/gitlab-oidc-project/0.0.3/{GITLAB_SDIST}/provenance").json
    assert got["attestation_bundles"][0]["publisher"] == {
        "kind": "GitLab",
        "repository": "facutuesca/gitlab-oidc-project",
        "workflow_filepath": ".gitlab-ci.yml",
        "environment": None,
    }


def _refused(app: TestApp, root: Path, name: str, data: bytes, sent: str) -> str:
    before = files_in(root)
    res = upload(app, name, data, sent)
    assert res.status_int == 400, res.text
    assert "nothing was stored" in res.text
    assert files_in(root) == before  # no file, no sidecar, no temp file
    return str(res.text)


def test_another_repositorys_attestations_are_refused(root: Path, assets: Assets) -> None:
    app, catalog = make_app(root, [OTHER_REPO])
    sent = field(assets, GITHUB_SDIST + ".publish.attestation")
    text = _refused(app, root, GITHUB_SDIST, assets.read(GITHUB_SDIST), sent)
    assert "does not verify against this project's trusted publishers" in text
    assert "trailofbits/rfc8785.py" in text
    assert catalog.snapshot.project("pypi-attestations") is None


def test_a_tampered_attestation_is_refused(root: Path, assets: Assets) -> None:
    app, _ = make_app(root, [GOOD])
    doc = json.loads(assets.read(GITHUB_SDIST + ".publish.attestation"))
    signature = bytearray(base64.b64decode(doc["envelope"]["signature"]))
    signature[-1] ^= 1
    doc["envelope"]["signature"] = base64.b64encode(bytes(signature)).decode()
    text = _refused(app, root, GITHUB_SDIST, assets.read(GITHUB_SDIST), json.dumps([doc]))
    assert "attestation 1" in text


def test_attestations_of_other_bytes_are_refused(
    root: Path, assets: Assets, tmp_path: Path
) -> None:
    app, _ = make_app(root, [GOOD])
    forged = make_sdist(tmp_path, "pypi-attestations", "0.0.19")  # same name, other bytes
    sent = field(assets, GITHUB_SDIST + ".publish.attestation")
    text = _refused(app, root, forged.name, forged.read_bytes(), sent)
    assert "digest" in text


def test_malformed_attestations_are_refused(root: Path, assets: Assets) -> None:
    app, _ = make_app(root, [GOOD])
    _refused(app, root, GITHUB_SDIST, assets.read(GITHUB_SDIST), '[{"version": 2}]')


def test_without_the_library_a_publishers_project_refuses_attestations(
    root: Path, assets: Assets, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pypi_attestations", None)  # import fails
    assert not attest.available()
    app, _ = make_app(root, [GOOD])
    sent = field(assets, GITHUB_SDIST + ".publish.attestation")
    text = _refused(app, root, GITHUB_SDIST, assets.read(GITHUB_SDIST), sent)
    assert "pkgserver[attestations]" in text


def test_an_upload_without_attestations_is_taken_unless_they_are_required(
    root: Path, tmp_path: Path
) -> None:
    whl = make_wheel(tmp_path, "pypi-attestations", "1.0")
    strict, _ = make_app(root, [GOOD], require_attestations=True)
    res = upload(strict, whl.name, whl.read_bytes())
    assert res.status_int == 400
    assert "must carry PEP 740 attestations" in res.text
    assert files_in(root) == {}
    app, _ = make_app(root, [GOOD])
    assert upload(app, whl.name, whl.read_bytes()).status_int == 200
    [entry] = simple_json(app, "pypi-attestations")["files"]
    assert entry["provenance"] is None
    app.get(f"/integrity/pypi-attestations/1.0/{whl.name}/provenance", status=404)


# -- a project without one ---------------------------------------------------------------------
def test_without_a_publisher_attestations_are_kept_unverified_and_not_served(
    root: Path, assets: Assets
) -> None:
    app, _ = make_app(root, [GITLAB])  # a publisher of another project only
    sent = field(assets, GITHUB_SDIST + ".publish.attestation")
    assert upload(app, GITHUB_SDIST, assets.read(GITHUB_SDIST), sent).status_int == 200
    assert (root / (GITHUB_SDIST + ".attestations.json")).read_text() == sent
    assert not (root / (GITHUB_SDIST + ".provenance.json")).exists()
    [entry] = simple_json(app, "pypi-attestations")["files"]
    assert entry["provenance"] is None
    assert "data-provenance" not in app.get("/simple/pypi-attestations/").text
    app.get(PROVENANCE_URL.replace("http://localhost:80", ""), status=404)


# -- the sidecar follows the file --------------------------------------------------------------
def test_an_overwrite_without_attestations_drops_the_provenance(
    root: Path, assets: Assets, tmp_path: Path
) -> None:
    app, _ = make_app(root, [GOOD], overwrite=True)
    sent = field(assets, GITHUB_SDIST + ".publish.attestation")
    assert upload(app, GITHUB_SDIST, assets.read(GITHUB_SDIST), sent).status_int == 200
    other = make_sdist(tmp_path, "pypi-attestations", "0.0.19")
    assert upload(app, other.name, other.read_bytes()).status_int == 200
    assert not (root / (GITHUB_SDIST + ".provenance.json")).exists()
    [entry] = simple_json(app, "pypi-attestations")["files"]
    assert entry["provenance"] is None
    app.get(PROVENANCE_URL.replace("http://localhost:80", ""), status=404)


def test_a_removal_takes_the_provenance_with_it(root: Path, assets: Assets) -> None:
    app, catalog = make_app(root, [GOOD])
    sent = field(assets, GITHUB_SDIST + ".publish.attestation")
    assert upload(app, GITHUB_SDIST, assets.read(GITHUB_SDIST), sent).status_int == 200
    assert (
        app.post(
            "/", {":action": "remove_pkg", "name": "pypi-attestations", "version": "0.0.19"}
        ).status_int
        == 200
    )
    assert files_in(root) == {}
    assert catalog.snapshot.project("pypi-attestations") is None


def test_a_restart_lists_the_provenance_of_the_bytes_it_names_only(
    root: Path, assets: Assets, tmp_path: Path
) -> None:
    app, _ = make_app(root, [GOOD])
    sent = field(assets, GITHUB_SDIST + ".publish.attestation")
    assert upload(app, GITHUB_SDIST, assets.read(GITHUB_SDIST), sent).status_int == 200
    stored = (root / (GITHUB_SDIST + ".provenance.json")).read_bytes()
    listed = scan(root).snapshot.file(GITHUB_SDIST)  # what a new start finds
    assert listed is not None
    assert listed.provenance_sha256 == hashlib.sha256(stored).hexdigest()
    # The same provenance left beside other bytes (a file replaced by a copy) is not listed.
    (root / GITHUB_SDIST).write_bytes(
        make_sdist(tmp_path, "pypi-attestations", "0.0.19").read_bytes()
    )
    relisted = scan(root).snapshot.file(GITHUB_SDIST)
    assert relisted is not None
    assert relisted.provenance_sha256 is None


def test_provenance_covers_only_its_own_bytes(assets: Assets) -> None:
    provenance = assets.read(GITHUB_SDIST + ".provenance")
    sha = hashlib.sha256(assets.read(GITHUB_SDIST)).hexdigest()
    assert attest.provenance_covers(provenance, sha)
    assert not attest.provenance_covers(provenance, "0" * 64)
    for junk in (b"", b"[]", b'{"version": 1, "attestation_bundles": []}', b"\xff"):
        assert not attest.provenance_covers(junk, sha)
