"""Uploads: a large wheel of random data, as one raw multipart POST of the legacy upload API
(streamed from disk) and with ``twine upload``; wall time and the server's CPU time."""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import os
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from common import HTML, UPLOAD_NAME, fetch, links, log
from e2e import client_env, timed
from machine import cpu_seconds, proc_status
from servers import Running


def big_wheel(cache: Path, version: str, megabytes: int) -> Path:
    """An installable wheel of ``megabytes`` MiB of random (incompressible) data."""
    directory = cache / "upload"
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"{UPLOAD_NAME}-{version}-py3-none-any.whl"
    stamp = directory / f"{out.name}.{megabytes}M"
    if out.exists() and stamp.exists():
        return out

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


def twine_upload(base: str, wheel: Path, twine: str, timeout: float) -> dict[str, Any]:
    """``twine upload`` of ``wheel``, with no configuration from this machine."""
    with tempfile.TemporaryDirectory(prefix="bench-twine-") as t:
        seconds, rc, out = timed(
            [
                twine,
                "upload",
                "--repository-url",
                f"{base}/",
                "-u",
                "bench",
                "-p",
                "bench",
                "--non-interactive",
                "--disable-progress-bar",
                str(wheel),
            ],
            client_env(Path(t)),
            timeout,
        )
    return {"ok": rc == 0, "seconds": seconds, "detail": "" if rc == 0 else out.strip()[-400:]}


def measure_uploads(
    run: Running,
    wheels: list[tuple[Path, str]],
    tools: dict[str, str],
    args: argparse.Namespace,
    name: str,
    result: dict[str, Any],
) -> None:
    """The first wheel as a raw POST (then checked on its project page), the second with twine:
    into ``result`` as upload_raw, upload_twine and rss_after_upload."""
    (w1, v1), (w2, _v2) = wheels
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
    log(f"{name}: raw upload of {args.upload_mb} MiB: {up}")
    cpu0 = cpu_seconds(run.proc.pid)
    tw = twine_upload(run.base, w2, tools["twine"], args.client_timeout)
    cpu1 = cpu_seconds(run.proc.pid)
    if cpu0 is not None and cpu1 is not None:
        tw["server_cpu"] = cpu1 - cpu0
    result["upload_twine"] = tw
    log(f"{name}: twine upload of {args.upload_mb} MiB: {tw}")
    result["rss_after_upload"] = proc_status(run.proc.pid)
