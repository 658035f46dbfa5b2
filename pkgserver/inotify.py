"""A minimal recursive inotify reader (Linux), through ctypes.

Why not watchdog: it reports a file renamed into the tree from outside as "created", the same as
a file being opened for writing, and holds every event for half a second to pair moves. The
indexer needs the exact kernel signals: ``IN_CLOSE_WRITE`` (a writer finished), ``IN_MOVED_TO``
(a complete file was renamed in: rsync, atomic publishers) and ``IN_MODIFY`` (bytes are still
arriving: scp), without delay.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import struct
import threading
from collections.abc import Iterator
from typing import NamedTuple

__all__ = ["Event", "InotifyUnavailable", "Watcher"]

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000
IN_CLOEXEC = 0o2000000
IN_NONBLOCK = 0o4000

WATCH_MASK = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
)

_HEADER = struct.Struct("iIII")

# Event kinds handed to the indexer.
WRITING = "writing"  # bytes arrived (IN_MODIFY)
CREATED = "created"  # a new name appeared by open/link (IN_CREATE)
CLOSED = "closed"  # a writer closed the file (IN_CLOSE_WRITE)
TOUCHED = "touched"  # times or permissions changed (IN_ATTRIB): touch -d, rsync -t, chmod
MOVED_IN = "moved_in"  # a complete file was renamed in (IN_MOVED_TO)
GONE = "gone"  # deleted or renamed away
DIR_ADDED = "dir_added"  # a directory appeared: scan it
DIR_GONE = "dir_gone"  # a directory went away: forget what was under it
OVERFLOW = "overflow"  # the kernel dropped events: rescan everything


class Event(NamedTuple):
    kind: str
    path: str


class InotifyUnavailable(OSError):
    """inotify cannot be used here (not Linux, no more watches, ...)."""


def _libc() -> ctypes.CDLL:
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
        lib.inotify_init1.argtypes = [ctypes.c_int]
        lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        lib.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError) as exc:
        raise InotifyUnavailable(f"inotify is not available: {exc}") from None
    return lib


def _skip_dir(name: str) -> bool:
    return name.startswith(".")


class Watcher:
    """Watches directory trees; ``events()`` yields batches of Events until ``close()``."""

    def __init__(self) -> None:
        self._lib = _libc()
        fd = self._lib.inotify_init1(IN_CLOEXEC | IN_NONBLOCK)
        if fd < 0:
            err = ctypes.get_errno()
            raise InotifyUnavailable(err, f"inotify_init1: {os.strerror(err)}")
        self._fd = fd
        self._paths: dict[int, str] = {}  # wd -> directory
        self._wds: dict[str, int] = {}  # directory -> wd
        self._lock = threading.Lock()
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()

    # -- watches ---------------------------------------------------------------------------
    def add_tree(self, top: str, required: bool = True) -> list[str]:
        """Watch ``top`` and every non-hidden directory below it; returns the directories added.

        A root (``required``) may itself be a symlink to a directory; below it, links are not
        followed. A root that cannot be watched raises InotifyUnavailable.
        """
        if not self._add(top, follow=required):
            if required:
                raise InotifyUnavailable(errno.ENOENT, f"cannot watch {top}")
            return []
        added = [top]
        stack = self._subdirs(top)
        while stack:
            directory = stack.pop()
            if not self._add(directory):
                continue
            added.append(directory)
            stack.extend(self._subdirs(directory))
        return added

    @staticmethod
    def _subdirs(directory: str) -> list[str]:
        try:
            with os.scandir(directory) as it:
                return [
                    e.path for e in it if not _skip_dir(e.name) and e.is_dir(follow_symlinks=False)
                ]
        except OSError:
            return []

    def _add(self, directory: str, follow: bool = False) -> bool:
        mask = WATCH_MASK & ~IN_DONT_FOLLOW if follow else WATCH_MASK
        wd = self._lib.inotify_add_watch(self._fd, os.fsencode(directory), mask)
        if wd < 0:
            err = ctypes.get_errno()
            if err == errno.ENOSPC:
                raise InotifyUnavailable(
                    err,
                    "inotify watch limit reached (raise fs.inotify.max_user_watches, "
                    "or rely on --rescan-interval)",
                )
            return False  # vanished, not a directory, no permission
        with self._lock:
            old = self._paths.get(wd)
            if old is not None and old != directory:
                self._wds.pop(old, None)
            self._paths[wd] = directory
            self._wds[directory] = wd
        return True

    def _forget_tree(self, directory: str) -> None:
        prefix = directory + os.sep
        with self._lock:
            doomed = [p for p in self._wds if p == directory or p.startswith(prefix)]
            for path in doomed:
                wd = self._wds.pop(path)
                self._paths.pop(wd, None)
                self._lib.inotify_rm_watch(self._fd, wd)

    # -- reading ---------------------------------------------------------------------------
    def read(self, timeout: float | None) -> list[Event]:
        """Wait up to ``timeout`` seconds for events; returns [] on timeout or after close()."""
        if self._closed:
            return []
        ready, _, _ = select.select([self._fd, self._wake_r], [], [], timeout)
        if self.closed:  # by another thread meanwhile
            return []
        if self._wake_r in ready:
            os.read(self._wake_r, 4096)  # nudged: the caller has other work
        if self._fd not in ready:
            return []
        try:
            data = os.read(self._fd, 256 * 1024)
        except BlockingIOError:
            return []
        except OSError:
            if self._fd < 0:  # closed under us
                return []
            raise
        return list(self._decode(data))

    def _decode(self, data: bytes) -> Iterator[Event]:
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size
            raw_name = data[offset : offset + length].rstrip(b"\0")
            offset += length
            if mask & IN_Q_OVERFLOW:
                yield Event(OVERFLOW, "")
                continue
            with self._lock:
                directory = self._paths.get(wd)
            if directory is None:
                continue
            if mask & IN_IGNORED:
                with self._lock:
                    if self._paths.get(wd) == directory:
                        del self._paths[wd]
                        self._wds.pop(directory, None)
                continue
            if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT) and not raw_name:
                # A watched root itself went away; its parent (if watched) reports the rest.
                yield Event(DIR_GONE, directory)
                continue
            if not raw_name:
                continue
            path = os.path.join(directory, os.fsdecode(raw_name))
            if mask & IN_ISDIR:
                if _skip_dir(os.path.basename(path)):
                    continue
                if mask & (IN_CREATE | IN_MOVED_TO):
                    try:
                        self.add_tree(path, required=False)
                    except InotifyUnavailable:
                        yield Event(OVERFLOW, "")
                    yield Event(DIR_ADDED, path)
                elif mask & (IN_DELETE | IN_MOVED_FROM):
                    self._forget_tree(path)
                    yield Event(DIR_GONE, path)
                continue
            if mask & IN_MOVED_TO:
                yield Event(MOVED_IN, path)
            elif mask & (IN_DELETE | IN_MOVED_FROM):
                yield Event(GONE, path)
            else:
                if mask & IN_CREATE:
                    yield Event(CREATED, path)
                if mask & IN_MODIFY:
                    yield Event(WRITING, path)
                if mask & IN_CLOSE_WRITE:
                    yield Event(CLOSED, path)
                if mask & IN_ATTRIB:
                    yield Event(TOUCHED, path)

    @property
    def closed(self) -> bool:
        return self._closed

    def nudge(self) -> None:
        """Make a blocked ``read`` return now (from another thread), with what it has."""
        if not self._closed:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass  # closed meanwhile

    def wake(self) -> None:
        """Make a blocked ``read`` return (from another thread); later reads return []."""
        if not self._closed:
            self._closed = True
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        """Release the descriptors; call once no thread is inside ``read``."""
        self.wake()
        for fd in (self._fd, self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._fd = self._wake_r = self._wake_w = -1
