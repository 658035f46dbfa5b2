"""The declarations of run's options (pkgserver.options) against Settings, the README and the
precedence rules: the command line, else PKGSERVER_*, else the default."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

from pkgserver import cli
from pkgserver.config import Settings
from pkgserver.errors import UsageError
from pkgserver.options import OPTIONS, ROOTS, roots

README = Path(__file__).resolve().parent.parent / "README.md"
SETTINGS = [o for o in OPTIONS if not o.ignored]


def test_every_settings_field_is_declared_once_with_its_default() -> None:
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    declared = [o.field for o in SETTINGS]
    assert sorted(declared) == sorted(fields)  # each field once, no option without a field
    for option in SETTINGS:
        assert option.default == fields[option.field].default, option.field


def test_flags_and_variables_are_unique() -> None:
    flags = [f for o in OPTIONS for f in o.flags]
    assert len(flags) == len(set(flags))
    names = [n for o in OPTIONS for n in o.env_names]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"PKGSERVER_[A-Z_]+", n) for n in names)
    assert ROOTS.env_names == ("PKGSERVER_ROOTS",)
    assert [o.env_names for o in OPTIONS if o.field == "host"] == [
        ("PKGSERVER_INTERFACE", "PKGSERVER_HOST")
    ]


def _readme_options_table() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("| option | meaning |")
    rows = text[start:].split("\n\n", 1)[0].splitlines()[2:]
    return [row.split(" | ", 1)[0] for row in rows]


def test_the_readme_table_names_every_option_and_only_declared_ones() -> None:
    rows = _readme_options_table()
    in_table = {m.split()[0] for row in rows for m in re.findall(r"`(-[^`]+)`", row)}
    declared = {f for o in OPTIONS for f in o.flags}
    assert in_table <= declared, in_table - declared
    for option in OPTIONS:
        if option.flags:
            assert in_table & set(option.flags), f"{option.name} is not in README's table"


def test_help_shows_the_declared_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"], {})
    helptext = capsys.readouterr().out
    assert "(default 8080;" in helptext and "(default 1G)" in helptext
    assert "{default}" not in helptext


# -- precedence, through parse_run with an explicit environment ---------------------------------
def settings(argv: list[str], environ: dict[str, str]) -> Settings:
    found = cli.parse_run(argv, environ)
    assert found is not None
    return found


def test_command_line_beats_environment_beats_default(tmp_path: Path) -> None:
    d = str(tmp_path)
    assert settings([d], {}).port == 8080
    assert settings([d], {"PKGSERVER_PORT": "7000"}).port == 7000
    assert settings(["-p", "7001", d], {"PKGSERVER_PORT": "7000"}).port == 7001
    # An empty variable is no variable.
    assert settings([d], {"PKGSERVER_PORT": ""}).port == 8080
    # A bad variable is not even read when the command line gives the option.
    assert settings(["-p", "7001", d], {"PKGSERVER_PORT": "eighty"}).port == 7001


def test_the_first_variable_of_an_option_with_several_flags_wins(tmp_path: Path) -> None:
    d = str(tmp_path)
    assert settings([d], {"PKGSERVER_HOST": "::1"}).host == "::1"
    both = {"PKGSERVER_INTERFACE": "127.0.0.2", "PKGSERVER_HOST": "::1"}
    assert settings([d], both).host == "127.0.0.2"


def test_flags_from_the_environment(tmp_path: Path) -> None:
    d = str(tmp_path)
    s = settings([d], {"PKGSERVER_NO_WATCH": "1", "PKGSERVER_NO_ACCESS_LOG": "yes"})
    assert (s.watch, s.access_log) == (False, False)
    s = settings([d], {"PKGSERVER_NO_WATCH": "off", "PKGSERVER_OVERWRITE": "false"})
    assert (s.watch, s.overwrite) == (True, False)
    # A flag on the command line cannot be turned off by the environment.
    assert settings(["-o", d], {"PKGSERVER_OVERWRITE": "no"}).overwrite


def test_verbose_adds_to_the_environment(tmp_path: Path) -> None:
    d = str(tmp_path)
    assert settings(["-vv", d], {}).verbosity == 2
    assert settings([d], {"PKGSERVER_VERBOSE": "2"}).verbosity == 2
    assert settings(["-v", d], {"PKGSERVER_VERBOSE": "2"}).verbosity == 3
    assert settings([d], {"PKGSERVER_VERBOSE": "yes"}).verbosity == 1


def test_roots_from_the_environment_only_without_dirs(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    environ = {"PKGSERVER_ROOTS": f"{a}{os.pathsep}{b}"}
    assert settings([], environ).roots == (str(a), str(b))
    assert settings([str(b)], environ).roots == (str(b),)


def test_an_s3_location_in_the_environment_is_one_root() -> None:
    assert roots([], {"PKGSERVER_ROOTS": "s3://corp-index/pkgs"}) == ["s3://corp-index/pkgs"]
    assert roots([], {"PKGSERVER_ROOTS": "/a:s3://b/p:/c"}) == ["/a", "s3://b/p", "/c"]


def test_a_bad_variable_is_refused_in_the_words_of_its_option(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"argument -p/--port: invalid int value: 'eighty'"):
        settings([str(tmp_path)], {"PKGSERVER_PORT": "eighty"})
    with pytest.raises(UsageError, match=r"argument --max-upload-size: invalid size"):
        settings([str(tmp_path)], {"PKGSERVER_MAX_UPLOAD_SIZE": "lots"})


def test_pypiservers_ignored_options_from_the_environment_get_their_notice(
    tmp_path: Path,
) -> None:
    ns = cli.parse_args([str(tmp_path)], {"PKGSERVER_SERVER": "Paste"})
    assert cli.ignored_notices(ns) == [
        "ignoring pypiserver's --server 'paste': pkgserver always runs on waitress"
    ]


def test_the_given_environment_is_the_only_one_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PKGSERVER_PORT", "9999")
    monkeypatch.setenv("PKGSERVER_ROOTS", "/nonexistent")
    before = dict(os.environ)
    s = settings([str(tmp_path)], {})
    assert s.port == 8080
    environ = {"PKGSERVER_ROOTS": str(tmp_path), "PKGSERVER_CACHE_DIR": "off"}
    assert cli.main(["check", "--progress", "never"], environ) == 0
    assert dict(os.environ) == before  # read, never written
    # Without a mapping, the process's environment is read.
    found = cli.parse_run([str(tmp_path)])
    assert found is not None and found.port == 9999
