"""The options of ``pkgserver run``, each declared once.

An :class:`Option` names the :class:`~pkgserver.config.Settings` field it sets, its flags
(pypiserver's among them), how a value is read, its default and its help. From :data:`OPTIONS`
come the ``run`` parser's options (:func:`add_arguments`) and the reading of the ``PKGSERVER_*``
environment variables (:func:`resolve`, after parsing); a test checks Settings's fields and
defaults against them.

Precedence, for each option: the command line, else its environment variable (the first set of
its names, non-empty), else the default. ``-v`` is the exception, as it always was: its count
adds to ``PKGSERVER_VERBOSE``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .config import DEFAULT_FALLBACK_URL, UPLOAD_TIMES
from .errors import UsageError
from .observe import LOG_FORMATS

__all__ = [
    "BY_FIELD",
    "ENV_PREFIX",
    "FALSE",
    "OPTIONS",
    "ROOTS",
    "SELECT_CONNECTIONS",
    "Option",
    "add_arguments",
    "env_value",
    "resolve",
    "roots",
]

ENV_PREFIX = "PKGSERVER_"
# Values of a variable that turn a flag off (PKGSERVER_OVERWRITE=no), or an option (--hash-algo
# off, --cache-dir off).
FALSE = ("0", "no", "off", "false", "none")
# The most connections served with select(), whose descriptors must stay below 1,024 (the
# rest: listening sockets, the trigger, logs, the index cache, inotify, files being sent).
SELECT_CONNECTIONS = 900

# Kinds of option: one that takes a value; a flag that sets True (ON) or False (OFF, the
# --no-... flags); a count (-v, -vv).
VALUE, ON, OFF, COUNT = "value", "on", "off", "count"


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of ``run``: its Settings field, flags, environment variables, type, default."""

    field: str  # the Settings field it sets (pypiserver's ignored options: a name of their own)
    flags: tuple[str, ...]  # in the order --help shows them, a long one last (its name)
    help: str  # "{default}" in it is the default, as shown
    default: Any = None  # Settings's default
    parse: Callable[[str], Any] | None = None  # text -> value (None: the text itself)
    kind: str = VALUE
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    shown: str | None = None  # the default as --help and the README write it, if not str()
    env: tuple[str, ...] = ()  # its variables, if not PKGSERVER_<LONG FLAG> for each long flag
    ignored: str = ""  # pypiserver's options that pkgserver accepts and ignores: why

    @property
    def env_names(self) -> tuple[str, ...]:
        """PKGSERVER_<FLAG> for each long flag (``--interface``, ``--host``), in order."""
        if self.env:
            return self.env
        return tuple(
            ENV_PREFIX + f[2:].upper().replace("-", "_") for f in self.flags if f.startswith("--")
        )

    @property
    def name(self) -> str:
        """The option as messages name it, its last flag: ``--port``, ``--host``."""
        return self.flags[-1] if self.flags else self.metavar or self.field

    @property
    def shown_default(self) -> str:
        if self.shown is not None:
            return self.shown
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)

    def convert(self, text: str) -> Any:
        """A value given as text, as the parser converts it (its errors worded as argparse's)."""
        if self.kind != VALUE:
            enabled = text.lower() not in FALSE
            if self.kind == COUNT:
                return int(text) if text.isdigit() else int(enabled)
            return enabled if self.kind == ON else not enabled
        try:
            value = self.parse(text) if self.parse is not None else text
        except argparse.ArgumentTypeError as exc:
            message = str(exc)
        except (TypeError, ValueError):
            kind = getattr(self.parse, "__name__", repr(self.parse))
            message = f"invalid {kind} value: {text!r}"
        else:
            if self.choices is None or value in self.choices:
                return value
            # A variable's value is held to the choices as the parser holds the flag's.
            choices = ", ".join(repr(c) for c in self.choices)
            message = f"invalid choice: {value!r} (choose from {choices})"
        raise UsageError(f"argument {'/'.join(self.flags)}: {message}")


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


# The package directories: DIR... on the command line (a positional: no flag), else
# PKGSERVER_ROOTS, colon-separated: every subcommand that takes DIR... reads it (roots()).
ROOTS = Option(
    "roots",
    (),
    "package directories (default: $PKGSERVER_ROOTS, colon-separated, or ~/packages); "
    "uploads go to the first",
    default=(),
    metavar="DIR",
    env=(ENV_PREFIX + "ROOTS",),
)


def _ignored(flag: str, why: str, choices: tuple[str, ...] | None = None) -> Option:
    """pypiserver's options that have no meaning here: accepted (with pypiserver's own choices
    where it has some), and a notice at start says so."""
    return Option(
        flag[2:].replace("-", "_"),
        (flag,),
        argparse.SUPPRESS,
        parse=str.lower if choices else None,
        metavar=None if choices else "VALUE",
        choices=choices,
        ignored=why,
    )


_LOG_FORMATS = "the access log has its own formats (--log-format)"

OPTIONS: tuple[Option, ...] = (
    ROOTS,
    Option(
        "port",
        ("-p", "--port"),
        "port (default {default}; 0 picks a free one)",
        default=8080,
        parse=int,
    ),
    Option(
        "host",
        ("-i", "-H", "--interface", "--host"),
        "address to listen on (default {default})",
        default="0.0.0.0",
    ),
    Option(
        "password_file",
        ("-P", "--passwords"),
        "Apache htpasswd file for authentication; '.' for none",
        metavar="HTPASSWD",
    ),
    Option(
        "authenticate",
        ("-a", "--authenticate"),
        "comma-separated actions that need a password: update, download, list, metrics "
        "(/metrics alone; it also needs what list needs); '.' for none (needs -P .). "
        "Default: {default}",
        default=frozenset({"update"}),
        shown="update",
    ),
    Option(
        "max_upload_size",
        ("--max-upload-size",),
        "largest file an upload may carry, e.g. 500M or 2G (default {default}); larger gets 413",
        default=1024**3,
        parse=_size,
        metavar="SIZE",
        shown="1G",
    ),
    Option(
        "max_file_size",
        ("--max-file-size",),
        "largest file the index lists (default: --max-upload-size); larger files in the "
        "directory are skipped, with a log line",
        parse=_size,
        metavar="SIZE",
    ),
    Option(
        "overwrite",
        ("-o", "--overwrite"),
        "allow uploads to replace existing files",
        default=False,
        kind=ON,
    ),
    Option(
        "fallback_url",
        ("--fallback-url",),
        "where projects not hosted here are redirected (default {default})",
        default=DEFAULT_FALLBACK_URL,
    ),
    Option(
        "disable_fallback",
        ("--disable-fallback",),
        "answer 404 for projects not hosted here",
        default=False,
        kind=ON,
    ),
    Option(
        "proxy",
        ("--proxy",),
        "serve projects not hosted here from the fallback index through a cache (pages "
        "revalidated, files kept once verified), instead of redirecting to it",
        default=False,
        kind=ON,
    ),
    Option(
        "proxy_ttl",
        ("--proxy-ttl",),
        "seconds a cached upstream page is served before the upstream is asked again "
        "(default {default})",
        default=600.0,
        parse=float,
        metavar="SECONDS",
    ),
    Option(
        "proxy_offline",
        ("--proxy-offline",),
        "serve only what the proxy's cache holds; never ask the upstream (implies --proxy)",
        default=False,
        kind=ON,
    ),
    Option(
        "proxy_cache_size",
        ("--proxy-cache-size",),
        "largest size of the upstream files cached, e.g. 20G; the least recently used go "
        "first (default: no limit)",
        parse=_size,
        metavar="SIZE",
    ),
    Option(
        "proxy_cache",
        ("--proxy-cache",),
        "where the proxy's cache lives, a folder or s3://bucket/prefix (default: .pkgserver/"
        "proxy in the first package directory or the bucket)",
        metavar="LOCATION",
    ),
    Option(
        "hash_algo",
        ("--hash-algo",),
        "hash in the #fragment of links (default {default}; 'off' for none)",
        default="sha256",
    ),
    Option(
        "welcome_file",
        ("--welcome",),
        "HTML template for the welcome page ({{URL}}, {{VERSION}}, {{NUMPKGS}})",
        metavar="FILE",
    ),
    Option(
        "health_endpoint",
        ("--health-endpoint",),
        "path of the health check (default {default})",
        default="/health",
    ),
    Option(
        "server_base_url",
        ("--server-base-url",),
        "external URL of the server, for redirects and absolute links behind a proxy",
        metavar="URL",
    ),
    Option(
        "trust_proxy",
        ("--trust-proxy",),
        "honour X-Forwarded-Host, -Proto, -Prefix and -For: only behind a reverse proxy "
        "that sets them (never by default: any client could)",
        default=False,
        kind=ON,
    ),
    Option(
        "cache_control",
        ("--cache-control",),
        "'Cache-Control: public, max-age=AGE' on downloads, as pypiserver (default: a year, "
        "immutable; with --overwrite, revalidated)",
        parse=_seconds,
        metavar="AGE",
    ),
    Option(
        "redirect_downloads",
        ("--redirect-downloads",),
        "on an s3:// location: answer a file download with a redirect (302) to a link to the "
        "object that the store itself serves, signed for 5 minutes; access is checked first",
        default=False,
        kind=ON,
    ),
    Option(
        "rights_file",
        ("--rights",),
        "who may do what to which project, and trusted publishers: a TOML file (README, "
        "'Tokens, rights and trusted publishing'), re-read within a second of a change. "
        "Without it every htpasswd user may do every protected action",
        metavar="FILE",
    ),
    Option(
        "show_uploaders",
        ("--show-uploaders",),
        "show who uploaded each file on the project pages to everyone who may list "
        "(without it, only to requests that list with credentials)",
        default=False,
        kind=ON,
    ),
    Option(
        "rescan_interval",
        ("--rescan-interval",),
        "also rescan the directories this often (for filesystems inotify cannot watch)",
        default=0.0,
        parse=float,
        metavar="SECONDS",
    ),
    Option(
        "cache_dir",
        ("--cache-dir",),
        "where the index cache lives (hashes and metadata, so restarts need not re-read "
        "every file; safe to delete). Default $XDG_CACHE_HOME/pkgserver or ~/.cache/pkgserver; "
        "'off' for none",
        metavar="DIR",
    ),
    Option(
        "upload_time",
        ("--upload-time",),
        "the upload time served (PEP 700 upload-time, the JSON API, the pages): first-seen "
        "(the default: when the file was uploaded, or first seen in the directory under its "
        "name with its bytes, recorded in .pkgserver/upload-times.jsonl) or mtime (the file's "
        "modification time, which cp -p and rsync -a carry over from elsewhere)",
        default="first-seen",
        parse=str.lower,
        choices=UPLOAD_TIMES,
    ),
    Option(
        "watch",
        ("--no-watch",),
        "do not use inotify (then --rescan-interval defaults to 5)",
        default=True,
        kind=OFF,
    ),
    Option(
        "threads",
        ("--threads",),
        "waitress worker threads (default {default})",
        default=16,
        parse=int,
    ),
    Option(
        "connection_limit",
        ("--connection-limit",),
        "most connections open at once (default {default})",
        default=SELECT_CONNECTIONS,
        parse=int,
    ),
    Option(
        "connections_per_address",
        ("--connections-per-address",),
        "once half the connection limit is in use, the most one client address may hold; "
        "0 for no cap (default {default}; off with --trust-proxy, where every client is the "
        "proxy)",
        default=100,
        parse=int,
        metavar="N",
    ),
    Option(
        "header_timeout",
        ("--header-timeout",),
        "time a client has to send a request's headers once it began (default {default})",
        default=15.0,
        parse=float,
        metavar="SECONDS",
    ),
    Option(
        "channel_timeout",
        ("--channel-timeout",),
        "close connections idle this long (default {default})",
        default=60.0,
        parse=float,
        metavar="SECONDS",
    ),
    Option(
        "shutdown_timeout",
        ("--shutdown-timeout",),
        "on SIGTERM or Ctrl-C, seconds to let requests in progress finish (an upload its "
        "publishing) before the process ends (default {default}; docker stop waits 10)",
        default=5.0,
        parse=float,
    ),
    Option("verbosity", ("-v", "--verbose"), "more logging (repeatable)", default=0, kind=COUNT),
    Option("log_file", ("--log-file",), "also log to this file"),
    Option(
        "log_stream",
        ("--log-stream",),
        "log to stdout, stderr (default) or nowhere",
        default="stderr",
        parse=str.lower,
        choices=("stdout", "stderr", "none"),
    ),
    Option(
        "log_frmt",
        ("--log-frmt",),
        "format of the server's own log lines (Python logging)",
        default="%(asctime)s %(levelname)s %(name)s: %(message)s",
    ),
    Option(
        "log_format",
        ("--log-format",),
        "access log format: combined (Apache's, the default), common, or json (then "
        "every log line is a JSON object)",
        default="combined",
        choices=LOG_FORMATS,
    ),
    Option(
        "access_log",
        ("--no-access-log",),
        "do not log every request",
        default=True,
        kind=OFF,
    ),
    _ignored(
        "--server",
        "pkgserver always runs on waitress",
        ("auto", "cherrypy", "gevent", "gunicorn", "paste", "twisted", "wsgiref"),
    ),
    _ignored(
        "--backend",
        "pkgserver keeps its own in-memory catalog, watched with inotify",
        ("auto", "simple-dir", "cached-dir"),
    ),
    _ignored("--log-req-frmt", _LOG_FORMATS),
    _ignored("--log-res-frmt", _LOG_FORMATS),
    _ignored("--log-err-frmt", "errors are logged with --log-frmt"),
)


def add_arguments(parser: argparse.ArgumentParser, options: Iterable[Option] = OPTIONS) -> None:
    """The options to ``parser``, each with the default None: :func:`resolve` then tells an
    option given from one that was not, and supplies the environment's value or the default."""
    for option in options:
        help = option.help
        if help != argparse.SUPPRESS:
            # argparse formats help with %: a "%" of ours (none today) must stay one.
            help = help.replace("%", "%%").replace("{default}", option.shown_default)
        if not option.flags:
            parser.add_argument(option.field, nargs="*", metavar=option.metavar, help=help)
        elif option.kind == VALUE:
            typed: dict[str, Any] = {"type": option.parse} if option.parse else {}
            parser.add_argument(
                *option.flags,
                dest=option.field,
                **typed,
                default=None,
                choices=option.choices,
                metavar=option.metavar,
                help=help,
            )
        elif option.kind == COUNT:
            parser.add_argument(
                *option.flags, dest=option.field, action="count", default=None, help=help
            )
        else:
            parser.add_argument(
                *option.flags,
                dest=option.field,
                action="store_const",
                const=option.kind == ON,
                default=None,
                help=help,
            )


def env_value(option: Option, environ: Mapping[str, str]) -> str | None:
    """The text of the first of the option's variables that is set and not empty, or None."""
    for name in option.env_names:
        value = environ.get(name)
        if value:
            return value
    return None


def resolve(ns: argparse.Namespace, environ: Mapping[str, str]) -> argparse.Namespace:
    """The namespace of a parsed ``run`` with every option's value: the command line's, else the
    environment's (converted as the command line's, and refused in the same words), else the
    default. The one place where ``run``'s options are read from the environment."""
    values = dict(vars(ns))
    values[ROOTS.field] = roots(values.get(ROOTS.field) or (), environ)
    for option in OPTIONS:
        if not option.flags:
            continue
        given = values.get(option.field)
        text = env_value(option, environ)
        if option.kind == COUNT:
            # -v adds to PKGSERVER_VERBOSE, as argparse's count did from its default.
            base = option.convert(text) if text else option.default
            values[option.field] = base + (given or 0)
        elif given is not None:
            values[option.field] = given
        else:
            values[option.field] = option.convert(text) if text else option.default
    return argparse.Namespace(**values)


BY_FIELD = {option.field: option for option in OPTIONS}


def roots(given: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """DIR... as given, else PKGSERVER_ROOTS (separated by os.pathsep), else none. The colon
    of an ``s3://`` location separates nothing."""
    if given:
        return list(given)
    text = env_value(ROOTS, environ) or ""
    return [r for r in re.split(re.escape(os.pathsep) + "(?!//)", text) if r]
