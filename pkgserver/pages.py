"""The pages for people: the home page (or pypiserver's --welcome template), the project list
and search, a page per project and release, and their stylesheet and script.

Server-rendered bottle templates (templates/), which escape everything; errors are HTML pages
too. What is hosted is shown only to requests that may list it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode, urlsplit

import bottle

from . import __version__, web
from .answers import NO_STORE, etag_matches, guarded, header, reason
from .catalog import Project
from .distfile import is_prerelease, is_valid_project_name, normalize, version_key
from .errors import BadRequest, Forbidden, HTTPProblem, NotFound, Unavailable
from .fsutil import open_regular
from .metadata import Details, parse_details
from .proxy import NotCached, UpstreamDown, UpstreamGone
from .rights import ACTIONS, check_patterns
from .site import Site
from .tokens import TokenStore, parse_duration

__all__ = ["WELCOME_NAMES", "Pages", "WelcomeError", "load_welcome"]

log = logging.getLogger(__name__)

NO_CACHE = "no-cache"  # the web pages: kept, but asked for again before each use

TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")
STATIC = os.path.join(os.path.dirname(__file__), "static")


class Pages:
    """The web pages of one Site."""

    def __init__(self, site: Site) -> None:
        self.site = site
        settings = site.settings
        self.welcome = (
            load_welcome(settings.welcome_file, counts_hidden="list" in settings.authenticate)
            if settings.welcome_file
            else None
        )
        self.welcome_failed = False
        self.templates = {
            name: bottle.SimpleTemplate(name=name, lookup=[TEMPLATES])
            for name in ("home", "projects", "project", "message", "tokens", "cached")
        }
        self.assets = _Assets.load()

    def install(self, app: bottle.Bottle) -> None:
        """Adds the routes to ``app``. Index-wide pages live under /-/, which no project name
        can take; project pages match pypi.org's URLs."""
        get = app.get
        get("/", callback=guarded(self.index_page))
        get("/-/static/<name>", callback=guarded(self.static_asset))
        get("/favicon.ico", callback=guarded(self.favicon))
        get("/-/projects", callback=lambda: self.site.redirect("/-/projects/"))
        get("/-/projects/", callback=self.web_problem(self.projects_page))
        get("/project/<name>", callback=guarded(self.project_no_slash))
        get("/project/<name>/", callback=self.web_problem(self.project_view))
        get("/project/<name>/<version>", callback=guarded(self.project_no_slash))
        get("/project/<name>/<version>/", callback=self.web_problem(self.project_view))
        get("/-/tokens", callback=lambda: self.site.redirect("/-/tokens/"))
        get("/-/tokens/", callback=self.web_problem(self.tokens_page))
        app.post("/-/tokens/create", callback=self.web_problem(self.create_token))
        app.post("/-/tokens/revoke", callback=self.web_problem(self.revoke_token))

    # -- a signed-in user's tokens ----------------------------------------------------------------
    def _token_owner(self) -> tuple[str, TokenStore]:
        site = self.site
        store = site.auth.tokens
        if store is None:
            raise NotFound("tokens are not kept by this server")
        return site.sign_in(), store

    def tokens_page(self, secret: str = "", notice: str = "", status: int = 200) -> Any:
        user, store = self._token_owner()
        res = self.html_page(
            "tokens",
            "API tokens",
            status=status,
            user=user,
            tokens=store.tokens(user),
            secret=secret,
            notice=notice,
            actions=ACTIONS,
            now=time.time(),
        )
        res.set_header("Cache-Control", "no-store")  # it may show a new token's secret
        return res

    def create_token(self) -> Any:
        site = self.site
        site.refuse_cross_site()
        user, store = self._token_owner()
        form = bottle.request.forms
        actions = [a for a in form.getall("action") if a in ACTIONS]
        if not actions:
            raise BadRequest("choose at least one action")
        try:
            projects = check_patterns(
                (form.getunicode("projects") or "").split()[:50] or ["*"], "projects"
            )
            expires_in = form.getunicode("expires") or ""
            expires = time.time() + parse_duration(expires_in) if expires_in else None
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        projects = () if projects == ("*",) else projects
        wider = site.auth.rights.current.wider_than(user, actions, projects)
        if wider:
            site.observer.access_decision("token", "refused")
            raise Forbidden(f"the token would be wider than your rights: {wider}")
        description = (form.getunicode("description") or "")[:200]
        try:
            secret, token = store.create(
                user, actions, projects, expires=expires, description=description
            )
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        except OSError as exc:
            raise Unavailable(f"the token could not be stored: {exc.strerror or exc}") from None
        site.observer.access_decision("token", "created")
        log.info("%s created token %s (%s)", user, token.id, ", ".join(actions))
        return self.tokens_page(secret=secret, status=201)

    def revoke_token(self) -> Any:
        site = self.site
        site.refuse_cross_site()
        user, store = self._token_owner()
        token_id = (bottle.request.forms.getunicode("id") or "")[:40]
        try:
            gone = store.revoke(token_id, owner=user)
        except OSError as exc:
            raise Unavailable(f"the token could not be revoked: {exc.strerror or exc}") from None
        if gone is None:
            raise NotFound("you have no such token")
        site.observer.access_decision("token", "revoked")
        log.info("%s revoked token %s", user, gone.id)
        return self.tokens_page(notice=f"Token pkgserver-{gone.id}-… is revoked.")

    # -- helpers -----------------------------------------------------------------------------------
    def html_page(self, template: str, title: str, status: int = 200, **values: Any) -> Any:
        path = bottle.request.path
        layout = {
            "title": title,
            "root": "../" * (path.count("/") - 1) or "./",
            "asset": self.assets.version,
            "version": __version__,
            "query": values.get("query", ""),
        }
        body = self.templates[template].render(
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
                # Pages change with every upload and differ by credentials: a browser may keep
                # one but asks again before showing it; an error page is not kept at all.
                "Cache-Control": NO_CACHE if status < 400 else NO_STORE,
            },
        )

    def web_problem(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Errors of the web pages as HTML pages (the API routes answer plain text)."""

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except HTTPProblem as exc:  # with its headers (WWW-Authenticate, Retry-After)
                res = self.html_page(
                    "message",
                    exc.message,
                    status=exc.status,
                    heading=reason(exc.message),
                    text=exc.message,
                )
                for key, value in exc.headers.items():
                    res.set_header(key, value)
                return res

        wrapper.__name__ = fn.__name__
        return guarded(wrapper)

    # -- the home page -----------------------------------------------------------------------------
    def index_page(self) -> Any:
        site = self.site
        show = site.may_list()
        snap = site.listing()
        if self.welcome is not None:  # --welcome FILE, as in pypiserver
            found = self.welcome_page(show)
            if found is not None:
                return found
        return self.html_page(
            "home",
            "Home",
            counts=(len(snap.projects), snap.file_count) if show else None,
            recent=web.recent_releases(snap) if show else None,
            fallback=site.fallback,
            url=site.base_url(),
        )

    def welcome_page(self, show: bool) -> Any:
        """pypiserver's --welcome template, or None (after one log line) when it fails."""
        assert self.welcome is not None
        site = self.site
        snap = site.listing()
        base = site.base_url()
        path = urlsplit(base).path  # pypiserver's PACKAGES and SIMPLE are paths
        try:
            body = self.welcome.render(
                URL=base,
                VERSION=__version__,
                # pypiserver's NUMPKGS counts files ("serving 2 packages" for a wheel and
                # an sdist); NUMPROJECTS counts projects.
                NUMPKGS=snap.file_count if show else None,
                NUMFILES=snap.file_count if show else None,
                NUMPROJECTS=len(snap.projects) if show else None,
                PACKAGES=path + "packages/",
                SIMPLE=path + "simple/",
                fallback=site.fallback,
            )
        except Exception:  # checked at start; whatever else it does, never a 500
            if not self.welcome_failed:  # once: any visitor could otherwise fill the log
                self.welcome_failed = True
                log.exception("the --welcome template failed; showing the built-in page")
            return None
        return bottle.HTTPResponse(
            body, **{"Content-Type": "text/html; charset=utf-8", "Cache-Control": NO_CACHE}
        )

    def static_asset(self, name: str) -> Any:
        found = self.assets.files.get(name)
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
        if etag_matches(header("If-None-Match"), etag):
            return bottle.HTTPResponse(status=304, **headers)
        return bottle.HTTPResponse(body, **headers)

    def favicon(self) -> Any:
        # Browsers ask for it on their own; without this route pypiserver's /<name> shortcut
        # would send them to /simple/favicon-ico/, and from there to the fallback index.
        raise NotFound("no icon")

    # -- the project list --------------------------------------------------------------------------
    def projects_page(self) -> Any:
        site = self.site
        site.require("list")
        snap = site.listing()
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

        proxy = site.proxy
        cached: list[str] = []
        if proxy is not None and page == 1:
            wanted = normalize(query) if query else ""
            cached = [n for n in proxy.names() if wanted in n and not site.is_hosted(n, snap)]
        return self.html_page(
            "projects",
            f"Search: {query}" if query else "Projects",
            cached=cached,
            upstream=site.fallback or "",
            query=query,
            rows=found[first : first + web.PAGE_SIZE],
            total=len(found),
            first=first,
            page=page,
            pages=pages,
            link=link,
        )

    # -- project pages -----------------------------------------------------------------------------
    def project_no_slash(self, name: str, version: str | None = None) -> Any:
        tail = f"{version}/" if version is not None else ""
        return self.site.redirect(f"/project/{normalize(name)}/{tail}")

    def release_details(self, project: Project, version: str) -> tuple[Details | None, str]:
        """A release's metadata for people and its description as safe HTML, made once per
        project snapshot (rendering a README can take a docutils run)."""
        key = ("web-details", version)
        cached = project.cache.get(key)
        if cached is None:
            meta = self.site.release_metadata(project, version)
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

    def project_view(self, name: str, version: str | None = None) -> Any:
        site = self.site
        if len(name) > 200 or (version is not None and len(version) > 200):
            raise NotFound("no such project")
        site.require("list", normalize(name))
        project = site.catalog.snapshot.project(normalize(name))
        if project is None:
            return self.cached_view(name)
        if name != project.name:
            return site.redirect(f"/project/{project.name}/" + (f"{version}/" if version else ""))
        if version is None:
            version = project.current
        elif version not in project.versions:
            same = web.same_version(project.versions, version)
            if same is None:
                raise NotFound(f"{project.display_name} has no version {version}")
            return site.redirect(f"/project/{project.name}/{same}/")
        if project.offered:
            details, description = self.release_details(project, version)
        else:  # quarantined (PEP 792): its files are neither offered nor read for the page
            details, description = None, ""
        history = list(reversed(project.versions))
        shown = history[: web.MAX_RELEASES]
        if version not in shown:
            shown.append(version)
        return self.html_page(
            "project",
            f"{project.display_name} {version}",
            project=project,
            version=version,
            yank=project.yank_of(version),
            details=details,
            description=description,
            install=self.install_command(project, version) if project.offered else None,
            shown=shown,
            older=[v for v in history[web.MAX_RELEASES :] if v != version],
            uploader=self.uploader_of(),
        )

    def cached_view(self, name: str) -> Any:
        """The page of a project cached from the upstream (--proxy): what the cache holds,
        marked as not hosted. Read from the cache only: a page view never asks the upstream."""
        site, proxy = self.site, self.site.proxy
        wanted = normalize(name)
        if proxy is None or not is_valid_project_name(name) or site.is_hosted(wanted):
            raise NotFound(f"{name} is not hosted here")  # (a name, not a path in the cache)
        try:
            page = proxy.page(wanted, revalidate=False) if proxy.is_cached(wanted) else None
        except (NotCached, UpstreamDown, UpstreamGone):
            page = None
        if page is None:
            raise NotFound(f"{name} is neither hosted nor cached here")
        if name != wanted:
            return site.redirect(f"/project/{wanted}/")
        files = sorted(page.files, key=lambda f: version_key(f.version), reverse=True)
        return self.html_page(
            "cached",
            f"{page.name} (cached)",
            page=page,
            shown=files[:200],
            cached=proxy.cached_names(wanted),
            kept=len(proxy.cached_names(wanted)),
            upstream=site.fallback or "",
            install=f"pip install {page.name}",
        )

    def install_command(self, project: Project, version: str) -> str:
        """The pip line for ``version``: unpinned only where pip would take this very release,
        not when it is not the newest, nor a pre-release or a yanked one (pip skips those
        unless pinned)."""
        plain = version == project.current and project.yank_of(version) is None
        pin = "" if plain and not is_prerelease(version) else f"=={version}"
        option = "--index-url" if self.site.fallback else "--extra-index-url"
        url = self.site.base_url() + "simple/"
        return f"pip install {option} {url} {project.display_name}{pin}"

    def uploader_of(self) -> Callable[[Any], str | None] | None:
        """Who uploaded a file, for the page; None to leave the column out. Login names are for
        those who may list with credentials, or with --show-uploaders; on an open index they
        would tell anyone whom to phish."""
        site = self.site
        upload_log = site.upload_log
        if upload_log is None:
            return None
        if not (site.settings.show_uploaders or site.auth.requires("list")):
            return None
        return lambda f: upload_log.uploader(f.relpath, f.sha256)


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
