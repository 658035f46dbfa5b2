"""Real PEP 740 attestations for the tests, fetched from PyPI (nothing binary is committed).

Sigstore attestations cannot be made offline (they need Fulcio, Rekor and a CI's OIDC token),
so the tests use real ones. pypi-attestations' sdist ships its own test assets: distributions
that were published to PyPI by trusted publishers, their attestations (``FILE.KIND.attestation``,
the names ``twine upload --attestations`` picks up) and the provenance object PyPI served for
one of them. ``fetch()`` downloads that sdist once per test session from PyPI's JSON API (the
pinned version, checked against its pinned sha256) and unpacks the files used here.

- ``pypi_attestations-0.0.19.tar.gz``: published from GitHub, trailofbits/pypi-attestations,
  workflow release.yml; a publish attestation, an SLSA provenance attestation, and PyPI's
  provenance object for it (``.provenance``).
- ``gitlab_oidc_project-0.0.3.tar.gz``: published from GitLab, facutuesca/gitlab-oidc-project,
  .gitlab-ci.yml; a publish attestation. A flit sdist, so pip and uv can build and install it
  given flit_core, which ``fetch()`` downloads too (a wheel, pinned as well).

If PyPI cannot be reached, ``fetch()`` skips the test and says so.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import io
import json
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urljoin

import pytest

PYPI = "https://pypi.org/pypi/"
SOURCE = ("pypi-attestations", "0.0.31", "sdist")
SOURCE_SHA256 = "5a2473aca7d7f65caf2c3a985691c5cf9264a97fa68c98fbae6e96320bcc7c9a"
FLIT_CORE = ("flit-core", "3.12.0", "bdist_wheel")

GITHUB_SDIST = "pypi_attestations-0.0.19.tar.gz"
GITHUB_SHA256 = "9bb1add04b1b4e182be6b0b80931593f7a291eb49d69b4fd728a5d4cbcdc4bd3"
GITLAB_SDIST = "gitlab_oidc_project-0.0.3.tar.gz"
GITLAB_SHA256 = "c1ca9b0d85df1606451098233018534497bf584362e10e4a8c21dfaea92c02a8"
_WANTED = (
    GITHUB_SDIST,
    GITHUB_SDIST + ".publish.attestation",
    GITHUB_SDIST + ".slsa.attestation",
    GITHUB_SDIST + ".provenance",
    GITLAB_SDIST,
    GITLAB_SDIST + ".publish.attestation",
)


class Assets(NamedTuple):
    folder: Path  # the files of _WANTED, under their own names
    flit_core: Path  # a flit_core wheel, to build the GitLab sdist with

    def path(self, name: str) -> Path:
        return self.folder / name

    def read(self, name: str) -> bytes:
        return (self.folder / name).read_bytes()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as answer:
        return bytes(answer.read())


def _download(project: str, version: str, kind: str) -> tuple[str, bytes]:
    """A release file from PyPI, checked against the digest PyPI's JSON API gives."""
    api = f"{PYPI}{project}/json"  # (a mirror may not answer /pypi/<project>/<version>/json)
    doc = json.loads(_get(api))
    found = [u for u in doc["releases"].get(version, ()) if u["packagetype"] == kind]
    assert found, f"{project} {version} has no {kind} on PyPI"
    entry = found[0]
    data = _get(urljoin(api, entry["url"]))
    assert hashlib.sha256(data).hexdigest() == entry["digests"]["sha256"], entry["filename"]
    return entry["filename"], data


@functools.lru_cache(maxsize=1)
def _fetch() -> Assets | str:
    try:
        name, sdist = _download(*SOURCE)
        wheel_name, wheel = _download(*FLIT_CORE)
    except urllib.error.HTTPError:
        raise  # PyPI answered: a wrong name or version here is the test's fault
    except (urllib.error.URLError, OSError) as exc:
        return f"PyPI cannot be reached ({exc}); the attestation tests need real attestations"
    assert hashlib.sha256(sdist).hexdigest() == SOURCE_SHA256, f"{name} is not the pinned one"
    folder = Path(tempfile.mkdtemp(prefix="pkgserver-attestations-"))
    atexit.register(shutil.rmtree, folder, True)
    prefix = name[: -len(".tar.gz")] + "/test/assets/"
    with tarfile.open(fileobj=io.BytesIO(sdist)) as tar:
        for wanted in _WANTED:
            member = tar.extractfile(prefix + wanted)
            assert member is not None, wanted
            (folder / wanted).write_bytes(member.read())
    (folder / wheel_name).write_bytes(wheel)
    assert hashlib.sha256((folder / GITHUB_SDIST).read_bytes()).hexdigest() == GITHUB_SHA256
    assert hashlib.sha256((folder / GITLAB_SDIST).read_bytes()).hexdigest() == GITLAB_SHA256
    return Assets(folder, folder / wheel_name)


def fetch() -> Assets:
    """The assets (downloaded once per session); skips the test when PyPI is out of reach."""
    found = _fetch()
    if isinstance(found, str):
        pytest.skip(found)
    return found


def copy(assets: Assets, dest: Path, *names: str) -> list[Path]:
    """Copies of some assets in ``dest`` (twine takes a distribution's attestations from
    beside it)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        out.append(dest / name)
        shutil.copyfile(assets.path(name), dest / name)
    return out
