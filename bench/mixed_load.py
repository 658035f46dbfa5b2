"""200 connections listing and downloading while uploads happen (issue 4's load requirement).

    python bench/mixed_load.py [--files 5000] [--connections 200] [--duration 20]

Starts pkgserver on a generated corpus (bench/corpus.py) with a password file, then runs wrk
twice with the same mix of requests (project pages, the index, wheel downloads, /health):
once alone, once while a thread uploads 20 MB wheels back to back. It reports requests/s,
latency percentiles, socket errors and non-2xx answers of both runs, and the uploads' timings,
so "no request waits behind an upload or a hash computation" is a comparison, not a claim.
Needs wrk (apt-get install wrk). Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from pathlib import Path

from corpus import build

AUTH = "Basic " + base64.b64encode(b"bench:bench").decode()

# wrk's summary in one line that run_wrk() parses (a %-format template, like the scripts).
LUA_DONE = r"""
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%%d errors=%%d timeouts=%%d non2xx=%%d p50=%%.1f p99=%%.1f max=%%.1f\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write,
    summary.errors.timeout, summary.errors.status,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
"""

LUA = (
    r"""
math.randomseed(os.time())
local n = %(projects)d
request = function()
  local r = math.random(100)
  local p = string.format("proj%%05d", math.random(0, n - 1))
  if r <= 55 then
    return wrk.format("GET", "/simple/" .. p .. "/", {["Accept"] = "application/vnd.pypi.simple.v1+json"})
  elseif r <= 85 then
    return wrk.format("GET", "/packages/" .. p .. "-1.0.0-py3-none-any.whl")
  elseif r <= 95 then
    return wrk.format("GET", "/simple/", {["Accept-Encoding"] = "gzip"})
  else
    return wrk.format("GET", "/health")
  end
end
"""
    + LUA_DONE
)


def big_wheel(directory: Path, version: str, size: int) -> Path:
    path = directory / f"uploaded-{version}-py3-none-any.whl"
    di = f"uploaded-{version}.dist-info"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(
            f"{di}/METADATA", f"Metadata-Version: 2.1\nName: uploaded\nVersion: {version}\n"
        )
        zf.writestr(
            f"{di}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr("uploaded/blob.bin", os.urandom(size))
        zf.writestr(f"{di}/RECORD", "")
    return path


def upload(port: int, path: Path) -> tuple[int, float]:
    data = path.read_bytes()
    boundary = uuid.uuid4().hex
    version = path.name.split("-")[1]
    head = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in (
            (":action", "file_upload"),
            ("name", "uploaded"),
            ("version", version),
            ("sha256_digest", hashlib.sha256(data).hexdigest()),
        )
    ).encode()
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + data + f"\r\n--{boundary}--\r\n".encode()
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request(
        "POST",
        "/",
        body=body,
        headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Authorization": AUTH,
        },
    )
    status = conn.getresponse().status
    conn.close()
    return status, time.monotonic() - started


def run_wrk(port: int, script: Path, connections: int, duration: int) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=duration + 120,
        check=True,
    ).stdout
    m = re.search(r"RESULT (.*)", out)
    if not m:
        raise SystemExit(f"wrk said:\n{out}")
    result = {k: float(v) for k, v in (item.split("=") for item in m.group(1).split())}
    result["rps"] = result["requests"] / duration
    return result


def start_server(
    work: Path, corpus: Path, *args: str, python: str = sys.executable
) -> tuple[subprocess.Popen[bytes], int]:
    """pkgserver on ``corpus`` with a password file (user and password "bench"), logging to
    ``work``/server.log; returns the process and its port once it serves."""
    ht = work / "htpasswd"
    subprocess.run(
        [python, "-m", "pkgserver", "passwd", str(ht), "bench"],
        input="bench\n",
        text=True,
        check=True,
        capture_output=True,
    )
    log_path = work / "server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [
                python,
                "-m",
                "pkgserver",
                "run",
                "-p",
                "0",
                "-i",
                "127.0.0.1",
                "-P",
                str(ht),
                "--disable-fallback",
                "--cache-dir",
                str(work / "cache"),
                *args,
                str(corpus),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        m = re.search(r"serving .* on http://127\.0\.0\.1:(\d+)/", log_path.read_text())
        if m:
            return server, int(m.group(1))
        if server.poll() is not None:
            break
        time.sleep(0.1)
    server.kill()
    raise SystemExit(f"pkgserver did not start:\n{log_path.read_text()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--files", type=int, default=5000)
    p.add_argument("--connections", type=int, default=200)
    p.add_argument("--duration", type=int, default=20)
    p.add_argument("--upload-mb", type=int, default=20)
    a = p.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("needs wrk: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="pkgserver-mixed-"))
    try:
        corpus = work / "packages"
        build(corpus, a.files, 10, "flat")
        server, port = start_server(work, corpus)
        script = work / "mix.lua"
        script.write_text(LUA % {"projects": a.files // 10})
        baseline = run_wrk(port, script, a.connections, a.duration)
        uploads: list[tuple[int, float]] = []
        stop = threading.Event()

        def uploader() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                wheel = big_wheel(work, f"1.{n}", a.upload_mb * 1024 * 1024)
                uploads.append(upload(port, wheel))
                wheel.unlink()

        thread = threading.Thread(target=uploader, daemon=True)
        thread.start()
        loaded = run_wrk(port, script, a.connections, a.duration)
        stop.set()
        thread.join(180)
        server.terminate()
        server.wait(30)
        tracebacks = (work / "server.log").read_text().count("Traceback")
        print(
            f"# Mixed load: {a.connections} connections, {a.files} files, {a.duration} s per run\n"
        )
        print("| run | req/s | p50 | p99 | max | socket errors | timeouts | non-2xx |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, r in (
            ("listing and downloads alone", baseline),
            (f"the same while {a.upload_mb} MB uploads run back to back", loaded),
        ):
            print(
                f"| {name} | {r['rps']:,.0f} | {r['p50']:.1f} ms | {r['p99']:.1f} ms | "
                f"{r['max']:.0f} ms | {r['errors']:.0f} | {r['timeouts']:.0f} | {r['non2xx']:.0f} |"
            )
        ok = sum(1 for s, _ in uploads if s == 200)
        durations = sorted(d for _, d in uploads)
        print(
            f"\nUploads during the second run: {len(uploads)} ({ok} answered 200), "
            f"{durations[len(durations) // 2]:.2f} s median each"
            if durations
            else "\nno uploads"
        )
        print(f"Server tracebacks: {tracebacks}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
