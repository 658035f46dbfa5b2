"""The caching proxy (--proxy): projects not hosted here, served from a cache of the upstream.

Pages. ``ProxyCache.page(name)`` answers an upstream project page: from memory while it is
younger than ``ttl``; else from the upstream, asked with the validators it answered last time
(ETag, Last-Modified; a 304 refreshes the cached page); when the upstream cannot be reached or
answers 5xx, the cached page as it is (stale: logged and counted), and with none, UpstreamDown
(a 502). Every upstream answer is bounded in size and time (``Fetcher``) and parsed as untrusted
input (pkgserver.upstream).

Files. A file is fetched from the upstream when first asked for, by one ``Download`` however
many requests want it: each of them streams the temporary file as it grows, all but its last
byte until the whole matched the sha256 the upstream's page listed; then the file is kept in
the cache and the last byte goes out. A file that does not match is dropped, and every
response that was streaming it ends short (the client sees an incomplete body, never a
complete one with other bytes). The cache is bounded (``max_bytes``): the least recently used
files go first.

Where the cache lives is a ``ProxyStore``: a folder (``DirectoryProxyStore``) or a bucket
(pkgserver.s3.S3ProxyStore), apart from the hosted files in either case: cached files never
count as hosted, and a hosted or claimed name is never proxied (pkgserver.site decides).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any, BinaryIO, NamedTuple, Protocol
from urllib.parse import quote, urlsplit

from . import __version__
from .catalog import DistFile, FileStat, RenderBudget, RenderCache
from .distfile import parse_dist_filename
from .render import Rendered, render_proxied
from .scan import open_stored
from .upstream import UpstreamFile, UpstreamPage, UpstreamPageError, max_age_of, parse_page

__all__ = [
    "DEFAULT_TTL",
    "DirectoryProxyStore",
    "Download",
    "Fetcher",
    "NotCached",
    "ProxyCache",
    "ProxyStore",
    "TooManyDownloads",
    "UpstreamDown",
    "UpstreamGone",
]

log = logging.getLogger(__name__)

DEFAULT_TTL = 600.0  # seconds a cached page is served before it is revalidated (PyPI's max-age)
CONNECT_TIMEOUT = 5.0  # seconds to connect to the upstream, and without a byte of an answer
PAGE_DEADLINE = 30.0  # seconds a whole page may take
FILE_STALL = 30.0  # seconds a file download may go without a byte
MAX_PAGE = 64 * 1024 * 1024  # bytes of a page, decompressed
MAX_METADATA = 8 * 1024 * 1024  # bytes of a PEP 658 metadata file
MAX_FILE = 16 * 1024**3  # bytes of any file, when neither the page nor the answer gives a size
CHUNK = 256 * 1024
REFUSE_FOR = 60.0  # seconds a file whose bytes did not match is not fetched again
ABSENT_FOR = 60.0  # seconds a name the upstream does not have is answered 404 without asking
TOUCH_EVERY = 60.0  # seconds between two notes of a cached file's use in the store
TMP_KEPT = 3600.0  # seconds a temporary file untouched is taken for a stopped process's
PAGES_KEPT = 4096  # pages kept in memory (the rest is read from the store when asked)
ENTRIES_KEPT = 500_000  # files listed by the pages kept in memory, together (~150 MB at most)
MAX_DOWNLOADS = 64  # downloads from the upstream at once; more are answered 503
ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.1"
)


class UpstreamDown(Exception):
    """The upstream cannot answer now and nothing is cached to answer with (a 502)."""


class UpstreamGone(Exception):
    """The upstream says there is no such project or file (a 404)."""


class TooManyDownloads(Exception):
    """MAX_DOWNLOADS are running: the client should try again shortly (a 503)."""


class NotCached(Exception):
    """--proxy-offline, and this is not in the cache (a 404)."""


# -- the upstream ---------------------------------------------------------------------------------
class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Redirects to http(s) only, and never from https to http."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        old, new = urlsplit(req.full_url).scheme, urlsplit(newurl).scheme
        if new not in ("http", "https") or (old == "https" and new != "https"):
            raise urllib.error.HTTPError(newurl, code, f"refused redirect to {new}:", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class Answer(NamedTuple):
    status: int
    headers: Any  # email.message.Message
    body: bytes
    url: str


class Fetcher:
    """HTTP(S) requests to the upstream, bounded: ``connect`` seconds to connect and between
    bytes, a deadline for a page, sizes. Only http and https (no file:, ftp: or data: URLs,
    whatever a page says); the environment's proxy settings (HTTPS_PROXY, NO_PROXY) apply."""

    def __init__(
        self, *, connect: float = CONNECT_TIMEOUT, deadline: float = PAGE_DEADLINE
    ) -> None:
        self.connect = connect
        self.deadline = deadline
        opener = urllib.request.OpenerDirector()
        for handler in (
            urllib.request.ProxyHandler(),
            urllib.request.HTTPHandler(),
            urllib.request.HTTPSHandler(),
            _NoDowngrade(),
            urllib.request.HTTPErrorProcessor(),
            urllib.request.HTTPDefaultErrorHandler(),
        ):
            opener.add_handler(handler)
        self.opener = opener
        self.agent = f"pkgserver/{__version__} (caching proxy)"

    def _open(self, url: str, headers: dict[str, str], timeout: float) -> Any:
        """The response (also for 4xx/5xx); raises OSError when there is none."""
        if urlsplit(url).scheme not in ("http", "https"):
            raise OSError(f"not an http(s) URL: {url[:200]!r}")
        req = urllib.request.Request(url, headers={"User-Agent": self.agent, **headers})  # noqa: S310
        try:
            return self.opener.open(req, timeout=timeout)
        except urllib.error.HTTPError as exc:
            return exc
        # URLError, timeouts, refused, a bad URL; http.client's own: an answer that is not HTTP.
        except (OSError, ValueError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise OSError(f"{urlsplit(url).netloc}: {reason}") from None

    def get(self, url: str, headers: dict[str, str], limit: int) -> Answer:
        """A whole (small) answer: at most ``limit`` bytes after decompression, within the
        deadline. Raises OSError (no answer, too slow, too large)."""
        started = time.monotonic()
        resp = self._open(url, {"Accept-Encoding": "gzip", **headers}, self.connect)
        try:
            status = int(resp.status)
            gzipped = (resp.headers.get("Content-Encoding") or "").lower() == "gzip"
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None
            parts: list[bytes] = []
            size = 0
            while True:
                if time.monotonic() - started > self.deadline:
                    raise OSError(f"{urlsplit(url).netloc}: no whole answer in {self.deadline:g}s")
                try:
                    # read1: what one recv brings (read waits for CHUNK bytes, past the deadline).
                    chunk = resp.read1(CHUNK) if hasattr(resp, "read1") else resp.read(CHUNK)
                except (OSError, ValueError, http.client.HTTPException) as exc:
                    raise OSError(f"{urlsplit(url).netloc}: {exc}") from None
                if not chunk:
                    # http.client ends a body cut short of its Content-Length without a word.
                    if getattr(resp, "length", None) or (
                        inflate is not None and size and not inflate.eof
                    ):
                        raise OSError(f"{urlsplit(url).netloc}: the answer was cut short")
                    break
                if inflate is not None:
                    try:
                        chunk = inflate.decompress(chunk, limit + 1 - size)
                    except zlib.error:
                        raise OSError(f"{urlsplit(url).netloc}: bad gzip body") from None
                size += len(chunk)
                if size > limit:
                    raise OSError(f"{urlsplit(url).netloc}: answer larger than {limit} bytes")
                parts.append(chunk)
            return Answer(status, resp.headers, b"".join(parts), resp.geturl() or url)
        finally:
            resp.close()

    def stream(self, url: str) -> Any:
        """An open response for a file (its status may be any); raises OSError."""
        return self._open(url, {"Accept-Encoding": "identity"}, FILE_STALL)


# -- where the cache lives ------------------------------------------------------------------------
class ProxyStore(Protocol):
    """A cache's pages and files. ``relpath``s are ``<project>/<filename>`` (checked names)."""

    where: str  # for the log and DistFile.root

    def read_page(self, name: str) -> bytes | None: ...

    def write_page(self, name: str, data: bytes) -> None: ...

    def drop_page(self, name: str) -> bool: ...

    def page_names(self) -> list[str]: ...

    def files(self) -> Iterator[tuple[str, int, float]]:
        """(relpath, size, last used) of every cached file."""
        ...

    def stat(self, relpath: str) -> FileStat | None: ...

    def open(self, location: str) -> tuple[BinaryIO, FileStat]:
        """As Storage.open, for a DistFile.path of this store. Raises OSError."""
        ...

    def temp(self) -> tuple[BinaryIO, str]:
        """A new temporary file (open for writing) and its path, on this machine."""
        ...

    def keep(self, temp_path: str, relpath: str) -> FileStat:
        """The verified temporary file under its name (it is gone from its temp path)."""
        ...

    def drop(self, relpath: str) -> None: ...

    def touch(self, relpath: str) -> None:
        """Note a use (the order of eviction after a restart)."""
        ...

    def local_path(self, relpath: str) -> str | None:
        """A path on this machine the fast path may read, if the store has one."""
        ...


class DirectoryProxyStore:
    """The cache in a folder: ``pages/<project>.json``, ``files/<project>/<filename>``,
    ``tmp/`` (downloads in progress; emptied at start)."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.where = self.root + "/files"
        for sub in ("pages", "files", "tmp"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        # Leftovers of a process that stopped; not another's downloads in progress (mirror
        # beside a running server): files written to lately.
        with os.scandir(os.path.join(self.root, "tmp")) as leftovers:
            for leftover in leftovers:
                try:
                    if time.time() - leftover.stat(follow_symlinks=False).st_mtime > TMP_KEPT:
                        os.unlink(leftover.path)
                except OSError:
                    pass

    def _page_path(self, name: str) -> str:
        return os.path.join(self.root, "pages", name + ".json")

    def read_page(self, name: str) -> bytes | None:
        try:
            with open(self._page_path(name), "rb") as fh:
                return fh.read(MAX_PAGE * 2)
        except OSError:
            return None

    def write_page(self, name: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=os.path.join(self.root, "tmp"), prefix="page-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, self._page_path(name))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def drop_page(self, name: str) -> bool:
        try:
            os.unlink(self._page_path(name))
        except FileNotFoundError:
            return False
        shutil.rmtree(os.path.join(self.root, "files", name), ignore_errors=True)
        return True

    def page_names(self) -> list[str]:
        try:
            found = os.listdir(os.path.join(self.root, "pages"))
        except OSError:
            return []
        return sorted(n[:-5] for n in found if n.endswith(".json") and not n.startswith("."))

    def files(self) -> Iterator[tuple[str, int, float]]:
        base = os.path.join(self.root, "files")
        for project in os.scandir(base):
            if not project.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(project.path):
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    yield f"{project.name}/{entry.name}", st.st_size, st.st_atime

    def _path(self, relpath: str) -> str:
        return os.path.join(self.root, "files", relpath)

    def stat(self, relpath: str) -> FileStat | None:
        try:
            st = os.stat(self._path(relpath), follow_symlinks=False)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return FileStat(st.st_size, st.st_mtime_ns, st.st_ino)

    def open(self, location: str) -> tuple[BinaryIO, FileStat]:
        return open_stored(location, follow=False)

    def temp(self) -> tuple[BinaryIO, str]:
        fd, path = tempfile.mkstemp(dir=os.path.join(self.root, "tmp"), prefix="file-")
        return os.fdopen(fd, "wb"), path

    def keep(self, temp_path: str, relpath: str) -> FileStat:
        target = self._path(relpath)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.chmod(temp_path, 0o644)
        os.replace(temp_path, target)
        found = self.stat(relpath)
        if found is None:
            raise OSError(f"{relpath} is gone from the cache")
        return found

    def drop(self, relpath: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._path(relpath))

    def touch(self, relpath: str) -> None:
        path = self._path(relpath)
        with contextlib.suppress(OSError):
            st = os.stat(path)
            os.utime(path, ns=(time.time_ns(), st.st_mtime_ns))  # the atime only

    def local_path(self, relpath: str) -> str | None:
        return self._path(relpath)


# -- downloads ------------------------------------------------------------------------------------
class Download:
    """One file fetched from the upstream into the store, read by every request that wants it
    while it is written (see the module's docstring)."""

    def __init__(
        self,
        cache: ProxyCache,
        relpath: str,
        url: str,
        sha256: str,
        size: int | None,
        limit: int,
    ) -> None:
        self.cache = cache
        self.relpath, self.url, self.sha256 = relpath, url, sha256
        self.size = size  # what the page says, or (once answered) the Content-Length
        self.limit = limit
        self.fh, self.path = cache.store.temp()
        self.written = 0
        self.finished = False
        self.kept: FileStat | None = None
        self.error: str | None = None
        self.upstream_status: int | None = None  # an answer other than 200
        self.mismatched = False  # the bytes were not the page's: not asked again for a while
        self.verified = False  # the whole matched the page's sha256
        self.cond = threading.Condition()
        self.started = threading.Event()  # the upstream answered (or failed to)
        self.finished_event = threading.Event()

    def run(self) -> None:
        try:
            self._fetch()
        except Exception as exc:  # a download thread must not die silently
            if not isinstance(exc, OSError):
                log.exception("proxy: download of %s failed", self.url)
            self._fail(str(exc) or type(exc).__name__)
        finally:
            with contextlib.suppress(OSError):
                self.fh.close()
            if self.kept is None:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            with self.cond:
                self.finished = True
                self.cond.notify_all()
            self.started.set()
            self.cache._finished(self)
            self.finished_event.set()

    def _fail(self, why: str) -> None:
        with self.cond:
            if self.error is None:
                self.error = why

    def _fetch(self) -> None:
        resp = self.cache.fetcher.stream(self.url)
        try:
            status = int(resp.status)
            if status != 200:
                self.upstream_status = status
                self._fail(f"the upstream answered {status}")
                return
            declared = resp.headers.get("Content-Length")
            length = int(declared) if declared and declared.isdigit() else None
            if self.size is not None and length is not None and length != self.size:
                self._fail(f"the upstream's size {length} is not the page's {self.size}")
                return
            total = self.size if self.size is not None else length
            if total is not None and total > self.limit:
                self._fail(f"{total} bytes is more than a proxied file may have ({self.limit})")
                return
            with self.cond:
                self.size = total
            self.started.set()
            digest = hashlib.sha256()
            bound = total if total is not None else self.limit
            while True:
                try:  # what has arrived, up to a chunk: followers need not wait for more
                    chunk = resp.read1(CHUNK) if hasattr(resp, "read1") else resp.read(CHUNK)
                except (OSError, ValueError, http.client.HTTPException) as exc:
                    raise OSError(f"the upstream stopped sending: {exc}") from None
                if not chunk:
                    break
                if self.written + len(chunk) > bound:
                    self._fail(f"the upstream sent more than {bound} bytes")
                    return
                self.fh.write(chunk)
                self.fh.flush()
                digest.update(chunk)
                with self.cond:
                    self.written += len(chunk)
                    self.cond.notify_all()
                self.cache.hooks.fetched(len(chunk))
            if total is not None and self.written != total:
                self._fail(f"the upstream sent {self.written} of {total} bytes")
                return
            if digest.hexdigest() != self.sha256:
                log.warning(
                    "proxy: %s does not have the sha256 its upstream page lists; not kept",
                    self.url,
                )
                self.mismatched = True
                self._fail("the file's sha256 is not the one the upstream's page lists")
                return
            os.fsync(self.fh.fileno())
            self.fh.close()
            try:
                most = self.cache.max_bytes
                if most is not None and self.written > most:
                    raise OSError(f"{self.written} bytes is more than --proxy-cache-size")
                kept = self.cache.store.keep(self.path, self.relpath)
            except OSError as exc:
                # The bytes are the page's: every request reading them gets them whole; the
                # cache just does not keep them this time (a bucket away, a full disk).
                log.warning("proxy: %s verified but not kept in the cache: %s", self.relpath, exc)
                with self.cond:
                    self.verified = True
                    self.error = f"verified, but the cache cannot keep it now: {exc}"
                    self.cond.notify_all()
                return
            self.cache._kept(self.relpath, kept.st_size)  # counted before anyone sees it whole
            with self.cond:
                self.kept = kept
                self.verified = True
                self.size = self.written
                self.cond.notify_all()
        finally:
            resp.close()

    def reader(self) -> _Follower | None:
        """The bytes as they arrive, or None when the download is over (kept: serve it from
        the store; failed: ``error`` says why). Opened here, while the temporary file exists:
        an open file keeps its bytes through the rename that keeps it, or its removal."""
        with self.cond:
            if self.finished:
                return None
            try:
                fh = open(self.path, "rb")  # (closed with the _Follower)
            except OSError:
                return None
        return _Follower(self, fh)

    def _follow(self, fh: BinaryIO) -> Iterator[bytes]:
        pos = 0
        try:
            while True:
                with self.cond:
                    while True:
                        done = self.finished
                        # All but the last byte until the whole is verified.
                        ready = self.written if self.verified else self.written - 1
                        if ready > pos or done:
                            break
                        self.cond.wait(FILE_STALL)
                    if self.error is not None and not self.verified:
                        return  # short: the client sees an incomplete body
                if ready <= pos:
                    return
                while pos < ready:
                    chunk = fh.read(min(CHUNK, ready - pos))
                    if not chunk:
                        return
                    pos += len(chunk)
                    yield chunk
        finally:
            fh.close()


class _Follower:
    """A response body that follows a download; closing it closes its file, also when it was
    never iterated (a generator's ``finally`` would not run then)."""

    def __init__(self, job: Download, fh: BinaryIO) -> None:
        self.job, self.fh = job, fh

    def __iter__(self) -> Iterator[bytes]:
        return self.job._follow(self.fh)

    def close(self) -> None:
        self.fh.close()


# -- the cache ------------------------------------------------------------------------------------
class Hooks(NamedTuple):
    """What the cache reports (pkgserver.observe counts it)."""

    event: Callable[[str, str], None] = lambda what, outcome: None
    fetched: Callable[[int], None] = lambda n: None
    evicted: Callable[[int], None] = lambda n: None


class ProxyCache:
    """Pages and files of an upstream index, cached in ``store`` (see the module docstring)."""

    def __init__(
        self,
        store: ProxyStore,
        upstream: str,
        *,
        ttl: float = DEFAULT_TTL,
        offline: bool = False,
        max_bytes: int | None = None,
        fetcher: Fetcher | None = None,
        hooks: Hooks | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.upstream = upstream if upstream.endswith("/") else upstream + "/"
        self.ttl = ttl
        self.offline = offline
        self.max_bytes = max_bytes
        self.fetcher = fetcher or Fetcher()
        self.hooks = hooks or Hooks()
        self.clock = clock
        self._lock = threading.Lock()
        self._pages: collections.OrderedDict[str, UpstreamPage] = collections.OrderedDict()
        self._entries = 0  # files of the pages in memory
        self._renderings: dict[tuple[str, str, str | None], tuple[UpstreamPage, RenderCache]] = {}
        self._budget = RenderBudget()  # the renderings' bytes, apart from the hosted ones
        self._page_locks: dict[str, threading.Lock] = {}
        self._downloads: dict[str, Download] = {}
        self._touched: dict[str, float] = {}  # relpath -> when the store last noted a use
        self._described: dict[str, DistFile] = {}  # relpath -> the cached file, as last stat'ed
        self._absent: dict[str, float] = {}  # name -> when the upstream said it has none
        self._refused: dict[str, float] = {}  # relpath -> when its bytes did not match
        # Cached files, least recently used first: relpath -> size.
        self._lru: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._bytes = 0
        self._names = set(store.page_names())
        for relpath, size, _used in sorted(store.files(), key=lambda t: t[2]):
            self._lru[relpath] = size
            self._bytes += size

    # -- what is cached --------------------------------------------------------------------------
    @property
    def cached_bytes(self) -> int:
        return self._bytes

    @property
    def cached_files(self) -> int:
        return len(self._lru)

    def names(self) -> list[str]:
        """The projects with a cached page, sorted."""
        with self._lock:
            return sorted(self._names)

    def cached_names(self, name: str) -> set[str]:
        """The filenames of ``name`` the cache holds (as this process knows them)."""
        prefix = name + "/"
        with self._lock:
            return {r[len(prefix) :] for r in self._lru if r.startswith(prefix)}

    def is_cached(self, name: str) -> bool:
        """Whether the upstream's page of ``name`` is in the store (asked there: another
        process may have dropped it, pkgserver mirror --forget)."""
        return self.store.read_page(name) is not None

    def forget(self, name: str) -> bool:
        """Drop a project's page and files from the cache."""
        with self._lock:
            self._pages.pop(name, None)
            self._names.discard(name)
            for key in [k for k in self._renderings if k[0] == name]:
                del self._renderings[key]
            for relpath in [r for r in self._lru if r.startswith(name + "/")]:
                self._unlist(relpath)
        return self.store.drop_page(name)

    # -- pages -----------------------------------------------------------------------------------
    def known(self, name: str) -> UpstreamPage | None:
        """The page if it is in memory, however old (no I/O: the fast path)."""
        return self._pages.get(name)

    def fresh(self, name: str) -> UpstreamPage | None:
        """The page if it is in memory and fresh (no I/O: the fast path): younger than the
        TTL, or than the upstream's own max-age when that is longer (up to a day). The TTL is
        how often at most the upstream is asked again."""
        page = self._pages.get(name)
        if page is None:
            return None
        if not self.offline and self.clock() - page.fetched >= max(self.ttl, page.max_age):
            return None
        return page

    def rendering(
        self, page: UpstreamPage, media: str, hash_algo: str | None
    ) -> tuple[Rendered, RenderCache]:
        """The page rendered (pkgserver.render.render_proxied), kept while the page is and the
        proxy's render budget allows, and the cache its gzip variant goes in (key "page")."""
        key = (page.name, media, hash_algo)
        found = self._renderings.get(key)
        if found is not None and found[0] is page:
            rendered = found[1].get("page")
            if rendered is not None:
                return rendered, found[1]
        rendered = render_proxied(page, media, hash_algo)
        cache = RenderCache(self._budget)
        cache["page"] = rendered
        with self._lock:
            if len(self._renderings) > PAGES_KEPT * 2:
                self._renderings.clear()
            self._renderings[key] = (page, cache)
        return rendered, cache

    def _remember(self, page: UpstreamPage) -> None:
        """Keep the page in memory: at most PAGES_KEPT pages and ENTRIES_KEPT files of them
        together (a page may list 200,000), the least recently fetched going first."""
        with self._lock:
            before = self._pages.pop(page.name, None)
            if before is not None:
                self._entries -= len(before.files)
            self._pages[page.name] = page
            self._entries += len(page.files)
            self._names.add(page.name)
            while len(self._pages) > 1 and (
                len(self._pages) > PAGES_KEPT or self._entries > ENTRIES_KEPT
            ):
                _, gone = self._pages.popitem(last=False)
                self._entries -= len(gone.files)

    def _stored(self, name: str) -> UpstreamPage | None:
        data = self.store.read_page(name)
        if data is None:
            return None
        try:
            return UpstreamPage.from_json(data, name)
        except UpstreamPageError as exc:
            log.warning("proxy: cached page of %s is unusable (%s); fetched again", name, exc)
            return None

    def page(self, name: str, *, revalidate: bool = True, count: bool = True) -> UpstreamPage:
        """The upstream's page of the normalized ``name``. ``revalidate=False``: any cached
        page, however old (a file's download only needs the hash it was listed with).
        Raises UpstreamGone, UpstreamDown, NotCached."""
        page = self._pages.get(name)
        if page is not None and (not revalidate or self.fresh(name) is not None):
            self._hit(count)
            return page
        # Also with a page in memory (past its TTL here): the 404 came after it.
        absent = self._absent.get(name)
        if absent is not None and self.clock() - absent < min(ABSENT_FOR, self.ttl):
            self.hooks.event("page", "miss")
            raise UpstreamGone(f"{name} is not on the upstream index either (asked lately)")
        with self._lock:
            if len(self._page_locks) > 10_000:  # (a lock in use stays with its holders)
                self._page_locks.clear()
            lock = self._page_locks.setdefault(name, threading.Lock())
        with lock:  # one request asks the upstream; the others then take its answer
            page = self._pages.get(name)
            if page is not None and (not revalidate or self.fresh(name) is not None):
                self._hit(count)
                return page
            if page is None:
                page = self._stored(name)
                if page is not None:
                    self._remember(page)
                    if not revalidate or self.fresh(name) is not None:
                        self._hit(count)
                        return page
            if self.offline:
                if page is None:
                    self.hooks.event("page", "refused")
                    raise NotCached(f"{name} is not in the cache (--proxy-offline)")
                self._hit(count)
                return page
            return self._ask(name, page)

    def _hit(self, count: bool) -> None:
        if count:
            self.hooks.event("page", "hit")

    def _ask(self, name: str, cached: UpstreamPage | None) -> UpstreamPage:
        url = self.upstream + quote(name) + "/"
        headers = {"Accept": ACCEPT}
        if cached is not None and cached.etag:
            headers["If-None-Match"] = cached.etag
        if cached is not None and cached.last_modified:
            headers["If-Modified-Since"] = cached.last_modified
        now = self.clock()
        try:
            answer = self.fetcher.get(url, headers, MAX_PAGE)
        except OSError as exc:
            return self._stale(name, cached, str(exc))
        if answer.status == 304 and cached is not None:
            page = cached._replace(fetched=now)
            if answer.headers.get("Cache-Control"):
                page = page._replace(max_age=max_age_of(answer.headers.get("Cache-Control")))
            self._keep(page)
            self.hooks.event("page", "revalidated")
            return page
        if answer.status in (404, 410):
            with self._lock:
                _put(self._absent, name, now, 10_000)
            self.hooks.event("page", "miss")
            raise UpstreamGone(f"{name} is not on the upstream index either ({answer.status})")
        if answer.status != 200:
            return self._stale(name, cached, f"the upstream answered {answer.status}")
        try:
            page = parse_page(
                answer.body, answer.headers.get("Content-Type") or "", answer.url, name, now
            )
        except UpstreamPageError as exc:
            return self._stale(name, cached, str(exc))
        etag = answer.headers.get("ETag")
        modified = answer.headers.get("Last-Modified")
        page = page._replace(
            etag=etag if etag and len(etag) < 256 else None,
            last_modified=modified if modified and len(modified) < 64 else None,
            max_age=max_age_of(answer.headers.get("Cache-Control")),
        )
        self._keep(page)
        self.hooks.fetched(len(answer.body))
        self.hooks.event("page", "miss" if cached is None else "revalidated")
        return page

    def _keep(self, page: UpstreamPage) -> None:
        self._remember(page)
        try:
            self.store.write_page(page.name, page.to_json())
        except OSError as exc:
            log.warning("proxy: cannot keep the page of %s in the cache: %s", page.name, exc)

    def _stale(self, name: str, cached: UpstreamPage | None, why: str) -> UpstreamPage:
        if cached is None:
            self.hooks.event("page", "error")
            raise UpstreamDown(
                f"the upstream index cannot be read now ({why}) and {name} is not cached"
            )
        log.warning("proxy: serving the cached page of %s: the upstream failed (%s)", name, why)
        self.hooks.event("page", "stale")
        # Asked again at the next TTL, not at every request while the upstream is away.
        self._remember(cached._replace(fetched=self.clock()))
        return cached

    # -- files -----------------------------------------------------------------------------------
    def entry(self, name: str, filename: str) -> UpstreamFile:
        """The page's entry for a file, from the cached page (asked again if the file is not
        on it: it may be new). Raises UpstreamGone, UpstreamDown, NotCached."""
        page = self.page(name, revalidate=False, count=False)  # (a file's request, not a page's)
        found = page.file(filename)
        if found is None and not self.offline and self.fresh(name) is None:
            found = self.page(name).file(filename)
        if found is None:
            raise UpstreamGone(f"{filename} is not on the upstream's page of {name}")
        return found

    def cached(
        self, relpath: str, sha256: str, project: str, *, remembered: bool = False
    ) -> DistFile | None:
        """The cached file as a DistFile (for pkgserver.answers), if it is in the store.
        ``remembered``: the one described last time, without asking the store (the fast path,
        whose read checks size and mtime and hash anyway, and leaves any doubt to the route)."""
        if remembered:
            known = self._described.get(relpath)
            if known is not None and known.sha256 == sha256:
                try:
                    self._lru.move_to_end(relpath)  # (one OrderedDict step: atomic)
                except KeyError:
                    return None  # evicted meanwhile
                return known
        st = self.store.stat(relpath)
        if st is None:
            with self._lock:
                self._unlist(relpath)
            return None
        f = dist_file(self.store.where, relpath, project, sha256, st)
        with self._lock:
            if relpath in self._lru:
                self._lru.move_to_end(relpath)
            else:
                self._lru[relpath] = st.st_size
                self._bytes += st.st_size
            _put(self._described, relpath, f, 100_000)
        return f

    def drop(self, relpath: str) -> None:
        """A cached file that is not what was verified (changed in the store): out."""
        log.warning("proxy: cached %s is not the file verified; dropped from the cache", relpath)
        with self._lock:
            self._unlist(relpath)
        self.store.drop(relpath)

    def used(self, relpath: str) -> None:
        """A cached file was served: the store notes it (the order of eviction after a
        restart), at most once a minute per file."""
        now = time.monotonic()
        if now - self._touched.get(relpath, -TOUCH_EVERY) < TOUCH_EVERY:
            return
        _put(self._touched, relpath, now, 100_000)
        self.store.touch(relpath)

    def download(self, relpath: str, url: str, sha256: str, size: int | None) -> Download:
        """The download of ``relpath``: the one in progress, or a new one, started."""
        with self._lock:
            running = self._downloads.get(relpath)
            if running is not None:
                return running
            if len(self._downloads) >= MAX_DOWNLOADS:
                raise TooManyDownloads(
                    f"{len(self._downloads)} files are being fetched from the upstream; "
                    "try again in a moment"
                )
            limit = MAX_FILE
            if relpath.endswith(".metadata"):
                limit = MAX_METADATA
            refused = self._refused.get(relpath)
            if refused is not None and time.monotonic() - refused < REFUSE_FOR:
                self.hooks.event(what_of(relpath), "error")
                raise UpstreamDown(
                    f"{relpath.rsplit('/', 1)[-1]} did not have the sha256 the upstream's page "
                    f"lists when fetched lately; not fetched again for {REFUSE_FOR:g}s"
                )
            job = Download(self, relpath, url, sha256, size, limit)
            self._downloads[relpath] = job
        threading.Thread(target=job.run, name="pkgserver-proxy-download", daemon=True).start()
        return job

    def _kept(self, relpath: str, size: int) -> None:
        """A verified file is in the store: the most recently used; older ones out if the
        cache is over its bound."""
        with self._lock:
            self._unlist(relpath)
            self._lru[relpath] = size
            self._bytes += size
        self.evict()

    def _finished(self, job: Download) -> None:
        with self._lock:
            self._downloads.pop(job.relpath, None)
            if job.mismatched:
                _put(self._refused, job.relpath, time.monotonic(), 10_000)
        if job.mismatched:
            self.hooks.event(what_of(job.relpath), "rejected")

    def _unlist(self, relpath: str) -> None:
        """A file out of the cache's accounts (the lock held): its size, its description."""
        size = self._lru.pop(relpath, None)
        if size is not None:
            self._bytes -= size
        self._described.pop(relpath, None)

    def evict(self) -> int:
        """Least recently used files out until the cache is within its bound; how many."""
        if self.max_bytes is None:
            return 0
        dropped = 0
        while True:
            with self._lock:
                if self._bytes <= self.max_bytes or not self._lru:
                    break
                victim = next(iter(self._lru))
                self._unlist(victim)
            self.store.drop(victim)
            dropped += 1
            log.info("proxy: evicted %s from the cache (least recently used)", victim)
        if dropped:
            self.hooks.evicted(dropped)
        return dropped


def _put(table: dict[str, Any], key: str, value: Any, most: int) -> None:
    """``table[key] = value``, the table emptied first when it holds ``most`` entries (the
    memories keyed by names and paths that clients choose)."""
    if len(table) >= most:
        table.clear()
    table[key] = value


def what_of(relpath: str) -> str:
    """The metrics' name for what a cached path is."""
    return "metadata" if relpath.endswith(".metadata") else "file"


def dist_file(root: str, relpath: str, project: str, sha256: str, st: FileStat) -> DistFile:
    """A cached file as the answers of pkgserver.answers take it."""
    filename = relpath.rsplit("/", 1)[-1]
    meta = filename.endswith(".metadata")
    try:
        info = parse_dist_filename(filename[: -len(".metadata")] if meta else filename)
        version, kind = info.version, info.kind
    except ValueError:
        version, kind = "", ""
    return DistFile(
        filename,
        relpath,
        root,
        project,
        version,
        kind,
        st.st_size,
        st.st_mtime_ns,
        st.st_ino,
        sha256,
        (),
        None,
        None,
        None,
        None,
    )
