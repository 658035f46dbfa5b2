"""The WSGI app through webtest: every route a client reads."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from builders import make_wheel
from conftest import OneWheel, make_testapp, scan
from webtest import TestApp

from pkgserver.app import create_app
from pkgserver.config import Settings
from pkgserver.render import JSON_V1

WSGIApp = Callable[..., Iterable[bytes]]  # what raw_request calls: the app under webtest
PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"


# -- /simple/ ---------------------------------------------------------------------------------
def test_simple_index_lists_each_project_once(testapp: TestApp) -> None:
    res = testapp.get("/simple/")
    assert res.status_int == 200
    assert res.headers["Content-Type"] == "text/html; charset=utf-8"
    assert res.headers["Vary"] == "Accept, Accept-Encoding"
    assert res.text.count('href="demo-pkg/"') == 1
    assert 'href="foo-2fa/"' in res.text
    assert 'href="helper/"' in res.text
    assert '<meta name="pypi:repository-version" content="1.4">' in res.text


def test_simple_index_json(testapp: TestApp) -> None:
    res = testapp.get("/simple/", headers={"Accept": PIP_ACCEPT})
    assert res.headers["Content-Type"] == JSON_V1
    doc = res.json
    assert doc["meta"]["api-version"] == "1.4"
    assert sorted(p["name"].lower().replace("_", "-") for p in doc["projects"]) == [
        "demo-pkg",
        "foo-2fa",
        "helper",
    ]


def test_unacceptable_accept_gets_406(testapp: TestApp) -> None:
    res = testapp.get("/simple/", headers={"Accept": "application/json"}, status=406)
    assert "text/html" in res.text
    testapp.get("/simple/demo-pkg/", headers={"Accept": "image/png"}, status=406)


def test_format_query_overrides_accept(testapp: TestApp) -> None:
    res = testapp.get(
        "/simple/demo-pkg/?format=application/vnd.pypi.simple.v1%2Bjson",
        headers={"Accept": "text/html"},
    )
    assert res.headers["Content-Type"] == JSON_V1


def test_pages_revalidate_with_etag(testapp: TestApp) -> None:
    for url in ("/simple/", "/simple/demo-pkg/"):
        first = testapp.get(url)
        etag = first.headers["ETag"]
        again = testapp.get(url, headers={"If-None-Match": etag}, status=304)
        assert again.body == b""
        # A JSON rendering has its own ETag.
        other = testapp.get(url, headers={"Accept": PIP_ACCEPT, "If-None-Match": etag})
        assert other.status_int == 200


# -- /simple/<project>/ ---------------------------------------------------------------------------
def test_project_page_lists_files_oldest_first_with_hashes(testapp: TestApp, pkgdir: Path) -> None:
    res = testapp.get("/simple/demo-pkg/")
    names = [a.text for a in res.html.find_all("a")]
    assert names == [
        "demo_pkg-1.0-py3-none-any.whl",
        "demo_pkg-1.2-py3-none-any.whl",
        "demo_pkg-1.10-py3-none-any.whl",
        "demo_pkg-1.10.tar.gz",
    ]
    for a in res.html.find_all("a"):
        digest = hashlib.sha256((pkgdir / a.text).read_bytes()).hexdigest()
        assert a["href"] == f"../../packages/{a.text}#sha256={digest}"
    first = res.html.find_all("a")[0]
    assert first["data-requires-python"] == ">=3.8"


def test_sdist_metadata_is_advertised_only_for_metadata_2_2(tmp_path: Path) -> None:
    from builders import make_sdist

    make_sdist(tmp_path, "old", "1.0", metadata_version="2.1")
    make_sdist(tmp_path, "new", "1.0", metadata_version="2.2")
    app, _ = make_testapp([tmp_path])
    assert "data-core-metadata" not in app.get("/simple/old/").text
    assert "data-core-metadata" in app.get("/simple/new/").text


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("/simple", "simple/"),
        ("/simple/Demo_Pkg/", "../demo-pkg/"),
        ("/simple/DEMO.pkg/", "../demo-pkg/"),
        ("/simple/demo-pkg", "demo-pkg/"),
        ("/simple/Demo_Pkg", "demo-pkg/"),
        ("/demo-pkg/", "../simple/demo-pkg/"),
        ("/Demo_Pkg", "simple/demo-pkg/"),
    ],
)
def test_non_canonical_urls_get_a_relative_301(testapp: TestApp, url: str, location: str) -> None:
    res = testapp.get(url, status=301)
    assert res.headers["Location"].endswith(location)
    # webtest makes Location absolute against the request URL; it must land on the canonical page.
    assert res.follow().status_int in (200, 301)


def test_redirects_resolve_to_the_canonical_page(testapp: TestApp) -> None:
    res = testapp.get("/Demo_Pkg/").maybe_follow()
    assert res.request.path == "/simple/demo-pkg/"
    assert res.status_int == 200


def test_server_base_url_makes_redirects_absolute(pkgdir: Path) -> None:
    app, _ = make_testapp([pkgdir], server_base_url="https://example.test/pypi")
    res = app.get("/simple/Demo_Pkg/", status=301)
    assert res.headers["Location"] == "https://example.test/pypi/simple/demo-pkg/"


def test_projects_not_hosted_redirect_to_the_fallback(testapp: TestApp) -> None:
    res = testapp.get("/simple/Requests_Toolbelt/", status=303)
    assert res.headers["Location"] == "https://pypi.org/simple/requests-toolbelt/"


def test_custom_fallback_url(pkgdir: Path) -> None:
    app, _ = make_testapp([pkgdir], fallback_url="http://127.0.0.1:9/simple")
    res = app.get("/simple/requests/", status=303)
    assert res.headers["Location"] == "http://127.0.0.1:9/simple/requests/"


def test_hosted_projects_are_never_redirected_even_by_other_spellings(testapp: TestApp) -> None:
    for spelling in ("demo-pkg", "Demo_Pkg", "demo.pkg", "DEMO--PKG"):
        res = testapp.get(f"/simple/{spelling}/", expect_errors=True)
        assert res.status_int in (200, 301)
        if res.status_int == 301:
            assert "pypi.org" not in res.headers["Location"]


def test_disabled_fallback_gives_404(pkgdir: Path) -> None:
    app, _ = make_testapp([pkgdir], disable_fallback=True)
    app.get("/simple/requests/", status=404)


@pytest.mark.parametrize("name", ["-bad-", "a%0d%0aSet-Cookie:x=1", "a b", "%2e%2e"])
def test_invalid_project_names_are_not_redirected(testapp: TestApp, name: str) -> None:
    res = testapp.get(f"/simple/{name}/", expect_errors=True)
    assert res.status_int == 404
    assert "Set-Cookie" not in res.headers


# -- files -----------------------------------------------------------------------------------------
def test_download_has_type_etag_and_no_gzip_encoding(testapp: TestApp, pkgdir: Path) -> None:
    whl = testapp.get("/packages/demo_pkg-1.0-py3-none-any.whl")
    data = (pkgdir / "demo_pkg-1.0-py3-none-any.whl").read_bytes()
    assert whl.body == data
    assert whl.headers["Content-Type"] == "application/octet-stream"
    assert whl.headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert int(whl.headers["Content-Length"]) == len(data)
    sdist = testapp.get("/packages/demo_pkg-1.10.tar.gz")
    assert sdist.headers["Content-Type"] == "application/x-tar"
    assert "Content-Encoding" not in sdist.headers
    assert sdist.body == (pkgdir / "demo_pkg-1.10.tar.gz").read_bytes()


def test_download_conditional_and_range_requests(testapp: TestApp, pkgdir: Path) -> None:
    url = "/packages/demo_pkg-1.0-py3-none-any.whl"
    data = (pkgdir / "demo_pkg-1.0-py3-none-any.whl").read_bytes()
    first = testapp.get(url)
    testapp.get(url, headers={"If-None-Match": first.headers["ETag"]}, status=304)
    testapp.get(url, headers={"If-None-Match": 'W/"x", ' + first.headers["ETag"]}, status=304)
    testapp.get(url, headers={"If-Modified-Since": first.headers["Last-Modified"]}, status=304)
    part = testapp.get(url, headers={"Range": "bytes=10-19"}, status=206)
    assert part.body == data[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    tail = testapp.get(url, headers={"Range": "bytes=-5"}, status=206)
    assert tail.body == data[-5:]
    testapp.get(url, headers={"Range": f"bytes={len(data) + 10}-"}, status=416)
    stale = testapp.get(url, headers={"Range": "bytes=0-3", "If-Range": '"other"'}, status=200)
    assert stale.body == data
    head = testapp.head(url)
    assert head.body == b""
    assert int(head.headers["Content-Length"]) == len(data)


def test_files_in_subfolders_are_served_by_path_and_by_name(testapp: TestApp, pkgdir: Path) -> None:
    page = testapp.get("/simple/helper/")
    assert 'href="../../packages/helper/helper-1.0-py3-none-any.whl#sha256=' in page.text
    data = (pkgdir / "helper" / "helper-1.0-py3-none-any.whl").read_bytes()
    assert testapp.get("/packages/helper/helper-1.0-py3-none-any.whl").body == data
    assert testapp.get("/packages/helper-1.0-py3-none-any.whl").body == data


@pytest.mark.parametrize(
    "path",
    [
        "/packages/../packages/demo_pkg-1.0-py3-none-any.whl",
        "/packages/%2e%2e/%2e%2e/etc/passwd",
        "/packages/..%2f..%2fetc%2fpasswd",
        "/packages/helper%5chelper-1.0-py3-none-any.whl",
        "/packages/helper\\helper-1.0-py3-none-any.whl",
        "/packages//etc/passwd",
        "/packages/%2fetc%2fpasswd",
        "/packages/README.txt",
    ],
)
def test_paths_never_leave_the_catalog(testapp: TestApp, path: str) -> None:
    res = testapp.get(path, expect_errors=True)
    assert res.status_int == 404, (path, res.status)
    assert b"root:" not in res.body


def test_core_metadata_file_matches_the_advertised_hash(testapp: TestApp) -> None:
    doc = testapp.get("/simple/demo-pkg/", headers={"Accept": PIP_ACCEPT}).json
    for f in doc["files"]:
        if not f["core-metadata"]:
            continue
        meta = testapp.get(f"/packages/{f['filename']}.metadata")
        assert hashlib.sha256(meta.body).hexdigest() == f["core-metadata"]["sha256"]
        assert meta.body.startswith(b"Metadata-Version:")
    # An sdist with Metadata-Version 2.2 has servable metadata too.
    sdist = next(f for f in doc["files"] if f["filename"].endswith(".tar.gz"))
    assert sdist["core-metadata"]


def test_metadata_of_a_file_without_servable_metadata_is_404(tmp_path: Path) -> None:
    from builders import make_sdist

    make_sdist(tmp_path, "old", "1.0", metadata_version="2.1")
    app, _ = make_testapp([tmp_path])
    app.get("/packages/old-1.0.tar.gz.metadata", status=404)


# -- warehouse JSON ------------------------------------------------------------------------------
def test_json_api_describes_the_latest_release(testapp: TestApp) -> None:
    doc = testapp.get("/pypi/Demo_Pkg/json").json
    assert doc["info"]["version"] == "1.10"
    assert doc["info"]["summary"] == "A demo, newer"
    assert doc["info"]["requires_dist"] == ["helper>=1"]
    assert sorted(doc["releases"]) == ["1.0", "1.10", "1.2"]
    assert {u["filename"] for u in doc["urls"]} == {
        "demo_pkg-1.10-py3-none-any.whl",
        "demo_pkg-1.10.tar.gz",
    }
    url = doc["urls"][0]
    assert url["url"].startswith("http://localhost:80/packages/")
    assert set(url) >= {"digests", "size", "upload_time_iso_8601", "requires_python", "yanked"}


def test_json_api_for_one_version(testapp: TestApp) -> None:
    doc = testapp.get("/pypi/demo-pkg/1.0/json").json
    assert doc["info"]["version"] == "1.0"
    assert doc["info"]["requires_python"] == ">=3.8"
    testapp.get("/pypi/demo-pkg/9.9/json", status=404)
    testapp.get("/pypi/nothing-here/json", status=404)


# -- XML-RPC search -----------------------------------------------------------------------------


# -- people and probes -----------------------------------------------------------------------------
def test_welcome_page_says_how_to_use_the_index(testapp: TestApp) -> None:
    res = testapp.get("/")
    assert "pip install --index-url http://localhost:80/simple/" in res.text
    assert "index-servers =\n    corp" in res.text
    assert '<strong id="count-projects">3</strong> projects' in res.text


def test_welcome_file_replaces_the_page(pkgdir: Path, tmp_path: Path) -> None:
    page = tmp_path / "welcome.html"
    page.write_text("<h1>Corp index at {{URL}}: {{NUMPROJECTS}} projects</h1>")
    app, _ = make_testapp([pkgdir], welcome_file=str(page))
    assert app.get("/").text == "<h1>Corp index at http://localhost:80/: 3 projects</h1>"


def test_health_answers_200(testapp: TestApp) -> None:
    res = testapp.get("/health")
    assert res.text == "Ok"  # pypiserver's body
    assert res.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_health_answers_503_until_the_first_scan_is_listed(pkgdir: Path) -> None:
    state = {"waiting": "starting: 1 large file(s) found at start are still being hashed"}
    app = TestApp(
        create_app(
            Settings(roots=(str(pkgdir),)), scan(pkgdir), ready=lambda: state["waiting"] or None
        )
    )
    res = app.get("/health", status=503)
    assert res.headers["Retry-After"] == "1" and "still being hashed" in res.text
    state["waiting"] = ""
    assert app.get("/health").text == "Ok"


def test_custom_health_endpoint(pkgdir: Path) -> None:
    app, _ = make_testapp([pkgdir], health_endpoint="/-/ready")
    assert app.get("/-/ready").status_int == 200


def test_spoofed_host_is_escaped_and_cannot_steer_redirects(testapp: TestApp) -> None:
    res = testapp.get("/", headers={"Host": 'evil"><script>x</script>'})
    assert "<script>x" not in res.text
    redirect = testapp.get("/simple/Demo_Pkg/", headers={"Host": "evil.example"}, status=301)
    assert "evil" not in redirect.headers["Location"]


# -- access control on the read side ---------------------------------------------------------------
@pytest.fixture
def protected(pkgdir: Path, tmp_path: Path) -> TestApp:
    from passlib.apache import HtpasswdFile

    ht = HtpasswdFile(str(tmp_path / "htpasswd"), new=True, default_scheme="bcrypt")
    ht.set_password("alice", "s3cret")
    ht.save()
    app, _ = make_testapp(
        [pkgdir],
        password_file=str(tmp_path / "htpasswd"),
        authenticate=frozenset({"list", "download"}),
    )
    return app


def test_protected_listing_needs_credentials(protected: TestApp) -> None:
    res = protected.get("/simple/", status=401)
    assert res.headers["WWW-Authenticate"] == 'Basic realm="pkgserver"'
    protected.set_authorization(("Basic", ("alice", "wrong")))
    protected.get("/simple/", status=403)
    protected.get("/packages/demo_pkg-1.0-py3-none-any.whl", status=403)
    protected.set_authorization(("Basic", ("alice", "s3cret")))
    assert protected.get("/simple/").status_int == 200
    assert protected.get("/packages/demo_pkg-1.0-py3-none-any.whl").status_int == 200
    assert protected.get("/pypi/demo-pkg/json").status_int == 200


def test_health_is_never_protected(protected: TestApp) -> None:
    assert protected.get("/health").status_int == 200


@pytest.mark.parametrize(
    "header",
    [
        "Basic",
        "Basic !!!notbase64",
        "Basic bm9jb2xvbg==",
        "Bearer abc",
        "Basic //79",
        "Digest x=y",
        "Basic " + "A" * 20000,
    ],
)
def test_malformed_authorization_headers_get_401_not_500(protected: TestApp, header: str) -> None:
    res = protected.get("/simple/", headers={"Authorization": header}, expect_errors=True)
    assert res.status_int in (401, 403)


def test_json_project_page_via_webtest_is_valid(testapp: TestApp) -> None:
    res = testapp.get("/simple/demo-pkg/", headers={"Accept": PIP_ACCEPT})
    doc = json.loads(res.body)
    assert doc["name"] == "demo-pkg"
    assert all(f["url"].startswith("../../packages/") for f in doc["files"])


def raw_get(app: WSGIApp, path: str, **headers: str) -> tuple[str, dict[str, str], bytes]:
    """Call the WSGI app directly: webtest would undo Content-Encoding."""
    return raw_request(app, "GET", path, **headers)


def test_pages_are_gzipped_for_clients_that_accept_it(pkgdir: Path) -> None:
    import gzip

    for i in range(60):  # an index large enough to be worth compressing
        make_wheel(pkgdir, f"extra-project-{i}", "1.0")
    app = make_testapp([pkgdir])[0].app
    _, plain_headers, plain = raw_get(app, "/simple/")
    status, headers, zipped = raw_get(app, "/simple/", accept_encoding="gzip, deflate")
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped) == plain
    assert len(zipped) < len(plain) / 3
    assert headers["Etag"] != plain_headers["Etag"]  # bottle spells it so
    assert "Accept-Encoding" in headers["Vary"]
    status, _, _ = raw_get(app, "/simple/", accept_encoding="gzip", if_none_match=headers["Etag"])
    assert status.startswith("304")
    _, headers, _ = raw_get(app, "/simple/", accept_encoding="gzip;q=0, identity")
    assert "Content-Encoding" not in headers
    # Files are never compressed on the fly: their bytes must match their hashes.
    _, headers, _ = raw_get(app, "/packages/demo_pkg-1.0-py3-none-any.whl", accept_encoding="gzip")
    assert "Content-Encoding" not in headers


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/simple/demo-pkg/", {}),
        ("GET", "/simple/demo-pkg/", {"accept": PIP_ACCEPT}),
        ("GET", "/simple/demo-pkg/", {"accept": "text/html", "accept_encoding": "gzip"}),
        ("HEAD", "/simple/demo-pkg/", {}),
        ("GET", "/simple/demo-pkg/", {"accept": "image/png"}),
        ("GET", "/simple/Demo_Pkg/", {}),
        ("GET", "/simple/unknown/", {}),
        ("GET", "/packages/demo_pkg-1.0-py3-none-any.whl", {}),
        ("HEAD", "/packages/demo_pkg-1.0-py3-none-any.whl", {}),
        ("GET", "/packages/helper/helper-1.0-py3-none-any.whl", {}),
        ("GET", "/packages/helper-1.0-py3-none-any.whl", {}),
    ],
)
def test_the_fast_path_answers_exactly_as_the_routes_do(
    pkgdir: Path, method: str, path: str, headers: dict[str, str]
) -> None:
    app = make_testapp([pkgdir])[0].app
    fast = raw_request(app, method, path, **headers)
    app.__dict__["fast"] = None  # bottle refuses to rebind an attribute
    slow = raw_request(app, method, path, **headers)
    assert fast[0] == slow[0]
    ignore = {"Content-Length"} if method == "HEAD" else set()
    assert {k.lower(): v for k, v in fast[1].items() if k not in ignore} == {
        k.lower(): v for k, v in slow[1].items() if k not in ignore
    }
    assert fast[2] == slow[2]


def test_the_fast_path_never_serves_a_changed_file(pkgdir: Path) -> None:
    app = make_testapp([pkgdir])[0].app
    with open(pkgdir / "demo_pkg-1.0-py3-none-any.whl", "ab") as fh:
        fh.write(b"x")
    status, _, _ = raw_request(app, "GET", "/packages/demo_pkg-1.0-py3-none-any.whl")
    assert status.startswith("404")


def test_protected_servers_never_take_the_fast_path(protected: TestApp) -> None:
    status, _, _ = raw_request(protected.app, "GET", "/simple/demo-pkg/")
    assert status.startswith("401")
    status, _, _ = raw_request(protected.app, "GET", "/packages/demo_pkg-1.0-py3-none-any.whl")
    assert status.startswith("401")


def raw_request(
    app: WSGIApp, method: str, path: str, **headers: str
) -> tuple[str, dict[str, str], bytes]:
    import io

    env = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "x",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "SCRIPT_NAME": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.errors": io.StringIO(),
    }
    env.update({"HTTP_" + k.upper(): v for k, v in headers.items()})
    seen: list[tuple[str, list[tuple[str, str]]]] = []
    out = app(env, lambda status, hdrs, exc=None: seen.append((status, hdrs)))
    body = b"".join(out)
    if hasattr(out, "close"):
        out.close()
    return seen[0][0], dict(seen[0][1]), body


def test_the_fast_path_revalidates_files_by_etag(pkgdir: Path) -> None:
    app = make_testapp([pkgdir])[0].app
    _, headers, _ = raw_request(app, "GET", "/packages/demo_pkg-1.0-py3-none-any.whl")
    etag = headers["ETag"]
    status, headers, body = raw_request(
        app, "GET", "/packages/demo_pkg-1.0-py3-none-any.whl", if_none_match=etag
    )
    assert status.startswith("304") and body == b"" and headers["ETag"] == etag
    status, _, body = raw_request(
        app, "GET", "/packages/demo_pkg-1.0-py3-none-any.whl", if_none_match='"other"'
    )
    assert status.startswith("200") and body


# -- odd requests and files -----------------------------------------------------------------
def test_signature_links_out_of_the_directory_are_not_followed(one_wheel: OneWheel) -> None:
    app, root, whl, _ = one_wheel
    os.symlink("/etc/passwd", root / (whl.name + ".asc"))
    res = app.get(f"/packages/{whl.name}.asc", status=404)
    assert b"root:" not in res.body


def test_a_fifo_signature_cannot_hang_a_worker(one_wheel: OneWheel) -> None:
    app, root, whl, _ = one_wheel
    os.mkfifo(root / (whl.name + ".asc"))
    done = threading.Event()

    def fetch() -> None:
        app.get(f"/packages/{whl.name}.asc", status=404)
        done.set()

    threading.Thread(target=fetch, daemon=True).start()
    assert done.wait(5), "a request for a FIFO blocked"


def test_a_file_changed_behind_the_catalog_is_not_served_under_its_old_hash(
    one_wheel: OneWheel,
) -> None:
    app, _root, whl, stale = one_wheel
    old_hash = hashlib.sha256(whl.read_bytes()).hexdigest()
    assert old_hash in app.get("/simple/base/").text
    with open(whl, "ab") as fh:  # e.g. written through a hard link the watcher does not see
        fh.write(b"tampered")
    res = app.get(f"/packages/{whl.name}", status=404)
    assert "changed on disk" in res.text
    assert stale == [str(whl)]


@pytest.mark.parametrize(
    "header",
    [
        "Authorization",
        "Accept",
        "If-None-Match",
        "If-Modified-Since",
        "Range",
        "If-Range",
        "Origin",
    ],
)
def test_non_utf8_header_bytes_never_cause_a_500(one_wheel: OneWheel, header: str) -> None:
    app, _, whl, _ = one_wheel
    for path in ("/simple/", "/simple/base/", f"/packages/{whl.name}", "/pypi/base/json"):
        env_key = "HTTP_" + header.upper().replace("-", "_")
        res = app.get(path, extra_environ={env_key: "x\xff\xfe"}, expect_errors=True)
        assert res.status_int < 500, (path, header, res.status)


def test_absurd_range_numbers_are_ignored(one_wheel: OneWheel) -> None:
    app, _, whl, _ = one_wheel
    res = app.get(
        f"/packages/{whl.name}", headers={"Range": "bytes=" + "9" * 5000 + "-"}, expect_errors=True
    )
    assert res.status_int == 200


def test_format_with_a_literal_plus_is_understood(one_wheel: OneWheel) -> None:
    app, _, _, _ = one_wheel
    res = app.get("/simple/base/?format=application/vnd.pypi.simple.v1+json")
    assert res.headers["Content-Type"] == "application/vnd.pypi.simple.v1+json"
    res = app.get("/simple/?format=application/vnd.pypi.simple.latest+json")
    assert res.headers["Content-Type"] == "application/vnd.pypi.simple.v1+json"


def test_error_answers_on_simple_pages_vary_on_accept(one_wheel: OneWheel) -> None:
    app, _, _, _ = one_wheel
    assert (
        app.get("/simple/", headers={"Accept": "image/png"}, status=406).headers["Vary"] == "Accept"
    )
    assert app.get("/simple/nothing/", status=404).headers["Vary"] == "Accept"


@pytest.mark.parametrize("path", ["/simple/%ff/", "/packages/%ffbase-1.0-py3-none-any.whl", "/%ff"])
def test_paths_that_are_not_utf8_get_400(one_wheel: OneWheel, path: str) -> None:
    app, _, _, _ = one_wheel
    app.get(path, status=400)


def test_forwarded_headers_steer_nothing(tmp_path: Path) -> None:
    # No proxy is trusted unless configured: X-Forwarded-* and Forwarded must not change a
    # redirect or an absolute URL (waitress's clearing is done by the app itself now).
    make_wheel(tmp_path, "demo-pkg", "1.0")
    app, _ = make_testapp([tmp_path])
    spoof = {
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Port": "8443",
        "Forwarded": "host=evil.example;proto=https",
        "Host": "index.corp:8080",
    }
    res = app.get("/simple/Demo_Pkg/", headers=spoof, status=301)
    assert "evil" not in res.headers["Location"] and "https" not in res.headers["Location"]
    body = app.get("/pypi/demo-pkg/json", headers=spoof).json
    assert body["urls"][0]["url"].startswith("http://index.corp:8080/packages/")
    assert b"evil" not in app.get("/", headers=spoof).body


def test_redirects_behind_a_base_url_are_quoted(pkgdir: Path) -> None:
    app, _ = make_testapp([pkgdir], server_base_url="https://pkgs.example.com/")
    res = app.get("/project/demo-pkg/1%0d%0ab", status=301)
    assert res.headers["Location"] == "https://pkgs.example.com/project/demo-pkg/1%0D%0Ab/"
    res = app.get("/project/demo-pkg/x%3Fq=1%23f", status=301)
    assert "?" not in res.headers["Location"] and "#" not in res.headers["Location"]
