"""What the index records beside the files: yanked releases and who uploaded what.

Both live in the package directory (``.pkgserver/`` in each root), like the hosted-names record:
they belong to the files and must travel with them (backups, volumes), unlike the index cache.

- ``.pkgserver/yanked.json``: ``{"yanked": {project: {version: reason}}}`` (PEP 592; the reason
  may be empty). Written whole, atomically, by ``pkgserver yank`` / ``unyank``; the server
  reads every root's file and re-reads it within a second of a change.
- ``.pkgserver/uploads.jsonl``: one JSON object per upload (``file``, ``sha256``, ``user``,
  ``time``), appended by the server with one ``write`` per line. An entry counts only while the
  file still has the recorded sha256: a file replaced by other means has no known uploader.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator, Mapping, Sequence

from packaging.utils import canonicalize_name

from .fsutil import Stamp, file_stamp, write_atomically

log = logging.getLogger(__name__)

__all__ = ["UPLOADS_FILE", "YANKED_FILE", "UploadLog", "Yanks", "load_yanks", "set_yank"]

STATE_DIR = ".pkgserver"
YANKED_FILE = os.path.join(STATE_DIR, "yanked.json")
UPLOADS_FILE = os.path.join(STATE_DIR, "uploads.jsonl")
MAX_REASON = 500  # characters: a line of text, not a document
MAX_RECORD_BYTES = 16 * 1024 * 1024  # a record larger than this is not read (nor trusted)

YankMap = Mapping[str, Mapping[str, str]]


def _open_record(path: str, flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """A record file's descriptor: never through a symbolic link (of the file or of its
    ``.pkgserver`` folder), never blocking on a FIFO, only a regular file."""
    directory, name = os.path.split(path)
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode, dir_fd=dfd)
    finally:
        os.close(dfd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return fd


def _read_json(path: str) -> object:
    with os.fdopen(_open_record(path), "rb") as fh:
        data = fh.read(MAX_RECORD_BYTES + 1)
    if len(data) > MAX_RECORD_BYTES:
        raise ValueError("too large")
    return json.loads(data)


def _yanks_in(path: str) -> dict[str, dict[str, str]]:
    """The yanks recorded in one file; a missing file has none, a damaged one is reported."""
    try:
        doc = _read_json(path)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: [[[[... nesting
        log.warning("cannot read %s (%s): its yanks are not shown", path, exc)
        return {}
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


def load_yanks(roots: Sequence[str]) -> dict[str, dict[str, str]]:
    """Every root's yanks together (the first root's reason wins when two differ)."""
    merged: dict[str, dict[str, str]] = {}
    for root in roots:
        for project, versions in _yanks_in(os.path.join(root, YANKED_FILE)).items():
            target = merged.setdefault(project, {})
            for version, reason in versions.items():
                target.setdefault(version, reason)
    return merged


@contextlib.contextmanager
def _locked(root: str) -> Iterator[None]:
    """Serialize read-modify-write of a root's records between concurrent commands."""
    directory = os.path.join(root, STATE_DIR)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    if os.path.islink(directory):
        raise OSError(f"{directory} is a symbolic link; records are kept only in a real folder")
    fd = _open_record(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def set_yank(roots: Sequence[str], project: str, version: str, reason: str | None) -> bool:
    """Yank (``reason`` a string, maybe empty) or unyank (None) ``project`` ``version``.

    A yank is written to the first root; an unyank removes the entry from every root. Returns
    whether anything changed. Raises OSError when a record cannot be written.
    """
    changed = False
    targets = roots[:1] if reason is not None else roots
    for root in targets:
        path = os.path.join(root, YANKED_FILE)
        if reason is None and not os.path.exists(path):
            continue
        with _locked(root):
            table = _yanks_in(path)
            versions = table.setdefault(project, {})
            if reason is None:
                if versions.pop(version, None) is None:
                    continue
                if not versions:
                    del table[project]
            else:
                if versions.get(version) == reason:
                    continue
                versions[version] = reason
            doc = {"yanked": {p: dict(sorted(v.items())) for p, v in sorted(table.items())}}
            body = json.dumps(doc, indent=1, ensure_ascii=False).encode() + b"\n"
            write_atomically(path, body, 0o644)
            changed = True
    return changed


class _Polled:
    """A set of files re-read when their stamps change, looked at no more than once a second."""

    every = 1.0

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)
        self._stamps: list[Stamp | None] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    def changed(self) -> bool:
        """Whether the files differ from when this was last true (rate-limited)."""
        now = time.monotonic()
        if self._stamps is not None and now - self._checked < self.every:
            return False
        with self._lock:
            self._checked = now
            stamps = [file_stamp(p) for p in self.paths]
            if stamps == self._stamps:
                return False
            self._stamps = stamps
            return True


class Yanks(_Polled):
    """The yanks of a set of roots, for a running server to poll."""

    every = 0.0  # polled by the indexer's loop, which wakes at least once a second

    def __init__(self, roots: Sequence[str]) -> None:
        super().__init__([os.path.join(r, YANKED_FILE) for r in roots])
        self.roots = list(roots)

    def poll(self) -> dict[str, dict[str, str]] | None:
        """The current yanks if the records changed since the last poll, else None."""
        if not self.changed():
            return None
        return load_yanks(self.roots)


class UploadLog(_Polled):
    """Who uploaded which file: appended to by the server, read for the web pages."""

    def __init__(self, roots: Sequence[str]) -> None:
        super().__init__([os.path.join(r, UPLOADS_FILE) for r in roots])
        self._entries: dict[str, tuple[str, str]] = {}  # relpath -> (sha256, user)
        self._origin: dict[str, int] = {}  # relpath -> index of the root whose log named it
        self._read_to: dict[int, tuple[int, int]] = {}  # root index -> (inode, offset read)
        self._reload_lock = threading.Lock()
        self._warned = False

    def record(self, relpath: str, sha256: str, user: str | None) -> None:
        """Append an upload to the first root's log. Never raises: the upload is published
        already, and only its attribution is lost when the log cannot be written."""
        line = json.dumps(
            {"file": relpath, "sha256": sha256, "user": user, "time": round(time.time(), 3)},
            ensure_ascii=False,
        )
        path = self.paths[0]
        try:
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            fd = _open_record(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, line.encode() + b"\n")  # one write: lines never interleave
            finally:
                os.close(fd)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot record uploaders in %s: %s", path, exc.strerror or exc)
        with self._lock:
            self._entries[relpath] = (sha256, user or "")

    def uploader(self, relpath: str, sha256: str) -> str | None:
        """The user who uploaded the file with these bytes, if known."""
        if self.changed():
            with self._reload_lock:
                self._reload()
        found = self._entries.get(relpath)
        if found is None or found[0] != sha256 or not found[1]:
            return None
        return found[1]

    def _reload(self) -> None:
        """Read what was appended since the last read (the whole file if it was replaced or
        cut); of a file larger than MAX_RECORD_BYTES, the newest part."""
        entries = dict(self._entries)
        for index in reversed(range(len(self.paths))):  # the first root's entries win
            path = self.paths[index]
            try:
                fd = _open_record(path)
            except OSError:
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
                try:
                    item = json.loads(raw)
                except (ValueError, RecursionError):
                    continue  # a line cut short by a crash, or edited by hand
                if not isinstance(item, dict):
                    continue
                name, digest, user = item.get("file"), item.get("sha256"), item.get("user")
                if isinstance(name, str) and isinstance(digest, str):
                    entries[name] = (digest, user if isinstance(user, str) else "")
                    self._origin[name] = index
        with self._lock:
            self._entries = entries
