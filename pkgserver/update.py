"""``pkgserver update``: which hosted projects have newer releases on an upstream index.

pypiserver's ``update`` (``-U`` in 1.x), for a migrating admin's habits and scripts: for each
project in the package directories, the newest version here is compared with the upstream's
(PyPI's by default, read through its Simple API as PEP 691 JSON, HTML accepted); a newer
release is printed as the ``pip download`` command that fetches it into the directory, and
``-x`` runs those commands. Pre-releases count only with ``-u``; yanked releases never do. On a
bucket, pip downloads into ``-d`` (default: the current folder), and ``-x`` then puts the new
files into the bucket beside the project's newest one, create-only, through its Storage.

The upstream's answers are untrusted input: bounded in size and time, parsed defensively.
"""

from __future__ import annotations

import argparse
import html.parser
import json
import os
import posixpath
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING
from urllib.parse import quote, urljoin

from packaging.version import InvalidVersion, Version

from .distfile import InvalidDistFilename, normalize, parse_dist_filename
from .errors import UsageError
from .scan import iter_dist_files

if TYPE_CHECKING:
    from .s3 import S3Storage
    from .storage import Storage

__all__ = ["add_arguments", "update"]

DEFAULT_INDEX = "https://pypi.org/simple/"
MAX_PAGE = 64 * 1024 * 1024  # bytes of one upstream project page
TIMEOUT = 30.0  # seconds for one read from the upstream
DEADLINE = 120.0  # seconds for one whole project page
_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("roots", metavar="DIR", nargs="*", help="package directories, as for 'run'")
    p.add_argument(
        "-x",
        "--execute",
        action="store_true",
        help="run the pip download commands instead of printing them",
    )
    p.add_argument(
        "-d",
        "--download-directory",
        metavar="DIR",
        default=None,
        help="where the new files go (default: the directory holding the project's newest file)",
    )
    p.add_argument(
        "-u",
        "--allow-unstable",
        action="store_true",
        help="count pre-releases as updates",
    )
    p.add_argument(
        "--blacklist-file",
        "--ignorelist-file",
        dest="ignorelist",
        metavar="FILE",
        default=None,
        help="a file of project names (one per line) never to update",
    )
    p.add_argument(
        "--index-url",
        default=None,
        metavar="URL",
        help=f"the upstream Simple index (default: $PKGSERVER_FALLBACK_URL, else {DEFAULT_INDEX})",
    )
    # Options pypiserver's update shares with run: accepted, meaningless here.
    p.add_argument("-v", "--verbose", action="count", default=0, help=argparse.SUPPRESS)
    for option in ("--log-file", "--log-stream", "--log-frmt", "--hash-algo", "--backend"):
        p.add_argument(option, default=None, help=argparse.SUPPRESS)
    from . import __version__

    p.add_argument("--version", action="version", version=f"pkgserver {__version__}")


def update(ns: argparse.Namespace, roots: Sequence[str], *, bucket: S3Storage | None = None) -> int:
    """For the package directories ``roots``, or ``bucket`` (the location in ``roots``)."""
    index = ns.index_url or os.environ.get("PKGSERVER_FALLBACK_URL") or DEFAULT_INDEX
    if not index.startswith(("http://", "https://")):
        raise UsageError(f"--index-url {index!r} is not an http(s) URL")
    index = index if index.endswith("/") else index + "/"
    ignored = _ignorelist(ns.ignorelist)
    if bucket is None:
        found = [
            (relpath, os.path.dirname(os.path.join(root, *relpath.split("/"))))
            for root in roots
            for relpath, _st in iter_dist_files(root)
        ]
    else:
        found = [(r, posixpath.dirname(f"{bucket.url}/{r}")) for r, _item in bucket.listing()]
    newest = _newest_here(found, ignored)
    # pypiserver's report: "checking N packages", a character per project (u: an update,
    # .: none, e: the upstream could not be read), then the commands.
    print(f"checking {len(newest)} packages for newer version")
    commands: list[tuple[str, list[str], str]] = []  # (comment, pip's arguments, folder)
    failures = 0
    unknown: list[str] = []
    private: list[str] = []
    for n, project in enumerate(sorted(newest), 1):
        here, folder = newest[project]
        try:
            upstream = _upstream_versions(index, project)
        except OSError as exc:
            print(f"\n# {project}: cannot read {index}{project}/: {exc}", file=sys.stderr)
            failures += 1
            mark = "e"
        else:
            if not upstream:
                unknown.append(project)
            elif here not in upstream:
                # The upstream lacks the version held here: a private project (or one that
                # only shares its name). A "newer" release there is someone else's, and
                # fetching it into the index would be dependency confusion by our own hand.
                private.append(project)
                upstream = []
            candidates = [
                v for v in upstream if v > here and (ns.allow_unstable or not v.is_prerelease)
            ]
            mark = "." if not candidates else "u"
            if candidates:
                best = max(candidates)
                here_too = folder if bucket is None else "."  # (a bucket: then put there)
                dest = os.path.abspath(ns.download_directory or here_too)
                args = [
                    "-q",
                    "download",
                    "--no-deps",
                    "-i",
                    index,
                    "-d",
                    dest,
                    f"{project}=={best}",
                ]
                commands.append((f"# update {project} from {here} to {best}", args, folder))
        print(mark, end="\n" if n % 40 == 0 else "", flush=True)
    print()
    if unknown:
        print(f"no releases found on {index} for {', '.join(unknown)}")
    if private:
        print(
            f"skipped (the version here is not on {index}: private projects, never "
            f"updated from it): {', '.join(private)}"
        )
    for comment, args, _folder in commands:
        print(comment)
        print(shlex.join(["pip", *args]))
    if ns.execute:
        pip = [path] if (path := shutil.which("pip")) else [sys.executable, "-m", "pip"]
        for _, args, folder in commands:
            if subprocess.run([*pip, *args]).returncode != 0:
                failures += 1
            elif bucket is not None:
                failures += _put_release(bucket, args[-2], args[-1], folder)
    if not newest:
        print(f"no projects found in {', '.join(roots)}", file=sys.stderr)
    return 1 if failures else 0


def _newest_here(
    found: Iterable[tuple[str, str]], ignored: set[str]
) -> dict[str, tuple[Version, str]]:
    """Project -> (the newest version here, the folder of its file), of the files found
    (relpath, its folder)."""
    newest: dict[str, tuple[Version, str]] = {}
    for relpath, folder in found:
        try:
            info = parse_dist_filename(relpath.rsplit("/", 1)[-1])
            version = Version(info.version)
        except (InvalidDistFilename, InvalidVersion):
            continue
        if info.project in ignored:
            continue
        if info.project not in newest or version > newest[info.project][0]:
            newest[info.project] = (version, folder)
    return newest


def _put_release(storage: Storage, dest: str, wanted: str, folder: str) -> int:
    """Put the files pip downloaded into ``dest`` for ``wanted`` (``project==version``) into
    ``folder`` of the storage, create-only, as an upload publishes; the number that failed."""
    project, _, version = wanted.partition("==")
    failures = 0
    for name in sorted(os.listdir(dest)):
        try:
            info = parse_dist_filename(name)
            if info.project != project or Version(info.version) != Version(version):
                continue
        except (InvalidDistFilename, InvalidVersion):
            continue
        location = f"{folder}/{name}"
        path = os.path.join(dest, name)
        staged = storage.stage(os.path.getsize(path))
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(1024 * 1024):
                    staged.write(chunk)
            staged.finish()
            created = storage.create(staged, location)
        except OSError as exc:
            print(f"# cannot put {name} into {folder}: {exc.strerror or exc}", file=sys.stderr)
            failures += 1
            continue
        finally:
            staged.discard()
        print(f"# put {location}" if created else f"# {location} is there already")
    return failures


def _ignorelist(path: str | None) -> set[str]:
    if not path:
        return set()
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read(1024 * 1024).splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the ignore list {path!r}: {exc}") from None
    return {normalize(line.strip()) for line in lines if line.strip() and not line.startswith("#")}


def _upstream_versions(index: str, project: str) -> list[Version]:
    """The versions the upstream index offers (files not yanked), from its project page."""
    url = urljoin(index, quote(project) + "/")
    headers = {"Accept": _ACCEPT, "User-Agent": "pkgserver"}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (checked: http(s))
    deadline = time.monotonic() + DEADLINE
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as res:  # noqa: S310
            kind = res.headers.get("Content-Type", "")
            # TIMEOUT bounds each read; the page as a whole must come within DEADLINE (an
            # upstream that sends a byte every few seconds would hold us for hours).
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_PAGE:
                if time.monotonic() > deadline:
                    raise OSError(f"the page did not arrive within {DEADLINE:.0f} s")
                chunk = res.read1(64 * 1024)  # what has arrived, not a full 64 KB
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            body = b"".join(chunks)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []  # not on the upstream index: nothing newer there
        raise OSError(f"HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise OSError(str(exc.reason)) from None
    if len(body) > MAX_PAGE:
        raise OSError("the project page is too large")
    filenames: list[str] = []
    if "json" in kind:
        try:
            doc = json.loads(body)
            for item in doc.get("files", []) if isinstance(doc, dict) else []:
                if isinstance(item, dict) and isinstance(item.get("filename"), str):
                    if not item.get("yanked"):
                        filenames.append(item["filename"])
        except (ValueError, RecursionError):
            raise OSError("the project page is not valid JSON") from None
    else:
        parser = _Links()
        parser.feed(body.decode("utf-8", "replace"))
        filenames = parser.filenames
    versions = set()
    for filename in filenames:
        try:
            info = parse_dist_filename(filename)
            if info.project == project:
                versions.add(Version(info.version))
        except (InvalidDistFilename, InvalidVersion):
            continue
    return sorted(versions)


class _Links(html.parser.HTMLParser):
    """The anchor texts (filenames) of a PEP 503 page, without the yanked ones."""

    def __init__(self) -> None:
        super().__init__()
        self.filenames: list[str] = []
        self._current: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            yanked = any(name == "data-yanked" for name, _ in attrs)
            self._current = None if yanked else []

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._current.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._current is not None:
            self.filenames.append("".join(self._current).strip())
            self._current = None
