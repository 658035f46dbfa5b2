"""Access control: an Apache htpasswd file (via passlib) and the per-action policy.

The htpasswd file is re-read when it changes (checked at most once a second), and a file that
cannot be parsed mid-edit keeps the previous users. Successful verifications are remembered as an
HMAC under a per-process key, so bcrypt does not run on every request of a pip session.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable

from passlib.apache import HtpasswdFile
from passlib.context import CryptContext

from .errors import Busy, Forbidden, Unauthorized
from .fsutil import ChangeWatch, file_stamp, open_regular
from .rights import Rights, RightsError, parse_rights, project_matches
from .tokens import TOKEN_USER, Token, TokenStore

__all__ = [
    "Authenticator",
    "Credentials",
    "Principal",
    "RightsFile",
    "load_htpasswd",
    "load_rights",
    "parse_basic",
]

log = logging.getLogger(__name__)

REALM = "pkgserver"
MAX_HEADER = 8192
RECHECK_SECONDS = 1.0
CACHE_TTL = 300.0
CACHE_MAX = 4096
CHECK_WAIT = 2.0  # seconds a request waits for a free password-check slot before 503
MISSING_GRACE = (
    2.0  # seconds an htpasswd file may be gone (an editor replacing it) before no one is let in
)

Credentials = tuple[str, str]


def parse_basic(header: str | None) -> Credentials | None:
    """(user, password) from an ``Authorization: Basic`` header, or None if absent or unusable."""
    if not header or len(header) > MAX_HEADER:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        # requests (twine, pip) encodes Basic credentials as latin-1, uv as UTF-8.
        text = decoded.decode("latin-1")
    user, colon, password = text.partition(":")
    if not colon or not user:
        return None
    return user, password


# The schemes Apache's htpasswd writes (-B bcrypt, -m apr1, -s SHA1, -d crypt, -2/-5 SHA-2
# crypt). passlib's own htpasswd context also accepts *plaintext*, under which an entry like
# "locked:!" (a common way to disable a user) would log in with the password "!".
HTPASSWD_CONTEXT = CryptContext(
    schemes=["bcrypt", "apr_md5_crypt", "ldap_sha1", "sha256_crypt", "sha512_crypt", "des_crypt"]
)


MAX_HTPASSWD = 16 * 1024 * 1024


def load_htpasswd(path: str) -> HtpasswdFile:
    """Load and validate an htpasswd file; raises OSError or ValueError. Read as the records
    are: never blocking on a FIFO put in its place (it is re-read on every change), regular
    files only, bounded."""
    with os.fdopen(open_regular(path), "rb") as fh:
        data = fh.read(MAX_HTPASSWD + 1)
    if len(data) > MAX_HTPASSWD:
        raise ValueError(f"larger than {MAX_HTPASSWD} bytes")
    return HtpasswdFile.from_string(data, context=HTPASSWD_CONTEXT)


# Verified when no real hash can be (an unknown user, a disabled entry such as "locked:!", a
# file with no usable entry), so that such a check costs what a real one does. bcrypt at the
# cost Apache's `htpasswd -B` uses by default.
_FALLBACK_DECOY = "$2y$05$5EU6TcJ7AVUNA0Wvk92HA.bNEjNMpW3ciPtsuOqxxkkebmh2eEiA."


def _decoy_hash(htpasswd: HtpasswdFile) -> str:
    """The costliest hash of the file (bcrypt with the most rounds, else SHA-crypt with the
    most rounds, else apr1, ...), verified for users it cannot check otherwise. The first
    entry's was used: with an apr1 user first and bcrypt users after (a file moved from
    pypiserver, then extended with `pkgserver passwd`), unknown and disabled users answered
    in 1 ms against 300 ms for real ones. With mixed schemes an unknown user now takes as
    long as the strongest hash; a user of a cheaper scheme answers faster, whatever we do."""
    best: tuple[int, int, str] | None = None
    for user in htpasswd.users():
        stored = htpasswd.get_hash(user)
        if not stored or not _known_hash(stored):
            continue
        text = stored.decode("ascii") if isinstance(stored, bytes) else str(stored)
        cost = _cost(text)
        if best is None or cost > best[:2]:
            best = (*cost, text)
    return best[2] if best is not None else _FALLBACK_DECOY


_SCHEME_RANK = {
    "bcrypt": 5,
    "sha512_crypt": 4,
    "sha256_crypt": 4,
    "apr_md5_crypt": 2,
    "des_crypt": 1,
    "ldap_sha1": 0,
}


def _cost(stored: str) -> tuple[int, int]:
    """(scheme rank, rounds) of a hash the context knows: which costs more to verify."""
    scheme = str(HTPASSWD_CONTEXT.identify(stored))
    rounds = 0
    try:
        rounds = int(getattr(HTPASSWD_CONTEXT.handler(scheme).from_string(stored), "rounds", 0))
    except (ValueError, TypeError):
        pass
    return _SCHEME_RANK.get(scheme, 0), rounds


def _plain_text_users(htpasswd: HtpasswdFile) -> list[str]:
    """Users whose entry is no hash we know and not a disabled entry (``!...``, ``*``,
    empty): most likely a plain-text password, which pypiserver (passlib) took and we refuse."""
    found = []
    for user in htpasswd.users():
        stored = htpasswd.get_hash(user)
        text = stored.decode("utf-8", "replace") if isinstance(stored, bytes) else str(stored)
        if text and not text.startswith(("!", "*")) and not _known_hash(text):
            found.append(user)
    return found


def _known_hash(stored: str | bytes) -> bool:
    try:
        return HTPASSWD_CONTEXT.identify(stored, required=False) is not None
    except (ValueError, TypeError):
        return False


MAX_RIGHTS = 4 * 1024 * 1024


def load_rights(path: str) -> Rights:
    """Read and parse a rights file; raises OSError or RightsError (a ValueError)."""
    with os.fdopen(open_regular(path), "rb") as fh:
        data = fh.read(MAX_RIGHTS + 1)
    if len(data) > MAX_RIGHTS:
        raise RightsError(f"larger than {MAX_RIGHTS} bytes")
    return parse_rights(data)


class RightsFile:
    """``--rights FILE``, re-read within a second of a change; a file that cannot be read or
    parsed mid-edit keeps the previous rights (one warning), as the htpasswd file does. No
    file: every user has every right (``Rights()``)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._watch = ChangeWatch(lambda: file_stamp(path or ""), every=RECHECK_SECONDS)
        self._lock = threading.Lock()
        if path:
            self._watch.mark()  # before reading: an edit meanwhile is seen at the next look
        self._rights = load_rights(path) if path else Rights()
        self.generation = 0  # bumped at each reload (caches of what the rights allow use it)

    @property
    def current(self) -> Rights:
        if self.path and self._watch.changed():
            with self._lock:  # one reload at a time: an older read never replaces a newer
                try:
                    self._rights = load_rights(self.path)
                    self.generation += 1
                    log.info("reloaded %s", self.path)
                except (OSError, ValueError) as exc:
                    log.warning("keeping the previous rights: cannot use %s: %s", self.path, exc)
        return self._rights


class Principal:
    """Who a request authenticates as: an htpasswd user, or a token (and its owner)."""

    __slots__ = ("token", "user")

    def __init__(self, user: str, token: Token | None = None) -> None:
        self.user = user  # the htpasswd user, or the token's owner
        self.token = token

    @property
    def label(self) -> str:
        """For logs and the upload log: "alice", or "alice (token 3fa2c1d09b4e)"."""
        return self.user if self.token is None else f"{self.user} (token {self.token.id})"

    def __repr__(self) -> str:
        return f"Principal({self.label!r})"


# The route-level actions (-a) a token's actions answer to: an upload route may upload or
# remove, which the form tells (and Uploads asks again with the project).
_TOKEN_ACTIONS = {"update": ("upload", "remove"), "download": ("download",), "list": ("list",)}


class Authenticator:
    """``check(action, header)`` returns the user name (or None for open actions) or raises;
    ``identify`` returns who it is (a ``Principal``); ``refusal(principal, action, project)``
    says why a per-project right is missing."""

    def __init__(
        self,
        password_file: str | None,
        protected: frozenset[str],
        threads: int = 16,
        *,
        rights: RightsFile | None = None,
        tokens: TokenStore | None = None,
        on_decision: Callable[[str, str], None] | None = None,
    ) -> None:
        self.password_file = password_file
        self.protected = protected
        self.rights = rights or RightsFile(None)
        self.tokens = tokens
        # (what, outcome) for the metrics: ("token", "used"), ("rights", "refused"), ...
        self.on_decision = on_decision or (lambda _what, _outcome: None)
        self._lock = threading.Lock()
        self._htpasswd: HtpasswdFile | None = None
        self._decoy = _FALLBACK_DECOY
        # Bumped whenever the users change: a verification that began before a reload is not
        # remembered after it (a deleted user must not stay logged in for CACHE_TTL).
        self._generation = 0
        self._watch = ChangeWatch(lambda: file_stamp(password_file or ""), every=RECHECK_SECONDS)
        self._key = secrets.token_bytes(32)
        # Password checks (bcrypt: a core for a quarter second each) run on all cores but one,
        # and at most half the worker threads (``threads``) may be checking or waiting to:
        # a flood of guesses gets 503 beyond that, and the other half keeps serving.
        admitted = max(1, threads // 2)
        self._checks = threading.BoundedSemaphore(max(1, min((os.cpu_count() or 1) - 1, admitted)))
        self._admitted = threading.BoundedSemaphore(admitted)
        self._missing_since: float | None = None
        self._verified: dict[bytes, float] = {}
        if password_file:
            self._watch.mark()
            self._htpasswd = load_htpasswd(password_file)
            self._decoy = _decoy_hash(self._htpasswd)
            self._warn_plain_text(self._htpasswd)

    def _warn_plain_text(self, htpasswd: HtpasswdFile) -> None:
        users = _plain_text_users(htpasswd)
        if users:
            shown = ", ".join(repr(u) for u in users[:10]) + (" ..." if len(users) > 10 else "")
            log.warning(
                "%s: %s cannot log in: the entry is not a password hash (a plain-text password?); "
                "set it with `pkgserver passwd %s USER` or `htpasswd -B`",
                self.password_file,
                shown,
                self.password_file,
            )

    def requires(self, action: str) -> bool:
        return action in self.protected

    def check(self, action: str, header: str | None) -> str | None:
        found = self.identify(action, header)
        return found.label if found is not None else None

    def identify(self, action: str, header: str | None) -> Principal | None:
        """Who the request is, for a protected ``action`` (None when it is open); raises
        Unauthorized (no credentials), Forbidden (wrong ones, or a token without the
        action) or Busy."""
        if action not in self.protected:
            return None
        creds = parse_basic(header)
        if creds is not None and creds[0] == TOKEN_USER and self.tokens is not None:
            return self._token_principal(action, creds[1])
        if self.password_file is None:
            # No credentials could ever work: say how to enable the action instead of asking.
            raise Forbidden(
                f"{'uploads are' if action == 'update' else action + ' is'} disabled: start "
                "pkgserver with -P HTPASSWD (see htpasswd.example), or -P . -a . for an open index"
            )
        creds = parse_basic(header)
        if creds is None:
            raise Unauthorized("authentication required", realm=REALM)
        user, password = creds
        if not self.verify(user, password):
            raise Forbidden("invalid credentials")
        return Principal(user)

    def sign_in(self, header: str | None) -> str:
        """The htpasswd user whose password the request brings, whatever -a protects (the
        pages where users manage their own tokens); a token does not sign in."""
        if self.password_file is None:
            raise Forbidden("there are no users: start pkgserver with -P HTPASSWD")
        creds = parse_basic(header)
        if creds is None:
            raise Unauthorized("sign in with your user name and password", realm=REALM)
        user, password = creds
        if user == TOKEN_USER:
            raise Forbidden("sign in with your password: a token cannot manage tokens")
        if not self.verify(user, password):
            raise Forbidden("invalid credentials")
        return user

    def _token_principal(self, action: str, secret: str) -> Principal:
        assert self.tokens is not None
        token = self.tokens.verify(secret)
        if token is None:
            self.on_decision("token", "unknown")
            log.info("refused an unknown or revoked token")
            raise Forbidden("invalid token (unknown, mistyped or revoked)")
        if token.expired():
            self.on_decision("token", "expired")
            log.info("refused token %s of %s: expired", token.id, token.owner)
            raise Forbidden(f"token {token.id} has expired")
        if token.kind != "oidc" and not self.user_exists(token.owner):
            self.on_decision("token", "no-owner")
            log.info("refused token %s: its owner %s is no longer a user", token.id, token.owner)
            raise Forbidden(f"token {token.id} belongs to {token.owner}, who is no longer a user")
        if action not in _TOKEN_ACTIONS or not set(_TOKEN_ACTIONS[action]) & set(token.actions):
            self.on_decision("token", "refused")
            log.info("refused token %s of %s for %s", token.id, token.owner, action)
            wanted = " or ".join(_TOKEN_ACTIONS.get(action, (action,)))
            raise Forbidden(f"token {token.id} does not grant {wanted}")
        self.tokens.used(token)
        self.on_decision("token", "used")
        return Principal(token.owner, token)

    def user_exists(self, user: str) -> bool:
        """Whether ``user`` is in the htpasswd file with an entry that can log in."""
        self._maybe_reload()
        with self._lock:
            htpasswd = self._htpasswd
        if htpasswd is None:
            return False
        stored = htpasswd.get_hash(user)
        return stored is not None and _known_hash(stored)

    def refusal(self, who: Principal | None, action: str, project: str) -> str | None:
        """Why ``who`` may not ``action`` (upload, remove, download, list) on the normalized
        ``project``, or None when it may. Depends on the name only, never on whether the
        project exists, so a refusal tells nothing about what is hosted."""
        if who is None:
            return None  # an open action
        token = who.token
        if token is not None:
            if action not in token.actions:
                return f"token {token.id} does not grant {action}"
            if token.projects and not any(project_matches(p, project) for p in token.projects):
                return f"token {token.id} does not grant {action} on {project!r}"
            if token.kind == "oidc":
                return None  # minted for trusted publishing: its scope is all it has
        if not self.rights.current.allows(who.user, action, project):
            return f"{who.user} has no {action} right on {project!r}"
        return None

    def restricted(self, who: Principal, action: str) -> bool:
        """Whether ``who`` may ``action`` on only some projects (its lists are then cut)."""
        token = who.token
        if token is not None and (action not in token.actions or token.projects):
            return True
        if token is not None and token.kind == "oidc":
            return False
        rights = self.rights.current
        return rights.restricts and "*" not in rights.patterns_of(who.user, action)

    def authorize(self, who: Principal | None, action: str, project: str) -> None:
        """``refusal``, raised as Forbidden and logged."""
        reason = self.refusal(who, action, project)
        if reason is not None:
            self.on_decision("rights", "refused")
            log.info("refused %s %s on %s: %s", who.label if who else "-", action, project, reason)
            raise Forbidden(reason)

    def verify(self, user: str, password: str) -> bool:
        self._maybe_reload()
        if not password:
            return False
        token = hmac.new(
            self._key, f"{user}\0{password}".encode("utf-8", "surrogatepass"), hashlib.sha256
        ).digest()
        now = time.monotonic()
        with self._lock:
            expires = self._verified.get(token)
            htpasswd, decoy, generation = self._htpasswd, self._decoy, self._generation
        if expires is not None and expires > now:
            return True
        if htpasswd is None:
            return False
        # bcrypt takes a core for a quarter second: never let a burst of (wrong) passwords
        # occupy every worker thread and starve requests that need no check.
        if not self._admitted.acquire(blocking=False):
            raise Busy("too many password checks at once; try again")
        try:
            if not self._checks.acquire(timeout=CHECK_WAIT):
                raise Busy("too many password checks at once; try again")
            try:
                ok = _check_password(htpasswd, decoy, user, password)
            finally:
                self._checks.release()
        finally:
            self._admitted.release()
        if ok:
            with self._lock:
                # The users changed during the check: its answer serves this request, which
                # began before, but is not remembered.
                if self._generation == generation:
                    if len(self._verified) >= CACHE_MAX:
                        self._verified.clear()
                    self._verified[token] = now + CACHE_TTL
        return ok

    def _maybe_reload(self) -> None:
        if not self.password_file:
            return
        changed = self._watch.check()
        if changed is None:
            return  # looked less than a second ago
        now = time.monotonic()
        if self._watch.last is None:
            # Gone. An editor may be replacing it: wait a moment, then let no one in.
            if self._missing_since is None:
                self._missing_since = now
            if now - self._missing_since >= MISSING_GRACE and self._htpasswd is not None:
                log.warning(
                    "%s is gone: refusing every password until it is back", self.password_file
                )
                self._replace(None)
            return
        self._missing_since = None
        if not changed and self._htpasswd is not None:
            return
        try:
            fresh = load_htpasswd(self.password_file)
        except (OSError, ValueError) as exc:
            log.warning("keeping the previous users: cannot read %s: %s", self.password_file, exc)
            return
        self._replace(fresh)
        log.info("reloaded %s", self.password_file)

    def _replace(self, htpasswd: HtpasswdFile | None) -> None:
        decoy = _decoy_hash(htpasswd) if htpasswd is not None else _FALLBACK_DECOY
        if htpasswd is not None:
            self._warn_plain_text(htpasswd)
        with self._lock:
            self._htpasswd = htpasswd
            self._decoy = decoy
            self._generation += 1
            self._verified.clear()  # a removed user or a changed password takes effect now


def _check_password(htpasswd: HtpasswdFile, decoy: str, user: str, password: str) -> bool:
    """Whether ``password`` is ``user``'s. An unknown user, or an entry that can never log in
    (``locked:!``, an empty or unknown hash), spends one real verification of the decoy hash,
    result thrown away, so that neither can be told apart from a wrong password by timing."""
    try:
        stored = htpasswd.get_hash(user)
        if stored is not None and _known_hash(stored):
            return _safe_verify(lambda: HTPASSWD_CONTEXT.verify(password, stored) is True)
        _safe_verify(lambda: HTPASSWD_CONTEXT.verify(password, decoy))
        return False
    except Exception:  # a malformed entry must not turn into a 500
        log.warning("could not verify a password for user %r", user)
        return False


def _safe_verify(check: Callable[[], bool]) -> bool:
    try:
        return bool(check())
    except (ValueError, TypeError):
        # e.g. bcrypt refuses passwords over 72 bytes: that is a failed check, not a crash.
        return False
