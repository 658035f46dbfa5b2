"""Which pkgserver is measured: a snapshot of its sources, taken when the run starts, from the
working tree or from a git revision (``--sources REV``; ``--baseline REV`` for a second one).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from common import ROOT


def snapshot_sources(cache: Path, python: str, rev: str | None) -> Path:
    """A copy of pkgserver's sources, which the servers import (PYTHONPATH): as they are in the
    working tree now, or at git revision ``rev``. Edits made to the working tree during a run
    do not change the code being measured."""
    if rev:
        parsed = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", rev + "^{commit}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if parsed.returncode != 0:
            raise SystemExit(f"{rev!r} is not a git revision of {ROOT}")
        commit = parsed.stdout.strip()
        target = cache / "src" / commit[:12]
    else:
        target = cache / "src" / sources_digest()
    if not (target / "pkgserver" / "__init__.py").exists():
        shutil.rmtree(target, ignore_errors=True)
        if rev:
            target.mkdir(parents=True)
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "pkgserver"],
                capture_output=True,
                check=True,
            ).stdout
            with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
                tf.extractall(target, filter="data")
        else:
            shutil.copytree(
                ROOT / "pkgserver",
                target / "pkgserver",
                ignore=shutil.ignore_patterns("__pycache__"),
            )
    for old in (cache / "src").iterdir():  # another run may still use a recent one
        if old != target and time.time() - old.stat().st_mtime > 7 * 86400:
            shutil.rmtree(old, ignore_errors=True)
    os.utime(target)
    found = subprocess.run(
        [python, "-c", "import pkgserver; print(pkgserver.__file__)"],
        env={**os.environ, "PYTHONPATH": str(target)},
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if not found.startswith(str(target)):
        raise SystemExit(f"the snapshot of pkgserver is not what {python} imports: {found!r}")
    return target


def sources_digest() -> str:
    """A hash of pkgserver's sources: which code was measured, committed or not."""
    digest = hashlib.sha256()
    for f in sorted((ROOT / "pkgserver").rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts:
            digest.update(f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:12]
