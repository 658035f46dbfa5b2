"""The names of every project ever hosted here: never redirected to the public index.

Dependency confusion: if a project's files are all removed from a private index that redirects
unknown names to PyPI, the next ``pip install`` of that name follows the redirect and installs
whatever someone published there under the same name. So a name, once hosted, stays claimed:
``/simple/<name>/`` answers an empty page instead of a redirect until an admin runs
``pkgserver forget NAME DIR...``.

The names live in the package directory itself (``.pkgserver/hosted-projects`` in the first
one, a normalized name per line), not in the index cache, which is safe to delete: the claim must
survive as long as the files it protects, and travel with them (backups, volumes). The file is
read from every package directory; a running server re-reads it within a second of a change.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .fsutil import ChangeWatch
from .records import HOSTED_FILE, STATE_DIR, RecordDir, rewriting

if TYPE_CHECKING:
    from .storage import Records

log = logging.getLogger(__name__)

__all__ = ["NAMES_FILE", "HostedNames"]

NAMES_FILE = f"{STATE_DIR}/{HOSTED_FILE}"
_VALID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")  # normalized (PEP 503) names only (fullmatch)
RELOAD_EVERY = 1.0


class HostedNames:
    """A set of normalized project names, persisted in ``<root>/.pkgserver/hosted-projects``."""

    def __init__(
        self,
        roots: Sequence[str],
        reload_every: float = RELOAD_EVERY,
        *,
        folders: Sequence[Records] | None = None,
    ) -> None:
        # Where the names are kept: each root's .pkgserver folder, or the records given (an
        # object store's: storage.Records).
        self.folders: list[Records] = (
            list(folders) if folders is not None else [RecordDir(root) for root in roots]
        )
        self.paths = [f.file(HOSTED_FILE) for f in self.folders]
        self._lock = threading.Lock()
        self._names: frozenset[str] = frozenset()
        self._unsaved: set[str] = set()  # claimed while the file could not be written
        # Each folder's names as last read. A record that can no longer be read (a FIFO or a
        # link swapped in, the folder renamed away) keeps them: only a record that reads,
        # which 'pkgserver forget' rewrites, lifts a claim while the server runs.
        self._known: list[set[str]] = [set() for _ in self.folders]
        self._watch = ChangeWatch(self._stamps, every=reload_every)
        self.reload()

    def _stamps(self) -> list[object]:
        return [f.stamp(HOSTED_FILE) for f in self.folders]

    # -- reading ---------------------------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        self._maybe_reload()
        return name in self._names

    def names(self) -> frozenset[str]:
        self._maybe_reload()
        return self._names

    def _maybe_reload(self) -> None:
        if self._watch.changed():
            self._load()

    def reload(self) -> None:
        self._watch.mark()
        self._load()

    def _load(self) -> None:
        with self._lock:
            for i, folder in enumerate(self.folders):
                found = _read(folder)
                if found is not None:
                    self._known[i] = found
            self._names = frozenset(set().union(*self._known) | self._unsaved)

    # -- writing ---------------------------------------------------------------------------------
    def add(self, names: Iterable[str]) -> None:
        """Claim these names (appended to the first directory's file). Never raises: on a
        read-only directory the claim holds in memory for as long as the server runs."""
        new = {n for n in names if n not in self._names and _VALID.fullmatch(n)}
        if not new:
            return
        with self._lock:
            new -= self._names
            if not new:
                return
            self._names = self._names | new
            folder = self.folders[0]
            try:
                folder.append(HOSTED_FILE, "".join(f"{n}\n" for n in sorted(new)).encode("ascii"))
            except OSError as exc:
                self._unsaved |= new
                folder.warn_once(
                    "new hosted names are protected from the fallback index only while this "
                    "server runs",
                    exc,
                )

    def forget(self, name: str) -> bool:
        """Lift the claim on ``name`` in every directory's file; whether it was there.
        Raises OSError when a record cannot be read or written."""
        found = False
        with self._lock:
            for folder in self.folders:
                if name not in (_read(folder, strict=True) or ()):
                    continue  # (no lock file made where there is nothing to change)
                # (again when another replica claimed a name meanwhile)
                found |= rewriting(functools.partial(_forget_in, folder, name))
            for known in self._known:
                known.discard(name)
            self._names = self._names - {name}
            self._unsaved.discard(name)
        return found


def _forget_in(folder: Records, name: str) -> bool:
    with folder.locked():
        names = _read(folder, strict=True) or set()
        if name not in names:
            return False
        names.discard(name)
        # Atomic: a server reading it meanwhile sees the old list or the new one.
        folder.replace(HOSTED_FILE, "".join(f"{n}\n" for n in sorted(names)).encode("ascii"))
        return True


def _read(folder: Records, strict: bool = False) -> set[str] | None:
    """The names in one folder's record (junk lines ignored); None when there is no record or
    it cannot be read (reported once), or (``strict``, for a command that rewrites it) raise."""
    try:
        data = folder.read(HOSTED_FILE)
    except OSError as exc:
        if strict:
            raise
        folder.warn_once("the names it records stay claimed as they were", exc)
        return None
    folder.all_well(HOSTED_FILE)
    if data is None:
        return None
    text = data.decode("ascii", errors="replace")
    return {line.strip() for line in text.splitlines() if _VALID.fullmatch(line.strip())}
