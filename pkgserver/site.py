"""One served index: what the routes of api.py and pages.py share.

A ``Site`` holds everything a request may need (settings, the catalog, auth, the stores of
metadata, uploads and records, the observer) and the few rules every route applies the same
way: who may do what, what the base URL is, where a redirect points, how a project name is
resolved (hosted, claimed, or sent to the fallback index). It holds no request state; the
current request is bottle's thread-local one.
"""

from __future__ import annotations

import posixpath
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar
from urllib.parse import quote, urlsplit

import bottle

from . import answers, render
from .answers import header
from .auth import Authenticator, Principal
from .catalog import Catalog, DistFile, Project, RenderCache, Snapshot
from .config import Settings
from .distfile import is_valid_project_name, normalize
from .errors import (
    Busy,
    Forbidden,
    HTTPProblem,
    NotAcceptable,
    NotFound,
    Unauthorized,
    Unavailable,
)
from .hosted import HostedNames
from .metadata import CoreMetadata
from .observe import Observer
from .scan import MetadataStore
from .storage import Uploaders
from .upload import Uploads

if TYPE_CHECKING:  # (oidc needs the [oidc] extra: imported only where it is configured)
    from .oidc import TrustedPublishing
    from .proxy import ProxyCache

__all__ = ["Claimed", "Proxied", "Site", "file_cache_control"]

_HOST = re.compile(r"[A-Za-z0-9.\-:\[\]]{1,255}")
# --redirect-downloads: seconds a presigned link works. Enough to begin a download (one that
# has begun goes on past it) with some clock skew between server and store; short enough
# that a link copied out of a log or a proxy is soon useless.
PRESIGNED_FOR = 300
_T = TypeVar("_T")
PRINCIPAL = "pkgserver.principal"  # the request's Principal, in the WSGI environ


def file_cache_control(settings: Settings) -> str:
    """Cache-Control of a distribution file (and of its .metadata and .asc).

    ``--cache-control AGE`` (pypiserver's) when given. Otherwise a file can never change under
    its name (uploads are create-only, a copy with other bytes is refused), so it may be kept
    for a year without asking; with ``--overwrite`` it can be replaced, so a client must ask
    again (its sha256 ETag, answered 304 while the bytes are the same)."""
    if settings.cache_control is not None:
        return f"public, max-age={settings.cache_control}"
    return answers.REVALIDATE if settings.overwrite else answers.FOREVER


class Claimed(NamedTuple):
    """A project hosted here before, with no files now (see pkgserver.hosted)."""

    name: str


class Proxied(NamedTuple):
    """A project never hosted here, served from the upstream through the cache (--proxy)."""

    name: str


class Site:
    """The state of one app instance and the rules its routes share."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        *,
        auth: Authenticator,
        metadata: MetadataStore,
        uploads: Uploads,
        observer: Observer,
        on_stale: Callable[[str], None] | None = None,
        hosted: HostedNames | None = None,
        upload_log: Uploaders | None = None,
        ready: Callable[[], str | None] | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self._views: dict[tuple[int, str, int], Snapshot] = {}
        self._views_lock = threading.Lock()
        self.auth = auth
        self.metadata = metadata
        self.uploads = uploads
        self.observer = observer
        self.on_stale = on_stale
        self.hosted = hosted
        self.upload_log = upload_log
        self.ready = ready
        # Trusted publishing (/_/oidc/...), set by whoever configures it; None: 404 there.
        self.trusted: TrustedPublishing | None = None
        # The caching proxy (--proxy), set by whoever configures it; None: redirects.
        self.proxy: ProxyCache | None = None
        self.fallback = settings.fallback
        absolute = settings.absolute_base_url
        # --server-base-url as an absolute URL: every absolute link and Location uses it.
        self.base_override = absolute.rstrip("/") + "/" if absolute else None
        # --redirect-downloads: a storage that can hand out links to its files (S3Storage).
        self.presign: Callable[[str, int, str], str] | None = (
            getattr(uploads.storage, "url_for", None) if settings.redirect_downloads else None
        )
        self.file_cache = file_cache_control(settings)

    # -- who may do what ---------------------------------------------------------------------------
    def require(self, action: str, project: str | None = None) -> str | None:
        """The user the request authenticates as for ``action`` (None when it is open);
        raises Unauthorized, Forbidden or Busy, each counted. With ``project`` (normalized),
        also the per-project right (tokens' scopes, the rights file) for list or download."""
        who = self._counted(lambda: self.auth.identify(action, header("Authorization")))
        if who is None:
            return None
        environ = bottle.request.environ
        environ["REMOTE_USER"] = who.label  # for the access log
        environ[PRINCIPAL] = who
        if project is not None:
            self.auth.authorize(who, action, project)
        return who.label

    def sign_in(self) -> str:
        """The htpasswd user whose password the request brings (the token pages)."""
        user = self._counted(lambda: self.auth.sign_in(header("Authorization")))
        bottle.request.environ["REMOTE_USER"] = user
        return user

    def _counted(self, check: Callable[[], _T]) -> _T:
        """``check()``, its refusals counted: missing, invalid or shed credentials."""
        try:
            return check()
        except Unauthorized:
            self.observer.auth_failed("missing")
            raise
        except Forbidden:
            self.observer.auth_failed("invalid")
            raise
        except Busy:
            self.observer.auth_failed("shed")
            raise

    def permit(self, action: str, project: str) -> None:
        """Raise Forbidden unless this request's credentials cover ``action`` ("upload",
        "remove", "download", "list") on the normalized ``project``: checked once the
        project is known (an upload's, after its form is read)."""
        self.auth.authorize(bottle.request.environ.get(PRINCIPAL), action, project)

    def refuse_cross_site(self) -> None:
        """Browsers resend Basic credentials: a page on another site must not upload or delete."""
        if (header("Sec-Fetch-Site") or "").lower() == "cross-site":
            raise Forbidden("cross-site requests may not change the index")
        origin = header("Origin")
        if origin:
            origin_host = urlsplit(origin).netloc.lower()
            allowed = {(header("Host") or "").lower()}
            if self.base_override:
                allowed.add(urlsplit(self.base_override).netloc.lower())
            if origin == "null" or origin_host not in allowed:
                raise Forbidden("cross-site requests may not change the index")

    def listing(self) -> Snapshot:
        """The catalog as this request may list it: whole, or only the projects its token's
        scope and its user's rights cover (computed once per catalog change and credentials)."""
        snap = self.catalog.snapshot
        who: Principal | None = bottle.request.environ.get(PRINCIPAL)
        if who is None or not self.auth.restricted(who, "list"):
            return snap
        # The rights' generation, not their id(): a freed object's id is soon reused.
        key = (snap.generation, who.label, self.auth.rights.generation)
        with self._views_lock:
            view = self._views.get(key)
        if view is not None:
            return view
        refusal = self.auth.refusal
        projects = {n: p for n, p in snap.projects.items() if refusal(who, "list", n) is None}
        files = {k: f for k, f in snap.files.items() if f.project in projects}
        by_name = {k: f for k, f in snap.by_filename.items() if f.project in projects}
        view = Snapshot(projects, files, by_name, snap.generation)
        with self._views_lock:
            if len(self._views) >= 64:
                self._views.clear()
            self._views[key] = view
        return view

    def may_list(self) -> bool:
        """Whether this request may see what is hosted: listing is open, or it brings valid
        credentials (the home page never asks for them)."""
        if not self.auth.requires("list"):
            return True
        if not header("Authorization"):
            return False
        try:
            self.require("list")
        except HTTPProblem:
            return False
        return True

    # -- URLs --------------------------------------------------------------------------------------
    def base_url(self) -> str:
        """Absolute URL of the app root, for bodies that need absolute links."""
        if self.base_override:
            return self.base_override
        env = bottle.request.environ
        server = f"{env.get('SERVER_NAME', 'localhost')}:{env.get('SERVER_PORT', '80')}"
        host = env.get("HTTP_HOST") or server
        if not _HOST.fullmatch(host):
            host = server
        scheme = "https" if env.get("wsgi.url_scheme") == "https" else "http"
        script = quote(env.get("SCRIPT_NAME", "").rstrip("/"))
        return f"{scheme}://{host}{script}/"

    def location(self, target: str) -> str:
        """Location header for an app-absolute ``target`` path: relative to the request, so
        that a path-prefix proxy works and a spoofed Host cannot steer it."""
        if self.base_override:
            return self.base_override + quote(target.lstrip("/"), safe="/.-_~")
        current = bottle.request.path  # decoded, app-relative
        start = current if current.endswith("/") else posixpath.dirname(current)
        rel = posixpath.relpath(target, start or "/")
        if target.endswith("/") and rel != "/":
            rel = "./" if rel == "." else rel + "/"
        return quote(rel, safe="/.-_~")

    def redirect(self, target: str, status: int = 301) -> bottle.HTTPResponse:
        return bottle.HTTPResponse(
            status=status, Location=self.location(target), **{"Vary": "Accept"}
        )

    # -- answers -----------------------------------------------------------------------------------
    def negotiated(self) -> str:
        """The simple API's media type the request accepts; raises NotAcceptable."""
        media = render.negotiate(header("Accept"), answers.format_param())
        if media is None:
            raise NotAcceptable(
                f"no acceptable content type: use text/html, {render.HTML_V1} or {render.JSON_V1}"
            )
        return media

    def send_rendered(
        self, page: render.Rendered, cache: RenderCache | None = None, key: Any = None
    ) -> bottle.HTTPResponse:
        found = answers.page_answer(
            page, cache, key, header("Accept-Encoding"), header("If-None-Match")
        )
        return answers.as_response(found)

    def send_file(self, f: DistFile) -> bottle.HTTPResponse:
        if self.presign is not None:
            return self.redirect_file(f, self.presign)
        return answers.send_file(
            f,
            opener=self.uploads.storage.open,
            cache_control=self.file_cache,
            on_stale=self.on_stale,
        )

    @staticmethod
    def redirect_file(f: DistFile, presign: Callable[[str, int, str], str]) -> bottle.HTTPResponse:
        """302 to a link that the store serves the file at for a few minutes. 302 rather than
        303: the link names this same file, for this request's own method (a HEAD is signed
        as one), as 302 keeps it in every client. Never stored by a cache: the link expires,
        and it must not reach a request that was not checked for access."""
        try:
            url = presign(f.path, PRESIGNED_FOR, bottle.request.method)
        except OSError as exc:
            raise Unavailable(f"cannot link to the file now ({exc.strerror or exc})") from None
        return bottle.HTTPResponse(status=302, Location=url, **{"Cache-Control": answers.NO_STORE})

    def release_metadata(self, project: Project, version: str) -> CoreMetadata | None:
        files = project.files_of(version)
        # A wheel's METADATA is authoritative; an sdist's PKG-INFO may lack dependencies.
        return self.metadata.get(next((f for f in files if f.kind == "bdist_wheel"), files[-1]))

    # -- names -------------------------------------------------------------------------------------
    def is_hosted(self, name: str, snap: Snapshot | None = None) -> bool:
        """Whether the normalized ``name`` is hosted here (in ``snap``) or was (claimed)."""
        if (snap or self.catalog.snapshot).project(name) is not None:
            return True
        return self.hosted is not None and name in self.hosted

    def hosted_or_redirect(
        self, raw_name: str, snap: Snapshot | None = None
    ) -> Project | Claimed | Proxied | bottle.HTTPResponse:
        """The hosted project (in ``snap``, by default the current snapshot), a claimed name,
        a name to serve through the proxy's cache, or a response (canonical redirect, fallback
        redirect); raises NotFound."""
        if not raw_name or len(raw_name) > 200:
            raise NotFound("no such project")
        name = normalize(raw_name)
        project = (snap or self.catalog.snapshot).project(name)
        if project is not None:
            if raw_name != name:
                return self.redirect(f"/simple/{name}/")
            return project
        if self.hosted is not None and name in self.hosted:
            # Hosted here before, all files gone since: claimed, never sent to the fallback,
            # where anyone may have published the name (dependency confusion).
            if raw_name != name:
                return self.redirect(f"/simple/{name}/")
            return Claimed(name)
        if self.proxy is not None and is_valid_project_name(raw_name):
            # Never hosted, never claimed: the upstream's page, through the cache.
            if raw_name != name:
                return self.redirect(f"/simple/{name}/")
            return Proxied(name)
        if self.fallback and is_valid_project_name(raw_name):
            # Straight to the canonical name upstream: one hop fewer for the client. Never
            # stored: the name may be uploaded here in a minute, and a kept redirect would
            # send installs upstream (dependency confusion). pip does not store a 303 anyway;
            # uv keeps the upstream's page under this URL, by the upstream's headers (README
            # "Caching").
            return bottle.HTTPResponse(
                status=303,
                Location=self.fallback + quote(name) + "/",
                **{"Vary": "Accept", "Cache-Control": answers.NO_STORE},
            )
        raise NotFound(f"project {raw_name!r} is not hosted here")
