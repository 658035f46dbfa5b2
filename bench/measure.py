"""One server on one corpus, from its first start to its restart: time to ready, the load on
each endpoint, memory, pip/uv, uploads, its state on disk and its log. And the ceiling."""

from __future__ import annotations

import argparse
import http.client
import random
import shutil
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import loadgen
from common import HTML, file_name, log
from corpus_cache import Corpus, du, remove_leftovers, state_files
from e2e import measure_e2e
from endpoints import accounted_load, load_options, measure_endpoints, prepare_loads
from machine import proc_status, wait_quiet
from report import fmt_ms
from servers import Running, Server, ceiling, ceiling_ready, log_problems, page_ready, start, stop
from uploads import measure_uploads


def _server_env(
    server: Server, corpus: Corpus, cache: Path, suffix: str
) -> tuple[Path, dict[str, str]]:
    """The server's own cache home: a persistent cache kept under $XDG_CACHE_HOME lands here,
    where it can be deleted for a first start and measured, and is never the user's."""
    xdg = cache / "xdg" / f"{file_name(server.name)}{suffix}"
    server_env = {"XDG_CACHE_HOME": str(xdg), **server.env}
    if server.drop_cache:
        shutil.rmtree(xdg, ignore_errors=True)
        for p in state_files(corpus):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    xdg.mkdir(parents=True, exist_ok=True)
    remove_leftovers(corpus.path)
    return xdg, server_env


def _still_right(
    run: Running, ready: Callable[[str], bool], stuck: str, result: dict[str, Any]
) -> None:
    result["rss_after_load"] = proc_status(run.proc.pid)
    checks: list[str] = result["checks"]
    if stuck:
        result["stuck"] = stuck
        checks.append(f"the server {stuck}; nothing more was measured")
        return
    # Still right after the load?
    try:
        if not ready(run.base):
            checks.append("after the load: the project page is wrong")
    except (OSError, http.client.HTTPException) as exc:
        checks.append(f"after the load: {exc!r}")


def _restart(
    server: Server,
    corpus: Corpus,
    args: argparse.Namespace,
    logdir: Path,
    ready: Callable[[str], bool],
    suffix: str,
    server_env: dict[str, str],
    result: dict[str, Any],
) -> None:
    log(f"{server.name}: restart")
    run = start(server, corpus, logdir, ready, args.ready_timeout, suffix, server_env)
    result["ready_restart"] = run.ready_seconds
    result["ready_restart_other_cpu"] = run.ready_other_cpu
    result["rss_restart"] = run.ready_rss
    log(f"{server.name}: ready again in {run.ready_seconds:.2f}s")
    stop(run)
    more = log_problems(run.log_path)
    result["log"] = more  # the log file is shared: the restart's count includes the first run


def measure(
    server: Server,
    corpus: Corpus,
    args: argparse.Namespace,
    tools: dict[str, str],
    logdir: Path,
    upload_wheels: list[tuple[Path, str]],
) -> dict[str, Any]:
    rng = random.Random(4242)
    full = corpus.full_projects
    sample = rng.sample(full, min(len(full), args.sample))
    e2e_projects = sorted(rng.sample(full, min(len(full), args.e2e_projects)))
    result: dict[str, Any] = {"server": server.name, "endpoints": {}, "checks": []}
    ready = page_ready(corpus, sample[0])
    suffix = f"-{corpus.layout}-{corpus.files}"
    xdg, server_env = _server_env(server, corpus, args.cache, suffix)

    log(f"{server.name}: starting on {corpus.label()}")
    run = start(server, corpus, logdir, ready, args.ready_timeout, suffix, server_env)
    result["ready_first"] = run.ready_seconds
    result["ready_first_other_cpu"] = run.ready_other_cpu
    result["rss_ready"] = run.ready_rss
    result["argv"] = run.argv
    result["env"] = server.env
    log(
        f"{server.name}: ready in {run.ready_seconds:.2f}s"
        f" (RSS {run.ready_rss.get('VmRSS', 0):.0f} MiB)"
    )
    try:
        loads = prepare_loads(run.base, server, corpus, sample, result["checks"])
        result["server_header"] = ", ".join(server.notes)
        stuck = measure_endpoints(run, server, loads, args, logdir, result)
        _still_right(run, ready, stuck, result)
        if not args.no_e2e and not stuck:
            measure_e2e(run.base, e2e_projects, tools, args, server.name, result)
        if server.can_upload and args.upload_mb > 0 and not stuck:
            measure_uploads(run, upload_wheels, tools, args, server.name, result)
    finally:
        stop(run)
        remove_leftovers(corpus.path)
    result["log"] = log_problems(run.log_path)
    result["log_path"] = str(run.log_path)
    result["state_bytes"] = du(xdg) + sum(du(p) for p in state_files(corpus))

    if server.measure_restart:
        _restart(server, corpus, args, logdir, ready, suffix, server_env, result)
    return result


def measure_ceiling(
    args: argparse.Namespace, tools: dict[str, str], logdir: Path, suffix: str = ""
) -> dict[str, Any]:
    log("ceiling: starting")
    run = start(ceiling(tools["python"], args.threads), None, logdir, ceiling_ready, 60, suffix)
    result: dict[str, Any] = {
        "server": "ceiling",
        "ready_first": run.ready_seconds,
        "rss_ready": run.ready_rss,
        "argv": run.argv,
    }
    try:
        load = loadgen.Load(
            [(f"/simple/proj{i:05d}/", {"Accept": HTML}) for i in range(1000)],
            expect=200,
            check="html",
            want=10,
        )
        common = load_options(args, logdir)
        if args.warmup > 0:
            loadgen.run(run.base, load, duration=args.warmup, **common)
        wait_quiet(run.proc.pid, args.wait_quiet)
        result["load"] = accounted_load(
            run.proc.pid, run.base, load, duration=args.duration, **common
        )
        result["rss_after_load"] = proc_status(run.proc.pid)
        r = result["load"]
        log(f"ceiling: {r['rps']:.0f} req/s, p50 {fmt_ms(r['p50_ms'])}, p99 {fmt_ms(r['p99_ms'])}")
    finally:
        stop(run)
    return result


def measure_size(
    corpus: Corpus,
    wanted: list[str],
    catalog: dict[str, Server],
    args: argparse.Namespace,
    tools: dict[str, str],
    logdir: Path,
    upload_wheels: list[tuple[Path, str]],
) -> dict[str, Any]:
    """The ceiling, then each server of ``wanted`` in turn, on one corpus. A server that fails
    is reported as such, and the others are measured."""
    size: dict[str, Any] = {
        "corpus": {
            "files": corpus.files,
            "projects": corpus.projects,
            "per_project": corpus.per_project,
            "layout": corpus.layout,
            "path": str(corpus.path),
            "build_seconds": corpus.seconds_to_build,
        },
        "servers": [],
        "e2e_projects": min(len(corpus.full_projects), args.e2e_projects),
    }
    if "ceiling" in wanted:
        try:
            size["ceiling"] = measure_ceiling(
                args, tools, logdir, f"-{corpus.layout}-{corpus.files}"
            )
        except Exception as exc:  # report it, go on with the rest
            log(f"ceiling failed: {exc}")
            size["ceiling"] = {"error": repr(exc)}
    for name in wanted:
        if name == "ceiling":
            continue
        server = catalog.get(name)
        if server is None:
            log(f"unknown server {name!r}; known: {', '.join(catalog)}, ceiling")
            continue
        try:
            size["servers"].append(measure(server, corpus, args, tools, logdir, upload_wheels))
        except Exception as exc:
            traceback.print_exc()
            size["servers"].append({"server": name, "error": repr(exc)})
    return size
