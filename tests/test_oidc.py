"""Trusted publishing: the OIDC token exchange (pkgserver/oidc.py) and its routes.

A local issuer (tests/oidc_issuer.py) signs GitHub-shaped ID tokens with keys made here; each
refusal is checked for its status, PyPI's error code and its message, and for having changed
nothing (no token minted, no use recorded). The last test has uv itself publish with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from builders import make_wheel
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from oidc_issuer import REQUEST_TOKEN, LocalIssuer, local_issuer
from webtest import TestApp

from pkgserver.app import create_app
from pkgserver.catalog import Catalog
from pkgserver.config import Settings
from pkgserver.errors import TokenRefused
from pkgserver.observe import Observer
from pkgserver.oidc import MAX_BODY, USED_FILE, KeyCache, Mint, TrustedPublishing
from pkgserver.records import RecordDir
from pkgserver.rights import Issuer, Publisher
from pkgserver.tokens import TokenStore

AUDIENCE = "pkgserver"
EXPIRES = 1_900_000_000.0


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    with local_issuer() as found:
        yield found


class FakeMint:
    """The lead's mint: records what it was asked, answers a secret and an expiry."""

    def __init__(self) -> None:
        self.calls: list[tuple[Publisher, tuple[str, ...], dict[str, Any]]] = []

    def __call__(
        self, publisher: Publisher, projects: tuple[str, ...], claims: Any
    ) -> tuple[str, float]:
        self.calls.append((publisher, projects, dict(claims)))
        return f"pkgserver-minted-{len(self.calls)}", EXPIRES


def publisher(url: str, **kw: Any) -> Publisher:
    fields: dict[str, Any] = {
        "kind": "github",
        "issuer": url,
        "repository": "acme/acme-lib",
        "workflow": "release.yml",
        "environment": None,
        "projects": ("acme-lib",),
    }
    fields.update(kw)
    return Publisher(**fields)


def make(
    issuer: LocalIssuer,
    folder: Path | None,
    *publishers: Publisher,
    issuers: tuple[Issuer, ...] | None = None,
    mint: Mint | None = None,
    **kw: Any,
) -> TrustedPublishing:
    found = issuers if issuers is not None else (Issuer("local", "github", issuer.url),)
    chosen = publishers or (publisher(issuer.url),)
    return TrustedPublishing(
        AUDIENCE,
        lambda: found,
        lambda: chosen,
        RecordDir(str(folder)) if folder is not None else None,
        mint if mint is not None else FakeMint(),
        **kw,
    )


def body(token: str) -> bytes:
    return json.dumps({"token": token}).encode()


def refusal(trusted: TrustedPublishing, raw: bytes) -> TokenRefused:
    with pytest.raises(TokenRefused) as caught:
        trusted.exchange(raw)
    return caught.value


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())


def claims_of(issuer: LocalIssuer, **kw: Any) -> dict[str, Any]:
    now = int(time.time())
    doc = {"iss": issuer.url, "aud": AUDIENCE, "iat": now, "exp": now + 300, **issuer.claims}
    doc.update(kw)
    return doc


# -- a grant ---------------------------------------------------------------------------------------
def test_a_valid_token_gets_what_mint_returned(issuer: LocalIssuer, tmp_path: Path) -> None:
    mint = FakeMint()
    trusted = make(issuer, tmp_path, mint=mint)
    answer = trusted.exchange(body(issuer.token()))
    assert answer == {"success": True, "token": "pkgserver-minted-1", "expires": int(EXPIRES)}
    [(chosen, projects, claims)] = mint.calls
    assert chosen == publisher(issuer.url)
    assert projects == ("acme-lib",)
    assert claims["repository"] == "acme/acme-lib" and claims["aud"] == AUDIENCE
    assert trusted.audience_doc() == {"audience": AUDIENCE}


def test_an_ec_key_and_its_algorithm_are_taken(issuer: LocalIssuer, tmp_path: Path) -> None:
    trusted = make(issuer, tmp_path)
    assert trusted.exchange(body(issuer.token(algorithm="ES256")))["success"] is True


def test_every_matching_publisher_grants_its_projects(issuer: LocalIssuer, tmp_path: Path) -> None:
    mint = FakeMint()
    one = publisher(issuer.url, projects=("acme-lib", "acme-cli"))
    two = publisher(issuer.url, environment="pypi", projects=("acme-*", "acme-lib"))
    other = publisher(issuer.url, repository="acme/other", projects=("other",))
    trusted = make(issuer, tmp_path, one, other, two, mint=mint)
    trusted.exchange(body(issuer.token()))
    [(chosen, projects, _)] = mint.calls
    assert chosen == one
    assert projects == ("acme-lib", "acme-cli", "acme-*")


def test_repository_and_environment_are_compared_ignoring_case(
    issuer: LocalIssuer, tmp_path: Path
) -> None:
    trusted = make(issuer, tmp_path, publisher(issuer.url, environment="PyPI"))
    token = issuer.token(
        repository="ACME/Acme-Lib",
        workflow_ref="ACME/Acme-Lib/.github/workflows/release.yml@refs/tags/v1",
        environment="pypi",
    )
    assert trusted.exchange(body(token))["success"] is True


def test_a_reusable_workflow_may_run_the_job_of_the_publisher_workflow(
    issuer: LocalIssuer, tmp_path: Path
) -> None:
    trusted = make(issuer, tmp_path)
    token = issuer.token(
        job_workflow_ref="pypa/shared/.github/workflows/publish.yml@refs/heads/main"
    )
    assert trusted.exchange(body(token))["success"] is True
    # ... but the reusable workflow is never the publisher's workflow itself.
    called = issuer.token(
        workflow_ref="acme/acme-lib/.github/workflows/ci.yml@refs/heads/main",
        job_workflow_ref="acme/acme-lib/.github/workflows/release.yml@refs/heads/main",
    )
    problem = refusal(trusted, body(called))
    assert problem.code == "invalid-publisher"
    assert "workflow 'ci.yml'" in problem.description


# -- refusals: the token itself --------------------------------------------------------------------
def assert_unchanged(trusted: TrustedPublishing, folder: Path) -> None:
    mint = trusted.mint
    assert isinstance(mint, FakeMint)
    assert mint.calls == []
    assert not (folder / ".pkgserver" / USED_FILE).exists()


def test_alg_none_is_refused(issuer: LocalIssuer, tmp_path: Path) -> None:
    trusted = make(issuer, tmp_path)
    token = unsigned({"alg": "none", "kid": issuer.rsa_kid}, claims_of(issuer)) + "."
    problem = refusal(trusted, body(token))
    assert problem.status == 403 and problem.code == "invalid-token"
    assert "algorithm 'none' is not accepted" in problem.description
    assert_unchanged(trusted, tmp_path)


def test_hs256_signed_with_the_public_key_is_refused(issuer: LocalIssuer, tmp_path: Path) -> None:
    """The classic confusion: the public key (which anyone has) used as an HMAC secret."""
    trusted = make(issuer, tmp_path)
    pem = issuer.rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = unsigned({"alg": "HS256", "kid": issuer.rsa_kid}, claims_of(issuer))
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    problem = refusal(trusted, body(signing_input + "." + b64(mac)))
    assert problem.status == 403
    assert "algorithm 'HS256' is not accepted" in problem.description
    assert_unchanged(trusted, tmp_path)


def test_an_algorithm_that_does_not_fit_the_key_is_refused(
    issuer: LocalIssuer, tmp_path: Path
) -> None:
    trusted = make(issuer, tmp_path)
    # ES256 (signed with the EC key) naming the RSA key.
    wrong_type = issuer.token(algorithm="ES256", header={"kid": issuer.rsa_kid})
    problem = refusal(trusted, body(wrong_type))
    assert problem.status == 403 and "ES256 does not fit its key" in problem.description
    # RS384 with the RSA key, whose JWK says RS256.
    wrong_alg = issuer.token(algorithm="RS384")
    problem = refusal(trusted, body(wrong_alg))
    assert "RS384 is not its key's ('RS256')" in problem.description
    assert_unchanged(trusted, tmp_path)


def test_a_signature_by_another_key_is_refused(issuer: LocalIssuer, tmp_path: Path) -> None:
    trusted = make(issuer, tmp_path)
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    problem = refusal(trusted, body(issuer.token(key=impostor)))
    assert problem.status == 403 and "signature is not valid" in problem.description
    assert_unchanged(trusted, tmp_path)


def test_an_expired_token_is_refused(issuer: LocalIssuer, tmp_path: Path) -> None:
    trusted = make(issuer, tmp_path)
    now = int(time.time())
    problem = refusal(trusted, body(issuer.token(iat=now - 900, nbf=now - 900, exp=now - 600)))
    assert problem.status == 403 and problem.code == "invalid-token"
    assert problem.description == "the token has expired"
    assert_unchanged(trusted, tmp_path)


def test_a_token_not_yet_valid_is_refused(issuer: LocalIssuer, tmp_path: Path) -> None:
    trusted = make(issuer, tmp_path)
    now = int(time.time())
    ahead: list[dict[str, Any]] = [
        {"nbf": now + 600, "exp": now + 900},
        {"iat": now + 600, "exp": now + 900},
    ]
    for times in ahead:
        problem = refusal(trusted, body(issuer.token(**times)))
        assert problem.status == 403 and "not yet valid" in problem.description
    assert_unchanged(trusted, tmp_path)


def test_a_token_without_exp_or_living_too_long_is_refused(
    issuer: LocalIssuer, tmp_path: Path
) -> None:
    trusted = make(issuer, tmp_path)
    problem = refusal(trusted, body(issuer.token(exp=None)))
    assert "lacks a numeric exp or iat" in problem.description
    problem = refusal(trusted, body(issuer.token(exp=int(time.time()) + 30 * 24 * 3600)))
    assert "expires more than 24 h from now" in problem.description
    assert_unchanged(trusted, tmp_path)


def test_another_audience_is_refused(issuer: LocalIssuer, tmp_path: Path) -> None:
    trusted = make(issuer, tmp_path)
    problem = refusal(trusted, body(issuer.token(audience="pypi")))
    assert problem.status == 403
    assert problem.description == "the token's audience is 'pypi', not 'pkgserver'"
    # Exactly the audience: not a list holding it.
    problem = refusal(trusted, body(issuer.token(aud=[AUDIENCE, "pypi"])))
    assert "audience is ['pkgserver', 'pypi']" in problem.description
    assert_unchanged(trusted, tmp_path)


def test_an_unknown_issuer_is_refused_without_fetching_anything(
    issuer: LocalIssuer, tmp_path: Path
) -> None:
    trusted = make(issuer, tmp_path)
    before = sum(issuer.hits.values())
    problem = refusal(trusted, body(issuer.token(iss="https://token.example.com")))
    assert problem.status == 403 and problem.code == "invalid-payload"
    assert "unknown trusted publishing issuer 'https://token.example.com'" in problem.description
    # Exactly the configured URL: a trailing slash is another issuer.
    problem = refusal(trusted, body(issuer.token(iss=issuer.url + "/")))
    assert "unknown trusted publishing issuer" in problem.description
    assert sum(issuer.hits.values()) == before
    assert_unchanged(trusted, tmp_path)


def test_an_unknown_kid_is_refused_and_refetches_at_most_once_a_while(
    issuer: LocalIssuer, tmp_path: Path
) -> None:
    clock = [1000.0]
    trusted = make(issuer, tmp_path, keys=KeyCache(clock=lambda: clock[0], refetch_every=60))
    trusted.exchange(body(issuer.token()))  # the keys fetched once
    fetched = issuer.hits["/jwks"]
    for _ in range(3):
        problem = refusal(trusted, body(issuer.token(header={"kid": "rotated-1"})))
        assert problem.status == 403 and problem.code == "invalid-token"
        assert "kid 'rotated-1'" in problem.description
        assert "not one of the issuer's keys" in problem.description
    assert issuer.hits["/jwks"] == fetched  # within 60 s of the last fetch: none again
    # The issuer rotates: a new key appears; once the minute is over, it is fetched and used.
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(__import__("jwt").algorithms.RSAAlgorithm.to_jwk(new_key.public_key()))
    issuer.extra_keys.append({**jwk, "kid": "rotated-1", "use": "sig"})
    try:
        assert refusal(trusted, body(issuer.token(key=new_key, header={"kid": "rotated-1"})))
        clock[0] += 61
        answer = trusted.exchange(body(issuer.token(key=new_key, header={"kid": "rotated-1"})))
        assert answer["success"] is True
        assert issuer.hits["/jwks"] == fetched + 1
    finally:
        issuer.extra_keys.clear()


def test_a_kid_naming_a_symmetric_key_is_unknown(issuer: LocalIssuer, tmp_path: Path) -> None:
    """An ``oct`` key published by mistake is never taken, whatever the header says."""
    secret = b"s" * 32
    issuer.extra_keys.append({"kty": "oct", "kid": "shared", "k": b64(secret)})
    try:
        trusted = make(issuer, tmp_path)
        signing_input = unsigned({"alg": "RS256", "kid": "shared"}, claims_of(issuer))
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        problem = refusal(trusted, body(signing_input + "." + b64(mac)))
        assert "kid 'shared'" in problem.description and "not one of" in problem.description
    finally:
        issuer.extra_keys.clear()
    assert_unchanged(trusted, tmp_path)


# -- refusals: the request -------------------------------------------------------------------------
def test_a_huge_body_is_refused_403(issuer: LocalIssuer, tmp_path: Path) -> None:
    trusted = make(issuer, tmp_path)
    problem = refusal(trusted, body("a" * MAX_BODY))
    assert problem.status == 403 and problem.code == "invalid-payload"
    assert problem.description == f"the request is larger than {MAX_BODY} bytes"
    assert_unchanged(trusted, tmp_path)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"token=abc", "the request is not JSON"),
        (b'{"token": "a.b.c"', "the request is not JSON"),
        (b"[" * 5000, "the request is not JSON"),
        (b'["a.b.c"]', 'must be {"token": "<OIDC token>"} only'),
        (b'{"token": 42}', 'must be {"token": "<OIDC token>"} only'),
        (b'{"token": "a.b.c", "more": 1}', 'must be {"token": "<OIDC token>"} only'),
    ],
)
def test_malformed_json_is_refused(
    issuer: LocalIssuer, tmp_path: Path, raw: bytes, expected: str
) -> None:
    trusted = make(issuer, tmp_path)
    problem = refusal(trusted, raw)
    assert problem.status == 403 and problem.code == "invalid-payload"
    assert expected in problem.description
    assert_unchanged(trusted, tmp_path)


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "a.b",
        "a.b.c.d.e",  # a JWE's five parts
        "!!!.e30.c2ln",
        b64(b"not json") + "." + b64(b"{}") + ".c2ln",
        b64(b"[1]") + "." + b64(b"{}") + ".c2ln",
        ".e30.c2ln",
        "eyJhbGciOiJSUzI1NiJ9.ZZZ.c2ln\u00e9",
    ],
)
def test_a_malformed_jwt_is_refused(issuer: LocalIssuer, tmp_path: Path, token: str) -> None:
    trusted = make(issuer, tmp_path)
    problem = refusal(trusted, body(token))
    assert problem.status == 403 and problem.code == "invalid-payload"
    assert problem.description.startswith("malformed JWT")
    assert_unchanged(trusted, tmp_path)


# -- refusals: no publisher ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        (
            {
                "repository": "evil/acme-lib",
                "workflow_ref": "evil/acme-lib/.github/workflows/release.yml@refs/tags/v1",
            },
            "no publisher for repository 'evil/acme-lib'",
        ),
        (
            {"workflow_ref": "acme/acme-lib/.github/workflows/nightly.yml@refs/heads/main"},
            "workflow 'nightly.yml'",
        ),
        (
            {"workflow_ref": "acme/acme-lib/.github/workflows/Release.yml@refs/tags/v1"},
            "workflow 'Release.yml'",
        ),
        (
            # The workflow of another repository, in a run of this one: never.
            {"workflow_ref": "evil/x/.github/workflows/release.yml@refs/tags/v1"},
            "workflow_ref 'evil/x/.github/workflows/release.yml@refs/tags/v1'",
        ),
        ({"environment": "staging"}, "environment 'staging'"),
        ({"environment": None}, "environment None"),
    ],
)
def test_a_run_of_no_publisher_is_refused(
    issuer: LocalIssuer, tmp_path: Path, claims: dict[str, Any], expected: str
) -> None:
    trusted = make(issuer, tmp_path, publisher(issuer.url, environment="pypi"))
    problem = refusal(trusted, body(issuer.token(**claims)))
    assert problem.status == 403 and problem.code == "invalid-publisher"
    assert problem.description.startswith("valid token, but no corresponding publisher")
    assert expected in problem.description
    assert_unchanged(trusted, tmp_path)


def test_a_publisher_of_another_issuer_does_not_match(issuer: LocalIssuer, tmp_path: Path) -> None:
    github = "https://token.actions.githubusercontent.com"
    trusted = make(issuer, tmp_path, publisher(github))
    problem = refusal(trusted, body(issuer.token()))
    assert problem.code == "invalid-publisher"
    assert_unchanged(trusted, tmp_path)


def test_gitlab_claims_match_a_gitlab_publisher(issuer: LocalIssuer, tmp_path: Path) -> None:
    host = issuer.url.split("://", 1)[1]
    gitlab = publisher(
        issuer.url,
        kind="gitlab",
        repository="group/sub/acme",
        workflow="ci/release.yml",
        environment="production",
    )
    mint = FakeMint()
    trusted = make(
        issuer, tmp_path, gitlab, issuers=(Issuer("lab", "gitlab", issuer.url),), mint=mint
    )
    gl: dict[str, Any] = {k: None for k in issuer.claims if k != "environment"}  # not GitHub's
    uri = f"{host}/Group/Sub/Acme//ci/release.yml@refs/tags/v1"
    token = issuer.token(
        **gl, project_path="Group/Sub/Acme", ci_config_ref_uri=uri, environment="production"
    )
    assert trusted.exchange(body(token))["success"] is True
    wrong_path = uri.replace("ci/release.yml", ".gitlab-ci.yml")
    token = issuer.token(
        **gl, project_path="group/sub/acme", ci_config_ref_uri=wrong_path, environment="production"
    )
    problem = refusal(trusted, body(token))
    assert "CI configuration '.gitlab-ci.yml'" in problem.description
    token = issuer.token(
        **gl, project_path="group/sub/acme", ci_config_ref_uri=uri, environment=None
    )
    assert "environment None" in refusal(trusted, body(token)).description
    assert len(mint.calls) == 1


# -- replay ------------------------------------------------------------------------------------
def test_a_token_is_exchanged_once(issuer: LocalIssuer, tmp_path: Path) -> None:
    mint = FakeMint()
    trusted = make(issuer, tmp_path, mint=mint)
    token = issuer.token()
    trusted.exchange(body(token))
    problem = refusal(trusted, body(token))
    assert problem.status == 403 and problem.code == "invalid-reuse-token"
    assert problem.description == "invalid token: already used once"
    assert len(mint.calls) == 1
    # The record names no token: a hash of the issuer and the jti, until the token's exp.
    record = (tmp_path / ".pkgserver" / USED_FILE).read_text()
    jti = mint.calls[0][2]["jti"]
    assert token not in record and jti not in record
    assert list(json.loads(record)["used"].values()) == [mint.calls[0][2]["exp"]]


def test_a_replay_is_refused_by_another_replica_sharing_the_records(
    issuer: LocalIssuer, tmp_path: Path
) -> None:
    mint_a, mint_b = FakeMint(), FakeMint()
    a = make(issuer, tmp_path, mint=mint_a)
    b = make(issuer, tmp_path, mint=mint_b)
    token = issuer.token()
    a.exchange(body(token))
    assert refusal(b, body(token)).code == "invalid-reuse-token"
    assert mint_b.calls == []
    # A token without a jti is known by its hash.
    bare = issuer.token(jti=None)
    b.exchange(body(bare))
    assert refusal(a, body(bare)).code == "invalid-reuse-token"
    # ... and each replica's own other tokens still go through.
    assert a.exchange(body(issuer.token()))["success"] is True


def test_expired_uses_are_dropped_from_the_record(issuer: LocalIssuer, tmp_path: Path) -> None:
    now = [time.time()]
    trusted = make(issuer, tmp_path, clock=lambda: now[0])
    trusted.exchange(body(issuer.token()))
    now[0] += 3600  # the first token's exp (and leeway) long past
    trusted.exchange(body(issuer.token(iat=int(now[0]), nbf=None, exp=int(now[0]) + 300)))
    used = json.loads((tmp_path / ".pkgserver" / USED_FILE).read_text())["used"]
    assert list(used.values()) == [int(now[0]) + 300]


def test_a_damaged_record_refuses_rather_than_forgets(issuer: LocalIssuer, tmp_path: Path) -> None:
    (tmp_path / ".pkgserver").mkdir()
    (tmp_path / ".pkgserver" / USED_FILE).write_text("{not json")
    mint = FakeMint()
    trusted = make(issuer, tmp_path, mint=mint)
    problem = refusal(trusted, body(issuer.token()))
    assert problem.status == 503 and problem.headers == {"Retry-After": "30"}
    assert "cannot be recorded" in problem.description
    assert mint.calls == []


# -- keys --------------------------------------------------------------------------------------------
def test_pinned_keys_need_no_network(issuer: LocalIssuer, tmp_path: Path) -> None:
    github = "https://token.actions.githubusercontent.com"
    pinned = tmp_path / "github-jwks.json"
    pinned.write_text(json.dumps(issuer.jwks()))
    fetches: list[str] = []
    trusted = make(
        issuer,
        tmp_path,
        publisher(github),
        issuers=(Issuer("github", "github", github, str(pinned)),),
        keys=KeyCache(fetch=lambda url, timeout: fetches.append(url)),
    )
    assert trusted.exchange(body(issuer.token(iss=github)))["success"] is True
    problem = refusal(trusted, body(issuer.token(iss=github, header={"kid": "other"})))
    assert "kid 'other'" in problem.description
    assert fetches == []


def test_an_issuer_out_of_reach_answers_503_at_once(issuer: LocalIssuer, tmp_path: Path) -> None:
    """An issuer that accepts connections and never answers: bounded by the fetch timeout,
    and the next exchange within the minute is refused without trying again."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        mint = FakeMint()
        trusted = make(
            issuer,
            tmp_path,
            publisher(url),
            issuers=(Issuer("silent", "github", url),),
            keys=KeyCache(timeout=0.3),
            mint=mint,
        )
        problem = refusal(trusted, body(issuer.token(iss=url)))
        assert problem.status == 503 and problem.code == "unavailable"
        assert problem.description == f"the keys of issuer {url} cannot be fetched now"
        assert problem.headers == {"Retry-After": "30"}
        problem = refusal(trusted, body(issuer.token(iss=url)))
        assert problem.status == 503
        assert mint.calls == []


def test_a_discovery_document_naming_another_issuer_is_not_trusted(
    issuer: LocalIssuer, tmp_path: Path
) -> None:
    other = "http://127.0.0.1:1"  # what the token and the configuration say
    documents = {
        f"{other}/.well-known/openid-configuration": {
            "issuer": "https://elsewhere.example",
            "jwks_uri": issuer.url + "/jwks",
        }
    }
    trusted = make(
        issuer,
        tmp_path,
        publisher(other),
        issuers=(Issuer("x", "github", other),),
        keys=KeyCache(fetch=lambda url, timeout: documents[url]),
    )
    problem = refusal(trusted, body(issuer.token(iss=other)))
    assert problem.status == 503


# -- the routes --------------------------------------------------------------------------------
def app_with(trusted: TrustedPublishing | None, tmp_path: Path, **kw: Any) -> TestApp:
    root = tmp_path / "packages"
    root.mkdir(exist_ok=True)
    settings = Settings(roots=(str(root),), disable_fallback=True)
    return TestApp(create_app(settings, Catalog(), trusted=trusted, **kw))


def test_routes_answer_404_when_not_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without PyJWT (the [oidc] extra) there is no trusted publishing; with it, it is on and
    # the rights file's publishers decide (none: every exchange is refused).
    import pkgserver.oidc

    monkeypatch.setattr(pkgserver.oidc, "HAVE_JWT", False)
    app = app_with(None, tmp_path)
    res = app.get("/_/oidc/audience", status=404)
    assert res.text == "trusted publishing is not configured\n"
    res = app.post("/_/oidc/mint-token", body(""), status=404)
    assert "trusted publishing is not configured" in res.text
    monkeypatch.setattr(pkgserver.oidc, "HAVE_JWT", True)
    assert app_with(None, tmp_path).get("/_/oidc/audience").json == {"audience": "pkgserver"}


def test_routes_exchange_a_token_and_count(issuer: LocalIssuer, tmp_path: Path) -> None:
    observer = Observer(process=False)
    mint = FakeMint()
    trusted = make(issuer, tmp_path, mint=mint, on_outcome=observer.trusted_publishing_done)
    app = app_with(trusted, tmp_path, observer=observer)
    assert app.get("/_/oidc/audience").json == {"audience": AUDIENCE}
    token = issuer.token()
    res = app.post("/_/oidc/mint-token", body(token), content_type="application/json")
    assert res.json == {"success": True, "token": "pkgserver-minted-1", "expires": int(EXPIRES)}
    assert res.headers["Cache-Control"] == "no-store"
    # Refused: PyPI's JSON, which gh-action-pypi-publish prints; uv prints the body.
    res = app.post("/_/oidc/github/mint-token", body(token), status=403)
    assert res.content_type == "application/json"
    assert res.json == {
        "message": "Token request failed",
        "errors": [
            {"code": "invalid-reuse-token", "description": "invalid token: already used once"}
        ],
    }
    assert res.status == "403 Token request failed: invalid token: already used once"
    metrics = observer.exposition()[0].decode()
    assert 'pkgserver_trusted_publishing_total{outcome="granted"} 1.0' in metrics
    assert 'pkgserver_trusted_publishing_total{outcome="replayed"} 1.0' in metrics
    assert 'pkgserver_requests_total{method="POST",route="oidc",status="403"} 1.0' in metrics


def test_a_minted_token_is_handed_back_to_be_burned(issuer: LocalIssuer, tmp_path: Path) -> None:
    burned: list[str] = []
    app = app_with(make(issuer, tmp_path), tmp_path)
    app.post("/_/oidc/burn-token", body("pkgserver-x"), status=404)  # no burn: uv warns
    app = app_with(make(issuer, tmp_path, burn=burned.append), tmp_path)
    res = app.post("/_/oidc/burn-token", body("pkgserver-x"), status=202)
    assert res.json == {} and burned == ["pkgserver-x"]
    res = app.post("/_/oidc/burn-token", b'{"nope": 1}', status=403)
    assert res.json["errors"][0]["code"] == "invalid-payload"
    assert burned == ["pkgserver-x"]


def test_the_route_reads_no_more_than_the_bound(issuer: LocalIssuer, tmp_path: Path) -> None:
    trusted = make(issuer, tmp_path)
    app = app_with(trusted, tmp_path)
    res = app.post("/_/oidc/mint-token", b"x" * (1024 * 1024), status=403)
    assert res.json["errors"][0]["description"] == f"the request is larger than {MAX_BODY} bytes"
    assert_unchanged(trusted, tmp_path)


def test_a_cross_site_browser_may_not_mint(issuer: LocalIssuer, tmp_path: Path) -> None:
    trusted = make(issuer, tmp_path)
    app = app_with(trusted, tmp_path)
    token = issuer.token()
    res = app.post(
        "/_/oidc/mint-token", body(token), headers={"Sec-Fetch-Site": "cross-site"}, status=403
    )
    assert "cross-site requests may not change the index" in res.text
    app.post(
        "/_/oidc/mint-token", body(token), headers={"Origin": "https://evil.example"}, status=403
    )
    assert_unchanged(trusted, tmp_path)
    # The same token, from a CI (no browser headers), is still good.
    assert app.post("/_/oidc/mint-token", body(token)).json["success"] is True


def test_the_exchange_logs_claims_but_never_the_token(
    issuer: LocalIssuer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="pkgserver.oidc")
    trusted = make(issuer, tmp_path)
    token = issuer.token()
    trusted.exchange(body(token))
    refusal(trusted, body(token))
    text = caplog.text
    assert "granted a token for acme-lib" in text
    assert "refused (replayed)" in text and "repository 'acme/acme-lib'" in text
    for part in token.split("."):
        assert part not in text


# -- uv, for real ------------------------------------------------------------------------------
def certificates(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA (what SSL_CERT_FILE names for uv) and a certificate it signed for 127.0.0.1 with
    its key (rustls' webpki refuses a CA certificate as the server's own): PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def build(subject: str, issuer: str, public: Any, signer: Any, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            builder = builder.add_extension(san, critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = build("pkgserver test CA", "pkgserver test CA", ca_key.public_key(), ca_key, True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = build("127.0.0.1", "pkgserver test CA", key.public_key(), ca_key, False)
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


class Recorder:
    """WSGI middleware noting each request's method, path and Authorization header."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[tuple[str, str, str]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        self.seen.append(
            (
                environ["REQUEST_METHOD"],
                environ.get("PATH_INFO", ""),
                environ.get("HTTP_AUTHORIZATION", ""),
            )
        )
        return self.app(environ, start_response)


def serve_tls(app: Any, cert: Path, key: Path) -> tuple[int, Any]:
    """waitress on a loopback port, behind a TLS-terminating relay: (the relay's port, stop)."""
    import waitress.server

    server = waitress.server.create_server(app, host="127.0.0.1", port=0, threads=2)
    backend = server.socket.getsockname()[1]
    threading.Thread(target=server.run, daemon=True).start()
    port, close = relay_tls(backend, cert, key)

    def stop() -> None:
        close()
        server.close()

    return port, stop


def relay_tls(backend: int, cert: Path, key: Path) -> tuple[int, Any]:
    """A TLS-terminating relay on a loopback port to the plain-HTTP ``backend`` port (uv asks
    for /_/oidc/ over https only): (the relay's port, stop)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def relay(conn: socket.socket) -> None:
        try:
            tls = context.wrap_socket(conn, server_side=True)
        except OSError:
            conn.close()
            return
        with tls, socket.create_connection(("127.0.0.1", backend)) as upstream:
            back = threading.Thread(target=pump, args=(upstream, tls), daemon=True)
            back.start()
            pump(tls, upstream)
            back.join(timeout=30)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=relay, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1], listener.close


@pytest.mark.e2e
def test_uv_publishes_with_a_minted_token(issuer: LocalIssuer, tmp_path: Path) -> None:
    from passlib.hash import bcrypt
    from server import client_env, run_client
    from test_e2e_clients import _uv_bin

    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"alice:{bcrypt.using(rounds=4).hash('pw')}\n")
    root = tmp_path / "packages"
    root.mkdir()
    settings = Settings(roots=(str(root),), disable_fallback=True, password_file=str(htpasswd))
    calls: list[tuple[str, ...]] = []
    minted: list[str] = []
    store = TokenStore(RecordDir(str(root)))

    def mint(p: Publisher, projects: tuple[str, ...], claims: Any) -> tuple[str, float]:
        calls.append(projects)
        secret, _ = store.create(
            "trusted-publisher:test", ["upload"], projects, expires=time.time() + 900, kind="oidc"
        )
        minted.append(secret)
        return secret, time.time() + 900

    burned: list[str] = []
    trusted = make(issuer, tmp_path, mint=mint, burn=burned.append)
    app = Recorder(create_app(settings, Catalog(), trusted=trusted))
    ca, cert, key = certificates(tmp_path)
    port, stop = serve_tls(app, cert, key)
    try:
        dist = tmp_path / "dist"
        dist.mkdir()
        make_wheel(dist, "acme-lib", "1.0")
        env = client_env(tmp_path)
        env.update(
            SSL_CERT_FILE=str(ca),
            GITHUB_ACTIONS="true",
            ACTIONS_ID_TOKEN_REQUEST_URL=issuer.request_url,
            ACTIONS_ID_TOKEN_REQUEST_TOKEN=REQUEST_TOKEN,
        )
        res = run_client(
            [
                _uv_bin(),
                "publish",
                "--trusted-publishing",
                "always",
                "--publish-url",
                f"https://127.0.0.1:{port}/legacy/",
                *sorted(dist.iterdir()),
            ],
            env,
        )
    finally:
        stop()
    assert calls == [("acme-lib",)], res.stderr
    assert (root / "acme_lib-1.0-py3-none-any.whl").exists()
    paths = [(m, p) for m, p, _ in app.seen]
    assert paths[:2] == [("GET", "/_/oidc/audience"), ("POST", "/_/oidc/mint-token")]
    uploads = [auth for m, p, auth in app.seen if (m, p) == ("POST", "/legacy/")]
    assert uploads, app.seen
    expected = "Basic " + base64.b64encode(f"__token__:{minted[0]}".encode()).decode()
    assert uploads[-1] == expected
    assert issuer.hits["/token"] >= 1
    # uv hands the token back once uploaded (newer uv; older ones let it expire).
    if ("POST", "/_/oidc/burn-token") in paths:
        assert burned == minted
        assert "Failed to invalidate" not in res.stderr
