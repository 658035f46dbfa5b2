"""The WSGI application: thin routes that normalize, look up and serialize.

Only this module imports bottle. Errors are typed (errors.py) and turned into responses in one
place (``_problem``). Redirects use relative ``Location`` values unless ``--server-base-url`` is
set, so the server works behind a path-prefix proxy and a spoofed ``Host`` cannot steer them.
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import io
import logging
import os
import posixpath
import re
import stat
import time
from collections.abc import Callable, Iterator
from typing import IO, Any, BinaryIO, NamedTuple
from urllib.parse import quote, urlencode, urlsplit

import bottle

from . import __version__, render, web, xmlrpc
from .auth import Authenticator
from .catalog import Catalog, DistFile, Project, RenderCache
from .config import Settings
from .distfile import is_prerelease, is_valid_project_name, normalize
from .errors import (
    BadRequest,
    Busy,
    Forbidden,
    HTTPProblem,
    NotAcceptable,
    NotFound,
    Unauthorized,
)
from .fsutil import confined, open_regular
from .hosted import HostedNames
from .metadata import CoreMetadata, Details, parse_details
from .observe import Observer
from .records import UploadLog
from .storage import MetadataStore
from .upload import Uploads

__all__ = ["create_app"]

log = logging.getLogger(__name__)

TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")
STATIC = os.path.join(os.path.dirname(__file__), "static")

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


@functools.lru_cache(maxsize=65536)
def _http_date(seconds: int) -> str:
    return email.utils.formatdate(seconds, usegmt=True)


def _header(name: str) -> str | None:
    """A request header as the server received it (latin-1, per PEP 3333). Unlike bottle's
    get_header, which decodes as UTF-8 and raises on other bytes, this never fails."""
    key = name.upper().replace("-", "_")
    if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        key = "HTTP_" + key
    value = bottle.request.environ.get(key)
    return value if isinstance(value, str) else None


def _content_type(filename: str) -> str:
    lower = filename.lower()
    for ext, ctype in _CONTENT_TYPES:
        if lower.endswith(ext):
            return ctype
    return "application/octet-stream"


def _reason(message: str) -> str:
    """A message made safe for the HTTP reason phrase (one latin-1 line)."""
    line = " ".join(message.split())[:200]
    return line.encode("latin-1", "replace").decode("latin-1")


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    bare = etag.strip('"')
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate.strip('"') == bare:
            return True
    return False


class Claimed(NamedTuple):
    """A project hosted here before, with no files now (see pkgserver.hosted)."""

    name: str


LARGE_PAGE = 128 * 1024  # rendered pages above this are sent as files (see send_rendered)
_STATUS = {200: "200 OK", 304: "304 Not Modified"}
Answer = tuple[int, list[tuple[str, str]], bytes]


class _App(bottle.Bottle):  # type: ignore[misc]
    """bottle drops bytes of the path that are not UTF-8 ('/simple/%ff' would become
    '/simple/'); refuse such paths before it sees them.

    ``fast`` answers the plainest, most frequent requests (a hosted project page, a small file)
    without bottle's request and response objects, or returns None to let the routes decide;
    see create_app.
    """

    fast: Callable[[dict[str, Any]], Answer | None] | None = None
    observer: Observer | None = None
    prefix = ""  # the path of --server-base-url: served there as well as at the root
    trust_proxy = False  # --trust-proxy: X-Forwarded-* say what the client asked for

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        observer = self.observer
        if observer is None:
            return self._answer(environ, start_response)
        started = time.perf_counter()
        box: list[Any] = [None, None]  # status, Content-Length
        try:
            return self._answer(environ, observer.wrap(start_response, box))
        finally:
            observer.done(environ, box, started)

    def _strip_prefix(self, environ: dict[str, Any]) -> None:
        """pypiserver serves --server-base-url's path as well as the root, so that a proxy
        that passes the prefix on (proxy_pass without a path) works as one that strips it.

        Under a /pypi prefix a path can mean two things (/pypi/<p>/<v>/json is also one of the
        root's routes): the prefix's reading wins when it names one of the index's own routes,
        else the root's when it does, else the prefix's (for the catch-all shortcuts)."""
        path = environ.get("PATH_INFO", "")
        if path != self.prefix and not path.startswith(self.prefix + "/"):
            return
        stripped = path[len(self.prefix) :] or "/"
        if path.rstrip("/") != self.prefix and not self._own_route(environ, stripped):
            if self._own_route(environ, path):
                return
        script = environ.get("SCRIPT_NAME", "")
        if not script.endswith(self.prefix):  # (--trust-proxy may have said so already)
            environ["SCRIPT_NAME"] = script + self.prefix
        environ["PATH_INFO"] = stripped

    def _own_route(self, environ: dict[str, Any], path: str) -> bool:
        """Whether ``path`` is one of the index's routes other than the catch-all shortcuts."""
        try:
            route, _ = self.router.match({**environ, "PATH_INFO": path})
        except bottle.HTTPError:
            return False
        return route.rule not in _CATCH_ALL_RULES

    def _answer(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        try:
            environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8")
        except UnicodeError:
            body = b"malformed request path (invalid UTF-8)\n"
            start_response(
                "400 Bad Request",
                [
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Length", str(len(body))),
                    ("X-Content-Type-Options", "nosniff"),
                ],
            )
            return [body]
        if self.trust_proxy:
            _apply_forwarded(environ)
        if self.prefix:
            self._strip_prefix(environ)
        if self.fast is not None:
            try:
                answer = self.fast(environ)
            except Exception:  # the routes know how to answer (or report) anything odd
                log.exception("fast path failed; answering through the routes")
                answer = None
            if answer is not None:
                status, headers, body = answer
                if status == 200 and not any(k == "Content-Length" for k, _ in headers):
                    headers = [*headers, ("Content-Length", str(len(body)))]
                if environ.get("REQUEST_METHOD") == "HEAD":
                    body = b""
                start_response(_STATUS[status], headers)
                return [body]
        # Forwarded headers are trusted from no one (waitress's clear_untrusted_proxy_headers,
        # done here for the routes only: its middleware walked the whole environ per request).
        for key in _PROXY_HEADERS:
            environ.pop(key, None)
        return super().wsgi(environ, start_response)


# Routes that take any first path segment: a path under the --server-base-url prefix that only
# they match is the prefix's, not theirs.
_CATCH_ALL_RULES = frozenset({"/<name>", "/<name>/", "/<name>/json"})
_FORWARDED_HOST = re.compile(r"[A-Za-z0-9.\-:\[\]]{1,255}")
_FORWARDED_PREFIX = re.compile(r"(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+){1,20}/?")


def _last(value: Any) -> str:
    """The last of a comma-separated header's values: the one the proxy nearest to us set
    (earlier ones may come from the client)."""
    return value.rsplit(",", 1)[-1].strip() if isinstance(value, str) else ""


def _apply_forwarded(environ: dict[str, Any]) -> None:
    """--trust-proxy: what the proxy says the client asked for (host, scheme, path prefix) and
    who the client is (for the log). Values that do not look right are ignored."""
    host, slash, path = _last(environ.pop("HTTP_X_FORWARDED_HOST", None)).partition("/")
    if _FORWARDED_HOST.fullmatch(host):
        environ["HTTP_HOST"] = host
        # pypiserver's nginx recipe puts the prefix there: X-Forwarded-Host $host:$port/pypi
        path = "/" + path.strip("/") if slash and path.strip("/") else ""
        if path and _FORWARDED_PREFIX.fullmatch(path) and ".." not in path.split("/"):
            environ["SCRIPT_NAME"] = path
    proto = _last(environ.pop("HTTP_X_FORWARDED_PROTO", None)).lower()
    if proto in ("http", "https"):
        environ["wsgi.url_scheme"] = proto
    prefix = _last(environ.pop("HTTP_X_FORWARDED_PREFIX", None))
    if _FORWARDED_PREFIX.fullmatch(prefix) and ".." not in prefix.split("/"):
        environ["SCRIPT_NAME"] = prefix.rstrip("/")
    client = _last(environ.pop("HTTP_X_FORWARDED_FOR", None))
    if client and len(client) <= 45 and all(c in "0123456789abcdefABCDEF.:" for c in client):
        environ["REMOTE_ADDR"] = client


_PROXY_HEADERS = tuple(
    "HTTP_" + name
    for name in (
        "FORWARDED",
        "X_FORWARDED_FOR",
        "X_FORWARDED_HOST",
        "X_FORWARDED_PREFIX",
        "X_FORWARDED_PROTO",
        "X_FORWARDED_PORT",
        "X_FORWARDED_BY",
    )
)


class _RangeFile:
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


def create_app(
    settings: Settings,
    catalog: Catalog,
    *,
    auth: Authenticator | None = None,
    metadata: MetadataStore | None = None,
    uploads: Uploads | None = None,
    on_stale: Callable[[str], None] | None = None,
    on_published: Callable[[DistFile], None] | None = None,
    hosted: HostedNames | None = None,
    upload_log: UploadLog | None = None,
    observer: Observer | None = None,
    ready: Callable[[], str | None] | None = None,
) -> bottle.Bottle:
    """Build the WSGI app. Everything it needs is passed in; nothing is global.

    ``ready()`` says what the server is still doing before it serves everything it found at
    start (None once it does); /health answers 503 until then."""
    app = _App()
    app.prefix = settings.base_path
    app.trust_proxy = settings.trust_proxy
    if observer is None:
        observer = Observer(catalog, health=settings.health_endpoint)
    app.observer = observer
    app.config["json.enable"] = False
    auth = auth or Authenticator(settings.password_file, settings.authenticate, settings.threads)
    metadata = metadata or MetadataStore()
    if uploads is None:
        extra = (
            [settings.hash_algo] if settings.hash_algo and settings.hash_algo != "sha256" else []
        )
        uploads = Uploads(
            settings.roots,
            catalog,
            overwrite=settings.overwrite,
            # A file the index would not list (--max-file-size) is not taken either.
            max_size=min(settings.max_upload_size, settings.file_size_limit),
            extra_algos=extra,
            on_published=on_published,
            upload_log=upload_log,
        )
    fallback = settings.fallback
    absolute = settings.absolute_base_url
    base_override = absolute.rstrip("/") + "/" if absolute else None
    welcome = (
        load_welcome(settings.welcome_file, counts_hidden="list" in settings.authenticate)
        if settings.welcome_file
        else None
    )
    welcome_failed = False
    templates = {
        name: bottle.SimpleTemplate(name=name, lookup=[TEMPLATES])
        for name in ("home", "projects", "project", "message")
    }
    assets = _Assets.load()

    real_roots = [os.path.realpath(r) for r in settings.roots]
    # --cache-control AGE (pypiserver's): on downloads, which never change under their name.
    file_cache = (
        f"public, max-age={settings.cache_control}" if settings.cache_control is not None else None
    )

    # -- helpers ------------------------------------------------------------------------------
    def require(action: str) -> str | None:
        try:
            user = auth.check(action, _header("Authorization"))
        except Unauthorized:
            observer.auth_failed("missing")
            raise
        except Forbidden:
            observer.auth_failed("invalid")
            raise
        except Busy:
            observer.auth_failed("shed")
            raise
        if user:
            bottle.request.environ["REMOTE_USER"] = user  # for the access log
        return user

    def base_url() -> str:
        """Absolute URL of the app root, for bodies that need absolute links."""
        if base_override:
            return base_override
        env = bottle.request.environ
        host = (
            env.get("HTTP_HOST")
            or f"{env.get('SERVER_NAME', 'localhost')}:{env.get('SERVER_PORT', '80')}"
        )
        if not re.fullmatch(r"[A-Za-z0-9.\-:\[\]]{1,255}", host):
            host = f"{env.get('SERVER_NAME', 'localhost')}:{env.get('SERVER_PORT', '80')}"
        scheme = "https" if env.get("wsgi.url_scheme") == "https" else "http"
        script = quote(env.get("SCRIPT_NAME", "").rstrip("/"))
        return f"{scheme}://{host}{script}/"

    def location(target: str) -> str:
        """Location header for an app-absolute ``target`` path."""
        if base_override:
            return base_override + quote(target.lstrip("/"), safe="/.-_~")
        current = bottle.request.path  # decoded, app-relative
        start = current if current.endswith("/") else posixpath.dirname(current)
        rel = posixpath.relpath(target, start or "/")
        if target.endswith("/") and rel != "/":
            rel = "./" if rel == "." else rel + "/"
        return quote(rel, safe="/.-_~")

    def redirect(target: str, status: int = 301) -> bottle.HTTPResponse:
        return bottle.HTTPResponse(status=status, Location=location(target), **{"Vary": "Accept"})

    def negotiated() -> str:
        media = render.negotiate(_header("Accept"), _format_param())
        if media is None:
            raise NotAcceptable(
                f"no acceptable content type: use text/html, {render.HTML_V1} or {render.JSON_V1}"
            )
        return media

    def send_rendered(
        page: render.Rendered, cache: RenderCache | None = None, key: Any = None
    ) -> bottle.HTTPResponse:
        status, headers, body = _page_answer(
            page, cache, key, _header("Accept-Encoding"), _header("If-None-Match")
        )
        if len(body) > LARGE_PAGE:
            # waitress copies a bytes body into a buffer per connection; a file is sent from in
            # place, a socket buffer at a time (BytesIO shares the cached bytes, no copy).
            return bottle.HTTPResponse(
                io.BytesIO(body),
                status=status,
                headers=[*headers, ("Content-Length", str(len(body)))],
            )
        return bottle.HTTPResponse(body, status=status, headers=headers)

    def hosted_or_redirect(raw_name: str) -> Any:
        """The hosted project, or a response (canonical redirect, fallback redirect)."""
        if not raw_name or len(raw_name) > 200:
            raise NotFound("no such project")
        name = normalize(raw_name)
        project = catalog.snapshot.project(name)
        if project is not None:
            if raw_name != name:
                return redirect(f"/simple/{name}/")
            return project
        if hosted is not None and name in hosted:
            # Hosted here before, all files gone since: claimed, never sent to the fallback,
            # where anyone may have published the name (dependency confusion).
            if raw_name != name:
                return redirect(f"/simple/{name}/")
            return Claimed(name)
        if fallback and is_valid_project_name(raw_name):
            # Straight to the canonical name upstream: one hop fewer for the client.
            return bottle.HTTPResponse(
                status=303, Location=fallback + quote(name) + "/", **{"Vary": "Accept"}
            )
        raise NotFound(f"project {raw_name!r} is not hosted here")

    # -- error handling in one place -------------------------------------------------------------
    def _problem(exc: HTTPProblem) -> bottle.HTTPResponse:
        body = exc.message + "\n"
        res = bottle.HTTPResponse(body, status=f"{exc.status} {_reason(exc.message)}")
        res.set_header("Content-Type", "text/plain; charset=utf-8")
        # Messages echo what the client sent: never let a browser take them for HTML.
        res.set_header("X-Content-Type-Options", "nosniff")
        res.set_header("Vary", "Accept")
        for key, value in exc.headers.items():
            res.set_header(key, value)
        return res

    def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except HTTPProblem as exc:
                return _problem(exc)
            except UnicodeError:
                # Bytes in the query or a header that are not what they claim to be.
                return _problem(BadRequest("malformed request (invalid UTF-8)"))

        wrapper.__name__ = fn.__name__
        return wrapper

    def plain_error(error: bottle.HTTPError) -> str:
        bottle.response.content_type = "text/plain; charset=utf-8"
        bottle.response.set_header("X-Content-Type-Options", "nosniff")
        return f"{error.status_line}\n"

    for code in (400, 404, 405, 413, 500):
        app.error(code)(plain_error)

    # -- routes --
    @app.get("/metrics")
    @guarded
    def metrics() -> Any:
        # Protected with the list action, or on its own with -a metrics.
        require("list")
        require("metrics")
        body, content_type = observer.exposition()
        return bottle.HTTPResponse(body, **{"Content-Type": content_type})

    @app.get(settings.health_endpoint)
    def health() -> Any:
        # pypiserver's body, "Ok"; 503 until everything found at start is listed, so that a
        # load balancer or an orchestrator sends no installs that would miss a file.
        waiting = ready() if ready is not None else None
        if waiting:
            return bottle.HTTPResponse(
                waiting + "\n",
                status=503,
                **{"Content-Type": "text/plain; charset=utf-8", "Retry-After": "1"},
            )
        return bottle.HTTPResponse("Ok", **{"Content-Type": "text/plain; charset=utf-8"})

    @app.get("/")
    @guarded
    def index_page() -> Any:
        nonlocal welcome_failed
        snap = catalog.snapshot
        show = may_list()
        if welcome is not None:  # --welcome FILE, as in pypiserver
            base = base_url()
            path = urlsplit(base).path  # pypiserver's PACKAGES and SIMPLE are paths
            try:
                body = welcome.render(
                    URL=base,
                    VERSION=__version__,
                    # pypiserver's NUMPKGS counts files ("serving 2 packages" for a wheel and
                    # an sdist); NUMPROJECTS counts projects.
                    NUMPKGS=snap.file_count if show else None,
                    NUMFILES=snap.file_count if show else None,
                    NUMPROJECTS=len(snap.projects) if show else None,
                    PACKAGES=path + "packages/",
                    SIMPLE=path + "simple/",
                    fallback=fallback,
                )
            except Exception:  # checked at start; whatever else it does, never a 500
                if not welcome_failed:  # once: any visitor could otherwise fill the log
                    welcome_failed = True
                    log.exception("the --welcome template failed; showing the built-in page")
            else:
                return bottle.HTTPResponse(body, **{"Content-Type": "text/html; charset=utf-8"})
        return html_page(
            "home",
            "Home",
            counts=(len(snap.projects), snap.file_count) if show else None,
            recent=web.recent_releases(snap) if show else None,
            fallback=fallback,
            url=base_url(),
        )

    # -- web pages for people (the simple API above is for installers) --
    def may_list() -> bool:
        """Whether this request may see what is hosted: listing is open, or it brings valid
        credentials (the home page never asks for them)."""
        if not auth.requires("list"):
            return True
        if not _header("Authorization"):
            return False
        try:
            require("list")
        except HTTPProblem:
            return False
        return True

    def html_page(template: str, title: str, status: int = 200, **values: Any) -> Any:
        path = bottle.request.path
        layout = {
            "title": title,
            "root": "../" * (path.count("/") - 1) or "./",
            "asset": assets.version,
            "version": __version__,
            "query": values.get("query", ""),
        }
        body = templates[template].render(
            L=layout,
            q=_quote_path,
            size=web.human_size,
            when=web.human_time,
            iso=web.iso_time,
            **values,
        )
        return bottle.HTTPResponse(
            body,
            status=status,
            **{
                "Content-Type": "text/html; charset=utf-8",
                "Content-Security-Policy": _CSP,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "same-origin",
            },
        )

    def web_problem(fn: Callable[..., Any]) -> Callable[..., Any]:
        """Errors of the web pages as HTML pages (the API routes answer plain text)."""

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except HTTPProblem as exc:  # with its headers (WWW-Authenticate, Retry-After)
                res = html_page(
                    "message",
                    exc.message,
                    status=exc.status,
                    heading=_reason(exc.message),
                    text=exc.message,
                )
                for key, value in exc.headers.items():
                    res.set_header(key, value)
                return res

        wrapper.__name__ = fn.__name__
        return guarded(wrapper)

    @app.get("/-/static/<name>")
    @guarded
    def static_asset(name: str) -> Any:
        found = assets.files.get(name)
        if found is None:
            raise NotFound("no such file")
        body, content_type, etag = found
        headers = {
            "Content-Type": content_type,
            "ETag": etag,
            # The pages link each asset with ?v=<hash of all assets>: a new release is a new URL.
            "Cache-Control": "public, max-age=31536000, immutable",
            "X-Content-Type-Options": "nosniff",
        }
        if _etag_matches(_header("If-None-Match"), etag):
            return bottle.HTTPResponse(status=304, **headers)
        return bottle.HTTPResponse(body, **headers)

    @app.get("/favicon.ico")
    @guarded
    def favicon() -> Any:
        # Browsers ask for it on their own; without this route pypiserver's /<name> shortcut
        # would send them to /simple/favicon-ico/, and from there to the fallback index.
        raise NotFound("no icon")

    @app.get("/-/projects")
    def projects_no_slash() -> Any:
        return redirect("/-/projects/")

    @app.get("/-/projects/")
    @web_problem
    def projects_page() -> Any:
        require("list")
        snap = catalog.snapshot
        query = (bottle.request.query.getunicode("q") or "").strip()[: web.MAX_QUERY]
        raw_page = bottle.request.query.get("page") or "1"
        digits = raw_page.isascii() and raw_page.isdigit() and len(raw_page) <= 6
        page = int(raw_page) if digits else 0
        if page < 1:
            raise BadRequest("page must be a positive number")
        found = web.search_projects(snap, query)
        try:
            first, pages = web.page_of(found, page)
        except ValueError as exc:
            raise NotFound(f"no such page: {exc}") from None

        def link(number: int) -> str:
            return urlencode({"q": query, "page": number} if query else {"page": number})

        return html_page(
            "projects",
            f"Search: {query}" if query else "Projects",
            query=query,
            rows=found[first : first + web.PAGE_SIZE],
            total=len(found),
            first=first,
            page=page,
            pages=pages,
            link=link,
        )

    @app.get("/project/<name>")
    @guarded
    def project_page_no_slash(name: str) -> Any:
        return redirect(f"/project/{normalize(name)}/")

    @app.get("/project/<name>/")
    @web_problem
    def project_page(name: str) -> Any:
        return project_view(name, None)

    @app.get("/project/<name>/<version>")
    @guarded
    def project_version_no_slash(name: str, version: str) -> Any:
        return redirect(f"/project/{normalize(name)}/{version}/")

    @app.get("/project/<name>/<version>/")
    @web_problem
    def project_version_page(name: str, version: str) -> Any:
        return project_view(name, version)

    def release_metadata(project: Project, version: str) -> CoreMetadata | None:
        files = project.files_of(version)
        # A wheel's METADATA is authoritative; an sdist's PKG-INFO may lack dependencies.
        return metadata.get(next((f for f in files if f.kind == "bdist_wheel"), files[-1]))

    def release_details(project: Project, version: str) -> tuple[Details | None, str]:
        """A release's metadata for people and its description as safe HTML, made once per
        project snapshot (rendering a README can take a docutils run)."""
        key = ("web-details", version)
        cached = project.cache.get(key)
        if cached is None:
            meta = release_metadata(project, version)
            try:
                details = parse_details(meta.raw) if meta is not None else None
            except Exception:  # untrusted bytes: a page without details, never a 500
                log.exception("cannot parse the metadata of %s %s", project.name, version)
                details = None
            description = ""
            if details is not None and details.description.strip():
                description = web.render_description(
                    details.description, details.description_content_type
                )
                details = details._replace(description="")  # kept as HTML below
            cached = _Rendering(description.encode(), details)
            project.cache[key] = cached
        return cached.details, cached.body.decode()

    def project_view(raw_name: str, version: str | None) -> Any:
        require("list")
        if len(raw_name) > 200 or (version is not None and len(version) > 200):
            raise NotFound("no such project")
        project = catalog.snapshot.project(normalize(raw_name))
        if project is None:
            raise NotFound(f"{raw_name} is not hosted here")
        if raw_name != project.name:
            return redirect(f"/project/{project.name}/" + (f"{version}/" if version else ""))
        if version is None:
            version = project.current
        elif version not in project.versions:
            same = web.same_version(project.versions, version)
            if same is None:
                raise NotFound(f"{project.display_name} has no version {version}")
            return redirect(f"/project/{project.name}/{same}/")
        details, description = release_details(project, version)
        url = base_url() + "simple/"
        current = project.current
        # Unpinned only where pip would take this very release: not when it is not the
        # newest, nor a pre-release or a yanked one (pip skips those unless pinned).
        plain = version == current and project.yank_of(version) is None
        pin = "" if plain and not is_prerelease(version) else f"=={version}"
        history = list(reversed(project.versions))
        shown = history[: web.MAX_RELEASES]
        if version not in shown:
            shown.append(version)
        option = "--index-url" if fallback else "--extra-index-url"
        return html_page(
            "project",
            f"{project.display_name} {version}",
            project=project,
            version=version,
            yank=project.yank_of(version),
            details=details,
            description=description,
            install=f"pip install {option} {url} {project.display_name}{pin}",
            shown=shown,
            older=[v for v in history[web.MAX_RELEASES :] if v != version],
            # Login names are for those who may list with credentials, or with
            # --show-uploaders; on an open index they would tell anyone whom to phish.
            uploader=(
                (lambda f: upload_log.uploader(f.relpath, f.sha256))
                if upload_log is not None and (settings.show_uploaders or auth.requires("list"))
                else None
            ),
        )

    @app.get("/simple")
    def simple_no_slash() -> Any:
        return redirect("/simple/")

    @app.get("/simple/")
    @guarded
    def simple_index() -> Any:
        require("list")
        snap, media = catalog.snapshot, negotiated()
        return send_rendered(render.render_index(snap, media), snap.cache, ("index", media))

    @app.get("/simple/<name>")
    @guarded
    def simple_project_no_slash(name: str) -> Any:
        return redirect(f"/simple/{normalize(name)}/")

    @app.get("/simple/<name>/")
    @guarded
    def simple_project(name: str) -> Any:
        require("list")
        media = negotiated()
        found = hosted_or_redirect(name)
        if isinstance(found, bottle.HTTPResponse):
            return found
        if isinstance(found, Claimed):
            return send_rendered(render.render_claimed(found.name, media))
        page = render.render_project(found, media, settings.hash_algo)
        return send_rendered(page, found.cache, ("project", media, settings.hash_algo))

    @app.get("/packages/<path:path>")
    @guarded
    def package_file(path: str) -> Any:
        require("download")
        snap = catalog.snapshot
        f = snap.file(path)
        if f is not None:
            return send_file(f)
        if path.endswith(".metadata"):
            f = snap.file(path[: -len(".metadata")])
            if f is not None and f.metadata_sha256:
                return send_metadata(f)
        if path.endswith(".asc"):
            f = snap.file(path[: -len(".asc")])
            if f is not None:
                return send_signature(f)
        raise NotFound("no such file")

    @app.get("/pypi/<name>/json")
    @guarded
    def json_api(name: str) -> Any:
        return json_api_version(name, None)

    @app.get("/pypi/<name>/<version>/json")
    @guarded
    def json_api_version(name: str, version: str | None) -> Any:
        require("list")
        project = catalog.snapshot.project(normalize(name))
        if project is None:
            raise NotFound(f"project {name!r} is not hosted here")
        if version is None:
            version = project.current  # newest not yanked, as warehouse answers
        elif version not in project.versions:
            raise NotFound(f"{project.name} has no version {version!r}")
        base = base_url()
        key = ("pypi-json", version, base)
        body = project.cache.get(key)  # dies with the project's snapshot, like every rendering
        if body is None:
            meta = release_metadata(project, version)
            body = render.render_project_json_api(project, version, meta, base, releases=True)
            if len(project.cache) < 64:  # the base URL comes from the Host header
                project.cache[key] = body
        return bottle.HTTPResponse(body, **{"Content-Type": "application/json"})

    def xmlrpc_search() -> Any:
        require("list")
        length = bottle.request.content_length
        if length < 0 or length > xmlrpc.MAX_REQUEST_BYTES:
            raise BadRequest("XML-RPC request missing or too large")
        body = bottle.request.body.read(xmlrpc.MAX_REQUEST_BYTES + 1)
        try:
            method, params = xmlrpc.parse_call(body)
        except xmlrpc.InvalidXmlRpc as exc:
            raise BadRequest(str(exc)) from None
        if method != "search":
            out = xmlrpc.dump_fault(1, f"method {method!r} is not supported")
        else:
            spec = params[0] if params and isinstance(params[0], dict) else None
            operator = params[1] if len(params) > 1 and isinstance(params[1], str) else "and"
            if spec is None:
                raise BadRequest("search takes a struct of field -> terms")
            # Bounded: a search is a linear pass over the projects for every term.
            terms = {
                str(k): [str(t)[:100] for t in (v if isinstance(v, list) else [v])][:10]
                for k, v in list(spec.items())[:4]
            }
            out = xmlrpc.dump_response(render.search(catalog.snapshot, terms, operator))
        return bottle.HTTPResponse(out, **{"Content-Type": "text/xml"})

    @app.post("/RPC2")
    @app.post("/pypi")
    @guarded
    def rpc2() -> Any:
        return xmlrpc_search()

    def upload() -> Any:
        try:
            refuse_cross_site()
            user = require("update")
        except HTTPProblem as exc:
            observer.upload_done(exc.status, exc.message)
            raise
        env = bottle.request.environ
        try:
            length = int(env.get("CONTENT_LENGTH") or -1)
        except ValueError:
            length = -1
        assert uploads is not None
        try:
            outcome = uploads.handle(env["wsgi.input"], length, env.get("CONTENT_TYPE"), user)
        except HTTPProblem as exc:
            observer.upload_done(exc.status, exc.message)
            raise
        observer.upload_done(outcome.status, outcome.message)
        return bottle.HTTPResponse(
            outcome.message + "\n",
            status=f"{outcome.status} {_reason(outcome.message)}",
            **{"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"},
        )

    def refuse_cross_site() -> None:
        """Browsers resend Basic credentials: a page on another site must not upload or delete."""
        if (_header("Sec-Fetch-Site") or "").lower() == "cross-site":
            raise Forbidden("cross-site requests may not change the index")
        origin = _header("Origin")
        if origin:
            origin_host = urlsplit(origin).netloc.lower()
            allowed = {(_header("Host") or "").lower()}
            if base_override:
                allowed.add(urlsplit(base_override).netloc.lower())
            if origin == "null" or origin_host not in allowed:
                raise Forbidden("cross-site requests may not change the index")

    @app.post("/")
    @guarded
    def post_root() -> Any:
        media = (_header("Content-Type") or "").split(";", 1)[0].strip().lower()
        if media in ("text/xml", "application/xml"):
            return xmlrpc_search()
        return upload()

    @app.post("/legacy")
    @app.post("/legacy/")
    @guarded
    def post_legacy() -> Any:
        return upload()

    @app.get("/+simple/<name>/")
    @app.get("/legacy/+simple/<name>/")
    @guarded
    def devpi_simple(name: str) -> Any:
        # hatch publish reads <upload URL>/+simple/<project>/ (devpi's layout) to skip files
        # that exist; no fallback here, an unknown project simply has no files.
        require("list")
        project = catalog.snapshot.project(normalize(name))
        if project is None:
            raise NotFound("not hosted here")
        return send_rendered(render.render_project(project, render.HTML, settings.hash_algo))

    @app.get("/packages/")
    @guarded
    def file_list() -> Any:
        # pypiserver's listing of every file: `pip install --find-links URL/packages/` reads it.
        require("list")
        snap = catalog.snapshot
        page = render.render_file_list(snap, settings.hash_algo)
        return send_rendered(page, snap.cache, ("files", settings.hash_algo))

    @app.get("/packages")
    def file_list_no_slash() -> Any:
        return redirect("/packages/")

    @app.get("/pypi/")
    @guarded
    def not_a_project() -> Any:
        raise NotFound("not found")

    @app.get("/<name>/json")
    @guarded
    def bare_json_api(name: str) -> Any:
        # pypiserver answers /<project>/json like /pypi/<project>/json. The index's own first
        # segments (simple, packages, pypi, project, ...) keep their routes, matched earlier.
        return json_api_version(name, None)

    @app.get("/<name>")
    @app.get("/<name>/")
    @guarded
    def bare_project(name: str) -> Any:
        # pypiserver compatibility: --extra-index-url http://host:port (without /simple).
        if not is_valid_project_name(name):
            raise NotFound("not found")
        return redirect(f"/simple/{normalize(name)}/")

    # -- files --
    def send_file(f: DistFile) -> bottle.HTTPResponse:
        try:
            # Non-blocking, regular files only: a FIFO swapped in for a listed file must not
            # hang a worker thread (16 of them stopped the server).
            fh = os.fdopen(open_regular(f.path), "rb")
        except OSError:
            raise NotFound("file is gone") from None
        try:
            st = os.fstat(fh.fileno())
        except OSError:
            fh.close()
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
        headers = dict(_file_headers(f, st.st_mtime, cache_control=file_cache))
        inm = _header("If-None-Match")
        if (etag and _etag_matches(inm, etag)) or (not inm and _not_modified_since(st.st_mtime)):
            fh.close()
            return bottle.HTTPResponse(status=304, **headers)
        rng = _parse_range(_header("Range"), size)
        if rng is not None and not _if_range_ok(_header("If-Range"), etag, st.st_mtime):
            rng = None
        if rng == "unsatisfiable":
            fh.close()
            headers["Content-Range"] = f"bytes */{size}"
            return bottle.HTTPResponse(status=416, **headers)
        if isinstance(rng, tuple):
            start, end = rng
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            headers["Content-Length"] = str(end - start + 1)
            return bottle.HTTPResponse(
                _RangeFile(fh, start, end - start + 1), status=206, **headers
            )
        headers["Content-Length"] = str(size)
        if bottle.request.method == "HEAD":
            fh.close()
            return bottle.HTTPResponse(b"", **headers)
        if size <= SMALL_FILE:
            # Most wheels are small: one read beats handing waitress a file wrapper.
            with fh:
                body = fh.read(size + 1)
            if len(body) != size or not _intact(body, f):
                if on_stale is not None:
                    on_stale(f.path)  # same size and mtime, other bytes: hash it again
                raise NotFound("this file changed on disk; the index is catching up, try again")
            return bottle.HTTPResponse(body, **headers)
        # Streamed by the server's file wrapper, which (under pkgserver's waitress) hashes what
        # it sends and withholds the last bytes unless the whole matches ``f.sha256``.
        on_mismatch = (lambda: on_stale(f.path)) if on_stale is not None else None
        return bottle.HTTPResponse(_HashedFile(fh, f.sha256, on_mismatch), **headers)

    def send_signature(f: DistFile) -> bottle.HTTPResponse:
        # The detached signature uploaded with the file (twine --sign), stored beside it. Only a
        # regular file inside the package directories: never a link out, a FIFO or a device.
        path = f.path + ".asc"
        if not confined(path, real_roots):
            raise NotFound("no signature for this file")
        try:
            fd = open_regular(path)
        except OSError:
            raise NotFound("no signature for this file") from None
        with os.fdopen(fd, "rb") as fh:
            if os.fstat(fh.fileno()).st_size > 64 * 1024:
                raise NotFound("no signature for this file")
            data = fh.read(64 * 1024)
        return bottle.HTTPResponse(
            data,
            **{"Content-Type": "application/pgp-signature", "X-Content-Type-Options": "nosniff"},
        )

    def send_metadata(f: DistFile) -> bottle.HTTPResponse:
        meta = metadata.get(f)
        if meta is None or not meta.servable:
            raise NotFound("no core metadata for this file")
        digest = hashlib.sha256(meta.raw).hexdigest()
        if digest != f.metadata_sha256:
            raise NotFound("core metadata changed; try again")
        etag = f'"{digest}"'
        headers = {
            "Content-Type": "text/plain; charset=utf-8",
            "ETag": etag,
            "X-Content-Type-Options": "nosniff",
        }
        if _etag_matches(_header("If-None-Match"), etag):
            return bottle.HTTPResponse(status=304, **headers)
        return bottle.HTTPResponse(meta.raw, **headers)

    # -- the fast path --
    # Only requests that need nothing but a catalog lookup: no query string, nothing protected,
    # a canonical project name that is hosted, a whole small file that is intact. Anything else
    # (redirects, fallbacks, ranges, auth, errors) goes through the routes above.
    page_fast = not auth.requires("list")
    file_fast = not auth.requires("download")
    hash_algo = settings.hash_algo

    def fast(environ: dict[str, Any]) -> Answer | None:
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD") or environ.get("QUERY_STRING"):
            return None
        path = environ.get("PATH_INFO", "")
        if page_fast and path.startswith("/simple/") and path.endswith("/"):
            name = path[8:-1]
            project = catalog.snapshot.projects.get(name)
            if project is None or not name:
                return None
            media = render.negotiate(environ.get("HTTP_ACCEPT"))
            if media is None:
                return None
            page = render.render_project(project, media, hash_algo)
            if len(page.body) > LARGE_PAGE:
                return None  # the route sends it without a copy per connection
            return _page_answer(
                page,
                project.cache,
                ("project", media, hash_algo),
                environ.get("HTTP_ACCEPT_ENCODING"),
                environ.get("HTTP_IF_NONE_MATCH"),
            )
        if file_fast and path.startswith("/packages/"):
            if any(k in environ for k in _CONDITIONAL_KEYS):
                return None
            f = catalog.snapshot.files.get(path[10:])
            if f is None:
                return None
            inm = environ.get("HTTP_IF_NONE_MATCH")
            if inm is not None:
                # A revalidation (pip's HTTP cache): answered from the catalog and one stat.
                if not _etag_matches(inm, f'"{f.sha256}"'):
                    return None
                try:
                    st = os.stat(f.path)
                except OSError:
                    return None
                if not f.matches(st):
                    return None
                headers = [
                    h
                    for h in _file_headers(f, st.st_mtime, cache_control=file_cache)
                    if h[0] != "Content-Type"
                ]
                return 304, headers, b""
            if f.size > SMALL_FILE:
                return None
            try:
                # os.open rather than open(): no buffer object, no isatty() call; a fifth of
                # the time a small download held the GIL went into open(). Non-blocking, as
                # in send_file: a FIFO in place of the file is left to the route's 404.
                fd = os.open(f.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
                try:
                    st = os.fstat(fd)
                    if not stat.S_ISREG(st.st_mode):
                        return None
                    if not f.matches(st):
                        return None  # the route reports it and asks for a recheck
                    body = os.read(fd, f.size + 1)  # one read: the file is small (short: route)
                finally:
                    os.close(fd)
            except OSError:
                return None
            if len(body) != f.size or not _intact(body, f):
                return None  # the route reports it and asks for a recheck
            return 200, _file_headers(f, st.st_mtime, len(body), file_cache), body
        return None

    app.fast = fast
    return app


def _intact(body: bytes, f: DistFile) -> bool:
    """Whether the bytes read are the ones listed: a file rewritten in place keeps its size
    and, within the clock's granularity, its mtime, so only the hash can tell."""
    return hashlib.sha256(body).hexdigest() == f.sha256


class _HashedFile:
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


def _format_param() -> str | None:
    value = bottle.request.query.getunicode("format")
    # ?format=application/vnd.pypi.simple.v1+json typed by hand: query decoding made "+" a space.
    return value.replace(" ", "+") if value else None


def _page_answer(
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
        ("Cache-Control", "max-age=0, must-revalidate"),
    ]
    if encoding:
        headers.append(("Content-Encoding", encoding))
    if _etag_matches(if_none_match, page.etag):
        # RFC 9110: a 304 carries the validators and caching headers, not the content's. No
        # Content-Length: waitress would take it for a body it did not get, log a warning and
        # close the connection (pkgserver.server keeps 304 connections open).
        kept = [h for h in headers if h[0] not in ("Content-Type", "Content-Encoding")]
        return 304, kept, b""
    return 200, headers, page.body


_CONDITIONAL_KEYS = ("HTTP_RANGE", "HTTP_IF_MODIFIED_SINCE", "HTTP_IF_RANGE")


def _file_headers(
    f: DistFile, mtime: float, length: int | None = None, cache_control: str | None = None
) -> list[tuple[str, str]]:
    headers = [
        ("Content-Type", _content_type(f.filename)),
        ("Last-Modified", _http_date(int(mtime))),
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


def _not_modified_since(mtime: float) -> bool:
    ims = _header("If-Modified-Since")
    if not ims:
        return False
    parsed = bottle.parse_date(ims.split(";")[0].strip())
    return parsed is not None and parsed >= int(mtime)


def _if_range_ok(header: str | None, etag: str | None, mtime: float) -> bool:
    if not header:
        return True
    header = header.strip()
    if header.startswith('"') or header.startswith("W/"):
        return etag is not None and header == etag
    parsed = bottle.parse_date(header)
    return parsed is not None and parsed >= int(mtime)


def _parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """One byte range -> (start, end inclusive); "unsatisfiable"; None to send everything."""
    if not header:
        return None
    m = _RANGE.fullmatch(header.strip())
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


class WelcomeError(ValueError):
    """A --welcome file that cannot serve as the home page."""


# What a --welcome template may use: pypiserver's names (its own welcome.html uses URL,
# VERSION, NUMPKGS, PACKAGES and SIMPLE), and ours.
WELCOME_NAMES = (
    "URL",
    "VERSION",
    "NUMPKGS",
    "NUMFILES",
    "NUMPROJECTS",
    "PACKAGES",
    "SIMPLE",
    "fallback",
)
_MAX_WELCOME = 1024 * 1024


def load_welcome(path: str, counts_hidden: bool = False) -> bottle.SimpleTemplate:
    """The --welcome file as a bottle template, rendered once with sample values so that a
    name it uses that is not provided (or any other error) is reported at start, not as a 500
    to every visitor. Raises WelcomeError."""
    try:
        with os.fdopen(open_regular(path), "rb") as fh:
            raw = fh.read(_MAX_WELCOME + 1)
    except FileNotFoundError:
        raise WelcomeError(f"welcome file {path!r} does not exist") from None
    except OSError as exc:
        raise WelcomeError(f"cannot read welcome file {path!r}: {exc.strerror or exc}") from None
    if len(raw) > _MAX_WELCOME:
        raise WelcomeError(f"welcome file {path!r} is larger than {_MAX_WELCOME} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise WelcomeError(f"welcome file {path!r} is not UTF-8 text") from None
    sample = {
        "URL": "http://localhost:8080/",
        "VERSION": __version__,
        "NUMPKGS": 0,
        "NUMFILES": 0,
        "NUMPROJECTS": 0,
        "PACKAGES": "/packages/",
        "SIMPLE": "/simple/",
        "fallback": None,
    }
    try:
        template = bottle.SimpleTemplate(text)
        unknown = sorted(_template_names(template.co) - set(WELCOME_NAMES))
        if unknown:
            raise NameError(name=unknown[0])
        template.render(**sample)
        if counts_hidden:  # what a request without credentials gets when listing needs them
            template.render(**{**sample, "NUMPKGS": None, "NUMFILES": None, "NUMPROJECTS": None})
    except NameError as exc:
        name = getattr(exc, "name", None) or str(exc)
        raise WelcomeError(
            f"welcome file {path!r} uses {name!r}, which is not provided; a template may use "
            + ", ".join(WELCOME_NAMES)
        ) from None
    except Exception as exc:
        raise WelcomeError(
            f"welcome file {path!r} is not a usable template: {type(exc).__name__}: {exc}"
        ) from None
    return template


# What bottle's SimpleTemplate itself puts in a template's namespace.
_TEMPLATE_ENV = frozenset(
    {"_stdout", "_printlist", "include", "rebase", "_rebase", "_str", "_escape"}
    | {"get", "setdefault", "defined"}
)


def _template_names(code: Any) -> set[str]:
    """The names a compiled template reads that it does not set itself, builtins and
    bottle's own excepted: read from its byte code, so that a name in a branch the sample
    values do not take is found too."""
    import builtins
    import dis

    loaded: set[str] = set()
    stored: set[str] = set()
    todo = [code]
    while todo:
        current = todo.pop()
        for ins in dis.get_instructions(current):
            if ins.opname in ("LOAD_NAME", "LOAD_GLOBAL"):
                loaded.add(str(ins.argval))
            elif ins.opname in ("STORE_NAME", "STORE_GLOBAL", "IMPORT_NAME"):
                stored.add(str(ins.argval).split(".")[0])
        todo.extend(c for c in current.co_consts if hasattr(c, "co_code"))
    return loaded - stored - _TEMPLATE_ENV - set(dir(builtins))


def _quote_path(value: str) -> str:
    return quote(value, safe="/")


# The web pages load only what this server serves; a description's images may come from
# anywhere (they are the project's content), nothing else may.
_CSP = (
    "default-src 'self'; img-src 'self' data: https: http:; style-src 'self'; "
    "script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


class _Rendering(NamedTuple):
    """A cached description (its bytes count against the render budget) and the details."""

    body: bytes
    details: Details | None


class _Assets(NamedTuple):
    """The stylesheet and script of the web pages, read once."""

    files: dict[str, tuple[bytes, str, str]]  # name -> (body, content type, ETag)
    version: str  # changes whenever any of them does: the ?v= of their URLs

    @classmethod
    def load(cls) -> _Assets:
        files = {}
        whole = hashlib.sha256()
        for name, content_type in (
            ("style.css", "text/css; charset=utf-8"),
            ("copy.js", "text/javascript; charset=utf-8"),
        ):
            with open(os.path.join(STATIC, name), "rb") as fh:
                body = fh.read()
            digest = hashlib.sha256(body).hexdigest()
            whole.update(digest.encode())
            files[name] = (body, content_type, f'"{digest[:32]}"')
        return cls(files, whole.hexdigest()[:12])
