"""The command line's parser: ``run``'s options from pkgserver.options, the other subcommands,
and pypiserver's forms (options before the subcommand, no subcommand, ``-U``).

:func:`parse_args` is the way in: it parses, then (for ``run``) takes what the command line did
not give from the environment mapping it is handed, or the defaults.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from . import __version__
from .errors import UsageError
from .options import OPTIONS, VALUE, add_arguments, resolve

__all__ = ["SUBCOMMANDS", "build_parser", "normalize_argv", "parse_args"]

SUBCOMMANDS = (
    "run",
    "update",
    "passwd",
    "forget",
    "remove",
    "yank",
    "unyank",
    "status",
    "check",
    "token",
    "mirror",
)

# Options of the management commands that take a value, for _options_first.
_VALUED = (
    "--reason",
    "--cache-dir",
    "--progress",
    # mirror's
    "-r",
    "--requirement",
    "--project",
    "--forget",
    "--fallback-url",
    "--proxy-cache",
    "--platform",
    "--abi",
    "--python-version",
    "--implementation",
    "--only-binary",
    "--no-binary",
)
# The option strings of ``run`` that take a value, for _subcommand_at.
_RUN_VALUED = frozenset(f for o in OPTIONS if o.kind == VALUE for f in o.flags)
_DIRS_HELP = "package directories, as for 'run' (default: $PKGSERVER_ROOTS or ~/packages)"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(message)


def parse_args(argv: Sequence[str], environ: Mapping[str, str]) -> argparse.Namespace:
    """``pkgserver ARGV``'s namespace; for ``run``, one attribute per Settings field, from the
    command line, else ``environ``'s PKGSERVER_* variables, else the defaults."""
    ns = build_parser().parse_args(normalize_argv(list(argv)))
    return resolve(ns, environ) if ns.command == "run" else ns


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, OPTIONS)
    parser.add_argument("--version", action="version", version=f"pkgserver {__version__}")


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
    add_run_arguments(run)
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
    _add_management_parsers(sub)
    _add_token_parsers(sub)
    from .mirror import add_arguments as _mirror_arguments

    mi = sub.add_parser(
        "mirror",
        help="fill the caching proxy's cache ahead of time (or drop a project from it)",
        description="Cache what 'pip download REQ... -r FILE' fetches (with its --platform, "
        "--python-version, --abi, --only-binary options for other machines) from the upstream "
        "index into DIR's proxy cache, through a pkgserver on 127.0.0.1 with --proxy, so that "
        "'pkgserver run --proxy-offline DIR' serves them without the upstream. --project NAME "
        "caches every file of NAME; --forget NAME drops NAME from the cache.",
    )
    _mirror_arguments(mi)
    return parser


def _add_token_parsers(sub: Any) -> None:
    """token create | list | revoke (pkgserver.tokens)."""
    from .rights import ACTIONS

    tk = sub.add_parser(
        "token",
        help="create, list or revoke API tokens",
        description="API tokens are used as PyPI's: user __token__, the token as password. "
        "They are kept (hashed) with the records of the first DIR, or the bucket; a running "
        "server sees a new or revoked one within a second.",
    )
    tsub = tk.add_subparsers(dest="verb", parser_class=_Parser, required=True)
    create = tsub.add_parser(
        "create",
        help="create a token and print it (once)",
        description="Create a token for OWNER (an htpasswd user) and print it on standard "
        "output; it is not kept and cannot be shown again. The token may do only what OWNER "
        "may (-P, --rights: checked now when given, and on every use).",
    )
    create.add_argument("--owner", required=True, metavar="USER", help="the htpasswd user")
    create.add_argument(
        "--action",
        action="append",
        choices=ACTIONS,
        dest="actions",
        help="what it may do (repeat; default: upload)",
    )
    create.add_argument(
        "--project",
        action="append",
        default=[],
        dest="projects",
        metavar="NAME",
        help="a project name or pattern (acme-*) it is limited to (repeat; default: every "
        "project its owner may)",
    )
    create.add_argument("--expires", metavar="AGE", help="e.g. 90d, 12h (default: never)")
    create.add_argument("--description", default="", metavar="TEXT", help="what it is for")
    create.add_argument("-P", "--passwords", metavar="HTPASSWD", help="check that OWNER exists")
    create.add_argument("--rights", metavar="FILE", help="check it is within OWNER's rights")
    create.add_argument("roots", metavar="DIR", nargs="*", help=_DIRS_HELP)
    listing = tsub.add_parser("list", help="list tokens (never their secrets)")
    listing.add_argument("--owner", metavar="USER", help="only USER's")
    listing.add_argument("--json", action="store_true", help="as JSON lines")
    listing.add_argument("roots", metavar="DIR", nargs="*", help=_DIRS_HELP)
    revoke = tsub.add_parser("revoke", help="delete a token: refused at once everywhere")
    revoke.add_argument("id", metavar="ID", help="the token's id (pkgserver-ID-...)")
    revoke.add_argument("roots", metavar="DIR", nargs="*", help=_DIRS_HELP)


def _add_management_parsers(sub: Any) -> None:
    """remove, yank, unyank, status, check (pkgserver.manage)."""
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
    rm.add_argument("rest", metavar="[VERSION] DIR", nargs="*", help=_DIRS_HELP)
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
    yk.add_argument("roots", metavar="DIR", nargs="*", help=_DIRS_HELP)
    yk.add_argument("--reason", default="", metavar="TEXT", help="why (shown to installers)")
    uy = sub.add_parser(
        "unyank",
        help="undo a yank",
        description="Make PROJECT VERSION installable again. A running server shows it within "
        "a second.",
    )
    uy.add_argument("project", metavar="PROJECT")
    uy.add_argument("version", metavar="VERSION")
    uy.add_argument("roots", metavar="DIR", nargs="*", help=_DIRS_HELP)
    st = sub.add_parser(
        "status",
        help="show or set a project's status: active, archived, quarantined, deprecated (PEP 792)",
        usage="pkgserver status [-h] [--reason TEXT] PROJECT [STATUS] [DIR ...]",
        description="Without STATUS, print PROJECT's status (and its reason, after a tab). "
        "With one, record it: 'archived' and 'quarantined' refuse uploads, 'quarantined' also "
        "offers none of the project's files (not listed, not downloadable), 'deprecated' only "
        "marks it; 'active' clears the record. Installers see the status on the simple API "
        "pages. A running server applies it within a second.",
    )
    st.add_argument("project", metavar="PROJECT")
    st.add_argument("rest", metavar="[STATUS] DIR", nargs="*", help=_DIRS_HELP)
    st.add_argument(
        "--reason", default=None, metavar="TEXT", help="why (one line, shown to installers)"
    )
    ck = sub.add_parser(
        "check",
        help="read every file and report what the index cannot serve as it should",
        description="Read and hash every file in DIR... and report files that cannot be "
        "attributed to a project and version (and why), duplicates once names are normalized, "
        "and files whose hash differs from the index cache's for the same size and mtime. "
        "Exit status 1 when anything is reported. A progress bar is drawn on a terminal.",
    )
    ck.add_argument("roots", metavar="DIR", nargs="*", help=_DIRS_HELP)
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


def _accept_run_options(up: argparse.ArgumentParser) -> None:
    """pypiserver 1.x took -U with a run command line (pypi-server -p 8080 -U packages): the
    update command accepts run's options too, and ignores them (update says which)."""
    taken = {o for a in up._actions for o in a.option_strings}
    for option in OPTIONS:
        if not option.flags or taken.intersection(option.flags):
            continue  # DIR..., or one update has a meaning for
        up.add_argument(
            *option.flags,
            dest="ignored_" + option.name.lstrip("-").replace("-", "_"),
            action="store" if option.kind == VALUE else "store_true",
            default=None,
            help=argparse.SUPPRESS,
        )


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
            elif arg in _VALUED and i + 1 < len(args):  # a short one: -r FILE
                options.extend((arg, args[i + 1]))
                i += 1
            else:
                options.append(arg)
        else:
            positionals.append(arg)
        i += 1
    return [*options, "--", *positionals] if positionals else options


def normalize_argv(argv: list[str]) -> list[str]:
    """The command line as the parser takes it: no subcommand means ``run`` (pypiserver 1.x
    form), and options before the subcommand (pypiserver's ``-v run``, ``--log-file F run``)
    go after it; pypiserver 1.x's ``-U`` means ``update``."""
    if not argv:
        return ["run"]
    if argv[0] in ("remove", "yank", "unyank", "status", "check", "mirror"):
        return [argv[0], *_options_first(argv[1:])]
    if argv[0] in SUBCOMMANDS or argv[0] in ("-h", "--help", "--version"):
        return argv
    at = _subcommand_at(argv)
    if at is not None:
        return normalize_argv([argv[at], *argv[:at], *argv[at + 1 :]])
    options = argv[: argv.index("--")] if "--" in argv else argv
    for flag in ("-U", "--update"):
        if flag in options:
            i = argv.index(flag)
            return ["update", *argv[:i], *argv[i + 1 :]]
    return ["run", *argv]


def _subcommand_at(argv: list[str]) -> int | None:
    """Where a subcommand follows leading options (``-v run``), if it does."""
    valued = _RUN_VALUED
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
