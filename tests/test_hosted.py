"""Dependency confusion: a project once hosted here is never redirected to the fallback index.

Unit tests of pkgserver.hosted, webtest of the routes, and the attack for real: a private
pkgserver whose fallback is a second pkgserver (standing for PyPI) where someone published the
same name with a higher version.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import webtest
from builders import make_wheel
from server import client_env, output, run_client, running_server, server_env

from pkgserver.app import create_app
from pkgserver.catalog import Catalog
from pkgserver.config import Settings
from pkgserver.hosted import NAMES_FILE, HostedNames
from pkgserver.indexer import Indexer

JSON_V1 = "application/vnd.pypi.simple.v1+json"
FALLBACK = "https://pypi.example/simple/"


# -- the record ---------------------------------------------------------------------------------------
def test_names_persist_and_are_read_from_every_directory(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    names = HostedNames([str(a), str(b)])
    names.add({"corp-utils", "corp-app"})
    assert (a / NAMES_FILE).read_text() == "corp-app\ncorp-utils\n"
    (b / ".pkgserver").mkdir()
    (b / NAMES_FILE).write_text("other-team\n../etc\nNot_Normalized\n\n")
    again = HostedNames([str(a), str(b)])
    assert again.names() == {"corp-utils", "corp-app", "other-team"}  # junk lines ignored
    assert again.forget("other-team") and not again.forget("never-hosted")
    assert (b / NAMES_FILE).read_text() == ""
    assert HostedNames([str(a), str(b)]).names() == {"corp-utils", "corp-app"}


def test_a_running_server_sees_an_edit_within_a_second(tmp_path: Path) -> None:
    names = HostedNames([str(tmp_path)])
    names.add({"corp-utils"})
    HostedNames([str(tmp_path)]).forget("corp-utils")  # another process: pkgserver forget
    assert "corp-utils" in names  # checked at most once a second
    names._watch.every = 0.0
    assert "corp-utils" not in names


def test_read_only_directory_keeps_the_claim_in_memory(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        if subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)]
        ).returncode:
            pytest.skip("cannot mount tmpfs")
        try:
            names = HostedNames([str(ro)])
            names.add({"corp-utils"})
            names.reload()
            assert "corp-utils" in names
        finally:
            subprocess.run(["umount", str(ro)], check=True)
    else:
        tmp_path.chmod(0o555)
        names = HostedNames([str(tmp_path)])
        names.add({"corp-utils"})
        names.reload()
        assert "corp-utils" in names


# -- the routes ---------------------------------------------------------------------------------------
def _app(root: Path, **settings_kw: Any) -> tuple[webtest.TestApp, Indexer, HostedNames]:
    names = HostedNames([str(root)])
    catalog = Catalog(on_new_projects=names.add)
    indexer = Indexer([str(root)], catalog, watch=False, settle=0)
    indexer._rescan()
    settings = Settings(roots=(str(root),), fallback_url=FALLBACK, **settings_kw)
    return webtest.TestApp(create_app(settings, catalog, hosted=names)), indexer, names


def test_a_project_whose_files_are_gone_is_not_redirected(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "corp-utils", "1.0")
    app, indexer, names = _app(tmp_path)
    assert app.get("/simple/corp-utils/").status_int == 200
    assert app.get("/simple/not-ours/", status=303).headers["Location"] == FALLBACK + "not-ours/"
    wheel.unlink()
    indexer._rescan()
    res = app.get("/simple/corp-utils/", headers={"Accept": "text/html"})
    assert res.status_int == 200 and b"<a " not in res.body and b"corp-utils" in res.body
    res = app.get("/simple/corp-utils/", headers={"Accept": JSON_V1})
    assert res.json["files"] == [] and res.json["name"] == "corp-utils"
    # Any spelling of the name: sent to the canonical page here, never to the fallback.
    res = app.get("/simple/Corp_Utils/", status=301)
    assert "pypi.example" not in res.headers["Location"]
    assert b"corp-utils" not in app.get("/simple/").body  # not listed: it has no files
    app.get("/pypi/corp-utils/json", status=404)
    names.forget("corp-utils")
    assert app.get("/simple/corp-utils/", status=303).headers["Location"].startswith(FALLBACK)


def test_claims_survive_a_restart_and_a_deleted_cache(tmp_path: Path) -> None:
    make_wheel(tmp_path, "corp-utils", "1.0").unlink()
    make_wheel(tmp_path, "corp-app", "1.0")
    _app(tmp_path)  # the first start records what it finds
    for f in tmp_path.glob("*.whl"):
        f.unlink()
    app, _, _ = _app(tmp_path)  # a restart with an empty directory
    app.get("/simple/corp-app/", status=200)
    app.get("/simple/corp-utils/", status=303)  # never hosted: the file was gone before


# -- pkgserver forget ---------------------------------------------------------------------------------
def forget(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pkgserver", "forget", *map(str, args)],
        capture_output=True,
        text=True,
        env=server_env(),
        timeout=60,
    )


def test_forget_refuses_what_it_should_not_do(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "corp-utils", "1.0")
    HostedNames([str(tmp_path)]).add({"corp-utils"})
    res = forget("Corp_Utils", tmp_path)
    assert res.returncode == 2 and "still has files" in res.stderr and wheel.name in res.stderr
    res = forget("never-hosted", tmp_path)
    assert res.returncode == 2 and "not among the projects hosted" in res.stderr
    res = forget("../etc", tmp_path)
    assert res.returncode == 2 and "invalid project name" in res.stderr
    res = forget("corp-utils", tmp_path / "missing")
    assert res.returncode == 2 and "does not exist" in res.stderr
    assert "corp-utils" in HostedNames([str(tmp_path)])
    wheel.unlink()
    res = forget("Corp_Utils", tmp_path)
    assert res.returncode == 0, res.stderr
    assert "corp-utils" not in HostedNames([str(tmp_path)])


def test_a_refused_forget_changes_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    res = forget("never-hosted", empty)
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert list(empty.iterdir()) == []  # not even a .pkgserver/lock


def test_forget_through_a_linked_state_folder_is_refused(tmp_path: Path) -> None:
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    victim = victim_dir / "hosted-projects"
    victim.write_text("corp-utils\n")
    victim.chmod(0o600)
    root = tmp_path / "packages"
    root.mkdir()
    (root / ".pkgserver").symlink_to(victim_dir)
    res = forget("corp-utils", root)
    assert res.returncode == 2 and "not a real folder" in res.stderr, res.stderr
    assert victim.read_text() == "corp-utils\n" and victim.stat().st_mode & 0o777 == 0o600


# -- the attack, with real clients ---------------------------------------------------------------------
@pytest.mark.e2e
def test_removed_project_is_not_installed_from_the_public_index(tmp_path: Path) -> None:
    public = tmp_path / "public"
    private = tmp_path / "private"
    make_wheel(public, "corp-utils", "9.9", summary="published by someone else")
    ours = make_wheel(private, "corp-utils", "1.0", summary="ours")
    for d in (public, private):
        old = time.time() - 60
        for f in d.iterdir():
            os.utime(f, (old, old))
    env = client_env(tmp_path / "client")

    def pip_download(index: str) -> subprocess.CompletedProcess[str]:
        dest = tmp_path / f"dl-{time.monotonic_ns()}"
        return run_client(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-d",
                dest,
                "--index-url",
                index,
                "corp-utils",
            ],
            env,
            ok=None,
        )

    with running_server("--disable-fallback", public) as pypi:
        with running_server("--fallback-url", pypi.url + "simple/", private) as srv:
            index = srv.url + "simple/"
            res = pip_download(index)
            assert res.returncode == 0 and "corp_utils-1.0" in output(res), output(res)
            ours.unlink()
            deadline = time.monotonic() + 10
            while srv.project_json("corp-utils").json()["files"]:
                assert time.monotonic() < deadline, "the removal was not noticed"
                time.sleep(0.05)
            res = pip_download(index)
            assert res.returncode != 0, output(res)
            assert "9.9" not in output(res) and "No matching distribution" in output(res)
            assert srv.get("/simple/corp-utils/").status == 200
            # The admin lifts the claim: the name goes to the fallback again within a second.
            assert forget("corp-utils", private).returncode == 0
            deadline = time.monotonic() + 5
            while srv.get("/simple/corp-utils/").status != 303:
                assert time.monotonic() < deadline, "forget was not seen by the running server"
                time.sleep(0.05)
            res = pip_download(index)
            assert res.returncode == 0 and "corp_utils-9.9" in output(res), output(res)
