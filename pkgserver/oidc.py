"""Trusted publishing: a CI job's OIDC ID token exchanged for a short-lived API token.

What PyPI does (warehouse ``oidc/views.py``), for this index's own publishers: a CI job asks
``GET /_/oidc/audience`` for the audience, gets an ID token (a JWT) for it from its CI
(GitHub Actions: ``$ACTIONS_ID_TOKEN_REQUEST_URL&audience=AUD`` with ``Authorization: bearer
$ACTIONS_ID_TOKEN_REQUEST_TOKEN``; GitLab: an ``id_tokens`` variable), and posts
``{"token": "<jwt>"}`` to ``POST /_/oidc/mint-token``. The answer is
``{"success": true, "token": ..., "expires": ...}``, and the client uploads with the token
as the password of ``__token__``. A refusal is ``{"message": "Token request failed",
"errors": [{"code": ..., "description": ...}]}`` (errors.TokenRefused), 403 (PyPI answers 422).

The token is checked strictly, in this order, and the first failure refuses it:

1. the body: at most ``MAX_BODY`` bytes, a JSON object ``{"token": str}`` and nothing else;
2. the JWT's form: three base64url parts; the header's ``alg`` one of ``ALGORITHMS`` (never
   ``none``, never HS*: a public key is no secret), no ``crit``, a ``kid``;
3. the issuer: the unverified ``iss`` must be a configured issuer's URL exactly;
4. the key: the ``kid`` must name a signing key of that issuer whose type (and curve) fits the
   ``alg``, and whose own ``alg``, when it has one, is that ``alg``; keys come from the
   issuer's pinned ``jwks_file``, else from ``URL/.well-known/openid-configuration`` ->
   ``jwks_uri`` (see :class:`KeyCache`);
5. the signature; then ``exp`` (required), ``iat`` (required) and ``nbf`` (when present),
   each with ``LEEWAY`` seconds; ``exp`` at most ``MAX_LIFETIME`` ahead; ``aud`` exactly the
   audience (a string, not a list);
6. the claims against the publishers of that issuer (:func:`github_mismatch`,
   :func:`gitlab_mismatch`): every publisher that matches grants its projects, the union;
7. replay: each token is exchanged once (:class:`UsedTokens`);
8. ``mint`` (the caller's) makes the API token.

Every grant and refusal is logged with its reason and the claims that matter (never the JWT
itself), and counted through ``on_outcome`` (``Observer.trusted_publishing_done``).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import ipaddress
import json
import logging
import math
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .errors import HTTPProblem, TokenRefused, UsageError
from .records import rewriting
from .rights import Issuer, Publisher

try:
    import jwt
    from jwt.exceptions import InvalidKeyError, PyJWKError, PyJWTError

    HAVE_JWT = True
except ImportError:  # pragma: no cover (pkgserver without the [oidc] extra)
    HAVE_JWT = False

if TYPE_CHECKING:
    from .storage import Records

log = logging.getLogger(__name__)

__all__ = [
    "ALGORITHMS",
    "LEEWAY",
    "MAX_BODY",
    "MAX_LIFETIME",
    "USED_FILE",
    "KeyCache",
    "Mint",
    "TrustedPublishing",
    "UsedTokens",
    "github_mismatch",
    "gitlab_mismatch",
]

MAX_BODY = 8 * 1024  # bytes of the request: GitHub's and GitLab's ID tokens are 1-3 KB
LEEWAY = 30  # seconds of clock difference allowed on exp, iat and nbf (warehouse's too)
MAX_LIFETIME = 24 * 3600  # seconds ahead an exp may be: a used token is remembered until it
KEY_TTL = 3600  # seconds fetched keys are used before they are fetched again
KEY_MAX_STALE = 24 * 3600  # seconds old keys are still used while the issuer cannot be reached
REFETCH_EVERY = 60  # seconds between two fetches of one issuer's keys (unknown kid, failures)
FETCH_TIMEOUT = 5.0  # seconds for one fetch of a discovery document or a key set
MAX_DOCUMENT = 512 * 1024  # bytes of a discovery document or a key set
MAX_USED = 10_000  # used tokens remembered at once (each until its exp)
USED_FILE = "oidc-used.json"
MIN_RSA_BITS = 2048

# alg -> (kty, crv): only asymmetric signatures, each bound to its key type (RFC 7518).
ALGORITHMS: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
}

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_KIND_NAMES = {"github": "GitHub", "gitlab": "GitLab"}

Mint = Callable[[Publisher, tuple[str, ...], Mapping[str, Any]], tuple[str, float]]


class _Refusal(TokenRefused):
    """A TokenRefused with the reason it is counted and logged under (a fixed set of labels)."""

    def __init__(self, reason: str, code: str, description: str, status: int = 403) -> None:
        headers = {"Retry-After": "30"} if status == 503 else {}
        super().__init__(code, description, status, **headers)
        self.reason = reason


def _payload(reason: str, description: str, status: int = 403) -> _Refusal:
    return _Refusal(reason, "invalid-payload", description, status)


def _token(reason: str, description: str) -> _Refusal:
    return _Refusal(reason, "invalid-token", description)


def _unavailable(description: str) -> _Refusal:
    return _Refusal("unavailable", "unavailable", description, 503)


def _text(value: Any, limit: int = 200) -> str:
    """A claim for a message or a log line: a short repr (quotes, escapes, no control chars)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _string(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    return value if isinstance(value, str) else ""


# -- claims -> publishers --------------------------------------------------------------------
def github_mismatch(publisher: Publisher, claims: Mapping[str, Any]) -> str | None:
    """Why GitHub Actions claims are not ``publisher``'s runs (None: they are).

    - ``repository`` ("owner/repo") equals the publisher's, ignoring case, as GitHub's names do;
    - ``workflow_ref`` is ``owner/repo/.github/workflows/FILE@REF`` of that repository, and FILE
      is the publisher's ``workflow`` exactly (file names are case-sensitive). This is the
      top-level workflow, the one the run was started as, which the repository's owners write:
      the job it runs may come from a reusable workflow it calls (``job_workflow_ref``, which
      warehouse matches instead), and a reusable workflow is never itself the publisher's;
    - ``environment``, when the publisher names one, equals it ignoring case (GitHub's
      environment names are case-insensitive); a publisher without one takes any or none.
    """
    repository = _string(claims, "repository")
    if not repository or repository.lower() != publisher.repository.lower():
        return f"repository {_text(repository)}"
    workflow_ref = _string(claims, "workflow_ref")
    prefix = f"{repository}/.github/workflows/"
    if not workflow_ref.lower().startswith(prefix.lower()):
        return f"workflow_ref {_text(workflow_ref)}"
    filename, at, ref = workflow_ref[len(prefix) :].partition("@")
    if not at or not ref or filename != publisher.workflow:
        return f"workflow {_text(filename)} (workflow_ref {_text(workflow_ref)})"
    if publisher.environment:
        environment = _string(claims, "environment")
        if environment.lower() != publisher.environment.lower():
            return f"environment {_text(environment or None)}"
    return None


def gitlab_mismatch(
    publisher: Publisher, claims: Mapping[str, Any], host: str = "gitlab.com"
) -> str | None:
    """Why GitLab CI claims are not ``publisher``'s pipelines (None: they are).

    - ``project_path`` ("group/subgroup/project") equals the publisher's ``repository``,
      ignoring case (GitLab paths are case-insensitive);
    - ``ci_config_ref_uri`` is ``HOST/group/project//PATH@REF`` (HOST the issuer's host), and
      PATH is the publisher's ``workflow`` exactly (".gitlab-ci.yml", "ci/release.yml");
    - ``environment``, when the publisher names one, equals it exactly (as warehouse).
    """
    project_path = _string(claims, "project_path")
    if not project_path or project_path.lower() != publisher.repository.lower():
        return f"project_path {_text(project_path)}"
    uri = _string(claims, "ci_config_ref_uri")
    prefix = f"{host}/{project_path}//"
    if not uri.lower().startswith(prefix.lower()):
        return f"ci_config_ref_uri {_text(uri)}"
    path, at, ref = uri[len(prefix) :].partition("@")
    if not at or not ref or path != publisher.workflow:
        return f"CI configuration {_text(path)} (ci_config_ref_uri {_text(uri)})"
    if publisher.environment and _string(claims, "environment") != publisher.environment:
        return f"environment {_text(_string(claims, 'environment') or None)}"
    return None


def _summary(kind: str, claims: Mapping[str, Any]) -> str:
    """The claims that name a run, for messages and the log."""
    names: tuple[str, ...]
    if kind == "github":
        names = ("repository", "workflow_ref", "job_workflow_ref", "environment", "ref", "sha")
    else:
        names = ("project_path", "ci_config_ref_uri", "environment", "ref_path", "sha")
    return ", ".join(f"{n} {_text(claims[n], 120)}" for n in names if n in claims)


# -- keys ----------------------------------------------------------------------------------------
class _FetchFailed(Exception):
    pass


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Keys come from where the issuer's document says, not from wherever a 3xx points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _fetch_json(url: str, timeout: float) -> Any:
    """A JSON document over HTTPS (plain HTTP only from this machine: tests, a local issuer),
    read within ``timeout`` seconds in all (each socket read bounded too) and ``MAX_DOCUMENT``
    bytes. Raises _FetchFailed with what went wrong."""
    parts = urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and _loopback(url)):
        raise _FetchFailed(f"{url}: not an https URL")
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(_NoRedirects)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with opener.open(request, timeout=timeout) as response:
            chunks, size = [], 0
            while True:
                if time.monotonic() > deadline:
                    raise _FetchFailed(f"{url}: no complete answer within {timeout:g} s")
                chunk = response.read1(64 * 1024)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_DOCUMENT:
                    raise _FetchFailed(f"{url}: larger than {MAX_DOCUMENT} bytes")
                chunks.append(chunk)
    except urllib.error.HTTPError as exc:
        raise _FetchFailed(f"{url}: HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:  # URLError, timeouts, refused, reset, bad URL
        raise _FetchFailed(f"{url}: {getattr(exc, 'reason', None) or exc}") from None
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError):
        raise _FetchFailed(f"{url}: not JSON") from None


def _signing_keys(document: Any, source: str) -> dict[str, dict[str, Any]]:
    """kid -> JWK of a JWKS document's keys that may sign: RSA or EC, with a kid, ``use``
    absent or "sig". Symmetric (``oct``) keys are never taken."""
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise _FetchFailed(f"{source}: not a JSON Web Key Set (no 'keys' list)")
    out: dict[str, dict[str, Any]] = {}
    for jwk in keys:
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str):
            continue
        if jwk.get("kty") not in ("RSA", "EC") or jwk.get("use", "sig") != "sig":
            continue
        out.setdefault(jwk["kid"], jwk)
    return out


@dataclass
class _Entry:
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    fetched: float | None = None  # when the keys were fetched (monotonic); None: never
    tried: float | None = None  # the last fetch attempt, done or failed
    stamp: object = None  # a pinned file's (mtime, size, inode)
    lock: threading.Lock = field(default_factory=threading.Lock)


class KeyCache:
    """Each issuer's signing keys: from its pinned ``jwks_file`` (read again when it changes),
    else fetched from ``URL/.well-known/openid-configuration`` -> ``jwks_uri``.

    Fetched keys are used for ``KEY_TTL`` seconds, then fetched again. A kid the keys lack
    fetches them again, at most once every ``refetch_every`` seconds per issuer: tokens with
    made-up kids cannot make the server hammer an issuer. A fetch takes at most about
    ``timeout`` seconds; when it fails, keys fetched within ``KEY_MAX_STALE`` are used still,
    and without any the exchange is answered 503 at once (no fetch again before
    ``refetch_every``), never kept waiting.
    """

    def __init__(
        self,
        *,
        timeout: float = FETCH_TIMEOUT,
        refetch_every: float = REFETCH_EVERY,
        clock: Callable[[], float] = time.monotonic,
        fetch: Callable[[str, float], Any] = _fetch_json,
    ) -> None:
        self.timeout = timeout
        self.refetch_every = refetch_every
        self.clock = clock
        self.fetch = fetch
        self._entries: dict[tuple[str, str | None], _Entry] = {}
        self._lock = threading.Lock()

    def _entry(self, issuer: Issuer) -> _Entry:
        with self._lock:
            return self._entries.setdefault((issuer.url, issuer.jwks_file), _Entry())

    def key(self, issuer: Issuer, kid: str) -> dict[str, Any]:
        """The JWK ``kid`` of ``issuer``. Raises _Refusal: unknown kid (403), or no keys to be
        had for now (503)."""
        entry = self._entry(issuer)
        with entry.lock:  # one fetch per issuer at a time; the others wait for its result
            if issuer.jwks_file:
                self._read_pinned(issuer, entry)
            else:
                self._refresh(issuer, entry, kid)
            jwk = entry.keys.get(kid)
        if jwk is None:
            raise _token(
                "unknown_key",
                f"the token's signing key (kid {_text(kid, 80)}) is not one of the issuer's "
                f"keys ({issuer.url})",
            )
        return jwk

    def _read_pinned(self, issuer: Issuer, entry: _Entry) -> None:
        path = issuer.jwks_file
        assert path is not None
        try:
            st = os.stat(path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == entry.stamp:
                return
            if st.st_size > MAX_DOCUMENT:
                raise _FetchFailed(f"{path}: larger than {MAX_DOCUMENT} bytes")
            with open(path, "rb") as fh:
                document = json.loads(fh.read(MAX_DOCUMENT + 1))
            entry.keys = _signing_keys(document, path)
            entry.stamp = stamp
        except (OSError, ValueError, RecursionError, _FetchFailed) as exc:
            log.error("trusted publishing: the pinned keys of %s are unusable: %s", issuer.url, exc)
            entry.keys, entry.stamp = {}, None
            raise _unavailable(f"the keys of issuer {issuer.url} cannot be read") from None

    def _refresh(self, issuer: Issuer, entry: _Entry, kid: str) -> None:
        now = self.clock()
        age = None if entry.fetched is None else now - entry.fetched
        if age is not None and age < KEY_TTL and kid in entry.keys:
            return
        if entry.tried is not None and now - entry.tried < self.refetch_every:
            if entry.fetched is None:
                raise _unavailable(f"the keys of issuer {issuer.url} cannot be fetched now")
            return  # fetched a moment ago: what it got, or lacks, stands
        entry.tried = now
        try:
            keys = self._fetch(issuer)
        except _FetchFailed as exc:
            log.error("trusted publishing: the keys of %s cannot be fetched: %s", issuer.url, exc)
            if age is not None and age < KEY_MAX_STALE:
                return  # the keys at hand, while the issuer is away
            entry.keys = {}
            raise _unavailable(f"the keys of issuer {issuer.url} cannot be fetched now") from None
        entry.keys, entry.fetched = keys, self.clock()
        log.info("trusted publishing: %d signing keys of %s fetched", len(keys), issuer.url)

    def _fetch(self, issuer: Issuer) -> dict[str, dict[str, Any]]:
        started = self.clock()
        url = issuer.url.rstrip("/") + "/.well-known/openid-configuration"
        config = self.fetch(url, self.timeout)
        if not isinstance(config, dict) or config.get("issuer") != issuer.url:
            raise _FetchFailed(f"{url}: its 'issuer' is not {issuer.url}")
        jwks_uri = config.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise _FetchFailed(f"{url}: no jwks_uri")
        if urlsplit(issuer.url).scheme == "https" and urlsplit(jwks_uri).scheme != "https":
            raise _FetchFailed(f"{url}: jwks_uri {jwks_uri} is not https")
        left = max(0.1, self.timeout - (self.clock() - started))
        return _signing_keys(self.fetch(jwks_uri, left), jwks_uri)


def _verifying_key(jwk: dict[str, Any], alg: str, kid: str) -> Any:
    """A PyJWK for ``alg`` from ``jwk``, once the two are known to fit; raises _Refusal."""
    kty, crv = ALGORITHMS[alg]
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        raise _token(
            "bad_algorithm",
            f"the token's algorithm {alg} does not fit its key {_text(kid, 80)} "
            f"({jwk.get('kty')}{' ' + str(jwk['crv']) if 'crv' in jwk else ''})",
        )
    if "alg" in jwk and jwk["alg"] != alg:
        raise _token(
            "bad_algorithm",
            f"the token's algorithm {alg} is not its key's ({_text(jwk['alg'], 40)})",
        )
    try:
        key = jwt.PyJWK(jwk, algorithm=alg)
    except (PyJWKError, InvalidKeyError, ValueError, TypeError) as exc:
        log.error("trusted publishing: key %s is unusable: %s", _text(kid, 80), exc)
        raise _token(
            "unknown_key", f"the token's signing key {_text(kid, 80)} is unusable"
        ) from None
    if kty == "RSA" and getattr(key.key, "key_size", 0) < MIN_RSA_BITS:
        raise _token("unknown_key", f"the token's signing key {_text(kid, 80)} is too short")
    return key


# -- replay --------------------------------------------------------------------------------------
class UsedTokens:
    """Tokens exchanged already, each remembered until its ``exp``: in memory, and in the
    record ``oidc-used.json`` (``{"used": {KEY: EXP}}``, read and rewritten under the records'
    lock through ``rewriting``), so that replicas sharing the records refuse a replay too.

    KEY is a SHA-256 of the issuer and the token's ``jti`` (of the whole token when it has no
    jti): the record holds nothing that could be used. Expired entries are dropped on each
    write. At most ``limit`` at once: beyond, exchanges are refused (503) until some expire,
    rather than forgetting one that has not.
    """

    def __init__(
        self,
        records: Records | None,
        *,
        clock: Callable[[], float] = time.time,
        limit: int = MAX_USED,
    ) -> None:
        self.records = records
        self.clock = clock
        self.limit = limit
        self._memory: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_use(self, key: str, exp: float) -> bool:
        """Whether ``key`` is used now for the first time (and is remembered from now on).
        Raises _Refusal (503) when that cannot be known or recorded."""
        with self._lock:
            now = self.clock()
            self._memory = {k: e for k, e in self._memory.items() if e >= now}
            if key in self._memory:
                return False
            if self.records is not None:
                try:
                    first = rewriting(functools.partial(self._record, key, exp))
                except OSError as exc:
                    self.records.warn_once("trusted publishing is refused", exc)
                    raise _unavailable("the use of the token cannot be recorded now") from None
                if not first:
                    self._memory[key] = exp
                    return False
            elif len(self._memory) >= self.limit:
                raise self._full()
            self._memory[key] = exp
            return True

    def _full(self) -> _Refusal:
        log.error("trusted publishing: %d unexpired tokens remembered, the most", self.limit)
        return _unavailable("too many tokens were exchanged lately; try again later")

    def _record(self, key: str, exp: float) -> bool:
        records = self.records
        assert records is not None
        with records.locked():
            used = self._read(records)
            if key in used:
                return False
            now = self.clock()
            used = {k: e for k, e in used.items() if e >= now}
            if len(used) >= self.limit:
                raise self._full()
            used[key] = math.ceil(exp)
            body = json.dumps({"used": used}, separators=(",", ":")).encode() + b"\n"
            records.replace(USED_FILE, body)
            return True

    @staticmethod
    def _read(records: Records) -> dict[str, float]:
        data = records.read(USED_FILE)
        if data is None:
            return {}
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            doc = None
        used = doc.get("used") if isinstance(doc, dict) else None
        if not isinstance(used, dict):
            # Never taken as empty: that would let every token recorded there be used again.
            raise OSError(f"{records.file(USED_FILE)}: damaged (not {{'used': {{...}}}})")
        out: dict[str, float] = {}
        for k, e in used.items():
            exp = _number(e)
            if isinstance(k, str) and exp is not None:
                out[k] = exp
        records.all_well(USED_FILE)
        return out


def _replay_key(issuer: str, claims: Mapping[str, Any], token: str) -> str:
    jti = claims.get("jti")
    if isinstance(jti, str) and jti:
        material = f"jti\0{issuer}\0{jti}"
    else:
        material = f"token\0{token}"
    return hashlib.sha256(material.encode()).hexdigest()


# -- the exchange ------------------------------------------------------------------------------
def _segments(token: str) -> Iterator[bytes]:
    """The decoded parts of a compact JWS (the signature may be empty here: ``alg: none``
    is refused by name, after this)."""
    for index, part in enumerate(token.split(".")):
        if (not part and index < 2) or not _B64URL.fullmatch(part):
            raise _payload("malformed", "malformed JWT")
        try:
            yield base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        except (binascii.Error, ValueError):
            raise _payload("malformed", "malformed JWT") from None


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise _payload("malformed", "malformed JWT") from None
    if not isinstance(value, dict):
        raise _payload("malformed", "malformed JWT")
    return value


class TrustedPublishing:
    """The exchange of a CI's OIDC ID token for an API token (module docstring).

    ``issuers`` and ``publishers`` are asked at each exchange (the rights file may change);
    ``records`` keeps used tokens (None: this process's memory only); ``mint(publisher,
    projects, claims)`` makes the API token and tells when it expires. ``clock`` (seconds since
    1970) is for tests; ``on_outcome`` is told "granted" or the reason of each refusal;
    ``burn(secret)``, when given, revokes a minted token early (``POST /_/oidc/burn-token``,
    which uv calls after its upload); it must not tell whether the token existed.
    """

    def __init__(
        self,
        audience: str,
        issuers: Callable[[], Sequence[Issuer]],
        publishers: Callable[[], Sequence[Publisher]],
        records: Records | None,
        mint: Mint,
        *,
        on_outcome: Callable[[str], None] | None = None,
        burn: Callable[[str], None] | None = None,
        keys: KeyCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not HAVE_JWT:
            raise UsageError(
                "trusted publishing needs PyJWT and cryptography: pip install 'pkgserver[oidc]'"
            )
        if not audience or not audience.isprintable():
            raise UsageError("trusted publishing needs an audience (a non-empty string)")
        self.audience = audience
        self.issuers = issuers
        self.publishers = publishers
        self.mint = mint
        self.on_outcome = on_outcome
        self.burn = burn
        self.keys = keys if keys is not None else KeyCache()
        self.clock = clock
        self.used = UsedTokens(records, clock=clock)
        self.max_body = MAX_BODY

    def audience_doc(self) -> dict[str, str]:
        """``GET /_/oidc/audience``."""
        return {"audience": self.audience}

    def exchange(self, body: bytes) -> dict[str, Any]:
        """``POST /_/oidc/mint-token``: ``{"success": true, "token": ..., "expires": ...}``.
        Raises errors.TokenRefused (JSON in PyPI's shape), having changed nothing."""
        seen: dict[str, str] = {}
        try:
            answer = self._exchange(body, seen)
        except _Refusal as exc:
            about = f" [{seen['about']}]" if "about" in seen else ""
            log.warning(
                "trusted publishing: refused (%s): %s%s", exc.reason, exc.description, about
            )
            self._outcome(exc.reason)
            raise
        except HTTPProblem as exc:  # from mint
            log.warning(
                "trusted publishing: no token minted: %s [%s]", exc.message, seen.get("about")
            )
            self._outcome("mint_refused")
            raise
        except Exception:
            log.exception("trusted publishing: failed [%s]", seen.get("about", ""))
            self._outcome("error")
            raise
        self._outcome("granted")
        return answer

    def burn_token(self, body: bytes) -> None:
        """``POST /_/oidc/burn-token`` ``{"token": "<minted token>"}``: revoke it (``burn``).
        Answered 202 whatever became of the token, as PyPI does; raises TokenRefused for a
        body that is not that."""
        assert self.burn is not None
        if len(body) > self.max_body:
            raise _payload("too_large", f"the request is larger than {self.max_body} bytes", 403)
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("token"), str):
            raise _payload("malformed", 'the request must be {"token": "<API token>"}')
        self.burn(doc["token"])
        log.info("trusted publishing: a minted token handed back to be revoked")

    def _outcome(self, label: str) -> None:
        if self.on_outcome is not None:
            self.on_outcome(label)

    def _exchange(self, body: bytes, seen: dict[str, str]) -> dict[str, Any]:
        token = self._token_of(body)
        header_raw, payload_raw, signature = _segments(token)
        header = _json_object(header_raw)
        unverified = _json_object(payload_raw)
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise _token(
                "bad_algorithm",
                f"the token's algorithm {_text(alg, 40)} is not accepted "
                f"(only {', '.join(ALGORITHMS)})",
            )
        if "crit" in header or "b64" in header:
            raise _token("malformed", "the token's header asks for extensions (crit, b64)")
        if not signature:
            raise _payload("malformed", "malformed JWT (no signature)")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _token("unknown_key", "the token names no signing key (kid)")

        iss = unverified.get("iss")
        issuer = next((i for i in self.issuers() if isinstance(iss, str) and i.url == iss), None)
        if issuer is None:
            seen["about"] = f"unverified iss {_text(iss, 120)}"
            raise _payload("unknown_issuer", f"unknown trusted publishing issuer {_text(iss, 120)}")
        seen["about"] = f"unverified: iss {iss}, {_summary(issuer.kind, unverified)}"

        key = _verifying_key(self.keys.key(issuer, kid), alg, kid)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                options={
                    "verify_signature": True,
                    "verify_exp": False,  # the times and the audience are checked below,
                    "verify_nbf": False,  # whatever this PyJWT's version checks
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
        except PyJWTError as exc:
            raise _token("bad_signature", f"the token's signature is not valid ({exc})") from None
        seen["about"] = f"iss {iss}, {_summary(issuer.kind, claims)}"
        self._check_times(claims)
        aud = claims.get("aud")
        if aud != self.audience:
            raise _token(
                "wrong_audience",
                f"the token's audience is {_text(aud, 120)}, not {self.audience!r}",
            )

        matched = self._publishers(issuer, claims)
        projects: list[str] = []
        for p in matched:
            projects.extend(x for x in p.projects if x not in projects)

        exp = _number(claims["exp"])
        assert exp is not None
        if not self.used.first_use(_replay_key(issuer.url, claims, token), exp):
            raise _Refusal("replayed", "invalid-reuse-token", "invalid token: already used once")

        secret, expires = self.mint(matched[0], tuple(projects), MappingProxyType(claims))
        log.info(
            "trusted publishing: granted a token for %s to %s publisher %s %s, expires %s [%s]",
            ", ".join(projects),
            _KIND_NAMES.get(issuer.kind, issuer.kind),
            matched[0].repository,
            matched[0].workflow,
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)),
            seen["about"],
        )
        return {"success": True, "token": secret, "expires": int(expires)}

    def _token_of(self, body: bytes) -> str:
        if len(body) > self.max_body:
            raise _payload("too_large", f"the request is larger than {self.max_body} bytes", 403)
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise _payload(
                "malformed", 'the request is not JSON: send {"token": "<OIDC token>"}'
            ) from None
        if not isinstance(doc, dict) or set(doc) != {"token"} or not isinstance(doc["token"], str):
            raise _payload("malformed", 'the request must be {"token": "<OIDC token>"} only')
        token: str = doc["token"]
        if not token.isascii() or token.count(".") != 2:
            raise _payload("malformed", "malformed JWT")
        return token

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self.clock()
        exp, iat, nbf = (_number(claims.get(n)) for n in ("exp", "iat", "nbf"))
        if exp is None or iat is None:
            raise _token("malformed", "the token lacks a numeric exp or iat")
        if "nbf" in claims and nbf is None:
            raise _token("malformed", "the token's nbf is not a number")
        if now > exp + LEEWAY:
            raise _token("expired", "the token has expired")
        if iat > now + LEEWAY or (nbf is not None and nbf > now + LEEWAY):
            raise _token("not_yet_valid", "the token is not yet valid (iat or nbf ahead)")
        if exp > now + MAX_LIFETIME:
            raise _token(
                "malformed", f"the token expires more than {MAX_LIFETIME // 3600} h from now"
            )

    def _publishers(self, issuer: Issuer, claims: Mapping[str, Any]) -> list[Publisher]:
        """The publishers these verified claims are runs of (at least one; else _Refusal)."""
        host = urlsplit(issuer.url).netloc
        candidates = [
            p for p in self.publishers() if p.issuer == issuer.url and p.kind == issuer.kind
        ]
        matched, reasons = [], []
        for p in candidates:
            if issuer.kind == "github":
                why = github_mismatch(p, claims)
            elif issuer.kind == "gitlab":
                why = gitlab_mismatch(p, claims, host)
            else:
                why = f"issuer kind {issuer.kind!r} unknown"
            if why is None:
                matched.append(p)
            else:
                reasons.append(why)
        if matched:
            return matched
        # Say what differs from the nearest publisher (one of this repository, if any): the
        # token's holder knows its claims; other repositories' publishers are not named.
        near = [r for r in reasons if not r.startswith(("repository ", "project_path "))]
        why = near[0] if near else f"no publisher for {_summary(issuer.kind, claims) or 'it'}"
        raise _Refusal(
            "no_publisher",
            "invalid-publisher",
            f"valid token, but no corresponding publisher ({why})",
        )
