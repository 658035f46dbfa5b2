"""The in-memory catalog: projects -> files.

Readers take ``catalog.snapshot`` (one attribute read) and never lock; writers build a new immutable
snapshot from a batch of changes and swap it in. A snapshot also carries per-project caches of
rendered pages, which die with it, so a rendering is never stale; all of them together are held
to one byte budget per catalog (``Catalog.budget``), least recently used first out.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from .distfile import is_prerelease, version_key, version_sort_key

__all__ = [
    "STATUSES",
    "Catalog",
    "DistFile",
    "Project",
    "ProjectStatus",
    "RenderBudget",
    "RenderCache",
    "Snapshot",
]

RENDER_BUDGET_BYTES = 32 * 1024 * 1024
_ENTRY_OVERHEAD = 200  # the key, the Rendered tuple, the ETag string, the LRU's own entry
_ITEM_BYTES = 100  # an item of a cached list (a tuple of references to what the catalog holds)


class RenderBudget:
    """The bytes held by every :class:`RenderCache` together, evicting the least recently used
    entry of any of them when a new one would go over ``max_bytes``.

    Without it, requests for every project of a large index (a mirror run, a crawler) would keep
    a rendering of each in memory until the project changed: 10,000 projects cost 100+ MB.
    """

    def __init__(self, max_bytes: int = RENDER_BUDGET_BYTES) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        # (id of the cache, key) -> (the cache, size). The strong reference keeps the id unique
        # for as long as the entry is here, even once the cache's project has been replaced.
        self._lru: OrderedDict[tuple[int, Any], tuple[RenderCache, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._lru)

    def touch(self, cache: RenderCache, key: Any) -> None:
        # On every cache hit, so without the lock: one OrderedDict operation is atomic under
        # the GIL, and an entry evicted meanwhile is simply not there any more.
        try:
            self._lru.move_to_end((id(cache), key))
        except KeyError:
            pass

    def add(self, cache: RenderCache, key: Any, size: int) -> None:
        size += _ENTRY_OVERHEAD
        with self._lock:
            token = (id(cache), key)
            old = self._lru.pop(token, None)
            if old is not None:
                self.used -= old[1]
            self._lru[token] = (cache, size)
            self.used += size
            while self.used > self.max_bytes and len(self._lru) > 1:
                (_, evicted_key), (owner, evicted_size) = self._lru.popitem(last=False)
                owner._entries.pop(evicted_key, None)
                self.used -= evicted_size

    def clear(self) -> None:
        with self._lock:
            for (_, key), (owner, _size) in self._lru.items():
                owner._entries.pop(key, None)
            self._lru.clear()
            self.used = 0

    def drop(self, cache: RenderCache) -> None:
        """Forget every entry of ``cache`` (its project or snapshot was replaced)."""
        with self._lock:
            for key in list(cache._entries):
                found = self._lru.pop((id(cache), key), None)
                if found is not None:
                    self.used -= found[1]
            cache._entries.clear()


class RenderCache:
    """Renderings of one project (or of a snapshot's index), keyed by whatever the renderers
    like (format, hash algorithm, base URL...). Values are bytes, objects with a ``body``, or
    lists; their sizes count against the catalog's budget (a private one when none is given)."""

    __slots__ = ("_budget", "_entries")

    def __init__(self, budget: RenderBudget | None = None) -> None:
        self._entries: dict[Any, Any] = {}
        self._budget = budget if budget is not None else RenderBudget()

    def get(self, key: Any) -> Any:
        value = self._entries.get(key)
        if value is not None:
            self._budget.touch(self, key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self._entries[key] = value
        self._budget.add(self, key, _size_of(value))

    def __contains__(self, key: Any) -> bool:
        return key in self._entries

    def clear(self) -> None:
        """Drop every rendering, giving its bytes back to the budget."""
        self._budget.drop(self)

    def __len__(self) -> int:
        return len(self._entries)


def _size_of(value: Any) -> int:
    """What a cached value holds in memory, roughly: its bytes, or its items."""
    if isinstance(value, bytes):
        return len(value)
    body = getattr(value, "body", None)
    if isinstance(body, bytes):
        return len(body)
    if isinstance(value, (list, tuple)):
        return _ITEM_BYTES * len(value)
    return 0


class FileStat(NamedTuple):
    """What the index keeps of a stat result: enough to tell whether a file changed."""

    st_size: int
    st_mtime_ns: int
    st_ino: int

    @property
    def st_mtime(self) -> float:
        return self.st_mtime_ns / 1e9


class DistFile(NamedTuple):
    """One distribution file, as the index describes it. Immutable."""

    filename: str
    relpath: str  # posix path relative to its root; the key of the catalog
    root: str  # the package directory it is in (one shared string per root)
    project: str  # normalized name
    version: str
    kind: str
    size: int
    mtime_ns: int
    ino: int  # with size and mtime_ns, what the persistent cache checks before reusing an entry
    sha256: str  # hex
    extra_hashes: tuple[tuple[str, str], ...]  # (algo, hex) for --hash-algo other than sha256
    requires_python: str | None
    metadata_sha256: str | None  # hash of the servable core metadata (PEP 658), if any
    summary: str | None
    display_name: str | None  # the project name as its metadata spells it
    # When the file was published or first seen under its name with its bytes (ns since the
    # epoch; see records.UploadTimes). 0: not recorded (an object store, --upload-time mtime,
    # an upload until its next start): the mtime stands in (see upload_time_ns).
    upload_ns: int = 0
    # sha256 of its verified PEP 740 provenance (FILE.provenance.json), if it has one
    provenance_sha256: str | None = None

    # Derived rather than stored: at 100,000 files every field costs megabytes.
    @property
    def path(self) -> str:
        """Absolute path on disk."""
        return self.root + "/" + self.relpath

    @property
    def mtime(self) -> float:
        """Seconds since the epoch."""
        return self.mtime_ns / 1e9

    @property
    def upload_time_ns(self) -> int:
        """The upload time served (PEP 700 ``upload-time``): recorded, else the mtime (to the
        microsecond, as PEP 700 and the record write it)."""
        return self.upload_ns or self.mtime_ns // 1000 * 1000

    @property
    def upload_time(self) -> float:
        """The upload time served, in seconds since the epoch."""
        return self.upload_time_ns / 1e9

    def matches(self, st: os.stat_result | FileStat) -> bool:
        """Whether a stat of the file still describes what was listed (size and mtime)."""
        return (st.st_size, st.st_mtime_ns) == (self.size, self.mtime_ns)

    @property
    def sort_key(self) -> tuple[Any, ...]:
        return (version_sort_key(self.version), self.filename)


_NOT_YANKED: Mapping[str, str] = {}

# PEP 792's project status markers. "active" is the default, never recorded.
ACTIVE, ARCHIVED, QUARANTINED, DEPRECATED = "active", "archived", "quarantined", "deprecated"
STATUSES = (ACTIVE, ARCHIVED, QUARANTINED, DEPRECATED)


class ProjectStatus(NamedTuple):
    """A project's status marker other than ``active`` (PEP 792), and why ("" for no reason)."""

    status: str  # one of STATUSES but "active"
    reason: str = ""

    @property
    def refuses_uploads(self) -> bool:
        """archived and quarantined: the index MUST NOT allow uploads of new distributions."""
        return self.status in (ARCHIVED, QUARANTINED)

    @property
    def withholds_files(self) -> bool:
        """quarantined: the index MUST NOT offer any distribution for download."""
        return self.status == QUARANTINED


class Project:
    """A project and its files, oldest version first. Immutable apart from its render cache
    and the derived values it computes once, when first asked (at 100,000 files, most
    projects are never asked)."""

    __slots__ = (
        "_by_version",
        "_current",
        "_provenance",
        "cache",
        "display_name",
        "files",
        "latest",
        "name",
        "status",
        "yanked",
    )

    def __init__(
        self,
        name: str,
        files: Iterable[DistFile],
        yanked: Mapping[str, str] | None = None,
        budget: RenderBudget | None = None,
        status: ProjectStatus | None = None,
    ) -> None:
        self.name = name
        self.files: tuple[DistFile, ...] = tuple(sorted(files, key=lambda f: f.sort_key))
        self.latest: DistFile = self.files[-1]
        self.display_name = self.latest.display_name or name
        self._by_version: dict[str, list[DistFile]] | None = None
        self._current: str | None = None
        self._provenance: bool | None = None
        # version -> reason ("" for none) of the yanked releases (PEP 592), for every spelling
        # of a yanked version among the files (a yank of 2.0 covers files named 2.0.0).
        self.yanked: Mapping[str, str] = (
            _resolve_yanks(self.versions, yanked) if yanked else _NOT_YANKED
        )
        # Its PEP 792 status marker; None when active (the default).
        self.status = status
        self.cache = RenderCache(budget)  # filled lazily by the renderers

    @property
    def offered(self) -> tuple[DistFile, ...]:
        """The files offered to installers and people: none while quarantined. ``files`` stays
        whole: it is what the store holds, which the indexer and uploads keep in step with."""
        if self.status is not None and self.status.withholds_files:
            return ()
        return self.files

    @property
    def has_provenance(self) -> bool:
        """Whether a file has verified PEP 740 provenance (found once: every page request
        asks, and a project may have 100,000 files)."""
        if self._provenance is None:
            self._provenance = any(f.provenance_sha256 for f in self.files)
        return self._provenance

    def yank_of(self, version: str) -> str | None:
        """The yank reason of ``version`` ("" when given none), or None if it is not yanked."""
        return self.yanked.get(version) if self.yanked else None

    @property
    def current(self) -> str:
        """The version to show and install by default: the newest final release that is not
        yanked, else the newest release not yanked, else the newest (as warehouse does)."""
        if self._current is None:
            versions = [v for v in reversed(self.versions) if v not in self.yanked]
            final = next((v for v in versions if not is_prerelease(v)), None)
            self._current = final or (versions[0] if versions else self.latest.version)
        return self._current

    @property
    def summary(self) -> str | None:
        return self.latest.summary

    def _grouped(self) -> dict[str, list[DistFile]]:
        if self._by_version is None:
            grouped: dict[str, list[DistFile]] = {}
            for f in self.files:
                grouped.setdefault(f.version, []).append(f)
            self._by_version = grouped  # a race computes it twice, to the same value
        return self._by_version

    @property
    def versions(self) -> list[str]:
        """Oldest first."""
        return list(self._grouped())

    def files_of(self, version: str) -> list[DistFile]:
        return list(self._grouped().get(version, ()))


def _resolve_yanks(versions: list[str], yanked: Mapping[str, str]) -> Mapping[str, str]:
    by_key = {version_key(v): reason for v, reason in yanked.items()}
    found = {v: by_key[k] for v in versions if (k := version_key(v)) in by_key}
    return found or _NOT_YANKED


class Snapshot:
    """An immutable view of the catalog at one moment."""

    __slots__ = ("by_filename", "cache", "files", "generation", "projects")

    def __init__(
        self,
        projects: Mapping[str, Project],
        files: Mapping[str, DistFile],
        by_filename: Mapping[str, DistFile],
        generation: int,
        budget: RenderBudget | None = None,
    ) -> None:
        self.projects = projects
        self.files = files  # relpath -> DistFile
        self.by_filename = by_filename  # lower-cased filename -> DistFile (first root wins)
        self.generation = generation
        self.cache = RenderCache(budget)  # the /simple/ index renderings

    def project(self, name: str) -> Project | None:
        return self.projects.get(name)

    def file(self, relpath: str) -> DistFile | None:
        """The file served at ``relpath`` (or under that filename): None for one that is not
        offered (its project quarantined)."""
        f = self.files.get(relpath) or self.by_filename.get(relpath.lower())
        return f if f is not None and self.offers(f) else None

    def offers(self, f: DistFile) -> bool:
        """Whether ``f`` may be downloaded: not while its project is quarantined (PEP 792)."""
        project = self.projects.get(f.project)
        return project is None or project.status is None or not project.status.withholds_files

    @property
    def file_count(self) -> int:
        return len(self.files)


class Catalog:
    """Holds the current snapshot; ``apply`` swaps in a new one. One writer at a time."""

    def __init__(
        self,
        on_new_projects: Callable[[set[str]], None] | None = None,
        budget: RenderBudget | None = None,
    ) -> None:
        # The bytes all renderings of this catalog's snapshots may hold together.
        self.budget = budget if budget is not None else RenderBudget()
        self.snapshot = Snapshot({}, {}, {}, 0, self.budget)
        self._lock = threading.Lock()
        self._yanks: Mapping[str, Mapping[str, str]] = {}
        # Project status markers (PEP 792), replaced whole: read without the lock (uploads ask
        # for projects that may have no files yet).
        self._statuses: Mapping[str, ProjectStatus] = {}
        # Told the names of projects that appear (every change goes through apply): the
        # hosted-names record that keeps them from ever being redirected to the fallback.
        self.on_new_projects = on_new_projects

    def apply(self, upserts: Iterable[DistFile] = (), removals: Iterable[str] = ()) -> Snapshot:
        """Add or replace files (keyed by relpath) and remove relpaths, as one atomic change.

        Costs O(changed projects) plus one dict copy, so a change in a 100,000-file catalog stays
        cheap; batch changes to pay the copy once.
        """
        upserts = list(upserts)
        with self._lock:
            old = self.snapshot
            files = dict(old.files)
            touched: set[str] = set()
            for relpath in removals:
                gone = files.pop(relpath, None)
                if gone is not None:
                    touched.add(gone.project)
            for f in upserts:
                prev = files.get(f.relpath)
                if prev is not None:
                    touched.add(prev.project)
                files[f.relpath] = f
                touched.add(f.project)
            if not touched:
                return old
            projects = dict(old.projects)
            by_filename = dict(old.by_filename)
            added: dict[str, list[DistFile]] = {}
            for f in upserts:
                added.setdefault(f.project, []).append(f)
            for name in touched:
                old_project = old.projects.get(name)
                members: dict[str, DistFile] = {}
                if old_project is not None:
                    for f in old_project.files:
                        # A filename determines its project, so homonyms share a project too.
                        if by_filename.get(f.filename.lower()) is f:
                            del by_filename[f.filename.lower()]
                        current = files.get(f.relpath)
                        if current is not None and current.project == name:
                            members[f.relpath] = current
                for f in added.get(name, ()):
                    if files.get(f.relpath) is f:
                        members[f.relpath] = f
                if members:
                    project = Project(
                        name,
                        members.values(),
                        self._yanks.get(name),
                        self.budget,
                        self._statuses.get(name),
                    )
                    projects[name] = project
                    for f in project.files:
                        by_filename.setdefault(f.filename.lower(), f)
                else:
                    projects.pop(name, None)
            new = Snapshot(projects, files, by_filename, old.generation + 1, self.budget)
            self.snapshot = new
        _drop_renderings(old, new, touched)
        if self.on_new_projects is not None:
            appeared = {n for n in touched if n in new.projects and n not in old.projects}
            if appeared:
                self.on_new_projects(appeared)
        return new

    def set_yanks(self, yanks: Mapping[str, Mapping[str, str]]) -> Snapshot:
        """Replace the yanked releases (project -> version -> reason); the projects whose yanks
        changed are rebuilt, so their cached pages go with the old ones."""

        def update() -> tuple[Mapping[str, Any], Mapping[str, Any]]:
            before, self._yanks = self._yanks, {p: dict(v) for p, v in yanks.items() if v}
            return before, self._yanks

        return self._rebuild_changed(update)

    def status_of(self, name: str) -> ProjectStatus | None:
        """The status marker of project ``name`` (normalized), None when active; known for
        names with no files too (an upload to a quarantined name is refused)."""
        return self._statuses.get(name)

    def set_statuses(self, statuses: Mapping[str, ProjectStatus]) -> Snapshot:
        """Replace the project status markers (project -> status, active ones left out); the
        projects whose status changed are rebuilt, so their cached pages go with the old ones."""

        def update() -> tuple[Mapping[str, Any], Mapping[str, Any]]:
            before = self._statuses
            self._statuses = {p: s for p, s in statuses.items() if s.status != ACTIVE}
            return before, self._statuses

        return self._rebuild_changed(update)

    def _rebuild_changed(
        self, update: Callable[[], tuple[Mapping[str, Any], Mapping[str, Any]]]
    ) -> Snapshot:
        """Apply ``update`` (under the lock: it replaces a per-project mapping and returns it
        before and after) and rebuild the listed projects whose entry changed."""
        with self._lock:
            old = self.snapshot
            before, after = update()
            touched = {
                name
                for name in set(before) | set(after)
                if before.get(name) != after.get(name) and name in old.projects
            }
            if not touched:
                return old
            projects = dict(old.projects)
            for name in touched:
                projects[name] = self._rebuilt(old.projects[name])
            new = Snapshot(projects, old.files, old.by_filename, old.generation + 1, self.budget)
            self.snapshot = new
        _drop_renderings(old, new, touched)
        return new

    def _rebuilt(self, project: Project) -> Project:
        """``project`` again with the current yanks and status (under the lock)."""
        name = project.name
        return Project(
            name, project.files, self._yanks.get(name), self.budget, self._statuses.get(name)
        )


def _drop_renderings(old: Snapshot, new: Snapshot, touched: Iterable[str]) -> None:
    """Free the renderings of what a new snapshot replaced: they would only take budget from
    live pages (a reader still holding the old snapshot renders again, as after an eviction)."""
    old.cache.clear()
    for name in touched:
        replaced = old.projects.get(name)
        if replaced is not None and new.projects.get(name) is not replaced:
            replaced.cache.clear()
