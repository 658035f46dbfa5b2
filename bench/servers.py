"""The servers under test: how each is started, when it counts as ready (time to ready), how it
is stopped, and what its log says.

pkgserver runs from a snapshot of its sources (bench/sources.py) on PYTHONPATH; a baseline
revision (``--baseline REV``) is the same command on another snapshot, named pkgserver@REV.
pypiserver (latest release) is installed once into bench/.venvs/pypiserver and run with its
simple-dir and its cached-dir backends. The ceiling is bench/ceiling.py.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common import HERE, HTML, fetch, file_name, links, log
from corpus_cache import Corpus
from machine import cpu_seconds, machine_busy, own_cpu, proc_status


@dataclass
class Server:
    name: str
    label: str
    argv: Callable[[int, Path], list[str]]
    json_api: str = "/pypi/{p}/json"
    can_upload: bool = True
    measure_restart: bool = False
    drop_cache: bool = False  # delete .pkgserver* in the corpus before the first start
    health: str = "/health"
    notes: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    base: str
    log_path: Path
    argv: list[str] = field(default_factory=list)
    ready_seconds: float | None = None
    ready_rss: dict[str, float] = field(default_factory=dict)
    ready_other_cpu: float | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(
    server: Server,
    corpus: Corpus | None,
    logdir: Path,
    ready: Callable[[str], bool],
    ready_timeout: float,
    suffix: str = "",
    env: dict[str, str] | None = None,
) -> Running:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = server.argv(port, corpus.path if corpus else Path("."))
    log_path = logdir / f"{file_name(server.name)}{suffix}.log"
    logf = open(log_path, "ab")
    logf.write(f"\n$ {' '.join(argv)}\n".encode())
    logf.flush()
    t0, busy0, own0 = time.monotonic(), machine_busy(), own_cpu()
    proc = subprocess.Popen(
        argv,
        stdout=logf,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=tempfile.gettempdir(),
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    logf.close()
    running = Running(proc, base, log_path, argv)
    deadline = t0 + ready_timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {proc.returncode}: {tail(log_path)}")
        if time.monotonic() > deadline:
            stop(running)
            raise RuntimeError(f"{server.name} not ready after {ready_timeout:.0f}s")
        try:
            if ready(base):
                break
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.02)
    running.ready_seconds = time.monotonic() - t0
    # Others' CPU while it started (its worker processes have ended and count as its own).
    server_cpu = cpu_seconds(proc.pid) or 0.0
    if running.ready_seconds > 0.5:
        other = machine_busy() - busy0 - (own_cpu() - own0) - server_cpu
        running.ready_other_cpu = max(0.0, other / running.ready_seconds)
    running.ready_rss = proc_status(proc.pid)
    return running


def stop(running: Running) -> None:
    proc = running.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def log_problems(path: Path) -> dict[str, int]:
    text = tail(path, 50_000_000)
    return {
        "tracebacks": text.count("Traceback (most recent call last)"),
        "errors": len(re.findall(r"\bERROR\b|\bCRITICAL\b", text)),
        "queue_warnings": text.count("Task queue depth"),
    }


def page_ready(corpus: Corpus, project: str) -> Callable[[str], bool]:
    def check(base: str) -> bool:
        a = fetch(base, f"/simple/{project}/", {"Accept": HTML}, timeout=300)
        return a.status == 200 and len(links(a.body)) == corpus.per_project

    return check


def ensure_pypiserver(venvs: Path, python: str) -> Path:
    venv = venvs / "pypiserver"
    exe = venv / "bin" / "pypi-server"
    ok = venv / ".bench-installed"
    if exe.exists() and ok.exists():
        return venv
    log(f"installing pypiserver into {venv} (needs PyPI once) ...")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    # passlib 1.7.4 breaks with bcrypt >= 4.1 (it reads bcrypt.__about__); waitress is what
    # `--server auto` picks first; watchdog enables the cached-dir backend.
    subprocess.run([*pip, "pypiserver[passlib,cache]", "bcrypt<4.1", "waitress"], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import passlib.hash as h; assert h.bcrypt.verify('x', h.bcrypt.hash('x'))",
        ],
        check=True,
    )
    ok.touch()
    return venv


def pkgserver(
    name: str,
    python: str,
    threads: int,
    snapshot: Path | None,
    label: str = "pkgserver",
    *,
    root: str | None = None,
    passwords: str = ".",
    authenticate: str = ".",
    extra: Sequence[str] = (),
) -> Server:
    """pkgserver as the venv's ``python`` runs it, from ``snapshot`` (on PYTHONPATH) if given,
    serving the corpus (or ``root``: an s3:// location), with ``extra`` options."""
    return Server(
        name,
        label,
        lambda port, c: [
            python,
            "-m",
            "pkgserver",
            "run",
            "-p",
            str(port),
            "-i",
            "127.0.0.1",
            "-P",
            passwords,
            "-a",
            authenticate,
            "--disable-fallback",
            "--threads",
            str(threads),
            "--log-stream",
            "stderr",
            *extra,
            root or str(c),
        ],
        measure_restart=True,
        drop_cache=True,
        env={"PYTHONPATH": str(snapshot)} if snapshot else {},
    )


def pypiserver(name: str, label: str, exe: str, backend: str) -> Server:
    """pypiserver's ``pypi-server run`` with one of its file backends."""
    return Server(
        name,
        label,
        lambda port, c: [
            exe,
            "run",
            "-p",
            str(port),
            "-i",
            "127.0.0.1",
            "-a",
            ".",
            "-P",
            ".",
            "--disable-fallback",
            "--server",
            "auto",
            "--backend",
            backend,
            str(c),
        ],
        json_api="/{p}/json",
    )


def catalog(
    python: str,
    threads: int,
    snapshot: Path | None,
    pypiserver_venv: Path | None,
    baselines: dict[str, Path] | None = None,
) -> dict[str, Server]:
    """Every server but the ceiling, by name; ``baselines``: pkgserver@REV -> its snapshot."""
    exe = str(pypiserver_venv / "bin" / "pypi-server") if pypiserver_venv else ""
    servers = {
        "pkgserver": pkgserver("pkgserver", python, threads, snapshot),
        "pypiserver": pypiserver("pypiserver", "pypiserver", exe, "simple-dir"),
        "pypiserver-cached": pypiserver(
            "pypiserver-cached", "pypiserver (cached-dir)", exe, "cached-dir"
        ),
    }
    for name, path in (baselines or {}).items():
        servers[name] = pkgserver(name, python, threads, path, label=name)
    return servers


def ceiling(python: str, threads: int) -> Server:
    """bench/ceiling.py: a bare waitress app answering a fixed 2 KB page for any path."""
    return Server(
        "ceiling",
        "ceiling (bare waitress, fixed 2 KB page)",
        lambda port, _c: [
            python,
            str(HERE / "ceiling.py"),
            "--port",
            str(port),
            "--threads",
            str(threads),
        ],
        can_upload=False,
        health="/",
    )


def ceiling_ready(base: str) -> bool:
    a = fetch(base, "/simple/proj00000/")
    return a.status == 200 and len(a.body) == 2048
