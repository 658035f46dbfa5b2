"""The ceiling: a bare waitress app that answers a fixed 2 KB HTML page for any path.

    python bench/ceiling.py --port 8081 [--host 127.0.0.1] [--threads 16]

No routing, no lookup, no rendering: what a Python WSGI server on waitress can do at most on
this machine with the same thread count. pkgserver's figures are compared with it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Any

_LINK = '    <a href="../../packages/proj00000-1.0.0-py3-none-any.whl#sha256={h}">f{i}</a><br>\n'
_HEAD = "<!DOCTYPE html>\n<html>\n  <head><title>Links for proj00000</title></head>\n  <body>\n"
_TAIL = "  </body>\n</html>\n"


def _page(size: int = 2048) -> bytes:
    body = _HEAD + "".join(_LINK.format(h="0" * 64, i=i) for i in range(10)) + _TAIL
    body = body.replace("</body>", "<!--" + "x" * max(0, size - len(body) - 7) + "-->\n</body>")
    return body.encode()[:size] if len(body) > size else body.encode()


PAGE = _page()
HEADERS = [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(PAGE)))]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", HEADERS)
    return [PAGE]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--connection-limit", type=int, default=400)
    a = p.parse_args()
    from waitress import serve

    print(f"ceiling serving on http://{a.host}:{a.port}/ ({len(PAGE)} bytes)", flush=True)
    serve(
        app,
        host=a.host,
        port=a.port,
        threads=a.threads,
        connection_limit=a.connection_limit,
        ident="ceiling",
        _quiet=True,
    )


if __name__ == "__main__":
    main()
