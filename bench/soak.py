"""Soak: minutes of mixed traffic at the limit of the machine, watching for 5xx and leaks.

    python bench/soak.py [--minutes 5] [--files 5000] [--connections 100]

Starts pkgserver (with a password file) on a generated corpus and, for the whole time, runs:
- wrk with a read mix: project pages in HTML and JSON, the index (gzip), wheel downloads,
  .metadata files, /pypi/<p>/json;
- an uploader posting small wheels back to back, and a 5 MB one every tenth time;
- a thread of bad requests: traversal, wrong passwords, malformed forms, lying digests, an
  XML-RPC entity bomb, garbage bytes, bodies over the limit;
- a health probe every 0.5 s, timed;
- a sampler of the server's resident memory, open files and threads every 5 s.

It reports the request counts, every status above 499 (there must be none), memory and open
files at the start, after warm-up and at the end, and the health probe's latency; and writes
the report to bench/results/soak.md. Exit status 1 if a 5xx or an error was seen or open files
grew. Everything runs on 127.0.0.1 and stops by itself. Needs wrk (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import base64
import collections
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from corpus import build
from mixed_load import LUA_DONE, big_wheel, run_wrk, start_server, upload

HERE = Path(__file__).resolve().parent

LUA = (
    r"""
math.randomseed(os.time())
local n = %(projects)d
request = function()
  local r = math.random(100)
  local p = string.format("proj%%05d", math.random(0, n - 1))
  if r <= 30 then
    return wrk.format("GET", "/simple/" .. p .. "/")
  elseif r <= 55 then
    return wrk.format("GET", "/simple/" .. p .. "/", {["Accept"] = "application/vnd.pypi.simple.v1+json"})
  elseif r <= 75 then
    return wrk.format("GET", "/packages/" .. p .. "-1.0.0-py3-none-any.whl")
  elseif r <= 82 then
    return wrk.format("GET", "/packages/" .. p .. "-1.0.0-py3-none-any.whl.metadata")
  elseif r <= 92 then
    return wrk.format("GET", "/pypi/" .. p .. "/json")
  else
    return wrk.format("GET", "/simple/", {["Accept-Encoding"] = "gzip"})
  end
end
"""
    + LUA_DONE
)

WRONG = "Basic " + base64.b64encode(b"bench:wrong").decode()


def sample(pid: int) -> dict[str, int]:
    out = {"fds": len(os.listdir(f"/proc/{pid}/fd"))}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            out[key] = int(value.split()[0])
    return out


def raw(port: int, data: bytes) -> int:
    """Send bytes as they are; the status of the answer (0 if the server just closed)."""
    # 2 s: some of these are answered only by the server's own timeout (a request line that
    # never ends), which is a fine answer to them.
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(data)
        try:
            head = sock.recv(64)
        except (ConnectionResetError, TimeoutError):
            return 0
    m = re.match(rb"HTTP/1\.\d (\d{3})", head)
    return int(m.group(1)) if m else 0


def bad_requests(port: int) -> list[bytes]:
    boundary = "XyZ"
    form = (
        f'--{boundary}\r\nContent-Disposition: form-data; name=":action"\r\n\r\nfile_upload\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; '
        'filename="../evil-1.0-py3-none-any.whl"\r\n\r\nPK\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    lies = form.replace(b"../evil", b"evil").replace(b"file_upload", b"file_upload\r\n")
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;'
        b'&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        b"<methodCall><methodName>&c;</methodName></methodCall>"
    )

    def post(body: bytes, ctype: str, auth: str | None, path: str = "/") -> bytes:
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
        if auth:
            head += f"Authorization: {auth}\r\n"
        return (head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body

    mp = f"multipart/form-data; boundary={boundary}"
    return [
        b"GET /packages/..%2f..%2fetc%2fpasswd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /simple/x%0d%0aSet-Cookie:%20a=b/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        post(form, mp, WRONG),
        post(form, mp, None),
        post(form, mp, "Basic " + base64.b64encode(b"bench:bench").decode()),
        post(lies, mp, "Basic " + base64.b64encode(b"bench:bench").decode()),
        post(b"--XyZ\r\nContent-Disp", mp, "Basic " + base64.b64encode(b"bench:bench").decode()),
        post(laughs, "text/xml", None, "/RPC2"),
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\nConnection: close\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + os.urandom(64),
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 5000 + b"\r\n",
    ]


@dataclass
class Traffic:
    """The Python side of the soak (uploads, bad requests, health probes, samples), each in
    its own thread until ``stop`` is set, and what they saw."""

    port: int
    work: Path
    pid: int
    stop: threading.Event = field(default_factory=threading.Event)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: list[str] = field(default_factory=list)
    health: list[float] = field(default_factory=list)
    samples: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    t0: float = field(default_factory=time.monotonic)

    def count(self, kind: str, status: int) -> None:
        with self.lock:
            self.statuses[f"{kind} {status}"] += 1

    def uploader(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            size = 5 * 1024 * 1024 if n % 10 == 0 else 20_000
            wheel = big_wheel(self.work, f"1.{n}", size)
            try:
                status, _ = upload(self.port, wheel)
                self.count("upload", status)
            except OSError as exc:
                self.errors.append(f"upload: {exc}")
            wheel.unlink()

    def attacker(self) -> None:
        requests = bad_requests(self.port)
        n = 0
        while not self.stop.is_set():
            try:
                self.count("bad", raw(self.port, requests[n % len(requests)]))
            except OSError as exc:
                self.errors.append(f"bad request {n % len(requests)}: {exc}")
            n += 1
            time.sleep(0.01)

    def prober(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("GET", "/health")
                status = conn.getresponse().status
                conn.close()
                self.count("health", status)
                with self.lock:
                    self.health.append(time.monotonic() - started)
            except OSError as exc:
                self.errors.append(f"health: {exc}")
            time.sleep(0.5)

    def take_sample(self) -> None:
        self.samples.append((time.monotonic() - self.t0, sample(self.pid)))

    def sampler(self) -> None:
        while not self.stop.is_set():
            self.take_sample()
            self.stop.wait(5)

    def run(self, wrk: Callable[[], dict[str, float]]) -> dict[str, float]:
        """The four threads for as long as ``wrk`` runs; its summary."""
        threads = [
            threading.Thread(target=f, daemon=True)
            for f in (self.uploader, self.attacker, self.prober, self.sampler)
        ]
        for t in threads:
            t.start()
        summary = wrk()
        self.stop.set()
        for t in threads:
            t.join(60)
        time.sleep(2)  # let connections close before the last sample
        self.take_sample()
        return summary


def soak(a: argparse.Namespace, work: Path) -> tuple[dict[str, float], Traffic, str]:
    """pkgserver on a fresh corpus under wrk's read mix and the Python traffic; wrk's summary,
    the traffic and the server's log."""
    server = None
    try:
        corpus = work / "packages"
        build(corpus, a.files, 10, "flat")
        server, port = start_server(work, corpus, "--max-upload-size", "8M", python=a.python)
        script = work / "mix.lua"
        script.write_text(LUA % {"projects": a.files // 10})
        traffic = Traffic(port, work, server.pid)
        duration = int(a.minutes * 60)
        wrk = traffic.run(lambda: run_wrk(port, script, a.connections, duration))
        return wrk, traffic, (work / "server.log").read_text()
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()


def report(
    a: argparse.Namespace, wrk: dict[str, float], traffic: Traffic, server_log: str
) -> tuple[str, bool]:
    """The Markdown report, and whether the soak failed."""
    statuses, errors, health, samples = (
        traffic.statuses,
        traffic.errors,
        traffic.health,
        traffic.samples,
    )
    five = {k: v for k, v in statuses.items() if int(k.split()[1]) >= 500}
    warm = next((s for t, s in samples if t >= a.warmup), samples[-1][1])
    start, end = samples[0][1], samples[-1][1]
    peak_rss = max(s["VmRSS"] for _, s in samples)
    health.sort()
    pct = lambda q: health[min(len(health) - 1, int(q * len(health)))] * 1000  # noqa: E731
    python_requests = sum(statuses.values())
    lines = [
        "# pkgserver soak",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `python bench/soak.py --minutes {a.minutes:g}"
        f" --files {a.files} --connections {a.connections}`, {os.cpu_count()} CPUs",
        "",
        f"- reads (wrk, {a.connections} connections): {int(wrk['requests']):,} requests,"
        f" {wrk['rps']:,.0f}/s, p50 {wrk['p50']:.1f} ms, p99 {wrk['p99']:.1f} ms, max {wrk['max']:.0f} ms;"
        f" non-2xx/3xx {int(wrk['non2xx'])}, socket errors {int(wrk['errors'])}, timeouts {int(wrk['timeouts'])}",
        f"- uploads, bad requests and health probes: {python_requests:,} requests:"
        f" {dict(sorted(statuses.items()))}",
        f"- 5xx answers: {sum(five.values())} {five or ''}; client-side errors: {len(errors)} {errors[:5] or ''}",
        f"- health: {len(health)} probes, p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms, max {health[-1] * 1000:.0f} ms",
        f"- RSS: {start['VmRSS'] / 1024:.0f} MiB at start, {warm['VmRSS'] / 1024:.0f} after warm-up"
        f" ({a.warmup:.0f} s), {end['VmRSS'] / 1024:.0f} at the end, peak {peak_rss / 1024:.0f}",
        f"- open files: {start['fds']} at start, {warm['fds']} after warm-up, {end['fds']} at the end"
        f" (max {max(s['fds'] for _, s in samples)}); threads {start['Threads']} -> {end['Threads']}",
        f"- tracebacks in the server log: {server_log.count('Traceback')}",
        "",
        "| seconds | RSS MiB | open files | threads |",
        "|---:|---:|---:|---:|",
        *(
            f"| {t:.0f} | {s['VmRSS'] / 1024:.0f} | {s['fds']} | {s['Threads']} |"
            for t, s in samples
        ),
        "",
    ]
    failed = (
        bool(five) or bool(errors) or wrk["non2xx"] or wrk["errors"] or "Traceback" in server_log
    )
    failed = failed or end["fds"] > start["fds"] + 5
    return "\n".join(lines), bool(failed)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=5)
    p.add_argument("--files", type=int, default=5000)
    p.add_argument("--connections", type=int, default=100)
    p.add_argument("--warmup", type=float, default=60, help="seconds before 'after warm-up'")
    p.add_argument("--out", type=Path, default=HERE / "results" / "soak.md")
    p.add_argument("--python", default=sys.executable, help="Python that runs pkgserver")
    a = p.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("needs wrk: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="pkgserver-soak-"))
    try:
        wrk, traffic, server_log = soak(a, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text, failed = report(a, wrk, traffic, server_log)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text)
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
