"""Who may do what to which project: the rights file (``--rights FILE``, TOML), parsed.

Pure rules, no I/O: ``auth`` reads and reloads the file and asks these rules. The format::

    [groups]
    platform = ["alice", "bob"]

    [[allow]]                       # every rule grants; nothing is ever denied explicitly
    users = ["*"]                   # htpasswd users; "*" is every one of them
    projects = ["*"]
    actions = ["download", "list"]

    [[allow]]
    groups = ["platform"]
    projects = ["acme-*", "tools"]  # normalized names or shell-style patterns
    actions = ["upload", "remove"]

    [trusted-publishing]
    audience = "pkgserver"          # what GET /_/oidc/audience answers

    [issuers.github]                # a GitHub or GitLab issuer (GitHub's is built in)
    url = "https://token.actions.githubusercontent.com"
    jwks-file = "/etc/pkgserver/github-jwks.json"   # pinned keys; else fetched from the URL

    [[publisher]]                   # trusted publishing: who may publish without a password
    projects = ["acme-lib"]
    issuer = "github"
    repository = "acme/acme-lib"
    workflow = "release.yml"
    environment = "pypi"            # optional

Actions: ``upload`` (a new file), ``remove`` (``remove_pkg``: delete a release over HTTP),
``download``, ``list``. A file without any ``[[allow]]`` table leaves htpasswd users with every
right, as without a rights file.
"""

from __future__ import annotations

import fnmatch
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .distfile import normalize

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.9 and 3.10
    import tomli as tomllib

__all__ = [
    "ACTIONS",
    "BUILTIN_ISSUERS",
    "Grant",
    "Issuer",
    "Publisher",
    "Rights",
    "RightsError",
    "check_patterns",
    "parse_rights",
    "pattern_covers",
    "project_matches",
]

ACTIONS = ("upload", "remove", "download", "list")

_GLOB = re.compile(r"[*?\[]")


def project_matches(pattern: str, name: str) -> bool:
    """Whether the normalized project ``name`` is one that ``pattern`` names: a project name
    (compared normalized) or a shell-style pattern over normalized names (``acme-*``)."""
    if not _GLOB.search(pattern):
        return normalize(pattern) == name
    return fnmatch.fnmatchcase(name, pattern.lower())


def pattern_covers(wide: str, narrow: str) -> bool:
    """Whether every name ``narrow`` matches is matched by ``wide`` (conservatively: False
    when that cannot be told simply). A name is covered when ``wide`` matches it; a pattern
    when ``wide`` is ``*``, the same pattern, or a prefix pattern (``acme-*``) of it."""
    if not _GLOB.search(narrow):
        return project_matches(wide, normalize(narrow))
    wide, narrow = wide.lower(), narrow.lower()
    if wide in ("*", narrow):
        return True
    head = wide[:-1]
    return wide.endswith("*") and not _GLOB.search(head) and narrow.startswith(head)


@dataclass(frozen=True)
class Publisher:
    """A trusted publisher: CI runs of one repository's workflow that may publish
    ``projects`` without a stored secret (OIDC), and whose PEP 740 attestations an upload of
    those projects must carry when it brings any."""

    kind: str  # "github" | "gitlab"
    issuer: str  # the issuer URL, e.g. https://token.actions.githubusercontent.com
    repository: str  # "owner/repo" (GitHub) or "group/subgroup/project" (GitLab)
    workflow: str  # GitHub: the workflow's file name ("release.yml"); GitLab: the CI file path
    environment: str | None  # a deployment environment the run must use, or None for any
    projects: tuple[str, ...]  # names or patterns (see project_matches)

    def covers(self, project: str) -> bool:
        return any(project_matches(p, project) for p in self.projects)


@dataclass(frozen=True)
class Issuer:
    """An OIDC issuer whose tokens trusted publishing accepts (``[issuers.NAME]``)."""

    name: str  # what a publisher's ``issuer`` names: "github", "gitlab", or the table's name
    kind: str  # "github" | "gitlab": which claims name the repository, workflow, environment
    url: str  # the ``iss`` claim, exactly; keys from URL/.well-known/openid-configuration
    jwks_file: str | None = None  # pinned keys (a JWKS JSON file) for networks without the issuer


# Known without configuration; a rights file may override either (e.g. pinned keys).
BUILTIN_ISSUERS = (
    Issuer("github", "github", "https://token.actions.githubusercontent.com"),
    Issuer("gitlab", "gitlab", "https://gitlab.com"),
)


@dataclass(frozen=True)
class Grant:
    """One ``[[allow]]`` table: these users and groups may do these actions on these projects."""

    users: frozenset[str]  # "*": every htpasswd user
    groups: frozenset[str]
    projects: tuple[str, ...]
    actions: frozenset[str]

    def names(self, user: str, groups: Mapping[str, frozenset[str]]) -> bool:
        if "*" in self.users or user in self.users:
            return True
        return any(user in groups.get(g, frozenset()) for g in self.groups)


DEFAULT_AUDIENCE = "pkgserver"


@dataclass(frozen=True)
class Rights:
    """A parsed rights file. ``restricts`` is False for a file with no ``[[allow]]`` (and for
    no file at all): users then have every right, as before rights files existed."""

    grants: tuple[Grant, ...] = ()
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    publishers: tuple[Publisher, ...] = ()
    issuers: tuple[Issuer, ...] = BUILTIN_ISSUERS
    audience: str = DEFAULT_AUDIENCE
    restricts: bool = False

    def allows(self, user: str, action: str, project: str) -> bool:
        """Whether ``user`` may ``action`` on the normalized ``project``."""
        if not self.restricts:
            return True
        return any(
            action in g.actions
            and g.names(user, self.groups)
            and any(project_matches(p, project) for p in g.projects)
            for g in self.grants
        )

    def patterns_of(self, user: str, action: str) -> list[str]:
        """The project patterns on which ``user`` may ``action`` (["*"] when unrestricted)."""
        if not self.restricts:
            return ["*"]
        return [
            p
            for g in self.grants
            if action in g.actions and g.names(user, self.groups)
            for p in g.projects
        ]

    def wider_than(self, user: str, actions: Iterable[str], projects: Sequence[str]) -> str | None:
        """Why a token of ``actions`` on ``projects`` (empty: every project) would give more
        than ``user`` has, or None when it would not."""
        for action in actions:
            held = self.patterns_of(user, action)
            for wanted in projects or ("*",):
                if not any(pattern_covers(h, wanted) for h in held):
                    return f"{user} has no {action!r} right on {wanted!r}"
        return None

    def publishers_for(self, project: str) -> list[Publisher]:
        return [p for p in self.publishers if p.covers(project)]

    def issuer(self, name_or_url: str) -> Issuer | None:
        for issuer in self.issuers:
            if name_or_url in (issuer.name, issuer.url):
                return issuer
        return None


class RightsError(ValueError):
    """The rights file cannot be used: the message says where and why."""


_NAME = re.compile(r"[A-Za-z0-9._@+\-*]{1,200}")  # a user, group, or "*"


def parse_rights(data: bytes) -> Rights:
    """The rights in a TOML document; raises RightsError naming the first problem."""
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RightsError(f"not valid TOML: {exc}") from None
    unknown = set(doc) - {"groups", "allow", "publisher", "issuers", "trusted-publishing"}
    if unknown:
        raise RightsError(f"unknown table {sorted(unknown)[0]!r}")
    groups = {
        _word(name, "group"): frozenset(_words(members, f"groups.{name}"))
        for name, members in _table(doc.get("groups", {}), "groups").items()
    }
    grants = []
    for i, entry in enumerate(_tables(doc.get("allow", []), "allow")):
        where = f"allow #{i + 1}"
        _only(entry, {"users", "groups", "projects", "actions"}, where)
        users = frozenset(_words(entry.get("users", []), f"{where}: users"))
        named_groups = frozenset(_words(entry.get("groups", []), f"{where}: groups"))
        for g in named_groups - set(groups):
            raise RightsError(f"{where}: no group {g!r} in [groups]")
        if not users and not named_groups:
            raise RightsError(f"{where}: names no users and no groups")
        actions = frozenset(_actions(entry.get("actions"), where))
        grants.append(Grant(users, named_groups, _projects(entry.get("projects"), where), actions))
    issuers = {i.name: i for i in BUILTIN_ISSUERS}
    for name, entry in _table(doc.get("issuers", {}), "issuers").items():
        where = f"issuers.{name}"
        _only(_table(entry, where), {"url", "kind", "jwks-file"}, where)
        known = issuers.get(name)
        kind = entry.get("kind", known.kind if known else None)
        if kind not in ("github", "gitlab"):
            raise RightsError(f"{where}: kind must be 'github' or 'gitlab'")
        url = entry.get("url", known.url if known else None)
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise RightsError(f"{where}: url must be the issuer's URL (its 'iss' claim)")
        jwks = entry.get("jwks-file")
        if jwks is not None and not isinstance(jwks, str):
            raise RightsError(f"{where}: jwks-file must be a path")
        issuers[name] = Issuer(name, kind, url.rstrip("/"), jwks)
    publishers = []
    for i, entry in enumerate(_tables(doc.get("publisher", []), "publisher")):
        where = f"publisher #{i + 1}"
        _only(entry, {"projects", "issuer", "repository", "workflow", "environment"}, where)
        issuer = issuers.get(str(entry.get("issuer", "github")))
        if issuer is None:
            raise RightsError(f"{where}: no issuer {entry.get('issuer')!r} (see [issuers])")
        repository, workflow = entry.get("repository"), entry.get("workflow")
        if not isinstance(repository, str) or not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)+", repository):
            raise RightsError(f"{where}: repository must be 'owner/name'")
        if not isinstance(workflow, str) or not workflow or "@" in workflow:
            raise RightsError(f"{where}: workflow must name the workflow file")
        environment = entry.get("environment")
        if environment is not None and (not isinstance(environment, str) or not environment):
            raise RightsError(f"{where}: environment must be a name")
        projects = _projects(entry.get("projects"), where)
        publishers.append(
            Publisher(issuer.kind, issuer.url, repository, workflow, environment, projects)
        )
    tp = _table(doc.get("trusted-publishing", {}), "trusted-publishing")
    _only(tp, {"audience"}, "trusted-publishing")
    audience = tp.get("audience", DEFAULT_AUDIENCE)
    if not isinstance(audience, str) or not 0 < len(audience) <= 200:
        raise RightsError("trusted-publishing: audience must be a short string")
    return Rights(
        tuple(grants),
        groups,
        tuple(publishers),
        tuple(issuers.values()),
        audience,
        restricts="allow" in doc,
    )


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RightsError(f"{where} must be a table")
    return value


def _tables(value: object, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise RightsError(f"{where} must be an array of tables ([[{where}]])")
    return value


def _only(entry: Mapping[str, Any], keys: set[str], where: str) -> None:
    extra = set(entry) - keys
    if extra:
        raise RightsError(f"{where}: unknown key {sorted(extra)[0]!r}")


def _word(value: object, what: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise RightsError(f"{what} {str(value)[:60]!r} is not a plain name")
    return value


def _words(value: object, where: str) -> list[str]:
    if not isinstance(value, list):
        raise RightsError(f"{where} must be a list of names")
    return [_word(v, where) for v in value]


def _actions(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise RightsError(f"{where}: actions must be a list of {', '.join(ACTIONS)}")
    for action in value:
        if action not in ACTIONS:
            raise RightsError(
                f"{where}: unknown action {str(action)[:40]!r} ({', '.join(ACTIONS)})"
            )
    return list(value)


def check_patterns(value: object, where: str) -> tuple[str, ...]:
    """Project names or patterns as given; raises RightsError."""
    if not isinstance(value, list) or not value:
        raise RightsError(f"{where}: projects must be a list of names or patterns")
    out = []
    for pattern in value:
        if not isinstance(pattern, str) or not _PATTERN.fullmatch(pattern):
            raise RightsError(f"{where}: {str(pattern)[:60]!r} is not a project name or pattern")
        # Names are matched normalized, so a pattern is too outside its brackets (acme_* is
        # acme-*, which it would otherwise never match).
        out.append(_normalize_pattern(pattern) if _GLOB.search(pattern) else normalize(pattern))
    return tuple(out)


def _normalize_pattern(pattern: str) -> str:
    parts = re.split(r"(\[[^\]]*\])", pattern.lower())
    return "".join(p if p.startswith("[") else re.sub(r"[-_.]+", "-", p) for p in parts)


_projects = check_patterns
_PATTERN = re.compile(r"[A-Za-z0-9._\-*?\[\]!]{1,200}")
