"""The package directories as the indexer reads them: scans, ``describe``, the rescan schedule.

How the watcher follows files brought in by users is in test_watch.py.
"""

from __future__ import annotations

import os
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from builders import make_wheel
from conftest import make_testapp, scan

from pkgserver.catalog import Catalog, FileStat
from pkgserver.indexer import Indexer
from pkgserver.scan import describe


def poisoned_wheel(directory: Path, name: str) -> Path:
    """A wheel whose members carry the 'encrypted' flag: zipfile raises RuntimeError on read."""
    whl = make_wheel(directory.parent / "src", name, "1.0")
    data = bytearray(whl.read_bytes())
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (i := data.find(sig, start)) >= 0:
            data[i + off] |= 1
            start = i + 4
    out = directory / whl.name
    out.write_bytes(bytes(data))
    return out


def test_a_poisoned_archive_neither_stops_a_scan_nor_hides_its_neighbours(tmp_path: Path) -> None:
    root = tmp_path / "pk"
    root.mkdir()
    poisoned_wheel(root, "bad")
    make_wheel(root, "good", "1.0")
    catalog = scan(root)
    assert catalog.snapshot.project("good") is not None
    bad = catalog.snapshot.project("bad")
    assert bad is not None and bad.latest.metadata_sha256 is None  # listed, without metadata


def test_without_inotify_changes_are_seen_within_seconds_not_a_minute(tmp_path: Path) -> None:
    root = tmp_path / "pk"
    root.mkdir()
    catalog = Catalog()
    ix = Indexer([str(root)], catalog, watch=False, settle=0.2)
    ix.start()
    try:
        assert ix.rescan_interval == 5.0
        make_wheel(root, "late", "1.0")
        deadline = time.monotonic() + 15
        while catalog.snapshot.project("late") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert catalog.snapshot.project("late") is not None
    finally:
        ix.stop()


def test_with_inotify_a_safety_rescan_is_scheduled(tmp_path: Path) -> None:
    ix = Indexer([str(tmp_path)], Catalog(), watch=True)
    ix.start()
    try:
        assert ix.watching and ix.rescan_interval == 60.0
    finally:
        ix.stop()


def test_metadata_of_another_project_is_not_advertised(tmp_path: Path) -> None:
    path = tmp_path / "mism-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(
            "other-9.9.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: Other-Project\nVersion: 9.9\nSummary: lies\n",
        )
        zf.writestr("other-9.9.dist-info/WHEEL", "Wheel-Version: 1.0\n")
    app, catalog = make_testapp([tmp_path])
    f = catalog.snapshot.file(path.name)
    assert f is not None and f.metadata_sha256 is None and f.summary is None
    assert "data-core-metadata" not in app.get("/simple/mism/").text
    app.get(f"/packages/{path.name}.metadata", status=404)


def test_describe_refuses_a_fifo_at_once(tmp_path: Path) -> None:
    """A FIFO put where a wheel was (after the scan saw a file) must not hang the indexer."""
    os.mkfifo(tmp_path / "demo-1.0-py3-none-any.whl")
    outcome: list[object] = []
    worker = threading.Thread(
        target=lambda: outcome.append(
            _raises(
                lambda: describe(str(tmp_path), "demo-1.0-py3-none-any.whl", FileStat(10, 0, 0))
            )
        ),
        daemon=True,
    )
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "describe() blocked on a FIFO"
    assert isinstance(outcome[0], OSError)


def _raises(call: Callable[[], object]) -> Exception | None:
    try:
        call()
    except Exception as exc:
        return exc
    return None
