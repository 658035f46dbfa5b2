"""Command line: pypiserver-compatible flags, ``PKGSERVER_*`` environment variables, waitress.

``pkgserver run [options] DIR...``; ``pkgserver [options] DIR...`` (no subcommand) means ``run``,
the pypiserver 1.x form that Docker users still pass. Bad arguments end with one line on stderr
and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import logging
import os
import re
import signal
import stat
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .cache import default_cache_dir
from .config import DEFAULT_FALLBACK_URL, Settings, parse_actions
from .errors import UsageError
from .observe import LOG_FORMATS, AccessLog, JsonFormatter

__all__ = ["UsageError", "build_parser", "main"]

log = logging.getLogger("pkgserver")

# The most connections served with select(), whose descriptors must stay below 1,024 (the
# rest: listening sockets, the trigger, logs, the index cache, inotify, files being sent).
SELECT_CONNECTIONS = 900

SUBCOMMANDS = ("run", "update", "passwd", "forget", "remove", "yank", "unyank", "check")
ENV_PREFIX = "PKGSERVER_"
_FALSE = ("0", "no", "off", "false", "none")


def _env(name: str) -> str | None:
    value = os.environ.get(ENV_PREFIX + name.upper().replace("-", "_"))
    return value if value not in (None, "") else None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pkgserver",
        description="A private Python package index. Every option can also be set with an "
        "environment variable PKGSERVER_<OPTION> (e.g. PKGSERVER_PORT=8080).",
    )
    parser.add_argument("--version", action="version", version=f"pkgserver {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    run = sub.add_parser(
        "run", help="serve package directories", description="Serve DIR... as a package index."
    )
    _add_run_options(run)
    _defaults_from_environment(run)
    from .update import add_arguments as _update_arguments

    up = sub.add_parser(
        "update",
        help="list (or download) newer releases of the hosted projects on an upstream index",
        description="pypiserver's update (-U): for every project in DIR..., compare the newest "
        "version here with the upstream index's (PyPI by default) and print the 'pip download' "
        "command that fetches a newer release into the directory; -x runs them.",
    )
    _update_arguments(up)
    _accept_run_options(up)
    pw = sub.add_parser(
        "passwd",
        help="add or change a user in an htpasswd file (bcrypt)",
        description="Add or change USER in the htpasswd FILE (created if missing), with a bcrypt "
        "hash; --delete removes USER. The password is read from standard input when it is not a "
        "terminal (echo pw | pkgserver passwd FILE USER), else asked for twice. A running server "
        "sees the change within a second.",
    )
    pw.add_argument("file", metavar="FILE")
    pw.add_argument("user", metavar="USER")
    pw.add_argument("--delete", action="store_true", help="remove USER")
    fg = sub.add_parser(
        "forget",
        help="let a project no longer hosted be redirected to the fallback index again",
        description="A project that was ever hosted in DIR... is never redirected to the fallback "
        "index, even once all its files are gone (so that nobody can take its name on the public "
        "index and have it installed from here). 'forget' lifts that for NAME, whose files must "
        "be gone. A running server sees it within a second. DIR... defaults as for 'run'.",
    )
    fg.add_argument("name", metavar="NAME")
    fg.add_argument("roots", metavar="DIR", nargs="*")
    dirs_help = "package directories, as for 'run' (default: $PKGSERVER_ROOTS or ~/packages)"
    rm = sub.add_parser(
        "remove",
        help="delete a project's files, or one version's",
        usage="pkgserver remove [-h] [-n] PROJECT [VERSION] [DIR ...]",
        description="Delete the files of PROJECT (of VERSION only, if given) from DIR..., with "
        "their signatures. A running server stops listing them within a second. VERSION is told "
        "from a DIR by not being a directory; write ./1.0 for a directory named like a version. "
        "A project with no files left stays claimed (see 'forget').",
    )
    rm.add_argument("project", metavar="PROJECT")
    rm.add_argument("rest", metavar="[VERSION] DIR", nargs="*", help=dirs_help)
    rm.add_argument("-n", "--dry-run", action="store_true", help="only list what would go")
    yk = sub.add_parser(
        "yank",
        help="mark a release yanked (PEP 592)",
        description="Mark every file of PROJECT VERSION yanked: installers skip it unless it is "
        "pinned exactly (==). The files stay; the simple API, the JSON API and the web page show "
        "the yank and its reason. A running server shows it within a second.",
    )
    yk.add_argument("project", metavar="PROJECT")
    yk.add_argument("version", metavar="VERSION")
    yk.add_argument("roots", metavar="DIR", nargs="*", help=dirs_help)
    yk.add_argument("--reason", default="", metavar="TEXT", help="why (shown to installers)")
    uy = sub.add_parser(
        "unyank",
        help="undo a yank",
        description="Make PROJECT VERSION installable again. A running server shows it within "
        "a second.",
    )
    uy.add_argument("project", metavar="PROJECT")
    uy.add_argument("version", metavar="VERSION")
    uy.add_argument("roots", metavar="DIR", nargs="*", help=dirs_help)
    ck = sub.add_parser(
        "check",
        help="read every file and report what the index cannot serve as it should",
        description="Read and hash every file in DIR... and report files that cannot be "
        "attributed to a project and version (and why), duplicates once names are normalized, "
        "and files whose hash differs from the index cache's for the same size and mtime. "
        "Exit status 1 when anything is reported. A progress bar is drawn on a terminal.",
    )
    ck.add_argument("roots", metavar="DIR", nargs="*", help=dirs_help)
    ck.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="the index cache to compare with, as for 'run' ('off' for none)",
    )
    ck.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bar on standard error (default: when it is a terminal)",
    )
    return parser


def _defaults_from_environment(parser: argparse.ArgumentParser) -> None:
    """``PKGSERVER_<LONG_OPTION>`` sets an option's default; the command line still wins.

    String defaults go through the option's ``type`` like command-line values, so a bad
    ``PKGSERVER_PORT`` is reported like a bad ``--port``.
    """
    for action in parser._actions:
        for option in action.option_strings:
            if not option.startswith("--"):
                continue
            value = _env(option[2:])
            if value is None:
                continue
            default: object = value
            if isinstance(action, (argparse._StoreTrueAction, argparse._CountAction)):
                enabled = value.lower() not in _FALSE
                default = (
                    (int(value) if value.isdigit() else int(enabled))
                    if isinstance(action, argparse._CountAction)
                    else enabled
                )
            parser.set_defaults(**{action.dest: default})
            break


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "roots",
        nargs="*",
        metavar="DIR",
        help="package directories (default: $PKGSERVER_ROOTS, colon-separated, or ~/packages); "
        "uploads go to the first",
    )
    p.add_argument(
        "-p",
        "--port",
        type=int,
        default=8080,
        help="port (default 8080; 0 picks a free one)",
    )
    p.add_argument(
        "-i",
        "-H",
        "--interface",
        "--host",
        dest="host",
        default="0.0.0.0",
        help="address to listen on (default 0.0.0.0)",
    )
    p.add_argument(
        "-P",
        "--passwords",
        dest="passwords",
        default=None,
        metavar="HTPASSWD",
        help="Apache htpasswd file for authentication; '.' for none",
    )
    p.add_argument(
        "-a",
        "--authenticate",
        default="update",
        help="comma-separated actions that need a password: update, download, list, metrics "
        "(/metrics alone; it also needs what list needs); '.' for none (needs -P .). "
        "Default: update",
    )
    p.add_argument(
        "--max-upload-size",
        type=_size,
        default="1G",
        metavar="SIZE",
        help="largest file an upload may carry, e.g. 500M or 2G (default 1G); larger gets 413",
    )
    p.add_argument(
        "--max-file-size",
        type=_size,
        default=None,
        metavar="SIZE",
        help="largest file the index lists (default: --max-upload-size); larger files in the "
        "directory are skipped, with a log line",
    )
    p.add_argument(
        "-o",
        "--overwrite",
        action="store_true",
        default=False,
        help="allow uploads to replace existing files",
    )
    p.add_argument(
        "--fallback-url",
        default=DEFAULT_FALLBACK_URL,
        help=f"where projects not hosted here are redirected (default {DEFAULT_FALLBACK_URL})",
    )
    p.add_argument(
        "--disable-fallback",
        action="store_true",
        default=False,
        help="answer 404 for projects not hosted here",
    )
    p.add_argument(
        "--hash-algo",
        default="sha256",
        help="hash in the #fragment of links (default sha256; 'off' for none)",
    )
    p.add_argument(
        "--welcome",
        default=None,
        metavar="FILE",
        help="HTML template for the welcome page ({{URL}}, {{VERSION}}, {{NUMPKGS}})",
    )
    p.add_argument(
        "--health-endpoint",
        default="/health",
        help="path of the health check (default /health)",
    )
    p.add_argument(
        "--server-base-url",
        default=None,
        metavar="URL",
        help="external URL of the server, for redirects and absolute links behind a proxy",
    )
    p.add_argument(
        "--trust-proxy",
        action="store_true",
        default=False,
        help="honour X-Forwarded-Host, -Proto, -Prefix and -For: only behind a reverse proxy "
        "that sets them (never by default: any client could)",
    )
    p.add_argument(
        "--cache-control",
        type=_seconds,
        default=None,
        metavar="AGE",
        help="add 'Cache-Control: public, max-age=AGE' to downloads (as pypiserver)",
    )
    p.add_argument(
        "--show-uploaders",
        action="store_true",
        default=False,
        help="show who uploaded each file on the project pages to everyone who may list "
        "(without it, only to requests that list with credentials)",
    )
    p.add_argument(
        "--rescan-interval",
        type=float,
        default=0,
        metavar="SECONDS",
        help="also rescan the directories this often (for filesystems inotify cannot watch)",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="where the index cache lives (hashes and metadata, so restarts need not re-read "
        "every file; safe to delete). Default $XDG_CACHE_HOME/pkgserver or ~/.cache/pkgserver; "
        "'off' for none",
    )
    p.add_argument(
        "--no-watch",
        action="store_true",
        default=False,
        help="do not use inotify (then --rescan-interval defaults to 5)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=16,
        help="waitress worker threads (default 16)",
    )
    p.add_argument(
        "--connection-limit",
        type=int,
        default=SELECT_CONNECTIONS,
        help=f"most connections open at once (default {SELECT_CONNECTIONS})",
    )
    p.add_argument(
        "--connections-per-address",
        type=int,
        default=100,
        metavar="N",
        help="once half the connection limit is in use, the most one client address may hold; "
        "0 for no cap (default 100; off with --trust-proxy, where every client is the proxy)",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="time a client has to send a request's headers once it began (default 15)",
    )
    p.add_argument(
        "--channel-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="close connections idle this long (default 60)",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=5.0,
        help="on SIGTERM or Ctrl-C, seconds to let requests in progress finish (an upload its "
        "publishing) before the process ends (default 5; docker stop waits 10)",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more logging (repeatable)",
    )
    p.add_argument("--log-file", default=None, help="also log to this file")
    p.add_argument(
        "--log-stream",
        default="stderr",
        type=str.lower,
        choices=("stdout", "stderr", "none"),
        help="log to stdout, stderr (default) or nowhere",
    )
    p.add_argument(
        "--log-frmt",
        default="%(asctime)s %(levelname)s %(name)s: %(message)s",
        help="format of the server's own log lines (Python logging)",
    )
    p.add_argument(
        "--log-format",
        default="combined",
        choices=LOG_FORMATS,
        help="access log format: combined (Apache's, the default), common, or json (then "
        "every log line is a JSON object)",
    )
    p.add_argument(
        "--no-access-log",
        action="store_true",
        default=False,
        help="do not log every request",
    )
    _add_ignored_options(p, IGNORED_OPTIONS)
    p.add_argument("--version", action="version", version=f"pkgserver {__version__}")


def _add_ignored_options(p: argparse.ArgumentParser, options: dict[str, str]) -> None:
    """pypiserver's options that have no meaning here: accepted (with pypiserver's own choices
    where it has some), and a notice at start says so."""
    for option in options:
        choices = _IGNORED_CHOICES.get(option)
        if choices:
            p.add_argument(
                option, default=None, type=str.lower, choices=choices, help=argparse.SUPPRESS
            )
        else:
            p.add_argument(option, default=None, metavar="VALUE", help=argparse.SUPPRESS)


_IGNORED_CHOICES = {
    "--server": ("auto", "cherrypy", "gevent", "gunicorn", "paste", "twisted", "wsgiref"),
    "--backend": ("auto", "simple-dir", "cached-dir"),
}


# The first path segments of the index's own routes (/pypi/ excepted: its routes are told apart
# from the prefix's): a --server-base-url path starting with one would hide them.
_RESERVED_SEGMENTS = frozenset(
    {"simple", "packages", "project", "-", "+simple", "legacy", "RPC2", "metrics", "favicon.ico"}
)

# pypiserver options that pkgserver accepts and ignores (with a one-line notice at start): a
# migrated command line keeps working.
IGNORED_OPTIONS = {
    "--server": "pkgserver always runs on waitress",
    "--backend": "pkgserver keeps its own in-memory catalog, watched with inotify",
    "--log-req-frmt": "the access log has its own formats (--log-format)",
    "--log-res-frmt": "the access log has its own formats (--log-format)",
    "--log-err-frmt": "errors are logged with --log-frmt",
}


def ignored_notices(ns: argparse.Namespace) -> list[str]:
    """One line for each pypiserver option given that pkgserver ignores."""
    out = []
    for option, why in IGNORED_OPTIONS.items():
        value = getattr(ns, option[2:].replace("-", "_"), None)
        if value is not None:
            out.append(f"ignoring pypiserver's {option} {value!r}: {why}")
    return out


def _seconds(value: str) -> int:
    try:
        seconds = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {value!r}") from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {value!r}")
    return seconds


def _size(value: str) -> int:
    text = value.strip().upper().removesuffix("B")
    factor = 1
    for suffix, mult in (("K", 1024), ("M", 1024**2), ("G", 1024**3), ("T", 1024**4)):
        if text.endswith(suffix):
            text, factor = text[:-1], mult
            break
    try:
        size = int(float(text) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid size {value!r} (e.g. 500M, 2G)") from None
    if size <= 0:
        raise argparse.ArgumentTypeError(f"invalid size {value!r}")
    return size


def _roots(given: Sequence[str], *, created: list[str] | None = None) -> list[str]:
    """DIR... as given, else PKGSERVER_ROOTS, else ~/packages; each must be a readable folder.
    With ``created`` (run), a folder that does not exist is made, and added to that list."""
    roots = list(given)
    if not roots and _env("roots"):
        roots = [r for r in (_env("roots") or "").split(os.pathsep) if r]
    if not roots:
        roots = [os.path.expanduser("~/packages")]
    for root in roots:
        try:
            st = os.stat(root)
        except FileNotFoundError:
            if created is None or os.path.basename(root.rstrip("/")).startswith("-"):
                # (a name like "-x" or "--hash-algo BAD" is a mistyped option, not a folder)
                raise UsageError(f"package directory {root!r} does not exist") from None
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


def _settings(ns: argparse.Namespace, *, created: list[str] | None = None) -> Settings:
    roots = _roots(ns.roots, created=created)
    if not 0 <= ns.port <= 65535:
        raise UsageError(f"port {ns.port} is out of range")
    try:
        actions = parse_actions(ns.authenticate)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    password_file = None if ns.passwords in (None, ".") else ns.passwords
    if not actions and ns.passwords != ".":
        raise UsageError(
            "-a . (nothing protected) needs -P . as well, to say that a fully open index is meant"
        )
    if actions and ns.passwords == ".":
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
    hash_algo: str | None = ns.hash_algo.strip().lower()
    if hash_algo in _FALSE:
        hash_algo = None
    else:
        try:
            hashlib.new(hash_algo).hexdigest()  # type: ignore[arg-type]
        except (ValueError, TypeError):
            # TypeError: shake_128/shake_256 need a length; no fixed-size digest to link.
            raise UsageError(f"unknown or unusable --hash-algo {ns.hash_algo!r}") from None
    if ns.welcome:
        from .app import WelcomeError, load_welcome

        try:
            load_welcome(ns.welcome, counts_hidden="list" in parse_actions(ns.authenticate))
        except WelcomeError as exc:
            raise UsageError(str(exc)) from None
    health = ns.health_endpoint if ns.health_endpoint.startswith("/") else "/" + ns.health_endpoint
    if not re.fullmatch(r"/[A-Za-z0-9/_-]+", health):  # pypiserver's rule
        raise UsageError(
            f"invalid --health-endpoint {ns.health_endpoint!r}: letters, digits, '/', '_' and "
            "'-' only (e.g. /health)"
        )
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
    base_url = ns.server_base_url
    if base_url:
        from urllib.parse import urlsplit

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
                f"--server-base-url {ns.server_base_url!r}: its path cannot start with /{first}/, "
                "one of the index's own paths (/simple/, /packages/, ...); /pypi/ may"
            )
    return Settings(
        roots=tuple(os.path.abspath(r) for r in roots),
        host=ns.host,
        port=ns.port,
        password_file=password_file,
        authenticate=actions if (password_file or ns.passwords == ".") else actions & {"update"},
        overwrite=ns.overwrite,
        max_upload_size=ns.max_upload_size,
        fallback_url=ns.fallback_url,
        disable_fallback=ns.disable_fallback,
        hash_algo=hash_algo,
        welcome_file=ns.welcome,
        health_endpoint=health,
        server_base_url=base_url,
        trust_proxy=ns.trust_proxy,
        cache_control=ns.cache_control,
        show_uploaders=ns.show_uploaders,
        max_file_size=ns.max_file_size,
        rescan_interval=ns.rescan_interval,
        cache_dir=None
        if (ns.cache_dir or "").lower() in _FALSE
        else ns.cache_dir or default_cache_dir(),
        watch=not ns.no_watch,
        threads=ns.threads,
        connection_limit=ns.connection_limit,
        connections_per_address=0 if ns.trust_proxy else ns.connections_per_address,
        header_timeout=ns.header_timeout,
        channel_timeout=ns.channel_timeout,
        shutdown_timeout=ns.shutdown_timeout,
        verbosity=ns.verbose,
        log_file=ns.log_file,
        log_stream=None if ns.log_stream == "none" else ns.log_stream,
        log_frmt=ns.log_frmt,
        log_format=ns.log_format,
        access_log=not ns.no_access_log,
    )


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


# Options of the management commands that take a value, for _options_first.
_VALUED = ("--reason", "--cache-dir", "--progress")


def _options_first(args: list[str]) -> list[str]:
    """Options moved before the positionals, so that ``yank P V --reason X DIR`` works: argparse
    ends a run of positionals at the first option and would refuse the DIR after it."""
    options: list[str] = []
    positionals: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            positionals.extend(args[i + 1 :])
            break
        if arg.startswith("-") and arg != "-":
            # A valued option (or its unambiguous abbreviation) keeps its value attached, so
            # that a value starting with "-" (--reason -x) stays a value.
            named = [o for o in _VALUED if o.startswith(arg)] if arg.startswith("--") else []
            if len(named) == 1 and "=" not in arg and i + 1 < len(args):
                options.append(f"{named[0]}={args[i + 1]}")
                i += 1
            else:
                options.append(arg)
        else:
            positionals.append(arg)
        i += 1
    return [*options, "--", *positionals] if positionals else options


def _normalize_argv(argv: list[str]) -> list[str]:
    """The command line as the parser takes it: no subcommand means ``run`` (pypiserver 1.x
    form), and options before the subcommand (pypiserver's ``-v run``, ``--log-file F run``)
    go after it; pypiserver 1.x's ``-U`` means ``update``."""
    if not argv:
        return ["run"]
    if argv[0] in ("remove", "yank", "unyank", "check"):
        return [argv[0], *_options_first(argv[1:])]
    if argv[0] in SUBCOMMANDS or argv[0] in ("-h", "--help", "--version"):
        return argv
    at = _subcommand_at(argv)
    if at is not None:
        return _normalize_argv([argv[at], *argv[:at], *argv[at + 1 :]])
    options = argv[: argv.index("--")] if "--" in argv else argv
    for flag in ("-U", "--update"):
        if flag in options:
            i = argv.index(flag)
            return ["update", *argv[:i], *argv[i + 1 :]]
    return ["run", *argv]


def _subcommand_at(argv: list[str]) -> int | None:
    """Where a subcommand follows leading options (``-v run``), if it does."""
    valued = _valued_options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in SUBCOMMANDS:
            return i
        if arg == "--" or not arg.startswith("-") or arg == "-":
            return None  # a DIR first: the pypiserver 1.x form, without a subcommand
        if arg.startswith("--"):
            if "=" not in arg:
                named = [o for o in valued if o == arg or o.startswith(arg)]
                if arg in valued or len(named) == 1:
                    i += 1  # its value
        else:
            # Short options, maybe clustered (-vp 8080, -vp8080): a valued one takes the rest
            # of the cluster as its value, or the next argument when it ends the cluster.
            for at in range(1, len(arg)):
                if "-" + arg[at] in valued:
                    if at == len(arg) - 1:
                        i += 1
                    break
        i += 1
    return None


def _accept_run_options(up: argparse.ArgumentParser) -> None:
    """pypiserver 1.x took -U with a run command line (pypi-server -p 8080 -U packages): the
    update command accepts run's options too, and ignores them (update says which)."""
    taken = {o for a in up._actions for o in a.option_strings}
    run = _Parser(prog="pkgserver run")
    _add_run_options(run)
    for action in run._actions:
        options = [o for o in action.option_strings if o not in taken]
        if not options or action.option_strings != options:
            continue  # positional, or one update has a meaning for
        up.add_argument(
            *options,
            dest="ignored_" + action.dest,
            action="store_true" if action.nargs == 0 else "store",
            default=None,
            help=argparse.SUPPRESS,
        )


def _valued_options() -> set[str]:
    """The option strings of ``run`` that take a value."""
    run = _Parser(prog="pkgserver run")
    _add_run_options(run)
    return {
        option
        for action in run._actions
        if action.nargs != 0 and action.option_strings
        for option in action.option_strings
    }


def parse_run(argv: Sequence[str]) -> Settings | None:
    """The settings ``pkgserver ARGV`` would serve with, checked as ``run`` checks them (raises
    UsageError); None when ARGV is another subcommand. Used by the container's entrypoint."""
    ns = build_parser().parse_args(_normalize_argv(list(argv)))
    return _settings(ns) if ns.command == "run" else None


def main(argv: Sequence[str] | None = None) -> int:
    args = _normalize_argv(list(sys.argv[1:] if argv is None else argv))
    try:
        ns = build_parser().parse_args(args)
        if ns.command == "run":
            created: list[str] = []
            settings = _settings(ns, created=created)
            notices = [f"created the package directory {r!r}: it was missing" for r in created]
            return run(settings, notices=[*notices, *ignored_notices(ns)])
        if ns.command == "update":
            from .update import update

            given = sorted(k[8:] for k, v in vars(ns).items() if k.startswith("ignored_") and v)
            if given:
                print(f"update: ignoring run's options: {', '.join(given)}", file=sys.stderr)
            return update(ns, _roots(ns.roots))
        if ns.command == "forget":
            return forget(ns.name, _roots(ns.roots))
        if ns.command == "passwd":
            return passwd(ns.file, ns.user, delete=ns.delete)
        return _manage(ns)
    except UsageError as exc:
        print(f"pkgserver: error: {exc}", file=sys.stderr)
        return 2


def _manage(ns: argparse.Namespace) -> int:
    from . import manage

    if ns.command == "remove":
        version, dirs = manage.split_version_and_roots(ns.rest)
        return manage.remove(ns.project, version, _roots(dirs), dry_run=ns.dry_run)
    if ns.command == "yank":
        return manage.yank(ns.project, ns.version, _roots(ns.roots), ns.reason)
    if ns.command == "unyank":
        return manage.unyank(ns.project, ns.version, _roots(ns.roots))
    if ns.command == "check":
        cache_dir = ns.cache_dir or _env("cache_dir")
        if (cache_dir or "").lower() in _FALSE:
            cache_dir = None
        elif not cache_dir:
            cache_dir = default_cache_dir()
        progress = {"auto": None, "always": True, "never": False}[ns.progress]
        return manage.check(_roots(ns.roots), cache_dir, progress=progress)
    build_parser().print_help(sys.stderr)
    return 2


def run(settings: Settings, notices: Sequence[str] = ()) -> int:
    from .app import create_app
    from .auth import Authenticator
    from .cache import DescriptionCache
    from .catalog import Catalog
    from .hosted import HostedNames
    from .indexer import Indexer, ScanInterrupted
    from .observe import Observer
    from .publish import FileOps, sweep_temp_files
    from .records import UploadLog, Yanks
    from .scan import MetadataStore
    from .server import make_server, raise_open_files_limit, serve, stop

    access = _setup_logging(settings)
    for notice in notices:
        log.info("%s", notice)
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
    wanted_files = settings.connection_limit + settings.threads + 256
    if raise_open_files_limit(wanted_files) < wanted_files:
        log.warning(
            "the open-files limit is below what --connection-limit %d needs (%d); "
            "raise it (ulimit -n) or lower --connection-limit",
            settings.connection_limit,
            wanted_files,
        )
    sweep_temp_files(settings.roots)
    publisher = FileOps()
    hosted = HostedNames(settings.roots)
    catalog = Catalog(on_new_projects=hosted.add)
    yanks = Yanks(settings.roots)
    catalog.set_yanks(yanks.poll() or {})
    upload_log = UploadLog(settings.roots)

    def _reload_yanks() -> None:
        found = yanks.poll()
        if found is not None:
            catalog.set_yanks(found)

    extra = [settings.hash_algo] if settings.hash_algo and settings.hash_algo != "sha256" else []
    cache = (
        DescriptionCache.open(settings.cache_dir, settings.roots) if settings.cache_dir else None
    )
    indexer = Indexer(
        settings.roots,
        catalog,
        cache=cache,
        rescan_interval=settings.rescan_interval,
        watch=settings.watch,
        extra_algos=extra,
        on_tick=_reload_yanks,
        on_claim=hosted.add,
        max_file_size=settings.file_size_limit,
    )
    observer = Observer(
        catalog,
        access=access,
        health=settings.health_endpoint,
    )
    indexer.on_scan = observer.scan_done
    indexer.on_hash = observer.hash_done
    stopping = False
    server = None

    def _terminate(signum: int, _frame: Any) -> None:
        # SIGTERM (docker stop, systemd) ends the server like Ctrl-C, from the first scan on (a
        # container's main process ignores SIGTERM without a handler); once shutdown has begun,
        # further signals are ignored so that the clean-up below runs to its end.
        nonlocal stopping
        if stopping:
            return
        stopping = True
        if server is None:
            indexer.interrupt()  # the scan stops at its next file, where it is safe to
        else:
            raise KeyboardInterrupt  # ends the socket loop

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    try:
        indexer.start()
        if stopping:
            raise ScanInterrupted("stopped after the first scan")
        auth = Authenticator(settings.password_file, settings.authenticate, settings.threads)
        app = create_app(
            settings,
            catalog,
            auth=auth,
            metadata=MetadataStore(),
            on_stale=indexer.recheck,
            on_published=indexer.remember,
            hosted=hosted,
            upload_log=upload_log,
            observer=observer,
            ready=indexer.ready,
            publisher=publisher,
        )
        try:
            server = make_server(
                app,
                host=settings.host,
                port=settings.port,
                threads=settings.threads,
                connection_limit=settings.connection_limit,
                connections_per_address=settings.connections_per_address,
                header_timeout=settings.header_timeout,
                channel_timeout=settings.channel_timeout,
                # select() stops at 1,024 descriptors, so a larger connection limit needs
                # poll(); below it select() stays: waitress's poll loop served small files at
                # a fifth of the rate here (measured with wrk, 50 connections).
                asyncore_use_poll=settings.connection_limit > SELECT_CONNECTIONS,
                # Room for the form fields around the largest file; waitress answers 413 beyond
                # it before the body is stored in full.
                max_request_body_size=settings.max_upload_size + 64 * 1024 * 1024,
                ident="pkgserver",
                # X-Forwarded-* and Forwarded are dropped by the app itself (see app._App),
                # more cheaply than waitress's middleware, which walks the environ per request.
                clear_untrusted_proxy_headers=False,
            )
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
            ) from None
        if stopping:  # a signal came between the scan and this point
            raise ScanInterrupted("stopped before serving")
        log.info(
            "pkgserver %s serving %s on %s",
            __version__,
            ", ".join(settings.roots),
            _listening(server, settings.host),
        )
        serve(server)
    except (KeyboardInterrupt, ScanInterrupted):
        pass  # a signal during the start, or outside the socket loop
    finally:
        stopping = True
        if server is not None:
            log.info("shutting down")
            # Requests in progress may finish (an upload its publishing, and its answer) within
            # the grace time; what is still running after it dies with the process.
            if not stop(server, settings.shutdown_timeout):
                log.warning(
                    "requests still running after %gs; abandoned", settings.shutdown_timeout
                )
        else:
            log.info("stopped before serving")
        publisher.remove_live()  # uploads still running die with the process
        indexer.stop()
    return 0


def _listening(server: Any, host: str) -> str:
    """The URL(s) served: one per address when a host name resolved to several."""
    listen = getattr(server, "effective_listen", None)
    if listen:
        return ", ".join(f"http://{f'[{h}]' if ':' in h else h}:{p}/" for h, p in listen)
    shown = host if ":" not in host else f"[{host}]"
    return f"http://{shown}:{server.effective_port}/"


def forget(name: str, roots: Sequence[str]) -> int:
    """Lift the claim on a project that is no longer hosted (see pkgserver.hosted)."""
    from .hosted import HostedNames
    from .manage import files_of, project_name

    project = project_name(name)
    left = files_of(roots, project)
    if left:
        raise UsageError(f"{project} still has files ({left[0].path}): remove them first")
    hosted = HostedNames(roots)
    try:
        found = hosted.forget(project)
    except OSError as exc:
        raise UsageError(f"cannot update {hosted.paths}: {exc.strerror or exc}") from None
    if not found:
        raise UsageError(f"{project} is not among the projects hosted in {', '.join(roots)}")
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
