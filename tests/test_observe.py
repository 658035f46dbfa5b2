"""/metrics and the access log: values that move with the requests made, formats that parse,
and credentials that never reach a log line."""

from __future__ import annotations

import base64
import io
import json
import re
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from builders import make_wheel
from conftest import WriteHtpasswd, make_testapp, scan
from prometheus_client.parser import text_string_to_metric_families
from server import running_server
from webtest import TestApp

from pkgserver.app import create_app
from pkgserver.auth import Authenticator
from pkgserver.config import Settings
from pkgserver.observe import ACCESS_LOGGER, AccessLog, Observer, route_of, upload_outcome

PASSWORD = "correct horse battery"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition, keyed by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": "Basic " + token}


# -- route names stay few ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "ctype", "route"),
    [
        ("GET", "/simple/", "", "simple_index"),
        ("GET", "/simple/demo/", "", "simple_project"),
        ("GET", "/packages/demo-1.0.whl", "", "file"),
        ("GET", "/packages/demo-1.0.whl.metadata", "", "metadata"),
        ("GET", "/packages/demo-1.0.whl.asc", "", "signature"),
        ("GET", "/pypi/demo/json", "", "json_api"),
        ("GET", "/pypi/demo/1.0/json", "", "json_api"),
        ("GET", "/", "", "home"),
        ("GET", "/project/demo/", "", "web_project"),
        ("GET", "/-/projects/", "", "web_projects"),
        ("GET", "/-/static/style.css", "", "static"),
        ("GET", "/metrics", "", "metrics"),
        ("GET", "/health", "", "health"),
        ("GET", "/demo/", "", "other"),
        ("GET", "/anything/at/all/%ff", "", "other"),
        ("POST", "/", "multipart/form-data; boundary=x", "upload"),
        ("POST", "/legacy/", "multipart/form-data; boundary=x", "upload"),
        ("POST", "/", "text/xml", "xmlrpc"),
        ("POST", "/RPC2", "text/xml", "xmlrpc"),
        ("POST", "/simple/", "", "other"),
    ],
)
def test_every_request_gets_one_of_a_few_route_names(
    method: str, path: str, ctype: str, route: str
) -> None:
    assert route_of(method, path, ctype) == route


@pytest.mark.parametrize(
    ("status", "message", "outcome"),
    [
        (200, "OK: demo-1.0.whl published", "published"),
        (200, "demo-1.0.whl already exists with identical content", "exists"),
        (409, "File already exists", "conflict"),
        (401, "authentication required", "denied"),
        (403, "invalid credentials", "denied"),
        (413, "too large", "too_large"),
        (400, "bad", "invalid"),
        (507, "disk full", "error"),
    ],
)
def test_upload_outcomes(status: int, message: str, outcome: str) -> None:
    assert upload_outcome(status, message) == outcome


# -- metrics through the app -------------------------------------------------------------------
def test_metrics_move_with_the_requests_made(pkgdir: Path) -> None:
    app, catalog = make_testapp([pkgdir], disable_fallback=True)
    before = app.get("/metrics").text
    assert value(before, "pkgserver_projects") == len(catalog.snapshot.projects) == 3
    assert value(before, "pkgserver_files") == catalog.snapshot.file_count
    assert value(before, "pkgserver_files_bytes") == sum(
        f.size for f in catalog.snapshot.files.values()
    )
    page = app.get("/simple/demo-pkg/")
    app.get("/simple/demo-pkg/")
    app.get("/simple/nope-not-here/", status=404)
    wheel = next(f for f in catalog.snapshot.files.values() if f.filename.endswith(".whl"))
    app.get("/packages/" + wheel.relpath)
    after = app.get("/metrics").text
    key = {"route": "simple_project", "method": "GET"}
    assert value(after, "pkgserver_requests_total", status="200", **key) == 2
    assert value(after, "pkgserver_requests_total", status="404", **key) == 1
    assert value(after, "pkgserver_requests_total", route="file", method="GET", status="200") == 1
    assert (
        value(after, "pkgserver_request_duration_seconds_count", route="simple_project")
        == value(before, "pkgserver_request_duration_seconds_count", route="simple_project") + 3
    )
    sent = value(after, "pkgserver_response_bytes_total", route="simple_project")
    assert sent >= 2 * len(page.body)
    assert value(after, "pkgserver_response_bytes_total", route="file") == wheel.size
    # The scrape before this one is counted too.
    assert (
        value(after, "pkgserver_requests_total", route="metrics", method="GET", status="200") == 1
    )


def test_catalog_gauges_follow_the_catalog(pkgdir: Path, tmp_path: Path) -> None:
    app, catalog = make_testapp([pkgdir])
    make_wheel(tmp_path, "newcomer", "1.0")
    from pkgserver.scan import describe

    path = tmp_path / "newcomer-1.0-py3-none-any.whl"
    catalog.apply([describe(str(tmp_path), path.name, path.stat())])
    catalog.set_yanks({"newcomer": {"1.0": "broken"}})
    text = app.get("/metrics").text
    assert value(text, "pkgserver_projects") == 4
    assert value(text, "pkgserver_yanked_releases") == 1


def test_uploads_and_auth_failures_are_counted(pkgdir: Path, write_htpasswd: WriteHtpasswd) -> None:
    htpasswd = write_htpasswd(alice=PASSWORD)
    app, _ = make_testapp([pkgdir], password_file=str(htpasswd))
    app.post("/", {":action": "file_upload"}, status=401)
    app.post("/", {":action": "file_upload"}, headers=basic("alice", "wrong"), status=403)
    app.post("/", {":action": "nonsense"}, headers=basic("alice", PASSWORD), status=400)
    text = app.get("/metrics").text
    assert value(text, "pkgserver_uploads_total", outcome="denied") == 2
    assert value(text, "pkgserver_uploads_total", outcome="invalid") == 1
    assert value(text, "pkgserver_auth_failures_total", reason="missing") == 1
    assert value(text, "pkgserver_auth_failures_total", reason="invalid") == 1
    assert value(text, "pkgserver_requests_total", route="upload", method="POST", status="403") == 1


def test_metrics_are_protected_with_list(pkgdir: Path, write_htpasswd: WriteHtpasswd) -> None:
    htpasswd = write_htpasswd(alice=PASSWORD)
    app, _ = make_testapp(
        [pkgdir], password_file=str(htpasswd), authenticate=frozenset({"update", "list"})
    )
    res = app.get("/metrics", status=401)
    assert "WWW-Authenticate" in res.headers
    app.get("/metrics", headers=basic("alice", "nope"), status=403)
    ok = app.get("/metrics", headers=basic("alice", PASSWORD))
    assert ok.content_type.startswith("text/plain")
    assert "pkgserver_requests_total" in ok.text


def test_metrics_alone_can_be_protected(pkgdir: Path, write_htpasswd: WriteHtpasswd) -> None:
    htpasswd = write_htpasswd(alice=PASSWORD)
    app, _ = make_testapp(
        [pkgdir], password_file=str(htpasswd), authenticate=frozenset({"update", "metrics"})
    )
    app.get("/simple/demo-pkg/")  # reading stays open
    app.get("/metrics", status=401)
    assert app.get("/metrics", headers=basic("alice", PASSWORD)).status_int == 200


def test_metrics_action_needs_a_password_file_on_the_command_line(tmp_path: Path) -> None:
    from pkgserver.cli import main

    assert main(["run", "-a", "update,metrics", str(tmp_path)]) == 2


# -- the access log, through the app -----------------------------------------------------------
def _logged_app(
    pkgdir: Path, fmt: str, htpasswd: Path | None = None
) -> tuple[TestApp, Callable[[], list[str]]]:
    settings = Settings(
        roots=(str(pkgdir),),
        password_file=str(htpasswd) if htpasswd else None,
        authenticate=frozenset({"update", "list"}) if htpasswd else frozenset({"update"}),
    )
    catalog = scan(pkgdir)
    stream = io.StringIO()
    access = AccessLog([stream], fmt, thread=False)
    observer = Observer(catalog, access=access, process=False)
    auth = Authenticator(settings.password_file, settings.authenticate)
    app = TestApp(create_app(settings, catalog, auth=auth, observer=observer))

    def lines() -> list[str]:
        access.drain()
        return stream.getvalue().splitlines()

    return app, lines


COMBINED = re.compile(
    r'^(?P<host>\S+) - (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<request>(?:[^"\\]|\\.)*)" '
    r'(?P<status>\d{3}) (?P<size>\d+|-) "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)"$'
)


def test_combined_log_line_per_request(pkgdir: Path, write_htpasswd: WriteHtpasswd) -> None:
    htpasswd = write_htpasswd(alice=PASSWORD)
    app, logged = _logged_app(pkgdir, "combined", htpasswd)
    app.get(
        "/simple/demo-pkg/?q=1",
        headers={**basic("alice", PASSWORD), "User-Agent": 'pip/24 "quoted"\x1b[31m'},
        extra_environ={"REMOTE_ADDR": "10.1.2.3"},
    )
    app.get("/simple/", status=401)
    app.head("/simple/demo-pkg/", headers=basic("alice", PASSWORD))
    lines = logged()
    assert len(lines) == 3
    first = COMBINED.match(lines[0])
    assert first is not None, lines[0]
    assert first["host"] == "10.1.2.3"
    assert first["user"] == "alice"
    assert first["request"] == "GET /simple/demo-pkg/?q=1 HTTP/1.0"
    assert first["status"] == "200"
    assert first["agent"] == 'pip/24 \\"quoted\\"\\x1b[31m'
    assert re.fullmatch(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}", first["time"])
    second = COMBINED.match(lines[1])
    assert second is not None and second["user"] == "-" and second["status"] == "401"
    third = COMBINED.match(lines[2])
    assert third is not None and third["size"] == "-"  # HEAD: no body sent
    joined = "\n".join(lines)
    assert PASSWORD not in joined
    assert base64.b64encode(f"alice:{PASSWORD}".encode()).decode() not in joined


def test_common_log_has_no_referer_or_agent(pkgdir: Path) -> None:
    app, logged = _logged_app(pkgdir, "common")
    app.get("/simple/demo-pkg/", headers={"User-Agent": "pip/24", "Referer": "http://x/"})
    (line,) = logged()
    assert re.fullmatch(r'\S+ - - \[[^\]]+\] "GET /simple/demo-pkg/ HTTP/1.0" 200 \d+', line)


def test_json_log_line_per_request(pkgdir: Path) -> None:
    app, logged = _logged_app(pkgdir, "json")
    app.get("/simple/demo-pkg/", headers={"Referer": "http://x/"})
    (line,) = logged()
    doc = json.loads(line)
    assert doc["logger"] == ACCESS_LOGGER and doc["level"] == "info"
    assert doc["method"] == "GET" and doc["path"] == "/simple/demo-pkg/"
    assert doc["status"] == 200 and doc["route"] == "simple_project"
    assert doc["bytes"] > 0 and doc["duration_ms"] >= 0
    assert doc["referer"] == "http://x/" and doc["user"] is None
    assert doc["time"].endswith("Z")


def test_access_log_drops_lines_it_cannot_keep_up_with() -> None:
    import io

    stream = io.StringIO()
    access = AccessLog([stream], limit=3, thread=False)
    record = (0.0, "1.2.3.4", None, "GET", "/", "", "HTTP/1.1", "200", "5", 0.001, "home", "", "")
    for _ in range(5):
        access.put(record)
    access.drain()
    assert len(stream.getvalue().splitlines()) == 3 and access.dropped == 2


# -- the access log of a real server ---------------------------------------------------------------
def aged(root: Path) -> None:
    """Files an hour old are listed by the first scan (fresh ones wait to settle)."""
    import os
    import time

    old = time.time() - 3600
    for path in root.rglob("*"):
        os.utime(path, (old, old))


def _server_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


@pytest.mark.e2e
def test_server_logs_combined_lines_without_credentials(
    pkgdir: Path, write_htpasswd: WriteHtpasswd
) -> None:
    htpasswd = write_htpasswd(alice=PASSWORD)
    aged(pkgdir)  # listed at once: listing needs a password here, so no wait_listed
    with running_server("-P", htpasswd, "-a", "update,list", pkgdir) as srv:
        assert (
            srv.request("GET", "/simple/demo-pkg/", headers=basic("alice", PASSWORD)).status == 200
        )
        assert srv.request("GET", "/simple/", headers=basic("alice", "wrong-pw")).status == 403
        # An absolute-form request line with userinfo: the log shows the path only.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
            sock.sendall(
                b"GET http://bob:hunter2@127.0.0.1/simple/ HTTP/1.1\r\nHost: x\r\n"
                b"Connection: close\r\n\r\n"
            )
            while sock.recv(65536):
                pass
    output = srv.output  # once stopped: the access log writes its lines in batches
    access = [line for line in _server_lines(output) if COMBINED.match(line)]
    assert len(access) == 3, output
    assert '"GET /simple/demo-pkg/ HTTP/1.1" 200' in access[0]
    assert " - alice [" in access[0]
    assert " - - [" in access[1] and '" 403 ' in access[1]
    assert '"GET /simple/ HTTP/1.1" 401' in access[2]
    for secret in (PASSWORD, "wrong-pw", "hunter2", "Basic "):
        assert secret not in output


@pytest.mark.e2e
def test_server_json_log_is_json_lines(pkgdir: Path) -> None:
    aged(pkgdir)
    with running_server("--log-format", "json", "--disable-fallback", pkgdir) as srv:
        assert srv.get("/simple/demo-pkg/").status == 200
        assert srv.get("/nope/at/all").status == 404
    output = srv.output
    docs = [json.loads(line) for line in _server_lines(output)]  # every line parses
    access = [d for d in docs if d["logger"] == ACCESS_LOGGER]
    assert [(d["path"], d["status"]) for d in access] == [
        ("/simple/demo-pkg/", 200),
        ("/nope/at/all", 404),
    ]
    assert any("serving" in d.get("message", "") for d in docs)


@pytest.mark.e2e
def test_no_access_log(pkgdir: Path) -> None:
    with running_server("--no-access-log", pkgdir) as srv:
        srv.wait_listed("demo-pkg")
        assert srv.get("/simple/demo-pkg/").status == 200
    output = srv.output
    assert "GET /simple/demo-pkg/" not in output
    assert "serving" in output


@pytest.mark.e2e
def test_live_metrics_count_requests(pkgdir: Path) -> None:
    with running_server(pkgdir) as srv:
        srv.wait_listed("demo-pkg")
        before = srv.get("/metrics").text
        for _ in range(5):
            assert srv.get("/simple/demo-pkg/").status == 200
        after = srv.get("/metrics").text
    key = {"route": "simple_project", "method": "GET", "status": "200"}
    assert (
        value(after, "pkgserver_requests_total", **key)
        - value(before, "pkgserver_requests_total", **key)
        == 5
    )
    assert value(after, "pkgserver_initial_scan_seconds") > 0
    assert value(after, "pkgserver_scan_duration_seconds_count", kind="initial") == 1
    assert value(after, "process_resident_memory_bytes") > 0


def test_no_created_series_and_no_process_wide_switch() -> None:
    # *_created series are left out of our exposition, without turning them off for every
    # other registry of the process (prometheus_client's switch is process-wide).
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    from pkgserver.observe import Observer

    observer = Observer(process=False)
    observer.upload_done(201, "created")
    body, _ = observer.exposition()
    assert b"pkgserver_uploads_total" in body and b"_created" not in body
    other = CollectorRegistry()
    Counter("other_things", "Things", registry=other).inc()
    assert b"other_things_created" in generate_latest(other)
