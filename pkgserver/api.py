"""The routes for machines: installers (the simple API, files, the JSON API, XML-RPC search),
publishers (uploads, removals), pypiserver's shortcuts, /health and /metrics.

Each route normalizes, checks the right, looks up the catalog and answers through answers.py.
``fast`` answers the plainest, most frequent requests (a hosted project page, a small file)
from the same answer functions without bottle's request objects, and returns None for anything
else, which the routes then decide.
"""

from __future__ import annotations

import json
from typing import Any

import bottle

from . import answers, render, xmlrpc
from .answers import Answer, guarded, header
from .catalog import Snapshot
from .distfile import (
    InvalidDistFilename,
    is_valid_project_name,
    normalize,
    parse_dist_filename,
    version_key,
)
from .errors import BadRequest, HTTPProblem, NotFound, Unavailable
from .site import Claimed, Site
from .storage import DirectoryStorage, StoreUnavailable

__all__ = ["InstallerAPI"]


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
                env["wsgi.input"], length, env.get("CONTENT_TYPE"), user, permit=site.permit
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
        return None

    def _fast_page(self, environ: dict[str, Any], name: str) -> Answer | None:
        project = self.catalog.snapshot.projects.get(name)
        if project is None or not name or render.has_provenance(project):
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


def _json(document: dict[str, Any], status: int = 200) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(
        json.dumps(document) + "\n",
        status=status,
        **{"Content-Type": "application/json", "Cache-Control": "no-store"},
    )
