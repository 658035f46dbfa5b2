"""Publishing: the one narrow door through which uploads reach the directory.

A file is written under a dot-name (``TEMP_PREFIX``, which the indexer never lists), hashed as
it is written, flushed, then linked (create-only) or renamed (replace) to its final name: a
reader sees the old file or the new one, never a part. ``FileOps`` is the seam the tests fail.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import secrets
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator, Sequence

__all__ = ["TEMP_PREFIX", "FileOps", "Spool", "TempFile", "TooLargeError", "sweep_temp_files"]

log = logging.getLogger(__name__)

TEMP_PREFIX = ".pkgserver-tmp-"


class FileOps:
    """The filesystem calls publishing makes, as a seam: tests fail any one of them.

    It remembers the temporary files it created that are still there, so that a shutdown can
    remove those of uploads still in flight (``remove_live``): this instance's own, never
    another server's sharing the directory."""

    def __init__(self) -> None:
        self._live: set[str] = set()
        self._live_lock = threading.Lock()

    def untrack(self, path: str) -> None:
        """``path``, a temp file, is gone (removed, or renamed to its final name)."""
        with self._live_lock:
            self._live.discard(path)

    def remove_live(self) -> int:
        """Unlink the temporary files of uploads still in flight (at shutdown: their threads
        are about to die with the process)."""
        with self._live_lock:
            paths = list(self._live)
            self._live.clear()
        removed = 0
        for path in paths:
            try:
                os.unlink(path)
                removed += 1
            except OSError:
                pass
        if removed:
            log.info("removed %d temporary files of uploads interrupted by the shutdown", removed)
        return removed

    def open_temp(self, directory: str) -> tuple[int, str]:
        for _ in range(100):
            path = os.path.join(directory, TEMP_PREFIX + secrets.token_hex(8))
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                continue
            with self._live_lock:
                self._live.add(path)  # removed at shutdown if still there (remove_live)
            return fd, path
        raise FileExistsError("could not create a temporary file")

    def write(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def link(self, src: str, dst: str) -> None:
        os.link(src, dst)  # fails with FileExistsError: never silently replaces a published file

    def replace(self, src: str, dst: str) -> None:
        os.replace(src, dst)
        self.untrack(src)

    def unlink(self, path: str) -> None:
        os.unlink(path)
        self.untrack(path)

    def fsync_dir(self, directory: str) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class TempFile:
    """A dot-file in a package directory (so the indexer ignores it), hashed as it is written."""

    def __init__(self, ops: FileOps, directory: str, limit: int) -> None:
        self.ops = ops
        self.fd, self.path = ops.open_temp(directory)
        self.limit = limit
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.blake2_256 = hashlib.blake2b(digest_size=32)
        self.closed = False

    @classmethod
    def holding(cls, ops: FileOps, directory: str, data: bytes) -> TempFile:
        """A temp file in ``directory`` holding ``data``, flushed; nothing left on failure."""
        staged = cls(ops, directory, len(data))
        try:
            staged.write(data)
            staged.finish()
        except OSError:
            staged.discard()
            raise
        return staged

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise TooLargeError(f"the file is larger than the upload limit ({self.limit} bytes)")
        self.ops.write(self.fd, data)
        self.sha256.update(data)
        self.md5.update(data)
        self.blake2_256.update(data)

    def finish(self) -> None:
        """Flush to disk and close (before publishing)."""
        self.ops.fsync(self.fd)
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.ops.close(self.fd)

    def discard(self) -> None:
        """Remove the staged file (after a rename into place it is gone already). Never raises:
        the upload's outcome is decided; a file that cannot be removed now stays tracked, for
        the shutdown (and the sweep of the next start)."""
        try:
            self.close()
        except OSError:
            pass
        try:
            self.ops.unlink(self.path)  # (untracks it)
        except FileNotFoundError:
            self.ops.untrack(self.path)
        except OSError as exc:
            log.warning("cannot remove the temporary file %s: %s", self.path, exc)

    def digests(self) -> dict[str, str]:
        return {
            "sha256": self.sha256.hexdigest(),
            "md5": self.md5.hexdigest(),
            "blake2_256": self.blake2_256.hexdigest(),
        }


class TooLargeError(ValueError):
    """More bytes than the configured limit."""


def sweep_temp_files(roots: Sequence[str]) -> int:
    """Remove temporary files a crashed upload left behind (only our own prefix)."""
    removed = 0
    for root in roots:
        for directory, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith(TEMP_PREFIX):
                    try:
                        os.unlink(os.path.join(directory, name))
                        removed += 1
                    except OSError as exc:
                        log.warning("cannot remove leftover %s: %s", name, exc)
    if removed:
        log.info("removed %d temporary files left by interrupted uploads", removed)
    return removed


class Spool:
    """A folder of this process's own, under a base folder that other pkgserver processes on
    the machine may share, for uploads staged before they go elsewhere (to an object store).

    A process killed while it stages (kill -9, the OOM killer) cannot clean up after itself;
    its folder is removed by the next start that shares the base. To tell a dead process's
    folder from a live one's, each folder holds a ``.lock`` file that its process keeps
    locked (flock) for as long as it lives: the kernel lets go of the lock when the process
    dies, however it dies. A lock, unlike a pid, is also seen from another container that
    shares the folder. Making a folder and sweeping the dead ones happen under the base's own
    lock, so a folder is never seen between its making and its locking.
    """

    LOCK = ".lock"

    def __init__(self, path: str, lock_fd: int) -> None:
        self.path = path
        self._lock_fd: int | None = lock_fd

    @classmethod
    def claim(cls, base: str) -> Spool:
        """A new folder in ``base`` (made 0700 if missing; it must be this user's and writable
        by no one else), after removing those of processes that are gone. Raises OSError."""
        os.makedirs(base, mode=0o700, exist_ok=True)
        st = os.lstat(base)
        if not stat.S_ISDIR(st.st_mode):
            raise OSError(errno.ENOTDIR, "not a directory", base)
        if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise OSError(errno.EPERM, "not a folder of this user's alone", base)
        with _flocked(os.path.join(base, cls.LOCK)):
            path = tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=base)
            fd = os.open(os.path.join(path, cls.LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            spool = cls(path, fd)
            removed = spool._sweep(base)
        if removed:
            log.info("removed %d spool folders of pkgserver processes that died", removed)
        return spool

    def _sweep(self, base: str) -> int:
        removed = 0
        for entry in os.scandir(base):
            if entry.path == self.path or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                fd = os.open(os.path.join(entry.path, self.LOCK), os.O_RDWR | os.O_NOFOLLOW)
            except FileNotFoundError:
                fd = None  # killed between its making and its locking
            except OSError as exc:
                log.warning("cannot tell whether %s is in use: %s", entry.path, exc)
                continue
            try:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live process's
            finally:
                if fd is not None:
                    os.close(fd)
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
        return removed

    def close(self) -> None:
        """Remove the folder and what is left in it (at shutdown)."""
        if self._lock_fd is None:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._lock_fd)
        self._lock_fd = None


@contextlib.contextmanager
def _flocked(path: str) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
