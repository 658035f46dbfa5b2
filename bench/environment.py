"""What a run measured with: versions of pkgserver, its baseline, pypiserver, the clients and
the load generator, and the machine."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
from pathlib import Path

import loadgen
from common import ROOT
from sources import sources_digest


def version_of(argv: list[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        return (p.stdout or p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def pkgserver_version(sources: Path) -> str:
    """``__version__`` of the pkgserver package under ``sources``."""
    init = sources / "pkgserver" / "__init__.py"
    found = re.search(r'__version__ = "([^"]+)"', init.read_text())
    return found.group(1) if found else "?"


def as_of(rev: str) -> str:
    """The commit a git revision names, as "<short hash> <subject>"."""
    return version_of(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s", rev])


def _commit(env: dict[str, str], sources_rev: str | None) -> str:
    commit = version_of(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "pkgserver"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if sources_rev:
        return "pkgserver/ as of " + as_of(sources_rev)
    return commit + (
        f" + uncommitted changes in pkgserver/ (sources sha256 {env['sources']})" if dirty else ""
    )


def machine_summary() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    return f"{os.cpu_count()} CPUs ({cpu}), {mem}, {platform.system()} {platform.release()}"


def environment(
    tools: dict[str, str],
    pypiserver_venv: Path | None,
    sources_rev: str | None = None,
    snapshot: Path | None = None,
    baselines: dict[str, tuple[str, Path]] | None = None,
) -> dict[str, str]:
    """``baselines``: pkgserver@REV -> (REV, its snapshot)."""
    env: dict[str, str] = {}
    py = tools["python"]
    env["pkgserver"] = pkgserver_version(snapshot or ROOT)
    env["sources"] = sources_digest()
    env["commit"] = _commit(env, sources_rev)
    if baselines:
        env["baseline"] = "; ".join(
            f"{name}: pkgserver {pkgserver_version(path)}, pkgserver/ as of {as_of(rev)}"
            for name, (rev, path) in baselines.items()
        )
    env["python"] = version_of([py, "-c", "import sys; print(sys.version.split()[0])"])
    env["waitress"] = version_of(
        [py, "-c", "import importlib.metadata as m; print(m.version('waitress'))"]
    )
    if pypiserver_venv:
        pv = str(pypiserver_venv / "bin" / "python")
        env["pypiserver"] = version_of(
            [
                pv,
                "-c",
                "import importlib.metadata as m; print(', '.join(n + ' ' + m.version(n) for n in"
                " ('pypiserver', 'waitress', 'watchdog', 'passlib', 'bcrypt')))",
            ]
        )
    env["wrk"] = (
        version_of(["wrk", "--version"]).split(" Copyright")[0] if loadgen.wrk_path() else "absent"
    )
    env["pip"] = version_of([py, "-m", "pip", "--version"]).split(" from ")[0]
    env["uv"] = version_of([tools["uv"], "--version"])
    env["twine"] = version_of([tools["twine"], "--version"]).split(" (")[0]
    env["machine"] = machine_summary()
    return env
