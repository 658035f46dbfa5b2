"""The report of bench/s3_backend.py: Markdown from its results (the JSON beside it holds the
same figures). Rates are medians over the rounds; ratios are bucket / directory of the medians."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from report import fmt_ms, fmt_rps, fmt_s

Getter = Callable[[dict[str, Any]], "float | None"]


def _get(key: str, field: str) -> Getter:
    def get(r: dict[str, Any]) -> float | None:
        v = r.get(key, {}).get(field)
        return float(v) if isinstance(v, (int, float)) else None

    return get


def _cpu_per_request(key: str) -> Getter:
    """The server's CPU time per answer, in ms: steadier than a rate on a shared machine."""

    def get(r: dict[str, Any]) -> float | None:
        v = r.get(key, {})
        cpu, rps = v.get("server_cpu"), v.get("rps")
        return cpu / rps * 1e3 if isinstance(cpu, (int, float)) and rps else None

    return get


def _figures(settings: dict[str, Any]) -> list[tuple[str, str, Getter, str]]:
    """(label, unit, getter of one backend's round, target) of each load figure."""
    mb, big_c = settings["big_mb"], settings["big_connections"]
    follow_c, clients = settings["follow_connections"], settings["upload_clients"]
    return [
        ("`/simple/<p>/` HTML", "req/s", _get("page_html", "rps"), "≥ 0.8"),
        ("`/simple/<p>/` JSON", "req/s", _get("page_json", "rps"), "≥ 0.8"),
        ("server CPU per HTML page", "ms", _cpu_per_request("page_html"), ""),
        ("server CPU per JSON page", "ms", _cpu_per_request("page_json"), ""),
        ("wheel (~1 KB), streamed, wrk", "req/s", _get("wheel", "rps"), ""),
        ("server CPU per small wheel", "ms", _cpu_per_request("wheel"), ""),
        (
            f"wheel ({mb} MiB), streamed, wrk, {big_c} conn.",
            "MB/s",
            _get("big_wheel", "mb_per_s"),
            "",
        ),
        (
            f"wheel (~1 KB), client following redirects, {follow_c} conn.",
            "/s",
            _get("follow_small", "rps"),
            "",
        ),
        (
            f"wheel ({mb} MiB), client following redirects, {big_c} conn.",
            "MB/s",
            _get("follow_big", "mb_per_s"),
            "",
        ),
        ("small uploads, 1 client", "/s", _get("upload_1", "rate"), ""),
        (f"small uploads, {clients} clients", "/s", _get("upload_n", "rate"), ""),
    ]


def _median(values: list[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return statistics.median(found) if found else None


def _num(v: float | None, unit: str = "") -> str:
    if v is None:
        return "n/a"
    return f"{fmt_rps(v)} {unit}".strip()


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.2f}"


def _header(results: dict[str, Any]) -> list[str]:
    env, s = results["environment"], results["settings"]
    tool = "wrk" if "absent" not in env.get("wrk", "absent") and not s["python_load"] else "Python"
    out = [
        "# Directory backend vs bucket backend (bench/s3_backend.py)",
        "",
        f"Run {results['started']} UTC, {results.get('elapsed', 0) / 60:.0f} min:"
        f" `{results['command']}`",
        "",
        f"- machine: {env.get('machine')}: the servers, the load generator and Ceph share its"
        " CPUs, so every figure is noisy (±20% between runs is usual here)",
        f"- pkgserver {env.get('pkgserver')} measured: {env.get('commit')}",
        f"- S3: {env.get('ceph')} (single node, memstore, 127.0.0.1); boto3 {env.get('boto3')}",
        f"- {env.get('python')}, waitress {env.get('waitress')}, {env.get('wrk')}",
        f"- loads: {tool}, {s['wrk_threads']} thread, {s['connections']} connections,"
        f" {s['duration']:g} s each after {s['warmup']:g} s of warm-up; servers with"
        f" {s['threads']} threads; **{s['rounds']} round(s)**, directory and bucket in turn"
        " (order swapped each round); the tables give medians",
    ]
    if s.get("pin"):
        out.append(f"- every pkgserver held to CPU(s) {s['pin']} (`--pin`, taskset)")
    if results.get("sources_end") and results["sources_end"] != env.get("sources"):
        out.append(
            "- pkgserver's sources changed during the run: the snapshot taken at the start ran"
        )
    return [*out, ""]


def _rounds(load: dict[str, Any], backend: str) -> list[dict[str, Any]]:
    return [r.get(backend, {}) for r in load["rounds"]]


def _others(load: dict[str, Any]) -> str:
    """How busy the rest of the machine was during the wrk loads (Ceph included)."""
    found = [
        v["other_cpu"]
        for r in load["rounds"]
        for figures in r.values()
        if isinstance(figures, dict)
        for v in figures.values()
        if isinstance(v, dict) and isinstance(v.get("other_cpu"), (int, float))
    ]
    if not found:
        return ""
    return (
        f"CPUs used by other processes than the server and wrk during the wrk loads (Ceph's"
        f" daemons among them, busy for the bucket's downloads): median"
        f" {statistics.median(found):.2f}, max {max(found):.2f} (of {len(found)} loads)."
    )


def _load_tables(results: dict[str, Any]) -> list[str]:
    load, s = results["load"], results["settings"]
    out = [
        f"## Under load: {load['files']:,} files ({load['projects']:,} projects)",
        "",
        _others(load),
        "",
        "| figure | directory | bucket (one replica) | bucket / directory | target |",
        "|---|---:|---:|---:|---|",
    ]
    for label, unit, get, target in _figures(s):
        d = _median([get(r) for r in _rounds(load, "directory")])
        b = _median([get(r) for r in _rounds(load, "bucket")])
        out.append(f"| {label} | {_num(d, unit)} | {_num(b, unit)} | {_ratio(b, d)} | {target} |")
    for key, unit in (("upload_1", "1 client"), ("upload_n", f"{s['upload_clients']} clients")):
        d = _median([_get(key, "p50_ms")(r) for r in _rounds(load, "directory")])
        b = _median([_get(key, "p50_ms")(r) for r in _rounds(load, "bucket")])
        out.append(
            f"| small upload, p50 latency, {unit} | {fmt_ms(d)} | {fmt_ms(b)} | {_ratio(b, d)} | |"
        )
        d = _median([_get(key, "server_cpu_ms")(r) for r in _rounds(load, "directory")])
        b = _median([_get(key, "server_cpu_ms")(r) for r in _rounds(load, "bucket")])
        out.append(
            f"| server CPU per small upload, {unit} | {fmt_ms(d)} | {fmt_ms(b)}"
            f" | {_ratio(b, d)} | |"
        )
    big = load.get("big_wheel", {})
    ups = big.get("upload", {})
    d_up, b_up = (ups.get(k, {}).get("seconds") for k in ("directory", "bucket"))
    out.append(
        f"| upload of the {s['big_mb']} MiB wheel (once) | {fmt_s(d_up)} | {fmt_s(b_up)}"
        f" | {_ratio(b_up, d_up)} | |"
    )
    idle = load.get("idle_cpu", {})
    if idle:
        d_idle, b_idle = idle.get("directory"), idle.get("bucket")
        out.append(f"| server CPUs when idle (10 s) | {_num(d_idle)} | {_num(b_idle)} | | |")
    ready = load.get("ready", {})
    out.append(
        f"| ready at {load['files']:,} files, first start | "
        f"{fmt_s(ready.get('directory, first start'))} |"
        f" {fmt_s(ready.get('bucket, first start (cold)'))} (cold bucket) | | |"
    )
    settled = ready.get("bucket, settled after the first start")
    out.append(
        f"| ready, second replica on the same bucket | | {fmt_s(ready.get('bucket, second start'))}"
        + (f" (once the first was idle, {settled:.0f} s after its start)" if settled else "")
        + " | | |"
    )
    out += ["", *_redirect(load, s), *_replicas(load, s), *_each_round(load, s), *_problems(load)]
    return out


def _redirect(load: dict[str, Any], s: dict[str, Any]) -> list[str]:
    out = ["### Redirected downloads", ""]
    if not load.get("redirect"):
        return [
            *out,
            "Not available: this pkgserver's `run --help` has no `--redirect-downloads`.",
            "",
        ]
    rounds = [r.get("redirect", {}) for r in load["rounds"]]
    out += [
        "A client that follows redirects (Python threads, a keep-alive connection per host, as pip"
        " and uv follow a 302 to the store), the same client on each server:",
        "",
        "| figure | directory | bucket, streamed | bucket, `--redirect-downloads` | redirected /"
        " streamed | redirected / directory |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, field, unit, label in (
        ("follow_small", "rps", "/s", "wheel (~1 KB)"),
        ("follow_big", "mb_per_s", "MB/s", f"wheel ({s['big_mb']} MiB)"),
    ):
        d = _median([_get(key, field)(r) for r in _rounds(load, "directory")])
        b = _median([_get(key, field)(r) for r in _rounds(load, "bucket")])
        x = _median([_get(key, field)(r) for r in rounds])
        out.append(
            f"| {label} | {_num(d, unit)} | {_num(b, unit)} | {_num(x, unit)} | {_ratio(x, b)}"
            f" | {_ratio(x, d)} |"
        )
    r302 = _median([_get("wheel_302", "rps")(r) for r in rounds])
    return [
        *out,
        "",
        f"The 302 answers alone (wrk, {s['connections']} connections): {_num(r302, 'req/s')}.",
        "",
    ]


def _replicas(load: dict[str, Any], s: dict[str, Any]) -> list[str]:
    pairs = [r.get("pair", {}) for r in load["rounds"]]
    one = _median([_get("one", "rps")(p) for p in pairs])
    both = _median([p.get("sum") for p in pairs])
    cpu_one = _median([_get("one", "server_cpu")(p) for p in pairs])
    cpu_both = _median(
        [sum(e.get("server_cpu") or 0 for e in p["each"]) if p.get("each") else None for p in pairs]
    )
    out = [
        "### Two replicas",
        "",
        "Replica A alone, then A and B at once (a wrk each, the same load), back to back in each"
        " round:",
        "",
        "| `/simple/<p>/` HTML | A alone | A and B at once (sum) | sum / one |",
        "|---|---:|---:|---:|",
        f"| req/s | {_num(one)} | {_num(both)} | {_ratio(both, one)} |",
        f"| servers' CPUs | {_num(cpu_one)} | {_num(cpu_both)} | |",
        "",
        f"Coherence: uploads to replica A at {s['per_minute']:g}/min for"
        f" {s['coherence_seconds']:g} s, then {s['burst']} back to back; a poller asks replica"
        " B for the project page every 20 ms; delay = first page of B that lists the file -"
        " A's answer to its upload. Target: p99 < 1 s.",
        "",
        "| replicas' options | phase | uploaded | seen on B | p50 | p95 | p99 | max |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for setting, c in load.get("coherence", {}).items():
        for phase in ("steady", "burst"):
            p = c[phase]
            what = (
                f"{p['per_minute']:g}/min" if phase == "steady" else f"burst ({p['seconds']:.1f} s)"
            )
            out.append(
                f"| {setting} | {what} | {p['answered']} | {p['seen']} | {fmt_ms(p['p50_ms'])}"
                f" | {fmt_ms(p['p95_ms'])} | {fmt_ms(p['p99_ms'])} | {fmt_ms(p['max_ms'])} |"
            )
    return [*out, ""]


def _each_round(load: dict[str, Any], s: dict[str, Any]) -> list[str]:
    n = len(load["rounds"])
    out = [
        "### Each round (directory / bucket, and the ratio)",
        "",
        "| figure | " + " | ".join(f"round {i + 1}" for i in range(n)) + " |",
        "|---|" + "---:|" * n,
    ]
    for label, unit, get, _target in _figures(s):
        cells = []
        for r in load["rounds"]:
            d, b = get(r.get("directory", {})), get(r.get("bucket", {}))
            cells.append(f"{_num(d)} / {_num(b)} ({_ratio(b, d)})")
        out.append(f"| {label}, {unit} | " + " | ".join(cells) + " |")
    pairs = []
    for r in load["rounds"]:
        p = r.get("pair", {})
        one, both = _get("one", "rps")(p), p.get("sum")
        pairs.append(f"{_num(one)} / {_num(both)} ({_ratio(both, one)})")
    out.append("| pages: replica A alone / A and B at once, req/s | " + " | ".join(pairs) + " |")
    return [*out, ""]


def _problems(load: dict[str, Any]) -> list[str]:
    """Wrong answers, errors and failed checks, so that a fast wrong figure is not read as
    fast."""
    found = list(load.get("checks", []))
    for i, r in enumerate(load["rounds"]):
        for backend, figures in r.items():
            if not isinstance(figures, dict):
                continue
            for key, v in figures.items():
                if not isinstance(v, dict):
                    continue
                bad = {k: v.get(k) for k in ("wrong", "errors", "non2xx3xx") if v.get(k)}
                if key.startswith("upload") and v.get("failed"):
                    bad["failed"] = v["failed"]
                if key == "wheel_302":
                    bad.pop("non2xx3xx", None)  # a 302 is what it should answer
                if backend == "redirect" and key.startswith("follow") and not v.get("redirects"):
                    bad["redirects"] = "none: the downloads were not redirected"
                if bad:
                    found.append(f"round {i + 1}, {backend}, {key}: {bad}")
    for setting, c in load.get("coherence", {}).items():
        for phase in ("steady", "burst"):
            p = c[phase]
            if p["unseen"] or p["answered"] != p["uploads"]:
                found.append(
                    f"coherence ({setting}, {phase}): {p['uploads'] - p['answered']} uploads"
                    f" failed, {p['unseen']} never seen on B within {c['wait']:g} s"
                )
        if c.get("failed"):
            found.append(f"coherence ({setting}): failed uploads, e.g. {c['failed'][0]}")
    if not found:
        return ["No wrong answers, socket errors or failed uploads.", ""]
    return ["Problems:", "", *(f"- {p}" for p in found), ""]


def _start_table(results: dict[str, Any]) -> list[str]:
    st = results["start"]
    files = st["files"]
    corpus = (
        "reused from the cache"
        if st.get("corpus_reused")
        else f"generated in {fmt_s(st.get('corpus_seconds'))}"
    )
    put = st.get("put_seconds")
    out = [
        f"## Start at {files:,} files ({st['projects']:,} projects)",
        "",
        f"The directory's corpus (bench/corpus.py: small valid wheels and sdists): {corpus}. Put"
        f" in the bucket with {results['settings']['put_threads']} threads of boto3 PUTs:"
        + (f" {fmt_s(put)} ({files / put:,.0f} objects/s)." if put else " -."),
        "Ready: from process start until `/health` answers 200 and `/simple/` lists every project.",
        "",
        "| start | directory | bucket | target |",
        "|---|---:|---:|---|",
    ]

    def cell(key: str) -> str:
        r = st.get(key)
        if not r:
            return "-"
        if r.get("seconds") is None:
            return f"not ready ({r.get('error', '?')[:80]})"
        rss = f", RSS {r['rss_mib']:.0f} MiB" if r.get("rss_mib") else ""
        other = r.get("other_cpu")
        busy = f", others' CPU {other:.2f}" if other is not None else ""
        return f"{fmt_s(r['seconds'])}{rss}{busy}"

    out.append(
        f"| first (directory: no index cache; bucket: cold) | {cell('directory_first')}"
        f" | {cell('bucket_first')} | |"
    )
    out.append(
        f"| second (directory: index cache) | {cell('directory_second')}"
        f" | {cell('bucket_second')} | < 10 s |"
    )
    first = st.get("bucket_first", {})
    if first.get("settled") is not None:
        out += [
            "",
            f"After its first start the bucket's server was left running until it was idle"
            f" ({first['settled']:.0f} s: a replica may store an index snapshot then), and then"
            " stopped; the second start came after.",
        ]
    if "stored_after" in first:
        out += [
            "",
            "Objects under `packages/.pkgserver/` after the bucket's first start (descriptions"
            f" and records): {first['stored_after']:,}.",
        ]
        if first.get("seconds") is None and first["stored_after"]:
            timeout = results["settings"]["start_timeout"]
            projected = timeout * files / first["stored_after"]
            out.append(
                f"It had described {first['stored_after']:,} of {files:,} files in"
                f" {timeout:.0f} s: at that pace the first start would take about"
                f" {projected / 60:.0f} min."
            )
    return [*out, ""]


def report(results: dict[str, Any]) -> str:
    out = _header(results)
    if "load" in results and results["load"].get("rounds"):
        out += _load_tables(results)
    if "start" in results:
        out += _start_table(results)
    return "\n".join(out) + "\n"
