"""HTTP load on each endpoint: what it asks (checked once in full before it is measured), then a
fixed time of load (wrk or the Python load generator, bench/loadgen.py) with every answer
checked, the server's and the machine's CPU use meanwhile, and the drain of its backlog."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import loadgen
from common import ENDPOINTS, HTML, JSON_V1, Answer, fetch, links, log
from corpus_cache import Corpus
from machine import cpu_seconds, machine_busy, own_cpu, wait_quiet
from report import fmt_ms
from servers import Running, Server

Loads = dict[str, "loadgen.Load | str"]


def probe(a: Answer) -> dict[str, Any]:
    """What the checked answer says about the load: its time, whether the server closes."""
    return {
        "probe_seconds": a.seconds,
        "closes": a.headers.get("connection", "").lower() == "close",
    }


def _index(base: str, n_projects: int, loads: Loads, checks: list[str]) -> None:
    a = fetch(base, "/simple/", {"Accept": HTML})
    got = len(links(a.body))
    if a.status != 200 or got != n_projects:
        checks.append(f"/simple/: HTTP {a.status}, {got} links (want {n_projects})")
    # The index can be hundreds of KB: counting its links in every answer would make the load
    # generator the bottleneck. Its exact length (checked in full once, above) stands in.
    loads["index"] = loadgen.Load(
        [("/simple/", {"Accept": HTML})], expect=200, check="length", want=len(a.body), **probe(a)
    )
    # The same as pip and uv ask for it: they send Accept-Encoding: gzip. A server that does not
    # compress answers the plain page, whose length is then the one checked.
    gz = {"Accept": HTML, "Accept-Encoding": "gzip"}
    a = fetch(base, "/simple/", gz)
    body = a.body
    if a.headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    got = len(links(body))
    if a.status != 200 or got != n_projects:
        checks.append(f"/simple/ with gzip: HTTP {a.status}, {got} links (want {n_projects})")
    loads["index_gz"] = loadgen.Load(
        [("/simple/", gz)], expect=200, check="length", want=len(a.body), **probe(a)
    )


def _pages(
    base: str, server: Server, corpus: Corpus, sample: list[str], loads: Loads, checks: list[str]
) -> list[tuple[str, str]]:
    """Project pages as HTML, as JSON and revalidated; returns the first one's links."""
    p0 = sample[0]
    page_reqs = [(f"/simple/{p}/", {"Accept": HTML}) for p in sample]
    a = fetch(base, f"/simple/{p0}/", {"Accept": HTML})
    found = links(a.body)
    if a.status != 200 or len(found) != corpus.per_project:
        checks.append(f"/simple/{p0}/: HTTP {a.status}, {len(found)} links")
    loads["page_html"] = loadgen.Load(
        page_reqs, expect=200, check="html", want=corpus.per_project, **probe(a)
    )
    etag = a.headers.get("etag")
    server_header = a.headers.get("server", "?")
    checks_info = f"`Server: {server_header}`"
    if checks_info not in server.notes:
        server.notes.append(checks_info)

    # Project page, JSON
    a = fetch(base, f"/simple/{p0}/", {"Accept": JSON_V1})
    ctype = a.headers.get("content-type", "")
    if a.status == 200 and ctype.startswith(JSON_V1):
        files = json.loads(a.body).get("files", [])
        if len(files) != corpus.per_project:
            checks.append(f"/simple/{p0}/ JSON: {len(files)} files")
        loads["page_json"] = loadgen.Load(
            [(p, {"Accept": JSON_V1}) for p, _ in page_reqs],
            expect=200,
            check="json",
            want=corpus.per_project,
            **probe(a),
        )
    else:
        loads["page_json"] = (
            f"n/a: answers {a.status} {ctype.split(';')[0] or '-'} to the JSON Accept"
        )
    _revalidation(base, sample, etag, loads, checks)
    return found


def _revalidation(
    base: str, sample: list[str], etag: str | None, loads: Loads, checks: list[str]
) -> None:
    p0 = sample[0]
    if not etag:
        loads["page_304"] = "n/a: no ETag on project pages"
        return
    a = fetch(base, f"/simple/{p0}/", {"Accept": HTML, "If-None-Match": etag})
    if a.status != 304:
        checks.append(f"/simple/{p0}/ If-None-Match {etag}: HTTP {a.status}, want 304")
    reqs = []
    for p in sample[:100]:
        b = fetch(base, f"/simple/{p}/", {"Accept": HTML})
        if b.status == 200 and b.headers.get("etag"):
            reqs.append((f"/simple/{p}/", {"Accept": HTML, "If-None-Match": b.headers["etag"]}))
    loads["page_304"] = loadgen.Load(reqs, expect=304, **probe(a))


def _wheels(
    base: str, sample: list[str], found: list[tuple[str, str]], loads: Loads, checks: list[str]
) -> None:
    """The wheel and its metadata: the link of the first project, its name replaced by each
    other's."""
    p0 = sample[0]
    wheel_name = f"{p0}-1.0.0-py3-none-any.whl"
    href = next((h for h, text in found if text.strip() == wheel_name), None)
    if href is None:
        checks.append(f"/simple/{p0}/: no link to {wheel_name}")
        loads["wheel"] = loads["metadata"] = "n/a: wheel link not found"
        return
    url, _, fragment = urljoin(f"{base}/simple/{p0}/", href).partition("#")
    template = urlsplit(url).path.replace(p0, "{p}")
    paths = [template.replace("{p}", p) for p in sample]
    a = fetch(base, paths[0])
    want = fragment.partition("=")[2]
    if a.status != 200 or (
        fragment.startswith("sha256=") and hashlib.sha256(a.body).hexdigest() != want
    ):
        checks.append(f"{paths[0]}: HTTP {a.status}, {len(a.body)} bytes, hash mismatch?")
    loads["wheel"] = loadgen.Load([(p, {}) for p in paths], expect=200, **probe(a))
    a = fetch(base, paths[0] + ".metadata")
    if a.status == 200 and a.body.startswith(b"Metadata-Version"):
        loads["metadata"] = loadgen.Load(
            [(p + ".metadata", {}) for p in paths], expect=200, **probe(a)
        )
    else:
        loads["metadata"] = f"n/a: .metadata answers {a.status}"


def _json_api(
    base: str, server: Server, corpus: Corpus, sample: list[str], loads: Loads, checks: list[str]
) -> None:
    path = server.json_api.replace("{p}", sample[0])
    a = fetch(base, path)
    try:
        version = json.loads(a.body)["info"]["version"]
    except (ValueError, KeyError, TypeError):
        version = None
    if a.status != 200 or version != corpus.latest_version:
        checks.append(
            f"{path}: HTTP {a.status}, info.version {version!r} (want {corpus.latest_version})"
        )
        loads["json_api"] = f"n/a: {path} answers {a.status}"
    else:
        loads["json_api"] = loadgen.Load(
            [(server.json_api.replace("{p}", p), {}) for p in sample],
            expect=200,
            **probe(a),
        )


def prepare_loads(
    base: str, server: Server, corpus: Corpus, sample: list[str], checks: list[str]
) -> Loads:
    """Endpoint -> Load, or -> reason it is not applicable. Failed checks go to ``checks``."""
    loads: Loads = {}
    _index(base, corpus.projects, loads, checks)
    found = _pages(base, server, corpus, sample, loads, checks)
    _wheels(base, sample, found, loads, checks)
    _json_api(base, server, corpus, sample, loads, checks)
    return loads


def load_options(args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    """How every load is run (loadgen.run's keyword arguments besides the load and duration)."""
    return dict(
        connections=args.connections,
        threads=args.wrk_threads,
        timeout=args.timeout,
        use_wrk=not args.python_load,
        workdir=logdir,
    )


def accounted_load(pid: int, base: str, load: loadgen.Load, **kw: Any) -> dict[str, Any]:
    """loadgen.run, plus how many CPUs the server used and how many others on the machine did
    (anything but the server and the load generator: a busy machine makes the figures low)."""
    t0, busy0, srv0, own0 = time.monotonic(), machine_busy(), cpu_seconds(pid), own_cpu()
    r = loadgen.run(base, load, **kw)
    wall = time.monotonic() - t0
    busy, srv, own = machine_busy() - busy0, cpu_seconds(pid), own_cpu() - own0
    if srv is not None and srv0 is not None and wall > 0:
        r["server_cpu"] = (srv - srv0) / wall
        r["other_cpu"] = max(0.0, (busy - (srv - srv0) - own) / wall)
        r["loadgen_cpu"] = own / wall
    return r


def drain(base: str, path: str, pid: int, timeout: float) -> tuple[float, bool]:
    """Wait until the backlog of the last load is gone: the server answers a trivial request
    (its queue is empty) and then stops using CPU (its threads finished what they had).
    Returns the time it took and whether the server answered at all."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    answered = False
    while time.monotonic() < deadline:
        try:
            fetch(base, path, timeout=max(1.0, deadline - time.monotonic()))
            answered = True
            break
        except (OSError, http.client.HTTPException):
            time.sleep(0.2)
    while answered and time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(0.3)
        after = cpu_seconds(pid)
        if before is None or after is None or (after - before) / 0.3 < 0.15:
            break
    return time.monotonic() - t0, answered


def _log_rate(name: str, key: str, r: dict[str, Any]) -> None:
    log(
        f"{name}: {key}: {r['rps']:.1f} req/s, p50 {fmt_ms(r['p50_ms'])}, "
        f"p99 {fmt_ms(r['p99_ms'])}, n={r['requests']}, errors {r['errors']}, "
        f"non-2xx/3xx {r['non2xx3xx']}, wrong {r['wrong']}"
        + (f", backlog drained in {r['drain_seconds']:.1f}s" if r["drain_seconds"] > 1 else "")
    )


def _measure_one(
    run: Running,
    server: Server,
    key: str,
    load: loadgen.Load,
    args: argparse.Namespace,
    logdir: Path,
) -> tuple[dict[str, Any], str]:
    """Warm-up, then the measured load of one endpoint. Returns its figures, and why the
    server counts as stuck ("" if it does not)."""
    common = load_options(args, logdir)
    # A backlog of slow requests takes about connections x one request to clear.
    limit = max(args.drain_timeout, 3 * args.connections * load.probe_seconds)
    # Warm-up warms nothing when one request takes a second (pypiserver on large
    # corpora): skip it there rather than wait for its backlog to drain.
    if args.warmup > 0 and load.probe_seconds < 0.25:
        loadgen.run(run.base, load, duration=args.warmup, **common)
        _s, answered = drain(run.base, server.health, run.proc.pid, limit)
        if not answered:
            stuck = (
                f"did not answer {server.health} within {limit:.0f} s"
                f" after a {args.warmup:g} s warm-up of {key}"
            )
            log(f"{server.name}: {stuck}: skipping the rest")
            return {"na": "not measured: " + stuck}, stuck
    wait_quiet(run.proc.pid, args.wait_quiet)
    r = accounted_load(run.proc.pid, run.base, load, duration=args.duration, **common)
    r["closes"] = load.closes
    r["check"] = load.check
    r["drain_seconds"], answered = drain(run.base, server.health, run.proc.pid, limit)
    stuck = ""
    if not answered:
        stuck = f"did not answer {server.health} within {limit:.0f} s after the load of {key}"
        log(f"{server.name}: {stuck}: skipping the rest")
    _log_rate(server.name, key, r)
    return r, stuck


def measure_endpoints(
    run: Running,
    server: Server,
    loads: Loads,
    args: argparse.Namespace,
    logdir: Path,
    result: dict[str, Any],
) -> str:
    """Each endpoint of ``args.endpoint_keys`` in turn, into ``result["endpoints"]``. Returns
    why the server stopped answering ("" if it did not): nothing after that is measured."""
    stuck = ""
    for key, _label in ENDPOINTS:
        if key not in args.endpoint_keys:
            continue
        if stuck:
            result["endpoints"][key] = {"na": "not measured: the server had stopped answering"}
            continue
        load = loads.get(key)
        if isinstance(load, str) or load is None:
            result["endpoints"][key] = {"na": load or "n/a"}
            log(f"{server.name}: {key}: {load}")
            continue
        result["endpoints"][key], stuck = _measure_one(run, server, key, load, args, logdir)
    return stuck
