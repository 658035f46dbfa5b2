"""The container's entrypoint and health check, in the image as /opt/pkgserver/entrypoint.py.

Entrypoint (``docker run IMAGE [ARGS...]``), like pypiserver's image:

- no arguments: ``pkgserver run``, which serves ``PKGSERVER_ROOTS`` or else ``~/packages``
  (``HOME`` is ``/data``) on port 8080 of all interfaces (or ``PKGSERVER_PORT``...);
- a first argument that is a pkgserver subcommand (``run``, ``passwd``, ...), an option
  (``-P .htpasswd packages``) or a path: ``pkgserver ARGS...``, relative to ``/data``;
- any other first argument that names a program in the image (``sh``, ``/bin/bash``): that
  program.

Before it starts a server it checks, and explains in one line without starting, what would only
fail later: a password file that is missing, and, when uploads are possible (a password file, or
``-P . -a .``), an upload folder (the first package directory) the server's user cannot write; it
never ``chown``s anything. An upload folder mounted read-only is taken as meant: the server
starts, serves downloads and refuses uploads. A bucket (``s3://BUCKET/PREFIX``, as an argument
or in ``PKGSERVER_ROOTS``) has no folder to check: the server finds it with the ``AWS_*``
variables given to the container, which it passes on, as every other.

Health check (``HEALTHCHECK CMD ... entrypoint.py healthcheck``): asks the running server's
health URL, found from the server process's own arguments and environment, so that ``-p``,
``--health-endpoint`` or ``PKGSERVER_PORT`` need no second configuration. Needs nothing but the
Python that runs pkgserver.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

from pkgserver import cli
from pkgserver.config import Settings
from pkgserver.publish import TEMP_PREFIX

DATA = "/data"
DEFAULT = ["run"]  # its default folder: PKGSERVER_ROOTS, else ~/packages = /data/packages


def say(message: str) -> None:
    print(f"pkgserver: {message}", file=sys.stderr, flush=True)


def command_for(args: Sequence[str]) -> tuple[str, list[str]]:
    """("pkgserver", args) or ("exec", argv) for the arguments given to ``docker run``."""
    args = list(args)
    if not args:
        return "pkgserver", list(DEFAULT)
    first = args[0]
    if first in cli.SUBCOMMANDS or first.startswith("-"):
        return "pkgserver", args
    if os.path.isfile(first) and os.access(first, os.X_OK):
        return "exec", args  # /bin/sh, /opt/pkgserver/bin/python
    if "/" in first:
        return "pkgserver", args
    if os.path.exists(first) or not shutil.which(first):
        return "pkgserver", args  # a path, or nothing runnable: pkgserver says what is wrong
    return "exec", args


def writable_problem(root: str) -> str | None:
    """Why uploads into ``root`` would fail, or None. A read-only mount is not a problem."""
    probe = os.path.join(root, TEMP_PREFIX + "probe-" + secrets.token_hex(4))
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        if exc.errno == errno.EROFS:
            say(f"{root} is mounted read-only: serving downloads, refusing uploads")
            return None
        uid, gid = os.geteuid(), os.getegid()
        try:
            st = os.stat(root)
            owner = f"owned by {st.st_uid}:{st.st_gid}, mode {st.st_mode & 0o7777:o}"
        except OSError as err:
            owner = err.strerror or str(err)
        return (
            f"error: the package directory {root} is not writable by this container's user "
            f"(uid {uid}, gid {gid}; the directory is {owner}; {exc.strerror}): uploads would "
            "fail. On the host, run "
            f"`chown -R {uid}:{gid} <folder>` (or make it group-writable for gid {gid}), or "
            "mount it read-only (-v <folder>:/data/packages:ro) to serve downloads only"
        )
    os.close(fd)
    os.unlink(probe)
    return None


def preflight(settings: Settings) -> str | None:
    """Uploads go to the first package directory, and only where someone may upload: with a
    password file, or with ``update`` not protected at all (``-P . -a .``)."""
    uploads = settings.password_file is not None or "update" not in settings.authenticate
    if not uploads or settings.roots[0].startswith("s3://"):
        return None  # (a bucket's store says what it refuses, and the server passes it on)
    return writable_problem(settings.roots[0])


def port_from_pypiserver_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment pkgserver runs in: ``environ``, with a PKGSERVER_PORT made of
    pypiserver's $PYPISERVER_PORT, else $PORT (its older name), when none is set (pypiserver's
    image listens there). A -p on the command line still wins. ``environ`` is not changed."""
    env = dict(environ)
    if env.get(cli.ENV_PREFIX + "PORT"):
        return env
    for name in ("PYPISERVER_PORT", "PORT"):
        value = env.get(name, "").strip()
        if value:
            env[cli.ENV_PREFIX + "PORT"] = value
            break
    return env


def entrypoint(args: Sequence[str]) -> int:  # returns only on an error
    # The command runs in this environment, handed to it (and to the checks below) explicitly.
    env = port_from_pypiserver_variables(os.environ)
    kind, argv = command_for(args)
    if kind == "exec":
        os.execvpe(argv[0], argv, env)  # noqa: S606 (the user's own command, as docker run gave it)
    try:
        settings = cli.parse_run(argv, env)
    except cli.UsageError as exc:
        hint = ""
        if "password file" in str(exc):
            hint = (
                f" (paths are relative to {DATA}; map the file in, e.g. "
                f"-v ~/pypi/.htpasswd:{DATA}/.htpasswd)"
            )
        elif "permission denied" in str(exc):
            hint = (
                f" (the server runs as uid {os.geteuid()}: on the host, make the folder and "
                f"the ones above it readable by it, e.g. chgrp {os.getegid()} <folder> && "
                "chmod g+rx <folder>)"
            )
        elif "package directory" in str(exc):
            hint = (
                f" (paths are relative to {DATA}; map the folder in with "
                f"-v <folder>:{DATA}/packages)"
            )
        say(f"error: {exc}{hint}")
        return 2
    if settings is not None:
        problem = preflight(settings)
        if problem:
            say(problem)
            return 2
    exe = shutil.which("pkgserver") or "pkgserver"
    # exec: pkgserver becomes the container's main process and gets docker stop's SIGTERM.
    os.execve(exe, [exe, *argv], env)  # noqa: S606 (no shell: the arguments pass unchanged)


# -- health check ---------------------------------------------------------------------------------
def _server_process(
    pids: Sequence[str] | None = None,
) -> tuple[list[str], dict[str, str]] | None:
    """Arguments (after ``pkgserver``) and PKGSERVER_* environment of the running server: PID 1
    after the entrypoint's exec, else (``docker run --init``) the first pkgserver process."""
    if pids is None:
        others = sorted((p for p in os.listdir("/proc") if p.isdigit() and p != "1"), key=int)
        pids = ["1", *others]
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = [a.decode("utf-8", "surrogateescape") for a in fh.read().split(b"\0")[:-1]]
            with open(f"/proc/{pid}/environ", "rb") as fh:
                raw = fh.read().split(b"\0")
        except OSError:
            continue
        for i, arg in enumerate(argv[:3]):
            if os.path.basename(arg) == "pkgserver" or (
                arg == "pkgserver" and i > 0 and argv[i - 1] == "-m"
            ):
                env = {}
                for item in raw:
                    key, _, value = item.decode("utf-8", "surrogateescape").partition("=")
                    if key.startswith(cli.ENV_PREFIX):
                        env[key] = value
                return argv[i + 1 :], env
    return None


def health_url(pids: Sequence[str] | None = None) -> str:
    found = _server_process(pids)
    settings = None
    if found is not None:
        args, env = found
        try:
            settings = cli.parse_run(args, env)  # in the server's PKGSERVER_* variables
        except cli.UsageError:
            settings = None
    port = settings.port if settings else 8080
    host = settings.host if settings else "0.0.0.0"
    path = settings.health_endpoint if settings else "/health"
    if host in ("0.0.0.0", "", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}{path}"


def healthcheck(pids: Sequence[str] | None = None) -> int:
    url = health_url(pids)
    # No proxy: docker passes its client's HTTP_PROXY into containers, and urllib would send a
    # request for 127.0.0.1 through it.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as res:
            ok = res.status == 200
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    print(f"{'healthy' if ok else 'unhealthy'}: {url}")
    return 0 if ok else 1


def main(argv: Sequence[str]) -> int:
    if list(argv[:1]) == ["healthcheck"]:
        return healthcheck()
    return entrypoint(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
