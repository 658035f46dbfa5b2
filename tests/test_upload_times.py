"""Upload times: every file gets one, recorded beside the files (.pkgserver/upload-times.jsonl),
so that it survives restarts and the loss of the index cache; an mtime carried over by
``cp -p`` or ``rsync -a`` is not taken for one unless --upload-time mtime asks for it."""

from __future__ import annotations

import datetime
import hashlib
import os
import shutil
import time
from pathlib import Path

import pytest
from builders import make_wheel
from webtest import TestApp

from pkgserver.app import create_app
from pkgserver.arguments import parse_args
from pkgserver.cache import DescriptionCache
from pkgserver.catalog import Catalog, DistFile
from pkgserver.config import Settings
from pkgserver.indexer import COMPACT_SLACK, Indexer
from pkgserver.records import (
    UPLOAD_TIMES_FILE,
    UPLOADS_FILE,
    RecordDir,
    Upload,
    UploadLog,
    UploadTimes,
    entry_parts,
    time_line,
)
from pkgserver.render import upload_time
from pkgserver.service import Service
from pkgserver.validate import settings_from

OLD = datetime.datetime(2019, 6, 1, tzinfo=datetime.timezone.utc).timestamp()
JSON_V1 = "application/vnd.pypi.simple.v1+json"


def record_of(root: Path) -> UploadTimes:
    return UploadTimes(RecordDir(str(root)))


def add(times: UploadTimes, entries: list[tuple[str, str, int]]) -> bool:
    return times.add(b"".join(time_line(*e) for e in entries), len(entries))


def loaded(root: Path) -> dict[str, tuple[str, int]]:
    """The record of ``root`` as (sha256 prefix, ns) per relpath."""
    return {rel: entry_parts(entry) for rel, entry in record_of(root).load().items()}


def indexer(root: Path, catalog: Catalog | None = None, **kw: object) -> Indexer:
    """An indexer as `pkgserver run` makes it by default: with the root's upload times."""
    return Indexer(
        [str(root)],
        catalog if catalog is not None else Catalog(),
        watch=False,
        settle=0,
        workers=1,
        upload_times=[record_of(root)],
        **kw,  # type: ignore[arg-type]
    )


def scanned(root: Path, **kw: object) -> Catalog:
    """A fresh start: a new catalog and indexer (a new process, as far as they know)."""
    catalog = Catalog()
    ix = indexer(root, catalog, **kw)
    ix.initial_scan()
    ix.stop()
    return catalog


def copied_with_old_mtime(src_dir: Path, dst_dir: Path, name: str, version: str, **kw: str) -> Path:
    """A wheel built elsewhere, given a 2019 mtime, then copied in as ``cp -p`` does."""
    built = make_wheel(src_dir, name, version, **kw)
    os.utime(built, (OLD, OLD))
    return Path(shutil.copy2(built, dst_dir / built.name))


def only_file(catalog: Catalog) -> DistFile:
    files = list(catalog.snapshot.files.values())
    assert len(files) == 1
    return files[0]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    d = tmp_path / "packages"
    d.mkdir()
    return d


# -- the record --------------------------------------------------------------------------------
def test_the_record_keeps_microseconds_and_a_later_line_wins(root: Path) -> None:
    times = record_of(root)
    sha_a, sha_b = "a" * 64, "b" * 64
    assert add(times, [("x/demo-1.0.tar.gz", sha_a, 1_700_000_000_123_456_789)])
    assert add(times, [("x/demo-1.0.tar.gz", sha_b, 1_700_000_100_000_001_000)])
    raw = (root / ".pkgserver" / UPLOAD_TIMES_FILE).read_bytes()
    assert raw.splitlines()[0] == b'["x/demo-1.0.tar.gz","aaaaaaaaaaaaaaaa",1700000000.123456]'
    assert loaded(root) == {"x/demo-1.0.tar.gz": ("b" * 16, 1_700_000_100_000_001_000)}
    assert times.lines == 2


def test_names_that_json_escapes_come_back_as_they_were(root: Path) -> None:
    names = ['dir "quoted"/a-1.0.tar.gz', "back\\slash/b-1.0.tar.gz", "ünï/c-1.0.tar.gz"]
    entries = [(name, f"{i:064x}", (1_600_000_000 + i) * 10**9) for i, name in enumerate(names)]
    assert add(record_of(root), entries)
    assert loaded(root) == {name: (sha[:16], ns) for name, sha, ns in entries}


def test_a_damaged_or_hand_written_line_does_not_spoil_the_others(root: Path) -> None:
    (root / ".pkgserver").mkdir()
    (root / ".pkgserver" / UPLOAD_TIMES_FILE).write_bytes(
        time_line("a-1.0.tar.gz", "1" * 64, 1_600_000_000_000_000_000)
        + b'["b-1.0.tar.gz","'
        + b"2" * 64
        + b'",1600000001]\n'  # a whole sha256, whole seconds
        + b'["c-1.0.tar.gz","short",1600000002]\n'  # not enough of a hash: ignored
        + b'["d-1.0.tar.gz","'
        + b"4" * 16
        + b'",true]\n'  # not a time: ignored
        + b'{"file": "e-1.0.tar.gz"}\n'  # not a line of this record: ignored
        + b'["f-1.0.tar.gz","'
        + b"6" * 16
        + b'",16000'  # cut short by a crash
    )
    assert loaded(root) == {
        "a-1.0.tar.gz": ("1" * 16, 1_600_000_000_000_000_000),
        "b-1.0.tar.gz": ("2" * 16, 1_600_000_001_000_000_000),
    }


def test_a_line_cut_by_a_crash_does_not_swallow_the_next_one(root: Path) -> None:
    (root / ".pkgserver").mkdir()
    (root / ".pkgserver" / UPLOAD_TIMES_FILE).write_bytes(b'["a-1.0.tar.gz","1111')
    times = record_of(root)
    assert times.load() == {}
    assert add(times, [("b-1.0.tar.gz", "2" * 64, 1_600_000_000_000_000_000)])
    assert loaded(root) == {"b-1.0.tar.gz": ("2" * 16, 1_600_000_000_000_000_000)}


def test_a_record_that_is_a_symbolic_link_is_not_read(root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_bytes(time_line("a-1.0.tar.gz", "1" * 64, 1_600_000_000_000_000_000))
    (root / ".pkgserver").mkdir()
    (root / ".pkgserver" / UPLOAD_TIMES_FILE).symlink_to(elsewhere)
    assert record_of(root).load() == {}
    assert not add(record_of(root), [("a-1.0.tar.gz", "1" * 64, 1)])  # refused, no exception
    assert elsewhere.read_bytes().count(b"\n") == 1


# -- what the indexer serves -----------------------------------------------------------------------
def test_a_cp_p_mtime_is_not_taken_for_the_upload_time(root: Path, tmp_path: Path) -> None:
    before = time.time()
    whl = copied_with_old_mtime(tmp_path / "src", root, "demo", "1.0")
    assert whl.stat().st_mtime == OLD
    f = only_file(scanned(root))
    assert before <= f.upload_time <= time.time()  # first seen now, not in 2019
    assert upload_time(f).startswith(str(datetime.datetime.now(datetime.timezone.utc).year))
    assert loaded(root) == {whl.name: (f.sha256[:16], f.upload_time_ns)}


def test_the_time_survives_a_restart_and_the_loss_of_the_index_cache(
    root: Path, tmp_path: Path
) -> None:
    make_wheel(root, "demo", "1.0")
    cache_dir = tmp_path / "cache"
    cache = DescriptionCache.open(str(cache_dir), [str(root)])
    first = only_file(scanned(root, cache=cache))
    time.sleep(0.01)  # a later "now" would differ from the recorded time
    again = only_file(scanned(root, cache=DescriptionCache.open(str(cache_dir), [str(root)])))
    assert again.upload_time_ns == first.upload_time_ns
    shutil.rmtree(cache_dir)
    without_cache = only_file(scanned(root))
    assert without_cache.upload_time_ns == first.upload_time_ns
    assert upload_time(without_cache) == upload_time(first)


def test_other_bytes_under_the_name_get_a_new_time_the_same_bytes_keep_theirs(
    root: Path, tmp_path: Path
) -> None:
    catalog = Catalog()
    ix = indexer(root, catalog)
    whl = make_wheel(root, "demo", "1.0", summary="first")
    ix.initial_scan()
    first = only_file(catalog)

    # The same bytes again (touched, or copied over with cp): the time stays.
    os.utime(whl, (OLD, OLD))
    ix._rescan()
    touched = only_file(catalog)
    assert touched.mtime_ns != first.mtime_ns
    assert touched.upload_time_ns == first.upload_time_ns

    # Other bytes under the same name: first seen now.
    time.sleep(0.01)
    make_wheel(tmp_path / "src", "demo", "1.0", summary="second, other bytes")
    shutil.copy2(tmp_path / "src" / whl.name, whl)  # cp -p: an mtime from before
    ix._rescan()
    replaced = only_file(catalog)
    assert replaced.sha256 != first.sha256
    assert replaced.upload_time_ns > first.upload_time_ns
    ix.stop()

    # What a restart serves is the newer time, for the newer bytes.
    assert only_file(scanned(root)).upload_time_ns == replaced.upload_time_ns


def test_a_file_that_goes_and_comes_back_with_the_same_bytes_keeps_its_time(
    root: Path, tmp_path: Path
) -> None:
    catalog = Catalog()
    ix = indexer(root, catalog)
    whl = make_wheel(root, "demo", "1.0")
    ix.initial_scan()
    first = only_file(catalog)
    whl.rename(tmp_path / whl.name)
    ix._rescan()
    assert not catalog.snapshot.files
    (tmp_path / whl.name).rename(whl)
    ix._rescan()
    assert only_file(catalog).upload_time_ns == first.upload_time_ns
    ix.stop()


def test_an_upload_is_recorded_with_the_time_it_was_published(root: Path) -> None:
    catalog = Catalog()
    ix = indexer(root, catalog)
    ix.initial_scan()
    # What Uploads does with a file it published: list it, then tell the change feed.
    whl = make_wheel(root, "up", "1.0")
    from pkgserver.scan import describe

    f = describe(str(root), whl.name, os.stat(whl))
    catalog.apply([f])
    ix.remember(f)
    ix.stop()
    served = upload_time(only_file(catalog))
    assert loaded(root)[whl.name][1] == whl.stat().st_mtime_ns // 1000 * 1000
    assert upload_time(only_file(scanned(root))) == served  # the same after a restart


def test_files_uploaded_before_times_were_recorded_get_the_upload_logs_time(
    root: Path, tmp_path: Path
) -> None:
    uploaded = make_wheel(root, "up", "1.0")
    replaced = make_wheel(root, "other", "1.0")
    log_time = 1_650_000_000.123  # when the upload log says they were uploaded
    (root / ".pkgserver").mkdir()
    (root / ".pkgserver" / UPLOADS_FILE).write_bytes(
        Upload(
            uploaded.name, hashlib.sha256(uploaded.read_bytes()).hexdigest(), "a", log_time
        ).line()
        # Uploaded once, then replaced by other bytes copied in: the log's time is not theirs.
        + Upload(replaced.name, "0" * 64, "a", log_time).line()
    )
    before = time.time()
    catalog = scanned(root, published=UploadLog([str(root)]).published)
    up, other = (catalog.snapshot.file(p.name) for p in (uploaded, replaced))
    assert up is not None and up.upload_time_ns == 1_650_000_000_123_000_000
    assert other is not None and other.upload_time >= before
    # Recorded now: the same times without the upload log.
    assert {f.filename: f.upload_time_ns for f in scanned(root).snapshot.files.values()} == {
        up.filename: up.upload_time_ns,
        other.filename: other.upload_time_ns,
    }


def test_the_record_is_compacted_when_it_is_mostly_files_that_are_gone(root: Path) -> None:
    whl = make_wheel(root, "demo", "1.0")
    sha = hashlib.sha256(whl.read_bytes()).hexdigest()
    kept_time = 1_650_000_000_000_000_000
    gone = [(f"gone/old-{i}.0.tar.gz", "f" * 64, 1_600_000_000_000_000_000) for i in range(1500)]
    add(record_of(root), [*gone, (whl.name, sha, kept_time)])
    record = root / ".pkgserver" / UPLOAD_TIMES_FILE
    assert record.read_bytes().count(b"\n") == 1501 > 2 * 1 + COMPACT_SLACK

    f = only_file(scanned(root))
    assert f.upload_time_ns == kept_time
    assert record.read_bytes().splitlines() == [time_line(whl.name, sha, kept_time).strip()]
    assert only_file(scanned(root)).upload_time_ns == kept_time


def test_lines_of_files_gone_are_not_held_in_memory_after_the_start(root: Path) -> None:
    make_wheel(root, "demo", "1.0")
    add(record_of(root), [("gone-1.0.tar.gz", "f" * 64, 1_600_000_000_000_000_000)])
    ix = indexer(root)
    ix.initial_scan()
    ix.stop()
    assert ix._recorded == [{}]  # the line stays (too few to compact), the memory does not
    assert b"gone-1.0.tar.gz" in (root / ".pkgserver" / UPLOAD_TIMES_FILE).read_bytes()


def test_a_file_hashed_after_the_start_keeps_its_recorded_time(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pkgserver.indexer

    monkeypatch.setattr(pkgserver.indexer, "BACKGROUND_BYTES", 100)  # every file: the hasher's
    whl = make_wheel(root, "demo", "1.0")
    recorded = 1_650_000_000_000_000_000
    add(record_of(root), [(whl.name, hashlib.sha256(whl.read_bytes()).hexdigest(), recorded)])
    catalog = Catalog()
    ix = indexer(root, catalog)
    ix.start()
    try:
        deadline = time.monotonic() + 10
        while not catalog.snapshot.files and time.monotonic() < deadline:
            time.sleep(0.02)
        assert only_file(catalog).upload_time_ns == recorded
    finally:
        ix.stop()


def test_one_batch_of_a_scan_is_one_append(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(30):
        make_wheel(root, f"p{i}", "1.0")
    appends: list[bytes] = []
    original = RecordDir.append

    def counting(self: RecordDir, name: str, data: bytes) -> None:
        if name == UPLOAD_TIMES_FILE:
            appends.append(data)
        original(self, name, data)

    monkeypatch.setattr(RecordDir, "append", counting)
    catalog = scanned(root)
    assert len(catalog.snapshot.files) == 30
    assert len(appends) == 1 and appends[0].count(b"\n") == 30


# -- the option ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "env", "mtime_served"),
    [
        ([], {}, False),
        (["--upload-time", "first-seen"], {}, False),
        (["--upload-time", "mtime"], {}, True),
        ([], {"PKGSERVER_UPLOAD_TIME": "mtime"}, True),
    ],
)
def test_upload_time_option(
    root: Path, tmp_path: Path, argv: list[str], env: dict[str, str], mtime_served: bool
) -> None:
    copied_with_old_mtime(tmp_path / "src", root, "demo", "1.0")
    ns = parse_args(["run", "--cache-dir", "off", *argv, str(root)], env)
    service = Service(settings_from(ns))
    assert isinstance(service.feed, Indexer)
    service.feed.initial_scan()
    service.feed.stop()
    f = only_file(service.catalog)
    assert (f.upload_time == OLD) is mtime_served
    assert (root / ".pkgserver" / UPLOAD_TIMES_FILE).exists() is not mtime_served


def test_pkgserver_run_takes_the_upload_logs_time_for_files_it_has_no_record_of(
    root: Path,
) -> None:
    whl = make_wheel(root, "up", "1.0")
    an_hour_ago = time.time() - 3600
    os.utime(whl, (an_hour_ago, an_hour_ago))  # settled: listed by the first scan itself
    (root / ".pkgserver").mkdir()
    sha = hashlib.sha256(whl.read_bytes()).hexdigest()
    (root / ".pkgserver" / UPLOADS_FILE).write_bytes(Upload(whl.name, sha, "a", OLD).line())
    service = Service(settings_from(parse_args(["run", "--cache-dir", "off", str(root)], {})))
    assert isinstance(service.feed, Indexer)
    service.feed.initial_scan()
    service.feed.stop()
    assert only_file(service.catalog).upload_time == OLD


def test_an_unknown_upload_time_choice_is_refused(root: Path) -> None:
    from pkgserver.errors import UsageError

    with pytest.raises((UsageError, SystemExit)):
        parse_args(["run", "--upload-time", "ctime", str(root)], {})
    with pytest.raises((UsageError, SystemExit)):
        parse_args(["run", str(root)], {"PKGSERVER_UPLOAD_TIME": "ctime"})


# -- where it is served ------------------------------------------------------------------------
def test_the_time_is_served_in_the_simple_json_the_json_api_and_the_page(root: Path) -> None:
    make_wheel(root, "demo", "1.0")
    catalog = scanned(root)
    f = only_file(catalog)
    stamped = f._replace(upload_ns=1_700_000_000_123_456_000)  # 2023-11-14T22:13:20.123456Z
    catalog.apply([stamped])
    app = TestApp(create_app(Settings(roots=(str(root),), disable_fallback=True), catalog))

    simple = app.get("/simple/demo/", headers={"Accept": JSON_V1}).json
    assert simple["files"][0]["upload-time"] == "2023-11-14T22:13:20.123456Z"

    api = app.get("/pypi/demo/json").json
    (url,) = api["urls"]
    assert url["upload_time_iso_8601"] == "2023-11-14T22:13:20.123456Z"
    assert url["upload_time"] == "2023-11-14T22:13:20"
    assert api["releases"]["1.0"][0]["upload_time_iso_8601"] == "2023-11-14T22:13:20.123456Z"

    page = app.get("/project/demo/").text
    assert '<time datetime="2023-11-14T22:13:20Z">2023-11-14 22:13 UTC</time>' in page


def test_without_a_recorded_time_the_mtime_is_served(root: Path) -> None:
    whl = make_wheel(root, "demo", "1.0")
    os.utime(whl, (OLD, OLD))
    f = only_file(_mtime_catalog(root))
    assert f.upload_ns == 0 and f.upload_time == OLD
    assert upload_time(f) == "2019-06-01T00:00:00.000000Z"


def _mtime_catalog(root: Path) -> Catalog:
    catalog = Catalog()
    ix = Indexer([str(root)], catalog, watch=False, settle=0, workers=1)  # no record
    ix.initial_scan()
    ix.stop()
    return catalog
