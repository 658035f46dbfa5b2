"""File operations shared by the indexer, the downloads, the records and the CLI: each rule is
written here once.

- :func:`open_regular`: how every distribution file (or sidecar) is opened for reading: never
  blocking on a FIFO put in its place, only a regular file.
- :func:`confined`: whether a path stays inside the package directories once links are
  resolved.
- :class:`ChangeWatch`: "re-read this file within a second of a change", for the htpasswd file
  and the records beside the packages.
- :func:`write_atomically` and :func:`file_stamp` for files named by the admin (htpasswd).
"""

from __future__ import annotations

import errno
import math
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "ChangeWatch",
    "NotRegularFile",
    "confined",
    "file_stamp",
    "open_regular",
    "write_atomically",
]

Stamp = tuple[int, int, int]


class NotRegularFile(OSError):
    """A FIFO, a device, a socket or a folder where a regular file was expected."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.EINVAL, "not a regular file", path)


def open_regular(path: str, *, dir_fd: int | None = None, follow: bool = True) -> int:
    """A descriptor of ``path`` for reading, which must be a regular file.

    O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever (it has
    no effect on a regular file). ``follow=False`` refuses a symbolic link (ELOOP).
    Raises OSError (NotRegularFile for anything but a regular file).
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def confined(path: str, real_roots: Sequence[str], *, walked: bool = False) -> bool:
    """Whether ``path``, with every link resolved, lies inside one of ``real_roots`` (real
    paths). The one rule for the files the index lists, the signatures it serves and the files
    the commands touch: a link that leads out of the package directories is never followed.

    ``walked``: the path was found by a walk that does not enter linked folders
    (``iter_dist_files``), so only its last part can be a link, and a plain file needs no
    resolving (at 100,000 files, a realpath each is a noticeable part of a scan)."""
    if walked and not os.path.islink(path):
        return True
    real = os.path.realpath(path)
    return any(real.startswith(r.rstrip(os.sep) + os.sep) for r in real_roots)


def file_stamp(path: str) -> Stamp | None:
    """(inode, size, mtime in ns) of ``path``, or None if it cannot be stat'ed: a change of
    any of them means the file was edited or replaced, and is worth reading again."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


_UNSET: Any = object()


class ChangeWatch:
    """Whether some files changed, for state re-read "within a second of a change" (the
    htpasswd file, the hosted names, the yanks, the upload log).

    ``stamps()`` describes the files (e.g. their inode, size and mtime); it is called at most
    once every ``every`` seconds, so a request that asks costs one clock read. Take the stamps
    before reading the files (``mark``): a change made during the read is then seen next time.
    """

    def __init__(self, stamps: Callable[[], object], every: float = 1.0) -> None:
        self._stamps = stamps
        self.every = every
        self.last: object = _UNSET  # the stamps of the state last read
        self._checked = -math.inf
        self._lock = threading.Lock()

    def check(self) -> bool | None:
        """None when the last look was less than ``every`` seconds ago; else whether the
        stamps differ from those of the state last read (and they become those)."""
        now = time.monotonic()
        if now - self._checked < self.every:
            return None
        with self._lock:
            if now - self._checked < self.every:
                return None
            self._checked = now
            stamps = self._stamps()
            if stamps == self.last:
                return False
            self.last = stamps
            return True

    def changed(self) -> bool:
        return bool(self.check())

    def mark(self) -> None:
        """The state is about to be read now: what it is read from is the current stamps."""
        with self._lock:
            self.last = self._stamps()
            self._checked = time.monotonic()


def write_atomically(path: str, content: bytes, mode: int, *, replace: bool = True) -> None:
    """Write ``path`` whole or not at all: a flushed temp file beside it, then renamed over it
    (``replace``) or linked to its name, which fails with FileExistsError rather than replace a
    file created meanwhile. The temp file never stays behind."""
    directory, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if replace:
            os.replace(tmp, path)
            return
        os.link(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _unlink_quietly(tmp)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
