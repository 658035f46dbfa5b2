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

Actions: ``upload`` (a new file), ``remove`` (delete or yank a release over HTTP),
``download``, ``list``. A file without any ``[[allow]]`` table leaves htpasswd users with every
right, as without a rights file.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from .distfile import normalize

__all__ = ["ACTIONS", "BUILTIN_ISSUERS", "Issuer", "Publisher", "pattern_covers", "project_matches"]

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
