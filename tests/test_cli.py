"""The command line: pypiserver's flags, PKGSERVER_* variables, one-line errors with status 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pkgserver import cli


def settings_for(argv: list[str]):  # type: ignore[no-untyped-def]
    return cli.parse_run(argv)


def test_pypiserver_flags_map_onto_settings(tmp_path: Path) -> None:
    ht = tmp_path / "htpasswd"
    ht.write_text("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
    s = settings_for(
        [
            "run",
            "-p",
            "9000",
            "-i",
            "127.0.0.1",
            "-P",
            str(ht),
            "-a",
            "update,download",
            "-o",
            "--fallback-url",
            "http://up/simple",
            "--hash-algo",
            "md5",
            "--health-endpoint",
            "ready",
            "--server-base-url",
            "https://x/pypi",
            "--threads",
            "8",
            str(tmp_path),
        ]
    )
    assert s.port == 9000 and s.host == "127.0.0.1"
    assert s.password_file == str(ht)
    assert s.authenticate == frozenset({"update", "download"})
    assert s.overwrite
    assert s.fallback == "http://up/simple/"
    assert s.hash_algo == "md5"
    assert s.health_endpoint == "/ready"
    assert s.server_base_url == "https://x/pypi"
    assert s.threads == 8
    assert s.roots == (str(tmp_path),)


def test_no_subcommand_means_run(tmp_path: Path) -> None:
    s = settings_for(["-p", "8081", str(tmp_path)])
    assert s.port == 8081


def test_H_is_an_alias_of_i(tmp_path: Path) -> None:
    assert settings_for(["-H", "::1", str(tmp_path)]).host == "::1"


def test_environment_variables_set_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PKGSERVER_PORT", "7777")
    monkeypatch.setenv("PKGSERVER_DISABLE_FALLBACK", "true")
    monkeypatch.setenv("PKGSERVER_ROOTS", str(tmp_path))
    monkeypatch.setenv("PKGSERVER_HASH_ALGO", "off")
    s = settings_for(["run"])
    assert s.port == 7777
    assert s.fallback is None
    assert s.roots == (str(tmp_path),)
    assert s.hash_algo is None
    # The command line wins over the environment.
    assert settings_for(["run", "-p", "1234"]).port == 1234


def test_open_server_with_dot_dot(tmp_path: Path) -> None:
    s = settings_for(["-P", ".", "-a", ".", str(tmp_path)])
    assert s.password_file is None
    assert s.authenticate == frozenset()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pkgserver", *args], capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # Under /proc: nothing can create the parent, not even a root process elsewhere.
        (["run", "/proc/nonexistent/dir"], "does not exist"),
        (["run", "-P", "/nonexistent/htpasswd", "."], "cannot read password file"),
        (["run", "-a", "download", "."], "needs a password file"),
        (["run", "-a", "upload", "."], "unknown action"),
        (["run", "-p", "notaport", "."], "invalid int value"),
        (["run", "-p", "70000", "."], "out of range"),
        (["run", "--hash-algo", "nope", "."], "unknown or unusable --hash-algo"),
        (["run", "--hash-algo", "shake_128", "."], "unusable --hash-algo"),
        (["run", "-a", ".", "."], "needs -P . as well"),
        (["run", "--welcome", "/nonexistent.html", "."], "welcome file"),
        (["run", "--bogus", "."], "unrecognized arguments"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(args: list[str], message: str) -> None:
    res = run_cli(*args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("pkgserver: error:"), res.stderr
    assert message in res.stderr
    assert "Traceback" not in res.stderr


def test_port_in_use_gives_one_line_and_status_2(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        res = run_cli(
            "run", "-i", "127.0.0.1", "-p", str(port), "--log-stream", "none", str(tmp_path)
        )
    assert res.returncode == 2
    assert "cannot listen on 127.0.0.1" in res.stderr
    assert "Traceback" not in res.stderr


def test_version_and_help() -> None:
    assert run_cli("--version").stdout.startswith("pkgserver ")
    helptext = run_cli("run", "--help").stdout
    for flag in (
        "--port",
        "--passwords",
        "--authenticate",
        "--overwrite",
        "--fallback-url",
        "--disable-fallback",
        "--hash-algo",
        "--welcome",
        "--health-endpoint",
        "--server-base-url",
        "--log-file",
        "--log-stream",
        "--log-frmt",
        "--threads",
        "--rescan-interval",
    ):
        assert flag in helptext


def test_every_long_option_has_an_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PKGSERVER_INTERFACE", "127.0.0.2")
    monkeypatch.setenv("PKGSERVER_OVERWRITE", "yes")
    monkeypatch.setenv("PKGSERVER_RESCAN_INTERVAL", "2.5")
    monkeypatch.setenv("PKGSERVER_VERBOSE", "2")
    monkeypatch.setenv("PKGSERVER_HEALTH_ENDPOINT", "/-/health")
    s = settings_for(["run", str(tmp_path)])
    assert (s.host, s.overwrite, s.rescan_interval, s.verbosity, s.health_endpoint) == (
        "127.0.0.2",
        True,
        2.5,
        2,
        "/-/health",
    )
    monkeypatch.setenv("PKGSERVER_OVERWRITE", "false")
    assert not settings_for(["run", str(tmp_path)]).overwrite


def test_bad_environment_value_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PKGSERVER_PORT", "eighty")
    assert cli.main(["run", str(tmp_path)]) == 2


def passwd(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pkgserver", "passwd", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_passwd_creates_changes_and_deletes_users(tmp_path: Path) -> None:
    from passlib.apache import HtpasswdFile

    path = tmp_path / "htpasswd"
    assert passwd(str(path), "alice", stdin="first\n").returncode == 0
    assert passwd(str(path), "bob", stdin="second\n").returncode == 0
    ht = HtpasswdFile(str(path))
    assert ht.check_password("alice", "first") and ht.check_password("bob", "second")
    assert ht.get_hash("alice").startswith(b"$2")  # bcrypt
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as Apache's htpasswd makes it
    assert passwd(str(path), "alice", stdin="changed\n").returncode == 0
    assert passwd(str(path), "--delete", "bob").returncode == 0
    ht = HtpasswdFile(str(path))
    assert ht.check_password("alice", "changed")
    assert ht.users() == ["alice"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".htpasswd-")]


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["alice"], "", "empty password"),
        (["al:ice"], "pw\n", "invalid user name"),
        (["alice"], "x" * 100 + "\n", "72 bytes"),
        (["--delete", "nobody"], "", "no user"),
    ],
)
def test_passwd_bad_input_gives_one_line_and_status_2(
    tmp_path: Path, args: list[str], stdin: str, message: str
) -> None:
    res = passwd(str(tmp_path / "htpasswd"), *args, stdin=stdin)
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr


def test_passwd_into_an_unwritable_place(tmp_path: Path) -> None:
    res = passwd(str(tmp_path / "missing-dir" / "htpasswd"), "alice", stdin="pw\n")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr


def test_passwd_keeps_owner_and_mode_and_edits_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "real-htpasswd"
    assert passwd(str(target), "alice", stdin="pw\n").returncode == 0
    os.chmod(target, 0o604)
    if os.getuid() == 0:
        os.chown(target, 65534, 65534)
    link = tmp_path / "htpasswd"
    link.symlink_to(target)
    assert passwd(str(link), "bob", stdin="pw2\n").returncode == 0
    assert link.is_symlink()
    st = target.stat()
    assert oct(st.st_mode & 0o777) == "0o604"
    if os.getuid() == 0:
        assert (st.st_uid, st.st_gid) == (65534, 65534)
    assert b"bob:" in target.read_bytes()


def test_passwd_edits_the_file_in_place_so_a_bind_mount_sees_it(tmp_path: Path) -> None:
    # docker run -v ~/pypi/.htpasswd:/data/.htpasswd binds the inode: a replaced file would
    # never reach the server in the container.
    path = tmp_path / "htpasswd"
    assert passwd(str(path), "alice", stdin="first\n").returncode == 0
    inode = path.stat().st_ino
    with open(path, "rb") as held:  # what a bind mount keeps seeing
        assert passwd(str(path), "bob", stdin="second\n").returncode == 0
        assert passwd(str(path), "--delete", "alice").returncode == 0
        held.seek(0)
        seen = held.read()
    assert path.stat().st_ino == inode
    assert b"bob:" in seen and b"alice:" not in seen
    assert seen == path.read_bytes()
    assert not [p for p in os.listdir(tmp_path) if p != "htpasswd"]  # no temp file left


@pytest.mark.parametrize("user", ["#dave", "a b", "tab\tuser"])
def test_passwd_refuses_names_htpasswd_cannot_hold(tmp_path: Path, user: str) -> None:
    res = passwd(str(tmp_path / "ht"), user, stdin="pw\n")
    assert res.returncode == 2 and "invalid user name" in res.stderr
