"""A persistent cache of what indexing a file found (hashes, metadata fields), so that a restart
does not read every archive again.

One SQLite file per set of package directories, by default under ``$XDG_CACHE_HOME/pkgserver``
(``--cache-dir`` moves it). An entry is reused only while the file's size, mtime and inode are
unchanged. Deleting the file is always safe: the next start rebuilds it. Any error here turns the
cache off with a warning; it never stops the server.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Generator, Iterable, Sequence
from typing import Any, NamedTuple

from .catalog import DistFile

__all__ = ["Cached", "DescriptionCache", "check_location", "default_cache_dir"]

log = logging.getLogger(__name__)

SCHEMA = 3  # 3: provenance_sha256


class Cached(NamedTuple):
    project: str
    version: str
    kind: str
    sha256: str
    extra_hashes: tuple[tuple[str, str], ...]
    requires_python: str | None
    metadata_sha256: str | None
    summary: str | None
    display_name: str | None
    provenance_sha256: str | None


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pkgserver")


_NO_EXTRAS: tuple[tuple[tuple[str, str], ...]] = ((),)

# A row as rows() yields it: (root index, relpath), (size, mtime_ns, ino), and the fields in
# the order of Cached (plain tuples: a restart goes through 100,000 of them).
Row = tuple[tuple[int, str], tuple[int, int, int], tuple[Any, ...]]


def _entry(row: tuple[Any, ...]) -> Row | None:
    extra = row[9]
    if not extra:
        return row[:2], row[2:5], row[5:9] + _NO_EXTRAS + row[10:]
    try:
        extras = tuple((str(a), str(h)) for a, h in json.loads(extra))
    except (ValueError, TypeError):
        return None
    return row[:2], row[2:5], (*row[5:9], extras, *row[10:])


def check_location(cache_dir: str, path: str) -> None:
    """The cache is a record like those beside the packages (pkgserver.records), opened by
    SQLite by name: so its folder must be this user's (or root's) and writable by no one else,
    which leaves nobody else a way to put a link, a FIFO or another file where the database,
    its journal or its shared memory will be; and those, if there, must be plain files of ours.
    Raises OSError."""
    st = os.stat(cache_dir)
    euid = os.geteuid()
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(errno.ENOTDIR, "not a directory", cache_dir)
    if st.st_uid not in (euid, 0):
        raise OSError(
            errno.EPERM, f"owned by uid {st.st_uid}, not by this user ({euid})", cache_dir
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise OSError(errno.EPERM, "writable by other users", cache_dir)
    for name in (path, path + "-wal", path + "-shm", path + "-journal"):
        try:
            entry = os.lstat(name)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(entry.st_mode) or entry.st_uid != euid or entry.st_nlink != 1:
            raise OSError(errno.EPERM, "not a plain file of this user's", name)


class DescriptionCache:
    def __init__(self, path: str, roots: Sequence[str]) -> None:
        self.path = path
        self.roots = [os.path.realpath(r) for r in roots]
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    @staticmethod
    def path_for(cache_dir: str, roots: Sequence[str]) -> str:
        """The cache file of this list of roots (in this order) under ``cache_dir``."""
        real = "\0".join(os.path.realpath(r) for r in roots)
        name = "index-" + hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        return os.path.join(cache_dir, name + ".sqlite3")

    @classmethod
    def open(cls, cache_dir: str, roots: Sequence[str]) -> DescriptionCache | None:
        cache = cls(cls.path_for(cache_dir, roots), roots)
        try:
            os.makedirs(cache_dir, mode=0o700, exist_ok=True)
            check_location(cache_dir, cache.path)
            cache._connect()
        except (OSError, sqlite3.Error) as exc:
            log.warning("no persistent index cache (%s): every start re-reads every file", exc)
            return None
        return cache

    def _connect(self) -> None:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None or row[0] != str(SCHEMA):
                db.execute("DROP TABLE IF EXISTS files")
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
            db.execute(
                "CREATE TABLE IF NOT EXISTS files (root INTEGER, relpath TEXT, size INTEGER,"
                " mtime_ns INTEGER, ino INTEGER, project TEXT, version TEXT, kind TEXT,"
                " sha256 TEXT, extra TEXT, requires_python TEXT,"
                " metadata_sha256 TEXT, summary TEXT, display_name TEXT, provenance TEXT,"
                " PRIMARY KEY (root, relpath))"
            )
        except sqlite3.Error:
            db.close()
            raise
        self._db = db

    def rows(self) -> Generator[Row, None, None]:
        """Every entry as ((root index, relpath), (size, mtime_ns, ino), fields), in key order;
        the fields are those of Cached, in its order.

        Streamed from SQLite in primary-key order, so a caller can merge it with its own sorted
        list without holding the whole cache in memory.
        """
        if self._db is None:
            return
        try:
            with self._lock:
                cursor = self._db.execute("SELECT * FROM files ORDER BY root, relpath")
                rows = cursor.fetchmany(4096)
                while rows:
                    for row in rows:
                        entry = _entry(row)
                        if entry is not None:
                            yield entry
                    rows = cursor.fetchmany(4096)
        except sqlite3.Error as exc:
            self._fail(exc)

    def store(
        self, files: Iterable[tuple[int, DistFile]], removals: Iterable[tuple[int, str]] = ()
    ) -> None:
        """Record described files (root index, DistFile) and forget removed ones, in one go."""
        if self._db is None:
            return
        rows = [
            (
                root,
                f.relpath,
                f.size,
                f.mtime_ns,
                f.ino,
                f.project,
                f.version,
                f.kind,
                f.sha256,
                json.dumps(f.extra_hashes) if f.extra_hashes else "",
                f.requires_python,
                f.metadata_sha256,
                f.summary,
                f.display_name,
                f.provenance_sha256,
            )
            for root, f in files
        ]
        gone = list(removals)
        if not rows and not gone:
            return
        try:
            with self._lock:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows
                )
                self._db.executemany("DELETE FROM files WHERE root = ? AND relpath = ?", gone)
                self._db.execute("COMMIT")
                if len(rows) + len(gone) > 1000:
                    # After a bulk write (a first start), fold the log into the database so the
                    # next start reads one file.
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        log.warning("index cache disabled after an error: %s", exc)
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                try:
                    self._db.close()
                finally:
                    self._db = None
