"""The storage interface: where distribution files and records live, and how the index
learns what changed there.

Three parts, each a Protocol with the package directories as its first implementation:
- ``Storage``: what uploads (upload.py) and downloads need. Uploads reach the files only
  through it: they stage the bytes, ask where a file goes, publish it create-only or as a
  replacement, put its sidecars beside it, remove files, and read back a file a concurrent
  writer put first. Downloads open a listed file through it. A location is what
  ``DistFile.path`` holds: an absolute path for a directory, a key for an object store.
  ``DirectoryStorage`` implements it through ``publish.FileOps`` (the system calls, which the
  tests fail one at a time).
- ``ChangeFeed``: keeps the catalog in step with the storage. For a directory it is the
  ``Indexer`` (inotify and rescans, indexer.py).
- ``Records``: small named records kept beside the files (yanks, upload log, hosted names).
  For a directory, a ``records.RecordDir`` per root (the ``.pkgserver/`` folder).
- ``Uploaders``: who uploaded which file. For a directory, ``records.UploadLog`` (a file
  appended to); a bucket has no append and keeps an object per upload (``s3.S3UploadLog``).

The rules of what is listed and what counts as the same file are in none of them: they are in
distfile.py and the catalog.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from typing import BinaryIO, NamedTuple, Protocol

from .attest import PROVENANCE, PROVENANCE_LIMIT
from .catalog import DistFile, FileStat
from .fsutil import confined, open_regular
from .manage import files_of, remove_distribution
from .metadata import CoreMetadata
from .publish import FileOps, TempFile
from .scan import describe, open_stored

__all__ = [
    "ChangeFeed",
    "DirectoryStorage",
    "Records",
    "Storage",
    "StoreFull",
    "StoreUnavailable",
    "Stored",
    "Uploaders",
]


class StoreUnavailable(OSError):
    """The place files live cannot be reached now, or answers "later" (an object store that is
    down, overloaded or throttling, after the client's own retries): nothing was changed, and
    the same request may succeed in a moment. Uploads and downloads answer 503 for it, where
    another OSError would be a 507 or a 404."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(errno.EAGAIN, message)
        # The endpoint it tried, for the operator (the log, the commands), never for an HTTP
        # client: the store's address is the deployment's business.
        self.where = where


class StoreFull(OSError):
    """An object store refused a write for want of room: out of space, over a quota (507,
    as a full disk is)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)


class Stored(NamedTuple):
    """A distribution file as the storage holds it (listed or not)."""

    location: str
    relpath: str
    version: str


class Storage(Protocol):
    """What publishing needs of the place files live. Every method may raise OSError."""

    def stage(self, limit: int) -> TempFile:
        """A new staging file for an upload, hashed as written, refused past ``limit`` bytes;
        never listed, removed by ``discard`` (or by ``remove_live`` at shutdown)."""
        ...

    def stage_bytes(self, beside: str, data: bytes) -> TempFile:
        """``data`` staged (durably) where it can be put at ``beside``'s place."""
        ...

    def place(self, filename: str, project_files: Sequence[DistFile]) -> str:
        """The location of a new file: where the project's files live, else the first root."""
        ...

    def beside(self, location: str, filename: str) -> str:
        """The location of ``filename`` next to ``location``."""
        ...

    def create(self, staged: TempFile, location: str) -> bool:
        """Publish ``staged`` at ``location`` unless something is there (then False): atomic,
        create-only; readers see nothing or the whole file."""
        ...

    def replace(self, staged: TempFile, location: str) -> None:
        """Publish ``staged`` at ``location`` in place of what is there, atomically."""
        ...

    def undo_create(self, location: str, staged: TempFile) -> None:
        """Take back a ``create`` of ``staged`` (and only that: never another writer's file)."""
        ...

    def remove(self, location: str) -> bool:
        """Remove a distribution and the files kept beside it; whether it was there."""
        ...

    def discard(self, location: str) -> None:
        """Remove ``location`` if it is there; never raises."""
        ...

    def sync(self, locations: Iterable[str]) -> None:
        """Make the changes at ``locations`` durable."""
        ...

    def sha256_of(self, location: str, size: int) -> str | None:
        """The sha256 of the file at ``location`` if it is a plain file of ``size`` bytes."""
        ...

    def relpath(self, location: str) -> str:
        """The name the index lists ``location`` under (what DistFile.relpath holds)."""
        ...

    def describe(
        self,
        location: str,
        extra_algos: Sequence[str],
        digests: Mapping[str, str],
        meta: CoreMetadata,
    ) -> DistFile:
        """The catalog entry of a file just published, its hashes (sha256 and each of
        ``extra_algos``, for --hash-algo) and metadata known already: it is not read again."""
        ...

    def files_of(self, project: str, version: str | None = None) -> list[Stored]:
        """Every distribution file of ``project`` (of one ``version``) stored, listed or not."""
        ...

    def remove_live(self) -> int:
        """Remove what uploads still in flight staged (at shutdown); how many."""
        ...

    def open(self, location: str) -> tuple[BinaryIO, FileStat]:
        """A stored file for reading, and what identifies its version (size, mtime, inode or
        its equivalent), to compare with the catalog's entry. Never blocks on anything but
        the read; raises OSError when it is gone or not a plain file."""
        ...

    def signature(self, location: str) -> bytes | None:
        """The detached signature stored beside the file (``FILE.asc``, twine --sign), up to
        ``SIGNATURE_LIMIT`` bytes; None when there is none (or it is not a plain file)."""
        ...

    def provenance(self, location: str) -> bytes | None:
        """The PEP 740 provenance object stored beside the file (``FILE.provenance.json``,
        written by an upload whose attestations verified), up to ``PROVENANCE_LIMIT`` bytes;
        None when there is none."""
        ...


SIGNATURE_LIMIT = 64 * 1024


class ChangeFeed(Protocol):
    """Keeps a catalog in step with a storage: what appears, changes or goes."""

    def start(self) -> None:
        """The first scan (returns when what was found is listed or being hashed), then the
        following of changes in the background."""
        ...

    def interrupt(self) -> None:
        """Stop the first scan at its next file (a signal during the start)."""
        ...

    def ready(self) -> str | None:
        """What is still pending from the start, for /health (None: everything is listed)."""
        ...

    def recheck(self, path: str, delay: float = 0.0) -> None:
        """Look at ``path`` again (a download found it changed)."""
        ...

    def remember(self, f: DistFile) -> None:
        """An upload listed ``f`` itself: keep it as if it had been read (the index cache)."""
        ...

    def stop(self) -> None: ...


class Records(Protocol):
    """Small named records beside the files, read and written whole or appended to."""

    def file(self, name: str) -> str:
        """Where the record is, for messages."""
        ...

    def warn_once(self, consequence: str, exc: BaseException) -> None:
        """Log a problem with a record once (they are polled every second)."""
        ...

    def all_well(self, name: str) -> None:
        """The record read fine: a problem with it that comes back is worth a line again."""
        ...

    def stamp(self, name: str) -> object:
        """Changes whenever the record does (to reload only then)."""
        ...

    def read(self, name: str, limit: int = ...) -> bytes | None:
        """The record (None when there is none); raises OSError when it cannot be trusted."""
        ...

    def append(self, name: str, data: bytes) -> None: ...

    def replace(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """The whole record, atomically."""
        ...

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Held while a record is read, changed and written back."""
        ...


class Uploaders(Protocol):
    """Who uploaded which file, recorded by the upload, shown on the project pages."""

    def record(self, relpath: str, sha256: str, user: str | None) -> None:
        """Note an upload. Never raises: the file is published already, and only its
        attribution is lost when the record cannot be written."""
        ...

    def uploader(self, relpath: str, sha256: str) -> str | None:
        """The user who uploaded the file with these bytes, if known."""
        ...


class DirectoryStorage:
    """The package directories: files are published by link (create-only) or rename (replace)
    of a temp dot-file in the same directory, then the directory is fsynced."""

    def __init__(self, roots: Sequence[str], ops: FileOps | None = None) -> None:
        self.roots = list(roots)
        self.ops = ops or FileOps()

    def stage(self, limit: int) -> TempFile:
        return TempFile(self.ops, self.roots[0], limit)

    def stage_bytes(self, beside: str, data: bytes) -> TempFile:
        return TempFile.holding(self.ops, os.path.dirname(beside), data)

    def place(self, filename: str, project_files: Sequence[DistFile]) -> str:
        root = self.roots[0]
        for f in reversed(project_files):
            if f.path.startswith(root + os.sep) and "/" in f.relpath:
                return os.path.join(os.path.dirname(f.path), filename)
        return os.path.join(root, filename)

    def beside(self, location: str, filename: str) -> str:
        return os.path.join(os.path.dirname(location), filename)

    def create(self, staged: TempFile, location: str) -> bool:
        try:
            self.ops.link(staged.path, location)  # never silently replaces a published file
        except FileExistsError:
            return False
        return True

    def replace(self, staged: TempFile, location: str) -> None:
        self.ops.replace(staged.path, location)  # atomic: readers get old or new

    def undo_create(self, location: str, staged: TempFile) -> None:
        try:
            # Only our own link (same inode as our temp file), never someone else's file.
            if os.path.samefile(location, staged.path):
                self.discard(location)
        except OSError:
            pass

    def remove(self, location: str) -> bool:
        return remove_distribution(location, self.ops.unlink)

    def discard(self, location: str) -> None:
        try:
            os.unlink(location)
            self.ops.untrack(location)
        except OSError:
            pass

    def sync(self, locations: Iterable[str]) -> None:
        for directory in sorted({os.path.dirname(loc) for loc in locations}):
            self.ops.fsync_dir(directory)

    def sha256_of(self, location: str, size: int) -> str | None:
        # Without following links or blocking on FIFOs, and only for a regular file of our
        # size; never past what it should hold (it may be growing).
        try:
            fd = os.open(location, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as fh:
                st = os.fstat(fh.fileno())
                if not stat.S_ISREG(st.st_mode) or st.st_size != size:
                    return None
                h = hashlib.sha256()
                left = size + 1
                while left > 0 and (chunk := fh.read(min(1024 * 1024, left))):
                    h.update(chunk)
                    left -= len(chunk)
                return h.hexdigest()
        except OSError:
            return None

    def _root_of(self, location: str) -> str:
        return next(r for r in self.roots if location.startswith(r + os.sep))

    def relpath(self, location: str) -> str:
        return location[len(self._root_of(location)) + 1 :].replace(os.sep, "/")

    def describe(
        self,
        location: str,
        extra_algos: Sequence[str],
        digests: Mapping[str, str],
        meta: CoreMetadata,
    ) -> DistFile:
        root, relpath = self._root_of(location), self.relpath(location)
        st = os.stat(location)
        return describe(root, relpath, st, extra_algos, known_hashes=digests, known_meta=meta)

    def files_of(self, project: str, version: str | None = None) -> list[Stored]:
        return [
            Stored(os.path.join(f.root, *f.relpath.split("/")), f.relpath, f.version)
            for f in files_of(self.roots, project, version)
        ]

    def remove_live(self) -> int:
        return self.ops.remove_live()

    def open(self, location: str) -> tuple[BinaryIO, FileStat]:
        # Non-blocking, regular files only: a FIFO swapped in for a listed file must not hang
        # a worker thread (16 of them stopped the server).
        return open_stored(location)

    def signature(self, location: str) -> bytes | None:
        return self._sidecar(location + ".asc", SIGNATURE_LIMIT)

    def provenance(self, location: str) -> bytes | None:
        return self._sidecar(location + PROVENANCE, PROVENANCE_LIMIT)

    def _sidecar(self, path: str, limit: int) -> bytes | None:
        # Only a regular file inside the package directories: never a link out, a FIFO or a
        # device.
        if not confined(path, [os.path.realpath(r) for r in self.roots]):
            return None
        try:
            fd = open_regular(path)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as fh:
            if os.fstat(fh.fileno()).st_size > limit:
                return None
            return fh.read(limit)
