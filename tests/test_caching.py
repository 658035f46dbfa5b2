"""Cache-Control on every kind of answer (README "Caching"), through webtest.

Pages change with every upload: kept by clients, revalidated before each use (ETag, 304).
Files never change under their name: kept a year, unless --overwrite may replace them.
Redirects to the fallback index, errors and the operators' endpoints: never kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import webtest
from builders import big_wheel, make_wheel
from conftest import scan
from forms import upload_form
from test_upload import make_app, post

from pkgserver.app import create_app
from pkgserver.config import Settings
from pkgserver.hosted import HostedNames

REVALIDATE = "max-age=0, must-revalidate"
FOREVER = "public, max-age=31536000, immutable"
JSON = "application/vnd.pypi.simple.v1+json"
WHEEL = "/packages/demo_pkg-1.0-py3-none-any.whl"


def apps(root: Path, **settings_kw: Any) -> dict[str, webtest.TestApp]:
    """The same index with the fast path and without it (every request through bottle)."""
    settings = Settings(roots=(str(root),), **{"disable_fallback": True, **settings_kw})
    catalog = scan(root)
    return {
        "fast": webtest.TestApp(create_app(settings, catalog)),
        "routes": webtest.TestApp(create_app(settings, catalog, fast_path=False)),
    }


def revalidates(app: webtest.TestApp, path: str, method: str, **headers: str) -> str:
    """Asserts ``path`` says max-age=0, must-revalidate with an ETag, and that the ETag gets
    a 304 (for GET and HEAD) that says the same; returns the ETag."""
    res = app.request(path, method=method, headers=headers)
    assert res.status_int == 200, path
    assert res.headers["Cache-Control"] == REVALIDATE, (path, headers)
    etag = res.headers["ETag"]
    again = app.request(path, method=method, headers={**headers, "If-None-Match": etag})
    assert again.status_int == 304, (path, headers)
    assert again.headers["Cache-Control"] == REVALIDATE
    assert again.headers["ETag"] == etag
    assert again.body == b""
    return str(etag)


# -- pages: revalidated every time -----------------------------------------------------------------
PAGES = [
    ("/simple/", {"Accept": "text/html"}),
    ("/simple/", {"Accept": JSON}),
    ("/simple/demo-pkg/", {"Accept": "text/html"}),
    ("/simple/demo-pkg/", {"Accept": JSON}),
    ("/simple/demo-pkg/", {"Accept": JSON, "Accept-Encoding": "gzip"}),
    ("/simple/demo-pkg/", {"Accept": "text/html", "Accept-Encoding": "gzip"}),
    ("/packages/", {}),
    ("/packages/", {"Accept-Encoding": "gzip"}),
    ("/pypi/demo-pkg/json", {}),
    ("/pypi/demo-pkg/json", {"Accept-Encoding": "gzip"}),
    ("/pypi/demo-pkg/1.0/json", {}),
    ("/demo-pkg/json", {}),
    ("/+simple/demo-pkg/", {}),
]


@pytest.mark.parametrize(("path", "headers"), PAGES)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("way", ["fast", "routes"])
def test_pages_are_revalidated_before_each_use(
    pkgdir: Path, path: str, headers: dict[str, str], method: str, way: str
) -> None:
    app = apps(pkgdir)[way]
    etag = revalidates(app, path, method, **headers)
    if "Accept-Encoding" in headers:
        # The gzip variant has an ETag of its own (another representation), which the plain
        # answer does not match.
        plain = {k: v for k, v in headers.items() if k != "Accept-Encoding"}
        assert etag != app.request(path, method=method, headers=plain).headers["ETag"]
        assert etag.endswith('-gz"')  # (webtest takes Content-Encoding off as it unzips)


def test_the_fast_path_answers_the_page_requests_it_takes(pkgdir: Path) -> None:
    # (So that the "fast" cases above are the fast path's answers, not the routes'.)
    fast = apps(pkgdir)["fast"].app.fast
    for accept in ("text/html", JSON):
        environ = {
            "REQUEST_METHOD": "HEAD",
            "QUERY_STRING": "",
            "PATH_INFO": "/simple/demo-pkg/",
            "HTTP_ACCEPT": accept,
            "HTTP_ACCEPT_ENCODING": "gzip",
        }
        status, headers, _ = fast(environ)
        assert status == 200 and ("Cache-Control", REVALIDATE) in headers
        etag = dict(headers)["ETag"]
        status, headers, _ = fast({**environ, "HTTP_IF_NONE_MATCH": etag})
        assert status == 304 and ("Cache-Control", REVALIDATE) in headers


def test_a_claimed_project_page_is_revalidated_too(tmp_path: Path) -> None:
    # Hosted before, no files now: an empty page, never the fallback's redirect.
    names = HostedNames([str(tmp_path)])
    names.add({"gone"})
    names.reload()
    settings = Settings(roots=(str(tmp_path),), fallback_url="https://pypi.org/simple/")
    app = webtest.TestApp(create_app(settings, scan(tmp_path), hosted=names))
    revalidates(app, "/simple/gone/", "GET", Accept=JSON)
    assert "no-store" in app.get("/simple/other/", status=303).headers["Cache-Control"]


def test_a_new_upload_is_seen_by_the_next_revalidation(root: Path, htpasswd: Path) -> None:
    app, _ = make_app(root, htpasswd, disable_fallback=True)
    dist = root.parent / "dist"
    post(app, upload_form(make_wheel(dist, "demo-pkg", "1.0")), status=200)
    held = {
        (path, accept): revalidates(app, path, "GET", Accept=accept)
        for path in ("/simple/demo-pkg/", "/simple/", "/pypi/demo-pkg/json", "/packages/")
        for accept in ("text/html", JSON)
        if accept == "text/html" or path.startswith("/simple/")
    }
    post(app, upload_form(make_wheel(dist, "demo-pkg", "2.0")), status=200)
    post(app, upload_form(make_wheel(dist, "other", "1.0")), status=200)
    for (path, accept), etag in held.items():
        res = app.get(path, headers={"Accept": accept, "If-None-Match": etag})
        assert res.status_int == 200, (path, accept)  # not a 304: the page changed
        assert res.headers["ETag"] != etag
        assert b"2.0" in res.body or b"other" in res.body, (path, accept)


# -- files: a year, unless --overwrite ------------------------------------------------------------
def _with_companions(root: Path) -> Path:
    make_wheel(root, "demo-pkg", "1.0")
    (root / "demo_pkg-1.0-py3-none-any.whl.asc").write_bytes(b"-----BEGIN PGP SIGNATURE-----\n")
    big_wheel(root, "large", "1.0", 600 * 1024)  # over SMALL_FILE: streamed by the route
    return root


FILES = [
    WHEEL,  # small: the fast path answers it
    WHEEL + ".metadata",
    WHEEL + ".asc",
    "/packages/large-1.0-py3-none-any.whl",
]


@pytest.mark.parametrize(
    ("settings_kw", "expected"),
    [
        ({}, FOREVER),
        ({"overwrite": True}, REVALIDATE),
        ({"cache_control": 86400}, "public, max-age=86400"),
        ({"cache_control": 600, "overwrite": True}, "public, max-age=600"),  # as asked
    ],
)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("way", ["fast", "routes"])
def test_files_say_how_long_they_may_be_kept(
    tmp_path: Path, settings_kw: dict[str, Any], expected: str, method: str, way: str
) -> None:
    app = apps(_with_companions(tmp_path), **settings_kw)[way]
    for path in FILES:
        res = app.request(path, method=method)
        assert res.status_int == 200, path
        assert res.headers["Cache-Control"] == expected, path
        assert "immutable" not in expected or "overwrite" not in settings_kw
        etag = res.headers["ETag"]
        again = app.request(path, method=method, headers={"If-None-Match": etag})
        assert again.status_int == 304, path
        assert again.headers["Cache-Control"] == expected, path
        assert again.headers["ETag"] == etag


def test_an_overwritten_file_gets_a_new_etag(root: Path, htpasswd: Path) -> None:
    app, _ = make_app(root, htpasswd, overwrite=True)
    dist = root.parent / "dist"
    post(app, upload_form(make_wheel(dist, "demo-pkg", "1.0", summary="one")), status=200)
    first = app.get(WHEEL)
    assert first.headers["Cache-Control"] == REVALIDATE
    post(app, upload_form(make_wheel(dist, "demo-pkg", "1.0", summary="two")), status=200)
    res = app.get(WHEEL, headers={"If-None-Match": first.headers["ETag"]})
    assert res.status_int == 200  # the client's copy is stale: the new bytes, not a 304
    assert res.body != first.body and res.headers["ETag"] != first.headers["ETag"]


def test_a_range_that_cannot_be_satisfied_is_not_kept(tmp_path: Path) -> None:
    app = apps(_with_companions(tmp_path))["routes"]
    res = app.get(WHEEL, headers={"Range": "bytes=99999999-"}, status=416)
    assert res.headers["Cache-Control"] == "no-store"


# -- redirects -------------------------------------------------------------------------------------
def test_the_redirect_to_the_fallback_is_never_stored(pkgdir: Path) -> None:
    app = apps(pkgdir, disable_fallback=False, fallback_url="https://pypi.org/simple/")["fast"]
    for path in ("/simple/not-here/", "/simple/Not.Here/"):
        res = app.get(path, status=303)
        assert res.headers["Location"] == "https://pypi.org/simple/not-here/"
        # A name not hosted today may be uploaded in a minute: a kept redirect would send
        # installs upstream (dependency confusion).
        assert res.headers["Cache-Control"] == "no-store"


def test_canonical_redirects_are_permanent_facts(pkgdir: Path) -> None:
    # A 301 to the canonical URL on this same index stays true whatever is uploaded: it says
    # nothing about caching (pip's HTTP cache keeps 301s anyway).
    app = apps(pkgdir)["fast"]
    for path in ("/simple/Demo-Pkg/", "/simple/demo-pkg", "/demo-pkg/"):
        res = app.get(path, status=301)
        assert "Cache-Control" not in res.headers
        assert res.headers["Location"].endswith("demo-pkg/")


# -- errors, operators' endpoints, pages for people ---------------------------------------------
def test_errors_are_never_stored(pkgdir: Path, htpasswd: Path) -> None:
    app = apps(pkgdir)["fast"]
    for path, headers, status in (
        ("/simple/not-here/", {}, 404),  # may be uploaded in a minute
        ("/packages/nothing.whl", {}, 404),
        ("/pypi/not-here/json", {}, 404),
        ("/simple/demo-pkg/", {"Accept": "image/png"}, 406),
        ("/no/such/route/here", {}, 404),  # bottle's own error
    ):
        res = app.get(path, headers=headers, status=status)
        assert res.headers["Cache-Control"] == "no-store", path
    closed = apps(pkgdir, password_file=str(htpasswd), authenticate=frozenset({"list"}))["fast"]
    res = closed.get("/simple/demo-pkg/", status=401)
    assert res.headers["Cache-Control"] == "no-store"


def test_health_and_metrics_are_never_stored(pkgdir: Path) -> None:
    app = apps(pkgdir)["fast"]
    for path in ("/health", "/metrics"):
        assert app.get(path).headers["Cache-Control"] == "no-store", path


def test_pages_for_people_are_asked_for_again(pkgdir: Path) -> None:
    app = apps(pkgdir)["fast"]
    for path in ("/", "/-/projects/", "/project/demo-pkg/", "/project/demo-pkg/1.0/"):
        assert app.get(path).headers["Cache-Control"] == "no-cache", path
    res = app.get("/project/not-here/", status=404)
    assert res.headers["Cache-Control"] == "no-store"
    assert "text/html" in res.headers["Content-Type"]
