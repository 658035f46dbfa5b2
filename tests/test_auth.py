"""htpasswd formats, reloading, and the Basic header parser."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pytest
from passlib.hash import apr_md5_crypt, bcrypt, des_crypt, ldap_sha1

from pkgserver import auth as auth_mod
from pkgserver.auth import Authenticator, parse_basic
from pkgserver.errors import Forbidden, Unauthorized


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    path = tmp_path / "htpasswd"
    path.write_text(
        "\n".join(
            [
                "bc:" + bcrypt.using(ident="2y", rounds=5).hash("pw-bc"),
                "apr:" + apr_md5_crypt.hash("pw-apr"),
                "sha:" + ldap_sha1.hash("pw-sha"),
                "crypt:" + des_crypt.hash("pw-cry"),
            ]
        )
        + "\n"
    )
    return path


@pytest.mark.parametrize(
    ("user", "password"),
    [("bc", "pw-bc"), ("apr", "pw-apr"), ("sha", "pw-sha"), ("crypt", "pw-cry")],
)
def test_every_apache_format_verifies(htpasswd: Path, user: str, password: str) -> None:
    a = Authenticator(str(htpasswd), frozenset({"list"}))
    assert a.check("list", basic(user, password)) == user
    with pytest.raises(Forbidden):
        a.check("list", basic(user, password + "x"))


def test_unknown_user_and_overlong_password_are_refused_without_error(htpasswd: Path) -> None:
    a = Authenticator(str(htpasswd), frozenset({"list"}))
    with pytest.raises(Forbidden):
        a.check("list", basic("nobody", "pw"))
    with pytest.raises(Forbidden):
        a.check("list", basic("bc", "x" * 200))
    with pytest.raises(Forbidden):
        a.check("list", basic("bc", "p\u00e4ss\u2603"))


def test_missing_credentials_get_a_challenge(htpasswd: Path) -> None:
    a = Authenticator(str(htpasswd), frozenset({"list"}))
    with pytest.raises(Unauthorized) as info:
        a.check("list", None)
    assert info.value.headers["WWW-Authenticate"] == 'Basic realm="pkgserver"'
    assert a.check("download", None) is None  # not protected


def test_edits_take_effect_without_restart(htpasswd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth_mod, "RECHECK_SECONDS", 0.0)
    a = Authenticator(str(htpasswd), frozenset({"list"}))
    assert a.check("list", basic("sha", "pw-sha")) == "sha"
    htpasswd.write_text("new:" + ldap_sha1.hash("pw-new") + "\n")
    later = time.time() + 5
    os.utime(htpasswd, (later, later))
    assert a.check("list", basic("new", "pw-new")) == "new"
    # The removed user is refused at once, even though it was verified (and cached) before.
    with pytest.raises(Forbidden):
        a.check("list", basic("sha", "pw-sha"))


def test_unparseable_file_mid_edit_keeps_the_previous_users(
    htpasswd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_mod, "RECHECK_SECONDS", 0.0)
    a = Authenticator(str(htpasswd), frozenset({"list"}))
    htpasswd.write_bytes(b"\xff\xfe garbage without a colon\n")
    later = time.time() + 5
    os.utime(htpasswd, (later, later))
    assert a.check("list", basic("sha", "pw-sha")) == "sha"
    htpasswd.unlink()
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
        ("Basic " + base64.b64encode(b"\xff\xfe:x").decode(), None),
        ("basic " + base64.b64encode(b"u:p:q").decode(), ("u", "p:q")),
        ("Basic " + base64.b64encode("j\u00fcrgen:pw".encode()).decode(), ("j\u00fcrgen", "pw")),
    ],
)
def test_parse_basic(header: str | None, expected: tuple[str, str] | None) -> None:
    assert parse_basic(header) == expected


def test_unknown_users_cost_a_real_verification(
    htpasswd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No timing assertion (machines are noisy): check that the work is done, against a real hash.
    from passlib.apache import HtpasswdFile

    calls: list[str] = []
    original = HtpasswdFile.check_password

    def spy(self, user, password):  # type: ignore[no-untyped-def]
        calls.append(user)
        return original(self, user, password)

    monkeypatch.setattr(HtpasswdFile, "check_password", spy)
    a = Authenticator(str(htpasswd), frozenset({"list"}))
    with pytest.raises(Forbidden):
        a.check("list", basic("nobody", "pw"))
    assert calls == ["bc"]  # the first real user's hash was verified (and the answer ignored)
