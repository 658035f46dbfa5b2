"""HTTP answers shared by the routes (api.py, pages.py) and the fast path (app.py).

What a response is made of (headers of a file, a cached page with ETag and gzip, a byte range,
a typed error as plain text) is written once here, so the routes and the fast path that answers
the most frequent requests without bottle's objects cannot drift apart.
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import io
import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from typing import IO, Any, BinaryIO, overload

import bottle

from . import render
from .catalog import DistFile, FileStat, Project, RenderCache
from .errors import BadRequest, HTTPProblem, NotFound, Unavailable
from .metadata import CoreMetadata
from .storage import StoreUnavailable

__all__ = [
    "FOREVER",
    "LARGE_PAGE",
    "NO_STORE",
    "REVALIDATE",
    "SMALL_FILE",
    "Answer",
    "as_response",
    "file_headers",
    "guarded",
    "header",
    "page_answer",
    "problem",
    "project_page",
    "revalidated_file",
    "send_file",
    "send_metadata",
    "send_signature",
    "small_file",
]

_CONTENT_TYPES = (
    (".whl", "application/octet-stream"),
    (".tar.gz", "application/x-tar"),  # never Content-Encoding: gzip, or clients unpack it
    (".tgz", "application/x-tar"),
    (".tar.bz2", "application/x-tar"),
    (".zip", "application/zip"),
    (".egg", "application/zip"),
)
_RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})")  # fullmatch
_FILE_CHUNK = 256 * 1024
SMALL_FILE = 256 * 1024  # files up to this size are read into memory and sent as bytes


LARGE_PAGE = 128 * 1024  # rendered pages above this are sent as files (see send_rendered)

# How long an answer may be reused (README "Caching"). Pages change with every upload: a client
# may keep one but must ask again (If-None-Match, answered 304) before each use. A file that can
# never change under its name may be kept for a year without asking. Redirects to the fallback
# index and errors are never kept: either may be wrong a minute later.
REVALIDATE = "max-age=0, must-revalidate"
FOREVER = "public, max-age=31536000, immutable"
NO_STORE = "no-store"


@functools.lru_cache(maxsize=65536)
def http_date(seconds: int) -> str:
    return email.utils.formatdate(seconds, usegmt=True)


def header(name: str) -> str | None:
    """A request header as the server received it (latin-1, per PEP 3333). Unlike bottle's
    get_header, which decodes as UTF-8 and raises on other bytes, this never fails."""
    key = name.upper().replace("-", "_")
    if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        key = "HTTP_" + key
    value = bottle.request.environ.get(key)
    return value if isinstance(value, str) else None


def content_type(filename: str) -> str:
    lower = filename.lower()
    for ext, ctype in _CONTENT_TYPES:
        if lower.endswith(ext):
            return ctype
    return "application/octet-stream"


def reason(message: str) -> str:
    """A message made safe for the HTTP reason phrase (one latin-1 line)."""
    line = " ".join(message.split())[:200]
    return line.encode("latin-1", "replace").decode("latin-1")


def etag_matches(value: str | None, etag: str) -> bool:
    if not value:
        return False
    if value.strip() == "*":
        return True
    bare = etag.strip('"')
    for candidate in value.split(","):
        candidate = candidate.strip()
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate.strip('"') == bare:
            return True
    return False


class RangeFile:
    """Iterates over ``length`` bytes of an open file from ``offset``, then closes it."""

    def __init__(self, fh: IO[bytes], offset: int, length: int) -> None:
        self.fh, self.left = fh, length
        fh.seek(offset)

    def __iter__(self) -> Iterator[bytes]:
        try:
            while self.left > 0:
                chunk = self.fh.read(min(_FILE_CHUNK, self.left))
                if not chunk:
                    break
                self.left -= len(chunk)
                yield chunk
        finally:
            self.fh.close()

    def close(self) -> None:
        self.fh.close()


def intact(body: bytes, f: DistFile) -> bool:
    """Whether the bytes read are the ones listed: a file rewritten in place keeps its size
    and, within the clock's granularity, its mtime, so only the hash can tell."""
    return hashlib.sha256(body).hexdigest() == f.sha256


class HashedFile:
    """A file to stream, with the sha256 its whole content must have (``expected_sha256``,
    which pkgserver's file wrapper checks before it sends the last bytes) and what to call
    when it does not (``on_mismatch``: have the indexer hash the file again)."""

    def __init__(
        self, fh: BinaryIO, expected_sha256: str, on_mismatch: Callable[[], None] | None
    ) -> None:
        self.expected_sha256 = expected_sha256
        self.on_mismatch = on_mismatch
        self.read = fh.read
        self.seek = fh.seek
        self.tell = fh.tell
        self.fileno = fh.fileno
        self.close = fh.close

    def seekable(self) -> bool:
        return True


def format_param() -> str | None:
    value = bottle.request.query.getunicode("format")
    # ?format=application/vnd.pypi.simple.v1+json typed by hand: query decoding made "+" a space.
    return value.replace(" ", "+") if value else None


def page_answer(
    page: render.Rendered,
    cache: RenderCache | None,
    key: Any,
    accept_encoding: str | None,
    if_none_match: str | None,
) -> tuple[int, list[tuple[str, str]], bytes]:
    """A cached rendering, gzipped when the client accepts it (pip and uv do), with ETag and
    304 revalidation. Shared by the bottle routes and the fast path."""
    encoding = None
    if cache is not None and render.accepts_gzip(accept_encoding):
        variant = render.gzipped(cache, key, page)
        if variant is not None:
            page, encoding = variant, "gzip"
    headers = [
        (
            "Content-Type",
            page.content_type + ("; charset=utf-8" if "html" in page.content_type else ""),
        ),
        ("ETag", page.etag),
        ("Vary", "Accept, Accept-Encoding"),
        ("Cache-Control", REVALIDATE),
    ]
    if encoding:
        headers.append(("Content-Encoding", encoding))
    if etag_matches(if_none_match, page.etag):
        # RFC 9110: a 304 carries the validators and caching headers, not the content's. No
        # Content-Length: waitress would take it for a body it did not get, log a warning and
        # close the connection (pkgserver.server keeps 304 connections open).
        kept = [h for h in headers if h[0] not in ("Content-Type", "Content-Encoding")]
        return 304, kept, b""
    return 200, headers, page.body


CONDITIONAL_KEYS = ("HTTP_RANGE", "HTTP_IF_MODIFIED_SINCE", "HTTP_IF_RANGE")


def file_headers(
    f: DistFile, mtime: float, length: int | None = None, cache_control: str | None = None
) -> list[tuple[str, str]]:
    headers = [
        ("Content-Type", content_type(f.filename)),
        ("Last-Modified", http_date(int(mtime))),
        ("Accept-Ranges", "bytes"),
        ("ETag", f'"{f.sha256}"'),
        # A browser must not take an uploaded "wheel" for HTML (or script) and run it.
        ("X-Content-Type-Options", "nosniff"),
    ]
    if cache_control:
        headers.append(("Cache-Control", cache_control))
    if length is not None:
        headers.append(("Content-Length", str(length)))
    return headers


def not_modified_since(mtime: float) -> bool:
    ims = header("If-Modified-Since")
    if not ims:
        return False
    parsed = bottle.parse_date(ims.split(";")[0].strip())
    return parsed is not None and parsed >= int(mtime)


def if_range_ok(value: str | None, etag: str | None, mtime: float) -> bool:
    if not value:
        return True
    value = value.strip()
    if value.startswith('"') or value.startswith("W/"):
        return etag is not None and value == etag
    parsed = bottle.parse_date(value)
    return parsed is not None and parsed >= int(mtime)


def parse_range(value: str | None, size: int) -> tuple[int, int] | str | None:
    """One byte range -> (start, end inclusive); "unsatisfiable"; None to send everything."""
    if not value:
        return None
    m = _RANGE.fullmatch(value.strip())
    if not m:
        return None  # several ranges or another unit: a full 200 is a valid answer
    first, last = m.groups()
    if not first and not last:
        return None
    if not first:
        length = int(last)
        if length == 0:
            return "unsatisfiable"
        return max(0, size - length), size - 1
    start = int(first)
    if start >= size:
        return "unsatisfiable"
    end = int(last) if last else size - 1
    if end < start:
        return None
    return start, min(end, size - 1)


Answer = tuple[int, list[tuple[str, str]], bytes]
STATUS_LINES = {200: "200 OK", 304: "304 Not Modified"}


# -- errors ---------------------------------------------------------------------------------------
def problem(exc: HTTPProblem) -> bottle.HTTPResponse:
    """A typed error as a plain-text answer (or JSON, for the errors whose clients read JSON):
    every route's failures end here."""
    document = exc.json_body()
    if document is None:
        body, media = exc.message + "\n", "text/plain; charset=utf-8"
    else:
        body, media = json.dumps(document) + "\n", "application/json"
    res = bottle.HTTPResponse(body, status=f"{exc.status} {reason(exc.message)}")
    res.set_header("Content-Type", media)
    # Messages echo what the client sent: never let a browser take them for HTML.
    res.set_header("X-Content-Type-Options", "nosniff")
    res.set_header("Vary", "Accept")
    # An error is true now, not later: a project not found may be uploaded in a minute.
    res.set_header("Cache-Control", NO_STORE)
    for key, value in exc.headers.items():
        res.set_header(key, value)
    return res


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A route whose HTTPProblem (and undecodable input) become their plain-text answer."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HTTPProblem as exc:
            return problem(exc)
        except UnicodeError:
            # Bytes in the query or a header that are not what they claim to be.
            return problem(BadRequest("malformed request (invalid UTF-8)"))

    wrapper.__name__ = fn.__name__
    return wrapper


def plain_error(error: bottle.HTTPError) -> str:
    """bottle's own errors (no route, wrong method, too large) as plain text."""
    bottle.response.content_type = "text/plain; charset=utf-8"
    bottle.response.set_header("X-Content-Type-Options", "nosniff")
    bottle.response.set_header("Cache-Control", NO_STORE)
    return f"{error.status_line}\n"


# -- pages ----------------------------------------------------------------------------------------
@overload
def project_page(
    project: Project,
    media: str,
    hash_algo: str | None,
    accept_encoding: str | None,
    if_none_match: str | None,
    base_url: str = ...,
) -> Answer: ...


@overload
def project_page(
    project: Project,
    media: str,
    hash_algo: str | None,
    accept_encoding: str | None,
    if_none_match: str | None,
    base_url: str = ...,
    *,
    max_size: int,
) -> Answer | None: ...


def project_page(
    project: Project,
    media: str,
    hash_algo: str | None,
    accept_encoding: str | None,
    if_none_match: str | None,
    base_url: str = "/",
    *,
    max_size: int | None = None,
) -> Answer | None:
    """/simple/<project>/ in ``media``, from the project's cached renderings; None when the
    page is larger than ``max_size``. ``base_url``: the app's absolute URL, which the
    provenance URLs (PEP 740) start with."""
    page = render.render_project(project, media, hash_algo, base_url)
    if max_size is not None and len(page.body) > max_size:
        return None
    key = render.project_key(project, media, hash_algo, base_url)
    # (a page for one base URL too many was not cached, nor is its gzip variant then)
    cache = project.cache if key in project.cache else None
    return page_answer(page, cache, key, accept_encoding, if_none_match)


def as_response(answer: Answer) -> bottle.HTTPResponse:
    """An answer for bottle; a large body goes out as a file: waitress copies a bytes body
    into a buffer per connection, a file is sent from in place, a socket buffer at a time
    (BytesIO shares the cached bytes, no copy)."""
    status, headers, body = answer
    if len(body) > LARGE_PAGE:
        return bottle.HTTPResponse(
            io.BytesIO(body), status=status, headers=[*headers, ("Content-Length", str(len(body)))]
        )
    return bottle.HTTPResponse(body, status=status, headers=headers)


# -- files ----------------------------------------------------------------------------------------
def revalidated_file(f: DistFile, cache_control: str | None) -> Answer | None:
    """The 304 for a file whose ETag the client holds (pip's HTTP cache), from the catalog and
    one stat; None when the file on disk is not the one listed."""
    try:
        st = os.stat(f.path)
    except OSError:
        return None
    if not f.matches(st):
        return None
    # As bottle's 304s (the routes'): RFC 9110 wants no representation metadata beyond the
    # validator and caching fields, so neither Content-Type nor Last-Modified (the ETag is).
    kept = file_headers(f, st.st_mtime, cache_control=cache_control)
    return 304, [h for h in kept if h[0] not in ("Content-Type", "Last-Modified")], b""


def read_small_file(f: DistFile) -> tuple[bytes, os.stat_result] | None:
    """The whole of a small listed file, or None when it is not what the catalog says (gone,
    not a regular file, another size, mtime or hash: the caller has the indexer look again).

    Non-blocking, regular files only: a FIFO swapped in for a listed file must not hang a
    worker thread. os.open rather than open(): no buffer object, no isatty() call (a fifth of
    the time a small download held the GIL went into open())."""
    try:
        fd = os.open(f.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or not f.matches(st):
                return None
            body = os.read(fd, f.size + 1)  # one read: the file is small
        finally:
            os.close(fd)
    except OSError:
        return None
    if len(body) != f.size or not intact(body, f):
        return None
    return body, st


def small_file(f: DistFile, cache_control: str | None) -> Answer | None:
    """A whole small file with its headers, or None (see read_small_file)."""
    found = read_small_file(f)
    if found is None:
        return None
    body, st = found
    return 200, file_headers(f, st.st_mtime, len(body), cache_control), body


def send_file(
    f: DistFile,
    *,
    opener: Callable[[str], tuple[BinaryIO, FileStat]],
    cache_control: str | None,
    on_stale: Callable[[str], None] | None,
) -> bottle.HTTPResponse:
    """A listed file, with conditional requests and one byte range, as the current request
    asks; 404 when the bytes stored are not the ones listed. ``opener``: Storage.open."""
    try:
        fh, st = opener(f.path)
    except StoreUnavailable as exc:
        raise Unavailable(f"{exc.strerror}, try again later") from None
    except OSError:
        raise NotFound("file is gone") from None
    if not f.matches(st):
        # Changed behind the catalog's back (through a hard link, say): never serve bytes
        # under a hash they do not have. The indexer looks again at once.
        fh.close()
        if on_stale is not None:
            on_stale(f.path)
        raise NotFound("this file changed on disk; the index is catching up, try again")
    etag = f'"{f.sha256}"'
    size = st.st_size
    headers = dict(file_headers(f, st.st_mtime, cache_control=cache_control))
    inm = header("If-None-Match")
    if (etag and etag_matches(inm, etag)) or (not inm and not_modified_since(st.st_mtime)):
        fh.close()
        return bottle.HTTPResponse(status=304, **headers)
    rng = parse_range(header("Range"), size)
    if rng is not None and not if_range_ok(header("If-Range"), etag, st.st_mtime):
        rng = None
    if rng == "unsatisfiable":
        fh.close()
        headers["Content-Range"] = f"bytes */{size}"
        headers["Cache-Control"] = NO_STORE  # an error, not the file
        return bottle.HTTPResponse(status=416, **headers)
    if isinstance(rng, tuple):
        start, end = rng
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Length"] = str(end - start + 1)
        return bottle.HTTPResponse(RangeFile(fh, start, end - start + 1), status=206, **headers)
    headers["Content-Length"] = str(size)
    if bottle.request.method == "HEAD":
        fh.close()
        return bottle.HTTPResponse(b"", **headers)
    if size <= SMALL_FILE:
        # Most wheels are small: one read beats handing waitress a file wrapper.
        with fh:
            body = fh.read(size + 1)
        if len(body) != size or not intact(body, f):
            if on_stale is not None:
                on_stale(f.path)  # same size and mtime, other bytes: hash it again
            raise NotFound("this file changed on disk; the index is catching up, try again")
        return bottle.HTTPResponse(body, **headers)
    # Streamed by the server's file wrapper, which (under pkgserver's waitress) hashes what
    # it sends and withholds the last bytes unless the whole matches ``f.sha256``.
    on_mismatch = (lambda: on_stale(f.path)) if on_stale is not None else None
    return bottle.HTTPResponse(HashedFile(fh, f.sha256, on_mismatch), **headers)


def send_signature(data: bytes | None, cache_control: str | None) -> bottle.HTTPResponse:
    """The detached signature uploaded with a file (twine --sign), as Storage.signature read
    it; cached as the file it signs is (``cache_control``), revalidated by its sha256."""
    if data is None:
        raise NotFound("no signature for this file")
    return _small_body(
        data, "application/pgp-signature", f'"{hashlib.sha256(data).hexdigest()}"', cache_control
    )


PROVENANCE_TYPE = "application/vnd.pypi.integrity.v1+json"


def send_provenance(f: DistFile, data: bytes | None) -> bottle.HTTPResponse:
    """A file's PEP 740 provenance object, as Storage.provenance read it, if it is still the
    one the index listed with the file."""
    if data is None or hashlib.sha256(data).hexdigest() != f.provenance_sha256:
        raise NotFound("no provenance for this file (it changed; the index is catching up)")
    # Revalidated as the pages that link it: an --overwrite changes or removes it.
    return _small_body(data, PROVENANCE_TYPE, f'"{f.provenance_sha256}"', REVALIDATE)


def send_metadata(
    f: DistFile, meta: CoreMetadata | None, cache_control: str | None
) -> bottle.HTTPResponse:
    """The file's core metadata (PEP 658), if it still hashes to what the index lists; cached
    as the file it comes from is (``cache_control``)."""
    if meta is None or not meta.servable:
        raise NotFound("no core metadata for this file")
    digest = hashlib.sha256(meta.raw).hexdigest()
    if digest != f.metadata_sha256:
        raise NotFound("core metadata changed; try again")
    return _small_body(meta.raw, "text/plain; charset=utf-8", f'"{digest}"', cache_control)


def _small_body(
    body: bytes, ctype: str, etag: str, cache_control: str | None
) -> bottle.HTTPResponse:
    """A file's small companion (metadata, signature, provenance) with its ETag, and 304 for
    it."""
    headers = {"Content-Type": ctype, "ETag": etag, "X-Content-Type-Options": "nosniff"}
    if cache_control:
        headers["Cache-Control"] = cache_control
    if etag_matches(header("If-None-Match"), etag):
        del headers["Content-Type"]
        return bottle.HTTPResponse(status=304, **headers)
    return bottle.HTTPResponse(body, **headers)
