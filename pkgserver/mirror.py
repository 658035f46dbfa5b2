"""``pkgserver mirror``: fill the caching proxy's cache ahead of time (an air-gapped network's
seed), or drop a project from it.

Requirements are resolved by pip itself (``pip download``, with the platform options given),
against an in-process pkgserver with --proxy on 127.0.0.1: every page and file pip needs goes
through the cache exactly as an install would, verified the same way, and the build
dependencies of sdists too. ``--project NAME`` takes every file of a project's page instead.
Then ``pkgserver run --proxy-offline`` (or a cache copied to the offline network) serves them.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from .config import DEFAULT_FALLBACK_URL, Settings
from .errors import UsageError

__all__ = ["add_arguments", "mirror"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", metavar="DIR", help="the package directory (or s3:// bucket)")
    parser.add_argument("reqs", metavar="REQ", nargs="*", help="requirements, as pip takes them")
    parser.add_argument(
        "-r",
        "--requirement",
        action="append",
        default=[],
        metavar="FILE",
        help="requirements file (pip's format; repeatable)",
    )
    parser.add_argument(
        "--project",
        action="append",
        default=[],
        metavar="NAME",
        help="cache every file of NAME's upstream page (every version: may be large)",
    )
    parser.add_argument(
        "--forget",
        action="append",
        default=[],
        metavar="NAME",
        help="drop NAME's page and files from the cache (then it may be uploaded here)",
    )
    parser.add_argument(
        "--fallback-url",
        default=None,
        metavar="URL",
        help=f"the upstream index (default $PKGSERVER_FALLBACK_URL, else {DEFAULT_FALLBACK_URL})",
    )
    parser.add_argument(
        "--proxy-cache",
        default=None,
        metavar="LOCATION",
        help="where the cache lives, as for run (default: DIR/.pkgserver/proxy)",
    )
    parser.add_argument("--cache-dir", default=None, metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--no-deps", action="store_true", help="only the requirements named")
    for flag, helptext in (
        ("--platform", "pip download's --platform (repeatable): wheels for another machine"),
        ("--abi", "pip download's --abi (repeatable)"),
    ):
        parser.add_argument(flag, action="append", default=[], metavar="TAG", help=helptext)
    for flag in ("--python-version", "--implementation", "--only-binary", "--no-binary"):
        parser.add_argument(flag, default=None, metavar="VALUE", help=f"pip download's {flag}")
    parser.add_argument("--pre", action="store_true", help="pip's --pre: pre-releases too")


def _settings(ns: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    fallback = ns.fallback_url or environ.get("PKGSERVER_FALLBACK_URL") or DEFAULT_FALLBACK_URL
    return Settings(
        roots=(ns.root,),
        host="127.0.0.1",
        port=0,
        proxy=True,
        fallback_url=fallback,
        proxy_cache=ns.proxy_cache or environ.get("PKGSERVER_PROXY_CACHE") or None,
        cache_dir=ns.cache_dir,
        password_file=None,
        authenticate=frozenset({"update"}),
        threads=8,
        access_log=False,
    )


def mirror(ns: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """The command: forget, then cache projects whole, then what pip needs."""
    from .app import create_app, default_proxy
    from .catalog import Catalog
    from .hosted import HostedNames
    from .manage import project_name
    from .observe import Observer

    for name in [*ns.forget, *ns.project]:
        project_name(name)  # (UsageError) a name becomes a path in the cache: no "/x/y"
    settings = _settings(ns, environ)
    observer = Observer(None, process=False)
    proxy = default_proxy(settings, observer)
    assert proxy is not None
    for name in ns.forget:
        from .distfile import normalize

        project = normalize(name)
        found = proxy.forget(project)
        print(
            f"{project}: {'dropped from' if found else 'was not in'} the cache",
            file=sys.stderr,
        )
    if not (ns.reqs or ns.requirement or ns.project):
        if ns.forget:
            return 0
        raise UsageError("name requirements (REQ... or -r FILE), --project NAME or --forget NAME")
    before = (proxy.cached_files, proxy.cached_bytes)
    if ns.root.startswith("s3://"):
        from .s3 import S3Records

        hosted = HostedNames(settings.roots, folders=[S3Records(ns.root)])
    else:
        hosted = HostedNames(settings.roots)
        # The names of DIR's files too (as a server's first scan claims them): the record
        # lists only what a server has seen, and this app's catalog is empty.
        from .scan import iter_dist_files, project_of

        hosted.add({n for rel, _ in iter_dist_files(ns.root) if (n := project_of(rel))})
    failed = 0
    for name in ns.project:
        failed += _whole_project(proxy, name, hosted)
    status = 0
    if ns.reqs or ns.requirement:
        app = create_app(settings, Catalog(), proxy=proxy, hosted=hosted, observer=observer)
        status = _pip_download(app, ns, environ)
    after = (proxy.cached_files, proxy.cached_bytes)
    print(
        f"cache {settings.proxy_location}: {after[0]} files, {after[1]} bytes "
        f"({after[0] - before[0]:+d} files, {after[1] - before[1]:+d} bytes)",
        file=sys.stderr,
    )
    if status != 0 or failed:
        print("some requirements could not be cached (see above)", file=sys.stderr)
        return 1
    return 0


def _whole_project(proxy: Any, name: str, hosted: Any) -> int:
    """Every file (and metadata file) of a project's upstream page into the cache; how many
    could not be."""
    from .distfile import normalize
    from .proxy import NotCached, UpstreamDown, UpstreamGone

    project = normalize(name)
    if hosted is not None and project in hosted:
        print(f"{project} is hosted here: not mirrored", file=sys.stderr)
        return 1
    try:
        page = proxy.page(project)
    except (UpstreamGone, UpstreamDown, NotCached) as exc:
        print(f"{project}: {exc}", file=sys.stderr)
        return 1
    failed = 0
    for entry in page.files:
        wanted = [(entry.filename, entry.url, entry.sha256, entry.size)]
        if entry.metadata_sha256:
            meta = entry.filename + ".metadata"
            wanted.append((meta, entry.url + ".metadata", entry.metadata_sha256, None))
        for filename, url, sha256, size in wanted:
            relpath = f"{project}/{filename}"
            if proxy.cached(relpath, sha256, project) is not None:
                continue
            job = proxy.download(relpath, url, sha256, size)
            job.finished_event.wait()
            if job.kept is None:
                print(f"{relpath}: {job.error}", file=sys.stderr)
                failed += 1
    print(f"{project}: {len(page.files)} files listed, {failed} not cached", file=sys.stderr)
    return failed


def _pip_download(app: Any, ns: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """pip download of the requirements through ``app`` served on 127.0.0.1 (a free port)."""
    from .server import make_server, serve, stop

    server = make_server(app, host="127.0.0.1", port=0, threads=8, ident="pkgserver-mirror")
    loop = threading.Thread(target=serve, args=(server,), name="pkgserver-mirror", daemon=True)
    loop.start()
    try:
        index = f"http://127.0.0.1:{server.effective_port}/simple/"
        with tempfile.TemporaryDirectory(prefix="pkgserver-mirror-") as dest:
            cmd = [*_pip(), "download", "--dest", dest, "--index-url", index]
            cmd += ["--no-cache-dir", "--disable-pip-version-check", "--progress-bar", "off"]
            cmd += _pip_options(ns)
            for path in ns.requirement:
                cmd += ["-r", path]
            cmd += ns.reqs
            env = {k: v for k, v in environ.items() if not k.startswith("PIP_")}
            env["PIP_CONFIG_FILE"] = os.devnull  # only this index, whatever pip.conf says
            env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1"
            print("$ " + " ".join(cmd), file=sys.stderr)
            return subprocess.run(cmd, env=env, check=False).returncode
    finally:
        stop(server, 1.0)


def _pip() -> list[str]:
    """How to run pip: this Python's, else the machine's (the container image's virtualenv has
    none); UsageError without either."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            return [found]
    raise UsageError(
        "pkgserver mirror resolves requirements with pip, and there is none here: install pip, "
        "or cache whole projects with --project NAME"
    )


def _pip_options(ns: argparse.Namespace) -> Sequence[str]:
    out: list[str] = []
    if ns.no_deps:
        out.append("--no-deps")
    if ns.pre:
        out.append("--pre")
    for platform in ns.platform:
        out += ["--platform", platform]
    for abi in ns.abi:
        out += ["--abi", abi]
    for flag, value in (
        ("--python-version", ns.python_version),
        ("--implementation", ns.implementation),
        ("--only-binary", ns.only_binary),
        ("--no-binary", ns.no_binary),
    ):
        if value:
            out += [flag, value]
    if (ns.platform or ns.abi or ns.python_version or ns.implementation) and not ns.only_binary:
        out += ["--only-binary", ":all:"]  # pip's rule for another machine's wheels
    return out
