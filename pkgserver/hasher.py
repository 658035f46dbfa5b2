"""The large-file hasher: a thread of its own, so that a large (or sparse) file never holds up
the indexer's other work or the start."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from .catalog import DistFile, FileStat

__all__ = ["Hasher", "Job"]

Job = tuple[int, str, FileStat]  # root index, relpath, the stat it was found with


class Hasher:
    """Reads and hashes large files on a thread of its own.

    A large file takes seconds to hash (a sparse one, large without taking disk space, minutes);
    on the indexer's own thread that held up every new file, removal and yank, and a restart
    did not listen until it was done. Jobs come from the indexer's thread, which also takes the
    results (``done``); ``wake`` tells it that one is ready."""

    def __init__(
        self,
        describe: Callable[[int, str, FileStat], DistFile | None],
        wake: Callable[[], None],
    ) -> None:
        self._describe = describe
        self._wake = wake
        self._jobs: queue.SimpleQueue[tuple[str, Job] | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[tuple[str, Job, DistFile | None]] = queue.SimpleQueue()
        self._pending: dict[str, Job] = {}  # path -> the latest job asked for it
        self._thread: threading.Thread | None = None
        self._stopped = False

    def has(self, path: str) -> bool:
        return path in self._pending

    def submit(self, path: str, job: Job) -> None:
        """Hash the file (unless the same job is waiting already)."""
        if self._pending.get(path) == job or self._stopped:
            return
        self._pending[path] = job
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pkgserver-hasher", daemon=True)
            self._thread.start()
        self._jobs.put((path, job))

    def done(self) -> list[tuple[str, Job, DistFile | None]]:
        """The results of the latest jobs (older ones for the same file are dropped)."""
        out = []
        while not self._results.empty():
            path, job, described = self._results.get()
            if self._pending.get(path) == job:
                del self._pending[path]
                out.append((path, job, described))
        return out

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None or self._stopped:
                return
            path, job = item
            if self._pending.get(path) != job:
                continue  # a newer job for the file is queued: this one is out of date
            self._results.put((path, job, self._describe(*job)))
            self._wake()

    def stop(self) -> None:
        self._stopped = True
        self._jobs.put(None)
