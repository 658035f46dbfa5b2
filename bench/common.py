"""What every part of the benchmark shares: paths, the endpoints, the log, one checked GET."""

from __future__ import annotations

import http.client
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

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
_UNSAFE = re.compile(r"[^A-Za-z0-9._@-]")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def file_name(name: str) -> str:
    """A server's name as part of a file name ("pkgserver@HEAD~1" -> "pkgserver@HEAD_1")."""
    return _UNSAFE.sub("_", name)


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
