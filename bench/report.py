"""The report: Markdown from a run's results (the JSON next to it holds the same figures).

Per corpus size: the ceiling, a table of rates per endpoint and server, pkgserver's rates
relative to the ceiling, to its baseline (pkgserver@REV, with ``--baseline``) and to
pypiserver, then time to ready, memory, uploads, pip/uv and the servers' logs.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import loadgen
from common import ENDPOINTS


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 1000:
        return f"{v / 1000:.2f} s"
    if v >= 10:
        return f"{v:.0f} ms"
    return f"{v:.1f} ms"


def fmt_ready(s: dict[str, Any], key: str) -> str:
    """Time to ready, with others' CPU use meanwhile when that was notable."""
    other = s.get(f"{key}_other_cpu")
    busy = f" (others' CPU {other:.2f})" if other is not None and other > 0.25 else ""
    return fmt_s(s.get(key)) + busy


def fmt_cpu(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def fmt_s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def fmt_rps(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 1 else f"{v:.2f}"


def fmt_mb(d: dict[str, float] | None, key: str) -> str:
    return f"{d[key]:.0f} MiB" if d and key in d else "-"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "n/a"
    if b == 0:
        return "∞ (0 completed)" if a > 0 else "n/a"
    r = a / b
    return f"{r:.2f}x" if r < 10 else f"{r:,.0f}x"


def _header(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    env = results["environment"]
    out = [
        "# pkgserver benchmark",
        "",
        f"Run {results['started']} UTC, {results['elapsed']:.0f} s: `{results['command']}`",
        "",
    ]
    if results.get("sources_end") and results["sources_end"] != env.get("sources"):
        out += [
            f"Note: pkgserver's sources in the working tree changed during the run"
            f" ({env.get('sources')} at the start, {results['sources_end']} at the end)"
            + (
                ": every pkgserver ran the snapshot taken at the start."
                if results.get("snapshot")
                else ": pkgservers started at different times ran different code."
            ),
            "",
        ]
    keys = ("machine", "pkgserver", "commit", "baseline", "python", "waitress", "pypiserver")
    out += [f"- {k}: {env[k]}" for k in (*keys, "wrk", "pip", "uv", "twine") if k in env]
    wrk = loadgen.wrk_path() and not args.python_load
    tool = "wrk" if wrk else "Python threads (wrk absent: `apt-get install -y wrk`)"
    out += [
        f"- load: {tool}, {args.connections} keep-alive connections"
        + (f", {args.wrk_threads} wrk thread(s)" if wrk else "")
        + f", {args.duration:g} s per endpoint after {args.warmup:g} s of warm-up"
        f" (none where one request takes over 0.25 s), client timeout {args.timeout:g} s; the"
        f" project is drawn at random for each request among up to {args.sample} projects"
        " (304: up to 100)",
        f"- server threads: pkgserver and the ceiling `--threads {args.threads}`; pypiserver runs"
        " waitress through bottle's `--server auto` with waitress's default of 4 threads (its CLI"
        " has no thread option)",
        "- every answer is checked inside the load loop: status (200, or 304 for the"
        " revalidation) and, for pages, the number of links or files"
        + (
            " (for `/simple/`, its exact length, its links having been counted once)"
            if any(
                (s.get("endpoints", {}).get("index") or {}).get("check") == "length"
                for size in results["sizes"]
                for s in size["servers"]
            )
            else ""
        )
        + "; *wrong* counts answers that"
        " failed; *errors* are socket errors and timeouts; *non-2xx/3xx* as wrk counts them",
        "- *server CPU*: CPUs the server process used during the measurement (1.00 = one CPU);"
        " *others' CPU*: CPUs that anything but the server and the load generator used meanwhile"
        f" (of {os.cpu_count()}): when that is high, another workload shared the machine and the"
        " rates are low",
        f"- load average: {results.get('loadavg_start', '?')} at the start,"
        f" {results.get('loadavg_end', '?')} at the end",
        "- after each endpoint the next one waits until the server answers its health URL, so a"
        " backlog of slow requests does not spill into the next measurement (*drain* when > 1 s)",
        "",
    ]
    return out


def _ceiling(ceiling: dict[str, Any], threads: int) -> list[str]:
    c = ceiling.get("load")
    if c:
        return [
            f"**Ceiling** (bare waitress app, fixed 2 KB page, {threads} threads, measured just"
            f" before this size's servers): {fmt_rps(c['rps'])} req/s, p50 {fmt_ms(c['p50_ms'])},"
            f" p99 {fmt_ms(c['p99_ms'])}, errors {c['errors']}, wrong {c['wrong']},"
            f" server CPU {fmt_cpu(c.get('server_cpu'))},"
            f" others' CPU {fmt_cpu(c.get('other_cpu'))};"
            f" RSS {fmt_mb(ceiling.get('rss_after_load'), 'VmRSS')}",
            "",
        ]
    if ceiling.get("error"):
        return [f"**Ceiling failed**: {ceiling['error']}", ""]
    return []


def _rates(servers: list[dict[str, Any]], keys: list[str]) -> list[str]:
    out = [
        "| endpoint | server | req/s | p50 | p99 | answered | errors | non-2xx/3xx | wrong"
        " | server CPU | others' CPU | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, label in ENDPOINTS:
        if key not in keys:
            continue
        for s in servers:
            r = s["endpoints"].get(key)
            if r is None:
                continue
            if "na" in r:
                out.append(f"| {label} | {s['server']} | n/a | | | | | | | | | {r['na']} |")
                continue
            note = []
            if key == "json_api" and s["server"].startswith("pypiserver"):
                note.append("its `/<p>/json`")
            if r.get("closes"):
                note.append("`Connection: close` on every answer")
            if r.get("loadgen_cpu", 0) > 0.85:
                note.append(
                    f"load generator at {r['loadgen_cpu']:.2f} CPU: may be its limit, not the"
                    " server's"
                )
            if s.get("stuck") and not r["requests"]:
                note.append("**stopped answering**")
            if r.get("drain_seconds", 0) > 1:
                note.append(f"drain {r['drain_seconds']:.0f} s")
            if r["timeouts"]:
                note.append(f"{r['timeouts']} timeouts")
            out.append(
                f"| {label} | {s['server']} | {fmt_rps(r['rps'])} | {fmt_ms(r['p50_ms'])}"
                f" | {fmt_ms(r['p99_ms'])} | {r['requests']:,} | {r['errors']}"
                f" | {r['non2xx3xx']} | {r['wrong']} | {fmt_cpu(r.get('server_cpu'))}"
                f" | {fmt_cpu(r.get('other_cpu'))} | {', '.join(note)} |"
            )
    return [*out, ""]


def is_baseline(name: str) -> bool:
    """pkgserver@REV: pkgserver as of another git revision, measured in the same run."""
    return name.startswith("pkgserver@")


def _ratio_cell(mine: float | None, other: dict[str, Any], key: str) -> str:
    theirs = other["endpoints"].get(key)
    if not theirs or "na" in theirs:
        return "n/a"
    if other.get("stuck") and not theirs["requests"]:
        return "n/a (it stopped answering)"
    if is_baseline(other["server"]) and (theirs["wrong"] or theirs["errors"]):
        return "n/a (it has errors)"
    return ratio(mine, theirs["rps"])


def _ratios(servers: list[dict[str, Any]], ceiling_rps: float | None) -> list[str]:
    pk = next((s for s in servers if s["server"] == "pkgserver"), None)
    if pk is None:
        return []
    baselines = [s for s in servers if is_baseline(s["server"])]
    pypiservers = [s for s in servers if s["server"].startswith("pypiserver")]
    others = baselines + pypiservers
    against = [o["server"] for o in baselines] + (["pypiserver"] if pypiservers else [])
    head = "| endpoint | pkgserver req/s | / ceiling |"
    out = [
        "pkgserver's rate relative to the ceiling"
        + (f" and to {' and '.join(against)}:" if against else ":"),
        "",
        head + "".join(f" x {o['server']} |" for o in others),
        "|---|---:|---:|" + "---:|" * len(others),
    ]
    for key, label in ENDPOINTS:
        r = pk["endpoints"].get(key)
        if r is None:
            continue
        if "na" in r:
            out.append(f"| {label} | n/a | |" + " |" * len(others))
            continue
        clean = not r["wrong"] and not r["errors"]
        mine = r["rps"] if clean else None
        cells = [_ratio_cell(mine, o, key) for o in others]
        flag = "" if clean else " (has errors)"
        out.append(
            f"| {label} | {fmt_rps(r['rps'])}{flag} | {ratio(r['rps'], ceiling_rps)} |"
            + "".join(f" {c} |" for c in cells)
        )
    return [*out, ""]


def _figure(s: dict[str, Any], key: str, field: str | None) -> float | None:
    """s[key] or s[key][field]; None where it is missing or, for an upload, failed."""
    if key == "rss_peak":  # read after the uploads where there were uploads
        d = s.get("rss_after_upload") or s.get("rss_after_load") or {}
    else:
        d = s.get(key) or {}
    if field is None:
        return s.get(key)
    return None if d.get("ok") is False else d.get(field)


_VERSUS_BASELINE = [
    ("ready (first start)", "ready_first", None),
    ("ready (restart)", "ready_restart", None),
    ("RSS at ready", "rss_ready", "VmRSS"),
    ("RSS after load", "rss_after_load", "VmRSS"),
    ("peak RSS", "rss_peak", "VmHWM"),
    ("raw upload", "upload_raw", "seconds"),
    ("twine upload", "upload_twine", "seconds"),
]


def _baseline_costs(servers: list[dict[str, Any]]) -> list[str]:
    """pkgserver's time to ready, memory and upload times relative to each baseline's."""
    pk = next((s for s in servers if s["server"] == "pkgserver"), None)
    if pk is None:
        return []
    out = []
    for b in (s for s in servers if is_baseline(s["server"])):
        cells = [
            f"{label} {ratio(_figure(pk, key, field), _figure(b, key, field))}"
            for label, key, field in _VERSUS_BASELINE
        ]
        out += [
            f"pkgserver relative to {b['server']} (time and memory: below 1.00x is better): "
            + ", ".join(cells),
            "",
        ]
    return out


def _fmt_upload(u: dict[str, Any] | None) -> str:
    if not u:
        return "n/a"
    if not u["ok"]:
        return f"FAILED ({u.get('status', '')} {u['detail'][:80]})"
    cpu = f" (server CPU {u['server_cpu']:.1f} s)" if u.get("server_cpu") is not None else ""
    return f"{u['seconds']:.2f} s{cpu}"


def _fmt_e2e(u: dict[str, Any] | None) -> str:
    if not u:
        return "-"
    return f"{u['seconds']:.2f} s" if u["ok"] else f"FAILED: {u['detail'][-120:]}"


def _costs(servers: list[dict[str, Any]], size: dict[str, Any], mb: int) -> list[str]:
    n = size.get("e2e_projects", "?")
    out = [
        "| server | ready (first start) | ready (restart) | RSS at ready | RSS after load"
        f" | peak RSS (VmHWM) | upload {mb} MiB, raw POST | twine upload {mb} MiB"
        f" | pip download, {n} projects | uv dry-run, {n} projects | server log |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in servers:
        hwm = s.get("rss_after_upload") or s.get("rss_after_load")
        lg = s.get("log", {})
        out.append(
            f"| {s['server']} | {fmt_ready(s, 'ready_first')} | {fmt_ready(s, 'ready_restart')}"
            f" | {fmt_mb(s.get('rss_ready'), 'VmRSS')} | {fmt_mb(s.get('rss_after_load'), 'VmRSS')}"
            f" | {fmt_mb(hwm, 'VmHWM')} | {_fmt_upload(s.get('upload_raw'))}"
            f" | {_fmt_upload(s.get('upload_twine'))} | {_fmt_e2e(s.get('pip'))}"
            f" | {_fmt_e2e(s.get('uv'))}"
            f" | {lg.get('tracebacks', 0)} tracebacks, {lg.get('errors', 0)} errors,"
            f" {lg.get('queue_warnings', 0):,} queue warnings |"
        )
    out.append("")
    for s in servers:
        if s.get("state_bytes"):
            out += [
                f"{s['server']} state on disk after the first run (persistent cache):"
                f" {s['state_bytes'] / 2**10:,.0f} KiB",
                "",
            ]
    return out


def _command_lines(results: dict[str, Any], ceiling: dict[str, Any]) -> list[str]:
    """Each server's command line (with its environment), as it ran on the first size."""
    shown: dict[str, str] = {}
    for size in results["sizes"]:
        for s in size["servers"]:
            if s.get("argv") and s["server"] not in shown:
                env = s.get("env")
                if env is None and s["server"] == "pkgserver" and results.get("snapshot"):
                    env = {"PYTHONPATH": results["snapshot"]}  # reports written before "env"
                prefix = "".join(f"{k}={v} " for k, v in (env or {}).items())
                shown[s["server"]] = prefix + " ".join(s["argv"])
    if ceiling.get("argv"):
        shown["ceiling"] = " ".join(ceiling["argv"])
    if not shown:
        return []
    out = ["Server command lines (port and corpus of the first size):", ""]
    headers = {
        s["server"]: s["server_header"]
        for size in results["sizes"]
        for s in size["servers"]
        if s.get("server_header")
    }
    out += [
        f"- {name}: `{cmd}`" + (f" (answers with {headers[name]})" if name in headers else "")
        for name, cmd in shown.items()
    ]
    return [*out, ""]


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    out = _header(results, args)
    ceiling: dict[str, Any] = {}
    for size in results["sizes"]:
        c = size["corpus"]
        out += [
            f"## {c['files']:,} files ({c['projects']:,} projects of {c['per_project']} files,"
            f" {c['layout']} layout)",
            "",
        ]
        ceiling = size.get("ceiling") or results.get("ceiling") or {}
        ceiling_rps = (ceiling.get("load") or {}).get("rps")
        out += _ceiling(ceiling, args.threads)
        for s in size["servers"]:
            if "error" in s:
                short = " ".join(s["error"].replace("\\n", "\n").split())[-400:]
                out += [f"**{s['server']} failed**: {short} (see its log)", ""]
        servers = [s for s in size["servers"] if "endpoints" in s]
        out += _rates(servers, args.endpoint_keys)
        out += _ratios(servers, ceiling_rps)
        out += _costs(servers, size, args.upload_mb)
        out += _baseline_costs(servers)
        for s in size["servers"]:
            if s.get("checks"):
                out += [f"**Failed checks, {s['server']}:** " + "; ".join(s["checks"]), ""]
    out += _command_lines(results, ceiling)
    out.append(
        "Notes: *ready* is from process start to the first correct answer of `/simple/<p>/`"
        " (the corpus is in the OS page cache both times; pkgserver's first start is after"
        " deleting its persistent cache). *peak RSS* is VmHWM at the end, after the uploads where"
        " there were uploads; it is the server process's own (worker processes that pkgserver"
        " starts to read a large directory on its first start are not in it; their CPU time is"
        " counted once they have ended). *queue warnings* are waitress's `Task queue depth is N`"
        " log lines (one for each request that waited for a free thread). pip and uv run with a"
        " fresh HOME and cache and no configuration,"
        " `--index-url <server>/simple/`. *n/a*: the server does not offer that endpoint (the"
        " reason is given). pypiserver-cached is the same pypiserver install with `--backend"
        " cached-dir` (watchdog); plain pypiserver runs `--backend simple-dir`, which is what"
        " `pip install pypiserver[passlib]` alone gets."
    )
    return "\n".join(out) + "\n"
