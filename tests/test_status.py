"""Project status markers (PEP 792): the record, the catalog, the pages for installers and
people, the upload refusal, and ``pkgserver status`` run as a command.

The served side is driven through webtest on the WSGI app, with the catalog's statuses set the
way the service sets them (from the record, ``load_statuses``); the command runs as a process.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from builders import make_sdist, make_wheel
from conftest import scan
from forms import upload_form
from webtest import TestApp

from pkgserver.app import create_app
from pkgserver.catalog import Catalog, ProjectStatus
from pkgserver.config import Settings
from pkgserver.records import (
    STATUS_FILE,
    RecordDir,
    Statuses,
    load_statuses,
    merged_statuses,
    set_status_in,
)
from pkgserver.render import HTML, JSON_V1, render_project

PY = sys.executable
W10 = "demo_pkg-1.0-py3-none-any.whl"
S10 = "demo_pkg-1.0.tar.gz"
BOTH = sorted([W10, S10])
HOSTILE = '"><script>alert(1)</script>&amp; <b>'


# -- helpers ---------------------------------------------------------------------------------------
@pytest.fixture
def pkgs(tmp_path: Path) -> Path:
    d = tmp_path / "pkgs"
    make_wheel(d, "demo-pkg", "1.0", summary="A demo")
    make_sdist(d, "demo-pkg", "1.0", summary="A demo")
    make_wheel(d, "other", "2.0", summary="Another")
    return d


def tree(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` (hidden ones too) -> its sha256."""
    return {
        p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def served(root: Path, htpasswd: Path | None = None) -> tuple[TestApp, Catalog]:
    """An app over ``root`` whose catalog has the statuses recorded there, as at a start;
    uploads allowed to alice with ``htpasswd``."""
    settings = Settings(
        roots=(str(root),),
        disable_fallback=True,
        password_file=str(htpasswd) if htpasswd else None,
    )
    catalog = scan(root)
    catalog.set_statuses(load_statuses([str(root)]))
    app = TestApp(create_app(settings, catalog))
    app.authorization = ("Basic", ("alice", "s3cret"))
    return app, catalog


def mark(root: Path, project: str, status: str, reason: str = "") -> None:
    set_status_in([RecordDir(str(root))], project, ProjectStatus(status, reason))


def meta_tags(page: str) -> dict[str, str]:
    """name -> content of the <meta> tags of a page (content unescaped)."""
    return {
        name: html.unescape(content)
        for name, content in re.findall(r'<meta name="([^"]+)" content="([^"]*)">', page)
    }


def anchors(page: str) -> list[str]:
    return re.findall(r"<a [^>]*>([^<]*)</a>", page)


def simple_json(app: TestApp, project: str = "demo-pkg") -> dict[str, object]:
    res = app.get(f"/simple/{project}/", headers={"Accept": JSON_V1})
    assert res.content_type == JSON_V1
    doc: dict[str, object] = res.json
    return doc


# -- the simple API --------------------------------------------------------------------------------
def test_active_project_has_no_marker(pkgs: Path) -> None:
    app, _ = served(pkgs)
    page = app.get("/simple/demo-pkg/", headers={"Accept": HTML}).text
    assert "pypi:project-status" not in page  # PEP 792: an index MAY omit "active"
    assert sorted(anchors(page)) == BOTH
    assert "project-status" not in simple_json(app)


@pytest.mark.parametrize(
    ("status", "reason", "listed"),
    [
        ("archived", "no longer maintained", BOTH),
        ("deprecated", "use other instead", BOTH),
        ("quarantined", "malware found", []),
        ("archived", "", BOTH),
        ("quarantined", "", []),
    ],
)
def test_status_in_html_and_json(pkgs: Path, status: str, reason: str, listed: list[str]) -> None:
    mark(pkgs, "demo-pkg", status, reason)
    app, _ = served(pkgs)
    page = app.get("/simple/demo-pkg/", headers={"Accept": HTML}).text
    tags = meta_tags(page)
    assert tags["pypi:project-status"] == status
    if reason:
        assert tags["pypi:project-status-reason"] == reason
    else:
        assert "pypi:project-status-reason" not in tags
    assert sorted(anchors(page)) == listed
    doc = simple_json(app)
    expected = {"status": status, **({"reason": reason} if reason else {})}
    assert doc["project-status"] == expected
    assert sorted(f["filename"] for f in doc["files"]) == listed  # type: ignore[attr-defined]
    assert doc["versions"] == ["1.0"]  # kept, as in PEP 792's example
    # The other project is untouched; the index still lists both names.
    assert "pypi:project-status" not in app.get("/simple/other/").text
    assert anchors(app.get("/simple/").text) == ["demo-pkg", "other"]


def test_hostile_reason_is_escaped_everywhere(pkgs: Path) -> None:
    mark(pkgs, "demo-pkg", "deprecated", HOSTILE)
    app, _ = served(pkgs)
    page = app.get("/simple/demo-pkg/").text
    assert "<script>" not in page and "<b>" not in page
    assert meta_tags(page)["pypi:project-status-reason"] == HOSTILE  # escaped, then read back
    assert simple_json(app)["project-status"] == {"status": "deprecated", "reason": HOSTILE}
    web = app.get("/project/demo-pkg/").text
    assert "<script>alert" not in web and "<b>" not in web
    assert html.escape(HOSTILE) in web


def test_status_change_gives_new_renderings(pkgs: Path) -> None:
    app, catalog = served(pkgs)
    before = app.get("/simple/demo-pkg/", headers={"Accept": HTML})
    before_json = simple_json(app)
    project = catalog.snapshot.project("demo-pkg")
    assert project is not None and render_project(project, HTML) is not None  # cached now

    catalog.set_statuses({"demo-pkg": ProjectStatus("quarantined", "bad")})
    after = app.get("/simple/demo-pkg/", headers={"Accept": HTML})
    assert after.etag != before.etag
    assert anchors(after.text) == []
    # A client revalidating with the old ETag gets the new page, not a 304.
    again = app.get("/simple/demo-pkg/", headers={"If-None-Match": f'"{before.etag}"'})
    assert again.status_int == 200 and anchors(again.text) == []
    assert simple_json(app)["files"] == []

    catalog.set_statuses({})  # active again: the very same page as before
    assert app.get("/simple/demo-pkg/", headers={"Accept": HTML}).body == before.body
    assert simple_json(app) == before_json


# -- quarantine: nothing offered -------------------------------------------------------------------
def test_quarantined_files_are_not_downloadable_nor_listed(pkgs: Path) -> None:
    mark(pkgs, "demo-pkg", "quarantined", "malware")
    app, _ = served(pkgs)
    for path in (
        f"/packages/{W10}",
        f"/packages/{W10}.metadata",
        f"/packages/{S10}",
        f"/packages/{W10.upper()}",  # (found by filename, any case, otherwise)
    ):
        assert app.get(path, expect_errors=True).status_int == 404, path
    assert app.get("/packages/other-2.0-py3-none-any.whl").status_int == 200
    listing = app.get("/packages/").text
    assert W10 not in listing and S10 not in listing and "other-2.0" in listing
    api = app.get("/pypi/demo-pkg/json").json
    assert api["urls"] == [] and api["releases"] == {}
    assert api["info"]["version"] == "1.0"
    home = app.get("/").text
    assert "demo-pkg 1.0" not in home and "other 2.0" in home  # not among recent uploads


def test_quarantined_file_is_refused_on_the_fast_path_too(pkgs: Path) -> None:
    """The fast path answers a plain GET of a small file from the catalog: it must ask too."""
    app, catalog = served(pkgs)
    assert app.get(f"/packages/{W10}").status_int == 200
    catalog.set_statuses({"demo-pkg": ProjectStatus("quarantined")})
    res = app.get(f"/packages/{W10}", expect_errors=True)
    assert res.status_int == 404
    assert res.body != (pkgs / W10).read_bytes()


def test_web_page_shows_the_status_and_reason(pkgs: Path) -> None:
    mark(pkgs, "demo-pkg", "archived", "moved to other")
    app, catalog = served(pkgs)
    page = app.get("/project/demo-pkg/").text
    banner = re.search(
        r'<p class="banner status archived" id="project-status">(.*?)</p>', page, re.S
    )
    assert banner is not None
    assert "archived" in banner.group(1) and "moved to other" in banner.group(1)
    assert f"packages/{W10}" in page  # archived: still offered
    assert "pip install" in page
    assert re.search(r'class="badge status archived">archived<', app.get("/-/projects/").text)

    catalog.set_statuses({"demo-pkg": ProjectStatus("quarantined", "malware")})
    page = app.get("/project/demo-pkg/").text
    assert re.search(r'class="banner status quarantined"[^>]*>[^<]*<strong>quarantined', page)
    assert "malware" in page
    assert "packages/" not in page  # no file links
    assert "pip install" not in page


# -- uploads ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", ["archived", "quarantined"])
def test_upload_to_a_closed_project_is_refused_and_changes_nothing(
    pkgs: Path, tmp_path: Path, htpasswd: Path, status: str
) -> None:
    mark(pkgs, "demo-pkg", status, "closed for good")
    app, catalog = served(pkgs, htpasswd)
    before = tree(pkgs)
    generation = catalog.snapshot.generation
    for version in ("2.0", "1.0"):  # a new release, and a file of the one there
        whl = make_wheel(tmp_path / f"dist-{version}", "demo_pkg", version)
        if version == "1.0":
            whl = whl.rename(whl.with_name("demo_pkg-1.0-py2.py3-none-any.whl"))
        body, ctype = upload_form(whl)
        res = app.post("/", body, headers={"Content-Type": ctype}, expect_errors=True)
        assert res.status_int == 403, res.text
        message = f"project demo-pkg is {status} (closed for good): it takes no uploads"
        assert res.text.strip() == message
        assert res.status == f"403 {message}"  # twine prints the reason phrase
    assert tree(pkgs) == before
    assert not [n for n in os.listdir(pkgs) if n.startswith(".") and n != ".pkgserver"]
    assert catalog.snapshot.generation == generation


def test_upload_to_a_quarantined_name_without_files_is_refused(
    root: Path, tmp_path: Path, htpasswd: Path
) -> None:
    app, catalog = served(root, htpasswd)
    catalog.set_statuses({"fresh": ProjectStatus("quarantined")})
    whl = make_wheel(tmp_path / "dist", "Fresh", "1.0")
    body, ctype = upload_form(whl)
    res = app.post("/", body, headers={"Content-Type": ctype}, expect_errors=True)
    assert res.status_int == 403 and "quarantined" in res.text
    assert os.listdir(root) == []


@pytest.mark.parametrize("status", ["deprecated", "active"])
def test_upload_to_an_open_project_works(
    pkgs: Path, tmp_path: Path, htpasswd: Path, status: str
) -> None:
    mark(pkgs, "demo-pkg", status)
    app, _ = served(pkgs, htpasswd)
    whl = make_wheel(tmp_path / "dist", "demo-pkg", "2.0")
    body, ctype = upload_form(whl)
    res = app.post("/", body, headers={"Content-Type": ctype})
    assert res.status_int == 200
    assert (pkgs / whl.name).read_bytes() == whl.read_bytes()


# -- the record ------------------------------------------------------------------------------------
def test_record_round_trip_and_active_clears(pkgs: Path) -> None:
    folders = [RecordDir(str(pkgs))]
    assert merged_statuses(folders) == {}
    assert set_status_in(folders, "demo-pkg", ProjectStatus("archived", "done"))
    assert not set_status_in(folders, "demo-pkg", ProjectStatus("archived", "done"))
    record = json.loads((pkgs / ".pkgserver" / STATUS_FILE).read_text())
    assert record == {"project-status": {"demo-pkg": {"status": "archived", "reason": "done"}}}
    assert set_status_in(folders, "other", ProjectStatus("deprecated"))
    assert merged_statuses(folders) == {
        "demo-pkg": ProjectStatus("archived", "done"),
        "other": ProjectStatus("deprecated", ""),
    }
    assert set_status_in(folders, "demo-pkg", ProjectStatus("active"))
    assert not set_status_in(folders, "demo-pkg", ProjectStatus("active"))
    assert merged_statuses(folders) == {"other": ProjectStatus("deprecated", "")}


def test_two_roots_first_wins_and_setting_moves_the_entry(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    folders = [RecordDir(str(a)), RecordDir(str(b))]
    set_status_in(folders[1:], "p", ProjectStatus("deprecated", "in b"))
    assert merged_statuses(folders) == {"p": ProjectStatus("deprecated", "in b")}
    set_status_in(folders, "p", ProjectStatus("archived"))
    assert merged_statuses(folders) == {"p": ProjectStatus("archived", "")}
    assert merged_statuses(folders[1:]) == {}  # not left behind to mislead
    set_status_in(folders, "p", ProjectStatus("active"))
    assert merged_statuses(folders) == {}


def test_hand_edited_record_is_read_carefully(pkgs: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = pkgs / ".pkgserver"
    state.mkdir()
    entries = {
        "Demo.Pkg": {"status": "archived", "reason": "line one\nline two\x1b[31m"},
        "other": {"status": "bogus"},
        "third": {"status": "active"},
        "fourth": "quarantined",
        "fifth": {"status": "quarantined", "reason": ["x"]},
        "sixth": {"status": "deprecated", "reason": "x" * 5000},
    }
    (state / STATUS_FILE).write_text(json.dumps({"project-status": entries}))
    found = load_statuses([str(pkgs)])
    assert found == {
        "demo-pkg": ProjectStatus("archived", "line one line two[31m"),
        "fifth": ProjectStatus("quarantined", ""),
        "sixth": ProjectStatus("deprecated", "x" * 500),
    }
    (state / STATUS_FILE).write_text("{not json")
    assert load_statuses([str(pkgs)]) == {}
    assert "its project statuses are not applied" in caplog.text


def test_poll_sees_a_rewrite(pkgs: Path) -> None:
    polled = Statuses([str(pkgs)])
    assert polled.poll() == {}
    assert polled.poll() is None  # nothing changed
    mark(pkgs, "demo-pkg", "archived")
    assert polled.poll() == {"demo-pkg": ProjectStatus("archived", "")}
    assert polled.poll() is None


def test_catalog_keeps_the_status_across_file_changes(pkgs: Path) -> None:
    catalog = scan(pkgs)
    catalog.set_statuses({"demo-pkg": ProjectStatus("quarantined")})
    # A file added later (a rescan, another replica) joins a project that is still quarantined.
    listed = catalog.snapshot.files[W10]
    catalog.apply([listed._replace(relpath="sub/" + W10)])
    project = catalog.snapshot.project("demo-pkg")
    assert project is not None and project.status == ProjectStatus("quarantined")
    assert project.offered == () and len(project.files) == 3
    assert catalog.status_of("demo-pkg") == ProjectStatus("quarantined")
    assert catalog.status_of("other") is None


# -- the command -----------------------------------------------------------------------------------
@pytest.fixture
def cmd(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    home = tmp_path / "admin-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PKGSERVER_")}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), PYTHONUNBUFFERED="1")

    def run(
        *args: str | os.PathLike[str], cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PY, "-m", "pkgserver", *(os.fspath(a) for a in args)],
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd or tmp_path,
            timeout=60,
            check=False,
        )

    return run


def test_status_command_shows_sets_and_clears(
    pkgs: Path, cmd: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    res = cmd("status", "Demo.Pkg", pkgs)
    assert (res.returncode, res.stdout, res.stderr) == (0, "active\n", "")
    assert not (pkgs / ".pkgserver" / STATUS_FILE).exists()

    res = cmd("status", "demo_pkg", "archived", "--reason", "moved to other", pkgs)
    assert (res.returncode, res.stderr) == (0, "demo-pkg is now archived (moved to other)\n")
    res = cmd("status", "demo-pkg", pkgs)
    assert (res.returncode, res.stdout) == (0, "archived\tmoved to other\n")
    # Options anywhere, as for yank.
    res = cmd("status", "demo-pkg", "archived", pkgs, "--reason", "moved to other")
    assert res.stderr == "demo-pkg was archived already (moved to other)\n"

    res = cmd("status", "demo-pkg", "active", pkgs)
    assert (res.returncode, res.stderr) == (0, "demo-pkg is now active\n")
    assert load_statuses([str(pkgs)]) == {}
    res = cmd("status", "demo-pkg", pkgs)
    assert res.stdout == "active\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "archived", "@DIR"], "no project 'nope' in @DIR"),
        (
            ["demo-pkg", "Archived", "@DIR"],
            "'Archived' is neither a status (active, archived, "
            "quarantined, deprecated) nor a package directory",
        ),
        (
            ["demo-pkg", "archived", "--reason", "two\nlines", "@DIR"],
            "the reason must be one line of text, without control characters",
        ),
        (
            ["demo-pkg", "archived", "--reason", "x" * 501, "@DIR"],
            "the reason is longer than 500 characters",
        ),
        (
            ["demo-pkg", "active", "--reason", "why", "@DIR"],
            "an active project has no reason (active clears the record)",
        ),
        (["demo-pkg", "--reason", "why", "@DIR"], "--reason is given with a STATUS to set"),
        (["bad name!", "archived", "@DIR"], "invalid project name 'bad name!'"),
    ],
)
def test_bad_status_command_is_one_line_status_2_and_changes_nothing(
    pkgs: Path,
    cmd: Callable[..., subprocess.CompletedProcess[str]],
    args: list[str],
    message: str,
) -> None:
    mark(pkgs, "other", "deprecated", "kept")
    before = tree(pkgs)
    res = cmd("status", *[str(pkgs) if a == "@DIR" else a for a in args])
    assert res.returncode == 2 and res.stdout == "", res
    assert res.stderr == f"pkgserver: error: {message.replace('@DIR', str(pkgs))}\n"
    assert tree(pkgs) == before


def test_a_directory_named_like_a_status_must_be_spelled_as_a_path(
    tmp_path: Path, cmd: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    d = tmp_path / "archived"
    make_wheel(d, "demo-pkg", "1.0")
    res = cmd("status", "demo-pkg", "archived", cwd=tmp_path)
    assert res.returncode == 2
    assert "write ./archived for the directory" in res.stderr
    res = cmd("status", "demo-pkg", "./archived", cwd=tmp_path)
    assert (res.returncode, res.stdout) == (0, "active\n")


def test_claimed_name_without_files_still_shows_its_status() -> None:
    """A quarantined project whose files were all removed keeps its marker on the page of the
    claimed name (never sent to the fallback index)."""
    from pkgserver.render import render_claimed

    status = ProjectStatus("quarantined", "gone <bad>")
    doc = json.loads(render_claimed("gone", JSON_V1, status).body)
    assert doc["project-status"] == {"status": "quarantined", "reason": "gone <bad>"}
    assert doc["files"] == []
    page = render_claimed("gone", HTML, status).body.decode()
    assert meta_tags(page)["pypi:project-status-reason"] == "gone <bad>"
    assert "<bad>" not in page
    assert "project-status" not in json.loads(render_claimed("gone", JSON_V1).body)
