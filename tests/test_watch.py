"""The indexer keeps the catalog in step with the package directories, the way users fill them.

Every distribution is built in a staging directory outside the watched root, then brought in
as a user would: cp, scp (slow writes to the final name), rsync (dot temp file + rename), hard
links, mv, copied folders. The catalog is polled (``wait_until``); timings are recorded, never
asserted tightly. Times are printed as ``TIMING <label>: <seconds>`` (see them with ``-rP``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from builders import make_sdist, make_wheel

from pkgserver.catalog import Catalog, DistFile
from pkgserver.indexer import Indexer
from pkgserver.scan import MetadataStore

TIMEOUT = 5.0  # generous: machines are noisy
SHORT = 2.0  # for the expected-to-fail waits, to keep the file fast
HOUR_AGO = 3600.0


# -- helpers -------------------------------------------------------------------------------------
def wait_until(predicate: Callable[[], object], timeout: float = TIMEOUT, what: str = "") -> float:
    """Poll ``predicate`` until it is true; return the seconds it took, fail after ``timeout``."""
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            pytest.fail(f"not true within {timeout}s: {what or predicate}")
        time.sleep(0.01)


def sha256_of(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def listed(idx: Indexer, relpath: str) -> DistFile | None:
    return idx.catalog.snapshot.files.get(relpath)


def is_listed_with(idx: Indexer, relpath: str, sha256: str) -> Callable[[], bool]:
    def check() -> bool:
        f = listed(idx, relpath)
        return f is not None and f.sha256 == sha256

    return check


def make_old(*paths: Path | str, age: float = HOUR_AGO) -> None:
    when = time.time() - age
    for p in paths:
        os.utime(p, (when, when))


def big_wheel(directory: Path, name: str, version: str, **meta: Any) -> Path:
    """A wheel of some 40 KB (incompressible module body), so that chunked writes mean something."""
    body = f"DATA = {os.urandom(20_000).hex()!r}\n"
    return make_wheel(directory, name, version, body=body, **meta)


def chunks(data: bytes, n: int) -> list[bytes]:
    size = -(-len(data) // n)
    return [data[i : i + size] for i in range(0, len(data), size)]


def pause_checking(seconds: float, check: Callable[[], None]) -> None:
    """Sleep ``seconds`` while calling ``check`` every 10 ms."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        check()
        time.sleep(0.01)
    check()


def assert_alive(idx: Indexer) -> None:
    assert idx._thread is not None and idx._thread.is_alive(), "the indexer thread died"


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture
def staging(tmp_path: Path) -> Path:
    d = tmp_path / "staging"
    d.mkdir()
    return d


@pytest.fixture
def start_indexer(request: pytest.FixtureRequest) -> Iterator[Callable[..., Indexer]]:
    """``start_indexer(root, ..., **kw)``: a started Indexer, stopped by the finalizer."""

    def start(*roots: Path, **kw: Any) -> Indexer:
        idx = Indexer([str(r) for r in roots], Catalog(), **kw)
        request.addfinalizer(idx.stop)  # registered first: stopped even if start() fails
        idx.start()
        return idx

    yield start


@pytest.fixture
def timing(record_property: Callable[[str, object], None]) -> Callable[[str, float], None]:
    def note(label: str, seconds: float) -> None:
        record_property(label, round(seconds, 3))
        print(f"TIMING {label}: {seconds:.3f}s")

    return note


# -- cp ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["shutil.copyfile", "cp"])
def test_copied_file_is_listed_with_its_sha256(
    how: str,
    root: Path,
    staging: Path,
    start_indexer: Callable[..., Indexer],
    timing: Callable[[str, float], None],
) -> None:
    idx = start_indexer(root)
    assert idx.watching
    src = big_wheel(staging, "Copied-Pkg", "1.0", summary="copied")
    dst = root / src.name
    started = time.monotonic()
    if how == "cp":
        subprocess.run(["cp", str(src), str(dst)], check=True)
    else:
        shutil.copyfile(src, dst)
    wait_until(lambda: listed(idx, src.name) is not None, what=f"{src.name} listed")
    timing(f"cp ({how}) -> listed", time.monotonic() - started)

    f = listed(idx, src.name)
    assert f is not None
    assert f.sha256 == sha256_of(dst) == sha256_of(src)
    assert f.size == dst.stat().st_size
    assert f.path == str(dst)
    assert (f.project, f.version, f.kind) == ("copied-pkg", "1.0", "bdist_wheel")
    assert f.summary == "copied"
    assert idx.catalog.snapshot.project("copied-pkg") is not None


# -- scp -----------------------------------------------------------------------------------------
def test_slowly_written_file_is_not_listed_until_its_writer_closes_it(
    root: Path,
    staging: Path,
    start_indexer: Callable[..., Indexer],
    timing: Callable[[str, float], None],
) -> None:
    idx = start_indexer(root)
    src = big_wheel(staging, "slow", "1.0")
    data = src.read_bytes()
    full_sha = hashlib.sha256(data).hexdigest()
    rel = src.name
    checks = 0

    def not_listed() -> None:
        nonlocal checks
        checks += 1
        f = listed(idx, rel)
        assert f is None, f"listed while its writer still has it open (sha256 {f.sha256[:12]})"
        assert "slow" not in idx.catalog.snapshot.projects

    with open(root / rel, "wb") as fh:
        pause_checking(0.3, not_listed)  # scp may open the file well before bytes arrive
        for piece in chunks(data, 10):
            fh.write(piece)
            fh.flush()
            pause_checking(0.15, not_listed)
    assert checks > 100
    took = wait_until(is_listed_with(idx, rel, full_sha), what="listed with the full hash")
    timing("scp-style close -> listed", took)
    f = listed(idx, rel)
    assert f is not None and f.size == len(data)


# -- rsync ---------------------------------------------------------------------------------------
def test_rsync_temp_file_renamed_into_place_is_listed_and_temp_name_never_is(
    root: Path,
    staging: Path,
    start_indexer: Callable[..., Indexer],
    timing: Callable[[str, float], None],
) -> None:
    idx = start_indexer(root)
    src = big_wheel(staging, "synced", "2.0")
    data = src.read_bytes()
    final = root / src.name
    temp = root / f".{src.name}.Xa9bQz"  # rsync's temp naming

    def only_final_or_nothing() -> None:
        files = set(idx.catalog.snapshot.files)
        assert files <= {src.name}, files
        assert not any(r.startswith(".") or "/." in r for r in files)

    with open(temp, "wb") as fh:
        for piece in chunks(data, 5):
            fh.write(piece)
            fh.flush()
            pause_checking(0.05, only_final_or_nothing)
    make_old(temp)  # rsync -t sets the mtime on the temp file before the rename
    pause_checking(0.3, only_final_or_nothing)
    assert listed(idx, src.name) is None
    started = time.monotonic()
    os.rename(temp, final)
    wait_until(is_listed_with(idx, src.name, sha256_of(final)), what="renamed file listed")
    timing("rsync rename -> listed", time.monotonic() - started)
    pause_checking(0.2, only_final_or_nothing)
    f = listed(idx, src.name)
    assert f is not None and f.mtime_ns == final.stat().st_mtime_ns
    assert set(idx.catalog.snapshot.files) == {src.name}


# -- delete --------------------------------------------------------------------------------------
def test_deleted_file_is_unlisted_and_its_project_goes_with_its_last_file(
    root: Path,
    staging: Path,
    start_indexer: Callable[..., Indexer],
    timing: Callable[[str, float], None],
) -> None:
    idx = start_indexer(root)
    wheel = make_wheel(staging, "doomed", "1.0")
    sdist = make_sdist(staging, "doomed", "1.0")
    other = make_wheel(staging, "survivor", "1.0")
    for src in (wheel, sdist, other):
        shutil.copyfile(src, root / src.name)
    wait_until(lambda: len(idx.catalog.snapshot.files) == 3, what="three files listed")
    project = idx.catalog.snapshot.project("doomed")
    assert project is not None and len(project.files) == 2

    started = time.monotonic()
    (root / wheel.name).unlink()
    wait_until(lambda: listed(idx, wheel.name) is None, what="deleted wheel unlisted")
    timing("delete -> unlisted", time.monotonic() - started)
    project = idx.catalog.snapshot.project("doomed")
    assert project is not None, "the project still has its sdist"
    assert [f.filename for f in project.files] == [sdist.name]

    (root / sdist.name).unlink()
    wait_until(lambda: "doomed" not in idx.catalog.snapshot.projects, what="project gone")
    assert set(idx.catalog.snapshot.files) == {other.name}
    assert idx.catalog.snapshot.file(wheel.name) is None
    assert idx.catalog.snapshot.project("survivor") is not None


# -- overwrite in place --------------------------------------------------------------------------
def test_overwritten_file_is_unlisted_during_the_write_and_relisted_with_the_new_hash(
    root: Path,
    staging: Path,
    start_indexer: Callable[..., Indexer],
    timing: Callable[[str, float], None],
) -> None:
    idx = start_indexer(root)
    first = big_wheel(staging / "v1", "rewritten", "1.0")
    second = big_wheel(staging / "v2", "rewritten", "1.0")  # same name, other bytes
    old_sha, new_sha = sha256_of(first), sha256_of(second)
    assert old_sha != new_sha
    rel = first.name
    shutil.copyfile(first, root / rel)
    wait_until(is_listed_with(idx, rel, old_sha), what="first version listed")

    def not_listed() -> None:
        f = listed(idx, rel)
        assert f is None, f"listed during the rewrite with sha256 {f.sha256[:12]}"

    data = second.read_bytes()
    pieces = chunks(data, 10)
    with open(root / rel, "wb") as fh:  # truncates: the old bytes are gone from here on
        started = time.monotonic()
        took = wait_until(lambda: listed(idx, rel) is None, what="old hash unlisted")
        timing("truncate -> old hash unlisted", took)
        for piece in pieces:
            fh.write(piece)
            fh.flush()
            pause_checking(0.15, not_listed)
        started = time.monotonic()
    wait_until(is_listed_with(idx, rel, new_sha), what="new hash listed")
    timing("rewrite closed -> new hash listed", time.monotonic() - started)
    assert listed(idx, rel).size == len(data)  # type: ignore[union-attr]


# -- hard link, mv -------------------------------------------------------------------------------
@pytest.mark.parametrize("source_mtime", ["fresh", "hour-old"])
def test_hard_linked_file_is_listed(
    source_mtime: str,
    root: Path,
    staging: Path,
    start_indexer: Callable[..., Indexer],
    timing: Callable[[str, float], None],
) -> None:
    idx = start_indexer(root)
    src = big_wheel(staging, "linked", "1.0")
    if source_mtime == "hour-old":
        make_old(src)
    started = time.monotonic()
    os.link(src, root / src.name)
    wait_until(is_listed_with(idx, src.name, sha256_of(src)), what="hard link listed")
    timing(f"hard link ({source_mtime} source mtime) -> listed", time.monotonic() - started)
    assert listed(idx, src.name).path == str(root / src.name)  # type: ignore[union-attr]


def test_file_moved_in_from_staging_is_listed_and_follows_later_moves(
    root: Path,
    staging: Path,
    start_indexer: Callable[..., Indexer],
    timing: Callable[[str, float], None],
) -> None:
    idx = start_indexer(root)
    src = big_wheel(staging, "moved", "1.0")
    sha = sha256_of(src)
    started = time.monotonic()
    os.rename(src, root / src.name)  # mv on the same filesystem
    wait_until(is_listed_with(idx, src.name, sha), what="moved-in file listed")
    timing("mv -> listed", time.monotonic() - started)

    (root / "moved").mkdir()
    wait_until(lambda: idx._watcher is not None and str(root / "moved") in idx._watcher._wds)
    os.rename(root / src.name, root / "moved" / src.name)  # renamed within the root
    wait_until(is_listed_with(idx, f"moved/{src.name}", sha), what="listed under the new name")
    assert listed(idx, src.name) is None

    os.rename(root / "moved" / src.name, staging / src.name)  # mv out of the root
    wait_until(lambda: not idx.catalog.snapshot.files, what="moved-out file unlisted")
    assert "moved" not in idx.catalog.snapshot.projects


# -- folders -------------------------------------------------------------------------------------
def test_copied_in_directory_is_listed_with_relpaths_and_unlisted_by_rmtree(
    root: Path,
    staging: Path,
    start_indexer: Callable[..., Indexer],
    timing: Callable[[str, float], None],
) -> None:
    idx = start_indexer(root)
    folder = staging / "proj"
    wheels = [big_wheel(folder, "proj", v) for v in ("1.0", "1.1")]
    started = time.monotonic()
    shutil.copytree(folder, root / "proj")
    expected = {f"proj/{w.name}": sha256_of(w) for w in wheels}
    wait_until(
        lambda: {r: f.sha256 for r, f in idx.catalog.snapshot.files.items()} == expected,
        what=f"{sorted(expected)} listed",
    )
    timing("copytree (2 wheels) -> listed", time.monotonic() - started)
    project = idx.catalog.snapshot.project("proj")
    assert project is not None and project.versions == ["1.0", "1.1"]

    started = time.monotonic()
    shutil.rmtree(root / "proj")
    wait_until(lambda: not idx.catalog.snapshot.files, what="rmtree'd files unlisted")
    timing("rmtree -> unlisted", time.monotonic() - started)
    assert not idx.catalog.snapshot.projects


def test_files_copied_into_new_folders_per_project_are_listed(
    root: Path,
    staging: Path,
    start_indexer: Callable[..., Indexer],
    timing: Callable[[str, float], None],
) -> None:
    idx = start_indexer(root)
    alpha = big_wheel(staging, "alpha", "1.0")
    beta_whl = big_wheel(staging, "beta", "2.0")
    beta_sdist = make_sdist(staging, "beta", "2.0")
    nested = make_wheel(staging, "gamma", "0.1")
    started = time.monotonic()
    # mkdir then copy at once: races with the watch being added to the new folder.
    (root / "alpha").mkdir()
    shutil.copyfile(alpha, root / "alpha" / alpha.name)
    (root / "beta").mkdir()
    subprocess.run(["cp", str(beta_whl), str(beta_sdist), str(root / "beta")], check=True)
    (root / "deep" / "er" / "gamma").mkdir(parents=True)
    shutil.copyfile(nested, root / "deep" / "er" / "gamma" / nested.name)
    expected = {
        f"alpha/{alpha.name}": sha256_of(alpha),
        f"beta/{beta_whl.name}": sha256_of(beta_whl),
        f"beta/{beta_sdist.name}": sha256_of(beta_sdist),
        f"deep/er/gamma/{nested.name}": sha256_of(nested),
    }
    wait_until(
        lambda: {r: f.sha256 for r, f in idx.catalog.snapshot.files.items()} == expected,
        what=f"{sorted(expected)} listed",
    )
    timing("mkdir + cp into new folders -> listed", time.monotonic() - started)
    assert set(idx.catalog.snapshot.projects) == {"alpha", "beta", "gamma"}

    # A folder later copied into (the watch is in place by now).
    more = make_wheel(staging, "alpha", "1.1")
    shutil.copyfile(more, root / "alpha" / more.name)
    wait_until(is_listed_with(idx, f"alpha/{more.name}", sha256_of(more)))

    shutil.move(str(root / "beta"), str(staging / "beta-moved-out"))
    wait_until(lambda: "beta" not in idx.catalog.snapshot.projects, what="moved-out folder")
    shutil.rmtree(root / "deep")
    wait_until(lambda: "gamma" not in idx.catalog.snapshot.projects, what="rmtree'd nested")
    assert set(idx.catalog.snapshot.files) == {f"alpha/{alpha.name}", f"alpha/{more.name}"}


# -- before start(), junk ------------------------------------------------------------------------
def test_files_present_before_start_with_old_mtimes_are_listed_at_start(
    root: Path, staging: Path, start_indexer: Callable[..., Indexer]
) -> None:
    built = [
        make_wheel(staging, "early", "1.0"),
        make_sdist(staging, "early", "1.0"),
        make_sdist(staging, "early", "0.9", fmt="zip"),
        make_wheel(staging / "late", "late", "3.0"),
    ]
    shutil.copytree(staging, root, dirs_exist_ok=True)
    copies = [root / p.relative_to(staging) for p in built]
    make_old(*copies)
    idx = start_indexer(root)
    snap = idx.catalog.snapshot  # no waiting: the initial scan lists them
    assert {r: f.sha256 for r, f in snap.files.items()} == {
        p.relative_to(root).as_posix(): sha256_of(p) for p in copies
    }
    assert set(snap.projects) == {"early", "late"}
    assert snap.project("early").versions == ["0.9", "1.0"]  # type: ignore[union-attr]
    assert_alive(idx)


def _junk(root: Path, staging: Path) -> tuple[set[str], set[str]]:
    """Write junk (and two good files) under ``root``; returns (must list, must not list)."""
    (root / "README.txt").write_text("not a distribution\n")
    (root / "foo.whl").write_bytes(b"this is not a zip at all")
    bad = make_sdist(staging, "bad", "1.0")
    shutil.copyfile(bad, root / "bad name.tar.gz")
    (root / ".hidden").mkdir(exist_ok=True)
    hidden = make_wheel(staging, "hidden", "1.0")
    shutil.copyfile(hidden, root / ".hidden" / hidden.name)
    shutil.copyfile(hidden, root / f".{hidden.name}")
    (root / "x-1.0.tar.gz").write_bytes(b"")
    (root / "junk-dir.whl").mkdir(exist_ok=True)  # a folder with a distribution's extension
    (root / "garbage-1.0-py3-none-any.whl").write_bytes(b"\x00" * 100)  # good name, bad bytes
    good = make_wheel(staging, "good", "1.0")
    shutil.copyfile(good, root / good.name)
    sub = make_sdist(staging, "good", "1.0")
    (root / "good").mkdir(exist_ok=True)
    shutil.copyfile(sub, root / "good" / sub.name)
    never = {
        "README.txt",
        "foo.whl",
        "bad name.tar.gz",
        f".hidden/{hidden.name}",
        f".{hidden.name}",
        "x-1.0.tar.gz",
        "junk-dir.whl",
    }
    return {good.name, f"good/{sub.name}"}, never


def test_junk_present_at_start_does_not_crash_the_scan_and_is_not_listed(
    root: Path, staging: Path, start_indexer: Callable[..., Indexer]
) -> None:
    wanted, never = _junk(root, staging)
    make_old(*(p for p in root.rglob("*") if p.is_file()))
    idx = start_indexer(root)
    files = idx.catalog.snapshot.files
    assert wanted <= set(files)
    assert not never & set(files)
    assert set(files) - wanted <= {"garbage-1.0-py3-none-any.whl"}
    garbage = files.get("garbage-1.0-py3-none-any.whl")
    assert garbage is None or garbage.metadata_sha256 is None
    assert "hidden" not in idx.catalog.snapshot.projects
    pause_checking(0.3, lambda: assert_alive(idx))


def test_junk_brought_in_while_watching_does_not_crash_and_is_not_listed(
    root: Path, staging: Path, start_indexer: Callable[..., Indexer]
) -> None:
    idx = start_indexer(root)
    wanted, never = _junk(root, staging)
    wait_until(lambda: wanted <= set(idx.catalog.snapshot.files), what=f"{wanted} listed")
    # Long enough for the hard-link check and the mtime rule to have run on everything.
    pause_checking(1.5, lambda: assert_alive(idx))
    files = set(idx.catalog.snapshot.files)
    assert not never & files
    assert files - wanted <= {"garbage-1.0-py3-none-any.whl"}
    # Still working afterwards.
    late = make_wheel(staging, "late", "1.0")
    shutil.copyfile(late, root / late.name)
    wait_until(is_listed_with(idx, late.name, sha256_of(late)))


def test_unattributable_file_is_skipped_and_logged_once(
    root: Path,
    staging: Path,
    start_indexer: Callable[..., Indexer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pkgserver")
    (root / "foo.whl").write_bytes(b"not a zip")
    make_old(root / "foo.whl")
    idx = start_indexer(root, watch=False, rescan_interval=0.1)
    pause_checking(0.8, lambda: assert_alive(idx))  # several rescans
    assert idx.catalog.snapshot.files == {}
    about_foo = [r for r in caplog.records if "foo.whl" in r.getMessage()]
    assert len(about_foo) == 1, [r.getMessage() for r in about_foo]
    assert about_foo[0].levelno == logging.WARNING


# -- rescan fallback -----------------------------------------------------------------------------
def test_rescan_without_watch_picks_up_a_copy_and_a_deletion(
    root: Path,
    staging: Path,
    start_indexer: Callable[..., Indexer],
    timing: Callable[[str, float], None],
) -> None:
    idx = start_indexer(root, watch=False, rescan_interval=0.3)
    assert not idx.watching
    src = big_wheel(staging, "polled", "1.0")
    started = time.monotonic()
    shutil.copyfile(src, root / src.name)
    wait_until(is_listed_with(idx, src.name, sha256_of(src)), what="copied file found by rescan")
    timing("rescan mode: copy -> listed", time.monotonic() - started)

    started = time.monotonic()
    (root / src.name).unlink()
    wait_until(lambda: not idx.catalog.snapshot.files, what="deletion found by rescan")
    timing("rescan mode: delete -> unlisted", time.monotonic() - started)
    assert not idx.catalog.snapshot.projects


# -- two roots -----------------------------------------------------------------------------------
@pytest.fixture
def two_roots(tmp_path: Path, staging: Path) -> tuple[Path, Path, Path, Path]:
    """(root1, root2, file1, file2): the same relpath ``sub/dup-1.0-...whl`` in both, old mtimes."""
    r1, r2 = tmp_path / "first", tmp_path / "second"
    f1 = make_wheel(r1 / "sub", "dup", "1.0", summary="from the first root")
    f2 = make_wheel(r2 / "sub", "dup", "1.0", summary="from the second root")
    make_old(f1, f2)
    assert sha256_of(f1) != sha256_of(f2)
    return r1, r2, f1, f2


REL = "sub/dup-1.0-py3-none-any.whl"


def test_same_relpath_in_two_roots_lists_the_first_roots_file(
    two_roots: tuple[Path, Path, Path, Path],
    staging: Path,
    start_indexer: Callable[..., Indexer],
) -> None:
    r1, r2, f1, f2 = two_roots
    idx = start_indexer(r1, r2)
    f = listed(idx, REL)
    assert f is not None
    assert (f.path, f.sha256, f.summary) == (str(f1), sha256_of(f1), "from the first root")
    assert len(idx.catalog.snapshot.files) == 1

    # Rewriting the second root's copy does not displace the first root's.
    replacement = big_wheel(staging, "dup", "1.0")
    shutil.copyfile(replacement, f2)
    marker = make_wheel(staging, "marker", "1.0")
    shutil.copyfile(marker, r2 / marker.name)  # events are handled in order: a barrier
    wait_until(lambda: listed(idx, marker.name) is not None)
    pause_checking(0.3, lambda: None)
    f = listed(idx, REL)
    assert f is not None and (f.path, f.sha256) == (str(f1), sha256_of(f1))


def test_deleting_the_shadowed_copy_in_the_second_root_keeps_the_first_roots_file(
    two_roots: tuple[Path, Path, Path, Path],
    staging: Path,
    start_indexer: Callable[..., Indexer],
) -> None:
    r1, r2, f1, f2 = two_roots
    idx = start_indexer(r1, r2)
    assert listed(idx, REL).path == str(f1)  # type: ignore[union-attr]
    f2.unlink()
    marker = make_wheel(staging, "marker", "1.0")
    shutil.copyfile(marker, r2 / marker.name)  # handled after the deletion: a barrier
    wait_until(lambda: listed(idx, marker.name) is not None)
    f = listed(idx, REL)
    assert f is not None and f.path == str(f1), "the first root's file, still on disk, unlisted"


def test_deleting_the_first_roots_file_falls_back_to_the_second_roots_copy(
    two_roots: tuple[Path, Path, Path, Path],
    start_indexer: Callable[..., Indexer],
) -> None:
    r1, r2, f1, f2 = two_roots
    idx = start_indexer(r1, r2)
    assert listed(idx, REL).path == str(f1)  # type: ignore[union-attr]
    f1.unlink()
    wait_until(
        lambda: (f := listed(idx, REL)) is not None and f.path == str(f2),
        timeout=SHORT,
        what="the second root's copy listed",
    )
    assert listed(idx, REL).sha256 == sha256_of(f2)  # type: ignore[union-attr]


def test_file_added_to_the_first_root_replaces_the_second_roots_listing(
    tmp_path: Path, staging: Path, start_indexer: Callable[..., Indexer]
) -> None:
    r1, r2 = tmp_path / "first", tmp_path / "second"
    r1.mkdir()
    f2 = make_wheel(r2 / "sub", "dup", "1.0", summary="from the second root")
    make_old(f2)
    idx = start_indexer(r1, r2)
    assert listed(idx, REL).path == str(f2)  # type: ignore[union-attr]
    src = make_wheel(staging, "dup", "1.0", summary="from the first root")
    (r1 / "sub").mkdir()
    wait_until(lambda: idx._watcher is not None and str(r1 / "sub") in idx._watcher._wds)
    shutil.copyfile(src, r1 / REL)
    wait_until(
        lambda: (f := listed(idx, REL)) is not None and f.path == str(r1 / REL),
        timeout=SHORT,
        what="the first root's new file listed",
    )
    assert listed(idx, REL).sha256 == sha256_of(src)  # type: ignore[union-attr]


# -- found while testing -------------------------------------------------------------------------
def test_root_given_as_a_symlink_to_a_directory_is_watched(
    tmp_path: Path, staging: Path, start_indexer: Callable[..., Indexer]
) -> None:
    real = tmp_path / "real-packages"
    real.mkdir()
    link = tmp_path / "packages-link"
    link.symlink_to(real, target_is_directory=True)
    idx = start_indexer(link)
    src = make_wheel(staging, "via-link", "1.0")
    shutil.copyfile(src, link / src.name)
    wait_until(
        is_listed_with(idx, src.name, sha256_of(src)), timeout=SHORT, what="listed via symlink"
    )


def test_mtime_changed_in_place_is_reflected_in_the_catalog(
    root: Path, staging: Path, start_indexer: Callable[..., Indexer]
) -> None:
    src = make_wheel(staging, "touched", "1.0")
    dst = root / src.name
    shutil.copyfile(src, dst)
    make_old(dst, age=2 * HOUR_AGO)
    idx = start_indexer(root)
    assert listed(idx, src.name).mtime_ns == dst.stat().st_mtime_ns  # type: ignore[union-attr]
    assert MetadataStore().get(listed(idx, src.name)) is not None  # type: ignore[arg-type]
    make_old(dst)  # touch -d "1 hour ago", or rsync -t putting the source's time back
    wait_until(
        lambda: (f := listed(idx, src.name)) is not None and f.mtime_ns == dst.stat().st_mtime_ns,
        timeout=SHORT,
        what="catalog mtime_ns equal to the file's",
    )
    assert MetadataStore().get(listed(idx, src.name)) is not None  # type: ignore[arg-type]


@pytest.mark.parametrize("how", ["shutil.copy", "cp -p"])
def test_a_copy_that_also_sets_mode_or_times_is_listed_at_once(
    root: Path, staging: Path, start_indexer: Callable[..., Indexer], how: str
) -> None:
    """The IN_ATTRIB after the close must not send the file to the mtime rule: with that rule
    set to a minute, only the close itself can list the file within the wait."""
    idx = start_indexer(root, settle=60.0)
    whl = make_wheel(staging, "attrs", "1.0")
    target = root / whl.name
    started = time.monotonic()
    if how == "shutil.copy":
        shutil.copy(whl, target)
    else:
        subprocess.run(["cp", "-p", str(whl), str(target)], check=True)
    wait_until(lambda: listed(idx, whl.name) is not None, timeout=10)
    print(f"TIMING {how}: listed after {time.monotonic() - started:.3f} s")
