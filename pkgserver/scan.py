"""Walking the package directories and describing what is there.

``iter_dist_files`` walks a root (never into dot-folders, never out of the root); ``describe``
reads one distribution file once: its hashes, core metadata and the fields the index lists;
``describe_batch`` does the same for a batch in a worker process (the first scan of a large
directory); ``MetadataStore`` re-reads core metadata on demand for the pages that show it.
What is listed when is the indexer's business (indexer.py).
"""

from __future__ import annotations

import errno
import hashlib
import io
import itertools
import logging
import multiprocessing
import os
import stat
import sys
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, BinaryIO

from .attest import PROVENANCE, PROVENANCE_LIMIT, provenance_covers
from .catalog import DistFile, FileStat
from .distfile import (
    DIST_EXTENSIONS,
    InvalidDistFilename,
    is_valid_project_name,
    normalize,
    parse_dist_filename,
    version_sort_key,
)
from .fsutil import open_regular
from .metadata import CoreMetadata, InvalidArchive, core_metadata_of

__all__ = [
    "CHANGED",
    "MetadataStore",
    "describe",
    "describe_batch",
    "is_hidden",
    "iter_dist_files",
    "project_of",
]

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
PREFETCH_BYTES = 64 * 1024 * 1024  # bytes of a batch announced to the kernel at once
READ_WHOLE = 8 * 1024 * 1024  # files up to this size are read into memory once when indexed
CHANGED = "\0changed"  # what a worker process answers for a file that changed as it was read


def is_hidden(relpath: str) -> bool:
    return any(part.startswith(".") for part in relpath.split("/"))


def iter_dist_files(
    root: str, links: set[str] | None = None, odd: list[str] | None = None
) -> Iterator[tuple[str, FileStat]]:
    """(relpath, stamp) for each candidate distribution file under ``root``; never raises.

    A FileStat rather than the stat result, made with os.stat() rather than entry.stat()
    (which the entry keeps as long as the listing lives): stat results, a dozen objects each,
    freed around the few that the catalog keeps left the heap fragmented, 50 MB more resident
    memory after a first start of 100,000 files.

    Relpaths that are symbolic links are added to ``links`` (scandir knows it for free); those
    named like distributions that are not regular files (a dangling link, a FIFO) to ``odd``:
    never listed, but their names are claimed all the same (see Indexer._claim)."""
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            with os.scandir(os.path.join(root, rel_dir) if rel_dir else root) as it:
                entries = list(it)
        except OSError as exc:
            log.warning("cannot read directory %r: %s", os.path.join(root, rel_dir), exc)
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(rel)
                    continue
                if not entry.name.lower().endswith(DIST_EXTENSIONS):
                    continue
                st = os.stat(entry.path)  # not entry.stat(), which the entry keeps (above)
                if links is not None and entry.is_symlink():
                    links.add(rel)
            except OSError:
                if odd is not None:
                    odd.append(rel)
                continue
            if stat.S_ISREG(st.st_mode):
                yield rel, FileStat(st.st_size, st.st_mtime_ns, st.st_ino)
            elif odd is not None:
                odd.append(rel)


def project_of(relpath: str) -> str | None:
    """The project a visible file named like a distribution belongs to, if it can be told."""
    if is_hidden(relpath):
        return None
    try:
        return parse_dist_filename(relpath.rsplit("/", 1)[-1]).project
    except InvalidDistFilename:
        return None


class FileChanged(OSError):
    """The file is not the size it was stat'ed with: it is being written (or grows on
    purpose, a sparse file extended while it is read). Look again later, never hash on."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.EAGAIN, "changed while it was read", path)


def describe(
    root: str,
    relpath: str,
    st: os.stat_result | FileStat,
    extra_algos: Sequence[str] = (),
    *,
    known_hashes: Mapping[str, str] | None = None,
    known_meta: CoreMetadata | None = None,
) -> DistFile:
    """Hash and read the file once; raises InvalidDistFilename or OSError.

    An upload passes what it computed while receiving the file (``known_hashes``: sha256 and
    each of ``extra_algos``), so it is not read twice.
    """
    filename = relpath.rsplit("/", 1)[-1]
    info = parse_dist_filename(filename)
    path = os.path.join(root, *relpath.split("/"))
    known = known_hashes or {}
    if not all(a in known for a in ("sha256", *extra_algos)):
        known = {}
    sha = hashlib.sha256()
    extras = [hashlib.new(a) for a in extra_algos]
    data: bytes | None = None
    if not known:
        data = _hash_file(path, st.st_size, [sha, *extras])
    requires_python = summary = display_name = metadata_sha256 = None
    meta: CoreMetadata | None = known_meta
    if meta is None:
        try:
            meta = read_core_metadata(
                path,
                info.kind,
                info.project,
                data=data if data and len(data) == st.st_size else None,
            )
        except InvalidArchive as exc:
            log.info("no core metadata for %r: %s", relpath, exc)
    if meta is not None and not metadata_matches(meta, info.project, info.version):
        # Metadata of another project or version: advertising it would mislead installers.
        log.info("the metadata of %r names another project or version; not used", relpath)
        meta = None
    if meta is not None:
        requires_python = meta.requires_python
        summary = _printable(meta.summary)[:512] if meta.summary else None
        # The metadata's spelling of the name is shown only if it is that project's name.
        if meta.name and is_valid_project_name(meta.name) and normalize(meta.name) == info.project:
            display_name = meta.name
        if meta.servable:
            metadata_sha256 = hashlib.sha256(meta.raw).hexdigest()
    return DistFile(
        filename=filename,
        relpath=relpath,
        root=root,
        project=info.project,
        version=info.version,
        kind=info.kind,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        ino=st.st_ino,
        sha256=known.get("sha256") or sha.hexdigest(),
        extra_hashes=tuple((a, known.get(a) or h.hexdigest()) for a, h in zip(extra_algos, extras)),
        requires_python=requires_python,
        metadata_sha256=metadata_sha256,
        summary=summary,
        display_name=display_name,
        provenance_sha256=provenance_of(path, known.get("sha256") or sha.hexdigest()),
    )


def provenance_of(path: str, sha256: str) -> str | None:
    """The sha256 of the provenance kept beside the file at ``path`` (``FILE.provenance.json``,
    written by an upload whose attestations verified), if it is a plain file whose attestations
    all name these bytes; else None: a stale one, left beside a file replaced by other means,
    is never listed."""
    try:
        fd = open_regular(path + PROVENANCE)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(PROVENANCE_LIMIT + 1)
    if len(data) > PROVENANCE_LIMIT or not provenance_covers(data, sha256):
        return None
    return hashlib.sha256(data).hexdigest()


def read_core_metadata(
    path: str,
    kind: str,
    project: str | None = None,
    filename: str | None = None,
    data: bytes | None = None,
) -> CoreMetadata:
    """The core metadata of the distribution at ``path`` (or in ``data``, its bytes);
    ``filename`` names the format when ``path`` does not (a temp file). Raises InvalidArchive,
    also when the file cannot be opened (a FIFO put in its place is never waited for)."""
    name = filename or path
    if data is not None:
        return core_metadata_of(io.BytesIO(data), name, kind, project, data)
    try:
        fh = os.fdopen(open_regular(path), "rb")
    except OSError as exc:
        raise InvalidArchive(f"unreadable archive: {type(exc).__name__}: {exc}") from None
    with fh:
        return core_metadata_of(fh, name, kind, project)


def open_stored(path: str, *, follow: bool = True) -> tuple[BinaryIO, FileStat]:
    """A file of the package directories for reading, and its size, mtime and inode. Never
    through a FIFO or a device (non-blocking, regular files only); ``follow=False`` refuses
    a symbolic link too. Raises OSError."""
    fh = os.fdopen(open_regular(path, follow=follow), "rb")
    try:
        st = os.fstat(fh.fileno())
    except OSError:
        fh.close()
        raise
    return fh, FileStat(st.st_size, st.st_mtime_ns, st.st_ino)


def _hash_file(path: str, size: int, hashes: list[Any]) -> bytes | None:
    """Feed the file's ``size`` bytes to ``hashes``; its bytes when it is small enough to be
    read whole (the archive is then opened in memory), else None. Raises FileChanged."""
    if size <= READ_WHOLE:
        # Most distributions are small: read once, hash and open the archive in memory.
        # os.read: a buffered file object costs more than the read itself at this size.
        data = _read_small(path, size)
        for h in hashes:
            h.update(data)
        return data
    # Exactly the size that was checked (against --max-file-size too), and one byte more to
    # see whether it grew: reading to the end let a file extended while it was read
    # (truncate -s 8T) hold the reader for hours.
    with os.fdopen(open_regular(path), "rb") as fh:
        left = size
        while left > 0:
            chunk = fh.read(min(CHUNK, left))
            if not chunk:
                raise FileChanged(path)  # shorter than it was
            left -= len(chunk)
            for h in hashes:
                h.update(chunk)
        if fh.read(1):
            raise FileChanged(path)
    return None


def _read_small(path: str, expected: int) -> bytes:
    """The file's ``expected`` bytes, in one read: os.read allocates what it is asked for, and
    a regular file reads short only at its end, so asking for one byte more shows at once
    whether it grew. Raises FileChanged when it is not ``expected`` bytes long now."""
    fd = open_regular(path)  # a FIFO put in place of the file must not hang the indexer
    try:
        data = os.read(fd, expected + 1)
    finally:
        os.close(fd)
    if len(data) != expected:
        raise FileChanged(path)
    return data


def _printable(text: str) -> str:
    """Control characters (NUL, ESC, ...) break XML-RPC answers and terminals: make them spaces."""
    if text.isprintable():
        return text.strip()
    return "".join(c if c.isprintable() else " " for c in text).strip()


def metadata_matches(meta: CoreMetadata, project: str, version: str) -> bool:
    if not meta.name or normalize(meta.name) != project or not meta.version:
        return False
    return version_sort_key(meta.version) == version_sort_key(version)


def skip_message(exc: InvalidDistFilename | OSError) -> str:
    """Why a file is not listed, as the log says it (from this process or a worker)."""
    if isinstance(exc, InvalidDistFilename):
        return f"cannot be attributed to a project ({exc}); skipped"
    return f"cannot be read ({exc}); skipped"


def stamp_of(f: DistFile) -> FileStat:
    return FileStat(f.size, f.mtime_ns, f.ino)


def stamp(st: os.stat_result | FileStat) -> FileStat:
    return FileStat(st.st_size, st.st_mtime_ns, st.st_ino)


def fields_of(f: DistFile) -> tuple[Any, ...]:
    """What a DistFile knows beyond its path and stat, in the order of ``Cached``."""
    return (
        f.project,
        f.version,
        f.kind,
        f.sha256,
        f.extra_hashes,
        f.requires_python,
        f.metadata_sha256,
        f.summary,
        f.display_name,
        f.provenance_sha256,
    )


def _prefetch(root: str, relpaths: list[str]) -> None:
    """Ask the kernel to start reading every file of the batch now (POSIX_FADV_WILLNEED).

    A first start is I/O-bound when the files are not in the page cache: read one at a time,
    each read waits for the disk, and 100,000 small files took 25 s. Announced together, the
    reads are queued at once and the disk serves them in parallel."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    for relpath in relpaths:  # (only files describe() reads whole; see describe_batch)
        try:
            fd = os.open(root + "/" + relpath, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            advise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)


def describe_batch(
    job: tuple[str, list[tuple[str, int, int, int]], tuple[str, ...]],
) -> list[tuple[Any, ...] | str]:
    """describe() in a worker process, for a batch of files of one root: for each, its fields
    (see fields_of) or, if it failed, the message to log."""
    root, items, extra_algos = job
    # Only files describe() reads whole, and at most PREFETCH_BYTES of them at once: a large
    # file would push the batch's others out of the page cache before they were read.
    ahead: list[str] = []
    budget = PREFETCH_BYTES
    for relpath, size, *_ in items:
        if size <= READ_WHOLE and size <= budget:
            ahead.append(relpath)
            budget -= size
    _prefetch(root, ahead)
    out: list[tuple[Any, ...] | str] = []
    for relpath, size, mtime_ns, ino in items:
        try:
            f = describe(root, relpath, FileStat(size, mtime_ns, ino), extra_algos)
            out.append(fields_of(f))
        except FileChanged:
            out.append(CHANGED)
        except (InvalidDistFilename, OSError) as exc:
            out.append(skip_message(exc))
        except Exception as exc:  # one bad file must never stop a scan
            out.append(f"unexpected error ({type(exc).__name__}: {exc}); skipped")
    return out


_ENTRY_BYTES = 256  # what an entry costs besides its metadata: also bounds their number


class _ReadWatch:
    """An open file whose read and seek failures are remembered (``failed``): the archive
    readers turn any error into InvalidArchive, which is remembered for good, but a failure
    of the storage under them (an object store away) must not be."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.failed = False

    def read(self, n: int = -1) -> bytes:
        try:
            return self._fh.read(n)
        except OSError:
            self.failed = True
            raise

    def seek(self, offset: int, whence: int = 0) -> int:
        try:
            return self._fh.seek(offset, whence)
        except OSError:
            self.failed = True
            raise

    def tell(self) -> int:
        return self._fh.tell()

    def seekable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


class MetadataStore:
    """Core metadata of listed files, read from the archive on demand and kept in a bounded LRU.

    The catalog keeps only the metadata hash (100,000 METADATA files would not fit the memory
    budget); the bytes are re-read when asked for and checked against that hash. An archive
    whose metadata cannot be read is remembered as such like a success: reading it again on
    every request (a 279-byte bz2 bomb costs 0.65 s of CPU to give up on) would be a lever.
    """

    def __init__(
        self,
        max_bytes: int = 32 * 1024 * 1024,
        opener: Callable[[str], tuple[BinaryIO, FileStat]] | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.opener = opener or open_stored  # Storage.open
        self._items: OrderedDict[tuple[str, int, int], CoreMetadata | None] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, f: DistFile) -> CoreMetadata | None:
        key = (f.path, f.size, f.mtime_ns)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        try:
            fh, st = self.opener(f.path)
        except OSError:
            return None  # gone, or not readable now: nothing to remember
        with fh:
            if not f.matches(st):
                return None  # changed on disk; the indexer will catch up
            watched = _ReadWatch(fh)
            try:
                meta: CoreMetadata | None = core_metadata_of(
                    watched,  # type: ignore[arg-type]
                    f.filename,
                    f.kind,
                    f.project,
                )
            except InvalidArchive:
                if watched.failed:
                    return None  # the storage failed (a store away), not the archive
                meta = None
            except OSError:
                return None  # a read failed: nothing to remember
        size = _ENTRY_BYTES + (len(meta.raw) if meta is not None else 0)
        if size <= self.max_bytes // 4:
            with self._lock:
                if key not in self._items:
                    self._items[key] = meta
                    self._bytes += size
                while self._bytes > self.max_bytes and self._items:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= _ENTRY_BYTES + (len(old.raw) if old is not None else 0)
        return meta


def entry_from_fields(
    root: str,
    relpath: str,
    st: os.stat_result | FileStat,
    cached: tuple[Any, ...],
    upload_ns: int = 0,
) -> DistFile:
    """The catalog's entry for a file, from what the cache or a worker process knows of it
    (``cached``: the fields of cache.Cached, in its order), and its upload time if known.

    Strings that repeat (project, version, kind, Requires-Python, summary, display name) are
    interned: they arrive as fresh copies, and at 100,000 files the copies cost megabytes.
    """
    project, version, kind, sha256, extra, requires_python, meta_sha, summary, shown = cached[:9]
    # (descriptions stored before provenance was listed have nine fields)
    provenance = cached[9] if len(cached) > 9 else None
    intern = sys.intern
    return DistFile(
        filename=relpath if "/" not in relpath else relpath.rsplit("/", 1)[-1],
        relpath=relpath,
        root=root,
        project=intern(project),
        version=intern(version),
        kind=intern(kind),
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        ino=st.st_ino,
        sha256=sha256,
        extra_hashes=extra,
        requires_python=intern(requires_python) if requires_python else None,
        metadata_sha256=meta_sha,
        summary=intern(summary) if summary else None,
        display_name=intern(shown) if shown else None,
        upload_ns=upload_ns,
        provenance_sha256=provenance,
    )


def describe_in_processes(
    files: list[tuple[str, str, FileStat]],
    workers: int,
    extra_algos: Sequence[str],
    outcome: Callable[[int, DistFile | str], None],
    batch_size: int = 500,
) -> None:
    """describe() many files (root, relpath, stat) in worker processes: ``outcome(n, found)``
    gets the n-th file's DistFile, CHANGED, or the message to log. Raises OSError or
    RuntimeError when there can be no worker processes here.

    Work goes out in batches of plain tuples and comes back as plain tuples: pickling a stat
    result or a DistFile per file cost the parent as much as the workers' reading.
    """
    from concurrent.futures import Future, ProcessPoolExecutor

    batches: list[list[int]] = []
    for n, (root, _, _) in enumerate(files):
        if not batches or len(batches[-1]) >= batch_size or files[batches[-1][0]][0] != root:
            batches.append([])
        batches[-1].append(n)
    ctx = multiprocessing.get_context("spawn")  # never fork a threaded process
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)

    def job(batch: list[int]) -> Future[list[tuple[Any, ...] | str]]:
        root = files[batch[0]][0]
        items = [
            (files[n][1], files[n][2].st_size, files[n][2].st_mtime_ns, files[n][2].st_ino)
            for n in batch
        ]
        return pool.submit(describe_batch, (root, items, tuple(extra_algos)))

    try:
        # A few batches in flight per worker, made as they are sent: all of them made at once
        # were 100,000 short-lived tuples that left the parent's heap fragmented.
        in_flight: deque[tuple[list[int], Future[list[tuple[Any, ...] | str]]]] = deque()
        ahead = iter(batches)
        for batch in itertools.islice(ahead, 3 * workers):
            in_flight.append((batch, job(batch)))
        while in_flight:
            batch, future = in_flight.popleft()
            outcomes = future.result()
            following = next(ahead, None)
            if following is not None:
                in_flight.append((following, job(following)))
            for n, found in zip(batch, outcomes):
                root, relpath, st = files[n]
                if isinstance(found, str):
                    outcome(n, found)
                else:
                    outcome(n, entry_from_fields(root, relpath, st, found))
    except BaseException:
        # Interrupted (SIGTERM during a first start): drop the work not begun, let the workers
        # finish the batch in hand and exit.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
