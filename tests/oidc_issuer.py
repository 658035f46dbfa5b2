"""A local OIDC issuer for the trusted-publishing tests, on 127.0.0.1, with keys made here.

``LocalIssuer`` serves what a CI's issuer and runner serve:

- ``/.well-known/openid-configuration``: ``{"issuer": URL, "jwks_uri": URL/jwks, ...}``;
- ``/jwks``: its public keys (an RSA key, and an EC P-256 key, each with a kid);
- ``/token``: GitHub Actions' ID-token request endpoint, what ``ACTIONS_ID_TOKEN_REQUEST_URL``
  points at: ``GET URL&audience=AUD`` with ``Authorization: bearer TOKEN``
  (``ACTIONS_ID_TOKEN_REQUEST_TOKEN``) answers ``{"value": "<jwt>"}``, a token whose claims
  are GitHub's shape (``LocalIssuer.claims``) for that audience.

``LocalIssuer.token(**claims)`` signs a token directly (a claim given as None is left out;
``header=`` and ``key=`` choose the header and the signing key).

How uv publishes with trusted publishing (read in uv's crates/uv-publish/src/trusted_publishing
and astral-sh/ambient-id; the marked facts seen here with uv 0.13.9 in
tests/test_oidc.py::test_uv_publishes_with_a_minted_token):

- ``--trusted-publishing always`` refuses a username, a password or the keyring alongside;
  ``automatic`` (the default) tries it only without credentials, and goes on without a token
  when it fails;
- (seen) it asks ``https://AUTHORITY/_/oidc/audience``, AUTHORITY the publish URL's
  host[:port]: the publish URL's path is dropped, and the scheme is https whatever the publish
  URL's (only uv's own test builds keep http). So an index must answer /_/oidc/ at the root of
  its host, over TLS, on the publish URL's port. Nothing requires pypi.org. uv trusts the CA
  bundle that ``SSL_CERT_FILE`` names (seen), and refuses a CA certificate used as the
  server's own (rustls/webpki: "CaUsedAsEndEntity");
- the ID token: ambient-id detects GitHub Actions by ``GITHUB_ACTIONS`` being exactly "true",
  then needs ``ACTIONS_ID_TOKEN_REQUEST_URL`` and ``ACTIONS_ID_TOKEN_REQUEST_TOKEN`` (missing:
  "insufficient permissions", i.e. no ``id-token: write``) and GETs the URL with
  ``audience=AUD`` appended to its query and ``Authorization: Bearer TOKEN``; it reads
  ``value`` (seen). On GitLab (``GITLAB_CI=true``) it reads the variable ``<AUD>_ID_TOKEN``,
  AUD upper-cased with every character but A-Z and 0-9 made ``_``;
- (seen) it POSTs ``{"token": "<jwt>"}`` to ``https://AUTHORITY/_/oidc/mint-token`` and reads
  ``token`` from a 2xx answer; on any other status it prints "... returned error code STATUS
  ... Response: BODY" and the ID token's claims (repository, job_workflow_ref, ref, ...);
- (seen) it uploads to the publish URL as given, with HTTP Basic ``__token__`` and the minted
  token, then POSTs ``{"token": "<minted token>"}`` to ``/_/oidc/burn-token``; when that fails
  it warns "Failed to invalidate trusted publishing token. It will expire naturally." and
  succeeds all the same.

pypa/gh-action-pypi-publish (oidc-exchange.py) does the same with ``https://NETLOC/_/oidc/...``
(``/_/oidc/github/mint-token`` before v1.12), and on a non-2xx answer reads the JSON's
``errors`` list and prints each ``code`` and ``description``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

__all__ = ["REQUEST_TOKEN", "LocalIssuer", "local_issuer"]

REQUEST_TOKEN = "runner-request-token"  # what ACTIONS_ID_TOKEN_REQUEST_TOKEN holds


class LocalIssuer:
    def __init__(self) -> None:
        self.rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec_key = ec.generate_private_key(ec.SECP256R1())
        self.rsa_kid = "rsa-" + uuid.uuid4().hex[:8]
        self.ec_kid = "ec-" + uuid.uuid4().hex[:8]
        self.extra_keys: list[dict[str, Any]] = []  # more JWKs to publish (tests add some)
        self.hits: Counter[str] = Counter()  # requests by path
        self.url = ""  # http://127.0.0.1:PORT, once started
        # The claims /token issues (GitHub Actions' shape); iss, aud and times are added.
        self.claims: dict[str, Any] = github_claims()
        self._server: ThreadingHTTPServer | None = None

    # -- keys and tokens --------------------------------------------------------------------------
    def jwks(self) -> dict[str, Any]:
        rsa_jwk = json.loads(RSAAlgorithm.to_jwk(self.rsa_key.public_key()))
        rsa_jwk.update(kid=self.rsa_kid, use="sig", alg="RS256")
        ec_jwk = json.loads(ECAlgorithm.to_jwk(self.ec_key.public_key()))
        ec_jwk.update(kid=self.ec_kid, use="sig")  # no alg: it follows from kty and crv
        return {"keys": [rsa_jwk, ec_jwk, *self.extra_keys]}

    def token(
        self,
        *,
        audience: str = "pkgserver",
        header: dict[str, Any] | None = None,
        key: Any = None,
        algorithm: str = "RS256",
        **claims: Any,
    ) -> str:
        """A signed ID token: GitHub's claims, then ``claims`` (None leaves one out)."""
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.url,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
            **self.claims,
        }
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        if key is None:
            key = self.ec_key if algorithm.startswith("ES") else self.rsa_key
        kid = self.ec_kid if algorithm.startswith("ES") else self.rsa_kid
        headers = {"kid": kid, **(header or {})}
        return jwt.encode(payload, key, algorithm=algorithm, headers=headers)

    # -- the server -------------------------------------------------------------------------------
    def start(self) -> None:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                issuer.hits[parts.path] += 1
                if parts.path == "/.well-known/openid-configuration":
                    self._json(
                        200,
                        {
                            "issuer": issuer.url,
                            "jwks_uri": issuer.url + "/jwks",
                            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                        },
                    )
                elif parts.path == "/jwks":
                    self._json(200, issuer.jwks())
                elif parts.path == "/token":
                    auth = self.headers.get("Authorization", "")
                    scheme, _, credential = auth.partition(" ")
                    if scheme.lower() != "bearer" or credential != REQUEST_TOKEN:
                        self._json(401, {"message": "bad request token"})
                        return
                    audience = parse_qs(parts.query).get("audience", ["sigstore"])[-1]
                    self._json(200, {"count": 1, "value": issuer.token(audience=audience)})
                else:
                    self._json(404, {"message": "not found"})

            def _json(self, status: int, doc: Any) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def request_url(self) -> str:
        """ACTIONS_ID_TOKEN_REQUEST_URL (GitHub's has a query already; clients append)."""
        return self.url + "/token?api-version=2.0"


def github_claims(
    repository: str = "acme/acme-lib",
    workflow: str = "release.yml",
    ref: str = "refs/tags/v1.0",
    environment: str | None = "pypi",
) -> dict[str, Any]:
    """What a GitHub Actions ID token says of its run (the claims that matter here)."""
    workflow_ref = f"{repository}/.github/workflows/{workflow}@{ref}"
    claims: dict[str, Any] = {
        "sub": f"repo:{repository}:environment:{environment}"
        if environment
        else f"repo:{repository}:ref:{ref}",
        "repository": repository,
        "repository_owner": repository.split("/")[0],
        "repository_owner_id": "1234",
        "repository_id": "5678",
        "workflow_ref": workflow_ref,
        "job_workflow_ref": workflow_ref,
        "workflow": "Release",
        "ref": ref,
        "sha": "0123456789abcdef0123456789abcdef01234567",
        "event_name": "push",
        "run_id": "42",
        "runner_environment": "github-hosted",
    }
    if environment:
        claims["environment"] = environment
    return claims


@contextmanager
def local_issuer() -> Iterator[LocalIssuer]:
    issuer = LocalIssuer()
    issuer.start()
    try:
        yield issuer
    finally:
        issuer.stop()
