"""Command line: pypiserver-compatible flags, ``PKGSERVER_*`` environment variables, waitress.

``pkgserver run [options] DIR...``; ``pkgserver [options] DIR...`` (no subcommand) means ``run``,
the pypiserver 1.x form that Docker users still pass. Bad arguments end with one line on stderr
and exit status 2, never a traceback.

The options are declared in pkgserver.options, parsed by pkgserver.arguments and checked by
pkgserver.validate; this module runs the commands.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import arguments as _arguments
from .config import Settings
from .errors import UsageError
from .observe import AccessLog, JsonFormatter
from .options import BY_FIELD, ENV_PREFIX, FALSE, OPTIONS, SELECT_CONNECTIONS, env_value
from .options import roots as _given_roots
from .rights import check_patterns
from .validate import check_roots, settings_from

if TYPE_CHECKING:
    from .manage import Packages
    from .s3 import S3Storage
    from .tokens import TokenStore

__all__ = [
    "ENV_PREFIX",
    "IGNORED_OPTIONS",
    "SELECT_CONNECTIONS",
    "SUBCOMMANDS",
    "UsageError",
    "build_parser",
    "ignored_notices",
    "main",
    "parse_args",
    "parse_run",
]

log = logging.getLogger("pkgserver")

SUBCOMMANDS = _arguments.SUBCOMMANDS
build_parser = _arguments.build_parser

# pypiserver options that pkgserver accepts and ignores (with a one-line notice at start): a
# migrated command line keeps working.
IGNORED_OPTIONS = {option.name: option.ignored for option in OPTIONS if option.ignored}


def ignored_notices(ns: argparse.Namespace) -> list[str]:
    """One line for each pypiserver option given that pkgserver ignores."""
    out = []
    for option in OPTIONS:
        value = getattr(ns, option.field, None) if option.ignored else None
        if value is not None:
            out.append(f"ignoring pypiserver's {option.name} {value!r}: {option.ignored}")
    return out


def _roots(
    given: Sequence[str],
    *,
    created: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """DIR... as given, else PKGSERVER_ROOTS, else ~/packages; each must be a readable folder.
    With ``created`` (run), a folder that does not exist is made, and added to that list."""
    environ = os.environ if environ is None else environ
    return check_roots(_given_roots(given, environ), created=created)


def parse_args(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    """``pkgserver ARGV``'s namespace, its PKGSERVER_* variables read from ``environ`` (by
    default the process's environment, which is only read)."""
    return _arguments.parse_args(argv, os.environ if environ is None else environ)


def parse_run(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings | None:
    """The settings ``pkgserver ARGV`` would serve with, in the environment ``environ`` (by
    default the process's), checked as ``run`` checks them (raises UsageError); None when ARGV
    is another subcommand. Used by the container's entrypoint."""
    ns = parse_args(argv, environ)
    return settings_from(ns) if ns.command == "run" else None


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """``pkgserver ARGV`` (by default sys.argv's) in the environment ``environ`` (by default the
    process's): the exit status."""
    environ = os.environ if environ is None else environ
    try:
        ns = parse_args(sys.argv[1:] if argv is None else argv, environ)
        if ns.command == "run":
            created: list[str] = []
            settings = settings_from(ns, created=created)
            notices = [f"created the package directory {r!r}: it was missing" for r in created]
            return run(settings, notices=[*notices, *ignored_notices(ns)])
        if ns.command == "update":
            given = sorted(k[8:] for k, v in vars(ns).items() if k.startswith("ignored_") and v)
            if given:
                print(f"update: ignoring run's options: {', '.join(given)}", file=sys.stderr)
            if not ns.index_url:
                ns.index_url = env_value(BY_FIELD["fallback_url"], environ)
        if ns.command == "passwd":
            return passwd(ns.file, ns.user, delete=ns.delete)
        if ns.command == "token":
            return token_command(ns, environ)
        if ns.command == "mirror":
            from .mirror import mirror

            _setup_logging(Settings(roots=(ns.root,), access_log=False))
            return mirror(ns, environ)
        return _manage(ns, environ)
    except UsageError as exc:
        print(f"pkgserver: error: {exc}", file=sys.stderr)
        return 2


def token_command(ns: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """pkgserver token create | list | revoke."""
    from .tokens import TokenStore, parse_duration

    roots = _roots(ns.roots, environ=environ)
    store = TokenStore(_packages(roots).folders[0])
    try:
        if ns.verb == "list":
            return _list_tokens(store, ns.owner, as_json=ns.json)
        if ns.verb == "revoke":
            gone = store.revoke(ns.id.removeprefix("pkgserver-").split("-", 1)[0])
            if gone is None:
                raise UsageError(f"no token {ns.id!r}")
            what = gone.description or "no description"
            print(f"revoked token {gone.id} of {gone.owner} ({what})")
            return 0
        actions = ns.actions or ["upload"]
        try:
            patterns = check_patterns(ns.projects, "--project") if ns.projects else ()
            expires = time.time() + parse_duration(ns.expires) if ns.expires else None
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        _check_owner(ns, environ, actions, patterns)
        try:
            secret, token = store.create(
                ns.owner, actions, patterns, expires=expires, description=ns.description
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"{roots[0]}: {exc.strerror or exc}") from None
    print(secret)
    scope = ", ".join(token.projects) or "every project its owner may"
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires)) if expires else "never"
    print(
        f"token {token.id} for {token.owner}: {', '.join(token.actions)} on {scope}; "
        f"expires {until}. It is shown once: store it now (user __token__).",
        file=sys.stderr,
    )
    return 0


def _check_owner(
    ns: argparse.Namespace, environ: Mapping[str, str], actions: list[str], patterns: Sequence[str]
) -> None:
    """The owner exists (-P) and the token is no wider than the owner's rights (--rights)."""
    from .auth import load_htpasswd, load_rights

    passwords = ns.passwords or environ.get("PKGSERVER_PASSWORDS")
    if passwords and passwords != ".":
        try:
            users = load_htpasswd(passwords)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {passwords!r}: {exc}") from None
        if ns.owner not in users.users():
            raise UsageError(f"{ns.owner!r} is not a user in {passwords}")
    else:
        print("token: no -P HTPASSWD: the owner is checked when the token is used", file=sys.stderr)
    rights_file = ns.rights or environ.get("PKGSERVER_RIGHTS")
    if rights_file:
        try:
            rights = load_rights(rights_file)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot use the rights file {rights_file!r}: {exc}") from None
        wider = rights.wider_than(ns.owner, actions, patterns)
        if wider:
            raise UsageError(f"the token would be wider than its owner's rights: {wider}")


def _list_tokens(store: TokenStore, owner: str | None, *, as_json: bool) -> int:
    def when(t: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) if t else "-"

    now = time.time()
    for t in store.tokens(owner):
        if as_json:
            doc = {k: v for k, v in t.doc().items() if k != "digest"}
            print(json.dumps({**doc, "last_used": t.last_used, "expired": t.expired(now)}))
            continue
        state = "EXPIRED" if t.expired(now) else f"expires {when(t.expires)}"
        print(
            f"{t.id}  {t.owner}  {','.join(t.actions)}  {','.join(t.projects) or '*'}  "
            f"created {when(t.created)}  last used {when(t.last_used)}  {state}  "
            f"{t.description}"
        )
    return 0


def _packages(roots: list[str]) -> Packages:
    """What the management commands act on: the package directories, or the bucket of an
    ``s3://`` location, through the classes the server uses (so that it sees the change)."""
    from .manage import Packages

    if roots[0].startswith("s3://"):
        from .s3 import S3Records

        storage = _bucket(roots[0])
        return Packages(roots[0], storage, [S3Records(roots[0], client=storage.client)])
    from .records import RecordDir
    from .storage import DirectoryStorage

    return Packages(", ".join(roots), DirectoryStorage(roots), [RecordDir(r) for r in roots])


def _bucket(url: str) -> S3Storage:
    from .s3 import S3Storage

    # Its spool (objects read back, for a check) goes with this process.
    spool = tempfile.mkdtemp(prefix="pkgserver-spool-")
    atexit.register(shutil.rmtree, spool, True)
    return S3Storage(url, spool=spool)


def _manage(ns: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """The commands on the package directories or a bucket."""
    from . import manage

    if ns.command not in ("forget", "remove", "yank", "unyank", "status", "check", "update"):
        build_parser().print_help(sys.stderr)
        return 2
    version = None
    if ns.command == "remove":
        version, dirs = manage.split_version_and_roots(ns.rest)
    elif ns.command == "status":
        version, dirs = manage.split_status_and_roots(ns.rest)  # (the STATUS, here)
    else:
        dirs = ns.roots
    roots = _roots(dirs, environ=environ)
    try:
        return _act(ns, version, roots, environ)
    except OSError as exc:
        # An object store that cannot be reached, or refuses (each command reports the
        # directories' own problems): one line, as for a bad argument.
        where = getattr(exc, "where", "")
        said = f"{exc.strerror or exc}{f' at {where}' if where else ''}"
        raise UsageError(f"{roots[0]}: {said}") from None


def _act(
    ns: argparse.Namespace, version: str | None, roots: list[str], environ: Mapping[str, str]
) -> int:
    from . import manage

    bucket = roots[0].startswith("s3://")
    if ns.command == "update":
        from .update import update

        return update(ns, roots, bucket=_bucket(roots[0]) if bucket else None)
    if ns.command == "check":
        progress = {"auto": None, "always": True, "never": False}[ns.progress]
        if bucket:
            from .s3feed import check_bucket

            return check_bucket(_bucket(roots[0]), progress=progress)
        cache_dir = ns.cache_dir or env_value(BY_FIELD["cache_dir"], environ)
        if (cache_dir or "").lower() in FALSE:
            cache_dir = None
        elif not cache_dir:
            from .cache import default_cache_dir

            cache_dir = default_cache_dir()
        return manage.check(roots, cache_dir, progress=progress)
    packages = _packages(roots)
    if ns.command == "forget":
        return forget(ns.name, packages)
    if ns.command == "remove":
        return manage.remove(ns.project, version, packages, dry_run=ns.dry_run)
    if ns.command == "yank":
        return manage.yank(ns.project, ns.version, packages, ns.reason)
    if ns.command == "status":
        return manage.status(ns.project, version, packages, ns.reason)
    return manage.unyank(ns.project, ns.version, packages)


def _setup_logging(settings: Settings) -> AccessLog | None:
    handlers: list[logging.Handler] = []
    if settings.log_stream:
        handlers.append(
            logging.StreamHandler(sys.stdout if settings.log_stream == "stdout" else sys.stderr)
        )
    if settings.log_file:
        handlers.append(logging.FileHandler(settings.log_file))
    if not handlers:
        handlers.append(logging.NullHandler())
    level = logging.DEBUG if settings.verbosity >= 1 else logging.INFO
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    json_lines = settings.log_format == "json"
    for h in handlers:
        h.setFormatter(JsonFormatter() if json_lines else logging.Formatter(settings.log_frmt))
        root.addHandler(h)
    root.setLevel(level)
    # Access lines go to the same places, as they are: an Apache line or a JSON object, without
    # the --log-frmt prefix (log tools parse them as such); see observe.AccessLog.
    streams: list[Any] = []
    if settings.access_log:
        if settings.log_stream:
            streams.append(sys.stdout if settings.log_stream == "stdout" else sys.stderr)
        if settings.log_file:
            streams.append(open(settings.log_file, "a", encoding="utf-8"))
    access = AccessLog(streams, settings.log_format) if streams else None
    if access is not None:
        atexit.register(access.close)  # writes what is queued before the process ends
    # waitress's own INFO lines ("Serving on") duplicate ours, and under load it warns about
    # its task queue on every request that waits for a thread (tens of thousands of lines in a
    # benchmark): useful when tuning --threads, so shown with -vv only.
    logging.getLogger("waitress").setLevel(
        logging.WARNING if settings.verbosity < 2 else logging.DEBUG
    )
    logging.getLogger("waitress.queue").setLevel(
        logging.ERROR if settings.verbosity < 2 else logging.DEBUG
    )
    return access


def run(settings: Settings, notices: Sequence[str] = ()) -> int:
    """`pkgserver run`: logging, the warnings an operator must see, then the service."""
    from .server import raise_open_files_limit
    from .service import Service

    access = _setup_logging(settings)
    for notice in notices:
        log.info("%s", notice)
    _warn_about_access(settings)
    _warn_about_publishers(settings)
    wanted_files = settings.connection_limit + settings.threads + 256
    if raise_open_files_limit(wanted_files) < wanted_files:
        log.warning(
            "the open-files limit is below what --connection-limit %d needs (%d); "
            "raise it (ulimit -n) or lower --connection-limit",
            settings.connection_limit,
            wanted_files,
        )
    return Service(settings, access).run()


def _warn_about_access(settings: Settings) -> None:
    if settings.password_file is None and not settings.authenticate:
        log.warning(
            "running fully open (-P . -a .): anyone who can reach it can read and change it"
        )
    elif settings.password_file is not None and "update" not in settings.authenticate:
        # pypiserver's meaning of -a, kept for migrating users: the actions listed are the
        # protected ones, so `-P htpasswd -a download,list` leaves uploads open.
        log.warning(
            "UPLOADS AND REMOVALS NEED NO PASSWORD: -a %s protects only %s, not 'update'. "
            "Anyone who can reach this server can publish, replace or delete packages. Add "
            "'update' (-a update,%s) unless an open index is meant.",
            ",".join(sorted(settings.authenticate)) or ".",
            ", ".join(sorted(settings.authenticate)) or "nothing",
            ",".join(sorted(settings.authenticate)),
        )


def _warn_about_publishers(settings: Settings) -> None:
    """Trusted publishers named without what checks them: say so at start, not at the first
    CI run's upload."""
    if not settings.rights_file:
        return
    from . import attest, oidc
    from .auth import load_rights

    try:
        rights = load_rights(settings.rights_file)
    except (OSError, ValueError):
        return  # checked by validate; a file changed since is reported when reloaded
    if not rights.publishers:
        return
    if not oidc.HAVE_JWT:
        log.warning(
            "%s names trusted publishers, but trusted publishing needs PyJWT: "
            "pip install 'pkgserver[oidc]' (/_/oidc/ answers 404 until then)",
            settings.rights_file,
        )
    if not attest.available():
        log.warning(
            "%s names trusted publishers, but their attestations cannot be verified without "
            "pip install 'pkgserver[attestations]': uploads that carry attestations for their "
            "projects are refused (400) until then",
            settings.rights_file,
        )


def forget(name: str, packages: Packages) -> int:
    """Lift the claim on a project that is no longer hosted (see pkgserver.hosted), in the
    records of ``packages``."""
    from .hosted import HostedNames
    from .manage import project_name

    project = project_name(name)
    left = sorted(f.location for f in packages.storage.files_of(project))
    if left:
        raise UsageError(f"{project} still has files ({left[0]}): remove them first")
    hosted = HostedNames([], folders=packages.folders)
    try:
        found = hosted.forget(project)
    except OSError as exc:
        raise UsageError(f"cannot update {hosted.paths}: {exc.strerror or exc}") from None
    if not found:
        raise UsageError(f"{project} is not among the projects hosted in {packages.where}")
    print(f"forgot {project}: it will be redirected to the fallback index again", file=sys.stderr)
    return 0


def _rewrite_in_place(path: str, content: bytes) -> None:
    """Rewrite an existing htpasswd file in the same inode, as Apache's htpasswd does.

    Not a rename: a file bind-mounted into a container (``-v ~/pypi/.htpasswd:/data/.htpasswd``)
    stays bound to the inode it had, so a replaced file would never reach the server inside,
    and renaming onto the mount point from inside the container fails. Mode and owner stay.
    One write of a few KB: a server that reads at that very moment sees a file it cannot parse
    or misses the change, and re-reads it at the next change of size or mtime (within a second).
    """
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
        os.ftruncate(fd, len(content))
        os.fsync(fd)
    finally:
        os.close(fd)


def passwd(path: str, user: str, *, delete: bool = False) -> int:
    """Add, change or delete a user in an htpasswd file."""
    import getpass

    from passlib.apache import HtpasswdFile

    from .fsutil import write_atomically

    try:
        user.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"invalid user name {user!r} (not UTF-8)") from None
    # htpasswd lines are "user:hash"; "#" starts a comment, and blanks end the name.
    if (
        not user
        or ":" in user
        or user.startswith("#")
        or any(c.isspace() or ord(c) < 32 for c in user)
    ):
        raise UsageError(f"invalid user name {user!r}")
    # Edit what a symlink points at, rather than replacing the link with a file.
    path = os.path.realpath(path)
    exists = os.path.exists(path)
    try:
        ht = HtpasswdFile(path, new=not exists, default_scheme="bcrypt")
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path!r}: {exc}") from None
    if delete:
        if not ht.delete(user):
            raise UsageError(f"no user {user!r} in {path}")
    else:
        if sys.stdin.isatty():
            password = getpass.getpass(f"Password for {user}: ")
            if getpass.getpass("Again: ") != password:
                raise UsageError("the passwords do not match")
        else:
            password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UsageError("empty password")
        try:
            password.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError("the password is not valid UTF-8") from None
        if len(password.encode()) > 72:
            raise UsageError("password longer than 72 bytes (bcrypt's limit)")
        ht.set_password(user, password)
    content = ht.to_string()
    try:
        if exists:
            _rewrite_in_place(path, content)
        else:
            # Readable as the umask allows (0644 usually), as Apache's htpasswd makes it, so
            # that a server running as another user (the container's uid 9898, a systemd
            # DynamicUser) can read it; it holds hashes only. Never replaces a file created
            # meanwhile.
            umask = os.umask(0o022)
            os.umask(umask)
            write_atomically(path, content, 0o666 & ~umask, replace=False)
    except OSError as exc:
        raise UsageError(f"cannot write {path!r}: {exc.strerror or exc}") from None
    print(f"{'deleted' if delete else 'set'} {user} in {path}", file=sys.stderr)
    return 0
