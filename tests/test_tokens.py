"""API tokens and the rights file, through webtest on the WSGI app and on the store itself.

Every refusal is checked for its status, its message (which right is missing), and that the
package directory is unchanged.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import webtest
from builders import make_wheel
from conftest import WriteHtpasswd, scan
from forms import upload_form

from pkgserver.app import create_app
from pkgserver.config import Settings
from pkgserver.records import RecordDir
from pkgserver.rights import RightsError, parse_rights, pattern_covers, project_matches
from pkgserver.tokens import TokenStore, parse_duration

RIGHTS = """\
[groups]
platform = ["alice", "bob"]

[[allow]]
users = ["*"]
projects = ["*"]
actions = ["download", "list"]

[[allow]]
groups = ["platform"]
projects = ["acme-*"]
actions = ["upload", "remove"]

[[allow]]
users = ["carol"]
projects = ["tools"]
actions = ["upload"]
"""


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def files_in(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".pkgserver" not in p.parts
    }


@pytest.fixture
def users(write_htpasswd: WriteHtpasswd) -> Path:
    return write_htpasswd(alice="pw-alice", bob="pw-bob", carol="pw-carol")


def make(root: Path, users: Path, rights: str | None = None, **kw: Any) -> webtest.TestApp:
    rights_file = None
    if rights is not None:
        rights_path = root.parent / "rights.toml"
        rights_path.write_text(rights)
        rights_file = str(rights_path)
    settings = Settings(
        roots=(str(root),),
        password_file=str(users),
        rights_file=rights_file,
        disable_fallback=kw.pop("disable_fallback", True),
        **kw,
    )
    return webtest.TestApp(create_app(settings, scan(root)))


def upload(
    app: webtest.TestApp, wheel: Path, auth: str, status: int | str = "*"
) -> webtest.TestResponse:
    body, ctype = upload_form(wheel)
    return app.post(
        "/", body, headers={"Content-Type": ctype, "Authorization": auth}, status=status
    )


def token_for(
    root: Path, owner: str, actions: list[str], projects: tuple[str, ...] = (), **kw: Any
) -> str:
    secret, _ = TokenStore(RecordDir(str(root))).create(owner, actions, projects, **kw)
    return basic("__token__", secret)


# -- the rules ----------------------------------------------------------------------------------
def test_patterns_match_normalized_names() -> None:
    assert project_matches("Acme_Lib", "acme-lib")
    assert project_matches("acme-*", "acme-lib")
    assert not project_matches("acme-*", "acmelib")
    assert pattern_covers("*", "acme-*") and pattern_covers("acme-*", "acme-lib-*")
    assert not pattern_covers("acme-lib", "acme-*")
    assert not pattern_covers("a?me-*", "acme-*")  # not told simply: refused


def test_rights_file_grants_by_user_group_and_pattern() -> None:
    rights = parse_rights(RIGHTS.encode())
    assert rights.allows("alice", "upload", "acme-lib")
    assert rights.allows("bob", "remove", "acme-x")
    assert not rights.allows("carol", "upload", "acme-lib")
    assert rights.allows("carol", "upload", "tools")
    assert not rights.allows("carol", "remove", "tools")
    assert rights.allows("dave", "list", "anything")  # "*": every htpasswd user
    assert rights.wider_than("carol", ["upload"], ["tools"]) is None
    assert rights.wider_than("carol", ["upload"], ["*"]) == "carol has no 'upload' right on '*'"
    # No [[allow]]: every user may do everything, as without a file.
    assert parse_rights(b"[groups]\n").allows("anyone", "upload", "x")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[allow]]\nusers=['a']\nprojects=['*']\nactions=['push']\n", "unknown action 'push'"),
        ("[[allow]]\ngroups=['nope']\nprojects=['*']\nactions=['list']\n", "no group 'nope'"),
        ("[[allow]]\nusers=['a']\nprojects=['../x']\nactions=['list']\n", "not a project name"),
        ("[[allow]]\nprojects=['*']\nactions=['list']\n", "names no users and no groups"),
        ("[wat]\n", "unknown table 'wat'"),
        ("[[allow]\n", "not valid TOML"),
        ("[[publisher]]\nprojects=['x']\nrepository='a'\nworkflow='r.yml'\n", "owner/name"),
    ],
)
def test_a_bad_rights_file_says_where(text: str, message: str) -> None:
    with pytest.raises(RightsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_rights(text.encode())


def test_durations() -> None:
    assert parse_duration("90d") == 90 * 86400
    assert parse_duration("12h") == 12 * 3600
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


# -- the store ----------------------------------------------------------------------------------
def test_the_store_keeps_only_a_hash(root: Path) -> None:
    store = TokenStore(RecordDir(str(root)))
    secret, token = store.create("alice", ["upload"], ("acme-*",), description="CI  for\nacme")
    assert secret.startswith(f"pkgserver-{token.id}-")
    record = (root / ".pkgserver" / "tokens.json").read_text()
    assert secret not in record and secret.split("-", 2)[2] not in record
    assert json.loads(record)["tokens"][0]["description"] == "CI for acme"
    other = TokenStore(RecordDir(str(root)), reload_every=0)  # another process, looking now
    assert other.verify(secret) == token
    assert other.verify(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert other.verify("pkgserver-" + "0" * 12 + "-" + "x" * 43) is None
    assert store.revoke(token.id) == token
    assert other.verify(secret) is None  # re-read: the record changed


def test_a_damaged_record_keeps_the_tokens_read_and_is_not_overwritten(root: Path) -> None:
    store = TokenStore(RecordDir(str(root)), reload_every=0)
    secret, _ = store.create("alice", ["upload"])
    path = root / ".pkgserver" / "tokens.json"
    path.write_text("{not json")
    assert store.verify(secret) is not None  # kept
    with pytest.raises(OSError, match="damaged"):
        store.create("alice", ["upload"])
    assert path.read_text() == "{not json"


def test_last_use_is_recorded_later_not_per_request(root: Path) -> None:
    store = TokenStore(RecordDir(str(root)))
    secret, token = store.create("alice", ["upload"])
    found = store.verify(secret)
    assert found is not None
    store.used(found)
    assert not (root / ".pkgserver" / "token-uses.json").exists()
    store.flush_uses(force=True)
    uses = json.loads((root / ".pkgserver" / "token-uses.json").read_text())
    assert abs(uses[token.id] - time.time()) < 60
    assert TokenStore(RecordDir(str(root))).tokens("alice")[0].last_used == uses[token.id]


def test_expired_tokens_are_pruned_a_week_later(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = TokenStore(RecordDir(str(root)))
    _, old = store.create("alice", ["upload"], expires=time.time() + 1)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 8 * 86400)
    store.create("alice", ["upload"])
    assert old.id not in {t.id for t in store.tokens()}


# -- through the app ----------------------------------------------------------------------------
def test_a_token_uploads_within_its_scope_only(root: Path, users: Path, tmp_path: Path) -> None:
    app = make(root, users)
    auth = token_for(root, "alice", ["upload"], ("acme-*",))
    ok = make_wheel(tmp_path / "d", "acme-lib", "1.0")
    assert upload(app, ok, auth).status_int == 200
    before = files_in(root)
    other = make_wheel(tmp_path / "d", "other-lib", "1.0")
    res = upload(app, other, auth, status=403)
    assert "does not grant upload on 'other-lib'" in res.text
    assert files_in(root) == before


def test_a_token_without_the_action_is_refused_before_the_body(
    root: Path, users: Path, tmp_path: Path
) -> None:
    app = make(root, users, authenticate=frozenset({"update", "list"}))
    auth = token_for(root, "alice", ["list"])
    res = upload(app, make_wheel(tmp_path / "d", "acme-lib", "1.0"), auth, status=403)
    assert "does not grant upload or remove" in res.text
    assert app.get("/simple/", headers={"Authorization": auth}).status_int == 200
    assert files_in(root) == {}


def test_expired_revoked_unknown_and_ownerless_tokens_are_refused(
    root: Path, users: Path, write_htpasswd: WriteHtpasswd, tmp_path: Path
) -> None:
    app = make(root, users)
    wheel = make_wheel(tmp_path / "d", "acme-lib", "1.0")
    store = TokenStore(RecordDir(str(root)))
    secret, token = store.create("alice", ["upload"], expires=time.time() + 0.5)
    time.sleep(0.6)
    assert "has expired" in upload(app, wheel, basic("__token__", secret), 403).text
    secret, token = store.create("alice", ["upload"])
    store.revoke(token.id)
    time.sleep(1.1)  # the app looks at the record at most once a second
    assert (
        "unknown, mistyped or revoked" in upload(app, wheel, basic("__token__", secret), 403).text
    )
    assert "invalid token" in upload(app, wheel, basic("__token__", "pkgserver-x"), 403).text
    secret, _ = store.create("carol", ["upload"])
    write_htpasswd(alice="pw-alice")  # carol is gone
    time.sleep(1.1)
    res = upload(app, wheel, basic("__token__", secret), 403)
    assert "belongs to carol, who is no longer a user" in res.text
    assert files_in(root) == {}


def test_a_token_is_never_wider_than_its_owner_s_rights(
    root: Path, users: Path, tmp_path: Path
) -> None:
    app = make(root, users, RIGHTS)
    # carol may upload "tools" only; a token of hers for every project still may not more.
    auth = token_for(root, "carol", ["upload"])
    res = upload(app, make_wheel(tmp_path / "d", "acme-lib", "1.0"), auth, status=403)
    assert "carol has no upload right on 'acme-lib'" in res.text
    assert upload(app, make_wheel(tmp_path / "d", "tools", "1.0"), auth).status_int == 200


def test_rights_apply_to_passwords_and_reload_within_a_second(
    root: Path, users: Path, tmp_path: Path
) -> None:
    app = make(root, users, RIGHTS)
    wheel = make_wheel(tmp_path / "d", "tools", "1.0")
    res = upload(app, wheel, basic("alice", "pw-alice"), 403)
    assert res.text.strip().endswith("alice has no upload right on 'tools'")
    assert files_in(root) == {}
    rights = root.parent / "rights.toml"
    rights.write_text(RIGHTS.replace('projects = ["acme-*"]', 'projects = ["acme-*", "tools"]'))
    os.utime(rights, (time.time() + 5, time.time() + 5))
    time.sleep(1.1)
    assert upload(app, wheel, basic("alice", "pw-alice")).status_int == 200


def test_remove_needs_the_remove_right(root: Path, users: Path, tmp_path: Path) -> None:
    app = make(root, users, RIGHTS)
    wheel = make_wheel(tmp_path / "d", "tools", "1.0")
    upload(app, wheel, basic("carol", "pw-carol"), 200)
    before = files_in(root)
    res = app.post(
        "/",
        {":action": "remove_pkg", "name": "tools", "version": "1.0"},
        headers={"Authorization": basic("carol", "pw-carol")},
        status=403,
    )
    assert "carol has no remove right on 'tools'" in res.text
    assert files_in(root) == before


def test_listing_and_downloads_follow_the_scope(root: Path, users: Path, tmp_path: Path) -> None:
    for name in ("acme-lib", "secret-lib"):
        make_wheel(root, name, "1.0")
    app = make(
        root,
        users,
        authenticate=frozenset({"update", "list", "download"}),
        disable_fallback=False,
    )
    auth = {"Authorization": token_for(root, "alice", ["list", "download"], ("acme-*",))}
    index = app.get("/simple/", headers=auth).text
    assert "acme-lib" in index and "secret-lib" not in index
    as_json = app.get("/simple/", headers={**auth, "Accept": "application/vnd.pypi.simple.v1+json"})
    assert [p["name"] for p in as_json.json["projects"]] == ["acme-lib"]
    assert "secret-lib" not in app.get("/packages/", headers=auth).text
    assert app.get("/simple/acme-lib/", headers=auth).status_int == 200
    refused = app.get("/simple/secret-lib/", headers=auth, status=403)
    assert "does not grant list on 'secret-lib'" in refused.text
    # A name not hosted here goes to the fallback as for anyone: dependencies still install.
    assert app.get("/simple/requests/", headers=auth, status=303).location.startswith(
        "https://pypi.org"
    )
    app.get("/packages/acme_lib-1.0-py3-none-any.whl", headers=auth, status=200)
    res = app.get("/packages/secret_lib-1.0-py3-none-any.whl", headers=auth, status=403)
    assert "does not grant download on 'secret-lib'" in res.text
    # The same answer for a file that does not exist: a refusal tells nothing of what is hosted.
    res = app.get("/packages/secret_lib-9.9-py3-none-any.whl", headers=auth, status=403)
    assert "does not grant download on 'secret-lib'" in res.text
    app.get("/pypi/secret-lib/json", headers=auth, status=403)
    app.get("/project/secret-lib/", headers=auth, status=403)
    projects = app.get("/-/projects/", headers=auth).text
    assert "acme-lib" in projects and "secret-lib" not in projects
    # A password user with no rights file sees everything.
    everything = app.get("/simple/", headers={"Authorization": basic("bob", "pw-bob")}).text
    assert "secret-lib" in everything


def test_decisions_are_counted(root: Path, users: Path, tmp_path: Path) -> None:
    app = make(root, users, authenticate=frozenset({"update", "list"}))
    auth = token_for(root, "alice", ["upload", "list"], ("acme-*",))
    upload(app, make_wheel(tmp_path / "d", "other", "1.0"), auth, 403)
    upload(app, make_wheel(tmp_path / "d", "acme-x", "1.0"), auth, 200)
    upload(
        app, make_wheel(tmp_path / "d", "acme-x", "1.1"), basic("__token__", "pkgserver-nope"), 403
    )
    metrics = app.get("/metrics", headers={"Authorization": basic("alice", "pw-alice")}).text
    assert 'pkgserver_access_decisions_total{outcome="used",what="token"} 2.0' in metrics
    assert 'pkgserver_access_decisions_total{outcome="refused",what="rights"} 1.0' in metrics
    assert 'pkgserver_access_decisions_total{outcome="unknown",what="token"} 1.0' in metrics


# -- the page where users see, create and revoke their own tokens --------------------------------
def test_a_user_creates_sees_and_revokes_own_tokens(root: Path, users: Path) -> None:
    app = make(root, users, RIGHTS)
    alice = {"Authorization": basic("alice", "pw-alice")}
    app.get("/-/tokens/", status=401)
    res = app.get("/-/tokens/", headers=alice)
    assert "You have no tokens" in res.text
    assert res.headers["Cache-Control"] == "no-store"
    form = {"action": "upload", "projects": "acme-*", "expires": "30d", "description": "<b>CI</b>"}
    made = app.post("/-/tokens/create", form, headers=alice, status=201)
    secret = re.search(r"pkgserver-[0-9a-f]{12}-[A-Za-z0-9_\-]{43}", made.text)
    assert secret is not None
    assert "&lt;b&gt;CI&lt;/b&gt;" in made.text and "<b>CI</b>" not in made.text
    # Shown once: the list shows the id only.
    listed = app.get("/-/tokens/", headers=alice).text
    assert secret.group(0) not in listed and secret.group(0).split("-")[1] in listed
    # Others do not see it and cannot revoke it.
    bob = {"Authorization": basic("bob", "pw-bob")}
    assert secret.group(0).split("-")[1] not in app.get("/-/tokens/", headers=bob).text
    token_id = secret.group(0).split("-")[1]
    app.post("/-/tokens/revoke", {"id": token_id}, headers=bob, status=404)
    # Wider than alice's rights: refused with the reason, nothing stored.
    wide = {"action": "upload", "projects": "tools", "expires": ""}
    res = app.post("/-/tokens/create", wide, headers=alice, status=403)
    assert "alice has no &#039;upload&#039; right on &#039;tools&#039;" in res.text
    # A token cannot sign in here; a page on another site cannot post here.
    token_auth = {"Authorization": basic("__token__", secret.group(0))}
    app.get("/-/tokens/", headers=token_auth, status=403)
    cross = {**alice, "Origin": "https://evil.example"}
    app.post("/-/tokens/revoke", {"id": token_id}, headers=cross, status=403)
    assert len(TokenStore(RecordDir(str(root))).tokens("alice")) == 1
    app.post("/-/tokens/revoke", {"id": token_id}, headers=alice, status=200)
    assert TokenStore(RecordDir(str(root))).tokens("alice") == []


def test_a_long_name_is_checked_as_the_name_looked_up(root: Path, users: Path) -> None:
    """normalize() folds runs of separators: a name checked cut at 200 characters must not be
    served as another one (found by review: acme + 193 dashes + lib-internal)."""
    for name in ("acme-lib", "acme-lib-internal"):
        make_wheel(root, name, "1.0")
    app = make(root, users, authenticate=frozenset({"update", "list", "download"}))
    auth = {"Authorization": token_for(root, "alice", ["list"], ("acme-lib",))}
    long_name = "acme" + "-" * 193 + "lib-internal"
    for path in (f"/pypi/{long_name}/json", f"/+simple/{long_name}/", f"/simple/{long_name}/"):
        res = app.get(path, headers=auth, status="*")
        assert res.status_int in (403, 404), (path, res.status)
        assert "acme-lib-internal" not in res.text


def test_the_listing_follows_every_rights_reload(root: Path, users: Path) -> None:
    make_wheel(root, "secret-lib", "1.0")
    app = make(root, users, RIGHTS, authenticate=frozenset({"update", "list"}))
    bob = {"Authorization": basic("bob", "pw-bob")}
    rights = root.parent / "rights.toml"
    narrowed = RIGHTS.replace(
        'projects = ["*"]\nactions = ["download", "list"]',
        'projects = ["acme-*"]\nactions = ["download", "list"]',
    )
    assert narrowed != RIGHTS
    for i in range(6):  # each edit seen, whatever id() the new rights object gets
        text = narrowed if i % 2 == 0 else RIGHTS
        rights.write_text(text)
        os.utime(rights, (time.time() + i + 10, time.time() + i + 10))
        time.sleep(1.05)
        shown = "secret-lib" in app.get("/simple/", headers=bob).text
        assert shown == (text == RIGHTS), i


def test_an_expiry_beyond_ten_years_is_refused(root: Path, users: Path) -> None:
    app = make(root, users)
    alice = {"Authorization": basic("alice", "pw-alice")}
    form = {"action": "upload", "projects": "", "expires": "9999999w"}
    res = app.post("/-/tokens/create", form, headers=alice, status=400)
    assert "longer than ten years" in res.text
    assert app.get("/-/tokens/", headers=alice).status_int == 200


def test_patterns_are_normalized_as_names_are() -> None:
    rights = parse_rights(
        b'[[allow]]\nusers = ["a"]\nprojects = ["Acme_Tools.*", "x[._]y"]\nactions = ["upload"]\n'
    )
    assert rights.grants[0].projects == ("acme-tools-*", "x[._]y")
    assert rights.allows("a", "upload", "acme-tools-lib")


def test_publishers_without_the_extras_are_named_at_start(
    root: Path, users: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from pkgserver import attest, cli, oidc

    rights = root.parent / "rights.toml"
    rights.write_text('[[publisher]]\nrepository = "a/b"\nworkflow = "r.yml"\nprojects = ["b"]\n')
    monkeypatch.setattr(attest, "available", lambda: False)
    monkeypatch.setattr(oidc, "HAVE_JWT", False)
    settings = Settings(roots=(str(root),), password_file=str(users), rights_file=str(rights))
    with caplog.at_level("WARNING"):
        cli._warn_about_publishers(settings)
    said = caplog.text
    assert "pkgserver[oidc]" in said and "pkgserver[attestations]" in said
