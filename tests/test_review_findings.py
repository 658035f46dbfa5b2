"""Regressions for the read-side review: each test is one attack that used to work."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import xmlrpc.client
import zipfile
from pathlib import Path

import pytest
import webtest
from builders import make_wheel
from conftest import make_testapp, scan

from pkgserver.app import create_app
from pkgserver.catalog import Catalog
from pkgserver.config import Settings
from pkgserver.indexer import Indexer

PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"


def poisoned_wheel(directory: Path, name: str) -> Path:
    """A wheel whose members carry the 'encrypted' flag: zipfile raises RuntimeError on read."""
    whl = make_wheel(directory.parent / "src", name, "1.0")
    data = bytearray(whl.read_bytes())
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (i := data.find(sig, start)) >= 0:
            data[i + off] |= 1
            start = i + 4
    out = directory / whl.name
    out.write_bytes(bytes(data))
    return out


def test_a_poisoned_archive_neither_stops_a_scan_nor_hides_its_neighbours(tmp_path: Path) -> None:
    root = tmp_path / "pk"
    root.mkdir()
    poisoned_wheel(root, "bad")
    make_wheel(root, "good", "1.0")
    catalog = scan(root)
    assert catalog.snapshot.project("good") is not None
    bad = catalog.snapshot.project("bad")
    assert bad is not None and bad.latest.metadata_sha256 is None  # listed, without metadata


def test_without_inotify_changes_are_seen_within_seconds_not_a_minute(tmp_path: Path) -> None:
    root = tmp_path / "pk"
    root.mkdir()
    catalog = Catalog()
    ix = Indexer([str(root)], catalog, watch=False, settle=0.2)
    ix.start()
    try:
        assert ix.rescan_interval == 5.0
        make_wheel(root, "late", "1.0")
        deadline = time.monotonic() + 15
        while catalog.snapshot.project("late") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert catalog.snapshot.project("late") is not None
    finally:
        ix.stop()


def test_with_inotify_a_safety_rescan_is_scheduled(tmp_path: Path) -> None:
    ix = Indexer([str(tmp_path)], Catalog(), watch=True)
    ix.start()
    try:
        assert ix.watching and ix.rescan_interval == 60.0
    finally:
        ix.stop()


@pytest.fixture
def one_wheel(tmp_path: Path) -> tuple[webtest.TestApp, Path, Path, list[str]]:
    root = tmp_path / "pk"
    root.mkdir()
    whl = make_wheel(root, "base", "1.0")
    stale: list[str] = []
    settings = Settings(roots=(str(root),), disable_fallback=True)
    app = webtest.TestApp(create_app(settings, scan(root), on_stale=stale.append))
    return app, root, whl, stale


def test_signature_links_out_of_the_directory_are_not_followed(one_wheel) -> None:  # type: ignore[no-untyped-def]
    app, root, whl, _ = one_wheel
    os.symlink("/etc/passwd", root / (whl.name + ".asc"))
    res = app.get(f"/packages/{whl.name}.asc", status=404)
    assert b"root:" not in res.body


def test_a_fifo_signature_cannot_hang_a_worker(one_wheel) -> None:  # type: ignore[no-untyped-def]
    app, root, whl, _ = one_wheel
    os.mkfifo(root / (whl.name + ".asc"))
    done = threading.Event()

    def fetch() -> None:
        app.get(f"/packages/{whl.name}.asc", status=404)
        done.set()

    threading.Thread(target=fetch, daemon=True).start()
    assert done.wait(5), "a request for a FIFO blocked"


def test_a_file_changed_behind_the_catalog_is_not_served_under_its_old_hash(one_wheel) -> None:  # type: ignore[no-untyped-def]
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
def test_non_utf8_header_bytes_never_cause_a_500(one_wheel, header: str) -> None:  # type: ignore[no-untyped-def]
    app, _, whl, _ = one_wheel
    for path in ("/simple/", "/simple/base/", f"/packages/{whl.name}", "/pypi/base/json"):
        env_key = "HTTP_" + header.upper().replace("-", "_")
        res = app.get(path, extra_environ={env_key: "x\xff\xfe"}, expect_errors=True)
        assert res.status_int < 500, (path, header, res.status)


def test_absurd_range_numbers_are_ignored(one_wheel) -> None:  # type: ignore[no-untyped-def]
    app, _, whl, _ = one_wheel
    res = app.get(
        f"/packages/{whl.name}", headers={"Range": "bytes=" + "9" * 5000 + "-"}, expect_errors=True
    )
    assert res.status_int == 200


def test_xmlrpc_with_an_unknown_encoding_gets_400(one_wheel) -> None:  # type: ignore[no-untyped-def]
    app, _, _, _ = one_wheel
    body = b"<?xml version='1.0' encoding='x-unknown'?><methodCall><methodName>search</methodName></methodCall>"
    app.post("/RPC2", body, content_type="text/xml", status=400)


def test_format_with_a_literal_plus_is_understood(one_wheel) -> None:  # type: ignore[no-untyped-def]
    app, _, _, _ = one_wheel
    res = app.get("/simple/base/?format=application/vnd.pypi.simple.v1+json")
    assert res.headers["Content-Type"] == "application/vnd.pypi.simple.v1+json"
    res = app.get("/simple/?format=application/vnd.pypi.simple.latest+json")
    assert res.headers["Content-Type"] == "application/vnd.pypi.simple.v1+json"


def test_error_answers_on_simple_pages_vary_on_accept(one_wheel) -> None:  # type: ignore[no-untyped-def]
    app, _, _, _ = one_wheel
    assert (
        app.get("/simple/", headers={"Accept": "image/png"}, status=406).headers["Vary"] == "Accept"
    )
    assert app.get("/simple/nothing/", status=404).headers["Vary"] == "Accept"


@pytest.mark.parametrize("path", ["/simple/%ff/", "/packages/%ffbase-1.0-py3-none-any.whl", "/%ff"])
def test_paths_that_are_not_utf8_get_400(one_wheel, path: str) -> None:  # type: ignore[no-untyped-def]
    app, _, _, _ = one_wheel
    app.get(path, status=400)


def test_metadata_of_another_project_is_not_advertised(tmp_path: Path) -> None:
    path = tmp_path / "mism-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(
            "other-9.9.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: Other-Project\nVersion: 9.9\nSummary: lies\n",
        )
        zf.writestr("other-9.9.dist-info/WHEEL", "Wheel-Version: 1.0\n")
    app, catalog = make_testapp([tmp_path])
    f = catalog.snapshot.file(path.name)
    assert f is not None and f.metadata_sha256 is None and f.summary is None
    assert "data-core-metadata" not in app.get("/simple/mism/").text
    app.get(f"/packages/{path.name}.metadata", status=404)


def test_control_characters_in_summaries_keep_search_answers_valid(tmp_path: Path) -> None:
    make_wheel(tmp_path, "ctl", "1.0", summary="bad\x00nul \x1b[31mred\x01")
    app, _ = make_testapp([tmp_path])
    body = xmlrpc.client.dumps(({"name": ["ctl"]}, "or"), "search").encode()
    (hits,), _ = xmlrpc.client.loads(app.post("/RPC2", body, content_type="text/xml").body)
    assert hits[0]["name"] == "ctl"
    assert "\x1b" not in hits[0]["summary"] and "\x00" not in hits[0]["summary"]


def test_search_terms_are_bounded(tmp_path: Path) -> None:
    make_wheel(tmp_path, "demo", "1.0")
    app, _ = make_testapp([tmp_path])
    # Only the first 10 terms of a field count: "demo" at position 11 is not searched for.
    body = xmlrpc.client.dumps(({"name": ["zz" * 40] * 10 + ["demo"]}, "or"), "search").encode()
    (hits,), _ = xmlrpc.client.loads(app.post("/RPC2", body, content_type="text/xml").body)
    assert hits == []
    body = xmlrpc.client.dumps(({"name": ["zz" * 40] * 9 + ["demo"]}, "or"), "search").encode()
    (hits,), _ = xmlrpc.client.loads(app.post("/RPC2", body, content_type="text/xml").body)
    assert [h["name"] for h in hits] == ["demo"]


# -- upload-side review ------------------------------------------------------------------------
from test_upload import make_app, multipart, post, upload_form  # noqa: E402


@pytest.fixture
def upload_app(tmp_path: Path):  # type: ignore[no-untyped-def]
    from passlib.hash import bcrypt

    root = tmp_path / "packages"
    root.mkdir()
    ht = tmp_path / "htpasswd"
    ht.write_text("alice:" + bcrypt.using(ident="2y", rounds=4).hash("s3cret") + "\n")
    return root, ht


@pytest.mark.parametrize("kind", ["fifo", "devzero"])
def test_something_odd_at_the_target_name_gets_409_without_hanging(
    upload_app, tmp_path: Path, kind: str
) -> None:  # type: ignore[no-untyped-def]
    root, ht = upload_app
    app, _ = make_app(root, ht)
    whl = make_wheel(tmp_path / "dist", "demo", "7.0")
    target = root / whl.name
    if kind == "fifo":
        os.mkfifo(target)
    else:
        os.symlink("/dev/zero", target)
    done: list[int] = []
    threading.Thread(
        target=lambda: done.append(post(app, upload_form(whl)).status_int), daemon=True
    ).start()
    deadline = time.monotonic() + 5
    while not done and time.monotonic() < deadline:
        time.sleep(0.02)
    assert done == [409]
    other = make_wheel(tmp_path / "dist", "other", "1.0")
    assert post(app, upload_form(other)).status_int == 200  # the publish lock is free


def test_a_refused_upload_never_touches_another_files_signature(upload_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root, ht = upload_app
    app, _ = make_app(root, ht)
    whl = make_wheel(tmp_path / "dist", "demo", "6.0")
    (root / whl.name).write_bytes(b"")  # unlisted: being copied in, say
    (root / (whl.name + ".asc")).write_text("ORIGINAL SIGNATURE")
    fields = [
        (":action", "file_upload"),
        ("name", "demo"),
        ("version", "6.0"),
        ("attestations", "[]"),
    ]
    body = multipart(
        fields,
        [
            ("content", whl.name, whl.read_bytes()),
            ("gpg_signature", whl.name + ".asc", b"ATTACKER"),
        ],
    )
    assert post(app, body).status_int == 409
    assert (root / (whl.name + ".asc")).read_text() == "ORIGINAL SIGNATURE"
    assert not (root / (whl.name + ".attestations.json")).exists()
    assert not [n for n in os.listdir(root) if n.startswith(".")]


def test_overwrite_without_a_signature_drops_the_old_one(upload_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root, ht = upload_app
    app, _ = make_app(root, ht, overwrite=True)
    whl = make_wheel(tmp_path / "a", "demo", "1.0")
    fields = [(":action", "file_upload"), ("name", "demo"), ("version", "1.0")]
    post(
        app,
        multipart(
            fields, [("content", whl.name, whl.read_bytes()), ("gpg_signature", "x.asc", b"SIG")]
        ),
        status=200,
    )
    assert (root / (whl.name + ".asc")).exists()
    new = make_wheel(tmp_path / "b", "demo", "1.0", body="NEW = 1\n")
    post(app, upload_form(new), status=200)
    assert not (root / (whl.name + ".asc")).exists()
    app.get(f"/packages/{whl.name}.asc", status=404)


def test_eggs_for_different_pythons_are_different_files(upload_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from pkgserver.upload import file_key

    assert file_key("eggy-1.0-py3.8.egg") != file_key("eggy-1.0-py3.9.egg")
    assert file_key("eggy-1.0-py3.8.egg") == file_key("Eggy-1.0.0-py3.8.egg")


@pytest.mark.parametrize("field", ["version", "remove"])
def test_absurdly_long_version_numbers_get_400_not_500(
    upload_app, tmp_path: Path, field: str
) -> None:  # type: ignore[no-untyped-def]
    root, ht = upload_app
    app, _ = make_app(root, ht)
    big = "1" * 5000
    if field == "version":
        whl = make_wheel(tmp_path / "dist", "demo", "1.0")
        res = post(app, upload_form(whl, version=big))
        assert res.status_int == 400
    else:
        res = post(
            app, multipart([(":action", "remove_pkg"), ("name", "demo"), ("version", big)], [])
        )
        assert res.status_int == 404


def test_a_zip_listing_too_many_members_is_refused_before_zipfile_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pkgserver import metadata
    from pkgserver.distfile import KIND_WHEEL

    monkeypatch.setattr(metadata, "MAX_ZIP_MEMBERS", 100)
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(150):
            zf.writestr(f"demo/f{i}", b"")
        zf.writestr(
            "demo-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"
        )

    def no_zipfile(*args: object, **kw: object) -> None:
        raise AssertionError("zipfile.ZipFile must not be reached")

    monkeypatch.setattr(metadata.zipfile, "ZipFile", no_zipfile)
    with pytest.raises(metadata.InvalidArchive, match="too many members"):
        metadata.read_core_metadata(str(path), KIND_WHEEL, "demo")


def test_a_folded_header_is_joined_and_an_oversized_header_section_refused() -> None:
    from pkgserver.metadata import InvalidArchive, parse_core_metadata

    folded = "Summary: start\n" + "".join(f"        part {i}\n" for i in range(50_000))
    meta = parse_core_metadata(
        ("Metadata-Version: 2.1\nName: d\nVersion: 1\n" + folded).encode(), is_wheel=True
    )
    assert (
        meta.summary is not None
        and meta.summary.startswith("start part 0 part 1")
        and meta.summary.endswith("part 49999")
    )
    huge = "Summary: " + "x" * 5_000_000 + "\n"
    with pytest.raises(InvalidArchive, match="header section too large"):
        parse_core_metadata(
            ("Metadata-Version: 2.1\nName: d\nVersion: 1\n" + huge).encode(), is_wheel=True
        )


def test_a_boundary_containing_xml_is_still_an_upload(upload_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root, ht = upload_app
    app, _ = make_app(root, ht)
    whl = make_wheel(tmp_path / "dist", "demo", "1.0")
    body, _ = upload_form(whl)
    boundary = body.split(b"\r\n", 1)[0][2:]
    body = body.replace(boundary, b"xmlXMLxml")
    res = post(app, (body, "multipart/form-data; boundary=xmlXMLxml"))
    assert res.status_int == 200, res.text


@pytest.mark.parametrize(
    "filename", ["demo-2.0-py3-none-<b>#%2e%2e.whl", "demo-1.0-py3-none-any.WHL"]
)
def test_filenames_no_build_tool_makes_are_refused(
    upload_app, tmp_path: Path, filename: str
) -> None:  # type: ignore[no-untyped-def]
    root, ht = upload_app
    app, _ = make_app(root, ht)
    whl = make_wheel(tmp_path / "dist", "demo", "1.0")
    body = multipart(
        [(":action", "file_upload"), ("name", "demo"), ("version", "1.0")],
        [("content", filename, whl.read_bytes())],
    )
    assert post(app, body).status_int == 400
    assert os.listdir(root) == []


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


def test_describe_refuses_a_fifo_at_once(tmp_path: Path) -> None:
    """A FIFO put where a wheel was (after the scan saw a file) must not hang the indexer."""
    import threading

    from pkgserver.catalog import FileStat
    from pkgserver.scan import describe

    os.mkfifo(tmp_path / "demo-1.0-py3-none-any.whl")
    outcome: list[object] = []
    worker = threading.Thread(
        target=lambda: outcome.append(
            _raises(
                lambda: describe(str(tmp_path), "demo-1.0-py3-none-any.whl", FileStat(10, 0, 0))
            )
        ),
        daemon=True,
    )
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "describe() blocked on a FIFO"
    assert isinstance(outcome[0], OSError)


def _raises(call):  # type: ignore[no-untyped-def]
    try:
        call()
    except Exception as exc:
        return exc
    return None
