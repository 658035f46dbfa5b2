"""pkgserver.api: the fast path and the routes give the same answers.

The fast path answers the most frequent requests without bottle; it must never say anything
the routes would not, byte for byte and header for header."""

from __future__ import annotations

from pathlib import Path

import pytest
import webtest
from builders import make_wheel
from conftest import make_testapp, scan

from pkgserver.app import create_app
from pkgserver.config import Settings

REQUESTS: list[tuple[str, dict[str, str]]] = [
    ("/simple/demo-pkg/", {"Accept": "text/html"}),
    ("/simple/demo-pkg/", {"Accept": "application/vnd.pypi.simple.v1+json"}),
    ("/simple/demo-pkg/", {"Accept": "text/html", "Accept-Encoding": "gzip"}),
    ("/simple/demo-pkg/", {}),
    ("/packages/demo_pkg-1.0-py3-none-any.whl", {}),
    ("/packages/helper/helper-1.0-py3-none-any.whl", {}),
]


def _headers(res: webtest.TestResponse) -> dict[str, str]:
    # Header names are case-insensitive (bottle writes "Etag", the fast path "ETag").
    return {k.lower(): v for k, v in res.headerlist if k not in ("Date", "Server")}


@pytest.mark.parametrize(("path", "headers"), REQUESTS)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_the_fast_path_answers_as_the_routes_do(
    pkgdir: Path, path: str, headers: dict[str, str], method: str
) -> None:
    settings = Settings(roots=(str(pkgdir),), disable_fallback=True)
    catalog = scan(pkgdir)
    with_fast = create_app(settings, catalog)
    real_fast = with_fast.fast
    calls: list[object] = []

    def counting(environ):  # type: ignore[no-untyped-def]
        answer = real_fast(environ)
        calls.append(answer)
        return answer

    with_fast.__dict__["fast"] = counting  # (bottle refuses to set an attribute twice)
    fast = webtest.TestApp(with_fast)
    routes = webtest.TestApp(create_app(settings, catalog, fast_path=False))
    assert routes.app.fast is None
    first = fast.request(path, method=method, headers=headers)
    second = routes.request(path, method=method, headers=headers)
    assert calls and calls[0] is not None, "the fast path did not answer this request"
    assert (first.status, first.body) == (second.status, second.body)
    assert _headers(first) == _headers(second)
    # And a revalidation with the ETag just given.
    again = {**headers, "If-None-Match": first.headers["ETag"]}
    third = fast.request(path, method=method, headers=again)
    fourth = routes.request(path, method=method, headers=again)
    assert calls[-1] is not None
    assert third.status == fourth.status == "304 Not Modified"
    assert _headers(third) == _headers(fourth)


def test_the_fast_path_leaves_protected_and_odd_requests_to_the_routes(
    pkgdir: Path, tmp_path: Path
) -> None:
    testapp, _ = make_testapp([pkgdir], disable_fallback=True)
    fast = testapp.app.fast
    base = {"REQUEST_METHOD": "GET", "QUERY_STRING": ""}
    for environ in (
        {**base, "PATH_INFO": "/simple/Demo-Pkg/"},  # not canonical: a redirect
        {**base, "PATH_INFO": "/simple/nothing-here/"},  # not hosted
        {**base, "PATH_INFO": "/simple/demo-pkg/", "QUERY_STRING": "format=x"},
        {**base, "PATH_INFO": "/packages/nothing.whl"},
        {**base, "PATH_INFO": "/packages/demo_pkg-1.0-py3-none-any.whl", "HTTP_RANGE": "bytes=0-1"},
        {**base, "REQUEST_METHOD": "POST", "PATH_INFO": "/simple/demo-pkg/"},
    ):
        assert fast(environ) is None, environ
    make_wheel(tmp_path / "locked", "locked", "1.0")
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("")
    closed, _ = make_testapp(
        [tmp_path / "locked"],
        password_file=str(htpasswd),
        authenticate=frozenset({"list", "download", "update"}),
    )
    for path in ("/simple/locked/", "/packages/locked-1.0-py3-none-any.whl"):
        assert closed.app.fast({**base, "PATH_INFO": path}) is None
        assert closed.get(path, expect_errors=True).status_int == 401
