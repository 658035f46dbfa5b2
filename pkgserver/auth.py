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

__all__ = ["Authenticator", "Credentials", "load_htpasswd", "parse_basic"]

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


class Authenticator:
    """``check(action, header)`` returns the user name (or None for open actions) or raises."""

    def __init__(
        self, password_file: str | None, protected: frozenset[str], threads: int = 16
    ) -> None:
        self.password_file = password_file
        self.protected = protected
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
        if action not in self.protected:
            return None
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
        return user

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
