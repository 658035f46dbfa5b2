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

import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Sequence

from .fsutil import Stamp, file_stamp, write_atomically

log = logging.getLogger(__name__)

__all__ = ["NAMES_FILE", "HostedNames"]

NAMES_FILE = os.path.join(".pkgserver", "hosted-projects")
_VALID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")  # normalized (PEP 503) names only
RELOAD_EVERY = 1.0


class HostedNames:
    """A set of normalized project names, persisted in ``<root>/.pkgserver/hosted-projects``."""

    def __init__(self, roots: Sequence[str]) -> None:
        self.paths = [os.path.join(root, NAMES_FILE) for root in roots]
        self._lock = threading.Lock()
        self._names: frozenset[str] = frozenset()
        self._unsaved: set[str] = set()  # claimed while the file could not be written
        self._stamps: list[Stamp | None] = []
        self._checked = 0.0
        self._warned = False
        self.reload()

    # -- reading ---------------------------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        self._maybe_reload()
        return name in self._names

    def names(self) -> frozenset[str]:
        self._maybe_reload()
        return self._names

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < RELOAD_EVERY:
            return
        self._checked = now
        if [file_stamp(p) for p in self.paths] != self._stamps:
            self.reload()

    def reload(self) -> None:
        with self._lock:
            stamps = [file_stamp(p) for p in self.paths]
            names: set[str] = set()
            for path in self.paths:
                names.update(_read(path))
            self._names = frozenset(names | self._unsaved)
            self._stamps = stamps
            self._checked = time.monotonic()

    # -- writing ---------------------------------------------------------------------------------
    def add(self, names: Iterable[str]) -> None:
        """Claim these names (appended to the first directory's file). Never raises: on a
        read-only directory the claim holds in memory for as long as the server runs."""
        new = {n for n in names if n not in self._names and _VALID.match(n)}
        if not new:
            return
        with self._lock:
            new -= self._names
            if not new:
                return
            self._names = self._names | new
            path = self.paths[0]
            try:
                os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    os.write(fd, "".join(f"{n}\n" for n in sorted(new)).encode("ascii"))
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self._stamps[0] = file_stamp(path)
            except OSError as exc:
                self._unsaved |= new
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "cannot record hosted project names in %s (%s): they are protected from "
                        "the fallback only while this server runs",
                        path,
                        exc.strerror or exc,
                    )

    def forget(self, name: str) -> bool:
        """Lift the claim on ``name`` in every directory's file; whether it was there."""
        found = False
        with self._lock:
            for path in self.paths:
                names = _read(path)
                if name not in names:
                    continue
                found = True
                names.discard(name)
                # Atomic: a server reading it meanwhile sees the old list or the new one.
                content = "".join(f"{n}\n" for n in sorted(names)).encode("ascii")
                write_atomically(path, content, 0o644)
            self._names = self._names - {name}
            self._unsaved.discard(name)
            self._stamps = [file_stamp(p) for p in self.paths]
        return found


def _read(path: str) -> set[str]:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return {line.strip() for line in fh if _VALID.match(line.strip())}
    except FileNotFoundError:
        return set()
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc.strerror or exc)
        return set()
