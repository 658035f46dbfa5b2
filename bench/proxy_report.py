"""The report of bench/proxy.py: Markdown from its results (the JSON beside it holds the same
figures). Rates are medians over the rounds; cached/hosted is the ratio of those medians, with
each round's own ratio beside it."""

from __future__ import annotations

import statistics
from typing import Any

from report import fmt_ms, fmt_rps

TARGET = 0.8
LABELS = {
    "page_html": "`/simple/<p>/` HTML",
    "page_json": "`/simple/<p>/` PEP 691 JSON",
    "wheel_small": "small wheel",
    "wheel_big": "big wheel",
}
REFERENCES = {
    "pypiserver": "pypiserver",
    "pypiserver-cached": "pypiserver (cached-dir)",
    "static": "bare waitress",
}


def _median(values: list[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return statistics.median(found) if found else None


def _quantile(values: list[float], q: int) -> float | None:
    """The q-th percentile (inclusive method), or the one value."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _field(rounds: list[dict[str, Any]], row: str, server: str, key: str) -> list[float | None]:
    out: list[float | None] = []
    for r in rounds:
        v = r.get(row, {}).get(server, {}).get(key)
        out.append(float(v) if isinstance(v, (int, float)) else None)
    return out


def _cpu_ms(rounds: list[dict[str, Any]], row: str, server: str) -> list[float | None]:
    """The server's CPU time per answer, in ms, each round."""
    out: list[float | None] = []
    for r in rounds:
        v = r.get(row, {}).get(server, {})
        cpu, rps = v.get("server_cpu"), v.get("rps")
        out.append(cpu / rps * 1e3 if isinstance(cpu, (int, float)) and rps else None)
    return out


def _rate(rounds: list[dict[str, Any]], row: str, server: str, size: int | None) -> str:
    rps = _median(_field(rounds, row, server, "rps"))
    if rps is None:
        na = next(
            (r[row][server]["na"] for r in rounds if "na" in r.get(row, {}).get(server, {})), ""
        )
        return na.split(":")[0] if na else "-"
    mb = f" ({rps * size / 1e6:,.0f} MB/s)" if size else ""
    return f"{fmt_rps(rps)}{mb}"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.2f}"


def _verdict(a: float | None, b: float | None) -> str:
    if a is None or not b:
        return "n/a"
    return "met" if a / b >= TARGET else "**below**"


def _sizes(results: dict[str, Any]) -> dict[str, int | None]:
    """Bytes of each row's answer (the hosted pkgserver's), for MB/s of the wheels."""
    hosted = results.get("page_bytes", {}).get("hosted", {})
    return {row: hosted.get(row) if row.startswith("wheel") else None for row in LABELS}


def _throughput(results: dict[str, Any]) -> list[str]:
    rounds = results.get("rounds", [])
    if not rounds:
        return ["No load was measured."]
    servers = [s for s in rounds[0].get("page_html", {}) if s not in ("hosted", "cached")]
    sizes = _sizes(results)
    s = results["settings"]
    head = "| load | hosted | cached | cached / hosted | each round | target ≥ 0.8 |"
    sep = "|---|---:|---:|---:|---|---|"
    for name in servers:
        head += f" {REFERENCES.get(name, name)} | hosted / {REFERENCES.get(name, name)} |"
        sep += "---:|---:|"
    out = [
        "## Throughput: cached against hosted",
        "",
        f"Requests/s (median of {len(rounds)} round(s) of {s['duration']:g} s; wrk,"
        f" {s['connections']} connections, {s['big_connections']} for the big wheel), one"
        " pkgserver --proxy process serving both. *Hosted*: `pbench-hosted` from its directory;"
        " *cached*: `pbench-cached` from the proxy's cache, after one GET of each.",
        "",
        head,
        sep,
    ]
    for row, label in LABELS.items():
        hosted = _median(_field(rounds, row, "hosted", "rps"))
        cached = _median(_field(rounds, row, "cached", "rps"))
        each = ", ".join(
            _ratio(c, h)
            for c, h in zip(
                _field(rounds, row, "cached", "rps"), _field(rounds, row, "hosted", "rps")
            )
        )
        line = (
            f"| {label} | {_rate(rounds, row, 'hosted', sizes[row])} |"
            f" {_rate(rounds, row, 'cached', sizes[row])} | {_ratio(cached, hosted)} | {each} |"
            f" {_verdict(cached, hosted)} |"
        )
        for name in servers:
            ref = _median(_field(rounds, row, name, "rps"))
            line += f" {_rate(rounds, row, name, sizes[row])} | {_ratio(hosted, ref)} |"
        out.append(line)
    out += [
        "",
        "Server CPU time per answer (ms, median over the rounds; steadier than a rate on a"
        " shared machine; cached / hosted over 1 means a cached answer costs more):",
        "",
        "| load | hosted | cached | cached / hosted |",
        "|---|---:|---:|---:|",
    ]
    for row, label in LABELS.items():
        h = _median(_cpu_ms(rounds, row, "hosted"))
        c = _median(_cpu_ms(rounds, row, "cached"))
        out.append(f"| {label} | {_num(h)} | {_num(c)} | {_ratio(c, h)} |")
    return out


def _num(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _details(results: dict[str, Any]) -> list[str]:
    out = [
        "### Each measurement",
        "",
        "| round | load | server | req/s | p50 | p99 | server CPU | others' CPU | upstream CPU"
        " | wrong | errors | proxy counted |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for i, rnd in enumerate(results.get("rounds", []), 1):
        for row, label in LABELS.items():
            for server, r in rnd.get(row, {}).items():
                if "na" in r:
                    out.append(f"| {i} | {label} | {server} | {r['na']} | | | | | | | | |")
                    continue
                counted = ", ".join(f"{k} {v:,.0f}" for k, v in r.get("outcomes", {}).items())
                out.append(
                    f"| {i} | {label} | {server} | {fmt_rps(r['rps'])} | {fmt_ms(r.get('p50_ms'))}"
                    f" | {fmt_ms(r.get('p99_ms'))} | {_num(r.get('server_cpu'), 2)}"
                    f" | {_num(r.get('other_cpu'), 2)} | {_num(r.get('upstream_cpu'), 2)}"
                    f" | {r['wrong']} | {r['errors']} | {counted} |"
                )
    return out


def _ms_list(samples: list[dict[str, Any]], key: str, field: str = "seconds") -> list[float]:
    return [s[key][field] * 1e3 for s in samples if key in s and field in s[key]]


def _overheads(samples: list[dict[str, Any]], a: str, b: str, field: str) -> list[float]:
    """Per sample: ``a`` - ``b`` in ms (the pairs where both were measured)."""
    return [
        (s[a][field] - s[b][field]) * 1e3
        for s in samples
        if a in s and b in s and field in s[a] and field in s[b]
    ]


def _first_fetch(results: dict[str, Any]) -> list[str]:
    ff = results.get("first_fetch")
    if not ff or not ff.get("samples"):
        return ["## First fetch", "", "Not measured."]
    samples = ff["samples"]
    size = ff.get("size", 0)
    out = [
        "## First fetch: through the proxy against straight from the upstream",
        "",
        f"{len(samples)} projects of one {size / 1024 / 1024:.2f} MiB wheel each, one client,"
        " a new connection per GET, direct and proxied in turn first. *Proxied* is a miss:"
        " the proxy fetches the page, or the file while it streams it. Overhead = proxied -"
        " direct, per project. First byte: from before the connection to the first body byte"
        " (for a page: to its headers).",
        "",
        "| GET | direct median | proxied median | overhead median | overhead p90 |"
        " proxied / direct (medians) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows = [
        ("PEP 691 page, whole answer", "page_proxied", "page_direct", "seconds"),
        ("PEP 691 page, headers", "page_proxied", "page_direct", "ttfb"),
        ("wheel, whole answer", "file_proxied", "file_direct", "seconds"),
        ("wheel, first byte", "file_proxied", "file_direct", "ttfb"),
        ("wheel again (a cache hit), whole answer", "file_hit", "file_direct", "seconds"),
        ("wheel again (a cache hit), first byte", "file_hit", "file_direct", "ttfb"),
    ]
    for label, a, b, field in rows:
        pa, pb = _ms_list(samples, a, field), _ms_list(samples, b, field)
        over = _overheads(samples, a, b, field)
        ma, mb = _median(list(pa)), _median(list(pb))
        out.append(
            f"| {label} | {fmt_ms(mb)} | {fmt_ms(ma)} | {_signed(_median(list(over)))}"
            f" | {_signed(_quantile(over, 90))} | {_ratio(ma, mb)} |"
        )
    counted = ", ".join(f"{k} {v:,.0f}" for k, v in ff.get("outcomes", {}).items())
    out += ["", f"The proxy's metrics counted: {counted or 'nothing'}."]
    if ff.get("checks"):
        out += ["", "Failed checks:", ""] + [f"- {c}" for c in ff["checks"]]
    return out


def _signed(v: float | None) -> str:
    if v is None:
        return "-"
    return ("+" if v >= 0 else "-") + fmt_ms(abs(v))


def report(results: dict[str, Any]) -> str:
    env = results.get("environment", {})
    s = results.get("settings", {})
    c = results.get("corpus", {})
    out = [
        "# The caching proxy: cached against hosted, and the first fetch",
        "",
        f"Run {results.get('started')} UTC, {results.get('elapsed', 0):.0f} s:"
        f" `{str(results.get('command')).strip()}`",
        "",
    ]
    keys = ("machine", "pkgserver", "commit", "python", "waitress", "pypiserver", "wrk")
    out += [f"- {k}: {env[k]}" for k in keys if k in env]
    if results.get("sources_end") and results["sources_end"] != env.get("sources"):
        out.append(
            "- note: pkgserver's sources changed during the run (the servers ran the"
            " snapshot taken at its start unless --live-sources)"
        )
    pb = results.get("page_bytes", {})
    out += [
        f"- project: {c.get('page_files')} files; small wheel {c.get('small_bytes', 0):,} bytes,"
        f" big wheel {c.get('big_bytes', 0):,} bytes; {s.get('threads')} waitress threads per"
        f" server; --proxy-ttl {s.get('proxy_ttl', 0):g} (no revalidation during the run)"
        + (f"; pkgservers pinned to CPUs {s['pin']}" if s.get("pin") else ""),
        "- answer sizes in bytes (HTML page / JSON page): "
        + "; ".join(
            f"{name} {_int(v.get('page_html'))} / {_int(v.get('page_json'))}"
            for name, v in pb.items()
        ),
        f"- the checks' first GETs and the warm-up: the proxy counted {_counted(results.get('warm', {}))}",
        "",
    ]
    checks = results.get("checks", [])
    out += (
        (["Failed checks:", ""] + [f"- {x}" for x in checks] + [""])
        if checks
        else [
            "Every answer checked in full before the loads (link counts, wheels' sha256 and"
            " size) was right.",
            "",
        ]
    )
    out += [*_throughput(results), "", *_first_fetch(results), "", *_details(results)]
    if any(
        r.get("profiled")
        for rnd in results.get("rounds", [])
        for v in rnd.values()
        for r in v.values()
    ):
        out += [
            "",
            "py-spy recorded the proxy during round 1's hosted and cached loads:"
            " `py-spy-<hosted|cached>-<load>.txt` in the logs folder (collapsed stacks).",
        ]
    mem = results.get("memory", {})
    if mem:
        out += [
            "",
            "Peak memory (VmHWM): "
            + ", ".join(f"{k} {v.get('VmHWM', 0):.0f} MiB" for k, v in mem.items()),
        ]
    return "\n".join(out) + "\n"


def _int(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else "-"


def _counted(d: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:,.0f}" for k, v in d.items()) or "nothing"
