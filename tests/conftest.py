"""Shared fixtures: package directories built in tmp_path, a scanned catalog, a webtest app."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from builders import make_sdist, make_wheel
from ceph import Cluster, ceph_cluster
from hypothesis import HealthCheck, settings
from passlib.hash import bcrypt
from webtest import TestApp

from pkgserver.app import create_app
from pkgserver.catalog import Catalog
from pkgserver.config import Settings
from pkgserver.indexer import Indexer

# Property tests run a few hundred examples each in the suite; HYPOTHESIS_PROFILE=fuzz runs them
# at volume (PKGSERVER_FUZZ_EXAMPLES each, default 20,000), as .ci/fuzz does for a bounded time.
settings.register_profile("default", max_examples=300, deadline=None)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("PKGSERVER_FUZZ_EXAMPLES", "20000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def scan(*roots: Path, **settings_kw: Any) -> Catalog:
    """A catalog filled by one synchronous scan (no watcher, no thread)."""
    catalog = Catalog()
    kw = {"workers": 1, **settings_kw}  # (many files are read in processes when workers > 1)
    Indexer([str(r) for r in roots], catalog, watch=False, settle=0, **kw).initial_scan()
    return catalog


def make_testapp(roots: list[Path], **settings_kw: Any) -> tuple[TestApp, Catalog]:
    settings = Settings(roots=tuple(str(r) for r in roots), **settings_kw)
    catalog = scan(*roots)
    app = create_app(settings, catalog)
    return TestApp(app), catalog


@pytest.fixture
def pkgdir(tmp_path: Path) -> Path:
    d = tmp_path / "packages"
    d.mkdir()
    make_wheel(d, "Demo-Pkg", "1.0", summary="A demo", requires_python=">=3.8")
    make_wheel(d, "demo_pkg", "1.10", summary="A demo, newer", requires_dist=["helper>=1"])
    make_wheel(d, "demo-pkg", "1.2", summary="A demo")
    make_sdist(d, "demo-pkg", "1.10", metadata_version="2.2", summary="A demo, newer")
    make_wheel(d / "helper", "helper", "1.0", summary="Helps")
    make_sdist(d, "foo-2fa", "1.0", summary="two factor")
    return d


@pytest.fixture
def testapp(pkgdir: Path) -> TestApp:
    app, _ = make_testapp([pkgdir], disable_fallback=False)
    return app


OneWheel = tuple[TestApp, Path, Path, list[str]]


@pytest.fixture
def one_wheel(tmp_path: Path) -> OneWheel:
    """An app over one wheel (base 1.0), without fallback: (app, root, wheel, files reported stale)."""
    root = tmp_path / "pk"
    root.mkdir()
    whl = make_wheel(root, "base", "1.0")
    stale: list[str] = []
    settings = Settings(roots=(str(root),), disable_fallback=True)
    app = TestApp(create_app(settings, scan(root), on_stale=stale.append))
    return app, root, whl, stale


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty package directory."""
    d = tmp_path / "packages"
    d.mkdir()
    return d


class WriteHtpasswd(Protocol):
    def __call__(self, *lines: str, **users: str) -> Path: ...


@pytest.fixture
def write_htpasswd(tmp_path: Path) -> WriteHtpasswd:
    """Write ``tmp_path/htpasswd`` and return its path: ``*lines`` are "user:hash" entries written
    as they are, ``**users`` map user names to passwords, hashed with bcrypt ($2y$, 4 rounds: cheap,
    for tests)."""

    def write(*lines: str, **users: str) -> Path:
        entries = [*lines]
        entries += [
            f"{user}:" + bcrypt.using(ident="2y", rounds=4).hash(pw) for user, pw in users.items()
        ]
        path = tmp_path / "htpasswd"
        path.write_text("".join(entry + "\n" for entry in entries))
        return path

    return write


@pytest.fixture
def htpasswd(write_htpasswd: WriteHtpasswd) -> Path:
    """An htpasswd file with one user: alice, password s3cret."""
    return write_htpasswd(alice="s3cret")


@pytest.fixture(scope="session")
def s3_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One Ceph RADOS Gateway for the session's object-store tests (see tests/ceph.py)."""
    with ceph_cluster(tmp_path_factory.mktemp("ceph") / "cluster") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def s3_env(s3_cluster: Cluster) -> dict[str, str]:
    """S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY of the session's gateway."""
    return s3_cluster.env


@pytest.fixture
def bucket_url(s3_cluster: Cluster) -> str:
    """A new bucket (and a prefix in it) for each test."""
    name = "t-" + uuid.uuid4().hex[:20]
    s3_cluster.client().create_bucket(Bucket=name)
    return f"s3://{name}/packages"


@pytest.fixture
def aws(s3_env: dict[str, str]) -> dict[str, str]:
    """The AWS settings a pkgserver process finds the store with, as on a deployment."""
    return {
        "AWS_ENDPOINT_URL": s3_env["S3_ENDPOINT"],
        "AWS_ACCESS_KEY_ID": s3_env["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": s3_env["AWS_SECRET_ACCESS_KEY"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }
