"""The persistent index cache: restarts reuse unchanged entries and re-read changed files."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from builders import make_sdist, make_wheel

from pkgserver.cache import DescriptionCache
from pkgserver.catalog import Catalog
from pkgserver.indexer import Indexer


def index(root: Path, cache_dir: Path, **kw: Any) -> tuple[Catalog, Indexer]:
    catalog = Catalog()
    cache = DescriptionCache.open(str(cache_dir), [str(root)])
    ix = Indexer([str(root)], catalog, watch=False, settle=0, cache=cache, **kw)
    ix.initial_scan()
    ix.stop()
    return catalog, ix


def test_a_restart_reuses_the_cache_and_gets_the_same_catalog(tmp_path: Path) -> None:
    root = tmp_path / "pk"
    for i in range(20):
        make_wheel(root, f"p{i}", "1.0", summary=f"S{i}", requires_python=">=3.8")
        make_sdist(root, f"p{i}", "1.0", metadata_version="2.2")
    first, ix1 = index(root, tmp_path / "cache")
    assert ix1._reused == 0
    second, ix2 = index(root, tmp_path / "cache")
    assert ix2._reused == 40
    assert first.snapshot.files == second.snapshot.files


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    root = tmp_path / "pk"
    whl = make_wheel(root, "demo", "1.0")
    index(root, tmp_path / "cache")
    make_wheel(tmp_path / "other", "demo", "1.0", body="CHANGED = 1\n")
    os.replace(tmp_path / "other" / whl.name, whl)  # same name, new inode and bytes
    catalog, ix = index(root, tmp_path / "cache")
    assert ix._reused == 0
    listed = catalog.snapshot.file(whl.name)
    assert listed is not None and listed.sha256 == hashlib.sha256(whl.read_bytes()).hexdigest()


def test_a_different_hash_algo_is_not_served_from_the_cache(tmp_path: Path) -> None:
    root = tmp_path / "pk"
    make_wheel(root, "demo", "1.0")
    index(root, tmp_path / "cache")
    catalog, ix = index(root, tmp_path / "cache", extra_algos=["md5"])
    assert ix._reused == 0
    assert dict(catalog.snapshot.projects["demo"].latest.extra_hashes)["md5"]


def test_deleting_or_corrupting_the_cache_is_safe(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "pk"
    make_wheel(root, "demo", "1.0")
    _, ix = index(root, tmp_path / "cache")
    assert ix.cache is not None
    Path(ix.cache.path).write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING):
        catalog, _ = index(root, tmp_path / "cache")
    assert catalog.snapshot.project("demo") is not None
    for f in (tmp_path / "cache").iterdir():
        f.unlink()
    catalog, _ = index(root, tmp_path / "cache")
    assert catalog.snapshot.project("demo") is not None


def test_an_unwritable_cache_dir_means_no_cache(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert DescriptionCache.open(str(blocker / "sub"), [str(tmp_path)]) is None


def test_removed_files_leave_the_cache(tmp_path: Path) -> None:
    root = tmp_path / "pk"
    keep = make_wheel(root, "keep", "1.0")
    gone = make_wheel(root, "gone", "1.0")
    _, ix = index(root, tmp_path / "cache")
    gone.unlink()
    index(root, tmp_path / "cache")
    assert ix.cache is not None
    rows = sqlite3.connect(ix.cache.path).execute("SELECT relpath FROM files").fetchall()
    assert rows == [(keep.name,)]


def test_the_first_scan_of_many_files_uses_worker_processes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pkgserver import indexer

    monkeypatch.setattr(indexer, "PARALLEL_MIN", 10)
    root = tmp_path / "pk"
    for i in range(30):
        make_wheel(root, f"p{i}", "1.0", summary=f"S{i}")
    (root / "bad-name.whl").write_bytes(b"x")
    serial = Catalog()
    Indexer([str(root)], serial, watch=False, settle=0, workers=1).initial_scan()
    with caplog.at_level(logging.INFO):
        parallel = Catalog()
        Indexer([str(root)], parallel, watch=False, settle=0, workers=2).initial_scan()
    assert "with 2 processes" in caplog.text
    assert parallel.snapshot.files == serial.snapshot.files
    assert len(parallel.snapshot.files) == 30


def test_an_uploaded_file_is_remembered_for_the_next_start(tmp_path: Path) -> None:
    from pkgserver.scan import describe

    root = tmp_path / "pk"
    root.mkdir()
    catalog = Catalog()
    cache = DescriptionCache.open(str(tmp_path / "cache"), [str(root)])
    ix = Indexer([str(root)], catalog, watch=False, settle=0, cache=cache)
    ix.initial_scan()
    whl = make_wheel(root, "up", "1.0")  # as if published by an upload, listed directly
    f = describe(str(root), whl.name, whl.stat())
    catalog.apply([f])
    ix.remember(f)
    ix.stop()
    _, again = index(root, tmp_path / "cache")
    assert again._reused == 1


def test_files_of_one_root_share_one_root_string(tmp_path: Path) -> None:
    root = tmp_path / "pk"
    for i in range(3):
        make_wheel(root, f"p{i}", "1.0", summary="same")
    catalog, _ = index(root, tmp_path / "cache")
    files = list(catalog.snapshot.files.values())
    assert len({id(f.root) for f in files}) == 1
    assert len({id(f.summary) for f in files}) == 1
    assert all(f.filename is f.relpath for f in files)


@pytest.mark.parametrize("odd", ["link", "fifo", "hardlink", "wal-link"])
def test_the_cache_is_never_opened_through_something_odd(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, odd: str
) -> None:
    root = tmp_path / "pk"
    make_wheel(root, "demo", "1.0")
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir(mode=0o700)
    path = Path(DescriptionCache.path_for(str(cache_dir), [str(root)]))
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    if odd == "link":
        path.symlink_to(victim)
    elif odd == "fifo":
        os.mkfifo(path)  # SQLite would wait on it forever
    elif odd == "hardlink":
        os.link(victim, path)
    else:
        Path(str(path) + "-wal").symlink_to(victim)
    with caplog.at_level(logging.WARNING):
        assert DescriptionCache.open(str(cache_dir), [str(root)]) is None
    assert "no persistent index cache" in caplog.text
    assert victim.read_bytes() == b"precious"
    catalog, _ = index(root, cache_dir)  # serving goes on, without the cache
    assert catalog.snapshot.project("demo") is not None


def test_a_cache_folder_others_may_write_is_not_used(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # /tmp-like: anyone could plant a link where the database goes
    assert DescriptionCache.open(str(shared), [str(tmp_path)]) is None
    mine = tmp_path / "mine"
    assert DescriptionCache.open(str(mine), [str(tmp_path)]) is not None
    assert mine.stat().st_mode & 0o777 == 0o700


def test_check_reads_no_cache_through_a_fifo(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = tmp_path / "pk"
    make_wheel(root, "demo", "1.0")
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir(mode=0o700)
    os.mkfifo(DescriptionCache.path_for(str(cache_dir), [str(root)]))
    res = subprocess.run(
        [sys.executable, "-m", "pkgserver", "check", "--cache-dir", str(cache_dir), str(root)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0 and "cannot be read" in res.stderr, res.stderr
