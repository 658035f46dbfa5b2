"""What a review of the web pages, records and admin commands found, one test per finding
(each fails without its fix)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from builders import make_wheel
from conftest import make_testapp, scan
from server import server_env

from pkgserver import records
from pkgserver.catalog import DistFile, Project
from pkgserver.records import UploadLog, load_yanks


def _file(version: str, name: str = "big") -> DistFile:
    return DistFile(
        filename=f"{name}-{version}-py3-none-any.whl",
        relpath=f"{name}-{version}-py3-none-any.whl",
        root="/nowhere",
        project=name,
        version=version,
        kind="bdist_wheel",
        size=1,
        mtime_ns=0,
        ino=0,
        sha256="0" * 64,
        extra_hashes=(),
        requires_python=None,
        metadata_sha256=None,
        summary=None,
        display_name=None,
    )


def test_a_project_computes_its_versions_and_current_once() -> None:
    project = Project("big", [_file(f"1.0.dev{i}") for i in range(2000)])
    calls = 0
    real = Project._grouped

    def counting(self: Project) -> dict[str, list[DistFile]]:
        nonlocal calls
        calls += 1
        return real(self)

    Project._grouped = counting  # type: ignore[method-assign]
    try:
        assert project.current == "1.0.dev1999"
        for _ in range(100):
            assert project.current == "1.0.dev1999"
            project.files_of("1.0.dev5")
    finally:
        Project._grouped = real  # type: ignore[method-assign]
    assert project._current == "1.0.dev1999"
    assert project._by_version is not None and len(project._by_version) == 2000


def test_a_project_page_lists_old_releases_as_links_only(tmp_path: Path) -> None:
    for i in range(130):
        make_wheel(tmp_path, "big", f"1.{i}")
    app, _ = make_testapp([tmp_path])
    soup = BeautifulSoup(app.get("/project/big/").text, "html.parser")
    assert len(soup.select("details.release")) == 100
    older = soup.select("section.releases > p a")
    assert [a.get_text() for a in older] == [f"1.{i}" for i in range(29, -1, -1)]
    # An old release's own page shows its files.
    page = BeautifulSoup(app.get("/project/big/1.3/").text, "html.parser")
    assert page.select_one("details.release[open] summary a").get_text() == "1.3"


def test_install_command_pins_a_prerelease_current(tmp_path: Path) -> None:
    make_wheel(tmp_path, "pre", "2.0rc1")
    app, _ = make_testapp([tmp_path])
    text = app.get("/project/pre/").text
    assert "pre==2.0rc1</code>" in text


# -- the records beside the files ----------------------------------------------------------------
def test_deeply_nested_yank_record_is_reported_not_fatal(tmp_path: Path) -> None:
    (tmp_path / ".pkgserver").mkdir()
    (tmp_path / ".pkgserver" / "yanked.json").write_text("[" * 100_000)
    assert load_yanks([str(tmp_path)]) == {}


def test_a_fifo_in_place_of_a_record_does_not_block(tmp_path: Path) -> None:
    (tmp_path / ".pkgserver").mkdir()
    os.mkfifo(tmp_path / ".pkgserver" / "yanked.json")
    os.mkfifo(tmp_path / ".pkgserver" / "uploads.jsonl")
    done = threading.Event()

    def read() -> None:
        load_yanks([str(tmp_path)])
        UploadLog([str(tmp_path)]).uploader("x.whl", "0")
        done.set()

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(10), "reading a FIFO record blocked"


def test_upload_log_is_never_written_through_a_link(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside.txt"
    (root / ".pkgserver").mkdir(parents=True)
    outside.write_text("")
    (root / ".pkgserver" / "uploads.jsonl").symlink_to(outside)
    UploadLog([str(root)]).record("evil-1.0.whl", "0" * 64, "mallory")
    assert outside.read_text() == ""
    linked_dir = tmp_path / "root2"
    linked_dir.mkdir()
    (linked_dir / ".pkgserver").symlink_to(tmp_path)
    UploadLog([str(linked_dir)]).record("evil-1.0.whl", "0" * 64, "mallory")
    assert not (tmp_path / "uploads.jsonl").exists()


def test_a_large_upload_log_keeps_its_newest_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records, "MAX_RECORD_BYTES", 4096)
    writer = UploadLog([str(tmp_path)])
    for i in range(100):
        writer.record(f"p-{i}.whl", f"{i:064d}", f"user{i}")
    reader = UploadLog([str(tmp_path)])
    assert reader.uploader("p-99.whl", f"{99:064d}") == "user99"
    assert reader.uploader("p-0.whl", f"{0:064d}") is None  # beyond the newest 4 KB
    writer.record("p-100.whl", f"{100:064d}", "late")  # appended: read incrementally
    reader._watch.every = 0.0
    assert reader.uploader("p-100.whl", f"{100:064d}") == "late"
    assert reader.uploader("p-99.whl", f"{99:064d}") == "user99"


# -- redirects behind --server-base-url ---------------------------------------------------------
def test_redirects_behind_a_base_url_are_quoted(pkgdir: Path) -> None:
    app, _ = make_testapp([pkgdir], server_base_url="https://pkgs.example.com/")
    res = app.get("/project/demo-pkg/1%0d%0ab", status=301)
    assert res.headers["Location"] == "https://pkgs.example.com/project/demo-pkg/1%0D%0Ab/"
    res = app.get("/project/demo-pkg/x%3Fq=1%23f", status=301)
    assert "?" not in res.headers["Location"] and "#" not in res.headers["Location"]


# -- the command line ----------------------------------------------------------------------------
def _pkgserver(
    *args: str | os.PathLike[str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pkgserver", *map(str, args)],
        capture_output=True,
        text=True,
        env=server_env(),
        cwd=cwd,
        timeout=60,
    )


@pytest.mark.parametrize("spelling", [["--reason", "-x"], ["--reas", "-x"], ["--reason=-x"]])
def test_a_reason_may_start_with_a_dash(tmp_path: Path, spelling: list[str]) -> None:
    make_wheel(tmp_path, "demo", "1.0")
    res = _pkgserver("yank", "demo", "1.0", *spelling, tmp_path)
    assert res.returncode == 0, res.stderr
    assert load_yanks([str(tmp_path)]) == {"demo": {"1.0": "-x"}}


def test_check_reports_what_the_index_skips_and_leaves_the_cache_alone(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    make_wheel(root, "demo", "1.0")
    make_wheel(tmp_path, "stray", "1.0")
    (root / "stray-1.0-py3-none-any.whl").symlink_to(tmp_path / "stray-1.0-py3-none-any.whl")
    cache_dir = tmp_path / "cache"
    from pkgserver.cache import DescriptionCache

    cache = DescriptionCache.open(str(cache_dir), [str(root)])
    scan(root, cache=cache)
    assert cache is not None
    cache.close()
    # As if a newer pkgserver had written it: opening it as a cache would start it afresh.
    import sqlite3

    db = sqlite3.connect(cache.path)
    db.execute("UPDATE meta SET value = '999' WHERE key = 'schema'")
    db.commit()
    db.close()

    def state() -> dict[str, tuple[int, bytes]]:
        # The database itself (any reader of a WAL database may create its -wal and -shm)
        return {
            p.name: (p.stat().st_mtime_ns, p.read_bytes())
            for p in cache_dir.iterdir()
            if p.name.endswith(".sqlite3")
        }

    before = state()
    res = _pkgserver("check", "--cache-dir", cache_dir, root)
    assert res.returncode == 1
    assert "a link that leaves the directory" in res.stdout
    assert "stray-1.0-py3-none-any.whl" in res.stdout
    assert state() == before


def test_remove_survives_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    make_wheel(tmp_path, "demo", "1.0")
    sub = os.path.join(os.fsencode(tmp_path), b"caf\xe9")
    os.mkdir(sub)
    make_wheel(os.fsdecode(sub), "demo", "1.0")
    res = _pkgserver("remove", "demo", "1.0", tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert not list(tmp_path.rglob("*.whl"))
