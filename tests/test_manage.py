"""The admin's commands, run the way an admin runs them: ``python -m pkgserver remove|yank|
unyank|check|passwd ...`` as processes, on package directories built in tmp_path, and against a
live server where the command must reach one (marked e2e).

Every refused command is checked for what it must not do: a traceback, more than one line, a
changed file (the whole tree, ``.pkgserver/`` included, is compared before and after). Pick-up
delays of a running server are measured and printed as ``TIMING <label>: <seconds>`` (see them
with ``-rP``).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
import os
import re
import select
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from builders import make_sdist, make_wheel
from conftest import scan
from forms import upload_form
from server import Server, client_env, run_client, running_server, server_env

from pkgserver.records import load_yanks

PY = sys.executable
JSON_V1 = "application/vnd.pypi.simple.v1+json"
POLL = 0.05  # seconds between two looks at a running server
PICKUP_LIMIT = 1.5  # the promise is "within a second"; a little slack for a loaded machine
TIMEOUT = 5.0  # a change not seen by then is a failure, not a slow machine

W10 = "demo_pkg-1.0-py3-none-any.whl"
S10 = "demo_pkg-1.0.tar.gz"
W20 = "demo_pkg-2.0-py3-none-any.whl"
S20 = "demo_pkg-2.0.tar.gz"
EXTRA = "extra/demo_pkg_extra-2.0-py3-none-any.whl"
OTHER = "other-2.0.tar.gz"
DEMO_FILES = [W10, S10, W20, S20]


# -- helpers ---------------------------------------------------------------------------------------
def settled(directory: Path) -> Path:
    """Backdate every file, so that a starting server lists them at once."""
    old = time.time() - 120
    for p in directory.rglob("*"):
        if p.is_file():
            os.utime(p, (old, old))
    return directory


def tree(directory: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``directory`` (hidden ones too) -> (sha256, mtime_ns)."""
    out = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file():
            out[p.relative_to(directory).as_posix()] = (
                hashlib.sha256(p.read_bytes()).hexdigest(),
                p.stat().st_mtime_ns,
            )
    return out


def yanks_of(directory: Path) -> object:
    return json.loads((directory / ".pkgserver" / "yanked.json").read_text("utf-8"))


def shown(res: subprocess.CompletedProcess[str]) -> str:
    return f"exit {res.returncode}\n--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}"


def assert_usage_error(res: subprocess.CompletedProcess[str], message: str) -> None:
    """Exit 2, nothing on stdout, exactly ``pkgserver: error: <message>`` on stderr."""
    assert res.returncode == 2, shown(res)
    assert "Traceback" not in res.stderr, shown(res)
    assert res.stdout == "", shown(res)
    assert res.stderr == f"pkgserver: error: {message}\n", shown(res)


def wait_for(predicate: Callable[[], object], what: str, timeout: float = TIMEOUT) -> float:
    """Poll every POLL seconds until ``predicate()`` is true; return the seconds it took."""
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            pytest.fail(f"not true within {timeout}s: {what}")
        time.sleep(POLL)


def timing(label: str, seconds: float) -> None:
    print(f"TIMING {label}: {seconds:.3f}")


def links(html: str) -> dict[str, dict[str, str]]:
    """filename -> attributes of each <a> of a simple page (attribute values still escaped)."""
    out = {}
    for attrs, text in re.findall(r"<a ([^>]*)>([^<]*)</a>", html):
        out[text] = dict(re.findall(r'([\w-]+)="([^"]*)"', attrs))
    return out


def json_files(srv: Server, project: str = "demo-pkg") -> dict[str, object]:
    """filename -> PEP 691 "yanked" value of each file of the project page."""
    res = srv.project_json(project)
    assert res.status == 200, res
    return {f["filename"]: f["yanked"] for f in res.json()["files"]}


@pytest.fixture
def cmd(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m pkgserver ARGS`` as an admin would, with a HOME and caches of its own and
    no PKGSERVER_* variable of this machine."""
    home = tmp_path / "admin-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PKGSERVER_")}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), PYTHONUNBUFFERED="1")

    def run(
        *args: str | os.PathLike[str], cwd: Path | None = None, stdin: str = ""
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [PY, "-m", "pkgserver", *(os.fspath(a) for a in args)],
            input=stdin.encode(),
            capture_output=True,
            env=env,
            cwd=cwd or tmp_path,
            timeout=60,
            check=False,
        )
        # Decoded by hand: text mode would turn the progress bar's "\r" into "\n".
        return subprocess.CompletedProcess(
            res.args, res.returncode, res.stdout.decode(), res.stderr.decode()
        )

    return run


@pytest.fixture
def pkgs(tmp_path: Path) -> Path:
    """demo-pkg 1.0 and 2.0 (a wheel and an sdist each; the 2.0 wheel signed and attested), a
    project whose name starts the same (demo-pkg-extra, in a sub-folder) and another one."""
    d = tmp_path / "pkgs"
    make_wheel(d, "demo-pkg", "1.0", summary="A demo")
    make_sdist(d, "demo-pkg", "1.0", summary="A demo")
    make_wheel(d, "demo-pkg", "2.0", summary="A demo, newer")
    make_sdist(d, "demo-pkg", "2.0", summary="A demo, newer")
    (d / f"{W20}.asc").write_text("-----BEGIN PGP SIGNATURE-----\n")
    (d / f"{W20}.attestations.json").write_text("[]\n")
    (d / f"{W10}.asc").write_text("-----BEGIN PGP SIGNATURE-----\n")
    make_wheel(d / "extra", "demo-pkg-extra", "2.0")
    make_sdist(d, "other", "2.0")
    return settled(d)


# == yank ===========================================================================================
# The project spelled as a user might, the version not normalized ("2.0.0" for files "2.0").
YANK = ["Demo_Pkg", "2.0.0"]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        pytest.param([*YANK, "--reason", "broken", "@DIR"], "broken", id="reason-before-dir"),
        pytest.param([*YANK, "@DIR", "--reason", "broken"], "broken", id="reason-after-dir"),
        pytest.param(["--reason", "broken", *YANK, "@DIR"], "broken", id="reason-first"),
        pytest.param([*YANK, "@DIR", "--reason=broken"], "broken", id="reason-equals"),
        pytest.param([*YANK, "@DIR"], "", id="no-reason"),
        pytest.param([*YANK, "@DIR", "--reason", "   "], "", id="blank-reason-is-none"),
        pytest.param(
            [*YANK, "--reason", "  café — naïve  ", "@DIR"], "café — naïve", id="non-ascii"
        ),
        pytest.param([*YANK, "--reason", "x" * 500, "@DIR"], "x" * 500, id="500-chars"),
    ],
)
def test_yank_records_the_release(
    cmd: Callable[..., subprocess.CompletedProcess[str]],
    pkgs: Path,
    args: list[str],
    reason: str,
) -> None:
    before = tree(pkgs)
    res = cmd("yank", *[str(pkgs) if a == "@DIR" else a for a in args])
    assert res.returncode == 0, shown(res)
    assert res.stdout == ""
    suffix = f" ({reason})" if reason else ""
    assert res.stderr == f"yanked demo-pkg 2.0{suffix}\n"
    # The version as the files spell it, under the normalized name.
    assert yanks_of(pkgs) == {"yanked": {"demo-pkg": {"2.0": reason}}}
    after = tree(pkgs)
    assert {k: v for k, v in after.items() if not k.startswith(".pkgserver/")} == before
    assert set(after) - set(before) <= {".pkgserver/yanked.json", ".pkgserver/lock"}
    assert (pkgs / ".pkgserver" / "yanked.json").stat().st_mode & 0o777 == 0o644


def test_yank_twice_says_already_and_changes_nothing(
    cmd: Callable[..., subprocess.CompletedProcess[str]], pkgs: Path
) -> None:
    assert cmd("yank", "demo-pkg", "2.0", "--reason", "bad", pkgs).returncode == 0
    record = pkgs / ".pkgserver" / "yanked.json"
    st, content = record.stat(), record.read_bytes()
    res = cmd("yank", "DEMO.PKG", "2", "--reason", "bad", pkgs)
    assert res.returncode == 0, shown(res)
    assert res.stderr == "demo-pkg 2.0 was yanked already (bad)\n"
    assert record.read_bytes() == content
    assert (record.stat().st_ino, record.stat().st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    # Another reason replaces the first one.
    res = cmd("yank", "demo-pkg", "2.0", "--reason", "worse", pkgs)
    assert (res.returncode, res.stderr) == (0, "yanked demo-pkg 2.0 (worse)\n"), shown(res)
    # Yanking a second release keeps the first.
    res = cmd("yank", "demo-pkg", "1.0", pkgs)
    assert (res.returncode, res.stderr) == (0, "yanked demo-pkg 1.0\n"), shown(res)
    assert yanks_of(pkgs) == {"yanked": {"demo-pkg": {"1.0": "", "2.0": "worse"}}}


_CONTROL = "the reason must be one line of text, without control characters"
_NO_DIR = "package directory '@MISSING' does not exist"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["nope", "1.0", "@DIR"], "no project 'nope' in @DIR", id="unknown-project"),
        pytest.param(
            ["demo-pkg", "3.0", "@DIR"],
            "demo-pkg has no version '3.0' in @DIR (it has: 1.0, 2.0)",
            id="unknown-version",
        ),
        # demo-pkg-extra has a 2.0, demo-pkg a 1.0: neither answers for the other.
        pytest.param(
            ["demo-pkg-extra", "1.0", "@DIR"],
            "demo-pkg-extra has no version '1.0' in @DIR (it has: 2.0)",
            id="prefix-project",
        ),
        pytest.param(
            ["demo pkg!", "1.0", "@DIR"], "invalid project name 'demo pkg!'", id="bad-name"
        ),
        pytest.param(["demo-pkg", "1 0", "@DIR"], "invalid version '1 0'", id="bad-version"),
        pytest.param(["demo-pkg", "1.0", "@DIR", "--reason", "two\nlines"], _CONTROL, id="newline"),
        pytest.param(["demo-pkg", "1.0", "@DIR", "--reason", "cr\rhere"], _CONTROL, id="cr"),
        pytest.param(["demo-pkg", "1.0", "@DIR", "--reason", "tab\there"], _CONTROL, id="tab"),
        pytest.param(["demo-pkg", "1.0", "@DIR", "--reason", "\x1b[31mred"], _CONTROL, id="esc"),
        pytest.param(["demo-pkg", "1.0", "@DIR", "--reason", "del\x7f"], _CONTROL, id="del"),
        pytest.param(
            ["demo-pkg", "1.0", "@DIR", "--reason", "x" * 501],
            "the reason is longer than 500 characters",
            id="501-chars",
        ),
        pytest.param(["demo-pkg", "1.0", "@MISSING"], _NO_DIR, id="missing-dir"),
        pytest.param(["demo-pkg", "1.0", "@DIR", "@MISSING"], _NO_DIR, id="second-dir-missing"),
        pytest.param(
            ["demo-pkg", "1.0", "@DIR", "--reason"],
            "argument --reason: expected one argument",
            id="reason-without-text",
        ),
        pytest.param(
            ["demo-pkg", "1.0", "@DIR", "--bogus"],
            "unrecognized arguments: --bogus",
            id="unknown-option",
        ),
    ],
)
def test_bad_yank_is_one_line_status_2_and_changes_nothing(
    cmd: Callable[..., subprocess.CompletedProcess[str]],
    pkgs: Path,
    tmp_path: Path,
    args: list[str],
    message: str,
) -> None:
    where = {"@DIR": str(pkgs), "@MISSING": str(tmp_path / "missing")}
    args = [where.get(a, a) for a in args]
    for key, value in where.items():
        message = message.replace(key, value)
    before = tree(pkgs)
    # In a directory with no record yet: none is created (not even .pkgserver/).
    assert_usage_error(cmd("yank", *args), message)
    assert tree(pkgs) == before
    assert not (pkgs / ".pkgserver").exists()
    # In one with a record: it is left as it was, byte for byte and mtime.
    (pkgs / ".pkgserver").mkdir()
    (pkgs / ".pkgserver" / "yanked.json").write_text('{"yanked": {"demo-pkg": {"1.0": "old"}}}')
    before = tree(pkgs)
    assert_usage_error(cmd("yank", *args), message)
    assert tree(pkgs) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "the following arguments are required: PROJECT, VERSION"),
        (["demo-pkg"], "the following arguments are required: VERSION"),
    ],
)
def test_yank_with_missing_arguments_is_a_usage_error(
    cmd: Callable[..., subprocess.CompletedProcess[str]],
    pkgs: Path,
    args: list[str],
    message: str,
) -> None:
    before = tree(pkgs)
    res = cmd("yank", *args, cwd=pkgs)
    assert res.returncode == 2, shown(res)
    assert "Traceback" not in res.stderr and res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pkgserver: error: {message}"), shown(res)
    assert tree(pkgs) == before


def test_yank_reason_that_is_not_utf8_is_a_usage_error(pkgs: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PKGSERVER_")}
    env["HOME"] = str(tmp_path)
    before = tree(pkgs)
    res = subprocess.run(
        [PY, "-m", "pkgserver", "yank", "demo-pkg", "2.0", "--reason", b"caf\xe9", pkgs],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    stderr = res.stderr.decode("utf-8", "replace")
    assert b"Traceback" not in res.stderr, stderr
    assert res.returncode == 2, stderr
    assert stderr.startswith("pkgserver: error: ") and stderr.count("\n") == 1, stderr
    assert {k: v for k, v in tree(pkgs).items() if k != ".pkgserver/lock"} == before


@pytest.mark.parametrize("bad", ["\u0085", "\u009b31m", "\u2028"], ids=["NEL", "CSI", "LS"])
def test_yank_reason_with_unicode_line_breaks_or_controls_is_refused(
    cmd: Callable[..., subprocess.CompletedProcess[str]], pkgs: Path, bad: str
) -> None:
    res = cmd("yank", "demo-pkg", "2.0", "--reason", f"one{bad}two", pkgs)
    assert_usage_error(res, _CONTROL)
    assert not (pkgs / ".pkgserver" / "yanked.json").exists()


def test_yank_writes_to_the_first_directory_and_unyank_clears_every_one(
    cmd: Callable[..., subprocess.CompletedProcess[str]], pkgs: Path, tmp_path: Path
) -> None:
    first = tmp_path / "first"
    make_wheel(first, "first-only", "1.0")
    # demo-pkg is only in the second directory: its yank is still recorded in the first.
    res = cmd("yank", "demo-pkg", "1.0", "--reason", "r", first, pkgs)
    assert res.returncode == 0, shown(res)
    assert yanks_of(first) == {"yanked": {"demo-pkg": {"1.0": "r"}}}
    assert not (pkgs / ".pkgserver").exists()
    # A record in the second directory too (copied there by hand): unyank clears both.
    (pkgs / ".pkgserver").mkdir()
    shutil.copy(first / ".pkgserver" / "yanked.json", pkgs / ".pkgserver" / "yanked.json")
    res = cmd("unyank", "demo-pkg", "1.0", first, pkgs)
    assert (res.returncode, res.stderr) == (0, "unyanked demo-pkg 1.0\n"), shown(res)
    assert yanks_of(first) == {"yanked": {}}
    assert yanks_of(pkgs) == {"yanked": {}}


# == unyank =========================================================================================
def test_unyank_undoes_a_yank(
    cmd: Callable[..., subprocess.CompletedProcess[str]], pkgs: Path
) -> None:
    assert cmd("yank", "demo-pkg", "2.0", "--reason", "oops", pkgs).returncode == 0
    assert cmd("yank", "demo-pkg", "1.0", pkgs).returncode == 0
    before = tree(pkgs)
    res = cmd("unyank", "Demo.Pkg", "2.0.0", pkgs)
    assert res.returncode == 0, shown(res)
    assert (res.stdout, res.stderr) == ("", "unyanked demo-pkg 2.0\n")
    assert yanks_of(pkgs) == {"yanked": {"demo-pkg": {"1.0": ""}}}
    res = cmd("unyank", "demo-pkg", "1.0", pkgs)
    assert (res.returncode, res.stderr) == (0, "unyanked demo-pkg 1.0\n"), shown(res)
    assert yanks_of(pkgs) == {"yanked": {}}
    after = tree(pkgs)
    assert {k: v for k, v in after.items() if not k.startswith(".pkgserver/")} == {
        k: v for k, v in before.items() if not k.startswith(".pkgserver/")
    }


def test_bad_unyank_is_one_line_status_2_and_changes_nothing(
    cmd: Callable[..., subprocess.CompletedProcess[str]], pkgs: Path, tmp_path: Path
) -> None:
    d, missing = str(pkgs), str(tmp_path / "missing")
    before = tree(pkgs)
    # Nothing yanked at all: no record is created.
    assert_usage_error(cmd("unyank", "demo-pkg", "2.0", d), f"demo-pkg 2.0 is not yanked in {d}")
    assert tree(pkgs) == before
    assert cmd("yank", "demo-pkg", "2.0", d).returncode == 0
    before = tree(pkgs)
    for args, message in [
        (["demo-pkg", "1.0", d], f"demo-pkg 1.0 is not yanked in {d}"),
        (["nope", "2.0", d], f"nope 2.0 is not yanked in {d}"),
        (["demo-pkg-extra", "2.0", d], f"demo-pkg-extra 2.0 is not yanked in {d}"),
        (["demo pkg", "2.0", d], "invalid project name 'demo pkg'"),
        (
            ["demo-pkg", "2.0", missing],
            f"package directory {missing!r} does not exist",
        ),
    ]:
        assert_usage_error(cmd("unyank", *args), message)
        assert tree(pkgs) == before
    res = cmd("unyank", "demo-pkg")
    assert res.returncode == 2 and res.stderr.startswith(
        "pkgserver: error: the following arguments are required: VERSION"
    ), shown(res)
    assert tree(pkgs) == before


# == remove =========================================================================================
def test_remove_one_version_takes_its_files_and_sidecars_only(
    cmd: Callable[..., subprocess.CompletedProcess[str]], pkgs: Path
) -> None:
    before = tree(pkgs)
    res = cmd("remove", "Demo_Pkg", "2.0.0", pkgs)
    assert res.returncode == 0, shown(res)
    assert res.stdout == f"removed {pkgs / W20}\nremoved {pkgs / S20}\n"
    assert res.stderr == "demo-pkg 2.0: 2 file(s) removed\n"
    gone = {W20, S20, f"{W20}.asc", f"{W20}.attestations.json"}
    assert tree(pkgs) == {k: v for k, v in before.items() if k not in gone}


def test_remove_a_whole_project(
    cmd: Callable[..., subprocess.CompletedProcess[str]], pkgs: Path
) -> None:
    before = tree(pkgs)
    res = cmd("remove", "DEMO-pkg", pkgs)
    assert res.returncode == 0, shown(res)
    # Oldest version first, then by path.
    assert res.stdout.splitlines() == [f"removed {pkgs / f}" for f in DEMO_FILES]
    assert res.stderr == (
        "demo-pkg: 4 file(s) removed\n"
        "demo-pkg has no files left; it stays claimed (never redirected to the fallback index) "
        "until 'pkgserver forget demo-pkg'\n"
    )
    assert tree(pkgs) == {
        EXTRA: before[EXTRA],
        OTHER: before[OTHER],
    }
    # Nothing left to remove now.
    assert_usage_error(cmd("remove", "demo-pkg", pkgs), f"no project 'demo-pkg' in {pkgs}")


@pytest.mark.parametrize(
    "args",
    [["-n", "demo-pkg", "2.0", "@DIR"], ["demo-pkg", "2.0", "@DIR", "--dry-run"]],
    ids=["-n-first", "--dry-run-last"],
)
def test_remove_dry_run_lists_and_removes_nothing(
    cmd: Callable[..., subprocess.CompletedProcess[str]], pkgs: Path, args: list[str]
) -> None:
    before = tree(pkgs)
    res = cmd("remove", *[str(pkgs) if a == "@DIR" else a for a in args])
    assert res.returncode == 0, shown(res)
    assert res.stdout == f"would remove {pkgs / W20}\nwould remove {pkgs / S20}\n"
    assert res.stderr == ""
    assert tree(pkgs) == before
    res = cmd("remove", "-n", "demo-pkg", pkgs)
    assert res.returncode == 0, shown(res)
    assert res.stdout.splitlines() == [f"would remove {pkgs / f}" for f in DEMO_FILES]
    assert tree(pkgs) == before


def test_bad_remove_is_one_line_status_2_and_removes_nothing(
    cmd: Callable[..., subprocess.CompletedProcess[str]], pkgs: Path, tmp_path: Path
) -> None:
    d = str(pkgs)
    missing = str(tmp_path / "missing")
    before = tree(pkgs)
    for args, message in [
        (["nope", d], f"no project 'nope' in {d}"),
        (["nope", "1.0", d], f"no project 'nope' in {d}"),
        (["demo-pkg", "3.0", d], f"demo-pkg has no version '3.0' in {d} (it has: 1.0, 2.0)"),
        (["demo pkg", d], "invalid project name 'demo pkg'"),
        (
            ["demo-pkg", "1.0", missing],
            f"package directory {missing!r} does not exist",
        ),
        (
            ["demo-pkg", missing],
            f"package directory {missing!r} does not exist",
        ),
        (["demo-pkg", "1.0", d, "--bogus"], "unrecognized arguments: --bogus"),
    ]:
        assert_usage_error(cmd("remove", *args), message)
        assert tree(pkgs) == before
    res = cmd("remove")
    assert res.returncode == 2 and res.stderr.startswith(
        "pkgserver: error: the following arguments are required: PROJECT"
    ), shown(res)
    assert tree(pkgs) == before


def test_remove_refuses_a_directory_named_like_a_version(
    cmd: Callable[..., subprocess.CompletedProcess[str]], pkgs: Path, tmp_path: Path
) -> None:
    # A package directory called "1.0" in the current directory, holding demo-pkg 1.0 and 3.0.
    odd = tmp_path / "1.0"
    make_wheel(odd, "demo-pkg", "1.0")
    make_wheel(odd, "demo-pkg", "3.0")
    before_odd, before = tree(odd), tree(pkgs)
    ambiguous = "'1.0' is both a directory and a version: write ./1.0 for the directory"
    for args in (["demo-pkg", "1.0"], ["demo-pkg", "1.0", str(pkgs)]):
        assert_usage_error(cmd("remove", *args, cwd=tmp_path), ambiguous)
        assert (tree(odd), tree(pkgs)) == (before_odd, before)
    # Written as a path it is the directory; a version before it is a version.
    res = cmd("remove", "demo-pkg", "3.0", "./1.0", cwd=tmp_path)
    assert res.returncode == 0, shown(res)
    assert res.stdout == "removed ./1.0/demo_pkg-3.0-py3-none-any.whl\n"
    assert sorted(tree(odd)) == [W10]
    res = cmd("remove", "demo-pkg", "./1.0", cwd=tmp_path)
    assert res.returncode == 0, shown(res)
    assert res.stdout == f"removed ./1.0/{W10}\n"
    assert tree(odd) == {}
    assert tree(pkgs) == before


def test_remove_of_a_yanked_version_clears_its_yank(
    cmd: Callable[..., subprocess.CompletedProcess[str]], pkgs: Path
) -> None:
    assert cmd("yank", "demo-pkg", "2.0", "--reason", "bad", pkgs).returncode == 0
    assert cmd("yank", "demo-pkg", "1.0", pkgs).returncode == 0
    assert cmd("yank", "other", "2.0", pkgs).returncode == 0
    # A dry run keeps the yank.
    assert cmd("remove", "-n", "demo-pkg", "2.0", pkgs).returncode == 0
    assert yanks_of(pkgs) == {
        "yanked": {"demo-pkg": {"1.0": "", "2.0": "bad"}, "other": {"2.0": ""}}
    }
    res = cmd("remove", "demo-pkg", "2.0", pkgs)
    assert res.returncode == 0, shown(res)
    assert yanks_of(pkgs) == {"yanked": {"demo-pkg": {"1.0": ""}, "other": {"2.0": ""}}}
    # The same version brought back is not yanked.
    make_wheel(pkgs, "demo-pkg", "2.0")
    assert_usage_error(
        cmd("unyank", "demo-pkg", "2.0", pkgs), f"demo-pkg 2.0 is not yanked in {pkgs}"
    )
    res = cmd("remove", "demo-pkg", pkgs)
    assert res.returncode == 0, shown(res)
    assert yanks_of(pkgs) == {"yanked": {"other": {"2.0": ""}}}


# == check ==========================================================================================
CHECKED = re.compile(r"checked (\d+) files in \d+\.\ds \((.*)\): (\d+) problem\(s\)\n")


def test_check_of_a_clean_directory(
    cmd: Callable[..., subprocess.CompletedProcess[str]], pkgs: Path
) -> None:
    # Signatures, attestations and the records in .pkgserver/ are not problems.
    assert cmd("yank", "demo-pkg", "1.0", pkgs).returncode == 0
    before = tree(pkgs)
    res = cmd("check", pkgs)
    assert res.returncode == 0, shown(res)
    assert res.stdout == ""
    m = CHECKED.fullmatch(res.stderr)
    assert m, shown(res)
    assert m.groups()[0] == "6" and m.groups()[2] == "0"
    assert m.groups()[1] == "no index cache to compare with"
    assert tree(pkgs) == before


def test_check_reports_what_the_index_cannot_serve(
    cmd: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    d = tmp_path / "messy"
    make_wheel(d, "good", "1.0")
    (d / "junk.whl").write_bytes(b"not a wheel")
    (d / "README.txt").write_text("read me\n")
    (d / "notes").mkdir()
    (d / "notes" / "todo.md").write_text("- x\n")
    # Two sdists whose names differ only in case: one filename for an installer.
    make_sdist(d, "demo-pkg", "1.0")
    make_sdist(d, "demo-pkg", "1.0", filename="Demo_Pkg-1.0.tar.gz")
    # Two sdists of one release, .tar.gz and .zip.
    make_sdist(d, "zipped", "3.0")
    make_sdist(d, "zipped", "3.0", fmt="zip")
    # Not problems: a hidden file, a sidecar, a record.
    (d / ".hidden.whl").write_bytes(b"x")
    (d / "good-1.0-py3-none-any.whl.asc").write_text("sig\n")
    before = tree(d)
    res = cmd("check", d)
    assert res.returncode == 1, shown(res)
    assert "Traceback" not in res.stderr
    problems = res.stdout.splitlines()
    assert len(problems) == 5, shown(res)
    # Which of two duplicates is named first follows the directory's order.
    dup_case = [p for p in problems if p.startswith("duplicate ") and "Demo_Pkg" in p]
    dup_zip = [p for p in problems if p.startswith("duplicate ") and "zipped" in p]
    assert len(dup_case) == 1 and len(dup_zip) == 1, problems
    a, b = str(d / "Demo_Pkg-1.0.tar.gz"), str(d / "demo_pkg-1.0.tar.gz")
    assert dup_case[0] in (
        f"duplicate {a}: same filename as {b}",
        f"duplicate {b}: same filename as {a}",
    )
    a, b = str(d / "zipped-3.0.tar.gz"), str(d / "zipped-3.0.zip")
    tail = " once names are normalized (an installer may take either)"
    assert dup_zip[0] in (
        f"duplicate {a}: the same distribution as {b}{tail}",
        f"duplicate {b}: the same distribution as {a}{tail}",
    )
    rest = sorted(set(problems) - {dup_case[0], dup_zip[0]})
    assert rest == [
        f"cannot attribute {d / 'README.txt'}: not a distribution file (ignored by the index)",
        f"cannot attribute {d / 'junk.whl'}: Invalid wheel filename (wrong number of parts): "
        "'junk'",
        f"cannot attribute {d / 'notes' / 'todo.md'}: not a distribution file (ignored by the "
        "index)",
    ]
    m = CHECKED.fullmatch(res.stderr)
    assert m and m.group(1) == "6" and m.group(3) == "5", shown(res)
    assert tree(d) == before  # check reads, never writes


def test_check_reports_names_that_normalize_alike(
    cmd: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    d = tmp_path / "dups"
    make_sdist(d, "demo-pkg", "1.0")  # demo_pkg-1.0.tar.gz
    make_sdist(d, "demo-pkg", "1.0", filename="demo-pkg-1.0.tar.gz")  # legacy spelling
    make_wheel(d, "demo-pkg", "1.0")
    make_wheel(d / "sub", "demo-pkg", "1.0")  # the same wheel filename in a sub-folder
    res = cmd("check", d)
    assert res.returncode == 1, shown(res)
    problems = res.stdout.splitlines()
    assert len(problems) == 2, shown(res)
    sdists = {str(d / "demo_pkg-1.0.tar.gz"), str(d / "demo-pkg-1.0.tar.gz")}
    wheels = {str(d / W10), str(d / "sub" / W10)}
    for line in problems:
        m = re.fullmatch(
            r"duplicate (\S+): (same filename as|the same distribution as) (\S+)(.*)", line
        )
        assert m, line
        assert {m.group(1), m.group(3)} in (sdists, wheels), line


def test_check_bad_arguments(
    cmd: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    missing = str(tmp_path / "missing")
    assert_usage_error(cmd("check", missing), f"package directory {missing!r} does not exist")
    res = cmd("check", "--progress", "sometimes", tmp_path)
    assert res.returncode == 2 and res.stderr.startswith(
        "pkgserver: error: argument --progress: invalid choice: 'sometimes'"
    ), shown(res)
    assert res.stderr.count("\n") == 1


def test_check_progress_bar(
    cmd: Callable[..., subprocess.CompletedProcess[str]], pkgs: Path
) -> None:
    res = cmd("check", "--progress", "always", pkgs)
    assert res.returncode == 0, shown(res)
    assert "\r[" in res.stderr and "6/6 100%" in res.stderr, repr(res.stderr)
    # The bar is wiped before the summary, which is the last line.
    assert res.stderr.endswith("\r" + " " * 110 + "\r" + res.stderr.rsplit("\r", 1)[1])
    assert CHECKED.fullmatch(res.stderr.rsplit("\r", 1)[1])
    for mode in (["--progress", "never"], ["--progress", "auto"], []):
        res = cmd("check", *mode, pkgs)  # stderr is a pipe
        assert res.returncode == 0 and "\r" not in res.stderr, repr(res.stderr)
        assert CHECKED.fullmatch(res.stderr), repr(res.stderr)


def test_check_progress_bar_on_a_terminal(pkgs: Path, tmp_path: Path) -> None:
    """With --progress auto (the default) the bar is drawn when stderr is a terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PKGSERVER_")}
    env.update(HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"))
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [PY, "-m", "pkgserver", "check", str(pkgs)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
            env=env,
        )
        os.close(slave)  # the child holds the terminal now: EIO on the master once it exits
        seen = b""
        deadline = time.monotonic() + 30
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                proc.kill()
                proc.communicate()
                pytest.fail(f"check did not finish within 30s; the terminal showed {seen!r}")
            if not select.select([master], [], [], remaining)[0]:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the last writer closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, seen
    finally:
        os.close(master)
    text = seen.decode()
    assert "\r[" in text and "6/6 100%" in text, repr(text)
    assert re.search(r"checked 6 files in \d+\.\ds \(.*\): 0 problem\(s\)\r?\n$", text), repr(text)
    assert out == b""


def _cached_rows(cache_dir: Path) -> int:
    total = 0
    for db in cache_dir.glob("index-*.sqlite3"):
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
                total += conn.execute("SELECT count(*) FROM files").fetchone()[0]
        except sqlite3.Error:
            return 0
    return total


@pytest.mark.e2e
def test_check_finds_a_file_changed_in_place_behind_the_cache(
    cmd: Callable[..., subprocess.CompletedProcess[str]], pkgs: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "index-cache"
    with running_server("--disable-fallback", "--cache-dir", cache, pkgs) as srv:
        srv.wait_listed("demo-pkg", *DEMO_FILES)
        # The cache is written by the server's worker once it serves: wait for all 6 rows.
        wait_for(lambda: _cached_rows(cache) == 6, "the index cache holds 6 files")
    (db,) = cache.glob("index-*.sqlite3")
    res = cmd("check", "--cache-dir", cache, pkgs)
    assert res.returncode == 0, shown(res)
    assert res.stderr.endswith(f"(compared with the index cache {db} (6 entries)): 0 problem(s)\n")

    # Other bytes of the same size, written in place, and the mtime put back: only the hash can
    # tell. (A byte of the module's compressed data: the wheel still opens.)
    path = pkgs / W10
    st = path.stat()
    data = bytearray(path.read_bytes())
    old_sha = hashlib.sha256(data).hexdigest()
    offset = 30 + len(b"demo_pkg/__init__.py") + 2
    data[offset] ^= 0xFF
    with open(path, "r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    new_sha = hashlib.sha256(data).hexdigest()

    res = cmd("check", pkgs, "--cache-dir", cache)
    assert res.returncode == 1, shown(res)
    assert res.stdout == (
        f"hash mismatch {path}: the cache lists sha256 {old_sha} for this size and mtime, the "
        f"file has {new_sha} (changed in place, or damaged)\n"
    )
    assert "(compared with the index cache" in res.stderr and "1 problem(s)" in res.stderr
    # Without the cache there is nothing to compare with.
    res = cmd("check", "--cache-dir", "off", pkgs)
    assert res.returncode == 0, shown(res)
    assert "(no index cache to compare with)" in res.stderr
    # A file rewritten with a new mtime is simply a new file, not a mismatch.
    os.utime(path, None)
    res = cmd("check", "--cache-dir", cache, pkgs)
    assert res.returncode == 0, shown(res)


# == passwd (what tests/test_cli.py does not cover) ====================================================
def test_passwd_delete_of_a_missing_user_changes_nothing(
    cmd: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    ht = tmp_path / "htpasswd"
    res = cmd("passwd", ht, "alice", stdin="s3cret\n")
    assert (res.returncode, res.stderr) == (0, f"set alice in {ht}\n"), shown(res)
    content, mtime = ht.read_bytes(), ht.stat().st_mtime_ns
    assert_usage_error(cmd("passwd", "--delete", ht, "bob"), f"no user 'bob' in {ht}")
    assert (ht.read_bytes(), ht.stat().st_mtime_ns) == (content, mtime)
    # Deleting works once; a second time the user is missing.
    res = cmd("passwd", ht, "--delete", "alice")
    assert (res.returncode, res.stderr) == (0, f"deleted alice in {ht}\n"), shown(res)
    assert ht.read_bytes() == b""
    assert_usage_error(cmd("passwd", "--delete", ht, "alice"), f"no user 'alice' in {ht}")


@pytest.mark.parametrize("user", ["", "ctl\x01user", "new\nline", "trailing "])
def test_passwd_refuses_more_user_names(
    cmd: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, user: str
) -> None:
    ht = tmp_path / "htpasswd"
    assert_usage_error(cmd("passwd", ht, user, stdin="pw\n"), f"invalid user name {user!r}")
    assert not ht.exists()


def test_passwd_password_that_is_not_utf8_is_a_usage_error(tmp_path: Path) -> None:
    ht = tmp_path / "htpasswd"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PKGSERVER_")}
    res = subprocess.run(
        [PY, "-m", "pkgserver", "passwd", str(ht), "alice"],
        input=b"caf\xe9\n",
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    stderr = res.stderr.decode("utf-8", "replace")
    assert b"Traceback" not in res.stderr, stderr
    assert res.returncode == 2 and stderr.startswith("pkgserver: error: "), stderr
    assert not ht.exists()


def _upload(srv: Server, wheel: Path, user: str, password: str) -> int:
    body, ctype = upload_form(wheel)
    auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    res = srv.request(
        "POST", "/", body=body, headers={"Content-Type": ctype, "Authorization": auth}
    )
    return res.status


@pytest.mark.e2e
def test_passwd_delete_reaches_a_running_server(
    cmd: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    ht = tmp_path / "htpasswd"
    assert cmd("passwd", ht, "alice", stdin="alice-pw\n").returncode == 0
    assert cmd("passwd", ht, "bob", stdin="bob-pw\n").returncode == 0
    served = tmp_path / "served"
    served.mkdir()
    staging = tmp_path / "staging"
    first = make_wheel(staging, "bobs-pkg", "1.0")
    second = make_wheel(staging, "bobs-pkg", "2.0")
    alices = make_wheel(staging, "alices-pkg", "1.0")
    with running_server("--disable-fallback", "-P", ht, "-a", "update", served) as srv:
        assert _upload(srv, first, "bob", "bob-pw") == 200
        assert _upload(srv, second, "bob", "wrong") == 403
        res = cmd("passwd", "--delete", ht, "bob")
        assert res.returncode == 0, shown(res)
        statuses: list[int] = []

        def refused() -> bool:
            statuses.append(_upload(srv, second, "bob", "bob-pw"))
            return statuses[-1] in (401, 403)

        delay = wait_for(refused, "bob's upload refused after passwd --delete")
        timing("passwd --delete picked up", delay)
        assert delay < PICKUP_LIMIT, statuses
        assert statuses[-1] == 403
        if statuses[:-1]:  # accepted before the server saw the change
            assert set(statuses[:-1]) == {200}
        else:
            assert not (served / second.name).exists()
        # The other user is untouched.
        assert _upload(srv, alices, "alice", "alice-pw") == 200
    assert (served / first.name).exists() and (served / alices.name).exists()


# == against a running server ===================================================================
def _current_version(srv: Server) -> str:
    res = srv.get("/pypi/demo-pkg/json")
    assert res.status == 200, res
    return str(res.json()["info"]["version"])


@pytest.fixture
def live(pkgs: Path) -> Iterator[Server]:
    with running_server("--disable-fallback", pkgs) as srv:
        srv.wait_listed("demo-pkg", *DEMO_FILES)
        yield srv


@pytest.mark.e2e
def test_yank_and_unyank_reach_a_running_server(
    cmd: Callable[..., subprocess.CompletedProcess[str]],
    pkgs: Path,
    live: Server,
    tmp_path: Path,
) -> None:
    srv = live
    reason = 'broken <b>&"'
    escaped = "broken &lt;b&gt;&amp;&quot;"
    page = links(srv.get("/simple/demo-pkg/").text)
    assert set(page) == set(DEMO_FILES)
    assert not any("data-yanked" in a for a in page.values())
    assert json_files(srv) == dict.fromkeys(DEMO_FILES, False)
    assert _current_version(srv) == "2.0"

    res = cmd("yank", "demo-pkg", "2.0", "--reason", reason, pkgs)
    assert res.returncode == 0, shown(res)
    delay = wait_for(
        lambda: escaped in srv.get("/simple/demo-pkg/").text, "the yank on the simple page"
    )
    timing("yank picked up", delay)
    assert delay < PICKUP_LIMIT

    # PEP 592 HTML: data-yanked with the reason, escaped, on the 2.0 files only.
    page = links(srv.get("/simple/demo-pkg/").text)
    assert {f: a.get("data-yanked") for f, a in page.items()} == {
        W10: None,
        S10: None,
        W20: escaped,
        S20: escaped,
    }
    # What pip and uv ask for: gzip, and JSON first.
    answer = srv.request(
        "GET",
        "/simple/demo-pkg/",
        headers={"Accept": f"{JSON_V1}, text/html;q=0.01", "Accept-Encoding": "gzip"},
    )
    body = (
        gzip.decompress(answer.body)
        if answer.headers.get("content-encoding") == "gzip"
        else answer.body
    )
    files = {f["filename"]: f["yanked"] for f in json.loads(body)["files"]}
    # PEP 691 JSON: the reason as a string.
    assert files == json_files(srv) == {W10: False, S10: False, W20: reason, S20: reason}
    # Warehouse JSON: the newest release that is not yanked, and the yank per file.
    doc = srv.get("/pypi/demo-pkg/json").json()
    assert doc["info"]["version"] == "1.0"
    assert doc["info"]["yanked"] is False
    assert {(f["filename"], f["yanked"], f["yanked_reason"]) for f in doc["releases"]["2.0"]} == {
        (W20, True, reason),
        (S20, True, reason),
    }
    assert all(not f["yanked"] for f in doc["releases"]["1.0"])
    pinned = srv.get("/pypi/demo-pkg/2.0/json").json()
    assert (pinned["info"]["yanked"], pinned["info"]["yanked_reason"]) == (True, reason)

    # Real installers (PEP 592): the yanked release is skipped unless pinned with ==.
    env = client_env(tmp_path)
    index = srv.url + "simple/"
    dl = tmp_path / "dl"
    common = ["download", "--no-deps", "--only-binary=:all:", "--index-url", index]
    run_client([PY, "-m", "pip", *common, "-d", dl / "any", "demo-pkg"], env)
    assert [p.name for p in (dl / "any").iterdir()] == [W10]
    res = run_client([PY, "-m", "pip", *common, "-d", dl / "pinned", "demo-pkg==2.0"], env)
    assert [p.name for p in (dl / "pinned").iterdir()] == [W20]
    assert "yanked" in res.stderr and reason in res.stderr, res.stderr
    uv = _uv()
    if uv:
        req = tmp_path / "req"
        req.mkdir()
        (req / "any.in").write_text("demo-pkg\n")
        (req / "pinned.in").write_text("demo-pkg==2.0\n")
        compile_ = [uv, "pip", "compile", "--python", PY, "--index-url", index]
        compile_ += ["--no-header", "--no-annotate", "--only-binary", ":all:"]
        res = run_client([*compile_, req / "any.in"], env)
        assert res.stdout.split() == ["demo-pkg==1.0"], res.stdout
        res = run_client([*compile_, req / "pinned.in"], env)
        assert res.stdout.split() == ["demo-pkg==2.0"], res.stdout
        assert "yanked" in res.stderr, res.stderr

    # Yanked again without a reason: PEP 691 says true, PEP 592 HTML an empty data-yanked.
    res = cmd("yank", "demo-pkg", "2.0", pkgs)
    assert (res.returncode, res.stderr) == (0, "yanked demo-pkg 2.0\n"), shown(res)
    delay = wait_for(lambda: json_files(srv)[W20] is True, "the yank without a reason")
    timing("yank (no reason) picked up", delay)
    assert delay < PICKUP_LIMIT
    assert json_files(srv) == {W10: False, S10: False, W20: True, S20: True}
    page = links(srv.get("/simple/demo-pkg/").text)
    assert (page[W20].get("data-yanked"), page[S20].get("data-yanked")) == ("", "")
    assert srv.get("/pypi/demo-pkg/json").json()["releases"]["2.0"][0]["yanked_reason"] is None

    # Unyanked: everything as before.
    res = cmd("unyank", "demo-pkg", "2.0", pkgs)
    assert res.returncode == 0, shown(res)
    delay = wait_for(lambda: json_files(srv)[W20] is False, "the unyank")
    timing("unyank picked up", delay)
    assert delay < PICKUP_LIMIT
    assert json_files(srv) == dict.fromkeys(DEMO_FILES, False)
    assert "data-yanked" not in srv.get("/simple/demo-pkg/").text
    assert _current_version(srv) == "2.0"
    run_client([PY, "-m", "pip", *common, "-d", dl / "after", "demo-pkg"], env)
    assert [p.name for p in (dl / "after").iterdir()] == [W20]


def _uv() -> str | None:
    found = shutil.which("uv")
    if found:
        return found
    local = Path(PY).parent / "uv"
    return str(local) if local.exists() else None


@pytest.mark.e2e
def test_remove_reaches_a_running_server(
    cmd: Callable[..., subprocess.CompletedProcess[str]], pkgs: Path, tmp_path: Path
) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()
    shutil.copy2(pkgs / W20, keep / W20)
    # With the default fallback: a removed project must stay claimed, never redirected.
    with running_server(pkgs) as srv:
        srv.wait_listed("demo-pkg", *DEMO_FILES)
        assert cmd("yank", "demo-pkg", "2.0", "--reason", "bad", pkgs).returncode == 0
        wait_for(lambda: json_files(srv)[W20] == "bad", "the yank")
        res = cmd("remove", "demo-pkg", "2.0", pkgs)
        assert res.returncode == 0, shown(res)
        delay = wait_for(lambda: set(json_files(srv)) == {W10, S10}, "2.0 unlisted")
        timing("remove (one version) picked up", delay)
        assert delay < PICKUP_LIMIT
        assert srv.get(f"/packages/{W20}").status == 404
        assert srv.project_json("demo-pkg").json()["versions"] == ["1.0"]
        assert _current_version(srv) == "1.0"
        assert json_files(srv, "demo-pkg-extra") == {"demo_pkg_extra-2.0-py3-none-any.whl": False}

        # The version brought back (as an upload or a copy would) is not yanked any more.
        shutil.copy2(keep / W20, pkgs / W20)
        srv.wait_listed("demo-pkg", W20)
        assert json_files(srv) == {W10: False, S10: False, W20: False}

        res = cmd("remove", "demo-pkg", pkgs)
        assert res.returncode == 0, shown(res)
        delay = wait_for(lambda: json_files(srv) == {}, "demo-pkg unlisted")
        timing("remove (whole project) picked up", delay)
        assert delay < PICKUP_LIMIT
        page = srv.get("/simple/demo-pkg/")
        assert page.status == 200 and "<a " not in page.text, page  # claimed: no redirect
        assert srv.get("/pypi/demo-pkg/json").status == 404
        assert json_files(srv, "demo-pkg-extra") == {"demo_pkg_extra-2.0-py3-none-any.whl": False}


@pytest.mark.e2e
def test_yank_covers_every_spelling_of_the_version(
    cmd: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    d = tmp_path / "spellings"
    make_wheel(d, "demo-pkg", "1.0")
    make_wheel(d, "demo-pkg", "2.0")  # demo_pkg-2.0-py3-none-any.whl
    make_sdist(d, "demo-pkg", "2.0.0")  # demo_pkg-2.0.0.tar.gz: the same release (PEP 440)
    settled(d)
    with running_server("--disable-fallback", d) as srv:
        srv.wait_listed("demo-pkg", W10, W20, "demo_pkg-2.0.0.tar.gz")
        res = cmd("yank", "demo-pkg", "2.0", "--reason", "bad", d)
        assert res.returncode == 0, shown(res)
        wait_for(lambda: json_files(srv)[W20] == "bad", "the yank")
        assert json_files(srv) == {W10: False, W20: "bad", "demo_pkg-2.0.0.tar.gz": "bad"}
        assert _current_version(srv) == "1.0"


# == --help =========================================================================================
@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("remove", ["PROJECT", "[VERSION]", "DIR", "-n, --dry-run", "./1.0", "forget"]),
        ("yank", ["PROJECT", "VERSION", "DIR", "--reason TEXT", "yanked", "installers"]),
        ("unyank", ["PROJECT", "VERSION", "DIR"]),
        ("check", ["DIR", "--cache-dir DIR", "--progress {auto,always,never}"]),
    ],
)
def test_help(
    cmd: Callable[..., subprocess.CompletedProcess[str]], command: str, words: list[str]
) -> None:
    for flag in ("--help", "-h"):
        res = cmd(command, flag)
        assert res.returncode == 0, shown(res)
        assert res.stderr == ""
        assert res.stdout.startswith(f"usage: pkgserver {command} "), res.stdout
        text = " ".join(res.stdout.split())  # argparse wraps lines at the terminal's width
        for word in words:
            assert word in text, (word, res.stdout)


# == odd arguments, names and caches ===============================================================
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
