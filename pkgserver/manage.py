"""The admin's commands on package directories or a bucket: remove, yank, unyank, status, check.

They work on the stored files and records themselves, not through a server, and through the
interfaces the server uses (``Packages``: a ``storage.Storage`` and its records), so that a
running server sees the change as it sees its own: on directories, a removal through its watch
and a yank or a project status through ``.pkgserver/yanked.json`` or ``project-status.json``,
each within a second; on a bucket, every replica
at its next look at the bucket. Each function prints what it did, raises UsageError for a bad
argument, and returns the exit status.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import IO, TYPE_CHECKING, NamedTuple

from packaging.version import Version

from .catalog import ACTIVE, STATUSES, DistFile, FileStat, ProjectStatus
from .distfile import (
    SIDECARS,
    InvalidDistFilename,
    dist_extension,
    file_key,
    is_valid_project_name,
    normalize,
    parse_dist_filename,
    version_key,
    version_sort_key,
)
from .errors import UsageError
from .fsutil import confined
from .records import MAX_REASON, merged_statuses, merged_yanks, set_status_in, set_yank_in
from .scan import describe, is_hidden, iter_dist_files

if TYPE_CHECKING:
    from .storage import Records, Storage, Stored

__all__ = [
    "Candidate",
    "Packages",
    "check",
    "files_of",
    "forget_yanks_of_removed",
    "project_name",
    "read_for_check",
    "remove",
    "remove_distribution",
    "report_check",
    "split_status_and_roots",
    "split_version_and_roots",
    "status",
    "unyank",
    "yank",
]


class Packages(NamedTuple):
    """What a command acts on: the files (``files_of``, ``remove``) and the records (yanks,
    hosted names), the package directories' or a bucket's; the command line picks them."""

    where: str  # for messages: the directories, or the s3:// location
    storage: Storage
    folders: Sequence[Records]


class Found(NamedTuple):
    root: str
    relpath: str
    version: str  # as the filename spells it (normalized where it is a PEP 440 version)

    @property
    def path(self) -> str:
        return os.path.join(self.root, *self.relpath.split("/"))


def project_name(name: str) -> str:
    if not is_valid_project_name(name):
        raise UsageError(f"invalid project name {name!r}")
    return normalize(name)


def _version_arg(version: str) -> str:
    if (
        not version
        or len(version) > 100
        or not _is_utf8(version)
        or any(c.isspace() or not c.isprintable() for c in version)
    ):
        raise UsageError(f"invalid version {version!r}")
    return version


def _is_utf8(text: str) -> bool:
    """Whether an argument was valid UTF-8 (others arrive with surrogate escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _one_line(text: str) -> bool:
    """No control, format or line-separator characters (C0, C1, bidi overrides, U+2028...):
    a reason is shown to installers, on terminals and on the pages."""
    return not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text)


def files_of(roots: Sequence[str], project: str, version: str | None = None) -> list[Found]:
    """The distribution files of ``project`` (of one ``version``, compared as PEP 440 versions)."""
    wanted = version_key(version) if version is not None else None
    found = []
    for root in roots:
        for relpath, _st in iter_dist_files(root):
            spelled = release_of(relpath, project, wanted)
            if spelled is not None:
                found.append(Found(root, relpath, spelled))
    found.sort(key=lambda f: (version_sort_key(f.version), f.relpath))
    return found


def release_of(relpath: str, project: str, wanted: Version | str | None) -> str | None:
    """The version of ``relpath`` as its filename spells it, if it is a distribution of
    ``project`` (of the version whose ``version_key`` is ``wanted``, when one is)."""
    try:
        info = parse_dist_filename(relpath.rsplit("/", 1)[-1])
    except InvalidDistFilename:
        return None
    if info.project != project:
        return None
    if wanted is not None and version_key(info.version) != wanted:
        return None
    return info.version


def _stored(packages: Packages, project: str, version: str | None = None) -> list[Stored]:
    """The files of ``project`` (of ``version``) in the store, oldest version first."""
    found = packages.storage.files_of(project, version)
    return sorted(found, key=lambda f: (version_sort_key(f.version), f.relpath))


def _versions(packages: Packages, project: str) -> list[str]:
    return list(dict.fromkeys(f.version for f in _stored(packages, project)))


def _the_version(packages: Packages, project: str, version: str) -> tuple[str, list[Stored]]:
    """The version as its files spell it, and the files; UsageError when there are none."""
    found = _stored(packages, project, version)
    if not found:
        known = _versions(packages, project)
        where = packages.where
        if not known:
            raise UsageError(f"no project {project!r} in {where}")
        shown = ", ".join(known[-10:])
        hint = "" if _is_version(version) else f"; if {version!r} is a directory, it is missing"
        raise UsageError(f"{project} has no version {version!r} in {where} (it has: {shown}){hint}")
    return found[0].version, found


def split_version_and_roots(args: Sequence[str]) -> tuple[str | None, list[str]]:
    """``[VERSION] DIR...`` -> (version or None, dirs).

    The first argument is a VERSION unless it names a directory (or has a slash); one that could
    be either is refused rather than guessed.
    """
    if not args:
        return None, []
    first, rest = args[0], list(args[1:])
    looks_like_path = "/" in first or first in (".", "..") or first.startswith("~")
    is_dir = os.path.isdir(first)
    if looks_like_path or (is_dir and not _is_version(first)):
        return None, list(args)
    if is_dir:
        raise UsageError(
            f"{first!r} is both a directory and a version: write ./{first} for the directory"
        )
    return first, rest


def _is_version(text: str) -> bool:
    return isinstance(version_key(text), Version)


# -- remove --------------------------------------------------------------------------------------
def remove_distribution(path: str, unlink: Callable[[str], None] = os.unlink) -> bool:
    """Delete a distribution file and the files kept beside it (signature, attestations);
    whether the file was there. Raises OSError when the file itself cannot be removed. The one
    way files leave the index: ``pkgserver remove``, ``remove_pkg`` and ``--overwrite``."""
    try:
        unlink(path)
        found = True
    except FileNotFoundError:
        found = False
    for ext in SIDECARS:
        try:
            unlink(path + ext)
        except OSError:
            pass
    return found


def forget_yanks_of_removed(
    folders: Sequence[Records], project: str, removed: Iterable[str], left: Iterable[str]
) -> None:
    """A version whose files are all gone is no longer yanked: uploaded again, it starts
    unyanked (PyPI does not allow a version back at all; we allow it, fresh). The rule of both
    ``pkgserver remove`` and the HTTP ``remove_pkg``. ``left``: the versions still hosted."""
    gone = {version_key(v) for v in removed} - {version_key(v) for v in left}
    if not gone:
        return
    for v in merged_yanks(folders).get(project, {}):
        if version_key(v) in gone:
            try:
                set_yank_in(folders, project, v, None)
            except OSError:
                pass


def remove(name: str, version: str | None, packages: Packages, *, dry_run: bool = False) -> int:
    project = project_name(name)
    if version is not None:
        version, found = _the_version(packages, project, _version_arg(version))
    else:
        found = _stored(packages, project)
        if not found:
            raise UsageError(f"no project {project!r} in {packages.where}")
    verb = "would remove" if dry_run else "removed"
    failed = []
    for f in found:
        if not dry_run:
            try:
                if not packages.storage.remove(f.location):
                    continue
            except OSError as exc:
                failed.append(f"{f.location}: {exc.strerror or exc}")
                continue
        print(f"{verb} {_shown(f.location)}")
    if failed:
        raise UsageError("could not remove " + "; ".join(failed))
    if dry_run:
        return 0
    left = _versions(packages, project)
    forget_yanks_of_removed(packages.folders, project, [f.version for f in found], left)
    what = f"{project} {version}" if version else project
    print(f"{what}: {len(found)} file(s) removed", file=sys.stderr)
    if not left:
        print(
            f"{project} has no files left; it stays claimed (never redirected to the fallback "
            f"index) until 'pkgserver forget {project}'",
            file=sys.stderr,
        )
    return 0


def _reason_arg(reason: str) -> str:
    """A yank's or a status's reason, checked: one line of printable UTF-8, bounded."""
    if not _is_utf8(reason):
        raise UsageError("the reason is not valid UTF-8")
    reason = reason.strip()
    if len(reason) > MAX_REASON:
        raise UsageError(f"the reason is longer than {MAX_REASON} characters")
    if not _one_line(reason):
        raise UsageError("the reason must be one line of text, without control characters")
    return reason


# -- yank / unyank (PEP 592) --------------------------------------------------------------------
def yank(name: str, version: str, packages: Packages, reason: str = "") -> int:
    project = project_name(name)
    reason = _reason_arg(reason)
    spelled, _found = _the_version(packages, project, _version_arg(version))
    try:
        changed = set_yank_in(packages.folders, project, spelled, reason)
    except OSError as exc:
        raise UsageError(f"cannot record the yank: {exc.strerror or exc}") from None
    suffix = f" ({reason})" if reason else ""
    if changed:
        print(f"yanked {project} {spelled}{suffix}", file=sys.stderr)
    else:
        print(f"{project} {spelled} was yanked already{suffix}", file=sys.stderr)
    return 0


def unyank(name: str, version: str, packages: Packages) -> int:
    project = project_name(name)
    version = _version_arg(version)
    yanked = merged_yanks(packages.folders).get(project, {})
    wanted = version_key(version)
    spelled = next((v for v in yanked if version_key(v) == wanted), None)
    if spelled is None:
        raise UsageError(f"{project} {version} is not yanked in {packages.where}")
    try:
        set_yank_in(packages.folders, project, spelled, None)
    except OSError as exc:
        raise UsageError(f"cannot record the unyank: {exc.strerror or exc}") from None
    print(f"unyanked {project} {spelled}", file=sys.stderr)
    return 0


# -- status (PEP 792) ---------------------------------------------------------------------------
def split_status_and_roots(args: Sequence[str]) -> tuple[str | None, list[str]]:
    """``[STATUS] DIR...`` -> (status or None, dirs): the first argument is a STATUS when it
    is one of the four words; one that is also a directory is refused rather than guessed."""
    if not args:
        return None, []
    first = args[0]
    if first not in STATUSES:
        if "/" not in first and not first.startswith((".", "~")) and not os.path.exists(first):
            raise UsageError(
                f"{first!r} is neither a status ({', '.join(STATUSES)}) nor a package directory"
            )
        return None, list(args)
    if os.path.isdir(first):
        raise UsageError(
            f"{first!r} is both a directory and a status: write ./{first} for the directory"
        )
    return first, list(args[1:])


def status(name: str, wanted: str | None, packages: Packages, reason: str | None = None) -> int:
    """Print ``name``'s status (``wanted`` None), or set it: ``active`` clears the record."""
    project = project_name(name)
    current = merged_statuses(packages.folders).get(project)
    if wanted is None:
        if reason is not None:
            raise UsageError("--reason is given with a STATUS to set")
        if current is None and not _stored(packages, project):
            raise UsageError(f"no project {project!r} in {packages.where}")
        shown = current or ProjectStatus(ACTIVE)
        print(shown.status + (f"\t{shown.reason}" if shown.reason else ""))
        return 0
    if wanted not in STATUSES:
        raise UsageError(f"invalid status {wanted!r}: one of {', '.join(STATUSES)}")
    if wanted == ACTIVE and reason:
        raise UsageError("an active project has no reason (active clears the record)")
    record = ProjectStatus(wanted, _reason_arg(reason or ""))
    if wanted != ACTIVE and current is None and not _stored(packages, project):
        # (A record for a name with no files is refused too: a typo would mark nothing.)
        raise UsageError(f"no project {project!r} in {packages.where}")
    try:
        changed = set_status_in(packages.folders, project, record)
    except OSError as exc:
        raise UsageError(f"cannot record the status: {exc.strerror or exc}") from None
    suffix = f" ({record.reason})" if record.reason else ""
    if changed:
        print(f"{project} is now {wanted}{suffix}", file=sys.stderr)
    else:
        print(f"{project} was {wanted} already{suffix}", file=sys.stderr)
    return 0


# -- check ---------------------------------------------------------------------------------------
class Progress:
    """A one-line progress bar on a terminal (nothing otherwise), redrawn at most 10 times a
    second so that it costs nothing next to the hashing."""

    def __init__(self, total: int, stream: IO[str], enabled: bool) -> None:
        self.total, self.stream, self.enabled = total, stream, enabled and total > 0
        self.done = 0
        self._shown = 0.0
        self._start = time.monotonic()

    def step(self, label: str) -> None:
        self.done += 1
        now = time.monotonic()
        if self.enabled and (now - self._shown >= 0.1 or self.done == self.total):
            self._shown = now
            width = 30
            filled = width * self.done // self.total
            bar = "#" * filled + "." * (width - filled)
            label = label if len(label) <= 40 else "..." + label[-37:]
            self.stream.write(
                f"\r[{bar}] {self.done}/{self.total} {100 * self.done // self.total:3d}% "
                f"{now - self._start:5.1f}s {label:<40}"
            )
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 110 + "\r")
            self.stream.flush()


class Candidate(NamedTuple):
    """A file for ``check`` to read: its name in the store (for the progress bar), where it is
    (for messages), and how to describe it as the index would: None, with the problem noted in
    the list given, when the index could not list it, or lists it otherwise."""

    relpath: str
    path: str
    read: Callable[[list[str]], DistFile | None]


def check(
    roots: Sequence[str],
    cache_dir: str | None,
    *,
    progress: bool | None = None,
    out: IO[str] | None = None,
) -> int:
    """Read every file and report what the index cannot serve as it should; 1 if anything."""
    cached, cache_note = _cache_for_check(roots, cache_dir)
    candidates = []
    others = []
    real_roots = [os.path.realpath(r) for r in roots]
    for index, root in enumerate(roots):
        for relpath, st in iter_dist_files(root):
            path = os.path.join(root, *relpath.split("/"))
            known = cached.get((index, relpath))
            read = functools.partial(_check_one, root, relpath, st, real_roots, known)
            candidates.append(Candidate(relpath, path, read))
        others.extend(_other_files(root))
    return report_check(candidates, others, cache_note, progress=progress, out=out)


def report_check(
    candidates: Sequence[Candidate],
    others: Sequence[str],
    note: str,
    *,
    progress: bool | None = None,
    out: IO[str] | None = None,
) -> int:
    """Read the candidates, then report their problems, the duplicates among them (by the
    rule uploads refuse by) and the ``others`` (not distributions); 1 if anything. ``note``
    says what the hashes were compared with."""
    out = out or sys.stdout
    err = sys.stderr
    if progress is None:
        progress = err.isatty()
    problems: list[str] = []
    bar = Progress(len(candidates), err, progress)
    seen: dict[tuple[object, ...], str] = {}
    seen_names: dict[str, str] = {}
    started = time.monotonic()
    for candidate in candidates:
        bar.step(candidate.relpath)
        f = candidate.read(problems)
        if f is None:
            continue
        path = candidate.path
        key = file_key(f.filename) or ("?", f.filename)
        lower = f.filename.lower()
        if lower in seen_names:
            problems.append(f"duplicate {path}: same filename as {seen_names[lower]}")
        elif key in seen:
            problems.append(
                f"duplicate {path}: the same distribution as {seen[key]} once names are "
                "normalized (an installer may take either)"
            )
        seen.setdefault(key, path)
        seen_names.setdefault(lower, path)
    bar.close()
    for path in others:
        problems.append(f"cannot attribute {path}: not a distribution file (ignored by the index)")
    for line in problems:
        print(_shown(line), file=out)
    elapsed = time.monotonic() - started
    print(
        f"checked {len(candidates)} files in {elapsed:.1f}s ({note}): {len(problems)} problem(s)",
        file=err,
    )
    return 1 if problems else 0


def _cache_for_check(
    roots: Sequence[str], cache_dir: str | None
) -> tuple[dict[tuple[int, str], tuple[tuple[int, int], str]], str]:
    """The index cache's hashes, to compare with, and a note saying what was compared."""
    if not cache_dir:
        return {}, "no index cache to compare with"
    from .cache import DescriptionCache, check_location

    path = DescriptionCache.path_for(cache_dir, roots)
    if not os.path.lexists(path):
        return {}, "no index cache to compare with"
    try:
        check_location(cache_dir, path)  # never a FIFO or a link where SQLite opens
        cached = _cached_hashes(path)
    except Exception as exc:  # a damaged or foreign cache is reported, not fatal
        return {}, f"the index cache {path} cannot be read ({exc})"
    return cached, f"compared with the index cache {path} ({len(cached)} entries)"


def _check_one(
    root: str,
    relpath: str,
    st: FileStat,
    real_roots: list[str],
    cached: tuple[tuple[int, int], str] | None,
    problems: list[str],
) -> DistFile | None:
    """One file described as the index would (None, with the problem noted, if it cannot),
    and compared with the index cache's entry for it."""
    path = os.path.join(root, *relpath.split("/"))
    shown = _shown(path)
    # The index's own rules (indexer.Indexer._checked_path): what it skips is reported.
    if not confined(path, real_roots):
        problems.append(f"skipped by the index {shown}: a link that leaves the directory")
        return None
    if not _is_utf8(path):
        problems.append(f"skipped by the index {shown}: the name is not UTF-8")
        return None
    f = read_for_check(path, problems, lambda: describe(root, relpath, st))
    if f is not None and cached is not None:
        stamp, sha256 = cached
        if stamp[:2] == (st.st_size, st.st_mtime_ns) and sha256 != f.sha256:
            problems.append(
                f"hash mismatch {path}: the cache lists sha256 {sha256} for this size and "
                f"mtime, the file has {f.sha256} (changed in place, or damaged)"
            )
    return f


def read_for_check(path: str, problems: list[str], read: Callable[[], DistFile]) -> DistFile | None:
    """``read()``, or None with why it failed noted: one odd file must not end the check."""
    try:
        return read()
    except InvalidDistFilename as exc:
        problems.append(f"cannot attribute {path}: {exc}")
    except OSError as exc:
        problems.append(f"cannot read {path}: {exc.strerror or exc}")
    except Exception as exc:
        problems.append(f"cannot read {path}: {exc!r}")
    return None


def _shown(path: str) -> str:
    """A path as printable text, whatever bytes its name has."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _cached_hashes(path: str) -> dict[tuple[int, str], tuple[tuple[int, int], str]]:
    """(root index, relpath) -> ((size, mtime_ns), sha256) of an index cache, read-only: a
    check must never change a cache that a running server (maybe another version) uses."""
    import sqlite3
    from urllib.parse import quote

    db = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT root, relpath, size, mtime_ns, sha256 FROM files")
        return {(r[0], r[1]): ((r[2], r[3]), r[4]) for r in rows}
    finally:
        db.close()


def _other_files(root: str) -> list[str]:
    """Visible files that are neither distributions nor their sidecars."""
    found = []
    for directory, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(directory, root)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if is_hidden(rel) or dist_extension(name) is not None:
                continue
            if any(name.endswith(ext) and dist_extension(name[: -len(ext)]) for ext in SIDECARS):
                continue
            found.append(os.path.join(directory, name))
    return sorted(found)
