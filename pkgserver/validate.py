"""``run``'s settings from its resolved options (see pkgserver.options), checked as at start.

What would only fail later (a password file that cannot be read, a welcome template that does
not render, a folder that is not one) is refused here, as a UsageError of one line.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import stat
from collections.abc import Sequence
from urllib.parse import urlsplit

from .config import Settings, parse_actions
from .errors import UsageError
from .options import FALSE, OPTIONS

__all__ = ["check_roots", "settings_from"]

# The first path segments of the index's own routes (/pypi/ excepted: its routes are told apart
# from the prefix's): a --server-base-url path starting with one would hide them.
_RESERVED_SEGMENTS = frozenset(
    {"simple", "packages", "project", "-", "+simple", "legacy", "RPC2", "metrics", "favicon.ico"}
)


def check_roots(given: Sequence[str], *, created: list[str] | None = None) -> list[str]:
    """DIR... as given, else ~/packages; each must be a readable folder. With ``created``
    (run), a folder that does not exist is made, and added to that list."""
    roots = list(given) or [os.path.expanduser("~/packages")]
    if any(r.startswith("s3://") for r in roots):
        return _object_store(roots)
    for root in roots:
        try:
            st = os.stat(root)
        except FileNotFoundError:
            if created is None or os.path.basename(root.rstrip("/")).startswith("-"):
                # (a name like "-x" or "--hash-algo BAD" is a mistyped option, not a folder)
                raise UsageError(f"package directory {root!r} does not exist") from None
            _make_root(root)
            created.append(root)
            continue
        except PermissionError:
            raise UsageError(
                f"package directory {root!r}: permission denied (uid {os.geteuid()} must have "
                "read/execute access to every folder on its path)"
            ) from None
        except OSError as exc:
            raise UsageError(f"package directory {root!r}: {exc.strerror or exc}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise UsageError(f"package directory {root!r} is not a directory")
        if not os.access(root, os.R_OK | os.X_OK):
            raise UsageError(
                f"package directory {root!r}: permission denied (uid {os.geteuid()} must have "
                f"read/execute access to it; it is owned by {st.st_uid}:{st.st_gid}, mode "
                f"{st.st_mode & 0o7777:o})"
            )
    return roots


def _object_store(roots: list[str]) -> list[str]:
    """s3://bucket/prefix: one, alone, and the client installed (pkgserver[s3])."""
    if len(roots) != 1:
        raise UsageError("an s3:// location is served alone: give no other package directory")
    from .s3 import parse_location

    try:
        parse_location(roots[0])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        import boto3  # noqa: F401
    except ImportError:
        raise UsageError(
            "serving from an object store needs boto3: pip install 'pkgserver[s3]'"
        ) from None
    return [roots[0].rstrip("/")]


def _make_root(root: str) -> None:
    try:
        # The folder itself, not its parents: a mistyped path is reported, not built.
        os.mkdir(root, mode=0o755)
    except FileNotFoundError:
        parent = os.path.dirname(os.path.abspath(root))
        raise UsageError(
            f"package directory {root!r} does not exist, nor does its parent {parent!r}"
        ) from None
    except OSError as exc:
        raise UsageError(
            f"package directory {root!r} does not exist and cannot be created: "
            f"{exc.strerror or exc}"
        ) from None


def settings_from(ns: argparse.Namespace, *, created: list[str] | None = None) -> Settings:
    """The Settings of a resolved ``run`` namespace (one attribute per Settings field), checked
    in the order a user reads the options: directories, port, access, then the rest."""
    roots = check_roots(ns.roots, created=created)
    if not 0 <= ns.port <= 65535:
        raise UsageError(f"port {ns.port} is out of range")
    password_file, authenticate = _access(ns.password_file, ns.authenticate)
    hash_algo = _hash_algo(ns.hash_algo)
    if ns.welcome_file:
        from .app import WelcomeError, load_welcome

        try:
            load_welcome(ns.welcome_file, counts_hidden="list" in parse_actions(ns.authenticate))
        except WelcomeError as exc:
            raise UsageError(str(exc)) from None
    if ns.redirect_downloads and not roots[0].startswith("s3://"):
        raise UsageError(
            "--redirect-downloads needs an s3:// location: files in a package directory "
            "have no other address than the server's own"
        )
    health = _health_endpoint(ns.health_endpoint)
    _check_limits(ns)
    if ns.rights_file:
        from .auth import load_rights

        try:
            load_rights(ns.rights_file)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot use the rights file {ns.rights_file!r}: {exc}") from None
    values = {option.field: getattr(ns, option.field) for option in OPTIONS if not option.ignored}
    values.update(
        roots=tuple(r if r.startswith("s3://") else os.path.abspath(r) for r in roots),
        password_file=password_file,
        authenticate=authenticate,
        hash_algo=hash_algo,
        health_endpoint=health,
        server_base_url=_server_base_url(ns.server_base_url, health),
        cache_dir=_cache_dir(ns.cache_dir),
        connections_per_address=0 if ns.trust_proxy else ns.connections_per_address,
        log_stream=None if ns.log_stream == "none" else ns.log_stream,
    )
    return Settings(**values)


def _access(
    passwords: str | None, authenticate: str | frozenset[str]
) -> tuple[str | None, frozenset[str]]:
    """The password file (None for none) and the protected actions, with pypiserver's rules."""
    try:
        actions = parse_actions(authenticate)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    password_file = None if passwords in (None, ".") else passwords
    if not actions and passwords != ".":
        raise UsageError(
            "-a . (nothing protected) needs -P . as well, to say that a fully open index is meant"
        )
    if actions and passwords == ".":
        # pypiserver's rule: -P . (no password file) goes with -a . only.
        raise UsageError(
            f"-P . (no password file) needs -a . as well (here -a {','.join(sorted(actions))}): "
            "give a password file, or -P . -a . for a fully open index"
        )
    if password_file:
        from .auth import load_htpasswd

        try:
            load_htpasswd(password_file)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read password file {password_file!r}: {exc}") from None
    elif actions - {"update"}:
        raise UsageError(
            f"-a {','.join(sorted(actions))} needs a password file: add -P HTPASSWD "
            "(or -P . -a . for a fully open server)"
        )
    if not (password_file or passwords == "."):
        actions &= {"update"}
    return password_file, actions


def _hash_algo(value: str) -> str | None:
    algo = value.strip().lower()
    if algo in FALSE:
        return None
    try:
        hashlib.new(algo).hexdigest()
    except (ValueError, TypeError):
        # TypeError: shake_128/shake_256 need a length; no fixed-size digest to link.
        raise UsageError(f"unknown or unusable --hash-algo {value!r}") from None
    return algo


def _health_endpoint(value: str) -> str:
    health = value if value.startswith("/") else "/" + value
    if not re.fullmatch(r"/[A-Za-z0-9/_-]+", health):  # pypiserver's rule
        raise UsageError(
            f"invalid --health-endpoint {value!r}: letters, digits, '/', '_' and "
            "'-' only (e.g. /health)"
        )
    return health


def _check_limits(ns: argparse.Namespace) -> None:
    if ns.threads < 1 or ns.connection_limit < 1:
        raise UsageError("--threads and --connection-limit must be at least 1")
    if ns.rescan_interval < 0:
        raise UsageError("--rescan-interval cannot be negative")
    if not 0 <= ns.shutdown_timeout <= 3600:
        raise UsageError("--shutdown-timeout must be between 0 and 3600 seconds")
    if ns.connections_per_address < 0:
        raise UsageError("--connections-per-address cannot be negative")
    if not 0 < ns.header_timeout <= 3600 or not 0 < ns.channel_timeout <= 86400:
        raise UsageError("--header-timeout and --channel-timeout must be positive")


def _server_base_url(given: str | None, health: str) -> str | None:
    base_url = given
    if not base_url:
        return base_url
    parts = urlsplit(base_url)
    if base_url.startswith("/") and not parts.netloc:
        # pypiserver's form: a path only, where the index is served (besides the root).
        if not re.fullmatch(r"(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*/?", base_url):
            raise UsageError(f"--server-base-url {base_url!r} is not a usable path")
        base_url = base_url if base_url.rstrip("/") else None
    elif parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(
            f"--server-base-url {base_url!r} is neither an http(s) URL "
            "(https://pypi.example.com/pypi/) nor a path (/pypi/)"
        )
    first = urlsplit(base_url or "").path.strip("/").split("/")[0]
    if first in _RESERVED_SEGMENTS or (first and "/" + first == health):
        raise UsageError(
            f"--server-base-url {given!r}: its path cannot start with /{first}/, "
            "one of the index's own paths (/simple/, /packages/, ...); /pypi/ may"
        )
    return base_url


def _cache_dir(value: str | None) -> str | None:
    """--cache-dir: 'off' (or 0, no, ...) for none; not given: the user's cache folder."""
    if (value or "").lower() in FALSE:
        return None
    if value:
        return value
    from .cache import default_cache_dir

    return default_cache_dir()
