"""The pkgserver benchmark: pkgserver against pypiserver and a bare-waitress ceiling.

    python bench/run.py                       # 50, 5,000 and 50,000 files, 10 s per endpoint
    python bench/run.py --quick               # sanity run: 50 files, 2 s per endpoint (~2 min)
    python bench/run.py --files 50,100000 --layout flat,folders --duration 10 \
        --out bench/results/latest.md
    python bench/run.py --sources HEAD        # pkgserver as committed (default: working tree)

For each corpus size (and layout) it generates valid wheels and sdists with bench/corpus.py
(10 files per project) into a cache (bench/.cache/, reused when present), then starts each
server under test in turn on 127.0.0.1, waits until /simple/<project>/ answers 200 with the
expected 10 files, and measures for a fixed time per endpoint:

    /simple/ (HTML), /simple/<p>/ as HTML and as PEP 691 JSON, a 304 revalidation of the
    project page (If-None-Match), a wheel download, its PEP 658 .metadata, /pypi/<p>/json

with <p> drawn at random from up to --sample projects per request. Every answer is checked
(status, and the 10 links of a project page) inside the load loop; wrong answers, socket
errors and non-2xx/3xx answers are reported next to the rates, never hidden in them. Then:
time to ready (process start -> first correct answer; pkgserver also after a restart),
resident memory (VmRSS, VmHWM), the wall time of a 100 MB upload (raw multipart POST and
twine), and `pip download` / `uv pip install --dry-run` of 20 projects in an isolated
environment (fresh HOME and caches, no pip/uv configuration).

Servers: pkgserver (this checkout, /work/main/.venv or --pkgserver-python), pypiserver (latest
release, installed once by this script into bench/.venvs/pypiserver: needs network to PyPI
that once; `rm -rf bench/.venvs` to upgrade), run with its default file backend
(simple-dir) and with cached-dir (watchdog), and the ceiling (bench/ceiling.py).

Needs: Python 3.11+, Linux (/proc for memory), the project's venv with pkgserver, twine and
uv. wrk is optional but recommended (`apt-get install -y wrk`); without it a Python load
generator (threads with keep-alive http.client connections) is used, which shares the CPU
with the servers and gives lower, less comparable figures.

The report is printed and written to --out (Markdown) and next to it as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gzip
import hashlib
import http.client
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402

HTML = "text/html"
JSON_V1 = "application/vnd.pypi.simple.v1+json"
UPLOAD_NAME = "benchupload"

ENDPOINTS = [
    ("index", "`/simple/` HTML"),
    ("index_gz", "`/simple/` HTML, gzip accepted"),
    ("page_html", "`/simple/<p>/` HTML"),
    ("page_json", "`/simple/<p>/` JSON"),
    ("page_304", "`/simple/<p>/` 304"),
    ("wheel", "wheel (~1 KB)"),
    ("metadata", "wheel `.metadata`"),
    ("json_api", "`/pypi/<p>/json`"),
]
ENDPOINT_LABEL = dict(ENDPOINTS)

_ANCHOR = re.compile(r'<a\s[^>]*href="([^"]+)"[^>]*>([^<]+)</a>')


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Small HTTP helpers (one fresh connection per call; used for checks, not for load)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float


def fetch(
    base: str, path: str, headers: dict[str, str] | None = None, timeout: float = 300
) -> Answer:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    t0 = time.perf_counter()
    try:
        conn.request("GET", path, headers=headers or {})
        res = conn.getresponse()
        body = res.read()
        hdrs = {k.lower(): v for k, v in res.getheaders()}
        return Answer(res.status, hdrs, body, time.perf_counter() - t0)
    finally:
        conn.close()


def links(body: bytes) -> list[tuple[str, str]]:
    return _ANCHOR.findall(body.decode("utf-8", "replace"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM in MiB, from /proc."""
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def cpu_seconds(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    # utime + stime, and cutime + cstime: worker processes it has reaped (an indexing pool)
    used = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return used / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds all CPUs of the machine have been busy (from /proc/stat)."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """CPU seconds of this process and its finished children (the load generator)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _all_cpu() -> dict[int, tuple[float, str]]:
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(d.name)] = (
            (int(fields[11]) + int(fields[12])) / tick,
            stat[: stat.rindex(")") + 1],
        )
    return out


def busiest(seconds: float = 1.0, exclude: tuple[int, ...] = ()) -> str:
    """The processes that used the most CPU over ``seconds``, for the log."""
    before = _all_cpu()
    time.sleep(seconds)
    after = _all_cpu()
    used = []
    for pid, (cpu, name) in after.items():
        if pid in exclude or pid == os.getpid() or pid not in before:
            continue
        delta = (cpu - before[pid][0]) / seconds
        if delta > 0.05:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:90]
            except OSError:
                cmd = name
            used.append((delta, f"{pid} {cmd.strip() or name} ({delta:.2f})"))
    return "; ".join(t for _d, t in sorted(used, reverse=True)[:3]) or "no single process"


def others_cpu(pid: int | None, seconds: float) -> float:
    """CPUs used over ``seconds`` by anything but this process and the server ``pid``."""
    busy0, own0 = machine_busy(), own_cpu()
    srv0 = cpu_seconds(pid) if pid else 0.0
    time.sleep(seconds)
    srv1 = cpu_seconds(pid) if pid else 0.0
    srv = (srv1 - srv0) if srv0 is not None and srv1 is not None else 0.0
    return max(0.0, (machine_busy() - busy0 - (own_cpu() - own0) - srv) / seconds)


def wait_quiet(pid: int | None, max_wait: float, threshold: float = 0.25) -> float:
    """Wait (up to ``max_wait`` s) until other work on the machine uses under ``threshold`` CPUs;
    returns what it last measured. A shared machine is reported, not hidden."""
    deadline = time.monotonic() + max_wait
    other = others_cpu(pid, 0.5)
    warned = False
    while other > threshold and time.monotonic() < deadline:
        if not warned:
            log(
                f"other work on the machine uses {other:.2f} CPUs: waiting up to {max_wait:.0f}s"
                f" (busiest: {busiest(0.5, (pid,) if pid else ())})"
            )
            warned = True
        other = others_cpu(pid, 1.0)
    return other


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


# --------------------------------------------------------------------------------------------
# The corpus


@dataclass
class Corpus:
    files: int
    layout: str
    per_project: int
    path: Path
    seconds_to_build: float | None = None

    @property
    def projects(self) -> int:
        return -(-self.files // self.per_project)

    @property
    def full_projects(self) -> list[str]:
        """Projects that have all their per_project files."""
        return [f"proj{i:05d}" for i in range(self.files // self.per_project)]

    @property
    def latest_version(self) -> str:
        return f"1.0.{(self.per_project - 1) // 2}"

    def label(self) -> str:
        return f"{self.files:,} files ({self.projects:,} projects, {self.layout})"


def remove_leftovers(directory: Path) -> int:
    """Uploads of an earlier run and pkgserver temp files: the corpus is only what we made."""
    n = 0
    for root, dirs, names in os.walk(directory):
        for name in names:
            if name.startswith(UPLOAD_NAME) or name.startswith(".pkgserver-tmp-"):
                os.unlink(os.path.join(root, name))
                n += 1
        dirs[:] = [d for d in dirs if not d.startswith(UPLOAD_NAME)]
    return n


def count_dist_files(directory: Path) -> int:
    n = 0
    for _root, dirs, names in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        n += sum(1 for f in names if not f.startswith(".") and f.endswith((".whl", ".tar.gz")))
    return n


def ensure_corpus(cache: Path, files: int, layout: str, per_project: int) -> Corpus:
    key = f"{layout}-{files}-{per_project}"
    path = cache / "corpus" / key
    marker = cache / "corpus" / f"{key}.json"
    corpus = Corpus(files, layout, per_project, path)
    if marker.exists() and path.is_dir():
        remove_leftovers(path)
        if count_dist_files(path) == files:
            log(f"corpus {key}: reusing {path}")
            return corpus
        log(f"corpus {key}: file count differs from {files}; building it again")
    shutil.rmtree(path, ignore_errors=True)
    marker.unlink(missing_ok=True)
    log(f"corpus {key}: generating {files:,} files in {path} ...")
    import corpus as corpus_mod

    t0 = time.monotonic()
    made = corpus_mod.build(path, files, per_project, layout)
    corpus.seconds_to_build = time.monotonic() - t0
    if made != files:
        raise SystemExit(f"corpus.py made {made} files, wanted {files}")
    marker.write_text(json.dumps({"files": files, "layout": layout, "per_project": per_project}))
    log(f"corpus {key}: {files:,} files in {corpus.seconds_to_build:.1f}s")
    return corpus


# --------------------------------------------------------------------------------------------
# Servers under test


@dataclass
class Server:
    name: str
    label: str
    argv: Callable[[int, Path], list[str]]
    json_api: str = "/pypi/{p}/json"
    can_upload: bool = True
    measure_restart: bool = False
    drop_cache: bool = False  # delete .pkgserver* in the corpus before the first start
    health: str = "/health"
    notes: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    base: str
    log_path: Path
    argv: list[str] = field(default_factory=list)
    ready_seconds: float | None = None
    ready_rss: dict[str, float] = field(default_factory=dict)
    ready_other_cpu: float | None = None


def start(
    server: Server,
    corpus: Corpus | None,
    logdir: Path,
    ready: Callable[[str], bool],
    ready_timeout: float,
    suffix: str = "",
    env: dict[str, str] | None = None,
) -> Running:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = server.argv(port, corpus.path if corpus else Path("."))
    log_path = logdir / f"{server.name}{suffix}.log"
    logf = open(log_path, "ab")
    logf.write(f"\n$ {' '.join(argv)}\n".encode())
    logf.flush()
    t0, busy0, own0 = time.monotonic(), machine_busy(), own_cpu()
    proc = subprocess.Popen(
        argv,
        stdout=logf,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=tempfile.gettempdir(),
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    logf.close()
    running = Running(proc, base, log_path, argv)
    deadline = t0 + ready_timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {proc.returncode}: {tail(log_path)}")
        if time.monotonic() > deadline:
            stop(running)
            raise RuntimeError(f"{server.name} not ready after {ready_timeout:.0f}s")
        try:
            if ready(base):
                break
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.02)
    running.ready_seconds = time.monotonic() - t0
    # Others' CPU while it started (its worker processes have ended and count as its own).
    server_cpu = cpu_seconds(proc.pid) or 0.0
    if running.ready_seconds > 0.5:
        other = machine_busy() - busy0 - (own_cpu() - own0) - server_cpu
        running.ready_other_cpu = max(0.0, other / running.ready_seconds)
    running.ready_rss = proc_status(proc.pid)
    return running


def stop(running: Running) -> None:
    proc = running.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def log_problems(path: Path) -> dict[str, int]:
    text = tail(path, 50_000_000)
    return {
        "tracebacks": text.count("Traceback (most recent call last)"),
        "errors": len(re.findall(r"\bERROR\b|\bCRITICAL\b", text)),
        "queue_warnings": text.count("Task queue depth"),
    }


def page_ready(corpus: Corpus, project: str) -> Callable[[str], bool]:
    def check(base: str) -> bool:
        a = fetch(base, f"/simple/{project}/", {"Accept": HTML}, timeout=300)
        return a.status == 200 and len(links(a.body)) == corpus.per_project

    return check


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


# --------------------------------------------------------------------------------------------
# Loads: what each endpoint asks, checked once before it is measured


def probe(a: Answer) -> dict[str, Any]:
    """What the checked answer says about the load: its time, whether the server closes."""
    return {
        "probe_seconds": a.seconds,
        "closes": a.headers.get("connection", "").lower() == "close",
    }


def prepare_loads(
    base: str, server: Server, corpus: Corpus, sample: list[str], checks: list[str]
) -> dict[str, loadgen.Load | str]:
    """Endpoint -> Load, or -> reason it is not applicable. Failed checks go to ``checks``."""
    loads: dict[str, loadgen.Load | str] = {}
    p0 = sample[0]
    n_projects = corpus.projects

    # /simple/
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

    # Project page, HTML
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

    # 304 revalidation
    if not etag:
        loads["page_304"] = "n/a: no ETag on project pages"
    else:
        a = fetch(base, f"/simple/{p0}/", {"Accept": HTML, "If-None-Match": etag})
        if a.status != 304:
            checks.append(f"/simple/{p0}/ If-None-Match {etag}: HTTP {a.status}, want 304")
        reqs = []
        for p in sample[:100]:
            b = fetch(base, f"/simple/{p}/", {"Accept": HTML})
            if b.status == 200 and b.headers.get("etag"):
                reqs.append((f"/simple/{p}/", {"Accept": HTML, "If-None-Match": b.headers["etag"]}))
        loads["page_304"] = loadgen.Load(reqs, expect=304, **probe(a))

    # Wheel and its metadata: the link of the first project, its name replaced by each other's
    wheel_name = f"{p0}-1.0.0-py3-none-any.whl"
    href = next((h for h, text in found if text.strip() == wheel_name), None)
    if href is None:
        checks.append(f"/simple/{p0}/: no link to {wheel_name}")
        loads["wheel"] = loads["metadata"] = "n/a: wheel link not found"
    else:
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

    # JSON API
    path = server.json_api.replace("{p}", p0)
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
    return loads


# --------------------------------------------------------------------------------------------
# Uploads


def big_wheel(cache: Path, version: str, megabytes: int) -> Path:
    """An installable wheel of ``megabytes`` MiB of random (incompressible) data."""
    directory = cache / "upload"
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"{UPLOAD_NAME}-{version}-py3-none-any.whl"
    stamp = directory / f"{out.name}.{megabytes}M"
    if out.exists() and stamp.exists():
        return out
    import base64

    def b64(d: bytes) -> str:
        return base64.urlsafe_b64encode(d).rstrip(b"=").decode()

    dist_info = f"{UPLOAD_NAME}-{version}.dist-info"
    small = {
        f"{UPLOAD_NAME}/__init__.py": b"",
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {UPLOAD_NAME}\nVersion: {version}\n"
            "Summary: A large upload for the benchmark\n"
        ).encode(),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    tmp = out.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        h = hashlib.sha256()
        size = 0
        with zf.open(f"{UPLOAD_NAME}/data.bin", "w", force_zip64=True) as fh:
            for _ in range(megabytes):
                chunk = os.urandom(1 << 20)
                h.update(chunk)
                fh.write(chunk)
                size += len(chunk)
        record.append(f"{UPLOAD_NAME}/data.bin,sha256={b64(h.digest())},{size}")
        for name, data in small.items():
            zf.writestr(name, data)
            record.append(f"{name},sha256={b64(hashlib.sha256(data).digest())},{len(data)}")
        record.append(f"{dist_info}/RECORD,,")
        zf.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    tmp.rename(out)
    for old in directory.glob(f"{out.name}.*M"):
        old.unlink()
    stamp.touch()
    return out


def load_options(args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    """How every load is run (loadgen.run's keyword arguments besides the load and duration)."""
    return dict(
        connections=args.connections,
        threads=args.wrk_threads,
        timeout=args.timeout,
        use_wrk=not args.python_load,
        workdir=logdir,
    )


def raw_upload(base: str, wheel: Path, version: str, timeout: float) -> dict[str, Any]:
    """One multipart POST of the legacy upload API, the file streamed from disk."""
    sha256 = hashlib.sha256()
    md5 = hashlib.md5()
    with open(wheel, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha256.update(chunk)
            md5.update(chunk)
    boundary = "----bench" + os.urandom(8).hex()
    fields = {
        ":action": "file_upload",
        "protocol_version": "1",
        "metadata_version": "2.1",
        "name": UPLOAD_NAME,
        "version": version,
        "filetype": "bdist_wheel",
        "pyversion": "py3",
        "sha256_digest": sha256.hexdigest(),
        "md5_digest": md5.hexdigest(),
    }
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    )
    head += (
        f"--{boundary}\r\nContent-Disposition: form-data;"
        f' name="content"; filename="{wheel.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail_ = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + wheel.stat().st_size + len(tail_)
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    t0 = time.perf_counter()
    try:
        conn.putrequest("POST", "/")
        conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        conn.putheader("Content-Length", str(length))
        conn.putheader("Authorization", "Basic YmVuY2g6YmVuY2g=")  # bench:bench
        conn.endheaders()
        conn.send(head)
        with open(wheel, "rb") as fh:
            while chunk := fh.read(1 << 20):
                conn.send(chunk)
        conn.send(tail_)
        res = conn.getresponse()
        body = res.read()
        status = res.status
    except (OSError, http.client.HTTPException) as exc:
        return {"ok": False, "seconds": time.perf_counter() - t0, "detail": repr(exc)}
    finally:
        conn.close()
    seconds = time.perf_counter() - t0
    return {
        "ok": status in (200, 201),
        "status": status,
        "seconds": seconds,
        "detail": body[:200].decode("utf-8", "replace").strip(),
    }


# --------------------------------------------------------------------------------------------
# pip and uv end to end


def client_env(tmp: Path) -> dict[str, str]:
    """No pip/uv/twine configuration or cache from this machine: fresh HOME, caches, config."""
    drop = ("PIP_", "UV_", "TWINE_", "XDG_", "PYTHON", "VIRTUAL_ENV", "CONDA")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_CONFIG_HOME=str(home / ".config"),
        PIP_CONFIG_FILE="/dev/null",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        UV_NO_CONFIG="1",
        UV_CACHE_DIR=str(tmp / "uv-cache"),
        UV_PYTHON_DOWNLOADS="never",
        NO_COLOR="1",
    )
    return env


def timed(argv: list[str], env: dict[str, str], timeout: float) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    try:
        p = subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        return time.perf_counter() - t0, p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"") + (exc.stderr or b"")
        text = out.decode(errors="replace") if isinstance(out, bytes) else str(out)
        return time.perf_counter() - t0, -1, f"timeout after {timeout:.0f}s\n{text}"


def pip_download(
    base: str, projects: list[str], tools: dict[str, str], timeout: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-pip-") as t:
        tmp = Path(t)
        dest = tmp / "dl"
        argv = [
            tools["python"],
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-d",
            str(dest),
            "--index-url",
            f"{base}/simple/",
            *projects,
        ]
        seconds, rc, out = timed(argv, client_env(tmp), timeout)
        got = len(list(dest.glob("*"))) if dest.exists() else 0
        ok = rc == 0 and got == len(projects)
        return {
            "ok": ok,
            "seconds": seconds,
            "files": got,
            "detail": "" if ok else out.strip()[-600:],
        }


def uv_dry_run(
    base: str, projects: list[str], tools: dict[str, str], timeout: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-uv-") as t:
        tmp = Path(t)
        env = client_env(tmp)
        venv = tmp / "venv"
        _s, rc, out = timed(
            [tools["uv"], "venv", "-q", "--python", tools["python"], str(venv)], env, 120
        )
        if rc != 0:
            return {"ok": False, "seconds": None, "detail": "uv venv: " + out.strip()[-400:]}
        shutil.rmtree(tmp / "uv-cache", ignore_errors=True)  # the timed run starts cold
        argv = [
            tools["uv"],
            "pip",
            "install",
            "--dry-run",
            "--python",
            str(venv / "bin" / "python"),
            "--index-url",
            f"{base}/simple/",
            *projects,
        ]
        seconds, rc, out = timed(argv, env, timeout)
        m = re.search(r"Would install (\d+) package", out)
        ok = rc == 0 and m is not None and int(m.group(1)) == len(projects)
        return {"ok": ok, "seconds": seconds, "detail": "" if ok else out.strip()[-600:]}


# --------------------------------------------------------------------------------------------
# One server on one corpus


def state_files(corpus: Corpus) -> list[Path]:
    """pkgserver's dot-files in the corpus (a persistent cache there), not its temp files."""
    return [
        p
        for pattern in (".pkgserver*", "*/.pkgserver*")
        for p in corpus.path.glob(pattern)
        if not p.name.startswith(".pkgserver-tmp-")
    ]


def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def measure(
    server: Server,
    corpus: Corpus,
    args: argparse.Namespace,
    tools: dict[str, str],
    logdir: Path,
    upload_wheels: list[tuple[Path, str]],
) -> dict[str, Any]:
    rng = random.Random(4242)
    full = corpus.full_projects
    sample = rng.sample(full, min(len(full), args.sample))
    e2e_projects = sorted(rng.sample(full, min(len(full), args.e2e_projects)))
    result: dict[str, Any] = {"server": server.name, "endpoints": {}, "checks": []}
    checks: list[str] = result["checks"]
    ready = page_ready(corpus, sample[0])
    suffix = f"-{corpus.layout}-{corpus.files}"

    # The server's own cache home: a persistent cache kept under $XDG_CACHE_HOME lands here, where
    # it can be deleted for a first start and measured, and is never the user's.
    xdg = args.cache / "xdg" / f"{server.name}{suffix}"
    server_env = {"XDG_CACHE_HOME": str(xdg), **server.env}
    if server.drop_cache:
        shutil.rmtree(xdg, ignore_errors=True)
        for p in state_files(corpus):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    xdg.mkdir(parents=True, exist_ok=True)
    remove_leftovers(corpus.path)

    log(f"{server.name}: starting on {corpus.label()}")
    run = start(server, corpus, logdir, ready, args.ready_timeout, suffix, server_env)
    result["ready_first"] = run.ready_seconds
    result["ready_first_other_cpu"] = run.ready_other_cpu
    result["rss_ready"] = run.ready_rss
    result["argv"] = run.argv
    result["env"] = server.env
    log(
        f"{server.name}: ready in {run.ready_seconds:.2f}s"
        f" (RSS {run.ready_rss.get('VmRSS', 0):.0f} MiB)"
    )
    try:
        loads = prepare_loads(run.base, server, corpus, sample, checks)
        result["server_header"] = ", ".join(server.notes)
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
                    result["endpoints"][key] = {"na": "not measured: " + stuck}
                    log(f"{server.name}: {stuck}: skipping the rest")
                    continue
            wait_quiet(run.proc.pid, args.wait_quiet)
            r = accounted_load(run.proc.pid, run.base, load, duration=args.duration, **common)
            r["closes"] = load.closes
            r["check"] = load.check
            r["drain_seconds"], answered = drain(run.base, server.health, run.proc.pid, limit)
            if not answered:
                stuck = (
                    f"did not answer {server.health} within {limit:.0f} s after the load of {key}"
                )
                log(f"{server.name}: {stuck}: skipping the rest")
            result["endpoints"][key] = r
            log(
                f"{server.name}: {key}: {r['rps']:.1f} req/s, p50 {fmt_ms(r['p50_ms'])}, "
                f"p99 {fmt_ms(r['p99_ms'])}, n={r['requests']}, errors {r['errors']}, "
                f"non-2xx/3xx {r['non2xx3xx']}, wrong {r['wrong']}"
                + (
                    f", backlog drained in {r['drain_seconds']:.1f}s"
                    if r["drain_seconds"] > 1
                    else ""
                )
            )
        result["rss_after_load"] = proc_status(run.proc.pid)
        if stuck:
            result["stuck"] = stuck
            checks.append(f"the server {stuck}; nothing more was measured")
        else:
            # Still right after the load?
            try:
                if not ready(run.base):
                    checks.append("after the load: the project page is wrong")
            except (OSError, http.client.HTTPException) as exc:
                checks.append(f"after the load: {exc!r}")

        if not args.no_e2e and not stuck:
            log(f"{server.name}: pip download of {len(e2e_projects)} projects")
            result["pip"] = pip_download(run.base, e2e_projects, tools, args.client_timeout)
            log(f"{server.name}: uv pip install --dry-run of {len(e2e_projects)} projects")
            result["uv"] = uv_dry_run(run.base, e2e_projects, tools, args.client_timeout)
            result["e2e_projects"] = len(e2e_projects)
            for k in ("pip", "uv"):
                r = result[k]
                log(
                    f"{server.name}: {k}: {'ok' if r['ok'] else 'FAILED'}"
                    f" {fmt_s(r['seconds'])} {r['detail'][:300]}"
                )

        if server.can_upload and args.upload_mb > 0 and not stuck:
            (w1, v1), (w2, _v2) = upload_wheels
            cpu0 = cpu_seconds(run.proc.pid)
            up = raw_upload(run.base, w1, v1, args.client_timeout)
            cpu1 = cpu_seconds(run.proc.pid)
            if cpu0 is not None and cpu1 is not None:
                up["server_cpu"] = cpu1 - cpu0
            a = fetch(run.base, f"/simple/{UPLOAD_NAME}/", {"Accept": HTML})
            if up["ok"] and not any(t.strip() == w1.name for _h, t in links(a.body)):
                up["ok"] = False
                up["detail"] = f"uploaded, but /simple/{UPLOAD_NAME}/ does not list it ({a.status})"
            result["upload_raw"] = up
            log(f"{server.name}: raw upload of {args.upload_mb} MiB: {up}")
            with tempfile.TemporaryDirectory(prefix="bench-twine-") as t:
                twine_env = client_env(Path(t))
                cpu0 = cpu_seconds(run.proc.pid)
                seconds, rc, out = timed(
                    [
                        tools["twine"],
                        "upload",
                        "--repository-url",
                        f"{run.base}/",
                        "-u",
                        "bench",
                        "-p",
                        "bench",
                        "--non-interactive",
                        "--disable-progress-bar",
                        str(w2),
                    ],
                    twine_env,
                    args.client_timeout,
                )
                cpu1 = cpu_seconds(run.proc.pid)
            tw: dict[str, Any] = {
                "ok": rc == 0,
                "seconds": seconds,
                "detail": "" if rc == 0 else out.strip()[-400:],
            }
            if cpu0 is not None and cpu1 is not None:
                tw["server_cpu"] = cpu1 - cpu0
            result["upload_twine"] = tw
            log(f"{server.name}: twine upload of {args.upload_mb} MiB: {tw}")
            result["rss_after_upload"] = proc_status(run.proc.pid)
    finally:
        stop(run)
        remove_leftovers(corpus.path)
    result["log"] = log_problems(run.log_path)
    result["log_path"] = str(run.log_path)
    result["state_bytes"] = du(xdg) + sum(du(p) for p in state_files(corpus))

    if server.measure_restart:
        log(f"{server.name}: restart")
        run = start(server, corpus, logdir, ready, args.ready_timeout, suffix, server_env)
        result["ready_restart"] = run.ready_seconds
        result["ready_restart_other_cpu"] = run.ready_other_cpu
        result["rss_restart"] = run.ready_rss
        log(f"{server.name}: ready again in {run.ready_seconds:.2f}s")
        stop(run)
        more = log_problems(run.log_path)
        result["log"] = more  # the log file is shared: the restart's count includes the first run
    return result


def measure_ceiling(
    args: argparse.Namespace, tools: dict[str, str], logdir: Path, suffix: str = ""
) -> dict[str, Any]:
    server = Server(
        "ceiling",
        "ceiling (bare waitress, fixed 2 KB page)",
        lambda port, _c: [
            tools["python"],
            str(HERE / "ceiling.py"),
            "--port",
            str(port),
            "--threads",
            str(args.threads),
        ],
        can_upload=False,
        health="/",
    )

    def ready(base: str) -> bool:
        a = fetch(base, "/simple/proj00000/")
        return a.status == 200 and len(a.body) == 2048

    log("ceiling: starting")
    run = start(server, None, logdir, ready, 60, suffix)
    result: dict[str, Any] = {
        "server": "ceiling",
        "ready_first": run.ready_seconds,
        "rss_ready": run.ready_rss,
        "argv": run.argv,
    }
    try:
        load = loadgen.Load(
            [(f"/simple/proj{i:05d}/", {"Accept": HTML}) for i in range(1000)],
            expect=200,
            check="html",
            want=10,
        )
        common = load_options(args, logdir)
        if args.warmup > 0:
            loadgen.run(run.base, load, duration=args.warmup, **common)
        wait_quiet(run.proc.pid, args.wait_quiet)
        result["load"] = accounted_load(
            run.proc.pid, run.base, load, duration=args.duration, **common
        )
        result["rss_after_load"] = proc_status(run.proc.pid)
        r = result["load"]
        log(f"ceiling: {r['rps']:.0f} req/s, p50 {fmt_ms(r['p50_ms'])}, p99 {fmt_ms(r['p99_ms'])}")
    finally:
        stop(run)
    return result


# --------------------------------------------------------------------------------------------
# Setup: pypiserver's virtualenv, tool versions


def ensure_pypiserver(venvs: Path, python: str) -> Path:
    venv = venvs / "pypiserver"
    exe = venv / "bin" / "pypi-server"
    ok = venv / ".bench-installed"
    if exe.exists() and ok.exists():
        return venv
    log(f"installing pypiserver into {venv} (needs PyPI once) ...")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    # passlib 1.7.4 breaks with bcrypt >= 4.1 (it reads bcrypt.__about__); waitress is what
    # `--server auto` picks first; watchdog enables the cached-dir backend.
    subprocess.run([*pip, "pypiserver[passlib,cache]", "bcrypt<4.1", "waitress"], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import passlib.hash as h; assert h.bcrypt.verify('x', h.bcrypt.hash('x'))",
        ],
        check=True,
    )
    ok.touch()
    return venv


def version_of(argv: list[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        return (p.stdout or p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def snapshot_sources(cache: Path, python: str, rev: str | None) -> Path:
    """A copy of pkgserver's sources, which the servers import (PYTHONPATH): as they are in the
    working tree now, or at git revision ``rev``. Edits made to the working tree during a run
    do not change the code being measured."""
    if rev:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--verify", rev + "^{commit}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        target = cache / "src" / commit[:12]
    else:
        target = cache / "src" / sources_digest()
    if not (target / "pkgserver" / "__init__.py").exists():
        shutil.rmtree(target, ignore_errors=True)
        if rev:
            target.mkdir(parents=True)
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "pkgserver"],
                capture_output=True,
                check=True,
            ).stdout
            import io
            import tarfile

            with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
                tf.extractall(target, filter="data")
        else:
            shutil.copytree(
                ROOT / "pkgserver",
                target / "pkgserver",
                ignore=shutil.ignore_patterns("__pycache__"),
            )
    for old in (cache / "src").iterdir():  # another run may still use a recent one
        if old != target and time.time() - old.stat().st_mtime > 7 * 86400:
            shutil.rmtree(old, ignore_errors=True)
    os.utime(target)
    found = subprocess.run(
        [python, "-c", "import pkgserver; print(pkgserver.__file__)"],
        env={**os.environ, "PYTHONPATH": str(target)},
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if not found.startswith(str(target)):
        raise SystemExit(f"the snapshot of pkgserver is not what {python} imports: {found!r}")
    return target


def sources_digest() -> str:
    """A hash of pkgserver's sources: which code was measured, committed or not."""
    digest = hashlib.sha256()
    for f in sorted((ROOT / "pkgserver").rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts:
            digest.update(f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:12]


def environment(
    tools: dict[str, str],
    pypiserver_venv: Path | None,
    sources_rev: str | None = None,
    snapshot: Path | None = None,
) -> dict[str, str]:
    env: dict[str, str] = {}
    py = tools["python"]
    init = (snapshot or ROOT) / "pkgserver" / "__init__.py"
    found = re.search(r'__version__ = "([^"]+)"', init.read_text())
    env["pkgserver"] = found.group(1) if found else "?"
    commit = version_of(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "pkgserver"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    env["sources"] = sources_digest()
    env["commit"] = commit + (
        f" + uncommitted changes in pkgserver/ (sources sha256 {env['sources']})" if dirty else ""
    )
    if sources_rev:
        env["commit"] = "pkgserver/ as of " + version_of(
            ["git", "-C", str(ROOT), "log", "-1", "--format=%h %s", sources_rev]
        )
    env["python"] = version_of([py, "-c", "import sys; print(sys.version.split()[0])"])
    env["waitress"] = version_of(
        [py, "-c", "import importlib.metadata as m; print(m.version('waitress'))"]
    )
    if pypiserver_venv:
        pv = str(pypiserver_venv / "bin" / "python")
        env["pypiserver"] = version_of(
            [
                pv,
                "-c",
                "import importlib.metadata as m; print(', '.join(n + ' ' + m.version(n) for n in"
                " ('pypiserver', 'waitress', 'watchdog', 'passlib', 'bcrypt')))",
            ]
        )
    env["wrk"] = (
        version_of(["wrk", "--version"]).split(" Copyright")[0] if loadgen.wrk_path() else "absent"
    )
    env["pip"] = version_of([py, "-m", "pip", "--version"]).split(" from ")[0]
    env["uv"] = version_of([tools["uv"], "--version"])
    env["twine"] = version_of([tools["twine"], "--version"]).split(" (")[0]
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    env["machine"] = (
        f"{os.cpu_count()} CPUs ({cpu}), {mem}, {platform.system()} {platform.release()}"
    )
    return env


# --------------------------------------------------------------------------------------------
# Report


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
    keys = ("machine", "pkgserver", "commit", "python", "waitress", "pypiserver")
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


def _ratios(servers: list[dict[str, Any]], ceiling_rps: float | None) -> list[str]:
    pk = next((s for s in servers if s["server"] == "pkgserver"), None)
    if pk is None:
        return []
    others = [s for s in servers if s["server"].startswith("pypiserver")]
    head = "| endpoint | pkgserver req/s | / ceiling |"
    out = [
        "pkgserver's rate relative to the ceiling" + (" and to pypiserver:" if others else ":"),
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
        cells = []
        for o in others:
            theirs = o["endpoints"].get(key)
            if not theirs or "na" in theirs:
                cells.append("n/a")
            elif o.get("stuck") and not theirs["requests"]:
                cells.append("n/a (it stopped answering)")
            else:
                cells.append(ratio(mine, theirs["rps"]))
        flag = "" if clean else " (has errors)"
        out.append(
            f"| {label} | {fmt_rps(r['rps'])}{flag} | {ratio(r['rps'], ceiling_rps)} |"
            + "".join(f" {c} |" for c in cells)
        )
    return [*out, ""]


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
        for s in size["servers"]:
            if s.get("checks"):
                out += [f"**Failed checks, {s['server']}:** " + "; ".join(s["checks"]), ""]
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
    if shown:
        out += ["Server command lines (port and corpus of the first size):", ""]
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
        out.append("")
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


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--files",
        default=None,
        help="comma-separated corpus sizes (default 50,5000,50000; --quick: 50)",
    )
    p.add_argument(
        "--layout", default="flat", help="flat, folders or both comma-separated (default flat)"
    )
    p.add_argument("--per-project", type=int, default=10)
    p.add_argument(
        "--duration", type=float, default=None, help="seconds per endpoint (default 10; --quick: 2)"
    )
    p.add_argument(
        "--warmup", type=float, default=1, help="seconds of unmeasured load before each endpoint"
    )
    p.add_argument("--connections", type=int, default=50)
    p.add_argument(
        "--wrk-threads",
        type=int,
        default=1,
        help="wrk threads (default 1: leaves the other CPU to the server)",
    )
    p.add_argument("--timeout", type=float, default=60, help="load client timeout, seconds")
    p.add_argument(
        "--threads", type=int, default=16, help="waitress threads for pkgserver and the ceiling"
    )
    p.add_argument("--servers", default="pkgserver,pypiserver,pypiserver-cached,ceiling")
    p.add_argument("--endpoints", default=",".join(k for k, _ in ENDPOINTS))
    p.add_argument("--sample", type=int, default=1000, help="projects the load draws from")
    p.add_argument("--e2e-projects", type=int, default=20)
    p.add_argument("--upload-mb", type=int, default=100)
    p.add_argument("--no-e2e", action="store_true", help="skip pip and uv")
    p.add_argument(
        "--python-load",
        action="store_true",
        help="use the Python load generator even if wrk is there",
    )
    p.add_argument("--quick", action="store_true", help="sanity run: 50 files, 2 s per endpoint")
    p.add_argument(
        "--cache", type=Path, default=HERE / ".cache", help="corpus cache (default bench/.cache)"
    )
    p.add_argument("--out", type=Path, default=HERE / "results" / "latest.md")
    p.add_argument("--ready-timeout", type=float, default=900)
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=180,
        help="how long a server may take to work off a backlog before it counts as stuck",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=None,
        help="before each measurement, wait up to this many seconds for other work on the"
        " machine to stop (default 30, --quick 5; 0 = do not wait)",
    )
    p.add_argument(
        "--client-timeout", type=float, default=900, help="pip, uv, twine and upload timeout"
    )
    p.add_argument("--pkgserver-python", default=str(ROOT / ".venv" / "bin" / "python"))
    p.add_argument(
        "--lock-wait",
        type=float,
        default=3600,
        help="seconds to wait for another run on the same --cache to finish (default 3600)",
    )
    p.add_argument(
        "--sources",
        metavar="REV",
        help="measure pkgserver as of this git revision (e.g. HEAD) instead of the working tree",
    )
    p.add_argument(
        "--live-sources",
        action="store_true",
        help="run pkgserver from the working tree instead of a snapshot taken at the start",
    )
    p.add_argument(
        "--from-json",
        type=Path,
        help="measure nothing: write the Markdown report of an earlier run's JSON to --out",
    )
    args = p.parse_args(argv)
    if args.files is None:
        args.files = "50" if args.quick else "50,5000,50000"
    if args.duration is None:
        args.duration = 2 if args.quick else 10
    if args.wait_quiet is None:
        args.wait_quiet = 5 if args.quick else 30
    sizes = [int(x.replace("_", "")) for x in args.files.split(",") if x.strip()]
    layouts = [x.strip() for x in args.layout.split(",") if x.strip()]
    if any(lay not in ("flat", "folders") for lay in layouts):
        p.error("--layout: flat, folders")
    args.endpoint_keys = [x.strip() for x in args.endpoints.split(",") if x.strip()]
    if args.from_json:
        earlier = json.loads(args.from_json.read_text())
        settings = argparse.Namespace(**earlier["settings"])
        text = report(earlier, settings)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(text)
        return 0
    wanted = [x.strip() for x in args.servers.split(",") if x.strip()]

    py = args.pkgserver_python if Path(args.pkgserver_python).exists() else sys.executable
    bindir = Path(py).parent
    tools = {
        "python": py,
        "uv": str(bindir / "uv") if (bindir / "uv").exists() else (shutil.which("uv") or "uv"),
        "twine": str(bindir / "twine")
        if (bindir / "twine").exists()
        else (shutil.which("twine") or "twine"),
    }
    if not loadgen.wrk_path() and not args.python_load:
        log(
            "wrk not found: using the Python load generator (install wrk for comparable figures: "
            "apt-get install -y wrk)"
        )

    signal.signal(signal.SIGTERM, _interrupted)
    lock = exclusive(args.cache, args.lock_wait)  # noqa: F841 (held until the process ends)
    started = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.monotonic()
    logdir = args.out.parent / f"{args.out.stem}-logs"  # one per report: runs do not mix
    shutil.rmtree(logdir, ignore_errors=True)
    logdir.mkdir(parents=True, exist_ok=True)

    snapshot = None
    if "pkgserver" in wanted and not args.live_sources:
        snapshot = snapshot_sources(args.cache, py, args.sources)
        log(f"pkgserver runs from a snapshot of its sources: {snapshot}")

    ppvenv = None
    if any(s.startswith("pypiserver") for s in wanted):
        ppvenv = ensure_pypiserver(HERE / ".venvs", sys.executable)
    pp = str(ppvenv / "bin" / "pypi-server") if ppvenv else ""

    def pp_argv(backend: str) -> Callable[[int, Path], list[str]]:
        return lambda port, c: [
            pp,
            "run",
            "-p",
            str(port),
            "-i",
            "127.0.0.1",
            "-a",
            ".",
            "-P",
            ".",
            "--disable-fallback",
            "--server",
            "auto",
            "--backend",
            backend,
            str(c),
        ]

    catalog = {
        "pkgserver": Server(
            "pkgserver",
            "pkgserver",
            lambda port, c: [
                py,
                "-m",
                "pkgserver",
                "run",
                "-p",
                str(port),
                "-i",
                "127.0.0.1",
                "-P",
                ".",
                "-a",
                ".",
                "--disable-fallback",
                "--threads",
                str(args.threads),
                "--log-stream",
                "stderr",
                str(c),
            ],
            measure_restart=True,
            drop_cache=True,
            env={"PYTHONPATH": str(snapshot)} if snapshot else {},
        ),
        "pypiserver": Server(
            "pypiserver", "pypiserver", pp_argv("simple-dir"), json_api="/{p}/json"
        ),
        "pypiserver-cached": Server(
            "pypiserver-cached",
            "pypiserver (cached-dir)",
            pp_argv("cached-dir"),
            json_api="/{p}/json",
        ),
    }
    results: dict[str, Any] = {
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "command": "python bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "environment": environment(tools, ppvenv, args.sources, snapshot),
        "snapshot": str(snapshot) if snapshot else None,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "sizes": [],
        "loadavg_start": loadavg(),
    }

    upload_wheels: list[tuple[Path, str]] = []
    if args.upload_mb > 0:
        log(f"preparing {args.upload_mb} MiB upload wheels")
        upload_wheels = [(big_wheel(args.cache, v, args.upload_mb), v) for v in ("1.0.0", "1.0.1")]

    for layout in layouts:
        for files in sizes:
            corpus = ensure_corpus(args.cache, files, layout, args.per_project)
            size: dict[str, Any] = {
                "corpus": {
                    "files": files,
                    "projects": corpus.projects,
                    "per_project": args.per_project,
                    "layout": layout,
                    "path": str(corpus.path),
                    "build_seconds": corpus.seconds_to_build,
                },
                "servers": [],
                "e2e_projects": min(len(corpus.full_projects), args.e2e_projects),
            }
            results["sizes"].append(size)
            if "ceiling" in wanted:
                try:
                    size["ceiling"] = measure_ceiling(args, tools, logdir, f"-{layout}-{files}")
                except Exception as exc:  # report it, go on with the rest
                    log(f"ceiling failed: {exc}")
                    size["ceiling"] = {"error": repr(exc)}
            for name in wanted:
                if name == "ceiling":
                    continue
                server = catalog.get(name)
                if server is None:
                    log(f"unknown server {name!r}; known: {', '.join(catalog)}, ceiling")
                    continue
                try:
                    size["servers"].append(
                        measure(server, corpus, args, tools, logdir, upload_wheels)
                    )
                except Exception as exc:
                    traceback.print_exc()
                    size["servers"].append({"server": name, "error": repr(exc)})
            results["elapsed"] = time.monotonic() - t_start
            write(results, args)  # partial results survive a later failure

    results["elapsed"] = time.monotonic() - t_start
    text = write(results, args)
    print(text)
    log(f"wrote {args.out} and {args.out.with_suffix('.json')} ({results['elapsed']:.0f} s)")
    return 0


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def exclusive(cache: Path, wait: float) -> Any:
    """One run at a time per cache: two runs would share the CPUs, the corpora and the uploads.
    Returns the open lock file (keep it open); waits up to ``wait`` seconds for another run."""
    import fcntl

    cache.mkdir(parents=True, exist_ok=True)
    fh = open(cache / "run.lock", "a+")
    deadline = time.monotonic() + wait
    told = False
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                fh.seek(0)
                raise SystemExit(
                    f"another benchmark run holds {fh.name}: {fh.read().strip()}"
                ) from None
            if not told:
                fh.seek(0)
                log(f"waiting for another benchmark run to finish ({fh.read().strip()})")
                told = True
            time.sleep(5)
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}, started {time.strftime('%H:%M:%S')}: {' '.join(sys.argv)}\n")
    fh.flush()
    return fh


def _interrupted(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt  # the finally clauses stop the servers this run started


def write(results: dict[str, Any], args: argparse.Namespace) -> str:
    results.setdefault("elapsed", 0.0)
    results["loadavg_end"] = loadavg()
    if "sources" in results.get("environment", {}) and not args.sources:
        results["sources_end"] = sources_digest()
    text = report(results, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    return text


if __name__ == "__main__":
    sys.exit(main())
