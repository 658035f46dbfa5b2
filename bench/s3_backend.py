"""The directory backend against the bucket backend (`pkgserver run s3://BUCKET/PREFIX`), in one
run, on one machine, with the same files.

    python bench/s3_backend.py                  # 3 rounds, and the start at 100,000 files
    python bench/s3_backend.py --quick          # smoke run: 1 round, short loads, 2,000 files
    python bench/s3_backend.py --skip-start     # without the start at --files
    python bench/s3_backend.py --files 20000 --rounds 5
    python bench/s3_backend.py --endpoint http://127.0.0.1:9000   # another S3 server: keys from
                                                # AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
    python bench/s3_backend.py --from-json bench/results/s3-backend.json   # re-render only

It starts a throwaway Ceph RADOS Gateway with the workplace's ceph-s3-up.sh (unless --endpoint
is given; stopped at the end), puts the same generated wheels and sdists (bench/corpus.py) in a
bucket and in a directory, and serves them with pkgserver both ways: the bucket through the usual
AWS settings (AWS_ENDPOINT_URL, the keys, AWS_DEFAULT_REGION), uploads allowed to the user
bench (htpasswd). Then, on a corpus of --load-files:

1. project pages (`/simple/<p>/` as HTML and PEP 691 JSON), requests/s with wrk, on the
   directory server and on one bucket replica;
2. wheels: a small one with wrk, streamed through the server; a --big-mb one (MB/s); and with a
   client that follows redirects (Python threads, a keep-alive connection per host), also on a
   replica started with --redirect-downloads when `pkgserver run --help` offers it (and its
   302 answers/s with wrk);
3. uploads of small wheels (raw multipart POSTs of the legacy API, with the bench user's
   password), from one client and from --upload-clients at once;
4. two replicas: the page rate of both at once (summed) against one; coherence: uploads to
   replica A at --per-minute (then a burst), while a poller on replica B waits for each file on
   its project page: p50/p95/p99/max of (seen on B - answered by A), with default options and
   with --rescan-interval.

Each of 1-3 and the two-replica rate is measured in --rounds rounds (directory and bucket in
turn, the order swapped each round); the report gives medians and each round. Last, unless
--skip-start: the start at --files (time from process start to /health answering 200 and
/simple/ listing every project): the directory's first start and its second (with its index
cache), the bucket's first start on a cold bucket and its second. Generating the corpus and
putting it in the bucket (a pool of boto3 PUTs) is timed too.

The report is printed and written to --out (Markdown), with the figures as JSON beside it and the
servers' logs in a folder named after it. Needs the project's virtualenv with
pkgserver[s3,test] (boto3, bcrypt) and wrk (`apt-get install -y wrk`; without it the Python
load generator is used, which gives lower figures).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import bcrypt
import ceph
import loadgen
from coherence import POLL, coherence
from common import HERE, HTML, ROOT, UPLOAD_NAME, fetch, links, log
from corpus_cache import Corpus, ensure_corpus, remove_leftovers
from endpoints import Loads, accounted_load, drain, load_options, measure_endpoints, prepare_loads
from environment import environment, version_of
from machine import cpu_seconds, wait_quiet
from report import fmt_ms
from run import client_tools, exclusive
from s3_loads import follow_load, pair_load, small_wheels, upload_rate
from s3_report import report
from servers import Running, Server, pkgserver, start, stop
from sources import snapshot_sources, sources_digest
from uploads import big_wheel, raw_upload

PREFIX = "packages"
PER_PROJECT = 10
REDIRECT_OPTION = "--redirect-downloads"
QUICK = {
    "files": 2000,
    "load_files": 500,
    "rounds": 1,
    "duration": 2.0,
    "warmup": 0.5,
    "uploads": 10,
    "big_mb": 5,
    "coherence_seconds": 20.0,
    "burst": 10,
    "wait_quiet": 5.0,
}
FULL = {
    "files": 100_000,
    "load_files": 5000,
    "rounds": 3,
    "duration": 10.0,
    "warmup": 1.0,
    "uploads": 50,
    "big_mb": 20,
    "coherence_seconds": 90.0,
    "burst": 30,
    "wait_quiet": 30.0,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = p.add_argument
    add("--quick", action="store_true", help="smoke run: " + str(QUICK))
    add("--files", type=int, help="files for the start (default 100,000; --quick 2,000)")
    add("--skip-start", action="store_true", help="do not measure the start at --files")
    add("--load-files", type=int, help="files served under load (default 5,000; --quick 500)")
    add("--rounds", type=int, help="rounds of each load (default 3; --quick 1)")
    add("--duration", type=float, help="seconds per load (default 10; --quick 2)")
    add("--warmup", type=float, help="seconds of unmeasured wrk load before each")
    add("--connections", type=int, default=50, help="wrk connections for pages, small wheels")
    add("--big-connections", type=int, default=4, help="connections for the big wheel")
    add(
        "--follow-connections", type=int, default=8, help="threads of the redirect-following client"
    )
    add("--wrk-threads", type=int, default=1)
    add("--threads", type=int, default=16, help="waitress threads of every pkgserver")
    add("--pin", metavar="CPUS", help="run every pkgserver on these CPUs (taskset -c CPUS)")
    add("--sample", type=int, default=1000, help="projects the page and wheel loads draw from")
    add("--python-load", action="store_true", help="the Python load generator even with wrk")
    add("--timeout", type=float, default=60, help="load client timeout, seconds")
    add("--big-mb", type=int, help="size of the big wheel (default 20; --quick 5)")
    add("--uploads", type=int, help="small uploads per client count per round (default 50)")
    add("--upload-clients", type=int, default=4, help="clients of the parallel uploads")
    add("--per-minute", type=float, default=50, help="coherence: steady uploads per minute")
    add("--coherence-seconds", type=float, help="coherence: steady writing time (default 90)")
    add("--burst", type=int, help="coherence: uploads back to back after it (default 30)")
    add("--rescan-interval", type=float, default=1.0, help="of the second coherence pair")
    add("--coherence-wait", type=float, default=90, help="how long B may take to list a file")
    add("--start-timeout", type=float, default=3600, help="seconds a start may take at --files")
    add("--put-threads", type=int, default=64, help="threads putting the corpus in the bucket")
    add("--endpoint", help="an S3 endpoint to use instead of starting Ceph (keys from the env)")
    add("--sources", metavar="REV", help="measure pkgserver as of this git revision")
    add("--live-sources", action="store_true", help="run pkgserver from the working tree")
    add("--pkgserver-python", default=str(ROOT / ".venv" / "bin" / "python"))
    add("--cache", type=Path, default=HERE / ".cache", help="corpora (default bench/.cache)")
    add("--out", type=Path, default=HERE / "results" / "s3-backend.md")
    add("--wait-quiet", type=float, help="wait up to this long for a quiet machine before a load")
    add("--drain-timeout", type=float, default=180)
    add("--lock-wait", type=float, default=3600)
    add("--from-json", type=Path, help="measure nothing: re-render an earlier run's JSON")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.endpoint_keys = ["page_html", "page_json", "wheel"]
    return args


@dataclass
class Bench:
    """One run: its options, the pkgserver it runs, the S3 server, what it found."""

    args: argparse.Namespace
    python: str
    snapshot: Path | None
    logdir: Path
    s3env: dict[str, str]
    s3: Any
    htpasswd: Path
    results: dict[str, Any]
    buckets: list[str] = field(default_factory=list)

    def server(self, name: str, root: str | None = None, extra: tuple[str, ...] = ()) -> Server:
        """pkgserver serving the corpus or ``root``, uploads for the bench user; with --pin,
        held to those CPUs (taskset)."""
        server = pkgserver(
            name,
            self.python,
            self.args.threads,
            self.snapshot,
            name,
            root=root,
            passwords=str(self.htpasswd),
            authenticate="update",
            extra=extra,
        )
        if self.args.pin:
            argv, cpus = server.argv, self.args.pin
            server.argv = lambda port, corpus: ["taskset", "-c", cpus, *argv(port, corpus)]
        return server

    def start(
        self,
        server: Server,
        corpus: Corpus | None,
        ready: Callable[[str], bool],
        timeout: float = 900,
        fresh_cache: bool = False,
    ) -> Running:
        """``server`` started, with its own XDG_CACHE_HOME (emptied first if ``fresh_cache``)
        and the AWS settings; waits until ``ready``."""
        xdg = self.args.cache / "xdg" / f"s3-backend-{server.name}"
        if fresh_cache:
            shutil.rmtree(xdg, ignore_errors=True)
        xdg.mkdir(parents=True, exist_ok=True)
        env = {"XDG_CACHE_HOME": str(xdg), **server.env, **ceph.server_env(self.s3env)}
        log(f"{server.name}: starting")
        run = start(server, corpus, self.logdir, ready, timeout, env=env)
        log(f"{server.name}: ready in {run.ready_seconds:.2f}s")
        return run

    def bucket(self, tag: str, files: list[Path]) -> tuple[str, float]:
        """A new bucket holding ``files`` under PREFIX/: its s3:// location, and the seconds
        the PUTs took."""
        name = ceph.new_bucket(self.s3, tag)
        self.buckets.append(name)
        log(f"putting {len(files):,} objects into {name} ({self.args.put_threads} threads)")
        seconds = ceph.put_files(self.s3, name, PREFIX, files, self.args.put_threads)
        log(f"{len(files):,} objects in {seconds:.1f}s ({len(files) / seconds:,.0f}/s)")
        return f"s3://{name}/{PREFIX}", seconds


def dist_files(corpus: Corpus) -> list[Path]:
    return sorted(p for p in corpus.path.iterdir() if p.name.endswith((".whl", ".tar.gz")))


def offers(python: str, snapshot: Path | None, option: str) -> bool:
    """Whether ``pkgserver run --help`` of the pkgserver measured lists ``option``."""
    env = {"PYTHONPATH": str(snapshot)} if snapshot else {}
    done = subprocess.run(
        [python, "-m", "pkgserver", "run", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=tempfile.gettempdir(),
        check=False,
    )
    return option in done.stdout


def page_ready(project: str) -> Callable[[str], bool]:
    """The project page of ``project`` lists its files."""

    def check(base: str) -> bool:
        a = fetch(base, f"/simple/{project}/", {"Accept": HTML}, timeout=60)
        return a.status == 200 and len(links(a.body)) == PER_PROJECT

    return check


def listing_ready(
    projects: int, progress: Callable[[], str] | None = None
) -> Callable[[str], bool]:
    """/health answers 200 and /simple/ lists ``projects`` projects. ``progress`` is logged
    every two minutes while the server is not listening yet."""
    t0 = time.monotonic()
    told = [t0]

    def check(base: str) -> bool:
        now = time.monotonic()
        if progress is not None and now - told[0] > 120:
            told[0] = now
            log(f"not ready after {now - t0:.0f}s: {progress()}")
        if fetch(base, "/health", timeout=60).status != 200:
            return False
        a = fetch(base, "/simple/", {"Accept": HTML}, timeout=300)
        return a.status == 200 and len(links(a.body)) == projects

    return check


def settle(run: Running, limit: float = 300, idle: float = 0.1) -> float:
    """Wait until a server is done with what it does just after its start (a bucket replica
    may store an index snapshot then, which a later start reads): until it uses under ``idle``
    CPUs over 2 s, at most ``limit`` seconds. Returns how long that took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        before = cpu_seconds(run.proc.pid)
        time.sleep(2)
        after = cpu_seconds(run.proc.pid)
        if before is None or after is None or (after - before) / 2 < idle:
            break
    return time.monotonic() - t0


def idle_cpu(runs: dict[str, Running], seconds: float = 10) -> dict[str, float | None]:
    """The CPUs each server uses when no one asks it anything (a replica follows the store)."""
    before = {name: cpu_seconds(run.proc.pid) for name, run in runs.items()}
    time.sleep(seconds)
    out: dict[str, float | None] = {}
    for name, run in runs.items():
        now, then = cpu_seconds(run.proc.pid), before[name]
        out[name] = None if now is None or then is None else (now - then) / seconds
    log(f"CPU use when idle: {out}")
    return out


def file_path(base: str, project: str, filename: str) -> str:
    """The path of ``filename`` as the project page links it."""
    page = f"/simple/{project}/"
    a = fetch(base, page, {"Accept": HTML})
    for href, text in links(a.body):
        if text.strip() == filename:
            return urlsplit(urljoin(base + page, href)).path
    raise RuntimeError(f"{base}/simple/{project}/ does not link {filename} ({a.status})")


# --------------------------------------------------------------------------------------------
# Loads on the servers of the load corpus


@dataclass
class Served:
    """A running server of the load corpus, and what it is asked."""

    server: Server
    run: Running
    loads: Loads
    files: list[tuple[str, int]]  # small wheels as (path, size), for the following client
    big: tuple[str, int]  # the big wheel


def _wrk(ctx: Bench, s: Served, load: loadgen.Load, connections: int) -> dict[str, Any]:
    """One wrk load of --duration after a warm-up, on a quiet machine, then drained."""
    args = ctx.args
    opts = {**load_options(args, ctx.logdir), "connections": connections}
    if args.warmup > 0:
        loadgen.run(s.run.base, load, duration=args.warmup, **opts)
    wait_quiet(s.run.proc.pid, args.wait_quiet)
    r = accounted_load(s.run.proc.pid, s.run.base, load, duration=args.duration, **opts)
    r["drain_seconds"], _answered = drain(s.run.base, "/health", s.run.proc.pid, args.drain_timeout)
    return r


def _follow(ctx: Bench, s: Served, files: list[tuple[str, int]], connections: int) -> dict:
    wait_quiet(s.run.proc.pid, ctx.args.wait_quiet)
    r = follow_load(
        s.run.base,
        files,
        duration=ctx.args.duration,
        connections=connections,
        timeout=ctx.args.timeout,
    )
    log(
        f"{s.server.name}: following redirects: {r['rps']:.1f}/s, {r['mb_per_s']:.1f} MB/s,"
        f" redirects {r['redirects']}, wrong {r['wrong']}, errors {r['errors']}"
    )
    return r


def _downloads(ctx: Bench, s: Served, out: dict[str, Any], streamed: bool = True) -> None:
    """The big wheel with wrk (MB/s) when ``streamed`` (wrk follows no redirect), then both
    wheels with the redirect-following client."""
    path, size = s.big
    if streamed:
        load = loadgen.Load([(path, {})], expect=200, check="length", want=size)
        r = _wrk(ctx, s, load, ctx.args.big_connections)
        r["mb_per_s"] = r["rps"] * size / 1e6
        log(
            f"{s.server.name}: {ctx.args.big_mb} MiB wheel: {r['mb_per_s']:.0f} MB/s,"
            f" wrong {r['wrong']}"
        )
        out["big_wheel"] = r
    out["follow_small"] = _follow(ctx, s, s.files, ctx.args.follow_connections)
    out["follow_big"] = _follow(ctx, s, [s.big], ctx.args.big_connections)


def _uploads(ctx: Bench, s: Served, rnd: int, out: dict[str, Any]) -> None:
    """--uploads small wheels from one client, as many from --upload-clients at once."""
    args = ctx.args
    wheel_dir = args.cache / "s3-backend-uploads"
    for key, clients, mode in (("upload_1", 1, 0), ("upload_n", args.upload_clients, 1)):
        versions = [f"{rnd + 1}.{mode}.{i}" for i in range(args.uploads)]
        wait_quiet(s.run.proc.pid, args.wait_quiet)
        wheels = small_wheels(wheel_dir, versions)
        r = upload_rate(s.run.base, wheels, clients, args.timeout, s.run.proc.pid)
        log(f"{s.server.name}: {r['ok']} uploads from {clients} client(s): {r['rate']:.1f}/s")
        out[key] = r


def one_round(
    ctx: Bench, rnd: int, served: dict[str, Served], second: Running | None
) -> dict[str, Any]:
    """Directory and bucket (replica A) in turn, then the redirecting replica, then A and B
    together."""
    args = ctx.args
    out: dict[str, Any] = {}
    order = ["directory", "bucket"] if rnd % 2 == 0 else ["bucket", "directory"]
    for name in order:
        s = served[name]
        log(f"round {rnd + 1}: {name}")
        res: dict[str, Any] = {"endpoints": {}}
        measure_endpoints(s.run, s.server, s.loads, args, ctx.logdir, res)
        res.update(res.pop("endpoints"))
        _downloads(ctx, s, res)
        _uploads(ctx, s, rnd, res)
        out[name] = res
    r = served.get("redirect")
    if r is not None:
        wheel = r.loads["wheel"]
        assert isinstance(wheel, loadgen.Load)
        found = dataclasses.replace(wheel, expect=302)
        redirect = {"wheel_302": _wrk(ctx, r, found, args.connections)}
        log(f"redirect: 302 answers: {redirect['wheel_302']['rps']:.0f}/s")
        _downloads(ctx, r, redirect, streamed=False)
        out["redirect"] = redirect
    if second is not None:
        out["pair"] = _two_replicas(ctx, served["bucket"], second)
        rates = " + ".join(f"{b['rps']:.0f}" for b in out["pair"]["each"])
        log(
            f"round {rnd + 1}: replica A alone {out['pair']['one']['rps']:.0f} req/s,"
            f" A and B at once {rates} req/s"
        )
    return out


def _two_replicas(ctx: Bench, a: Served, b: Running) -> dict[str, Any]:
    """The project pages on replica A alone, then on A and B at once, back to back."""
    args = ctx.args
    page = a.loads["page_html"]
    assert isinstance(page, loadgen.Load)
    opts = {**load_options(args, ctx.logdir), "duration": args.duration}
    wait_quiet(None, args.wait_quiet)
    one = accounted_load(a.run.proc.pid, a.run.base, page, **opts)
    wait_quiet(None, args.wait_quiet)
    both = pair_load([(a.run.proc.pid, a.run.base), (b.proc.pid, b.base)], page, **opts)
    return {"one": one, "each": both, "sum": sum(r["rps"] for r in both)}


def _served(
    ctx: Bench,
    server: Server,
    run: Running,
    corpus: Corpus,
    sample: list[str],
    redirects: bool = False,
) -> Served:
    """What ``run`` is asked: prepared (and checked) as bench/run.py does, and the big wheel
    once it has been uploaded (``with_big``). A server that ``redirects`` downloads is checked
    for that instead: a 302 whose target serves the file's bytes."""
    checks: list[str] = ctx.results["load"]["checks"]
    found: list[str] = []
    loads = prepare_loads(run.base, server, corpus, sample, found)
    wheel = loads["wheel"]
    files = []
    if isinstance(wheel, loadgen.Load):
        for path, _h in wheel.requests:
            files.append((path, (corpus.path / path.rsplit("/", 1)[-1]).stat().st_size))
        if redirects:
            found = [c for c in found if not c.startswith(wheel.requests[0][0])]
            found += _redirected(run.base, wheel.requests[0][0], corpus)
    checks += found
    return Served(server, run, loads, files, ("", 0))


def _redirected(base: str, path: str, corpus: Corpus) -> list[str]:
    """What is wrong with the redirect of ``path`` (nothing: [])."""
    a = fetch(base, path)
    target = a.headers.get("location")
    if a.status != 302 or not target:
        return [f"{path}: HTTP {a.status}, want a 302 with a Location"]
    parts = urlsplit(urljoin(base + path, target))
    origin = f"{parts.scheme}://{parts.netloc}"
    got = fetch(origin, parts.path + (f"?{parts.query}" if parts.query else ""))
    want = (corpus.path / path.rsplit("/", 1)[-1]).read_bytes()
    if got.status != 200 or got.body != want:
        return [f"{path}: its redirect answers {got.status} with {len(got.body)} other bytes"]
    return []


def with_big(ctx: Bench, s: Served) -> Served:
    big = ctx.results["load"]["big_wheel"]
    s.big = (file_path(s.run.base, UPLOAD_NAME, big["name"]), big["size"])
    return s


def _coherence(ctx: Bench, a: Running, b: Running, setting: int) -> dict[str, Any]:
    args = ctx.args
    wheel_dir = args.cache / "s3-backend-uploads"
    steady_n = max(1, round(args.coherence_seconds * args.per_minute / 60))
    steady = small_wheels(wheel_dir, [f"9{setting}.0.{i}" for i in range(steady_n)])
    burst = small_wheels(wheel_dir, [f"9{setting}.1.{i}" for i in range(args.burst)])
    log(
        f"coherence: {steady_n} uploads to A at {args.per_minute:g}/min, then {args.burst} back"
        f" to back; B polled every {POLL * 1000:.0f} ms"
    )
    r = coherence(
        a.base,
        b.base,
        steady,
        burst,
        per_minute=args.per_minute,
        wait=args.coherence_wait,
        timeout=args.timeout,
    )
    for phase in ("steady", "burst"):
        p = r[phase]
        log(
            f"coherence {phase}: seen {p['seen']}/{p['answered']}, p50 {fmt_ms(p['p50_ms'])},"
            f" p99 {fmt_ms(p['p99_ms'])}, max {fmt_ms(p['max_ms'])}"
        )
    return r


def _start_together(
    ctx: Bench, wanted: list[tuple[Server, Callable[[str], bool]]]
) -> list[Running]:
    """Replicas started at once (each start is a sequence of small reads of the store, not CPU
    bound): returns them in order. If one fails, the others are stopped."""
    with ThreadPoolExecutor(len(wanted)) as pool:
        futures = [pool.submit(ctx.start, server, None, ready) for server, ready in wanted]
    runs = [f.result() for f in futures if f.exception() is None]
    failed = next((f.exception() for f in futures if f.exception() is not None), None)
    if failed is not None:
        for run in runs:
            stop(run)
        raise failed
    return runs


def load_part(ctx: Bench, stack: contextlib.ExitStack) -> None:
    args = ctx.args
    corpus = ensure_corpus(args.cache, args.load_files, "flat", PER_PROJECT)
    remove_leftovers(corpus.path)
    full = corpus.full_projects
    sample = random.Random(4242).sample(full, min(len(full), args.sample))
    res = ctx.results["load"] = {
        "files": corpus.files,
        "projects": corpus.projects,
        "checks": [],
        "ready": {},
        "rounds": [],
        "coherence": {},
    }
    url, res["put_seconds"] = ctx.bucket("load", dist_files(corpus))
    ready = page_ready(sample[0])

    dserver = ctx.server("directory")
    d = ctx.start(dserver, corpus, ready, fresh_cache=True)
    stack.callback(stop, d)
    res["ready"]["directory, first start"] = d.ready_seconds
    aserver = ctx.server("bucket-A", root=url)
    a = ctx.start(aserver, None, ready)
    stack.callback(stop, a)
    res["ready"]["bucket, first start (cold)"] = a.ready_seconds
    res["ready"]["bucket, settled after the first start"] = settle(a)

    served = {
        "directory": _served(ctx, dserver, d, corpus, sample),
        "bucket": _served(ctx, aserver, a, corpus, sample),
    }
    wheel = big_wheel(args.cache, "0.0.1", args.big_mb)
    res["big_wheel"] = {"name": wheel.name, "size": wheel.stat().st_size, "upload": {}}
    for name, run in (("directory", d), ("bucket", a)):
        up = raw_upload(run.base, wheel, "0.0.1", args.timeout)
        log(f"{name}: upload of the {args.big_mb} MiB wheel: {up}")
        res["big_wheel"]["upload"][name] = up
        if not up["ok"]:
            raise RuntimeError(f"{name}: the upload of {wheel.name} failed: {up}")
        with_big(ctx, served[name])

    redirect = offers(ctx.python, ctx.snapshot, REDIRECT_OPTION)
    res["redirect"] = redirect
    wanted = [(ctx.server("bucket-B", root=url), ready)]
    if redirect:
        wanted.append((ctx.server("bucket-R", root=url, extra=(REDIRECT_OPTION,)), ready))
    else:
        log(f"{REDIRECT_OPTION}: not offered by this pkgserver; redirected downloads not measured")
    started = _start_together(ctx, wanted)
    for run in started:
        stack.callback(stop, run)
    b = started[0]
    res["ready"]["bucket, second start"] = b.ready_seconds
    if redirect:
        # It lists the upload project too: one project more on /simple/.
        uploaded = dataclasses.replace(corpus, files=corpus.files + PER_PROJECT)
        served["redirect"] = with_big(
            ctx, _served(ctx, wanted[1][0], started[1], uploaded, sample, redirects=True)
        )
    res["idle_cpu"] = idle_cpu({"directory": d, "bucket": a})
    for rnd in range(args.rounds):
        res["rounds"].append(one_round(ctx, rnd, served, b))
        write(ctx.results, args)

    log("coherence with default options")
    res["coherence"]["default"] = _coherence(ctx, a, b, 0)
    for run in (a, *started):
        stop(run)
    extra = ("--rescan-interval", f"{args.rescan_interval:g}")
    a2, b2 = _start_together(
        ctx,
        [
            (ctx.server("bucket-A2", root=url, extra=extra), ready),
            (ctx.server("bucket-B2", root=url, extra=extra), ready),
        ],
    )
    stack.callback(stop, a2)
    stack.callback(stop, b2)
    log(f"coherence with --rescan-interval {args.rescan_interval:g}")
    res["coherence"][f"--rescan-interval {args.rescan_interval:g}"] = _coherence(ctx, a2, b2, 1)
    stop(a2)
    stop(b2)
    stop(d)
    remove_leftovers(corpus.path)


# --------------------------------------------------------------------------------------------
# The start at --files


def _timed_start(
    ctx: Bench,
    server: Server,
    corpus: Corpus | None,
    ready: Callable[[str], bool],
    fresh_cache: bool = False,
    settles: bool = False,
) -> dict[str, Any]:
    """A start at --files, timed; with ``settles``, the server is left to finish what it does
    after its start (an index snapshot) before it is stopped."""
    try:
        run = ctx.start(server, corpus, ready, ctx.args.start_timeout, fresh_cache)
    except RuntimeError as exc:
        log(f"{server.name}: {exc}")
        return {"seconds": None, "error": str(exc)}
    out = {
        "seconds": run.ready_seconds,
        "rss_mib": run.ready_rss.get("VmRSS"),
        "other_cpu": run.ready_other_cpu,
    }
    if settles:
        out["settled"] = settle(run)
        log(f"{server.name}: settled {out['settled']:.1f}s after it was ready")
    stop(run)
    return out


def start_part(ctx: Bench) -> None:
    args = ctx.args
    t0 = time.monotonic()
    corpus = ensure_corpus(args.cache, args.files, "flat", PER_PROJECT)
    remove_leftovers(corpus.path)
    res = ctx.results["start"] = {
        "files": corpus.files,
        "projects": corpus.projects,
        "corpus_seconds": corpus.seconds_to_build,
        "corpus_reused": corpus.seconds_to_build is None,
        "corpus_wall": time.monotonic() - t0,
    }
    url, res["put_seconds"] = ctx.bucket("start", dist_files(corpus))
    write(ctx.results, args)

    dserver = ctx.server("directory-start")
    res["directory_first"] = _timed_start(
        ctx, dserver, corpus, listing_ready(corpus.projects), fresh_cache=True
    )
    res["directory_second"] = _timed_start(ctx, dserver, corpus, listing_ready(corpus.projects))
    write(ctx.results, args)

    bucket, _, _prefix = url[len("s3://") :].partition("/")
    meta = f"{PREFIX}/.pkgserver/"

    def stored() -> str:
        return f"{ceph.count_keys(ctx.s3, bucket, meta):,} objects under {meta}"

    bserver = ctx.server("bucket-start", root=url)
    res["bucket_first"] = _timed_start(
        ctx, bserver, None, listing_ready(corpus.projects, stored), settles=True
    )
    res["bucket_first"]["stored_after"] = ceph.count_keys(ctx.s3, bucket, meta)
    write(ctx.results, args)
    if res["bucket_first"]["seconds"] is None:
        res["bucket_second"] = {"seconds": None, "error": "not measured: the first start failed"}
        return
    res["bucket_second"] = _timed_start(ctx, bserver, None, listing_ready(corpus.projects))


# --------------------------------------------------------------------------------------------


def write(results: dict[str, Any], args: argparse.Namespace) -> str:
    text = report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    return text


def _htpasswd(directory: Path) -> Path:
    """The user bench (password bench) that uploads."""
    path = directory / "htpasswd"
    hashed = bcrypt.hashpw(b"bench", bcrypt.gensalt(rounds=10)).decode()
    path.write_text(f"bench:{hashed}\n")
    return path


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGTERM ends the run as Ctrl-C does: the servers started are stopped."""

    def interrupted(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        text = report(json.loads(args.from_json.read_text()))
        args.out.write_text(text)
        print(text)
        return 0
    lock = exclusive(args.cache, args.lock_wait)  # noqa: F841 (held until the process ends)
    tools = client_tools(args.pkgserver_python)
    python = tools["python"]
    snapshot = None if args.live_sources else snapshot_sources(args.cache, python, args.sources)
    logdir = args.out.parent / f"{args.out.stem}-logs"
    shutil.rmtree(logdir, ignore_errors=True)
    logdir.mkdir(parents=True, exist_ok=True)
    if not loadgen.wrk_path() and not args.python_load:
        log("wrk not found: using the Python load generator (apt-get install -y wrk)")
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    results: dict[str, Any] = {
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "command": "python bench/s3_backend.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "environment": environment(tools, None, args.sources, snapshot),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    env = results["environment"]
    env["ceph"] = "given endpoint" if args.endpoint else version_of(["radosgw", "--version"])
    env["boto3"] = version_of([python, "-c", "import boto3; print(boto3.__version__)"])
    with _interruptible(), ceph.gateway(args.endpoint) as s3env, contextlib.ExitStack() as stack:
        ctx = Bench(
            args,
            python,
            snapshot,
            logdir,
            s3env,
            ceph.client(s3env, args.put_threads),
            _htpasswd(logdir),
            results,
        )
        try:
            load_part(ctx, stack)
            stack.close()
            if not args.skip_start:
                start_part(ctx)
        finally:
            stack.close()
            if args.endpoint:
                for bucket in ctx.buckets:
                    ceph.remove_bucket(ctx.s3, bucket)
            results["elapsed"] = time.monotonic() - t0
            results["sources_end"] = sources_digest()
            text = write(results, args)
    print(text)
    log(f"wrote {args.out} and {args.out.with_suffix('.json')} ({results['elapsed']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
