"""pip and uv end to end: ``pip download`` and ``uv pip install --dry-run`` of a few projects,
each in an isolated environment (fresh HOME and caches, no pip/uv configuration), so that no
cache or mirror flatters a server."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from common import log
from report import fmt_s


def client_env(tmp: Path) -> dict[str, str]:
    """No pip/uv/twine configuration or cache from this machine: fresh HOME, caches, config."""
    drop = ("PIP_", "UV_", "TWINE_", "XDG_", "PYTHON", "VIRTUAL_ENV", "CONDA")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_CONFIG_HOME=str(home / ".config"),
        PIP_CONFIG_FILE="/dev/null",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        UV_NO_CONFIG="1",
        UV_CACHE_DIR=str(tmp / "uv-cache"),
        UV_PYTHON_DOWNLOADS="never",
        NO_COLOR="1",
    )
    return env


def timed(argv: list[str], env: dict[str, str], timeout: float) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    try:
        p = subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        return time.perf_counter() - t0, p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"") + (exc.stderr or b"")
        text = out.decode(errors="replace") if isinstance(out, bytes) else str(out)
        return time.perf_counter() - t0, -1, f"timeout after {timeout:.0f}s\n{text}"


def pip_download(
    base: str, projects: list[str], tools: dict[str, str], timeout: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-pip-") as t:
        tmp = Path(t)
        dest = tmp / "dl"
        argv = [
            tools["python"],
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-d",
            str(dest),
            "--index-url",
            f"{base}/simple/",
            *projects,
        ]
        seconds, rc, out = timed(argv, client_env(tmp), timeout)
        got = len(list(dest.glob("*"))) if dest.exists() else 0
        ok = rc == 0 and got == len(projects)
        return {
            "ok": ok,
            "seconds": seconds,
            "files": got,
            "detail": "" if ok else out.strip()[-600:],
        }


def uv_dry_run(
    base: str, projects: list[str], tools: dict[str, str], timeout: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-uv-") as t:
        tmp = Path(t)
        env = client_env(tmp)
        venv = tmp / "venv"
        _s, rc, out = timed(
            [tools["uv"], "venv", "-q", "--python", tools["python"], str(venv)], env, 120
        )
        if rc != 0:
            return {"ok": False, "seconds": None, "detail": "uv venv: " + out.strip()[-400:]}
        shutil.rmtree(tmp / "uv-cache", ignore_errors=True)  # the timed run starts cold
        argv = [
            tools["uv"],
            "pip",
            "install",
            "--dry-run",
            "--python",
            str(venv / "bin" / "python"),
            "--index-url",
            f"{base}/simple/",
            *projects,
        ]
        seconds, rc, out = timed(argv, env, timeout)
        m = re.search(r"Would install (\d+) package", out)
        ok = rc == 0 and m is not None and int(m.group(1)) == len(projects)
        return {"ok": ok, "seconds": seconds, "detail": "" if ok else out.strip()[-600:]}


def measure_e2e(
    base: str,
    projects: list[str],
    tools: dict[str, str],
    args: argparse.Namespace,
    name: str,
    result: dict[str, Any],
) -> None:
    """pip and uv against the server at ``base``: into ``result`` as pip, uv, e2e_projects."""
    log(f"{name}: pip download of {len(projects)} projects")
    result["pip"] = pip_download(base, projects, tools, args.client_timeout)
    log(f"{name}: uv pip install --dry-run of {len(projects)} projects")
    result["uv"] = uv_dry_run(base, projects, tools, args.client_timeout)
    result["e2e_projects"] = len(projects)
    for k in ("pip", "uv"):
        r = result[k]
        log(
            f"{name}: {k}: {'ok' if r['ok'] else 'FAILED'} {fmt_s(r['seconds'])} {r['detail'][:300]}"
        )
