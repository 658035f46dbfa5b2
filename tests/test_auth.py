"""htpasswd formats, reloading, and the Basic header parser."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import WriteHtpasswd
from passlib.hash import apr_md5_crypt, bcrypt, des_crypt, ldap_sha1

from pkgserver import auth as auth_mod
from pkgserver.auth import Authenticator, parse_basic
from pkgserver.errors import Forbidden, Unauthorized


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def schemes_htpasswd(write_htpasswd: WriteHtpasswd) -> Path:
    """One user per hash scheme an Apache htpasswd file may hold (the password: pw-<user>)."""
    return write_htpasswd(
        "bc:" + bcrypt.using(ident="2y", rounds=5).hash("pw-bc"),
        "apr:" + apr_md5_crypt.hash("pw-apr"),
        "sha:" + ldap_sha1.hash("pw-sha"),
        "crypt:" + des_crypt.hash("pw-cry"),
    )


@pytest.mark.parametrize(
    ("user", "password"),
    [("bc", "pw-bc"), ("apr", "pw-apr"), ("sha", "pw-sha"), ("crypt", "pw-cry")],
)
def test_every_apache_format_verifies(schemes_htpasswd: Path, user: str, password: str) -> None:
    a = Authenticator(str(schemes_htpasswd), frozenset({"list"}))
    assert a.check("list", basic(user, password)) == user
    with pytest.raises(Forbidden):
        a.check("list", basic(user, password + "x"))


def test_unknown_user_and_overlong_password_are_refused_without_error(
    schemes_htpasswd: Path,
) -> None:
    a = Authenticator(str(schemes_htpasswd), frozenset({"list"}))
    with pytest.raises(Forbidden):
        a.check("list", basic("nobody", "pw"))
    with pytest.raises(Forbidden):
        a.check("list", basic("bc", "x" * 200))
    with pytest.raises(Forbidden):
        a.check("list", basic("bc", "p\u00e4ss\u2603"))


def test_missing_credentials_get_a_challenge(schemes_htpasswd: Path) -> None:
    a = Authenticator(str(schemes_htpasswd), frozenset({"list"}))
    with pytest.raises(Unauthorized) as info:
        a.check("list", None)
    assert info.value.headers["WWW-Authenticate"] == 'Basic realm="pkgserver"'
    assert a.check("download", None) is None  # not protected


def test_edits_take_effect_without_restart(
    schemes_htpasswd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_mod, "RECHECK_SECONDS", 0.0)
    a = Authenticator(str(schemes_htpasswd), frozenset({"list"}))
    assert a.check("list", basic("sha", "pw-sha")) == "sha"
    schemes_htpasswd.write_text("new:" + ldap_sha1.hash("pw-new") + "\n")
    later = time.time() + 5
    os.utime(schemes_htpasswd, (later, later))
    assert a.check("list", basic("new", "pw-new")) == "new"
    # The removed user is refused at once, even though it was verified (and cached) before.
    with pytest.raises(Forbidden):
        a.check("list", basic("sha", "pw-sha"))


def test_unparseable_file_mid_edit_keeps_the_previous_users(
    schemes_htpasswd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_mod, "RECHECK_SECONDS", 0.0)
    a = Authenticator(str(schemes_htpasswd), frozenset({"list"}))
    schemes_htpasswd.write_bytes(b"\xff\xfe garbage without a colon\n")
    later = time.time() + 5
    os.utime(schemes_htpasswd, (later, later))
    assert a.check("list", basic("sha", "pw-sha")) == "sha"
    schemes_htpasswd.unlink()
    assert a.check("list", basic("apr", "pw-apr")) == "apr"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("Basic", None),
        ("Basic ", None),
        ("Bearer abc", None),
        ("Basic !!!", None),
        ("Basic " + base64.b64encode(b"nocolon").decode(), None),
        ("Basic " + base64.b64encode(b":pw").decode(), None),
        ("Basic " + base64.b64encode(b"\xff\xfe:x").decode(), ("\u00ff\u00fe", "x")),  # latin-1
        ("basic " + base64.b64encode(b"u:p:q").decode(), ("u", "p:q")),
        ("Basic " + base64.b64encode("j\u00fcrgen:pw".encode()).decode(), ("j\u00fcrgen", "pw")),
    ],
)
def test_parse_basic(header: str | None, expected: tuple[str, str] | None) -> None:
    assert parse_basic(header) == expected


@pytest.mark.parametrize("who", ["nobody", "locked", "empty"])
def test_unknown_and_disabled_users_cost_a_real_verification(
    schemes_htpasswd: Path, monkeypatch: pytest.MonkeyPatch, who: str
) -> None:
    # No timing assertion (machines are noisy): check that the work is done, against a real
    # hash of the file. A disabled entry ("locked:!") answered in 0.6 ms where a real check
    # takes a bcrypt run, so disabled users could be enumerated by timing.
    with schemes_htpasswd.open("a") as fh:
        fh.write("locked:!\nempty:\n")
    bc_hash = schemes_htpasswd.read_text().splitlines()[0].partition(":")[2]
    verified: list[str] = []
    original = auth_mod.HTPASSWD_CONTEXT.verify

    def spy(secret: Any, hash: Any, **kw: Any) -> Any:
        verified.append(hash.decode() if isinstance(hash, bytes) else hash)
        return original(secret, hash, **kw)

    monkeypatch.setattr(auth_mod.HTPASSWD_CONTEXT, "verify", spy)
    a = Authenticator(str(schemes_htpasswd), frozenset({"list"}))
    with pytest.raises(Forbidden):
        a.check("list", basic(who, "pw"))
    assert verified == [bc_hash]  # the first real user's hash (and the answer ignored)


def test_a_file_without_a_usable_hash_still_costs_a_verification(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "htpasswd"
    path.write_text("locked:!\n")
    verified: list[str] = []
    original = auth_mod.HTPASSWD_CONTEXT.verify

    def spy(secret: Any, hash: Any, **kw: Any) -> Any:
        verified.append(hash)
        return original(secret, hash, **kw)

    monkeypatch.setattr(auth_mod.HTPASSWD_CONTEXT, "verify", spy)
    with pytest.raises(Forbidden):
        Authenticator(str(path), frozenset({"list"})).check("list", basic("locked", "!"))
    assert len(verified) == 1 and verified[0].startswith("$2y$05$")


def test_a_check_running_across_a_reload_is_not_remembered(
    schemes_htpasswd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A user deleted while their password was being checked must not stay logged in for the
    # verification cache's lifetime: the answer of a check that began before the reload is
    # used once, never remembered.
    monkeypatch.setattr(auth_mod, "RECHECK_SECONDS", 0.0)
    a = Authenticator(str(schemes_htpasswd), frozenset({"list"}))
    original = auth_mod._check_password

    def slow(*args: Any) -> Any:
        ok = original(*args)
        # The admin deletes the user while the check runs; another request sees it first.
        schemes_htpasswd.write_text("\n".join(schemes_htpasswd.read_text().splitlines()[1:]) + "\n")
        os.utime(schemes_htpasswd, ns=(time.time_ns() + 10**9,) * 2)
        a._maybe_reload()
        return ok

    monkeypatch.setattr(auth_mod, "_check_password", slow)
    assert a.check("list", basic("bc", "pw-bc")) == "bc"  # this answer was begun before
    monkeypatch.setattr(auth_mod, "_check_password", original)
    with pytest.raises(Forbidden):
        a.check("list", basic("bc", "pw-bc"))  # not remembered: checked again, and gone


@pytest.mark.parametrize("entry", ["locked:!", "star:*", "nopw:", "plain:secret"])
def test_entries_without_a_real_hash_never_log_in(tmp_path: Path, entry: str) -> None:
    path = tmp_path / "htpasswd"
    path.write_text("alice:" + ldap_sha1.hash("pw") + "\n" + entry + "\n")
    a = Authenticator(str(path), frozenset({"list"}))
    user, _, text = entry.partition(":")
    for password in (text, "", "!", "*"):
        with pytest.raises(Forbidden):
            a.check("list", basic(user, password))
    assert a.check("list", basic("alice", "pw")) == "alice"


def test_latin1_credentials_from_requests_based_clients(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text("j\u00fcrgen:" + ldap_sha1.hash("p\u00e4ss") + "\n", encoding="utf-8")
    a = Authenticator(str(path), frozenset({"list"}))
    utf8 = "Basic " + base64.b64encode("j\u00fcrgen:p\u00e4ss".encode()).decode()
    latin1 = "Basic " + base64.b64encode("j\u00fcrgen:p\u00e4ss".encode("latin-1")).decode()
    assert a.check("list", utf8) == "j\u00fcrgen"
    assert a.check("list", latin1) == "j\u00fcrgen"


def test_password_checks_beyond_the_cores_are_shed_with_503(
    schemes_htpasswd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pkgserver.errors import Busy

    monkeypatch.setattr(auth_mod, "CHECK_WAIT", 0.05)
    a = Authenticator(str(schemes_htpasswd), frozenset({"list"}))
    while a._checks.acquire(blocking=False):  # every slot busy, as under a burst
        pass
    with pytest.raises(Busy) as info:
        a.check("list", basic("sha", "wrong"))
    assert info.value.status == 503 and info.value.headers["Retry-After"] == "1"


def test_beyond_the_waiting_room_password_checks_are_shed_at_once(schemes_htpasswd: Path) -> None:
    """A flood of guesses may hold only slots + CHECK_QUEUE threads: the next one gets 503
    without waiting CHECK_WAIT for a slot."""
    from pkgserver.errors import Busy

    a = Authenticator(str(schemes_htpasswd), frozenset({"list"}))
    while a._admitted.acquire(blocking=False):  # slots and waiting room taken
        pass
    started = time.monotonic()
    with pytest.raises(Busy):
        a.check("list", basic("sha", "wrong"))
    assert time.monotonic() - started < auth_mod.CHECK_WAIT / 2
    # Verified credentials need no slot.
    a._admitted.release()
    assert a.check("list", basic("sha", "pw-sha")) == "sha"
    while a._admitted.acquire(blocking=False):
        pass
    assert a.check("list", basic("sha", "pw-sha")) == "sha"


def test_a_deleted_password_file_lets_no_one_in(
    schemes_htpasswd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_mod, "RECHECK_SECONDS", 0.0)
    monkeypatch.setattr(auth_mod, "MISSING_GRACE", 0.0)
    a = Authenticator(str(schemes_htpasswd), frozenset({"list"}))
    assert a.check("list", basic("sha", "pw-sha")) == "sha"
    content = schemes_htpasswd.read_bytes()
    schemes_htpasswd.unlink()
    for _ in range(2):
        with pytest.raises(Forbidden):
            a.check("list", basic("sha", "pw-sha"))
    schemes_htpasswd.write_bytes(content)
    assert a.check("list", basic("sha", "pw-sha")) == "sha"


def test_a_fifo_in_place_of_the_htpasswd_file_hangs_no_check(
    schemes_htpasswd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    monkeypatch.setattr(auth_mod, "RECHECK_SECONDS", 0.0)
    a = Authenticator(str(schemes_htpasswd), frozenset({"list"}))
    schemes_htpasswd.unlink()
    os.mkfifo(schemes_htpasswd)
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(a.check("list", basic("bc", "pw-bc"))))
    t.start()
    t.join(5)
    assert not t.is_alive(), "a password check waited on the FIFO"
    assert result == ["bc"]  # the previous users are kept


def test_the_decoy_is_the_costliest_hash_of_a_mixed_file(tmp_path: Path) -> None:
    # An apr1 entry first (a file moved from pypiserver), bcrypt users added after it: the
    # decoy was the first entry, and unknown users answered in 1 ms against 300 ms.
    path = tmp_path / "htpasswd"
    strong = bcrypt.using(ident="2y", rounds=6).hash("b")
    path.write_text(
        "old:"
        + apr_md5_crypt.hash("a")
        + "\nnew:"
        + bcrypt.using(ident="2y", rounds=4).hash("c")
        + "\nstrong:"
        + strong
        + "\n"
    )
    assert Authenticator(str(path), frozenset({"list"}))._decoy == strong
