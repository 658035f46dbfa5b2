"""Fixed-time HTTP load against one server: wrk with a generated Lua script, or Python threads.

Used by bench/run.py. A load is a list of requests (path plus headers, chosen at random for
each request), the status every answer must have, and an optional body check ("html": the
page has N ``<a `` links; "json": the JSON has N ``"filename"`` keys; "length": the body has N
bytes, cheap enough for pages of hundreds of KB). Every answer is checked
inside the load loop, so a server that answers fast but wrong is counted as wrong, not fast.

Both generators return the same dict:

    requests     answers received in the measured time
    seconds      measured time
    rps          requests / seconds
    p50_ms, p99_ms, mean_ms   latency of the answered requests
    errors       socket errors: connect + read + write + timeouts
    timeouts     of which timeouts
    non2xx3xx    answers whose status is not 2xx or 3xx
    wrong        answers with another status than expected, or a body that fails the check
    tool         "wrk" or "python"
"""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Load:
    """What to ask: requests[i] = (path, headers), one picked at random per request."""

    requests: Sequence[tuple[str, dict[str, str]]]
    expect: int = 200
    check: str | None = None  # None, "html", "json", "length" (the body has ``want`` bytes)
    want: int = 10  # links or files the body check wants
    probe_seconds: float = 0.0  # how long one such request took when checked beforehand
    closes: bool = False  # the server answered it with Connection: close


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _lua_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_LUA_BODY = r"""
local threads = {}
local nthreads = 0

function setup(thread)
   nthreads = nthreads + 1
   thread:set("seed", 7919 * nthreads + 17)
   table.insert(threads, thread)
end

function init(args)
   math.randomseed(seed)
   bad = 0
   reqs = {}
   for i, r in ipairs(REQUESTS) do
      local h = {}
      for k, v in pairs(r[2]) do h[k] = v end
      reqs[i] = wrk.format("GET", r[1], h)
   end
end

function request()
   return reqs[math.random(#reqs)]
end

local function count(s, pat)
   local n, start = 0, 1
   while true do
      local i, j = string.find(s, pat, start, true)
      if not i then return n end
      n = n + 1
      start = j + 1
   end
end

function response(status, headers, body)
   if status ~= EXPECT then
      bad = bad + 1
   elseif CHECK == "html" then
      if count(body, "<a ") ~= WANT then bad = bad + 1 end
   elseif CHECK == "length" then
      if #body ~= WANT then bad = bad + 1 end
   elseif CHECK == "json" then
      if count(body, '"filename"') ~= WANT then bad = bad + 1 end
   end
end

function done(summary, latency, requests)
   local wrong = 0
   for _, t in ipairs(threads) do wrong = wrong + (t:get("bad") or 0) end
   local e = summary.errors
   io.write(string.format(
      'WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, ' ..
      '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, ' ..
      '"mean_us": %.1f, "wrong": %d}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
      e.status, e.timeout, latency:percentile(50), latency:percentile(99), latency.mean, wrong))
end
"""


def lua_script(load: Load) -> str:
    lines = ["REQUESTS = {"]
    for path, headers in load.requests:
        hs = ", ".join(f"[{_lua_str(k)}] = {_lua_str(v)}" for k, v in headers.items())
        lines.append(f"  {{{_lua_str(path)}, {{{hs}}}}},")
    lines.append("}")
    lines.append(f"EXPECT = {int(load.expect)}")
    lines.append(f"CHECK = {_lua_str(load.check) if load.check else 'nil'}")
    lines.append(f"WANT = {int(load.want)}")
    return "\n".join(lines) + "\n" + _LUA_BODY


def run_wrk(
    base: str,
    load: Load,
    *,
    duration: float,
    connections: int,
    threads: int,
    timeout: float,
    workdir: Path,
) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / f"load-{os.getpid()}-{time.monotonic_ns()}.lua"
    script.write_text(lua_script(load))
    cmd = [
        "wrk",
        "-t", str(max(1, min(threads, connections))),
        "-c", str(connections),
        "-d", f"{max(1, round(duration))}s",
        "--timeout", f"{max(1, round(timeout))}s",
        "-s", str(script),
        base.rstrip("/") + "/",
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=duration + timeout + 30, check=False
        )
    finally:
        script.unlink(missing_ok=True)
    found = None
    for line in proc.stdout.splitlines():
        if line.startswith("WRKJSON "):
            found = json.loads(line[len("WRKJSON ") :])
    if found is None:
        raise RuntimeError(
            f"wrk failed ({proc.returncode}): {proc.stdout[-500:]} {proc.stderr[-500:]}"
        )
    seconds = found["duration_us"] / 1e6
    n = found["requests"]
    return {
        "tool": "wrk",
        "requests": n,
        "seconds": seconds,
        "rps": n / seconds if seconds else 0.0,
        "p50_ms": found["p50_us"] / 1e3 if n else None,
        "p99_ms": found["p99_us"] / 1e3 if n else None,
        "mean_ms": found["mean_us"] / 1e3 if n else None,
        "errors": found["connect"] + found["read"] + found["write"] + found["timeout"],
        "timeouts": found["timeout"],
        "non2xx3xx": found["status"],
        "wrong": found["wrong"],
    }


def _body_ok(load: Load, body: bytes) -> bool:
    if load.check == "length":
        return len(body) == load.want
    if load.check == "html":
        return body.count(b"<a ") == load.want
    if load.check == "json":
        return body.count(b'"filename"') == load.want
    return True


def run_python(
    base: str,
    load: Load,
    *,
    duration: float,
    connections: int,
    timeout: float,
) -> dict:
    """N threads, one keep-alive http.client connection each, for a fixed time."""
    from urllib.parse import urlsplit

    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lock = threading.Lock()
    latencies: list[float] = []
    counters = {"errors": 0, "timeouts": 0, "non2xx3xx": 0, "wrong": 0}
    deadline = time.monotonic() + duration

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        conn: http.client.HTTPConnection | None = None
        mine: list[float] = []
        local = dict.fromkeys(counters, 0)
        while time.monotonic() < deadline:
            path, headers = load.requests[rng.randrange(len(load.requests))]
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            t0 = time.perf_counter()
            try:
                conn.request("GET", path, headers=headers)
                res = conn.getresponse()
                body = res.read()
            except TimeoutError:
                local["errors"] += 1
                local["timeouts"] += 1
                conn.close()
                conn = None
                continue
            except (OSError, http.client.HTTPException):
                local["errors"] += 1
                conn.close()
                conn = None
                time.sleep(0.01)
                continue
            if time.monotonic() > deadline:
                break  # answered after the end: not counted, as wrk does
            mine.append(time.perf_counter() - t0)
            if not 200 <= res.status < 400:
                local["non2xx3xx"] += 1
            if res.status != load.expect or not _body_ok(load, body):
                local["wrong"] += 1
            if res.will_close:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()
        with lock:
            latencies.extend(mine)
            for k, v in local.items():
                counters[k] += v

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(connections)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(duration + timeout + 5)
    seconds = duration  # answers that came after the deadline were not counted
    n = len(latencies)
    q = statistics.quantiles(latencies, n=100) if n >= 2 else None
    return {
        "tool": "python",
        "requests": n,
        "seconds": seconds,
        "rps": n / seconds if seconds else 0.0,
        "p50_ms": (q[49] if q else latencies[0]) * 1e3 if n else None,
        "p99_ms": (q[98] if q else latencies[0]) * 1e3 if n else None,
        "mean_ms": statistics.fmean(latencies) * 1e3 if n else None,
        **counters,
    }


def run(
    base: str,
    load: Load,
    *,
    duration: float,
    connections: int,
    threads: int = 1,
    timeout: float = 60.0,
    use_wrk: bool = True,
    workdir: Path,
) -> dict:
    if use_wrk and wrk_path():
        return run_wrk(
            base,
            load,
            duration=duration,
            connections=connections,
            threads=threads,
            timeout=timeout,
            workdir=workdir,
        )
    return run_python(base, load, duration=duration, connections=connections, timeout=timeout)
