"""What the index records beside the files: hosted names, yanked releases, who uploaded what.

They live in the package directory (``.pkgserver/`` in each root): they belong to the files and
must travel with them (backups, volumes), unlike the index cache.

- ``.pkgserver/hosted-projects``: a normalized project name per line (see pkgserver.hosted).
- ``.pkgserver/yanked.json``: ``{"yanked": {project: {version: reason}}}`` (PEP 592; the reason
  may be empty). Written whole, atomically, by ``pkgserver yank`` / ``unyank``; the server
  reads every root's file and re-reads it within a second of a change.
- ``.pkgserver/project-status.json``: ``{"project-status": {project: {"status": ..., "reason":
  ...}}}`` (PEP 792: archived, quarantined or deprecated; an active project has no entry).
  Written whole by ``pkgserver status``, read and re-read as the yanks are.
- ``.pkgserver/uploads.jsonl``: one JSON object per upload (``file``, ``sha256``, ``user``,
  ``time``), appended by the server with one ``write`` per line. An entry counts only while the
  file still has the recorded sha256: a file replaced by other means has no known uploader.
- ``.pkgserver/upload-times.jsonl``: when each file was published or first seen, under its
  name with its bytes (see :class:`UploadTimes`): a JSON array per line, appended a batch at a
  time, rewritten whole when it holds many lines of files that are gone.

Anyone who can copy files into the package directory can also put things where these records
are expected: a FIFO, a link to ``/dev/zero`` or to another file, a linked or foreign folder.
So every record is reached one way, through :class:`RecordDir`, and anything odd is refused with
one log line while the server goes on serving.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import logging
import os
import random
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import IO, TYPE_CHECKING, NamedTuple

from packaging.utils import canonicalize_name

from .catalog import ACTIVE, STATUSES, ProjectStatus
from .fsutil import ChangeWatch

if TYPE_CHECKING:
    from .storage import Records

log = logging.getLogger(__name__)

__all__ = [
    "HOSTED_FILE",
    "STATE_DIR",
    "STATUS_FILE",
    "UPLOADS_FILE",
    "UPLOAD_TIMES_FILE",
    "YANKED_FILE",
    "RecordDir",
    "Statuses",
    "UnsafeRecord",
    "Upload",
    "UploadLog",
    "UploadTimes",
    "Yanks",
    "load_statuses",
    "load_yanks",
    "merged_statuses",
    "merged_yanks",
    "set_status_in",
    "set_yank",
    "set_yank_in",
]

STATE_DIR = ".pkgserver"
HOSTED_FILE = "hosted-projects"
YANKED_FILE = "yanked.json"
STATUS_FILE = "project-status.json"
UPLOADS_FILE = "uploads.jsonl"
UPLOAD_TIMES_FILE = "upload-times.jsonl"
LOCK_FILE = "lock"
MAX_REASON = 500  # characters: a line of text, not a document
MAX_RECORD_BYTES = 16 * 1024 * 1024  # a record larger than this is not read (nor trusted)
_MAX_WARNINGS = 100

YankMap = Mapping[str, Mapping[str, str]]


class UnsafeRecord(OSError):
    """A record folder or file that is not what it must be (a link, a FIFO, a foreign folder,
    too large): refused, never read or written through."""


class RecordDir:
    """``<root>/.pkgserver``, and the record files in it, reached safely.

    - The folder is opened once per operation, never through a symbolic link, and must be a real
      directory owned by this process's user, by the package directory's owner or by root, and
      not writable by everyone. Files are then opened relative to that descriptor: what was
      checked is what is used, even if the folder is renamed or swapped meanwhile.
    - Files: never through a link (O_NOFOLLOW), never blocking (O_NONBLOCK: a FIFO), regular
      files only; a file written in place (appended to) must have no other hard link; reads
      are bounded (``MAX_RECORD_BYTES``).
    - Whole files are replaced atomically (a temp file in the folder, renamed over the name).
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.path = os.path.join(root, STATE_DIR)
        self._warned: set[str] = set()
        self._warn_lock = threading.Lock()

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    # -- the folder ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _folder(self, create: bool = False) -> Iterator[int | None]:
        """The folder's descriptor, checked; None if it does not exist (and ``create`` is off)."""
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        rfd = os.open(self.root, flags)  # the package directory itself may be a link: given
        try:
            if create:
                try:
                    os.mkdir(STATE_DIR, 0o755, dir_fd=rfd)
                except FileExistsError:
                    pass
            try:
                dfd = os.open(STATE_DIR, flags | os.O_NOFOLLOW, dir_fd=rfd)
            except FileNotFoundError:
                if create:
                    raise
                dfd = None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafeRecord(
                        errno.ELOOP,
                        "not a real folder (a symbolic link or a file); records are kept only "
                        "in a real folder",
                        self.path,
                    ) from None
                raise
            if dfd is not None:
                try:
                    self._check_folder(os.fstat(dfd), os.fstat(rfd))
                except BaseException:
                    os.close(dfd)
                    raise
        finally:
            os.close(rfd)
        try:
            yield dfd
        finally:
            if dfd is not None:
                os.close(dfd)

    def _check_folder(self, st: os.stat_result, root_st: os.stat_result) -> None:
        euid = os.geteuid()
        if st.st_uid not in (euid, root_st.st_uid, 0):
            raise UnsafeRecord(
                errno.EPERM,
                f"owned by uid {st.st_uid}, which is neither this process's user ({euid}), "
                f"the package directory's owner ({root_st.st_uid}) nor root",
                self.path,
            )
        if st.st_mode & stat.S_IWOTH:
            raise UnsafeRecord(errno.EPERM, "writable by everyone", self.path)

    def _open(self, dfd: int, name: str, flags: int) -> int:
        writing = bool(flags & (os.O_WRONLY | os.O_RDWR))
        try:
            fd = os.open(
                name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644, dir_fd=dfd
            )
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeRecord(errno.ELOOP, "a symbolic link", self.file(name)) from None
            if exc.errno == errno.ENXIO:  # a FIFO without a reader, opened for writing
                raise UnsafeRecord(errno.ENXIO, "not a regular file", self.file(name)) from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafeRecord(errno.EINVAL, "not a regular file", self.file(name))
            if writing and st.st_nlink != 1:
                # Appending to a file hard-linked from elsewhere would write into that file.
                raise UnsafeRecord(errno.EPERM, "a file with other hard links", self.file(name))
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- records ----------------------------------------------------------------------------------
    def stamp(self, name: str) -> object:
        """What changes when the record is edited or replaced, or its folder swapped: compare
        two stamps to know whether to read it again."""
        try:
            with self._folder() as dfd:
                if dfd is None:
                    return None
                folder = os.fstat(dfd)
                try:
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                except FileNotFoundError:
                    return (folder.st_dev, folder.st_ino)
                return (
                    folder.st_dev,
                    folder.st_ino,
                    st.st_ino,
                    st.st_size,
                    st.st_mtime_ns,
                    st.st_mode,
                    st.st_nlink,
                )
        except OSError as exc:
            return ("unreachable", exc.errno, str(exc))

    def read(self, name: str, limit: int = MAX_RECORD_BYTES) -> bytes | None:
        """The record's bytes; None if it does not exist. Raises OSError (UnsafeRecord)."""
        fd = self.open_for_reading(name)
        if fd is None:
            return None
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise UnsafeRecord(errno.EFBIG, f"larger than {limit} bytes", self.file(name))
        return data

    def open_for_reading(self, name: str) -> int | None:
        """A descriptor of the record, checked; None if it does not exist."""
        with self._folder() as dfd:
            if dfd is None:
                return None
            try:
                return self._open(dfd, name, os.O_RDONLY)
            except FileNotFoundError:
                return None

    def append(self, name: str, data: bytes) -> None:
        """Append with one ``write`` (lines of concurrent writers never interleave)."""
        with self._folder(create=True) as dfd:
            assert dfd is not None
            fd = self._open(dfd, name, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def replace(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """Replace the record whole: a reader sees the old bytes or the new ones."""
        with self._folder(create=True) as dfd:
            assert dfd is not None
            tmp = f".{name}-{secrets.token_hex(6)}"
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                mode,
                dir_fd=dfd,
            )
            try:
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fchmod(fd, mode)  # whatever the umask
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dfd)
                raise
            os.fsync(dfd)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialize read-modify-write of this folder's records between processes."""
        with self._folder(create=True) as dfd:
            assert dfd is not None
            fd = self._open(dfd, LOCK_FILE, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def warn_once(self, consequence: str, exc: BaseException) -> None:
        """One log line per problem with a record (they are polled every second, and read and
        written by several parts): "<path>: <what is wrong>; <what it means>"."""
        if isinstance(exc, OSError) and exc.filename:
            problem = f"{exc.filename}: {exc.strerror or exc}"
        else:
            problem = str(exc)
        with self._warn_lock:
            if problem in self._warned:
                return
            if len(self._warned) >= _MAX_WARNINGS:
                self._warned.clear()
            self._warned.add(problem)
        log.warning("%s; %s", problem, consequence)

    def all_well(self, name: str) -> None:
        """The record read fine: a problem with it that comes back is worth a line again."""
        if self._warned:
            prefix = self.file(name) + ":"
            with self._warn_lock:
                self._warned = {p for p in self._warned if not p.startswith(prefix)}


# -- yanks ---------------------------------------------------------------------------------------
def _yanks_in(records: Records) -> dict[str, dict[str, str]]:
    """The yanks recorded in one folder; a missing file has none, a damaged one is reported."""
    try:
        data = records.read(YANKED_FILE)
        if data is None:
            return {}
        doc = json.loads(data)
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: [[[[... nesting
        records.warn_once("its yanks are not shown", exc)
        return {}
    records.all_well(YANKED_FILE)
    out: dict[str, dict[str, str]] = {}
    table = doc.get("yanked") if isinstance(doc, dict) else None
    if not isinstance(table, dict):
        return out
    for name, versions in table.items():
        if not isinstance(name, str) or not isinstance(versions, dict):
            continue
        project = canonicalize_name(name)  # a hand-edited record may spell it otherwise
        for version, reason in versions.items():
            if isinstance(version, str) and isinstance(reason, str):
                out.setdefault(project, {})[version] = reason[:MAX_REASON]
    return out


def merged_yanks(folders: Sequence[Records]) -> dict[str, dict[str, str]]:
    """Every folder's yanks together (the first folder's reason wins when two differ)."""
    merged: dict[str, dict[str, str]] = {}
    for records in folders:
        for project, versions in _yanks_in(records).items():
            target = merged.setdefault(project, {})
            for version, reason in versions.items():
                target.setdefault(version, reason)
    return merged


def load_yanks(roots: Sequence[str]) -> dict[str, dict[str, str]]:
    return merged_yanks([RecordDir(r) for r in roots])


def set_yank(roots: Sequence[str], project: str, version: str, reason: str | None) -> bool:
    """``set_yank_in`` the records of package directories."""
    return set_yank_in([RecordDir(r) for r in roots], project, version, reason)


class RecordChanged(OSError):
    """A record was rewritten by another writer between this one's read and write, and
    nothing was written (an object store's conditional write refused it): read it again.
    Directories never raise it (their lock is a file lock, held across processes)."""

    def __init__(self, name: str) -> None:
        super().__init__(errno.EAGAIN, f"{name} was changed by another writer meanwhile")


REWRITE_ATTEMPTS = 50  # reads and rewrites of one record, when another writer keeps winning


def rewriting(change: Callable[[], bool]) -> bool:
    """``change()`` (a read and rewrite of a record under its lock), again after a jittered
    pause each time another writer rewrote the record in between (RecordChanged)."""
    for attempt in range(REWRITE_ATTEMPTS):
        try:
            return change()
        except RecordChanged:
            if attempt == REWRITE_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0, 0.01 * (attempt + 1)))  # noqa: S311 (jitter)
    raise AssertionError("unreachable")


def set_yank_in(folders: Sequence[Records], project: str, version: str, reason: str | None) -> bool:
    """Yank (``reason`` a string, maybe empty) or unyank (None) ``project`` ``version``.

    A yank is written to the first folder; an unyank removes the entry from every folder.
    Returns whether anything changed. Raises OSError when a record cannot be written.
    """
    changed = False
    targets = folders[:1] if reason is not None else folders
    for records in targets:
        if reason is None and records.read(YANKED_FILE) is None:
            continue
        changed |= rewriting(functools.partial(_set_yank, records, project, version, reason))
    return changed


def _set_yank(records: Records, project: str, version: str, reason: str | None) -> bool:
    with records.locked():
        table = _yanks_in(records)
        versions = table.setdefault(project, {})
        if reason is None:
            if versions.pop(version, None) is None:
                return False
            if not versions:
                del table[project]
        else:
            if versions.get(version) == reason:
                return False
            versions[version] = reason
        doc = {"yanked": {p: dict(sorted(v.items())) for p, v in sorted(table.items())}}
        body = json.dumps(doc, indent=1, ensure_ascii=False).encode() + b"\n"
        records.replace(YANKED_FILE, body)
        return True


class Yanks:
    """The yanks of a set of roots (or of the records given, an object store's), for a running
    server to poll."""

    def __init__(self, roots: Sequence[str], *, folders: Sequence[Records] | None = None) -> None:
        self.folders: list[Records] = (
            list(folders) if folders is not None else [RecordDir(r) for r in roots]
        )
        # Polled by the indexer's loop, which wakes at least once a second.
        self._watch = ChangeWatch(lambda: [f.stamp(YANKED_FILE) for f in self.folders], every=0)

    def poll(self) -> dict[str, dict[str, str]] | None:
        """The current yanks if the records changed since the last poll, else None."""
        if not self._watch.changed():
            return None
        return merged_yanks(self.folders)


# -- project status markers (PEP 792) ------------------------------------------------------------
def _statuses_in(records: Records) -> dict[str, ProjectStatus]:
    """The statuses recorded in one folder; a missing file has none, a damaged one is reported
    (and its entries that are not a known status are skipped)."""
    try:
        data = records.read(STATUS_FILE)
        if data is None:
            return {}
        doc = json.loads(data)
    except (OSError, ValueError, RecursionError) as exc:
        records.warn_once("its project statuses are not applied", exc)
        return {}
    records.all_well(STATUS_FILE)
    out: dict[str, ProjectStatus] = {}
    table = doc.get("project-status") if isinstance(doc, dict) else None
    if not isinstance(table, dict):
        return out
    for name, entry in table.items():
        if not isinstance(name, str) or not isinstance(entry, dict):
            continue
        status, reason = entry.get("status"), entry.get("reason", "")
        if status not in STATUSES or status == ACTIVE:
            continue
        reason = reason if isinstance(reason, str) else ""
        # A hand-edited record may spell the name otherwise, or hold a reason of many lines.
        reason = "".join(c for c in " ".join(reason.split()) if c.isprintable())[:MAX_REASON]
        out[canonicalize_name(name)] = ProjectStatus(status, reason)
    return out


def merged_statuses(folders: Sequence[Records]) -> dict[str, ProjectStatus]:
    """Every folder's statuses together (the first folder's wins for a project in several)."""
    merged: dict[str, ProjectStatus] = {}
    for records in folders:
        for project, status in _statuses_in(records).items():
            merged.setdefault(project, status)
    return merged


def load_statuses(roots: Sequence[str]) -> dict[str, ProjectStatus]:
    return merged_statuses([RecordDir(r) for r in roots])


def set_status_in(folders: Sequence[Records], project: str, status: ProjectStatus) -> bool:
    """Record ``project``'s status: written to the first folder and removed from the others
    (where it would only mislead); ``active`` removes the entry from every folder. Returns
    whether anything changed. Raises OSError when a record cannot be written."""
    changed = False
    for index, records in enumerate(folders):
        entry = status if index == 0 and status.status != ACTIVE else None
        if entry is None and records.read(STATUS_FILE) is None:
            continue
        changed |= rewriting(functools.partial(_set_status, records, project, entry))
    return changed


def _set_status(records: Records, project: str, status: ProjectStatus | None) -> bool:
    with records.locked():
        table = _statuses_in(records)
        if table.get(project) == status:
            return False
        if status is None:
            del table[project]
        else:
            table[project] = status
        doc = {
            "project-status": {
                p: {"status": s.status, **({"reason": s.reason} if s.reason else {})}
                for p, s in sorted(table.items())
            }
        }
        body = json.dumps(doc, indent=1, ensure_ascii=False).encode() + b"\n"
        records.replace(STATUS_FILE, body)
        return True


class Statuses:
    """The project statuses of a set of roots (or of the records given, an object store's),
    for a running server to poll, as :class:`Yanks`."""

    def __init__(self, roots: Sequence[str], *, folders: Sequence[Records] | None = None) -> None:
        self.folders: list[Records] = (
            list(folders) if folders is not None else [RecordDir(r) for r in roots]
        )
        self._watch = ChangeWatch(lambda: [f.stamp(STATUS_FILE) for f in self.folders], every=0)

    def poll(self) -> dict[str, ProjectStatus] | None:
        """The current statuses if the records changed since the last poll, else None."""
        if not self._watch.changed():
            return None
        return merged_statuses(self.folders)


# -- who uploaded what --------------------------------------------------------------------------
class Upload(NamedTuple):
    """An upload as the log records it (a line of ``uploads.jsonl``)."""

    file: str  # relpath
    sha256: str
    user: str  # "" when not known (anonymous)
    time: float  # seconds since 1970

    def line(self) -> bytes:
        doc = {"file": self.file, "sha256": self.sha256, "user": self.user or None}
        return json.dumps({**doc, "time": self.time}, ensure_ascii=False).encode() + b"\n"

    @classmethod
    def parse(cls, raw: bytes) -> Upload | None:
        """None for a line cut short by a crash, or edited by hand."""
        try:
            item = json.loads(raw)
        except (ValueError, RecursionError):
            return None
        if not isinstance(item, dict):
            return None
        name, digest, user, when = (item.get(k) for k in ("file", "sha256", "user", "time"))
        if not isinstance(name, str) or not isinstance(digest, str):
            return None
        when = when if isinstance(when, (int, float)) and not isinstance(when, bool) else 0
        return cls(name, digest, user if isinstance(user, str) else "", float(when))


class UploadLog:
    """Who uploaded which file: appended to by the server, read for the web pages."""

    def __init__(self, roots: Sequence[str]) -> None:
        self.folders = [RecordDir(r) for r in roots]
        self._watch = ChangeWatch(lambda: [f.stamp(UPLOADS_FILE) for f in self.folders])
        self._lock = threading.Lock()
        # relpath -> (sha256, user, time in seconds since 1970: 0 when not known)
        self._entries: dict[str, tuple[str, str, float]] = {}
        self._origin: dict[str, int] = {}  # relpath -> index of the root whose log named it
        self._read_to: dict[int, tuple[int, int]] = {}  # root index -> (inode, offset read)
        self._reload_lock = threading.Lock()

    def record(self, relpath: str, sha256: str, user: str | None) -> None:
        """Append an upload to the first root's log. Never raises: the upload is published
        already, and only its attribution is lost when the log cannot be written."""
        when = round(time.time(), 3)
        line = Upload(relpath, sha256, user or "", when).line()
        records = self.folders[0]
        try:
            records.append(UPLOADS_FILE, line)
        except OSError as exc:
            records.warn_once("uploaders are not recorded", exc)
        with self._lock:
            self._entries[relpath] = (sha256, user or "", when)

    def uploader(self, relpath: str, sha256: str) -> str | None:
        """The user who uploaded the file with these bytes, if known."""
        found = self._entry(relpath)
        if found is None or found[0] != sha256 or not found[1]:
            return None
        return found[1]

    def published(self, relpath: str, sha256: str) -> int | None:
        """When the file with these bytes was uploaded (ns since 1970), if the log says: the
        upload time of a file uploaded before upload times were recorded."""
        found = self._entry(relpath)
        if found is None or found[0] != sha256 or not found[2] > 0:
            return None
        return round(found[2] * 1_000_000) * 1000

    def _entry(self, relpath: str) -> tuple[str, str, float] | None:
        if self._watch.changed():
            with self._reload_lock:
                self._reload()
        return self._entries.get(relpath)

    def _reload(self) -> None:
        """Read what was appended since the last read (the whole file if it was replaced or
        cut); of a file larger than MAX_RECORD_BYTES, the newest part."""
        entries = dict(self._entries)
        for index in reversed(range(len(self.folders))):  # the first root's entries win
            records = self.folders[index]
            try:
                fd = records.open_for_reading(UPLOADS_FILE)
            except OSError as exc:
                records.warn_once("uploaders recorded there are not shown", exc)
                continue
            if fd is None:
                continue
            with os.fdopen(fd, "rb") as fh:
                st = os.fstat(fh.fileno())
                inode, offset = self._read_to.get(index, (None, 0))
                if inode != st.st_ino or st.st_size < offset:
                    offset = 0  # replaced or truncated: from the start
                    entries = {k: v for k, v in entries.items() if self._origin.get(k) != index}
                start = max(offset, st.st_size - MAX_RECORD_BYTES)
                fh.seek(start)
                data = fh.read(st.st_size - start)
            if start > offset:
                data = data.partition(b"\n")[2]  # began mid-line
            complete, _, _rest = data.rpartition(b"\n")  # a line being written waits
            self._read_to[index] = (st.st_ino, start + len(complete) + (1 if complete else 0))
            for raw in complete.splitlines():
                item = Upload.parse(raw)
                if item is not None:
                    entries[item.file] = (item.sha256, item.user, item.time)
                    self._origin[item.file] = index
        with self._lock:
            self._entries = entries


# -- when each file arrived ---------------------------------------------------------------------
TIMES_LIMIT = 512 * 1024 * 1024  # bytes of upload times read at most (about 6 million files)
_BLOCK = 1024 * 1024  # bytes of the record read at once
SHA_PREFIX = 16  # hex digits of the sha256 kept: enough to tell other bytes from the same ones
MICROS = (1 << 64) - 1

# What the record says of a file, packed in one int (at 100,000 files a tuple of a string and
# an int per file costs 10 MB more): the sha256's first 64 bits above the microseconds.
TimeEntry = int


def time_entry(sha256: str, ns: int) -> TimeEntry:
    return int(sha256[:SHA_PREFIX], 16) << 64 | ns // 1000


def entry_time(entry: TimeEntry, sha256: str) -> int | None:
    """The time (ns) recorded in ``entry`` if it is of these bytes, else None."""
    if entry >> 64 != int(sha256[:SHA_PREFIX], 16):
        return None
    return (entry & MICROS) * 1000


def _parse_times(fh: IO[bytes], size: int) -> tuple[dict[str, TimeEntry], int, bool]:
    """The entries of a record's first ``size`` bytes, how many lines they hold, and whether
    it ends with part of a line.

    Read a megabyte at a time (neither the whole file nor a list of all its lines is ever in
    memory: tens of MB at 100,000 files). Lines as time_line writes them are taken apart with
    string methods, which leave nothing for the garbage collector (a list per line, as
    json.loads makes, cost a start of 100,000 files more in collections than in parsing);
    others go to json (:func:`_parsed`). A last line without its newline (cut by a crash) is
    left out.
    """
    out: dict[str, TimeEntry] = {}
    lines = 0
    left = size
    rest = b""
    while left > 0:
        block = fh.read(min(left, _BLOCK))
        if not block:
            break
        left -= len(block)
        block = rest + block
        cut = block.rfind(b"\n") + 1
        rest = block[cut:]
        for line in block[:cut].decode("utf-8", "replace").split("\n"):
            if not line:
                continue
            lines += 1
            if line[:2] == '["' and line[-1:] == "]":
                names, _, seconds = line[2:-1].rpartition('",')
                relpath, _, sha = names.rpartition('","')
                whole, _, fraction = seconds.partition(".")
                if (
                    len(sha) == SHA_PREFIX
                    and len(fraction) == 6
                    and whole.isdigit()
                    and relpath
                    and '"' not in relpath
                    and "\\" not in relpath
                ):
                    try:
                        out[relpath] = int(sha, 16) << 64 | int(whole + fraction)
                        continue
                    except ValueError:
                        pass
            found = _parsed(line)
            if found is not None:
                out[found[0]] = found[1]
    return out, lines, bool(rest.strip())


def _parsed(line: str) -> tuple[str, TimeEntry] | None:
    """A line written otherwise than time_line does (by hand: a whole sha256, whole seconds,
    spaces), or None if it is no line of the record."""
    try:
        relpath, sha, seconds = json.loads(line)
        if (
            type(relpath) is str
            and type(sha) is str
            and len(sha) >= SHA_PREFIX
            and type(seconds) in (int, float)
            and 0 < seconds < 1e11
        ):
            return relpath, int(sha[:SHA_PREFIX], 16) << 64 | round(seconds * 1e6)
    except (ValueError, TypeError, RecursionError):
        pass
    return None


def entry_parts(entry: TimeEntry) -> tuple[str, int]:
    """(the sha256's first 16 hex digits, the time in ns) of an entry."""
    return f"{entry >> 64:016x}", (entry & MICROS) * 1000


def time_line(relpath: str, sha256: str, ns: int) -> bytes:
    """A line of ``upload-times.jsonl``: ``["relpath","<16 hex of sha256>",SECONDS]``, the
    seconds to the microsecond, written exactly (no float on the way)."""
    us = ns // 1000
    if relpath.isprintable() and '"' not in relpath and "\\" not in relpath:
        name = f'"{relpath}"'  # what json.dumps gives, at a fifth of its cost
    else:
        name = json.dumps(relpath, ensure_ascii=False)
    return f'[{name},"{sha256[:SHA_PREFIX]}",{us // 1_000_000}.{us % 1_000_000:06d}]\n'.encode()


class UploadTimes:
    """When each file of one package directory was published or first seen there, under its
    name with those bytes: ``.pkgserver/upload-times.jsonl``, beside the files, so that it
    survives restarts and the loss of the index cache, and travels with the files.

    A line per (file, bytes): ``["dir/demo-1.0-py3-none-any.whl","0123456789abcdef",
    1764979200.123456]``: the relpath, the first 16 hex digits of the file's sha256, and the
    time in seconds since 1970 (UTC). A later line for a relpath replaces an earlier one. An
    operator may write lines (to seed the times of files copied in before; a whole sha256 and
    whole seconds do too); a line that does not parse is skipped. Lines are appended a batch at
    a time (one ``write``), and the file is rewritten whole with only the files still there
    (:meth:`rewrite`) when most of its lines are of files that are gone or were replaced.
    """

    def __init__(self, records: RecordDir) -> None:
        # A package directory's, reached as the upload log reaches its own: read for its size
        # (Records.read would allocate its whole limit first) and appended to.
        self.records = records
        self.lines = 0  # lines in the record, as far as this process knows (read and appended)
        self._cut = False  # it ends with part of a line (a crash): the next write starts anew

    def load(self) -> dict[str, TimeEntry]:
        """relpath -> entry (see :func:`entry_time`) of every line; empty when there is no
        record, or it cannot be read (said once in the log)."""
        try:
            fd = self.records.open_for_reading(UPLOAD_TIMES_FILE)
            if fd is None:
                return {}
            with os.fdopen(fd, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size > TIMES_LIMIT:
                    raise UnsafeRecord(
                        errno.EFBIG,
                        f"larger than {TIMES_LIMIT} bytes",
                        self.records.file(UPLOAD_TIMES_FILE),
                    )
                # What was there when opened (an append meanwhile is this process's own).
                out, self.lines, self._cut = _parse_times(fh, size)
        except OSError as exc:
            self.records.warn_once("upload times recorded there are not used", exc)
            return {}
        self.records.all_well(UPLOAD_TIMES_FILE)
        return out

    def add(self, data: bytes | bytearray, lines: int) -> bool:
        """Append ``lines`` lines (made by :func:`time_line`) with one write; whether they were
        recorded (a failure is said once in the log: the times are then served until the next
        start, which gives the files not recorded new ones)."""
        if not data:
            return True
        if self._cut:
            data = b"\n" + data  # not glued to the end of a line cut short
        try:
            self.records.append(UPLOAD_TIMES_FILE, bytes(data))
        except OSError as exc:
            self.records.warn_once(
                "upload times are not recorded: files not recorded get a new one at each start "
                "(--upload-time mtime serves the files' mtimes instead)",
                exc,
            )
            return False
        self.lines += lines
        self._cut = False
        return True

    def rewrite(self, entries: Iterable[tuple[str, str, int]]) -> bool:
        """Replace the record whole with ``entries`` (relpath, sha256, ns): the files still
        there."""
        rows = sorted(entries)
        try:
            self.records.replace(UPLOAD_TIMES_FILE, b"".join(time_line(*e) for e in rows))
        except OSError as exc:
            self.records.warn_once("upload times could not be compacted", exc)
            return False
        self.lines = len(rows)
        self._cut = False
        return True
