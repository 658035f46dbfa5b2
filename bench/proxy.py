"""The caching proxy (`pkgserver run --proxy`): cached project pages and files against hosted
ones, in one run, on one process; and the latency a first fetch through the proxy adds to a
direct fetch from the upstream.

    python bench/proxy.py                        # 3 rounds of 10 s loads, 20 first fetches
    python bench/proxy.py --quick                # smoke run: 1 round of 2 s loads, 5 fetches
    python bench/proxy.py --sources main         # pkgserver as of a git revision
    python bench/proxy.py --pin 0                # every pkgserver on CPU 0 (taskset)
    python bench/proxy.py --from-json bench/results/proxy.json   # re-render only

Two pkgserver processes on 127.0.0.1:

- the upstream: `pkgserver run --disable-fallback UPSTREAM`, hosting the project pbench-cached
  (--page-files files: small generated wheels and sdists, a --small-kb wheel and a --big-kb
  wheel of random data) and --first-fetch projects pbench-ff-NNN of one --big-kb wheel each;
- the proxy: `pkgserver run --proxy --fallback-url UPSTREAM/simple/ --proxy-cache TMP
  --proxy-ttl TTL HOSTED`, hosting pbench-hosted, the same files as pbench-cached under a name
  of the same length (so the hosted and the cached pages have nearly the same size).

Throughput (requests/s, wrk, --connections keep-alive connections; --big-connections for the
big wheel) of the hosted page (HTML and PEP 691 JSON), small wheel and big wheel against the
cached ones, served by the same proxy process after one GET of each warmed its cache. Each
answer is checked inside the load (status and exact length); before, each is checked in full
(link counts, the wheels' sha256 against the page). The proxy's /metrics
(pkgserver_proxy_requests_total) must count every cached answer as a hit, and the upstream's
CPU use during a cached load is reported (near 0 when nothing is fetched). Reference points in
the same run: pypiserver (simple-dir backend) serving the hosted files (no JSON pages), and
a bare waitress app (bench/static.py) answering the hosted page's and the wheels' bytes from
memory. Every load is measured --rounds times, the servers' order rotated each round; the report
gives medians and cached/hosted ratios (target: >= 0.8), and the server CPU time per answer,
steadier than a rate on a shared machine.

First fetch: for each pbench-ff-NNN, with one client and a new connection per GET (the
upstream warmed first with one direct GET of each page and file): the PEP 691 page from the
upstream and through the proxy (a miss), then the wheel from the upstream and through the proxy
(a miss: fetched from the upstream while streamed), then the wheel through the proxy again (a
hit); direct and proxied in turn first. Median and p90 of the overhead (proxied - direct, per
file) in ms, the ratio of the medians, and the time to the first byte of the answer.

The report is printed and written to --out (Markdown), with the figures as JSON beside it and
the servers' logs in a folder named after it. Needs the project's virtualenv and wrk
(`apt-get install -y wrk`; without it the Python load generator is used, which gives lower
figures); pypiserver is installed once into bench/.venvs/pypiserver, as bench/run.py does.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import loadgen
from builders import make_sdist, make_wheel
from common import HERE, HTML, JSON_V1, ROOT, fetch, links, log
from endpoints import accounted_load, drain, load_options
from environment import environment, version_of
from machine import cpu_seconds, proc_status, wait_quiet
from proxy_report import report
from report import fmt_ms
from run import client_tools, exclusive
from servers import Running, Server, ensure_pypiserver, pkgserver, pypiserver, start, stop
from sources import snapshot_sources, sources_digest

HOSTED = "pbench-hosted"
CACHED = "pbench-cached"  # same length as HOSTED: pages of nearly the same size
FIRST = "pbench-ff-{:03d}"
ROWS = ["page_html", "page_json", "wheel_small", "wheel_big"]
QUICK = {"rounds": 1, "duration": 2.0, "warmup": 0.5, "first_fetch": 5, "wait_quiet": 5.0}
FULL = {"rounds": 3, "duration": 10.0, "warmup": 1.0, "first_fetch": 20, "wait_quiet": 30.0}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = p.add_argument
    add("--quick", action="store_true", help="smoke run: " + str(QUICK))
    add("--rounds", type=int, help="rounds of each load (default 3; --quick 1)")
    add("--duration", type=float, help="seconds per load (default 10; --quick 2)")
    add("--warmup", type=float, help="seconds of unmeasured load before each (default 1)")
    add("--connections", type=int, default=50, help="wrk connections: pages, small wheel")
    add("--big-connections", type=int, default=16, help="wrk connections: the big wheel")
    add("--wrk-threads", type=int, default=1)
    add("--threads", type=int, default=16, help="waitress threads of every server")
    add("--pin", metavar="CPUS", help="run every pkgserver on these CPUs (taskset -c CPUS)")
    add("--page-files", type=int, default=200, help="files of the measured project (200)")
    add("--small-kb", type=int, default=20, help="size of the small wheel, KiB (20)")
    add("--big-kb", type=int, default=1024, help="size of the big wheels, KiB (1024)")
    add("--first-fetch", type=int, help="projects fetched once through the proxy (20; --quick 5)")
    add("--proxy-ttl", type=float, default=86400, help="--proxy-ttl of the proxy (no revalidation)")
    add(
        "--servers",
        default="pypiserver,static",
        help="reference servers besides pkgserver: pypiserver, pypiserver-cached, static"
        " (comma-separated; 'none' for none)",
    )
    add(
        "--py-spy",
        action="store_true",
        help="record the proxy with py-spy (pip install py-spy) during the first round's hosted"
        " and cached loads: collapsed stacks (py-spy's raw format, which speedscope and"
        " flamegraph.pl read) in the logs folder",
    )
    add(
        "--loads",
        default=",".join(ROWS),
        help="loads measured (default: all of " + ",".join(ROWS) + ")",
    )
    add("--python-load", action="store_true", help="the Python load generator even with wrk")
    add("--timeout", type=float, default=60, help="load client timeout, seconds")
    add("--sources", metavar="REV", help="measure pkgserver as of this git revision")
    add("--live-sources", action="store_true", help="run pkgserver from the working tree")
    add("--pkgserver-python", default=str(ROOT / ".venv" / "bin" / "python"))
    add("--cache", type=Path, default=HERE / ".cache", help="corpora (default bench/.cache)")
    add("--out", type=Path, default=HERE / "results" / "proxy.md")
    add("--wait-quiet", type=float, help="wait up to this long for a quiet machine before a load")
    add("--drain-timeout", type=float, default=180)
    add("--lock-wait", type=float, default=3600)
    add("--from-json", type=Path, help="measure nothing: re-render an earlier run's JSON")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.references = [s for s in args.servers.split(",") if s and s != "none"]
    unknown = set(args.references) - {"pypiserver", "pypiserver-cached", "static"}
    if unknown:
        p.error(f"unknown --servers: {', '.join(sorted(unknown))}")
    args.rows = [r for r in args.loads.split(",") if r]
    if not args.rows or set(args.rows) - set(ROWS):
        p.error(f"--loads takes some of {','.join(ROWS)}")
    if args.page_files < 4:
        p.error("--page-files must be at least 4")
    return args


# --------------------------------------------------------------------------------------------
# The files: an upstream tree and a hosted tree, the same files under two names


def sized_wheel(directory: Path, name: str, version: str, size: int, seed: int) -> Path:
    """An installable wheel of about ``size`` bytes: a stored (uncompressed) member of random
    bytes from ``seed``, so two names with the same seed give wheels of the same size."""
    dist = re.sub(r"[-_.]+", "_", name).lower()
    dist_info = f"{dist}-{version}.dist-info"
    data = random.Random(seed).randbytes(max(0, size - 1024))
    members = {
        f"{dist}/__init__.py": b"",
        f"{dist}/data.bin": data,
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            "Summary: A wheel of the proxy benchmark\nRequires-Python: >=3.8\n"
        ).encode(),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, body in members.items():
        b64 = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={b64},{len(body)}")
    record.append(f"{dist_info}/RECORD,,")
    members[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    out = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for path, body in members.items():
            zf.writestr(zipfile.ZipInfo(path, date_time=(2024, 1, 1, 0, 0, 0)), body)
    return out


@dataclass
class Tree:
    """The measured project as one tree holds it."""

    path: Path
    project: str
    small: str  # file names
    big: str
    files: list[str]


@dataclass
class Corpus:
    upstream: Tree
    hosted: Tree
    first: list[tuple[str, str]]  # (project, wheel file name) of the first-fetch projects


def _project(directory: Path, name: str, files: int, small: int, big: int) -> Tree:
    """``files`` files of ``name``: small generated wheels and sdists (versions 1.0.N), a
    ``small``-byte wheel (2.0.0) and a ``big``-byte one (2.0.1)."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(files - 2):
        version = f"1.0.{i // 2}"
        if i % 2 == 0:
            make_wheel(directory, name, version, summary="Proxy bench", requires_python=">=3.8")
        else:
            make_sdist(directory, name, version, metadata_version="2.2", summary="Proxy bench")
    s = sized_wheel(directory, name, "2.0.0", small, seed=1)
    b = sized_wheel(directory, name, "2.0.1", big, seed=2)
    return Tree(directory, name, s.name, b.name, sorted(f.name for f in directory.iterdir()))


def ensure_corpus(args: argparse.Namespace) -> Corpus:
    """The trees, made once per set of sizes under --cache/proxy/ and reused."""
    key = f"{args.page_files}-{args.small_kb}k-{args.big_kb}k-{args.first_fetch}"
    base = args.cache / "proxy" / f"corpus-{key}"
    marker = base.with_suffix(".json")
    small, big = args.small_kb * 1024, args.big_kb * 1024
    if marker.exists() and (base / "upstream").is_dir() and (base / "hosted").is_dir():
        saved = json.loads(marker.read_text())
        log(f"proxy corpus {key}: reusing {base}")
        trees = {k: Tree(**{**saved[k], "path": Path(saved[k]["path"])}) for k in ("up", "host")}
        first = [tuple(x) for x in saved["first"]]
        return Corpus(trees["up"], trees["host"], first)  # type: ignore[arg-type]
    shutil.rmtree(base, ignore_errors=True)
    log(f"proxy corpus {key}: generating in {base} ...")
    up = _project(base / "upstream", CACHED, args.page_files, small, big)
    host = _project(base / "hosted", HOSTED, args.page_files, small, big)
    first = []
    for i in range(args.first_fetch):
        name = FIRST.format(i)
        first.append((name, sized_wheel(base / "upstream", name, "1.0.0", big, seed=100 + i).name))
    old = time.time() - 86400
    for f in base.rglob("*"):
        os.utime(f, (old, old))

    def tree(t: Tree) -> dict[str, Any]:
        return {**t.__dict__, "path": str(t.path)}

    marker.write_text(json.dumps({"up": tree(up), "host": tree(host), "first": first}))
    return Corpus(up, host, first)


def clean(corpus: Corpus) -> None:
    """pkgserver's state of an earlier run (index caches, records) out of both trees."""
    for tree in (corpus.upstream, corpus.hosted):
        shutil.rmtree(tree.path / ".pkgserver", ignore_errors=True)
        for p in tree.path.glob(".pkgserver*"):
            if p.is_file():
                p.unlink()


# --------------------------------------------------------------------------------------------
# The servers


@dataclass
class Ctx:
    args: argparse.Namespace
    python: str
    snapshot: Path | None
    logdir: Path
    results: dict[str, Any]
    pypiserver_exe: str = ""
    runs: dict[str, Running] = field(default_factory=dict)


def pinned(server: Server, cpus: str | None) -> Server:
    if cpus:
        argv = server.argv
        server.argv = lambda port, c: ["taskset", "-c", cpus, *argv(port, c)]
    return server


def proxy_server(ctx: Ctx, upstream: str, cache: Path, hosted: Path) -> Server:
    """pkgserver with --proxy (and no --disable-fallback, which would win over it)."""
    a = ctx.args

    def argv(port: int, _c: Path) -> list[str]:
        return [
            ctx.python, "-m", "pkgserver", "run", "-p", str(port), "-i", "127.0.0.1",
            "-P", ".", "-a", ".", "--threads", str(a.threads), "--log-stream", "stderr",
            "--proxy", "--fallback-url", f"{upstream}/simple/", "--proxy-cache", str(cache),
            "--proxy-ttl", f"{a.proxy_ttl:g}", str(hosted),
        ]  # fmt: skip

    env = {"PYTHONPATH": str(ctx.snapshot)} if ctx.snapshot else {}
    return pinned(Server("proxy", "pkgserver --proxy", argv, env=env), a.pin)


def static_server(ctx: Ctx, directory: Path) -> Server:
    return Server(
        "static",
        "bare waitress (bench/static.py)",
        lambda port, _c: [
            ctx.python,
            str(HERE / "static.py"),
            str(directory),
            "--port",
            str(port),
            "--threads",
            str(ctx.args.threads),
        ],
        health="/health.txt",
    )


def page_lists(project: str, n: int) -> Callable[[str], bool]:
    def check(base: str) -> bool:
        a = fetch(base, f"/simple/{project}/", {"Accept": HTML}, timeout=60)
        return a.status == 200 and len(links(a.body)) == n

    return check


def answers(path: str) -> Callable[[str], bool]:
    return lambda base: fetch(base, path, timeout=60).status == 200


def launch(ctx: Ctx, server: Server, ready: Callable[[str], bool]) -> Running:
    xdg = ctx.args.cache / "xdg" / f"proxy-{server.name}"
    shutil.rmtree(xdg, ignore_errors=True)
    xdg.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k.startswith("PKGSERVER_")}
    clear = dict.fromkeys(env, "")  # no PKGSERVER_* option from the environment
    log(f"{server.name}: starting")
    run = start(
        server,
        None,
        ctx.logdir,
        ready,
        120,
        env={**clear, "XDG_CACHE_HOME": str(xdg), **server.env},
    )
    log(f"{server.name}: ready in {run.ready_seconds:.2f}s ({run.base})")
    ctx.runs[server.name] = run
    return run


def offers(python: str, snapshot: Path | None, option: str) -> bool:
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


# --------------------------------------------------------------------------------------------
# What each server is asked, checked in full once


@dataclass
class Target:
    """One row on one server: the request, and the exact answer length the load checks."""

    path: str
    headers: dict[str, str]
    length: int
    connections: int

    def load(self) -> loadgen.Load:
        return loadgen.Load(
            [(self.path, self.headers)], expect=200, check="length", want=self.length
        )


def link_to(base: str, page: str, body: bytes, filename: str) -> tuple[str, str]:
    """(path, sha256) of ``filename`` as the HTML ``body`` of ``page`` links it."""
    for href, text in links(body):
        if text.strip() == filename or urlsplit(href).path.endswith("/" + filename):
            url, _, fragment = urljoin(base + page, href).partition("#")
            return urlsplit(url).path, fragment.partition("=")[2]
    raise RuntimeError(f"{base}{page} does not link {filename}")


def targets(
    ctx: Ctx, name: str, base: str, tree: Tree, project: str, checks: list[str]
) -> dict[str, Target | str]:
    """Each row's request on a pkgserver or pypiserver serving ``tree`` as ``project``."""
    a = ctx.args
    page = f"/simple/{project}/"
    out: dict[str, Target | str] = {}
    html = fetch(base, page, {"Accept": HTML})
    n = len(links(html.body))
    if html.status != 200 or n != len(tree.files):
        checks.append(f"{name}: {page} HTML: HTTP {html.status}, {n} links, want {len(tree.files)}")
    out["page_html"] = Target(page, {"Accept": HTML}, len(html.body), a.connections)
    js = fetch(base, page, {"Accept": JSON_V1})
    if js.status == 200 and js.headers.get("content-type", "").startswith(JSON_V1):
        files = json.loads(js.body).get("files", [])
        if len(files) != len(tree.files):
            checks.append(f"{name}: {page} JSON: {len(files)} files, want {len(tree.files)}")
        out["page_json"] = Target(page, {"Accept": JSON_V1}, len(js.body), a.connections)
    else:
        out["page_json"] = f"n/a: answers {js.status} {js.headers.get('content-type', '-')}"
    for row, filename, conns in (
        ("wheel_small", tree.small, a.connections),
        ("wheel_big", tree.big, a.big_connections),
    ):
        try:
            path, sha = link_to(base, page, html.body, filename)
        except RuntimeError as exc:
            checks.append(f"{name}: {exc}")
            out[row] = "n/a: not linked"
            continue
        got = fetch(base, path)
        size = (tree.path / filename).stat().st_size
        if (
            got.status != 200
            or len(got.body) != size
            or hashlib.sha256(got.body).hexdigest() != sha
        ):
            checks.append(
                f"{name}: {path}: HTTP {got.status}, {len(got.body)} bytes (want {size}),"
                " sha256 differs from the page's"
            )
        out[row] = Target(path, {}, size, conns)
    return out


def static_targets(ctx: Ctx, directory: Path, hosted: dict[str, Target | str]) -> None:
    """The files bench/static.py serves: the hosted pkgserver's answers, byte for byte."""
    run = ctx.runs["proxy"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "health.txt").write_text("ok\n")
    for row, name in (("page_html", "page.html"), ("page_json", "page.json")):
        t = hosted[row]
        if isinstance(t, Target):
            (directory / name).write_bytes(fetch(run.base, t.path, t.headers).body)
    for row in ("wheel_small", "wheel_big"):
        t = hosted[row]
        if isinstance(t, Target):
            (directory / t.path.rsplit("/", 1)[-1]).write_bytes(fetch(run.base, t.path).body)


def static_rows(directory: Path, hosted: dict[str, Target | str]) -> dict[str, Target | str]:
    out: dict[str, Target | str] = {}
    for row, name in (("page_html", "page.html"), ("page_json", "page.json")):
        t = hosted[row]
        out[row] = (
            Target("/" + name, t.headers, t.length, t.connections) if isinstance(t, Target) else t
        )
    for row in ("wheel_small", "wheel_big"):
        t = hosted[row]
        out[row] = (
            Target("/" + t.path.rsplit("/", 1)[-1], {}, t.length, t.connections)
            if isinstance(t, Target)
            else t
        )
    return out


# --------------------------------------------------------------------------------------------
# The proxy's metrics

_SAMPLE = re.compile(r"^(pkgserver_proxy_[a-z_]+)(\{[^}]*\})?\s+([0-9.eE+-]+)\s*$")


def proxy_metrics(base: str) -> dict[str, float]:
    """pkgserver_proxy_* samples of /metrics, keyed by name and labels."""
    a = fetch(base, "/metrics", timeout=30)
    out: dict[str, float] = {}
    if a.status != 200:
        return out
    for line in a.body.decode("utf-8", "replace").splitlines():
        m = _SAMPLE.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def outcomes(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What changed in pkgserver_proxy_requests_total: {"file/hit": 1234, ...}."""
    out = {}
    for key, value in after.items():
        if not key.startswith("pkgserver_proxy_requests_total{"):
            continue
        delta = value - before.get(key, 0.0)
        if delta:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', key))
            out[f"{labels.get('what', '?')}/{labels.get('outcome', '?')}"] = delta
    return out


# --------------------------------------------------------------------------------------------
# Loads


def profiler(ctx: Ctx, pid: int, name: str) -> subprocess.Popen[bytes] | None:
    """py-spy recording ``pid`` for the load's duration into the logs folder (--py-spy)."""
    exe = shutil.which("py-spy") or str(Path(ctx.python).parent / "py-spy")
    if not Path(exe).exists():
        log("--py-spy: py-spy not found (pip install py-spy)")
        return None
    out = ctx.logdir / f"py-spy-{name}.txt"
    cmd = [exe, "record", "--pid", str(pid), "--duration", f"{ctx.args.duration:.0f}"]
    cmd += ["--rate", "250", "--nonblocking", "--format", "raw", "--output", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(
    ctx: Ctx, server: str, row: str, target: Target, profile: bool = False
) -> dict[str, Any]:
    """Warm-up, then --duration of load on one row of one server, then its backlog drained.
    On the proxy: what its metrics counted meanwhile, and the upstream's CPU use."""
    a = ctx.args
    run = ctx.runs["proxy" if server in ("hosted", "cached") else server]
    opts = {**load_options(a, ctx.logdir), "connections": target.connections}
    load = target.load()
    health = "/health.txt" if server == "static" else "/health"
    if a.warmup > 0:
        loadgen.run(run.base, load, duration=a.warmup, **opts)
        drain(run.base, health, run.proc.pid, a.drain_timeout)
    wait_quiet(run.proc.pid, a.wait_quiet)
    metrics = proxy_metrics(run.base) if server == "cached" else {}
    upstream = ctx.runs["upstream"].proc.pid
    up0 = cpu_seconds(upstream)
    spy = profiler(ctx, run.proc.pid, f"{server}-{row}") if profile else None
    t0 = time.monotonic()
    r = accounted_load(run.proc.pid, run.base, load, duration=a.duration, **opts)
    up1 = cpu_seconds(upstream)
    if spy is not None:
        spy.wait(60)
        r["profiled"] = True
    if up0 is not None and up1 is not None:
        r["upstream_cpu"] = (up1 - up0) / (time.monotonic() - t0)
    if server == "cached":
        r["outcomes"] = outcomes(metrics, proxy_metrics(run.base))
    r["drain_seconds"], _answered = drain(run.base, health, run.proc.pid, a.drain_timeout)
    if row.startswith("wheel"):
        r["mb_per_s"] = r["rps"] * target.length / 1e6
    log(
        f"{server}: {row}: {r['rps']:,.0f} req/s"
        + (f" ({r['mb_per_s']:.0f} MB/s)" if "mb_per_s" in r else "")
        + f", p50 {fmt_ms(r['p50_ms'])}, server CPU {r.get('server_cpu', 0):.2f},"
        f" others {r.get('other_cpu', 0):.2f}, wrong {r['wrong']}, errors {r['errors']}"
        + (f", upstream CPU {r['upstream_cpu']:.2f}" if "upstream_cpu" in r else "")
        + (f", proxy counted {r['outcomes']}" if "outcomes" in r else "")
    )
    return r


def warm(ctx: Ctx, cached: dict[str, Target | str]) -> None:
    """One more GET of each cached row (the checks fetched them first: the cache holds them)."""
    base = ctx.runs["proxy"].base
    for row in ROWS:
        t = cached[row]
        if isinstance(t, Target):
            fetch(base, t.path, t.headers)


def rounds(ctx: Ctx, servers: dict[str, dict[str, Target | str]]) -> None:
    """Each row on each server, --rounds times, the servers' order rotated each round."""
    names = list(servers)
    out = ctx.results["rounds"]
    for rnd in range(ctx.args.rounds):
        shift = rnd % len(names)
        order = names[shift:] + names[:shift]
        res: dict[str, dict[str, Any]] = {}
        for row in ctx.args.rows:
            res[row] = {}
            for name in order:
                t = servers[name][row]
                if isinstance(t, str):
                    res[row][name] = {"na": t}
                    continue
                log(f"round {rnd + 1}/{ctx.args.rounds}: {row} on {name}")
                profile = ctx.args.py_spy and rnd == 0 and name in ("hosted", "cached")
                res[row][name] = measure(ctx, name, row, t, profile)
        out.append(res)
        write(ctx.results, ctx.args)


# --------------------------------------------------------------------------------------------
# First fetch


def timed_get(base: str, path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """One GET on a new connection: total seconds, seconds to the first byte of the body (or to
    the headers of an empty one), status, length and sha256 of the body."""
    parts = urlsplit(base)
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        conn.request("GET", path, headers=headers or {})
        res = conn.getresponse()
        t_headers = time.perf_counter()
        first = res.read(1)
        t_first = time.perf_counter() if first else t_headers
        h = hashlib.sha256(first)
        size = len(first)
        while chunk := res.read(1 << 16):
            h.update(chunk)
            size += len(chunk)
        done = time.perf_counter()
        return {
            "status": res.status,
            "seconds": done - t0,
            "ttfb": t_first - t0,
            "headers_seconds": t_headers - t0,
            "size": size,
            "sha256": h.hexdigest(),
        }
    finally:
        conn.close()


def _file_url(base: str, page: str, listing: bytes, filename: str) -> tuple[str, str]:
    """(path, sha256) of ``filename`` in the PEP 691 ``listing`` of ``page``."""
    for f in json.loads(listing).get("files", []):
        if f.get("filename") == filename:
            return urlsplit(urljoin(base + page, f["url"])).path, f.get("hashes", {}).get(
                "sha256", ""
            )
    raise RuntimeError(f"{base}{page} does not list {filename}")


def get_json(base: str, page: str) -> tuple[dict[str, Any], bytes]:
    """timed_get of a PEP 691 page, keeping its body."""
    parts = urlsplit(base)
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        conn.request("GET", page, headers={"Accept": JSON_V1})
        res = conn.getresponse()
        t_headers = time.perf_counter()
        body = res.read()
        done = time.perf_counter()
        return {
            "status": res.status,
            "seconds": done - t0,
            "ttfb": t_headers - t0,
            "size": len(body),
        }, body
    finally:
        conn.close()


def first_fetch(ctx: Ctx, corpus: Corpus) -> None:
    """Each first-fetch project's page and wheel: direct from the upstream, and through the
    proxy (misses), then the wheel through the proxy again (a hit)."""
    up, proxy = ctx.runs["upstream"].base, ctx.runs["proxy"].base
    res = ctx.results["first_fetch"] = {"samples": [], "checks": [], "outcomes": {}}
    checks: list[str] = res["checks"]
    for project, filename in corpus.first:  # the upstream warmed: pages rendered, files read
        page = f"/simple/{project}/"
        _r, body = get_json(up, page)
        path, _sha = _file_url(up, page, body, filename)
        fetch(up, path)
    wait_quiet(ctx.runs["proxy"].proc.pid, ctx.args.wait_quiet)
    before = proxy_metrics(proxy)
    for i, (project, filename) in enumerate(corpus.first):
        page = f"/simple/{project}/"
        sample: dict[str, Any] = {"project": project}
        sides = [("direct", up), ("proxied", proxy)]
        if i % 2:
            sides.reverse()
        urls = {}
        for side, base in sides:
            r, body = get_json(base, page)
            sample[f"page_{side}"] = r
            if r["status"] != 200:
                checks.append(f"{side} {page}: HTTP {r['status']}")
                continue
            urls[side] = _file_url(base, page, body, filename)
        if len(urls) < 2:
            res["samples"].append(sample)
            continue
        want = hashlib.sha256((corpus.upstream.path / filename).read_bytes()).hexdigest()
        for side, base in sides:
            path, listed = urls[side]
            r = timed_get(base, path)
            sample[f"file_{side}"] = r
            if r["status"] != 200 or r["sha256"] != want or listed != want:
                checks.append(
                    f"{side} {path}: HTTP {r['status']}, {r['size']} bytes,"
                    f" sha256 {'matches' if r['sha256'] == want else 'differs'}"
                )
        r = timed_get(proxy, urls["proxied"][0])
        sample["file_hit"] = r
        res["samples"].append(sample)
        log(
            f"first fetch {project}: page {sample['page_direct']['seconds'] * 1e3:.1f} ms direct,"
            f" {sample['page_proxied']['seconds'] * 1e3:.1f} ms proxied; wheel"
            f" {sample['file_direct']['seconds'] * 1e3:.1f} ms direct,"
            f" {sample['file_proxied']['seconds'] * 1e3:.1f} ms proxied"
            f" (first byte {sample['file_proxied']['ttfb'] * 1e3:.1f} ms),"
            f" {r['seconds'] * 1e3:.1f} ms cached"
        )
    res["outcomes"] = outcomes(before, proxy_metrics(proxy))
    res["size"] = (corpus.upstream.path / corpus.first[0][1]).stat().st_size if corpus.first else 0


# --------------------------------------------------------------------------------------------


def write(results: dict[str, Any], args: argparse.Namespace) -> str:
    text = report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    return text


def bench(ctx: Ctx, stack: contextlib.ExitStack) -> None:
    args = ctx.args
    corpus = ensure_corpus(args)
    clean(corpus)
    up_tree, host_tree = corpus.upstream, corpus.hosted
    res = ctx.results
    res["corpus"] = {
        "page_files": len(up_tree.files),
        "small_bytes": (up_tree.path / up_tree.small).stat().st_size,
        "big_bytes": (up_tree.path / up_tree.big).stat().st_size,
        "first_fetch": len(corpus.first),
    }
    checks: list[str] = res["checks"]
    work = args.cache / "proxy" / "run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    upstream = pinned(
        pkgserver(
            "upstream", ctx.python, args.threads, ctx.snapshot, "upstream", root=str(up_tree.path)
        ),
        args.pin,
    )
    up = launch(ctx, upstream, page_lists(CACHED, len(up_tree.files)))
    stack.callback(stop, up)
    proxy = launch(
        ctx,
        proxy_server(ctx, up.base, work / "proxy-cache", host_tree.path),
        page_lists(HOSTED, len(host_tree.files)),
    )
    stack.callback(stop, proxy)

    servers: dict[str, dict[str, Target | str]] = {}
    servers["hosted"] = targets(ctx, "hosted", proxy.base, host_tree, HOSTED, checks)
    before = proxy_metrics(proxy.base)
    servers["cached"] = targets(ctx, "cached", proxy.base, up_tree, CACHED, checks)
    warm(ctx, servers["cached"])
    res["warm"] = outcomes(before, proxy_metrics(proxy.base))
    log(f"cache warmed: the proxy counted {res['warm']}")
    res["page_bytes"] = {
        name: {row: t.length for row, t in rows.items() if isinstance(t, Target)}
        for name, rows in servers.items()
    }

    if args.references:
        exe = ctx.pypiserver_exe
        for ref in args.references:
            if ref == "static":
                static_dir = work / "static"
                static_targets(ctx, static_dir, servers["hosted"])
                launch(ctx, static_server(ctx, static_dir), answers("/health.txt"))
                stack.callback(stop, ctx.runs["static"])
                servers["static"] = static_rows(static_dir, servers["hosted"])
            else:
                backend = "cached-dir" if ref == "pypiserver-cached" else "simple-dir"
                srv = pypiserver(ref, ref, exe, backend)
                argv = srv.argv
                srv.argv = lambda port, _c, argv=argv: argv(port, host_tree.path)  # type: ignore[misc]
                run = launch(ctx, srv, page_lists(HOSTED, len(host_tree.files)))
                stack.callback(stop, run)
                servers[ref] = targets(ctx, ref, run.base, host_tree, HOSTED, checks)
                res["page_bytes"][ref] = {
                    row: t.length for row, t in servers[ref].items() if isinstance(t, Target)
                }
    res["servers"] = {name: run.argv for name, run in ctx.runs.items()}
    for c in checks:
        log(f"CHECK FAILED: {c}")
    write(res, args)
    rounds(ctx, servers)
    log("first fetch")
    first_fetch(ctx, corpus)
    res["memory"] = {name: proc_status(run.proc.pid) for name, run in ctx.runs.items()}


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
    if not offers(python, snapshot, "--proxy-cache"):
        raise SystemExit(
            "this pkgserver has no --proxy (pkgserver run --help): nothing to measure"
            + (f" (sources {args.sources})" if args.sources else "")
        )
    logdir = args.out.parent / f"{args.out.stem}-logs"
    shutil.rmtree(logdir, ignore_errors=True)
    logdir.mkdir(parents=True, exist_ok=True)
    if not loadgen.wrk_path() and not args.python_load:
        log("wrk not found: using the Python load generator (apt-get install -y wrk)")
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    results: dict[str, Any] = {
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "command": "python bench/proxy.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "environment": environment(tools, None, args.sources, snapshot),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "checks": [],
        "rounds": [],
    }
    ctx = Ctx(args, python, snapshot, logdir, results)
    if "pypiserver" in ",".join(args.references):
        venv = ensure_pypiserver(HERE / ".venvs", python)
        ctx.pypiserver_exe = str(venv / "bin" / "pypi-server")
        results["environment"]["pypiserver"] = version_of(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import importlib.metadata as m; print(', '.join(n + ' ' + m.version(n) for n in"
                " ('pypiserver', 'waitress')))",
            ]
        )
    with _interruptible(), contextlib.ExitStack() as stack:
        try:
            bench(ctx, stack)
        finally:
            stack.close()
            results["elapsed"] = time.monotonic() - t0
            results["sources_end"] = sources_digest()
            text = write(results, args)
    print(text)
    log(f"wrote {args.out} and {args.out.with_suffix('.json')} ({results['elapsed']:.0f} s)")
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
