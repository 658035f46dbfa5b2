"""The records beside the packages (``.pkgserver/``), reached one way: pkgserver.records.RecordDir.

Anyone who can copy files into the package directory can also put something odd where a record
is expected. Each case here was a hang, a memory blow-up or a write outside the directory
before every record went through RecordDir; each must now be refused quickly, change nothing
outside, and say so once in the log.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from pkgserver import records
from pkgserver.hosted import HostedNames
from pkgserver.records import (
    HOSTED_FILE,
    UPLOADS_FILE,
    YANKED_FILE,
    RecordDir,
    UnsafeRecord,
    UploadLog,
    Yanks,
    load_yanks,
    set_yank,
)


def _state(root: Path) -> Path:
    d = root / ".pkgserver"
    d.mkdir(exist_ok=True)
    return d


T = TypeVar("T")


def _quickly(fn: Callable[[], T], seconds: float = 5.0) -> T:
    """Run ``fn`` on a thread; fail if it has not returned within ``seconds`` (a hang)."""
    result: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # handed to the test below
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn} still running after {seconds}s: it hangs"
    if errors:
        raise errors[0]
    return result[0]


def test_a_record_round_trips(tmp_path: Path) -> None:
    rec = RecordDir(str(tmp_path))
    assert rec.read(HOSTED_FILE) is None  # no folder yet
    rec.append(HOSTED_FILE, b"a\n")
    rec.append(HOSTED_FILE, b"b\n")
    assert rec.read(HOSTED_FILE) == b"a\nb\n"
    rec.replace(HOSTED_FILE, b"c\n")
    assert rec.read(HOSTED_FILE) == b"c\n"
    assert (tmp_path / ".pkgserver" / HOSTED_FILE).stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in (tmp_path / ".pkgserver").iterdir()) == [HOSTED_FILE]


def test_a_fifo_is_refused_without_waiting(tmp_path: Path) -> None:
    os.mkfifo(_state(tmp_path) / HOSTED_FILE)
    rec = RecordDir(str(tmp_path))
    with pytest.raises(UnsafeRecord, match="not a regular file"):
        _quickly(lambda: rec.read(HOSTED_FILE))
    with pytest.raises(UnsafeRecord):
        _quickly(lambda: rec.append(HOSTED_FILE, b"x\n"))


def test_a_link_to_dev_zero_is_refused_without_reading(tmp_path: Path) -> None:
    (_state(tmp_path) / HOSTED_FILE).symlink_to("/dev/zero")
    names = _quickly(lambda: HostedNames([str(tmp_path)]))
    assert names.names() == frozenset()


def test_a_link_to_another_file_is_never_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    root = tmp_path / "pkgs"
    root.mkdir()
    (_state(root) / HOSTED_FILE).symlink_to(outside)
    (_state(root) / UPLOADS_FILE).symlink_to(outside)
    names = HostedNames([str(root)])
    names.add({"newcomer"})  # never raises: the claim holds in memory
    assert "newcomer" in names
    UploadLog([str(root)]).record("x-1.0.tar.gz", "0" * 64, "alice")
    with pytest.raises(UnsafeRecord, match="symbolic link"):
        RecordDir(str(root)).append(HOSTED_FILE, b"x\n")
    assert outside.read_text() == "precious\n"


def test_a_hard_linked_record_is_not_appended_to(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    root = tmp_path / "pkgs"
    root.mkdir()
    os.link(outside, _state(root) / UPLOADS_FILE)
    UploadLog([str(root)]).record("x-1.0.tar.gz", "0" * 64, "alice")
    assert outside.read_text() == "precious\n"


def test_a_linked_state_folder_is_refused_for_reading_and_writing(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / HOSTED_FILE
    victim.write_text("corp-app\n")
    victim.chmod(0o600)
    root = tmp_path / "pkgs"
    root.mkdir()
    (root / ".pkgserver").symlink_to(elsewhere)
    rec = RecordDir(str(root))
    with pytest.raises(UnsafeRecord, match="not a real folder"):
        rec.read(HOSTED_FILE)
    with pytest.raises(UnsafeRecord):
        rec.replace(HOSTED_FILE, b"")
    with pytest.raises(UnsafeRecord):
        HostedNames([str(root)]).forget("corp-app")
    with pytest.raises(OSError):
        set_yank([str(root)], "corp-app", "1.0", "bad")
    assert victim.read_text() == "corp-app\n"
    assert victim.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in elsewhere.iterdir()) == [HOSTED_FILE]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the folder to another user")
def test_a_state_folder_of_another_user_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = _state(tmp_path)
    (state / HOSTED_FILE).write_text("corp-app\n")
    (state / YANKED_FILE).write_text('{"yanked": {"corp-app": {"1.0": ""}}}')
    os.chown(state, 12345, 12345)
    with caplog.at_level(logging.WARNING):
        names = HostedNames([str(tmp_path)])
        assert names.names() == frozenset()
        assert load_yanks([str(tmp_path)]) == {}
    refusals = [r.getMessage() for r in caplog.records if "uid 12345" in r.getMessage()]
    assert refusals and all(".pkgserver" in m for m in refusals)
    os.chown(state, 0, 0)
    assert HostedNames([str(tmp_path)]).names() == {"corp-app"}


def test_a_folder_writable_by_everyone_is_refused(tmp_path: Path) -> None:
    state = _state(tmp_path)
    (state / HOSTED_FILE).write_text("corp-app\n")
    state.chmod(0o777)
    with pytest.raises(UnsafeRecord, match="writable by everyone"):
        RecordDir(str(tmp_path)).read(HOSTED_FILE)
    state.chmod(0o755)
    assert RecordDir(str(tmp_path)).read(HOSTED_FILE) == b"corp-app\n"


def test_an_oversized_record_is_refused_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pkgserver import records

    monkeypatch.setattr(records, "MAX_RECORD_BYTES", 1024)
    (_state(tmp_path) / HOSTED_FILE).write_text("corp-app\n" * 1000)
    with pytest.raises(UnsafeRecord, match="larger than"):
        RecordDir(str(tmp_path)).read(HOSTED_FILE, limit=1024)


def test_a_problem_is_logged_once_while_polled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    os.mkfifo(_state(tmp_path) / YANKED_FILE)
    yanks = Yanks([str(tmp_path)])
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            yanks._watch.last = object()  # as if it changed: read again
            assert yanks.poll() == {}
    lines = [r for r in caplog.records if YANKED_FILE in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]


def test_a_swapped_folder_is_seen_as_a_change(tmp_path: Path) -> None:
    state = _state(tmp_path)
    (state / HOSTED_FILE).write_text("corp-app\n")
    names = HostedNames([str(tmp_path)], reload_every=0)
    assert names.names() == {"corp-app"}
    other = tmp_path / ".other"
    other.mkdir()
    (other / HOSTED_FILE).write_text("corp-app\n")
    os.utime(other / HOSTED_FILE, ns=((state / HOSTED_FILE).stat().st_mtime_ns,) * 2)
    state.rename(tmp_path / ".old")
    other.rename(tmp_path / ".pkgserver")
    (tmp_path / ".pkgserver" / HOSTED_FILE).write_text("corp-web\n")
    time.sleep(0.01)
    assert names.names() == {"corp-web"}


def test_forget_refuses_a_fifo_at_once(tmp_path: Path) -> None:
    os.mkfifo(_state(tmp_path) / HOSTED_FILE)
    with pytest.raises(UnsafeRecord):
        _quickly(lambda: HostedNames([str(tmp_path)]).forget("corp-app"))


@pytest.mark.parametrize("how", ["fifo", "link", "renamed", "deleted"])
def test_claims_hold_when_their_record_can_no_longer_be_read(tmp_path: Path, how: str) -> None:
    # Renaming .pkgserver away takes only write access to the package directory: that must
    # not re-open dependency confusion for every name once hosted here.
    state = _state(tmp_path)
    (state / HOSTED_FILE).write_text("gone-project\n")
    names = HostedNames([str(tmp_path)], reload_every=0)
    assert "gone-project" in names
    record = state / HOSTED_FILE
    if how == "fifo":
        record.unlink()
        os.mkfifo(record)
    elif how == "link":
        record.unlink()
        record.symlink_to("/dev/zero")
    elif how == "renamed":
        state.rename(tmp_path / ".elsewhere")
    else:
        record.unlink()
    time.sleep(0.01)
    assert "gone-project" in names


def test_a_forget_by_another_process_is_seen(tmp_path: Path) -> None:
    (_state(tmp_path) / HOSTED_FILE).write_text("gone-project\nother\n")
    names = HostedNames([str(tmp_path)], reload_every=0)
    assert HostedNames([str(tmp_path)]).forget("gone-project")
    assert "gone-project" not in names and "other" in names


# -- odd records, large logs ------------------------------------------------------------------
def test_deeply_nested_yank_record_is_reported_not_fatal(tmp_path: Path) -> None:
    (tmp_path / ".pkgserver").mkdir()
    (tmp_path / ".pkgserver" / "yanked.json").write_text("[" * 100_000)
    assert load_yanks([str(tmp_path)]) == {}


def test_a_fifo_in_place_of_a_record_does_not_block(tmp_path: Path) -> None:
    (tmp_path / ".pkgserver").mkdir()
    os.mkfifo(tmp_path / ".pkgserver" / "yanked.json")
    os.mkfifo(tmp_path / ".pkgserver" / "uploads.jsonl")
    done = threading.Event()

    def read() -> None:
        load_yanks([str(tmp_path)])
        UploadLog([str(tmp_path)]).uploader("x.whl", "0")
        done.set()

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(10), "reading a FIFO record blocked"


def test_upload_log_is_never_written_through_a_link(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside.txt"
    (root / ".pkgserver").mkdir(parents=True)
    outside.write_text("")
    (root / ".pkgserver" / "uploads.jsonl").symlink_to(outside)
    UploadLog([str(root)]).record("evil-1.0.whl", "0" * 64, "mallory")
    assert outside.read_text() == ""
    linked_dir = tmp_path / "root2"
    linked_dir.mkdir()
    (linked_dir / ".pkgserver").symlink_to(tmp_path)
    UploadLog([str(linked_dir)]).record("evil-1.0.whl", "0" * 64, "mallory")
    assert not (tmp_path / "uploads.jsonl").exists()


def test_a_large_upload_log_keeps_its_newest_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records, "MAX_RECORD_BYTES", 4096)
    writer = UploadLog([str(tmp_path)])
    for i in range(100):
        writer.record(f"p-{i}.whl", f"{i:064d}", f"user{i}")
    reader = UploadLog([str(tmp_path)])
    assert reader.uploader("p-99.whl", f"{99:064d}") == "user99"
    assert reader.uploader("p-0.whl", f"{0:064d}") is None  # beyond the newest 4 KB
    writer.record("p-100.whl", f"{100:064d}", "late")  # appended: read incrementally
    reader._watch.every = 0.0
    assert reader.uploader("p-100.whl", f"{100:064d}") == "late"
    assert reader.uploader("p-99.whl", f"{99:064d}") == "user99"
