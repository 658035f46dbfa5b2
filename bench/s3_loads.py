"""Loads bench/s3_backend.py adds to loadgen's: downloads by a client that follows redirects
(as pip follows a 302 to a presigned URL), the same page load on several replicas at once, and
rates of small legacy uploads (raw multipart POSTs, as twine sends them)."""

from __future__ import annotations

import http.client
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import loadgen
from builders import make_wheel
from common import UPLOAD_NAME
from endpoints import accounted_load
from machine import cpu_seconds
from uploads import raw_upload

MAX_HOPS = 3


def latencies(seconds: list[float]) -> dict[str, float | None]:
    """p50, p95, p99 and max, in milliseconds."""
    if not seconds:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    q = statistics.quantiles(seconds, n=100, method="inclusive") if len(seconds) > 1 else None
    one = seconds[0]
    return {
        "p50_ms": (q[49] if q else one) * 1e3,
        "p95_ms": (q[94] if q else one) * 1e3,
        "p99_ms": (q[98] if q else one) * 1e3,
        "max_ms": max(seconds) * 1e3,
    }


class _Follower:
    """One simulated client: a keep-alive connection per host, redirects followed."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.conns: dict[tuple[str, int], http.client.HTTPConnection] = {}

    def get(self, url: str) -> tuple[int, int, int]:
        """(final status, body bytes, redirects followed)."""
        for hops in range(MAX_HOPS + 1):
            parts = urlsplit(url)
            where = (parts.hostname or "127.0.0.1", parts.port or 80)
            conn = self.conns.get(where)
            if conn is None:
                conn = self.conns[where] = http.client.HTTPConnection(*where, timeout=self.timeout)
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            try:
                conn.request("GET", target)
                res = conn.getresponse()
                body = res.read()
            except (OSError, http.client.HTTPException):
                self.conns.pop(where).close()
                raise
            if res.will_close:
                self.conns.pop(where).close()
            location = res.getheader("Location")
            if res.status in (301, 302, 303, 307, 308) and location and hops < MAX_HOPS:
                url = urljoin(url, location)
                continue
            return res.status, len(body), hops
        raise AssertionError("unreachable")

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()


def follow_load(
    base: str,
    files: list[tuple[str, int]],
    *,
    duration: float,
    connections: int,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """GET ``files`` ((path, size), one at random each time) for ``duration`` seconds from
    ``connections`` threads, following redirects; an answer is right when it ends in a 200 of
    the file's size. Downloads/s, MB/s, latency, redirects followed, wrong answers, errors."""
    deadline = time.monotonic() + duration

    def client(seed: int) -> tuple[list[float], dict[str, int]]:
        rng = random.Random(seed)
        me = _Follower(timeout)
        mine: list[float] = []
        counts = {"bytes": 0, "redirects": 0, "wrong": 0, "errors": 0}
        while time.monotonic() < deadline:
            path, size = files[rng.randrange(len(files))]
            t0 = time.perf_counter()
            try:
                status, got, hops = me.get(base + path)
            except (OSError, http.client.HTTPException):
                counts["errors"] += 1
                time.sleep(0.01)
                continue
            if time.monotonic() > deadline:
                break  # answered after the end: not counted
            mine.append(time.perf_counter() - t0)
            counts["redirects"] += hops
            counts["bytes"] += got
            if status != 200 or got != size:
                counts["wrong"] += 1
        me.close()
        return mine, counts

    with ThreadPoolExecutor(connections) as pool:
        done = list(pool.map(client, range(connections)))
    took = [t for mine, _counts in done for t in mine]
    totals = {k: sum(counts[k] for _mine, counts in done) for k in done[0][1]}
    return {
        "tool": "python (follows redirects)",
        "requests": len(took),
        "rps": len(took) / duration,
        "mb_per_s": totals["bytes"] / duration / 1e6,
        **latencies(took),
        **totals,
    }


def pair_load(
    servers: list[tuple[int, str]], load: loadgen.Load, **options: Any
) -> list[dict[str, Any]]:
    """The same load on each of ``servers`` ((pid, base URL)) at once, one load generator
    each; with each server's CPU use (others' CPU is not told apart here)."""
    with ThreadPoolExecutor(len(servers)) as pool:
        return list(pool.map(lambda s: accounted_load(s[0], s[1], load, **options), servers))


def small_wheels(directory: Path, versions: list[str]) -> list[tuple[Path, str]]:
    """Tiny wheels of the upload project, one per version, made once."""
    out = []
    for version in versions:
        path = directory / f"{UPLOAD_NAME}-{version}-py3-none-any.whl"
        if not path.exists():
            make_wheel(directory, UPLOAD_NAME, version, summary="A small upload")
        out.append((path, version))
    return out


def upload_rate(
    base: str, wheels: list[tuple[Path, str]], clients: int, timeout: float, pid: int
) -> dict[str, Any]:
    """``wheels`` uploaded from ``clients`` at once (a new connection each, as raw multipart
    POSTs with the bench user's password) to the server ``pid``: uploads/s, the latency of
    one, and the server's CPU time per upload."""
    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = list(pool.map(lambda w: raw_upload(base, w[0], w[1], timeout), wheels))
    seconds = time.perf_counter() - t0
    cpu1 = cpu_seconds(pid)
    ok = [d["seconds"] for d in done if d["ok"]]
    failed = [d for d in done if not d["ok"]]
    cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    return {
        "uploads": len(wheels),
        "ok": len(ok),
        "clients": clients,
        "seconds": seconds,
        "rate": len(ok) / seconds if seconds else 0.0,
        "server_cpu_ms": cpu / len(ok) * 1e3 if cpu is not None and ok else None,
        **latencies(ok),
        "failed": f"{failed[0].get('status')} {failed[0].get('detail')}" if failed else "",
    }
