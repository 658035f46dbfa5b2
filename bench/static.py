"""A bare waitress app serving the files of a directory from memory: the ceiling of a benchmark
that serves given bytes (a project page, a wheel) rather than bench/ceiling.py's fixed page.

    python bench/static.py DIR --port 8081 [--host 127.0.0.1] [--threads 16]

``GET /<relative path>`` answers that file's bytes, read once at start; anything else 404.
Content-Type by suffix: .html text/html, .json PEP 691 JSON, anything else octet-stream. No
routing beyond a dict lookup, no rendering, no disk: what a Python WSGI server on waitress can
do at most on this machine for those bytes with the same thread count.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

TYPES = {".html": "text/html; charset=utf-8", ".json": "application/vnd.pypi.simple.v1+json"}


def load(directory: Path) -> dict[str, tuple[bytes, list[tuple[str, str]]]]:
    out = {}
    for f in sorted(directory.rglob("*")):
        if f.is_file():
            body = f.read_bytes()
            ctype = TYPES.get(f.suffix, "application/octet-stream")
            headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
            out["/" + f.relative_to(directory).as_posix()] = (body, headers)
    return out


def make_app(files: dict[str, tuple[bytes, list[tuple[str, str]]]]) -> Callable[..., Any]:
    missing = b"not found\n"
    missing_headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(missing)))]

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        found = files.get(environ.get("PATH_INFO", ""))
        if found is None:
            start_response("404 Not Found", missing_headers)
            return [missing]
        start_response("200 OK", found[1])
        return [found[0]]

    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("directory", type=Path)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--connection-limit", type=int, default=400)
    a = p.parse_args()
    from waitress import serve

    files = load(a.directory)
    print(f"static serving {len(files)} files on http://{a.host}:{a.port}/", flush=True)
    serve(
        make_app(files),
        host=a.host,
        port=a.port,
        threads=a.threads,
        connection_limit=a.connection_limit,
        ident="static",
        _quiet=True,
    )


if __name__ == "__main__":
    main()
