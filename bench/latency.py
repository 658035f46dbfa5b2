"""Sequential latency of a few URLs of a running server (p50/p90/p99 over N requests).

    python bench/latency.py http://127.0.0.1:8080/ /simple/proj00001/ --requests 2000

A quick probe, not the full benchmark: one keep-alive connection, no concurrency.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import time
from urllib.parse import urlsplit

PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)


def probe(base: str, path: str, n: int, accept: str | None) -> list[float]:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {"Accept": accept} if accept else {}
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("GET", path, headers=headers)
        res = conn.getresponse()
        res.read()
        samples.append(time.perf_counter() - t0)
        if res.status != 200:
            raise SystemExit(f"{path}: HTTP {res.status}")
    conn.close()
    return samples


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("base")
    p.add_argument("paths", nargs="+")
    p.add_argument("--requests", type=int, default=2000)
    a = p.parse_args()
    for path in a.paths:
        for label, accept in (("html", None), ("json", PIP_ACCEPT)):
            probe(a.base, path, 50, accept)  # warm up
            s = sorted(probe(a.base, path, a.requests, accept))
            q = statistics.quantiles(s, n=100)
            print(
                f"{path:30} {label:4}  p50 {q[49] * 1e3:6.2f} ms  p90 {q[89] * 1e3:6.2f} ms  "
                f"p99 {q[98] * 1e3:6.2f} ms  ({len(s) / sum(s):.0f} req/s sequential)"
            )


if __name__ == "__main__":
    main()
