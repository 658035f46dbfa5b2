"""The routes for machines: installers (the simple API, files, the JSON API, XML-RPC search),
publishers (uploads, removals), pypiserver's shortcuts, /health and /metrics.

Each route normalizes, checks the right, looks up the catalog and answers through answers.py.
``fast`` answers the plainest, most frequent requests (a hosted project page, a small file)
from the same answer functions without bottle's request objects, and returns None for anything
else, which the routes then decide.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import bottle

from . import answers, render, xmlrpc
from .answers import Answer, guarded, header
from .catalog import DistFile, Snapshot
from .distfile import (
    InvalidDistFilename,
    is_valid_project_name,
    normalize,
    parse_dist_filename,
    version_key,
)
from .errors import (
    BadGateway,
    BadRequest,
    Busy,
    Forbidden,
    HTTPProblem,
    NotFound,
    Unavailable,
)
from .proxy import (
    DirectoryProxyStore,
    NotCached,
    TooManyDownloads,
    UpstreamDown,
    UpstreamGone,
    what_of,
)
from .site import Claimed, Proxied, Site
from .storage import DirectoryStorage, StoreUnavailable

__all__ = ["InstallerAPI"]

_T = TypeVar("_T")


class InstallerAPI:
    """The routes for installers and publishers of one Site."""

    def __init__(self, site: Site) -> None:
        self.site = site
        settings = site.settings
        self.hash_algo = settings.hash_algo
        self.catalog = site.catalog  # (the fast path's lookups, one attribute nearer)
        self.file_cache = site.file_cache
        # The fast path takes only what needs no credentials.
        self.page_fast = not site.auth.requires("list")
        # Files: read by path, so only from the package directories (an object store's
        # locations are not paths; its downloads go through the route and Storage.open).
        self.file_fast = not site.auth.requires("download") and isinstance(
            site.uploads.storage, DirectoryStorage
        )
        # Cached upstream files (--proxy): read by path when the cache is a folder.
        self.proxy_file_fast = (
            site.proxy is not None
            and not site.auth.requires("download")
            and isinstance(site.proxy.store, DirectoryProxyStore)
        )

    def install(self, app: bottle.Bottle) -> None:
        """Adds the routes to ``app``. The catch-all shortcuts come last: the index's own
        first segments (simple, packages, pypi, project, ...) keep their routes."""
        get, post = app.get, app.post
        get("/metrics", callback=guarded(self.metrics))
        get(self.site.settings.health_endpoint, callback=self.health)
        get("/simple", callback=lambda: self.site.redirect("/simple/"))
        get("/simple/", callback=guarded(self.simple_index))
        get("/simple/<name>", callback=guarded(self.simple_project_no_slash))
        get("/simple/<name>/", callback=guarded(self.simple_project))
        get("/packages/<path:path>", callback=guarded(self.package_file))
        get("/proxy/<name>/<filename>", callback=guarded(self.proxy_file))
        get("/pypi/<name>/json", callback=guarded(self.json_api))
        get(
            "/integrity/<name>/<version>/<filename>/provenance",
            callback=guarded(self.provenance),
        )
        get("/pypi/<name>/<version>/json", callback=guarded(self.json_api))
        for path in ("/RPC2", "/pypi"):
            post(path, callback=guarded(self.xmlrpc_search))
        post("/", callback=guarded(self.post_root))
        for path in ("/legacy", "/legacy/"):
            post(path, callback=guarded(self.upload))
        for path in ("/+simple/<name>/", "/legacy/+simple/<name>/"):
            get(path, callback=guarded(self.devpi_simple))
        get("/packages/", callback=guarded(self.file_list))
        get("/packages", callback=lambda: self.site.redirect("/packages/"))
        get("/pypi/", callback=guarded(self.not_a_project))
        # Trusted publishing (PyPI's paths; gh-action-pypi-publish before v1.12 posts to the
        # GitHub one). uv and the action ask https://HOST[:PORT]/_/oidc/..., the publish URL's
        # authority without its path: these answer at the root, whatever the upload URL.
        get("/_/oidc/audience", callback=guarded(self.oidc_audience))
        for path in ("/_/oidc/mint-token", "/_/oidc/github/mint-token"):
            post(path, callback=guarded(self.oidc_mint_token))
        post("/_/oidc/burn-token", callback=guarded(self.oidc_burn_token))

    def install_shortcuts(self, app: bottle.Bottle) -> None:
        """pypiserver's /<project>/ and /<project>/json: after every other route."""
        app.get("/<name>/json", callback=guarded(self.json_api))
        for path in ("/<name>", "/<name>/"):
            app.get(path, callback=guarded(self.bare_project))

    # -- for operators -----------------------------------------------------------------------------
    def metrics(self) -> Any:
        # Protected with the list action, or on its own with -a metrics.
        self.site.require("list")
        self.site.require("metrics")
        body, content_type = self.site.observer.exposition()
        return bottle.HTTPResponse(
            body, **{"Content-Type": content_type, "Cache-Control": answers.NO_STORE}
        )

    def health(self) -> Any:
        # pypiserver's body, "Ok"; 503 until everything found at start is listed, so that a
        # load balancer or an orchestrator sends no installs that would miss a file.
        ready = self.site.ready
        waiting = ready() if ready is not None else None
        if waiting:
            return bottle.HTTPResponse(
                waiting + "\n",
                status=503,
                **{
                    "Content-Type": "text/plain; charset=utf-8",
                    "Retry-After": "1",
                    "Cache-Control": answers.NO_STORE,
                },
            )
        return bottle.HTTPResponse(
            "Ok", **{"Content-Type": "text/plain; charset=utf-8", "Cache-Control": answers.NO_STORE}
        )

    # -- the simple API ----------------------------------------------------------------------------
    def simple_index(self) -> Any:
        site = self.site
        site.require("list")
        snap, media = site.listing(), site.negotiated()
        return site.send_rendered(render.render_index(snap, media), snap.cache, ("index", media))

    def simple_project_no_slash(self, name: str) -> Any:
        return self.site.redirect(f"/simple/{normalize(name)}/")

    def simple_project(self, name: str) -> Any:
        site = self.site
        site.require("list")
        media = site.negotiated()
        # A hosted name the credentials may not list is refused (a redirect to the fallback
        # would install someone else's project of that name); others go to the fallback as
        # for anyone, so that the dependencies from the public index still install.
        if len(name) > 200:
            raise NotFound("no such project")
        snap = site.catalog.snapshot  # one snapshot for the check and the answer
        hosted = normalize(name)
        if site.is_hosted(hosted, snap):
            site.permit("list", hosted)
        found = site.hosted_or_redirect(name, snap)
        if isinstance(found, bottle.HTTPResponse):
            return found
        if isinstance(found, Claimed):
            status = site.catalog.status_of(found.name)
            return site.send_rendered(render.render_claimed(found.name, media, status))
        if isinstance(found, Proxied):
            return self.proxied_page(found.name, media)
        page = answers.project_page(
            found,
            media,
            self.hash_algo,
            header("Accept-Encoding"),
            header("If-None-Match"),
            site.base_url(),
        )
        return answers.as_response(page)

    def package_file(self, path: str) -> Any:
        site = self.site
        snap = site.catalog.snapshot
        if site.require("download") is not None:
            site.permit("download", self.project_of(snap, path))
        f = snap.file(path)
        if f is not None:
            return site.send_file(f)
        if path.endswith(".metadata"):
            f = snap.file(path[: -len(".metadata")])
            if f is not None and f.metadata_sha256:
                return answers.send_metadata(f, site.metadata.get(f), site.file_cache)
        if path.endswith(".asc"):
            f = snap.file(path[: -len(".asc")])
            if f is not None:
                try:
                    signature = site.uploads.storage.signature(f.path)
                except StoreUnavailable as exc:
                    raise Unavailable(f"{exc.strerror}, try again later") from None
                return answers.send_signature(signature, site.file_cache)
        raise NotFound("no such file")

    def provenance(self, name: str, version: str, filename: str) -> Any:
        """PEP 740's provenance object of a file whose attestations verified at upload (the
        Integrity API's route, as PyPI's); 404 for any other."""
        site = self.site
        if site.require("download") is not None:
            site.permit("download", normalize(name))
        project = site.catalog.snapshot.project(normalize(name))
        f = next((f for f in project.files if f.filename == filename), None) if project else None
        if f is None or version_key(f.version) != version_key(version):
            raise NotFound("no such file")
        if not f.provenance_sha256:
            raise NotFound("no provenance for this file: it was uploaded without attestations")
        try:
            data = site.uploads.storage.provenance(f.path)
        except StoreUnavailable as exc:
            raise Unavailable(f"{exc.strerror}, try again later") from None
        return answers.send_provenance(f, data)

    # -- the caching proxy (--proxy) ---------------------------------------------------------------
    def proxied_page(self, name: str, media: str) -> Any:
        """The upstream's page of a project never hosted here, from the cache."""
        proxy = self.site.proxy
        assert proxy is not None
        page = _from_upstream(lambda: proxy.page(name))
        rendered, variants = proxy.rendering(page, media, self.hash_algo)
        return answers.as_response(
            answers.page_answer(
                rendered, variants, "page", header("Accept-Encoding"), header("If-None-Match")
            )
        )

    def proxy_file(self, name: str, filename: str) -> Any:
        """A file (or its PEP 658 metadata) of a project served through the cache: from the
        cache, or fetched from the upstream while it is sent (pkgserver.proxy.Download)."""
        site, proxy = self.site, self.site.proxy
        if proxy is None or len(name) > 200 or name != normalize(name):
            raise NotFound("no such file")
        site.require("download")
        if site.is_hosted(name):
            # Hosted (or once hosted) here: never mixed with what the upstream has.
            raise NotFound(f"{name} is hosted here; its files are under /packages/")
        meta = filename.endswith(".metadata")
        listed = filename[: -len(".metadata")] if meta else filename
        try:
            if normalize(parse_dist_filename(listed).project) != name:
                raise NotFound("no such file")
        except InvalidDistFilename:
            raise NotFound("no such file") from None
        relpath = f"{name}/{filename}"
        what = what_of(relpath)
        entry = _from_upstream(lambda: proxy.entry(name, listed))
        sha256 = entry.metadata_sha256 if meta else entry.sha256
        if sha256 is None:
            raise NotFound("the upstream has no core metadata for this file")
        observer = site.observer

        def from_cache(f: DistFile) -> bottle.HTTPResponse:
            # Bytes in the store that are not the ones verified are dropped from the cache.
            return answers.send_file(
                f,
                opener=proxy.store.open,
                cache_control=answers.FOREVER,
                on_stale=lambda _path: proxy.drop(relpath),
            )

        f = proxy.cached(relpath, sha256, name)
        if f is not None:
            observer.proxy_event(what, "hit")
            observer.proxy_served(f.size)
            proxy.used(relpath)
            return from_cache(f)
        if proxy.offline:
            observer.proxy_event(what, "refused")
            raise NotFound(f"{filename} is not in the cache (--proxy-offline)")
        headers = {
            "Content-Type": answers.content_type(filename) if not meta else "text/plain",
            "ETag": f'"{sha256}"',
            "X-Content-Type-Options": "nosniff",
        }
        size = None if meta else entry.size
        if bottle.request.method == "HEAD":
            if size is not None:
                headers["Content-Length"] = str(size)
            return bottle.HTTPResponse(b"", **headers)
        url = entry.url + (".metadata" if meta else "")
        try:
            job = _from_upstream(lambda: proxy.download(relpath, url, sha256, size))
        except OSError as exc:  # no temporary file for it: the disk full, say
            raise Unavailable(f"the cache cannot take a file now ({exc.strerror})") from None
        except TooManyDownloads as exc:
            raise Busy(str(exc)) from None
        job.started.wait(proxy.fetcher.connect * 2 + 30)
        if not job.size:
            # No length to send: a body cut short (a mismatch) would end as a whole one does
            # (and an empty one is whole at once). Sent from the cache once verified and kept.
            job.finished_event.wait()
        body = job.reader()
        if body is None or job.error is not None:
            if body is not None:
                body.close()
            job.finished_event.wait(1.0)
            f = proxy.cached(relpath, sha256, name)
            if f is not None and job.error is None:  # done already: kept, served from there
                observer.proxy_event(what, "miss")
                return from_cache(f)
            observer.proxy_event(what, "error")
            if job.verified:  # fetched whole and right, but the cache could not keep it
                raise Unavailable(f"{filename} cannot be kept in the cache now: {job.error}")
            if job.upstream_status in (404, 410):
                raise NotFound(f"the upstream has no {filename} ({job.upstream_status})")
            raise BadGateway(f"{filename} cannot be fetched from the upstream: {job.error}")
        observer.proxy_event(what, "miss")
        if job.size is not None:
            headers["Content-Length"] = str(job.size)
            observer.proxy_served(job.size)
        # Kept for a year as hosted files are: a name's bytes never change once verified.
        headers["Cache-Control"] = answers.FOREVER
        return bottle.HTTPResponse(body, **headers)

    @staticmethod
    def project_of(snap: Snapshot, path: str) -> str:
        """The project a download path belongs to, for the per-project right: from the file
        name where it parses (so that the answer does not tell whether the file exists),
        else the listed file's; NotFound when neither says."""
        for suffix in (".metadata", ".asc"):
            if path.endswith(suffix):
                path = path[: -len(suffix)]
                break
        try:
            return parse_dist_filename(path.rsplit("/", 1)[-1]).project
        except InvalidDistFilename:
            pass
        f = snap.file(path)
        if f is None:
            raise NotFound("no such file")
        return f.project

    def devpi_simple(self, name: str) -> Any:
        # hatch publish reads <upload URL>/+simple/<project>/ (devpi's layout) to skip files
        # that exist; no fallback here, an unknown project simply has no files.
        site = self.site
        if len(name) > 200:  # no name is longer; the right is checked on the name looked up
            raise NotFound("no such project")
        wanted = normalize(name)
        site.require("list", wanted)
        project = site.catalog.snapshot.project(wanted)
        if project is None:
            raise NotFound("not hosted here")
        page = render.render_project(project, render.HTML, self.hash_algo, site.base_url())
        return site.send_rendered(page)

    def file_list(self) -> Any:
        # pypiserver's listing of every file: `pip install --find-links URL/packages/` reads it.
        site = self.site
        site.require("list")
        snap = site.listing()
        page = render.render_file_list(snap, self.hash_algo)
        return site.send_rendered(page, snap.cache, ("files", self.hash_algo))

    # -- the JSON API ------------------------------------------------------------------------------
    def json_api(self, name: str, version: str | None = None) -> Any:
        site = self.site
        if len(name) > 200:  # no name is longer; the right is checked on the name looked up
            raise NotFound("no such project")
        wanted = normalize(name)
        site.require("list", wanted)
        project = site.catalog.snapshot.project(wanted)
        if project is None:
            raise NotFound(f"project {name!r} is not hosted here")
        if version is None:
            version = project.current  # newest not yanked, as warehouse answers
        elif version not in project.versions:
            raise NotFound(f"{project.name} has no version {version!r}")
        base = site.base_url()
        key = ("pypi-json", version, base)
        page = project.cache.get(key)  # dies with the project's snapshot, like every rendering
        if page is None:
            # (A quarantined project's files are not read, nor offered.)
            meta = site.release_metadata(project, version) if project.offered else None
            body = render.render_project_json_api(project, version, meta, base, releases=True)
            page = render.Rendered(body, "application/json", render.etag_of(body))
            if len(project.cache) < 64:  # the base URL comes from the Host header
                project.cache[key] = page
        # Revalidated like the simple pages (ETag, 304, gzip): it changes with every upload.
        cache = project.cache if key in project.cache else None
        return site.send_rendered(page, cache, key)

    def not_a_project(self) -> Any:
        raise NotFound("not found")

    # -- XML-RPC search (pip search) ---------------------------------------------------------------
    def xmlrpc_search(self) -> Any:
        self.site.require("list")
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
            found = render.search(self.site.listing(), terms, operator)
            out = xmlrpc.dump_response(found)
        return bottle.HTTPResponse(out, **{"Content-Type": "text/xml"})

    # -- publishing --------------------------------------------------------------------------------
    def post_root(self) -> Any:
        media = (header("Content-Type") or "").split(";", 1)[0].strip().lower()
        if media in ("text/xml", "application/xml"):
            return self.xmlrpc_search()
        return self.upload()

    def upload(self) -> Any:
        site = self.site
        observer = site.observer
        try:
            self.site.refuse_cross_site()
            user = site.require("update")
        except HTTPProblem as exc:
            observer.upload_done(exc.status, exc.message)
            raise
        env = bottle.request.environ
        try:
            length = int(env.get("CONTENT_LENGTH") or -1)
        except ValueError:
            length = -1
        try:
            outcome = site.uploads.handle(
                env["wsgi.input"], length, env.get("CONTENT_TYPE"), user, permit=self.permit
            )
        except HTTPProblem as exc:
            observer.upload_done(exc.status, exc.message)
            raise
        observer.upload_done(outcome.status, outcome.message)
        return bottle.HTTPResponse(
            outcome.message + "\n",
            status=f"{outcome.status} {answers.reason(outcome.message)}",
            **{"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"},
        )

    def permit(self, action: str, project: str) -> None:
        """An upload's right on its project, once its form names it: the credentials', and
        (--proxy) not a project only cached from the upstream (README "Caching proxy")."""
        site = self.site
        site.permit(action, project)
        proxy = site.proxy
        if action == "upload" and proxy is not None and not site.is_hosted(project):
            if proxy.is_cached(project):
                raise Forbidden(
                    f"{project} is cached from the upstream index here, not hosted: an upload "
                    f"would shadow it for every client. Run `pkgserver mirror --forget "
                    f"{project}` first to host it here instead"
                )

    # -- trusted publishing ------------------------------------------------------------------------
    def oidc_audience(self) -> Any:
        trusted = self.site.trusted
        if trusted is None:
            raise NotFound("trusted publishing is not configured")
        return _json(trusted.audience_doc())

    def oidc_mint_token(self) -> Any:
        """A CI's OIDC token for an API token: no credentials, only the token in the body."""
        trusted = self.site.trusted
        if trusted is None:
            raise NotFound("trusted publishing is not configured")
        self.site.refuse_cross_site()
        return _json(trusted.exchange(self._bounded_body(trusted.max_body)))

    def oidc_burn_token(self) -> Any:
        """A minted token handed back after its upload (uv does), to be revoked at once."""
        trusted = self.site.trusted
        if trusted is None or trusted.burn is None:
            raise NotFound("revoking minted tokens is not configured")
        self.site.refuse_cross_site()
        trusted.burn_token(self._bounded_body(trusted.max_body))
        return _json({}, status=202)

    @staticmethod
    def _bounded_body(bound: int) -> bytes:
        """The request body, or its first ``bound + 1`` bytes: one more than the bound, for
        the reader to refuse as too large; the rest is never read."""
        env = bottle.request.environ
        try:
            length = int(env.get("CONTENT_LENGTH") or -1)
        except ValueError:
            length = -1
        limit = bound + 1
        data: bytes = env["wsgi.input"].read(min(length, limit) if length >= 0 else limit)
        return data

    # -- pypiserver's shortcuts --------------------------------------------------------------------
    def bare_project(self, name: str) -> Any:
        # pypiserver compatibility: --extra-index-url http://host:port (without /simple).
        if not is_valid_project_name(name):
            raise NotFound("not found")
        return self.site.redirect(f"/simple/{normalize(name)}/")

    # -- the fast path -----------------------------------------------------------------------------
    # Only requests that need nothing but a catalog lookup: no query string, nothing protected,
    # a canonical project name that is hosted, a whole small file that is intact. Anything else
    # (redirects, fallbacks, ranges, auth, errors) goes through the routes above.
    def fast(self, environ: dict[str, Any]) -> Answer | None:
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD") or environ.get("QUERY_STRING"):
            return None
        path = environ.get("PATH_INFO", "")
        if self.page_fast and path.startswith("/simple/") and path.endswith("/"):
            return self._fast_page(environ, path[8:-1])
        if self.file_fast and path.startswith("/packages/"):
            return self._fast_file(environ, path[10:])
        if self.proxy_file_fast and path.startswith("/proxy/"):
            return self._fast_proxied_file(environ, path[7:])
        return None

    def _fast_page(self, environ: dict[str, Any], name: str) -> Answer | None:
        project = self.catalog.snapshot.projects.get(name)
        if project is None:
            return self._fast_proxied_page(environ, name)
        if not name or render.has_provenance(project):
            return None  # (provenance URLs are absolute: the route knows the base URL)
        media = render.negotiate(environ.get("HTTP_ACCEPT"))
        if media is None:
            return None
        return answers.project_page(
            project,
            media,
            self.hash_algo,
            environ.get("HTTP_ACCEPT_ENCODING"),
            environ.get("HTTP_IF_NONE_MATCH"),
            max_size=answers.LARGE_PAGE,  # larger: the route sends it without a copy
        )

    def _fast_proxied_page(self, environ: dict[str, Any], name: str) -> Answer | None:
        """A page cached from the upstream and fresh in memory (--proxy)."""
        proxy = self.site.proxy
        if proxy is None or not name:
            return None
        page = proxy.fresh(name)
        if page is None or self.site.is_hosted(name):
            return None
        media = render.negotiate(environ.get("HTTP_ACCEPT"))
        if media is None:
            return None
        rendered, variants = proxy.rendering(page, media, self.hash_algo)
        if len(rendered.body) > answers.LARGE_PAGE:
            return None
        self.site.observer.proxy_event("page", "hit")
        return answers.page_answer(
            rendered,
            variants,
            "page",
            environ.get("HTTP_ACCEPT_ENCODING"),
            environ.get("HTTP_IF_NONE_MATCH"),
        )

    def _fast_proxied_file(self, environ: dict[str, Any], relpath: str) -> Answer | None:
        """A small cached upstream file whose page is in memory (--proxy)."""
        proxy = self.site.proxy
        name, _, filename = relpath.partition("/")
        if proxy is None or any(k in environ for k in answers.CONDITIONAL_KEYS):
            return None
        page = proxy.known(name)
        entry = page.file(filename) if page is not None else None
        if entry is None or "/" in filename or self.site.is_hosted(name):
            return None
        f = proxy.cached(relpath, entry.sha256, name, remembered=True)
        if f is None:
            return None
        inm = environ.get("HTTP_IF_NONE_MATCH")
        if inm is not None:
            if not answers.etag_matches(inm, f'"{f.sha256}"'):
                return None
            return answers.revalidated_file(f, answers.FOREVER)
        if f.size > answers.SMALL_FILE:
            return None
        found = answers.small_file(f, answers.FOREVER)
        if found is not None:
            self.site.observer.proxy_event("file", "hit")
            self.site.observer.proxy_served(f.size)
            proxy.used(relpath)
        return found

    def _fast_file(self, environ: dict[str, Any], relpath: str) -> Answer | None:
        if any(k in environ for k in answers.CONDITIONAL_KEYS):
            return None
        snap = self.catalog.snapshot
        f = snap.files.get(relpath)
        if f is None or not snap.offers(f):
            return None  # the route answers (a quarantined project's file: 404)
        inm = environ.get("HTTP_IF_NONE_MATCH")
        if inm is not None:
            # A revalidation (pip's HTTP cache): answered from the catalog and one stat.
            if not answers.etag_matches(inm, f'"{f.sha256}"'):
                return None
            return answers.revalidated_file(f, self.file_cache)
        if f.size > answers.SMALL_FILE:
            return None
        return answers.small_file(f, self.file_cache)  # None: the route reports it


def _from_upstream(call: Callable[[], _T]) -> _T:
    """The proxy's answer, its failures as HTTP problems: 404 for what the upstream does not
    have (or, offline, the cache), 502 when it cannot be asked and nothing is cached."""
    try:
        return call()
    except (UpstreamGone, NotCached) as exc:
        raise NotFound(str(exc)) from None
    except UpstreamDown as exc:
        raise BadGateway(str(exc)) from None


def _json(document: dict[str, Any], status: int = 200) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(
        json.dumps(document) + "\n",
        status=status,
        **{"Content-Type": "application/json", "Cache-Control": "no-store"},
    )
