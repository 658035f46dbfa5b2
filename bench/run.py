"""The pkgserver benchmark: pkgserver against pypiserver and a bare-waitress ceiling.

    python bench/run.py                       # 50, 5,000 and 50,000 files, 10 s per endpoint
    python bench/run.py --quick               # sanity run: 50 files, 2 s per endpoint (~2 min)
    python bench/run.py --files 50,100000 --layout flat,folders --duration 10 \
        --out bench/results/latest.md
    python bench/run.py --sources HEAD        # pkgserver as committed (default: working tree)
    python bench/run.py --baseline HEAD~1     # before/after in one run: also pkgserver@HEAD~1
    python bench/run.py --from-json bench/results/latest.json --out report.md   # re-render only

For each corpus size (and layout) it generates valid wheels and sdists with bench/corpus.py
(10 files per project) into a cache (bench/.cache/, reused when present), then starts each
server under test in turn on 127.0.0.1, waits until /simple/<project>/ answers 200 with the
expected 10 files, and measures for a fixed time per endpoint:

    /simple/ (HTML), /simple/<p>/ as HTML and as PEP 691 JSON, a 304 revalidation of the
    project page (If-None-Match), a wheel download, its PEP 658 .metadata, /pypi/<p>/json

with <p> drawn at random from up to --sample projects per request. Every answer is checked
(status, and the 10 links of a project page) inside the load loop; wrong answers, socket
errors and non-2xx/3xx answers are reported next to the rates, never hidden in them. Then:
time to ready (process start -> first correct answer; pkgserver also after a restart),
resident memory (VmRSS, VmHWM), the wall time of a 100 MB upload (raw multipart POST and
twine), and `pip download` / `uv pip install --dry-run` of 20 projects in an isolated
environment (fresh HOME and caches, no pip/uv configuration).

Servers: pkgserver (this checkout, /work/main/.venv or --pkgserver-python), pypiserver (latest
release, installed once by this script into bench/.venvs/pypiserver: needs network to PyPI
that once; `rm -rf bench/.venvs` to upgrade), run with its default file backend
(simple-dir) and with cached-dir (watchdog), and the ceiling (bench/ceiling.py). With
--baseline REV, also pkgserver@REV: pkgserver as of git revision REV (a `git archive`
snapshot, as --sources takes), measured right after pkgserver on each corpus; the report adds
pkgserver's rates, times to ready, memory and uploads relative to it.

Needs: Python 3.11+, Linux (/proc for memory), the project's venv with pkgserver, twine and
uv. wrk is optional but recommended (`apt-get install -y wrk`); without it a Python load
generator (threads with keep-alive http.client connections) is used, which shares the CPU
with the servers and gives lower, less comparable figures.

The report is printed and written to --out (Markdown) and next to it as JSON.

What is measured lives in the modules next to this one: corpus_cache.py (corpora), servers.py
(start, time to ready, stop), endpoints.py (HTTP load), uploads.py, e2e.py (pip and uv),
machine.py (CPU and memory), measure.py (one server on one corpus), sources.py (snapshots of
pkgserver), environment.py (versions), report.py (Markdown) and options.py (this command line).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import loadgen
from common import HERE, log
from corpus_cache import ensure_corpus
from environment import environment
from machine import loadavg
from measure import measure_size
from options import parse_args
from report import report
from servers import catalog, ensure_pypiserver
from sources import snapshot_sources, sources_digest
from uploads import big_wheel


def client_tools(python: str) -> dict[str, str]:
    """The python that runs pkgserver (and pip), and the uv and twine next to it (or on PATH)."""
    py = python if Path(python).exists() else sys.executable
    bindir = Path(py).parent
    return {
        "python": py,
        "uv": str(bindir / "uv") if (bindir / "uv").exists() else (shutil.which("uv") or "uv"),
        "twine": str(bindir / "twine")
        if (bindir / "twine").exists()
        else (shutil.which("twine") or "twine"),
    }


def snapshots(
    args: argparse.Namespace, wanted: list[str], python: str
) -> tuple[Path | None, dict[str, tuple[str, Path]]]:
    """The snapshot pkgserver runs from (None: the working tree), and the baseline's:
    {"pkgserver@REV": (REV, its snapshot)}."""
    snapshot = None
    if "pkgserver" in wanted and not args.live_sources:
        snapshot = snapshot_sources(args.cache, python, args.sources)
        log(f"pkgserver runs from a snapshot of its sources: {snapshot}")
    baselines: dict[str, tuple[str, Path]] = {}
    if args.baseline:
        name = f"pkgserver@{args.baseline}"
        baselines[name] = (args.baseline, snapshot_sources(args.cache, python, args.baseline))
        log(f"{name} runs from a snapshot of its sources: {baselines[name][1]}")
    return snapshot, baselines


def with_baselines(wanted: list[str], names: list[str]) -> list[str]:
    """The baselines measured right after pkgserver (or last), so that before and after are
    measured minutes apart, on the same corpus."""
    rest = [n for n in wanted if n not in names]
    at = rest.index("pkgserver") + 1 if "pkgserver" in rest else len(rest)
    return rest[:at] + names + rest[at:]


def rerender(args: argparse.Namespace) -> int:
    """--from-json: the report of an earlier run, measuring nothing."""
    earlier = json.loads(args.from_json.read_text())
    settings = argparse.Namespace(**earlier["settings"])
    text = report(earlier, settings)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    args, sizes, layouts = parse_args(argv, __doc__)
    if args.from_json:
        return rerender(args)
    wanted = [x.strip() for x in args.servers.split(",") if x.strip()]
    tools = client_tools(args.pkgserver_python)
    py = tools["python"]
    if not loadgen.wrk_path() and not args.python_load:
        log(
            "wrk not found: using the Python load generator (install wrk for comparable figures: "
            "apt-get install -y wrk)"
        )

    signal.signal(signal.SIGTERM, _interrupted)
    lock = exclusive(args.cache, args.lock_wait)  # noqa: F841 (held until the process ends)
    started = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.monotonic()
    logdir = args.out.parent / f"{args.out.stem}-logs"  # one per report: runs do not mix
    shutil.rmtree(logdir, ignore_errors=True)
    logdir.mkdir(parents=True, exist_ok=True)

    snapshot, baselines = snapshots(args, wanted, py)
    wanted = with_baselines(wanted, list(baselines))
    ppvenv = None
    if any(s.startswith("pypiserver") for s in wanted):
        ppvenv = ensure_pypiserver(HERE / ".venvs", sys.executable)
    servers = catalog(
        py, args.threads, snapshot, ppvenv, {n: path for n, (_r, path) in baselines.items()}
    )
    results: dict[str, Any] = {
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "command": "python bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "environment": environment(tools, ppvenv, args.sources, snapshot, baselines),
        "snapshot": str(snapshot) if snapshot else None,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "sizes": [],
        "loadavg_start": loadavg(),
    }

    upload_wheels: list[tuple[Path, str]] = []
    if args.upload_mb > 0:
        log(f"preparing {args.upload_mb} MiB upload wheels")
        upload_wheels = [(big_wheel(args.cache, v, args.upload_mb), v) for v in ("1.0.0", "1.0.1")]

    for layout in layouts:
        for files in sizes:
            corpus = ensure_corpus(args.cache, files, layout, args.per_project)
            results["sizes"].append(
                measure_size(corpus, wanted, servers, args, tools, logdir, upload_wheels)
            )
            results["elapsed"] = time.monotonic() - t_start
            write(results, args)  # partial results survive a later failure

    results["elapsed"] = time.monotonic() - t_start
    text = write(results, args)
    print(text)
    log(f"wrote {args.out} and {args.out.with_suffix('.json')} ({results['elapsed']:.0f} s)")
    return 0


def exclusive(cache: Path, wait: float) -> Any:
    """One run at a time per cache: two runs would share the CPUs, the corpora and the uploads.
    Returns the open lock file (keep it open); waits up to ``wait`` seconds for another run."""
    import fcntl

    cache.mkdir(parents=True, exist_ok=True)
    fh = open(cache / "run.lock", "a+")
    deadline = time.monotonic() + wait
    told = False
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                fh.seek(0)
                raise SystemExit(
                    f"another benchmark run holds {fh.name}: {fh.read().strip()}"
                ) from None
            if not told:
                fh.seek(0)
                log(f"waiting for another benchmark run to finish ({fh.read().strip()})")
                told = True
            time.sleep(5)
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}, started {time.strftime('%H:%M:%S')}: {' '.join(sys.argv)}\n")
    fh.flush()
    return fh


def _interrupted(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt  # the finally clauses stop the servers this run started


def write(results: dict[str, Any], args: argparse.Namespace) -> str:
    results.setdefault("elapsed", 0.0)
    results["loadavg_end"] = loadavg()
    if "sources" in results.get("environment", {}) and not args.sources:
        results["sources_end"] = sources_digest()
    text = report(results, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    return text


if __name__ == "__main__":
    sys.exit(main())
