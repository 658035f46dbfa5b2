"""The indexer: keeps the catalog in step with the package directories (scan, watch, rescan).

Rules that keep every listed hash equal to the bytes served:
- A file is listed when its writer is known to be done: ``IN_CLOSE_WRITE`` (cp, scp), a rename
  into place (rsync, atomic publishers) or a hard link. A file found by a scan with no such signal
  is listed once its mtime is ``SETTLE`` seconds old.
- A listed file that receives bytes is unlisted at once, and re-listed when its writer closes it.
- A file is re-stat'ed after hashing; if it changed meanwhile, it is checked again later.
- Names starting with "." (files and folders) are never listed: publishers write temp files so.
"""

from __future__ import annotations

import heapq
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from . import inotify
from .cache import DescriptionCache
from .catalog import Catalog, DistFile, FileStat
from .distfile import (
    InvalidDistFilename,
    dist_extension,
)
from .fsutil import confined
from .hasher import Hasher
from .records import (
    MICROS,
    UPLOAD_TIMES_FILE,
    TimeEntry,
    UploadTimes,
    entry_parts,
    entry_time,
    time_entry,
    time_line,
)
from .scan import (
    CHANGED,
    FileChanged,
    describe,
    describe_in_processes,
    entry_from_fields,
    fields_of,
    is_hidden,
    iter_dist_files,
    project_of,
    skip_message,
    stamp,
    stamp_of,
)

__all__ = ["DEFAULT_MAX_FILE_SIZE", "Indexer", "ScanInterrupted"]

log = logging.getLogger(__name__)

SETTLE = 1.0  # seconds a scanned file's mtime must lie in the past before it is listed
LINK_CHECK = 0.25  # seconds after IN_CREATE with no bytes written: a hard link, list it
# Seconds without events before a file whose writer never closed it is checked by the mtime rule
# anyway (a missed close event). Long, because a stalled scp must not get its partial file listed.
QUIET = 300.0
SAFETY_RESCAN = 60.0  # seconds between rescans when inotify watches (missed events, overflows)
STUCK = 120.0  # seconds without a turn of the indexer's loop before /health says it is stuck
TURN_BUDGET = 0.5  # seconds of reading files per turn; the rest waits for the next turn
NO_WATCH_RESCAN = 5.0  # seconds between rescans without inotify
PARALLEL_MIN = 2000  # files to read before the first scan uses worker processes
BATCH = 500  # files per job sent to a worker process
# Files larger than this are read and hashed on a thread of their own, so that a large file
# (or a sparse one, which is large without taking disk space) never holds up the indexer.
BACKGROUND_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_FILE_SIZE = 1024**3  # files larger than this are not listed (--max-file-size)
# Lines of an upload-times record beyond twice the files listed before it is rewritten.
COMPACT_SLACK = 1000


class ScanInterrupted(Exception):
    """Indexer.interrupt() was called during the first scan."""


class Indexer:
    """Keeps ``catalog`` equal to what the roots hold. One worker thread does all the writing."""

    def __init__(
        self,
        roots: Sequence[str],
        catalog: Catalog,
        *,
        rescan_interval: float = 0.0,
        watch: bool = True,
        extra_algos: Sequence[str] = (),
        settle: float = SETTLE,
        cache: DescriptionCache | None = None,
        workers: int | None = None,
        on_tick: Callable[[], None] | None = None,
        on_claim: Callable[[set[str]], None] | None = None,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
        upload_times: Sequence[UploadTimes] | None = None,
        published: Callable[[str, str], int | None] | None = None,
    ) -> None:
        self.settle = settle
        # Each root's record of when its files were published or first seen (in the order of
        # ``roots``); None: no record, the files' mtimes are served (--upload-time mtime).
        self.upload_times = list(upload_times) if upload_times is not None else None
        # Per root: relpath -> what the record says (records.time_entry) of recorded files that
        # are not listed (not read yet, or gone: a file that comes back with the same bytes
        # keeps its time). The listed files' times are in the catalog.
        self._recorded: list[dict[str, TimeEntry]] = [{} for _ in roots]
        self._times_lock = threading.Lock()  # the worker and uploads (remember) both record
        # When the upload log says a file with these bytes was uploaded (relpath, sha256 ->
        # ns), for files the record does not know: uploaded before upload times were recorded.
        self.published = published
        # Told the names of projects that have a file here, listed or not (unreadable, a link
        # out, too large, still settling): a name with any file here is never sent to the
        # fallback index (dependency confusion), from the moment the file is seen.
        self.on_claim = on_claim
        self.max_file_size = max_file_size
        # Called on every turn of the worker's loop (at least once a second): for the records
        # beside the files (yanks) that a running server must see within a second.
        self.on_tick = on_tick
        # Timings for the metrics: a scan's duration by kind ("initial", "rescan"), and each
        # file read while running (a copy, a change).
        self.on_scan: Callable[[str, float], None] | None = None
        self.on_hash: Callable[[float], None] | None = None
        self.cache = cache
        self.workers = workers if workers is not None else (os.cpu_count() or 1)
        self._reused = 0
        self._walk_links: set[tuple[int, str]] = set()
        self._unsaved: list[tuple[int, DistFile]] = []
        self.roots = [os.path.abspath(r) for r in roots]
        self._real_roots = [os.path.realpath(r) for r in self.roots]
        self.catalog = catalog
        self.rescan_interval = rescan_interval
        self.extra_algos = tuple(extra_algos)
        self._want_watch = watch
        self._watcher: inotify.Watcher | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        # Worker state (touched only by the worker thread after start()).
        self._writing: dict[str, float] = {}  # abs path -> time of the last write event
        self._fresh: set[str] = set()  # created (open or link) with no bytes written since
        self._due: list[tuple[float, str, bool]] = []  # heap of (when, abs path, confirmed)
        self._warned: set[str] = set()
        self._requests: queue.SimpleQueue[tuple[str, float]] = queue.SimpleQueue()
        self._forced: set[str] = set()  # paths to hash again even if their stat is unchanged
        self.watching = False
        self._interrupted = False
        self._wake = threading.Event()  # without inotify: what the worker's loop waits on
        # Large files are hashed by a thread of their own (hasher.Hasher); the worker applies what
        # it found. ``_first_pending``: files of the first scan not listed yet (see ready()).
        self._hasher = Hasher(self._describe_now, self._nudge)
        self._first_pending: set[str] = set()
        self._started = False
        self._beat = time.monotonic()  # when the worker's loop last turned (ready())

    def interrupt(self) -> None:
        """Ask a first scan in progress to stop (from a signal handler: it only sets a flag,
        which the scan checks between files; an exception raised in the middle of the worker
        pool's machinery could leave it hanging). The scan then raises ScanInterrupted."""
        self._interrupted = True

    def _check_interrupted(self) -> None:
        if self._interrupted:
            raise ScanInterrupted("the first scan was interrupted")

    # -- public ----------------------------------------------------------------------------
    def initial_scan(self) -> int:
        """Scan every root and fill the catalog; returns the number of files listed.

        Entries of the persistent cache whose file is unchanged are reused; the rest are read,
        in parallel processes when there are many.
        """
        started = time.monotonic()
        self._reused = 0
        if self.upload_times is not None:
            self._recorded = [times.load() for times in self.upload_times]
        self._rescan(first=True)
        self._compact_times(first=True)
        if self.on_scan is not None:
            self.on_scan("initial", time.monotonic() - started)
        snap = self.catalog.snapshot
        log.info(
            "indexed %d files of %d projects in %.2fs (%d from the cache)",
            snap.file_count,
            len(snap.projects),
            time.monotonic() - started,
            self._reused,
        )
        return snap.file_count

    def start(self) -> None:
        """Watch (inotify where possible), scan once, then start the worker thread.

        Watches go in before the scan, so a file copied in during the scan is not missed: its
        events wait in the inotify queue for the worker.
        """
        if self._want_watch:
            watcher: inotify.Watcher | None = None
            try:
                watcher = inotify.Watcher()
                for root in self.roots:
                    watcher.add_tree(root)
                self._watcher, self.watching = watcher, True
            except OSError as exc:
                if watcher is not None:
                    watcher.close()
                log.warning(
                    "cannot watch the package directories (%s); rescanning every %ss instead",
                    exc,
                    self.rescan_interval or NO_WATCH_RESCAN,
                )
        if not self.rescan_interval:
            # Without inotify, rescans are how changes are seen; with it, a safety net for
            # missed events.
            self.rescan_interval = SAFETY_RESCAN if self.watching else NO_WATCH_RESCAN
        self.initial_scan()
        self._settle_first_scan()
        self._started = True
        self._thread = threading.Thread(target=self._run, name="pkgserver-indexer", daemon=True)
        self._thread.start()

    def _settle_first_scan(self) -> None:
        """List the files the first scan found too young to list (mtime under ``settle``
        seconds old: copied in just before the start) before serving begins, so that
        ``cp dist/* packages/ && pkgserver run packages/ && pip install ...`` finds them. At
        most ``settle`` + 1 s; a file still being written then is listed when its writer closes
        it, as at any time."""
        deadline = time.monotonic() + self.settle + 1.0
        while self._due and not self._interrupted:
            now = time.monotonic()
            if now >= deadline:
                break
            wait = min(deadline - now, max(0.0, self._due[0][0] - now))
            if self._watcher is not None:
                self._handle(self._watcher.read(wait))
            elif wait > 0:
                time.sleep(wait)
            self._process_due()
            self._take_hashed()

    def ready(self) -> str | None:
        """None once the first scan's files are all listed and the indexer keeps up; else
        what is still being done (large files of the first scan are hashed after serving has
        begun), or that the indexer is stuck (then files copied in are not seen)."""
        if not self._started:
            return "the first scan is running"
        pending = len(self._first_pending)
        if pending:
            return f"starting: {pending} large file(s) found at start are still being hashed"
        stuck = time.monotonic() - self._beat
        if self._thread is not None and stuck > STUCK:
            return f"the indexer has not turned for {stuck:.0f} s: new files are not being seen"
        return None

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._hasher.stop()
        if self._watcher is not None:
            self._watcher.wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        if self.cache is not None:
            self._save_unsaved()  # a scan without a worker thread (tests, tools)
            self.cache.close()

    def _nudge(self) -> None:
        """Wake the worker's loop (from the hasher's thread: a result is ready)."""
        self._wake.set()
        watcher = self._watcher
        if watcher is not None:
            watcher.nudge()

    def _save_unsaved(self) -> None:
        if self._unsaved and self.cache is not None:
            unsaved, self._unsaved = self._unsaved, []
            self.cache.store(unsaved)

    def remember(self, f: DistFile) -> None:
        """Record a file listed by an upload in the persistent cache (thread-safe)."""
        located = self.root_of(f.path)
        if self.cache is not None and located is not None:
            self.cache.store([(located[0], f)])
        if self.upload_times is not None and located is not None:
            # Published now: its time is the moment its bytes were stored (its mtime, what
            # the catalog serves for it until the next start, which reads it from here).
            line = time_line(f.relpath, f.sha256, f.upload_time_ns)
            with self._times_lock:
                self._recorded[located[0]].pop(f.relpath, None)
                self.upload_times[located[0]].add(line, 1)

    def recheck(self, path: str, delay: float = 0.0) -> None:
        """Ask the worker to read and hash ``path`` again (thread-safe; from request threads
        that found it other than listed, or the hasher), even if its size and mtime are what
        the catalog lists: a file rewritten in place, its mtime restored or unchanged within
        the clock's granularity, differs only in its hash."""
        self._requests.put((path, delay))
        self._nudge()

    def root_of(self, path: str) -> tuple[int, str] | None:
        """(root index, posix relpath) for an absolute path inside a root, else None."""
        for i, root in enumerate(self.roots):
            if path.startswith(root + os.sep):
                return i, path[len(root) + 1 :].replace(os.sep, "/")
        return None

    # -- the worker ------------------------------------------------------------------------
    def _run(self) -> None:
        next_rescan = time.monotonic() + self.rescan_interval if self.rescan_interval else None
        self._save_unsaved()
        while not self._stop.is_set():
            now = self._beat = time.monotonic()
            timeout = 1.0
            if self._due:
                timeout = min(timeout, max(0.0, self._due[0][0] - now))
            if next_rescan is not None:
                timeout = min(timeout, max(0.0, next_rescan - now))
            try:
                if self._watcher is not None:
                    events = self._watcher.read(timeout)
                else:
                    self._wake.wait(timeout)
                    self._wake.clear()
                    events = []
                self._handle(events)
                self._take_hashed()
                while not self._requests.empty():
                    path, delay = self._requests.get()
                    self._forced.add(path)
                    self._schedule(time.monotonic() + delay, path, confirmed=False)
                self._process_due()
                self._check_quiet_writers()
                if self.on_tick is not None:
                    self.on_tick()
                if next_rescan is not None and time.monotonic() >= next_rescan:
                    started = time.monotonic()
                    self._rescan()
                    self._compact_times()
                    if self.on_scan is not None:
                        self.on_scan("rescan", time.monotonic() - started)
                    next_rescan = time.monotonic() + self.rescan_interval
            except Exception:  # the indexer must outlive any one bad event
                log.exception("indexer error; rescanning")
                self._safe_rescan()

    def _safe_rescan(self) -> None:
        try:
            self._rescan()
        except Exception:
            log.exception("rescan failed")
            self._stop.wait(1.0)

    def _handle(self, events: Iterable[inotify.Event]) -> None:
        now = time.monotonic()
        removals: list[str] = []
        claims: list[str] = []
        for ev in events:
            kind, path = ev.kind, ev.path
            if kind == inotify.OVERFLOW:
                # Close events may be among the lost ones: forget who was writing, and let the
                # mtime rule of the rescan decide.
                log.warning("inotify queue overflowed; rescanning")
                self._writing.clear()
                self._fresh.clear()
                self._rescan()
                continue
            if kind == inotify.DIR_ADDED:
                self._scan_subtree(path)
                continue
            if kind == inotify.DIR_GONE:
                for rel, gone_path in self._listed_under(path):
                    self._unlist(rel, gone_path, removals)
                continue
            located = self._locate(path)
            if located is None:
                continue
            relpath = located
            if kind == inotify.WRITING:
                self._writing[path] = now
                self._fresh.discard(path)
                listed = self.catalog.snapshot.files.get(relpath)
                if listed is not None and listed.path == path:
                    removals.append(relpath)  # its bytes are changing: stop serving the old hash
            elif kind == inotify.CREATED:
                # Either open(O_CREAT) (bytes and a close will follow) or a hard link (nothing
                # follows): look again shortly, and list it then only if no bytes arrived.
                claims.append(relpath)
                self._writing[path] = now
                self._fresh.add(path)
                self._schedule(now + LINK_CHECK, path, confirmed=False)
            elif kind in (inotify.CLOSED, inotify.MOVED_IN):
                claims.append(relpath)
                self._writing.pop(path, None)
                self._fresh.discard(path)
                self._schedule(now, path, confirmed=True)
            elif kind == inotify.TOUCHED:
                # Times changed (touch -d, rsync -t): the listed mtime is stale; bytes are not.
                self._schedule(now, path, confirmed=False)
            elif kind == inotify.GONE:
                self._writing.pop(path, None)
                self._fresh.discard(path)
                self._unlist(relpath, path, removals)
        self._claim(claims)
        if removals:
            self._apply([], removals)

    def _claim(self, relpaths: Iterable[str]) -> None:
        """Claim the projects of files seen here, whether they will be listed or not."""
        if self.on_claim is None:
            return
        projects = self.catalog.snapshot.projects
        names = {n for r in relpaths if (n := project_of(r)) is not None and n not in projects}
        if names:
            self.on_claim(names)

    def _locate(self, path: str) -> str | None:
        found = self.root_of(path)
        if found is None:
            return None
        _, relpath = found
        if is_hidden(relpath) or dist_extension(relpath) is None:
            return None
        return relpath

    def _listed_under(self, directory: str) -> list[tuple[str, str]]:
        prefix = directory + os.sep
        return [
            (rel, f.path)
            for rel, f in self.catalog.snapshot.files.items()
            if f.path.startswith(prefix)
        ]

    def _unlist(self, relpath: str, path: str, removals: list[str]) -> None:
        """Unlist ``relpath`` if ``path`` is what provides it; a later root's file of the same
        relpath (hidden until now) gets its chance."""
        listed = self.catalog.snapshot.files.get(relpath)
        if listed is None or listed.path != path:
            return
        removals.append(relpath)
        now = time.monotonic()
        for root in self.roots:
            other = os.path.join(root, *relpath.split("/"))
            if other != path and os.path.isfile(other):
                self._schedule(now, other, confirmed=False)

    def _schedule(self, when: float, path: str, confirmed: bool) -> None:
        heapq.heappush(self._due, (when, path, confirmed))

    def _process_due(self) -> None:
        now = time.monotonic()
        upserts: list[DistFile] = []
        removals: list[str] = []
        # A path due several times at once is confirmed if any entry is: cp -p and scp -p set
        # times after closing, and that IN_ATTRIB must not turn the close into a 1 s wait.
        due: dict[str, bool] = {}
        while self._due and self._due[0][0] <= now:
            _, path, confirmed = heapq.heappop(self._due)
            due[path] = due.get(path, False) or confirmed
        # At most TURN_BUDGET seconds of reading per turn: what is left waits for the next
        # one, so that a burst of files (or of costly archives) never holds up the events,
        # removals, yanks and claims that the loop handles between turns.
        deadline = time.perf_counter() + TURN_BUDGET
        for path, confirmed in due.items():
            if time.perf_counter() > deadline:
                self._schedule(now, path, confirmed)
                continue
            if not confirmed and path in self._writing:
                if path not in self._fresh:
                    continue  # bytes are arriving: its writer's close (or QUIET) lists it
                # Created, and no bytes since: a hard link (or a writer yet to start, whose
                # empty file is not listed). Either way it is no longer "being written".
                del self._writing[path]
                self._fresh.discard(path)
            self._check(path, confirmed, upserts, removals)
        self._apply(upserts, removals)

    def _check_quiet_writers(self) -> None:
        now = time.monotonic()
        for path, last in list(self._writing.items()):
            if now - last >= QUIET:
                # No close event came (a missed event, or a writer that keeps the file open):
                # fall back to the mtime rule.
                del self._writing[path]
                self._fresh.discard(path)
                self._schedule(now, path, confirmed=False)

    def _check(
        self, path: str, confirmed: bool, upserts: list[DistFile], removals: list[str]
    ) -> None:
        located = self.root_of(path)
        if located is None:
            return
        root_index, relpath = located
        try:
            st = os.stat(path)
        except OSError:
            self._unlist(relpath, path, removals)
            return
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            # An empty file is no distribution; it is also what scp shows before the first bytes.
            self._unlist(relpath, path, removals)
            return
        if not confirmed:
            age = time.time() - st.st_mtime
            if age < self.settle:
                self._schedule(time.monotonic() + (self.settle - age) + 0.05, path, confirmed=False)
                return
        if self._shadowed(root_index, relpath, path):
            return  # an earlier root already provides this relpath
        listed = self.catalog.snapshot.files.get(relpath)
        forced = path in self._forced
        self._forced.discard(path)
        if listed is not None and listed.matches(st) and not forced:
            return
        described = self._describe(root_index, relpath, st)
        if described is None:
            self._unlist(relpath, path, removals)
            return
        try:
            after = os.stat(path)
        except OSError:
            self._unlist(relpath, path, removals)
            return
        if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            # Changed while we read it: never list a hash of bytes that are no longer there.
            self._unlist(relpath, path, removals)
            self._schedule(time.monotonic() + 0.2, path, confirmed=False)
            return
        upserts.append(described)

    def _shadowed(self, root_index: int, relpath: str, path: str) -> bool:
        """Whether another root's file of the same relpath, earlier in the list, is listed."""
        listed = self.catalog.snapshot.files.get(relpath)
        if listed is None or listed.path == path:
            return False
        provider = self.root_of(listed.path)
        return provider is None or provider[0] <= root_index

    def _checked_path(self, root_index: int, relpath: str, walked: bool = False) -> bool:
        """Confined to its root and UTF-8. ``walked``: it was just seen by a scan, which
        noted every symbolic link, so a file not noted needs no lstat to be confined."""
        path = self.roots[root_index] + "/" + relpath
        if (not walked or (root_index, relpath) in self._walk_links) and not self._confined(path):
            self._warn_once(relpath, "is a link that leaves the package directory; skipped")
            return False
        try:
            relpath.isascii() or relpath.encode("utf-8")
        except UnicodeEncodeError:
            self._warn_once(relpath, "has a name that is not UTF-8; skipped")
            return False
        return True

    def _describe(
        self, root_index: int, relpath: str, st: os.stat_result | FileStat, walked: bool = False
    ) -> DistFile | None:
        """The file's entry, or None: not listable, or (a large file) left to the hasher's
        thread, which lists it when it is done (_take_hashed)."""
        if not self._checked_path(root_index, relpath, walked):
            return None
        if st.st_size > self.max_file_size:
            self._warn_once(
                relpath,
                f"is larger than --max-file-size ({st.st_size} > {self.max_file_size} bytes); "
                "skipped",
            )
            return None
        if st.st_size > BACKGROUND_BYTES:
            path = self.roots[root_index] + "/" + relpath
            self._hasher.submit(path, (root_index, relpath, stamp(st)))
            if not self._started and self._hasher.has(path):
                self._first_pending.add(path)  # found at start (settling included): /health
            return None
        return self._describe_now(root_index, relpath, st)

    def _describe_now(
        self, root_index: int, relpath: str, st: os.stat_result | FileStat
    ) -> DistFile | None:
        """Read and hash the file now (on the worker's thread, or the hasher's)."""
        root = self.roots[root_index]
        try:
            started = time.perf_counter()
            described = describe(root, relpath, st, self.extra_algos)
            if self.on_hash is not None:
                self.on_hash(time.perf_counter() - started)
            return self._compact(root_index, described)
        except FileChanged:
            self.recheck(root + "/" + relpath, delay=0.5)  # being written: look again soon
        except (InvalidDistFilename, OSError) as exc:
            self._warn_once(relpath, skip_message(exc))
        except Exception:  # one bad file must never stop a scan
            log.exception("unexpected error reading %r; skipped", relpath)
            self._warned.add(relpath)
        return None

    def _take_hashed(self) -> None:
        """List the large files the hasher has read, if they are still what it read."""
        upserts: list[DistFile] = []
        now = time.monotonic()
        for path, (root_index, relpath, st), described in self._hasher.done():
            self._first_pending.discard(path)
            if described is None:
                continue
            try:
                current = stamp(os.stat(path))
            except OSError:
                continue  # gone meanwhile: its removal was seen
            if current != st or path in self._writing:
                self._schedule(now, path, confirmed=False)  # changed while read: again
                continue
            if not self._shadowed(root_index, relpath, path):
                upserts.append(described)
        self._apply(upserts, [])

    def _confined(self, path: str) -> bool:
        return confined(path, self._real_roots)

    def _warn_once(self, relpath: str, message: str) -> None:
        if relpath not in self._warned:
            self._warned.add(relpath)
            log.warning("%r %s", relpath, message)  # %r: a name cannot forge log lines

    def _scan_subtree(self, directory: str) -> None:
        now = time.monotonic()
        located = self.root_of(directory + os.sep + "x")
        if located is None:
            return
        found: list[str] = []
        for rel, _st in iter_dist_files(directory, odd=found):
            found.append(rel)
            path = os.path.join(directory, *rel.split("/"))
            if path not in self._writing:
                self._schedule(now, path, confirmed=False)
        self._claim(found)

    def _rescan(self, first: bool = False) -> None:
        """Compare the disk with the catalog. Files with old mtimes are listed at once."""
        snap = self.catalog.snapshot
        seen: set[str] = set()
        upserts: list[DistFile] = []
        removals: list[str] = []
        todo: list[tuple[int, str, FileStat, bool]] = []
        now_wall = time.time()
        now = time.monotonic()
        walk_links: set[tuple[int, str]] = set()
        odd: list[str] = []
        for root_index, root in enumerate(self.roots):
            links: set[str] = set()
            for relpath, st in iter_dist_files(root, links, odd):
                if relpath in seen:
                    continue  # an earlier root wins
                seen.add(relpath)
                path = root + "/" + relpath
                listed = snap.files.get(relpath)
                if listed is not None and listed.path == path and listed.matches(st):
                    continue
                if path in self._writing:
                    continue
                if st.st_size == 0:
                    if listed is not None:
                        removals.append(relpath)
                    continue
                if now_wall - st.st_mtime < self.settle:
                    self._schedule(now, path, confirmed=False)
                    continue
                todo.append((root_index, relpath, st, listed is not None))
            walk_links.update((root_index, rel) for rel in links)
        self._walk_links = walk_links
        described_all = self._describe_all(todo, first)
        for (_, relpath, _, was_listed), described in zip(todo, described_all):
            if described is not None:
                upserts.append(described)
            elif was_listed:
                removals.append(relpath)
        removals.extend(rel for rel in snap.files if rel not in seen)
        # _describe_all stored what it read in the cache, and gave it its upload time.
        self._apply(upserts, removals, remember=False)
        now_listed = self.catalog.snapshot.files
        self._claim([*(rel for rel in seen if rel not in now_listed), *odd])

    def _describe_all(
        self, todo: list[tuple[int, str, FileStat, bool]], first: bool
    ) -> list[DistFile | None]:
        """Describe every file of a scan: from the persistent cache where it is still right
        (first scan only), else by reading it, in worker processes when there are many."""
        results: list[DistFile | None] = [None] * len(todo)
        pending = list(range(len(todo)))
        if first and self.cache is not None:
            pending = self._reuse_cached(todo, results)
        large = [i for i in pending if todo[i][2].st_size > BACKGROUND_BYTES]
        if large:
            # Too large for the limit (skipped), or hashed on the hasher's thread: the start
            # (and the rest of a rescan) need not wait for them.
            pending = [i for i in pending if todo[i][2].st_size <= BACKGROUND_BYTES]
            for i in large:
                root_index, relpath, st, _ = todo[i]
                self._describe(root_index, relpath, st, walked=True)
        if first and len(pending) >= PARALLEL_MIN and self.workers > 1:
            self._describe_parallel(todo, pending, results)
        else:
            for i in pending:
                self._check_interrupted()
                root_index, relpath, st, _ = todo[i]
                results[i] = self._describe(root_index, relpath, st, walked=True)
        if self.upload_times is not None:
            # Here rather than in _apply: the copies replace the entries before the cache's
            # batch holds them too (at 100,000 files, both would cost 20 MB).
            self._stamp(results)
        if self.cache is not None:
            # Only what was read now: what came from the cache is there already. Written by the
            # worker thread once serving has begun (a first start of 100,000 files need not
            # wait for 100,000 inserts; if it dies before, the next start reads them again).
            fresh = [(todo[i][0], f) for i in pending if (f := results[i]) is not None]
            if first:
                self._unsaved.extend(fresh)
            else:
                self.cache.store(fresh)
        return results

    def _reuse_cached(
        self, todo: list[tuple[int, str, FileStat, bool]], results: list[DistFile | None]
    ) -> list[int]:
        """Merge the scan (sorted) with the cache's rows (streamed in key order): reuse entries
        whose file is unchanged, drop rows of files that are gone. Returns what is left to read.

        A merge rather than a lookup table: the table would cost tens of MB at 100,000 files.
        """
        assert self.cache is not None
        want_algos = set(self.extra_algos)
        pending: list[int] = []
        stale: list[tuple[int, str]] = []
        keys = [(t[0], t[1]) for t in todo]
        # The recorded upload times (per root), taken as entries are built: no other thread
        # records before the first scan is over.
        recorded = self._recorded if self.upload_times is not None else None
        rows = self.cache.rows()
        try:
            row = next(rows, None)
            for n, i in enumerate(sorted(range(len(todo)), key=keys.__getitem__)):
                if not n % 1024:
                    self._check_interrupted()
                key = keys[i]
                while row is not None and row[0] < key:
                    stale.append(row[0])
                    row = next(rows, None)
                if row is not None and row[0] == key:
                    _, stamp, fields = row
                    row = next(rows, None)
                    st = todo[i][2]
                    extras = fields[4]
                    if (
                        stamp == st  # FileStat is (size, mtime_ns, ino)
                        and ({a for a, _ in extras} == want_algos if extras or want_algos else True)
                        and self._checked_path(key[0], key[1], walked=True)
                    ):
                        # Its recorded upload time, if of these bytes, goes in now: a copy of
                        # each entry to add it later costs a tenth of this merge.
                        entry = recorded[key[0]].pop(key[1], None) if recorded else None
                        upload_ns = 0  # none recorded for these bytes: _stamp gives it one
                        if entry is not None and entry >> 64 == int(fields[3][:16], 16):
                            upload_ns = (entry & MICROS) * 1000  # entry_time, inlined
                        results[i] = entry_from_fields(
                            self.roots[key[0]], key[1], st, fields, upload_ns
                        )
                        self._reused += 1
                        continue
                pending.append(i)
            while row is not None:
                stale.append(row[0])
                row = next(rows, None)
        finally:
            rows.close()
        self.cache.store([], stale)
        return pending

    def _compact(self, root_index: int, f: DistFile) -> DistFile:
        """``f`` with its repeated strings shared (see scan.entry_from_fields)."""
        return entry_from_fields(self.roots[root_index], f.relpath, stamp_of(f), fields_of(f))

    def _describe_parallel(
        self,
        todo: list[tuple[int, str, FileStat, bool]],
        pending: list[int],
        results: list[DistFile | None],
    ) -> None:
        """Read many files in worker processes (the first start of a large directory)."""
        jobs = [i for i in pending if self._checked_path(todo[i][0], todo[i][1], walked=True)]
        log.info("reading %d files with %d processes", len(jobs), self.workers)
        try:
            describe_in_processes(
                [(self.roots[todo[i][0]], todo[i][1], todo[i][2]) for i in jobs],
                self.workers,
                self.extra_algos,
                self._parallel_outcome(todo, jobs, results),
                batch_size=BATCH,
            )
        except (OSError, RuntimeError) as exc:  # no worker processes here: read in this one
            log.warning("parallel indexing unavailable (%s); reading in one process", exc)
            for i in jobs:
                root_index, relpath, st, _ = todo[i]
                results[i] = self._describe(root_index, relpath, st)

    def _parallel_outcome(
        self,
        todo: list[tuple[int, str, FileStat, bool]],
        jobs: list[int],
        results: list[DistFile | None],
    ) -> Callable[[int, DistFile | str], None]:
        """What to do with the n-th job's outcome: a DistFile, CHANGED, or a skip message."""

        def outcome(n: int, found: DistFile | str) -> None:
            if not n % BATCH:
                self._check_interrupted()  # about once a batch, as the scan goes
            i = jobs[n]
            root_index, relpath, _, _ = todo[i]
            if found == CHANGED:
                self.recheck(self.roots[root_index] + "/" + relpath, delay=0.5)
            elif isinstance(found, str):
                self._warn_once(relpath, found)
            else:
                results[i] = found

        return outcome

    def _apply(self, upserts: list[DistFile], removals: list[str], remember: bool = True) -> None:
        if not upserts and not removals:
            return
        up = {f.relpath for f in upserts}
        removals = [r for r in removals if r not in up]
        old = self.catalog.snapshot.files
        gone = [old[r] for r in removals if r in old]
        if self.upload_times is not None:
            self._keep_times(gone)
            if remember:  # else from a scan, whose _describe_all gave the times
                self._stamp(upserts)
        self.catalog.apply(upserts, removals)
        if self.cache is not None and remember:
            self.cache.store(
                [(loc[0], f) for f in upserts if (loc := self.root_of(f.path)) is not None],
                [(loc[0], f.relpath) for f in gone if (loc := self.root_of(f.path)) is not None],
            )

    # -- upload times --------------------------------------------------------------------------
    def _keep_times(self, gone: list[DistFile]) -> None:
        """Remember the times of files unlisted, for a return with the same bytes."""
        with self._times_lock:
            for f in gone:
                located = self.root_of(f.path)
                if located is not None:
                    entry = time_entry(f.sha256, f.upload_time_ns)
                    self._recorded[located[0]][f.relpath] = entry

    def _stamp(self, files: list[DistFile | None] | list[DistFile]) -> None:
        """Give each file of ``files`` (in place) that has none its upload time: the listed
        entry's for the same file with the same bytes, else the recorded one, else now (first
        seen), recorded with one write per root."""
        assert self.upload_times is not None
        listed = self.catalog.snapshot.files
        now = time.time_ns() // 1000 * 1000  # the record keeps microseconds
        new: dict[int, bytearray] = {}
        counts: dict[int, int] = {}
        root_of = {root: i for i, root in enumerate(self.roots)}
        with self._times_lock:
            for i, f in enumerate(files):
                if f is None or f.upload_ns:
                    continue
                root_index = root_of.get(f.root)
                if root_index is None:
                    continue
                prev = listed.get(f.relpath)
                known = self._recorded[root_index].pop(f.relpath, None)
                when = None
                if prev is not None and prev.path == f.path and prev.sha256 == f.sha256:
                    when = prev.upload_time_ns  # the same bytes, touched or read again
                elif known is not None:
                    when = entry_time(known, f.sha256)  # recorded (a start, or a return)
                if when is None:
                    # Not recorded: uploaded before upload times were (the upload log says
                    # when), else first seen now, or other bytes under the name.
                    if self.published is not None:
                        when = self.published(f.relpath, f.sha256)
                    if when is None:
                        when = now
                    new.setdefault(root_index, bytearray()).extend(
                        time_line(f.relpath, f.sha256, when)
                    )
                    counts[root_index] = counts.get(root_index, 0) + 1
                # As f._replace(upload_ns=when) does (the last field but provenance_sha256), at a
                # fifth of the cost (100,000 at start).
                files[i] = tuple.__new__(DistFile, (*f[:-2], when, f[-1]))
            for root_index, data in new.items():
                self.upload_times[root_index].add(data, counts[root_index])

    def _compact_times(self, first: bool = False) -> None:
        """Rewrite a root's record with only the files still there once most of its lines
        are of files gone or replaced (checked at start and after each rescan), so that it
        stays about the size of what is listed. After the first scan, what is held of the
        record in memory is only what is on disk and not listed yet."""
        if self.upload_times is None:
            return
        if first:
            with self._times_lock:
                for root_index, root in enumerate(self.roots):
                    recorded = self._recorded[root_index]
                    self._recorded[root_index] = {
                        rel: entry
                        for rel, entry in recorded.items()
                        if os.path.lexists(root + "/" + rel)
                    }
        files = self.catalog.snapshot.files
        if all(t.lines <= 2 * len(files) + COMPACT_SLACK for t in self.upload_times):
            return  # the common case, at the cost of a few comparisons
        for root_index, times in enumerate(self.upload_times):
            root = self.roots[root_index]
            live = [
                f for f in files.values() if (loc := self.root_of(f.path)) and loc[0] == root_index
            ]
            if times.lines <= 2 * len(live) + COMPACT_SLACK:
                continue
            with self._times_lock:
                # Recorded files that are not listed stay while they are on disk (being
                # hashed, unreadable, shadowed by an earlier root); the others are forgotten.
                kept = {
                    rel: entry
                    for rel, entry in self._recorded[root_index].items()
                    if os.path.lexists(root + "/" + rel)
                }
                self._recorded[root_index] = kept
                if times.lines <= 2 * (len(live) + len(kept)) + COMPACT_SLACK:
                    continue
                entries = [(f.relpath, f.sha256, f.upload_time_ns) for f in live]
                entries.extend((rel, *entry_parts(entry)) for rel, entry in kept.items())
                before = times.lines
                if times.rewrite(entries):
                    log.info(
                        "compacted %s: %d lines, of %d",
                        times.records.file(UPLOAD_TIMES_FILE),
                        times.lines,
                        before,
                    )
