"""API tokens: used as PyPI's are (user ``__token__``, password ``pkgserver-...``), so every
publisher and installer takes them unchanged.

A token is ``pkgserver-<id>-<secret>``: the id (12 hex digits) names it in lists, logs and
revocations; the secret is 32 random bytes. Only a SHA-256 of the whole token is kept (a
secret of 256 random bits needs no slow hash: nobody can guess it, and a stolen record gives
no usable token). Tokens live with the other records (``.pkgserver/tokens.json`` in the first
package directory, or in the bucket), written under the records' lock with a conditional
rewrite, so that every replica sharing them sees a revocation: a directory's record is looked
at (one stat) at most every 0.25 s when a token is used; a bucket's is re-read when the
journal says it changed (``reload``), and at once for a token this replica does not know (one
minted a moment ago on another replica), at most a few times a second.

When each token was last used is kept in memory and written now and then
(``flush_uses``, from the service's tick) to ``.pkgserver/token-uses.json``, never on the
request's thread.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .fsutil import ChangeWatch
from .records import rewriting
from .rights import ACTIONS
from .storage import Records

__all__ = [
    "PREFIX",
    "TOKENS_FILE",
    "TOKEN_USER",
    "USES_FILE",
    "Token",
    "TokenStore",
    "looks_like_token",
    "parse_duration",
]

log = logging.getLogger(__name__)

PREFIX = "pkgserver-"
TOKENS_FILE = "tokens.json"
USES_FILE = "token-uses.json"
TOKEN_USER = "__token__"  # noqa: S105 (the user name every client sends with a token)
MAX_TOKENS = 10_000  # a record of this many is about 4 MB; more is refused at creation
MAX_DESCRIPTION = 200
EXPIRED_KEPT = 7 * 86400.0  # seconds an expired token stays listed before it is pruned
RECHECK = 0.25  # seconds between looks at a directory's record while tokens are used
UNKNOWN_RELOAD = 0.25  # at most this often, a token not known here re-reads the record
MAX_LIFETIME = 10 * 366 * 86400.0  # seconds: a longer expiry is refused (say "never")
USES_EVERY = 30.0  # seconds between writes of the last-use times

_TOKEN = re.compile(r"pkgserver-([0-9a-f]{12})-([A-Za-z0-9_\-]{43})")
_ID = re.compile(r"[0-9a-f]{12}")
# What an unknown id's secret is compared with, so that it costs what a known one does.
_DECOY = hashlib.sha256(b"pkgserver-decoy").hexdigest()


def looks_like_token(password: str) -> bool:
    return password.startswith(PREFIX)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class Token:
    """What a token may do; its secret is never kept."""

    id: str
    owner: str  # an htpasswd user, or "trusted-publisher:..." for one minted by OIDC
    actions: tuple[str, ...]  # of rights.ACTIONS
    projects: tuple[str, ...]  # names or patterns; empty: every project the owner may
    expires: float | None  # seconds since 1970, or None
    description: str
    created: float
    digest: str = field(repr=False)  # sha256 of the whole token, hex
    kind: str = "api"  # "api" (created by a person) or "oidc" (minted by trusted publishing)
    last_used: float | None = None

    def expired(self, now: float | None = None) -> bool:
        return self.expires is not None and (now or time.time()) >= self.expires

    def doc(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("last_used")
        return out

    @classmethod
    def from_doc(cls, doc: Any) -> Token | None:
        """None for an entry that is not one (a hand edit): it is ignored, never half-used."""
        if not isinstance(doc, dict):
            return None
        try:
            token = cls(
                id=str(doc["id"]),
                owner=str(doc["owner"]),
                actions=tuple(a for a in doc["actions"] if a in ACTIONS),
                projects=tuple(str(p) for p in doc.get("projects") or ()),
                expires=float(doc["expires"]) if doc.get("expires") is not None else None,
                description=str(doc.get("description", ""))[:MAX_DESCRIPTION],
                created=float(doc.get("created", 0)),
                digest=str(doc["digest"]),
                kind=str(doc.get("kind", "api")),
            )
        except (KeyError, TypeError, ValueError):
            return None
        if not _ID.fullmatch(token.id) or not re.fullmatch(r"[0-9a-f]{64}", token.digest):
            return None
        return token


class TokenStore:
    """The tokens of one index, in ``records`` (the first package directory's, or a bucket's).

    ``reload_every``: seconds between looks at the record when a token is used (a directory:
    a stat); ``math.inf`` for a bucket, whose record is re-read when told (``reload``)."""

    def __init__(self, records: Records, *, reload_every: float = RECHECK) -> None:
        self.records = records
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._tokens: dict[str, Token] = {}
        self._uses: dict[str, float] = {}  # id -> last use, as recorded
        self._fresh_uses: dict[str, float] = {}  # id -> last use, not yet written
        self._last_unknown_reload = 0.0
        self._read_stamp: object = None  # the directory record's stamp when last read
        self._last_flush = time.monotonic()
        self._watch = (
            ChangeWatch(lambda: records.stamp(TOKENS_FILE), every=reload_every)
            if math.isfinite(reload_every)
            else None
        )
        self.reload()

    # -- reading ------------------------------------------------------------------------------
    def reload(self) -> None:
        """Read the record again (a bucket's replicas are told to through the journal). One
        reload at a time, so that an older read never replaces a newer one."""
        with self._reload_lock:
            stamp = self.records.stamp(TOKENS_FILE) if self._watch is not None else None
            tokens = self._read()
            if tokens is None:
                return
            uses = self._read_uses()
            with self._lock:
                self._tokens = {t.id: t for t in tokens}
                self._read_stamp = stamp
                if uses is not None:
                    self._uses = uses

    def _read(self) -> list[Token] | None:
        """The record's tokens; None when it cannot be read now (the previous ones stay)."""
        try:
            data = self.records.read(TOKENS_FILE)
            doc = json.loads(data) if data is not None else {"tokens": []}
        except (OSError, ValueError, RecursionError) as exc:
            self.records.warn_once("keeping the tokens read before", exc)
            return None
        self.records.all_well(TOKENS_FILE)
        entries = doc.get("tokens") if isinstance(doc, dict) else None
        found = [Token.from_doc(e) for e in entries] if isinstance(entries, list) else []
        return [t for t in found if t is not None]

    def _read_uses(self) -> dict[str, float] | None:
        try:
            data = self.records.read(USES_FILE)
            doc = json.loads(data) if data is not None else {}
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(doc, dict):
            return {}
        return {
            str(k): float(v)
            for k, v in doc.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }

    def _maybe_reload(self) -> None:
        if self._watch is not None and self._watch.changed():
            self.reload()

    def tokens(self, owner: str | None = None) -> list[Token]:
        """Every token (of ``owner``), with when each was last used, newest first."""
        self._maybe_reload()
        with self._lock:
            found = [
                _with_use(t, self._fresh_uses.get(t.id) or self._uses.get(t.id))
                for t in self._tokens.values()
                if owner is None or t.owner == owner
            ]
        return sorted(found, key=lambda t: -t.created)

    def verify(self, presented: str) -> Token | None:
        """The token whose secret this is (expired or not: the caller says which); None for
        anything else. Constant time in the secret."""
        match = _TOKEN.fullmatch(presented)
        if match is None:
            return None
        token_id = match.group(1)
        self._maybe_reload()
        token = self._tokens.get(token_id)
        if token is None:
            # Minted or created a moment ago by another replica or `pkgserver token create`.
            # A directory's record: read again when its stamp changed (a stat); a bucket's, at
            # most a few times a second whatever the callers send.
            if self._watch is not None:
                stamp = self.records.stamp(TOKENS_FILE)
                if stamp != self._read_stamp:
                    self.reload()
            else:
                now = time.monotonic()
                if now - self._last_unknown_reload >= UNKNOWN_RELOAD:
                    self._last_unknown_reload = now
                    self.reload()
            token = self._tokens.get(token_id)
        expected = token.digest if token is not None else _DECOY
        if not hmac.compare_digest(_digest(presented), expected) or token is None:
            return None
        return token

    def used(self, token: Token) -> None:
        """Note a use (written later by ``flush_uses``)."""
        with self._lock:
            self._fresh_uses[token.id] = time.time()

    # -- writing ------------------------------------------------------------------------------
    def create(
        self,
        owner: str,
        actions: Iterable[str],
        projects: Sequence[str] = (),
        *,
        expires: float | None = None,
        description: str = "",
        kind: str = "api",
    ) -> tuple[str, Token]:
        """A new token: (the secret, to show once; what is kept). Raises ValueError for a
        token that cannot be, OSError when the record cannot be written."""
        wanted = tuple(dict.fromkeys(actions))
        if not wanted or any(a not in ACTIONS for a in wanted):
            raise ValueError(f"actions must be some of {', '.join(ACTIONS)}")
        if expires is not None and expires <= time.time():
            raise ValueError("the expiry is in the past")
        token_id = secrets.token_hex(6)
        secret = f"{PREFIX}{token_id}-{secrets.token_urlsafe(32)}"
        token = Token(
            id=token_id,
            owner=owner,
            actions=wanted,
            projects=tuple(projects),
            expires=expires,
            description=" ".join(description.split())[:MAX_DESCRIPTION],
            created=round(time.time(), 3),
            digest=_digest(secret),
            kind=kind,
        )
        rewriting(functools.partial(self._change, add=token))
        return secret, token

    def revoke(self, token_id: str, owner: str | None = None) -> Token | None:
        """Delete the token (only ``owner``'s, when given); the token deleted, or None."""
        found: list[Token] = []
        rewriting(functools.partial(self._change, remove=token_id, owner=owner, out=found))
        return found[0] if found else None

    def _change(
        self,
        add: Token | None = None,
        remove: str | None = None,
        owner: str | None = None,
        out: list[Token] | None = None,
    ) -> bool:
        with self.records.locked():
            tokens = self._read_strict()
            now = time.time()
            kept = [
                t
                for t in tokens
                if not (t.expires is not None and now - t.expires > EXPIRED_KEPT) and t.id != remove
            ]
            gone = [t for t in tokens if t.id == remove and (owner is None or t.owner == owner)]
            if remove is not None and not gone:
                return False
            if out is not None:
                out.extend(gone)
            if add is not None:
                if len(kept) >= MAX_TOKENS:
                    raise ValueError(f"there are {len(kept)} tokens already: revoke some first")
                kept.append(add)
            body = json.dumps({"tokens": [t.doc() for t in kept]}, indent=1) + "\n"
            self.records.replace(TOKENS_FILE, body.encode())
        with self._lock:
            self._tokens = {t.id: t for t in kept}
        return True

    def _read_strict(self) -> list[Token]:
        """The record's tokens for a rewrite: one that cannot be read is not overwritten."""
        data = self.records.read(TOKENS_FILE)
        if data is None:
            return []
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise OSError(
                f"{self.records.file(TOKENS_FILE)} is damaged ({exc}); fix or remove it"
            ) from None
        entries = doc.get("tokens") if isinstance(doc, dict) else None
        if not isinstance(entries, list):
            raise OSError(f"{self.records.file(TOKENS_FILE)} holds no token list")
        return [t for t in (Token.from_doc(e) for e in entries) if t is not None]

    def flush_uses(self, force: bool = False) -> None:
        """Write the last-use times noted since the last write, at most every USES_EVERY
        seconds (merged with the record: another replica's later times are kept)."""
        now = time.monotonic()
        if not self._fresh_uses or (not force and now - self._last_flush < USES_EVERY):
            return
        self._last_flush = now
        with self._lock:
            fresh, self._fresh_uses = self._fresh_uses, {}
        try:
            rewriting(functools.partial(self._write_uses, fresh))
        except (OSError, ValueError) as exc:
            self.records.warn_once("when tokens were last used is not recorded", exc)

    def _write_uses(self, fresh: dict[str, float]) -> bool:
        with self.records.locked():
            uses = self._read_uses() or {}
            with self._lock:
                known = set(self._tokens)
            merged = {k: max(v, uses.get(k, 0.0)) for k, v in fresh.items()}
            table = {k: v for k, v in {**uses, **merged}.items() if k in known}
            self.records.replace(USES_FILE, json.dumps(table).encode() + b"\n")
        with self._lock:
            self._uses = table
        return True


def _with_use(token: Token, when: float | None) -> Token:
    if when is None:
        return token
    return Token(**{**token.__dict__, "last_used": when})


def parse_duration(text: str) -> float:
    """Seconds in ``90d``, ``12h``, ``30m``, ``3600`` (s); raises ValueError."""
    match = re.fullmatch(r"\s*(\d{1,7})\s*([smhdw]?)\s*", text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 90d, 12h or 30m")
    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
    seconds = float(match.group(1)) * scale
    if seconds > MAX_LIFETIME:
        raise ValueError(f"{text!r} is longer than ten years: leave the expiry out for none")
    return seconds
