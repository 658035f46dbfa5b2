"""The WSGI application: one Site (site.py) served by the routes for machines (api.py) and
for people (pages.py), behind a thin WSGI layer that refuses undecodable paths, applies
--trust-proxy and --server-base-url's prefix, and lets the fast path answer first.

Errors are typed (errors.py) and turned into responses in one place (answers.problem).
Redirects use relative ``Location`` values unless ``--server-base-url`` is set, so the server
works behind a path-prefix proxy and a spoofed ``Host`` cannot steer them.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import bottle

from . import answers
from .answers import Answer
from .api import InstallerAPI
from .auth import Authenticator, RightsFile
from .catalog import Catalog, DistFile
from .config import Settings
from .errors import Unavailable, UsageError
from .hosted import HostedNames
from .observe import Observer
from .pages import WELCOME_NAMES, Pages, WelcomeError, load_welcome
from .records import RecordDir
from .rights import Publisher
from .scan import MetadataStore
from .site import Site
from .storage import Records, Storage, Uploaders
from .tokens import RECHECK, TokenStore
from .upload import Uploads

if TYPE_CHECKING:  # (oidc needs the [oidc] extra)
    from .oidc import TrustedPublishing
    from .proxy import ProxyCache

__all__ = ["WELCOME_NAMES", "WelcomeError", "create_app", "load_welcome"]

log = logging.getLogger(__name__)


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
                start_response(answers.STATUS_LINES[status], headers)
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


def default_auth(
    settings: Settings, records: Sequence[Records] | None, observer: Observer | None = None
) -> Authenticator:
    """The htpasswd file, the rights file and the tokens kept in the first records folder (a
    bucket's, given as ``records``, is re-read when the service is told it changed)."""
    bucket = records is not None and not isinstance(records[0], RecordDir)
    tokens = TokenStore(
        records[0] if records else RecordDir(settings.roots[0]),
        reload_every=math.inf if bucket else RECHECK,
    )
    return Authenticator(
        settings.password_file,
        settings.authenticate,
        settings.threads,
        rights=RightsFile(settings.rights_file),
        tokens=tokens,
        on_decision=observer.access_decision if observer is not None else None,
    )


MINTED_FOR = 900.0  # seconds a token minted by trusted publishing works (PyPI's 15 minutes)


def default_trusted(
    auth: Authenticator,
    records: Sequence[Records] | None,
    settings: Settings,
    observer: Observer | None = None,
) -> TrustedPublishing | None:
    """Trusted publishing over ``auth``'s tokens and rights file, when PyJWT is installed
    (the [oidc] extra; without it /_/oidc/ answers 404 and says so). Publishers and issuers
    are read from the rights file at each exchange; the audience at start."""
    from . import oidc

    store = auth.tokens
    if not oidc.HAVE_JWT or store is None:
        return None
    rights = auth.rights

    def mint(
        publisher: Publisher, projects: tuple[str, ...], claims: Mapping[str, Any]
    ) -> tuple[str, float]:
        expires = time.time() + MINTED_FOR
        run = claims.get("run_id") or claims.get("pipeline_id") or "?"
        ref = claims.get("ref") or claims.get("ref_path") or "?"
        try:
            secret, token = store.create(
                f"trusted-publisher:{publisher.kind}:{publisher.repository}",
                ["upload"],
                projects,
                expires=expires,
                description=f"{publisher.workflow} run {run} on {ref}",
                kind="oidc",
            )
        except (OSError, ValueError) as exc:  # the record cannot be written, or is full
            raise Unavailable(f"no token could be stored now: {exc}") from None
        if observer is not None:
            observer.access_decision("token", "minted")
        log.info("trusted publishing: minted token %s for %s", token.id, ", ".join(projects))
        return secret, expires

    def burn(secret: str) -> None:
        token = store.verify(secret)
        if token is not None and token.kind == "oidc":
            store.revoke(token.id)
            log.info("trusted publishing: token %s handed back, revoked", token.id)

    return oidc.TrustedPublishing(
        rights.current.audience,
        issuers=lambda: rights.current.issuers,
        publishers=lambda: rights.current.publishers,
        records=records[0] if records else RecordDir(settings.roots[0]),
        mint=mint,
        on_outcome=observer.trusted_publishing_done if observer is not None else None,
        burn=burn,
    )


def _served_root_holding(location: str, roots: Sequence[str]) -> str | None:
    """The root whose listing would take files at ``location`` for hosted ones (inside it,
    and under no dot-name), if any."""
    for root in roots:
        if root.startswith("s3://") != location.startswith("s3://"):
            continue
        if root.startswith("s3://"):
            base, where = root.rstrip("/"), location.rstrip("/")
        else:
            base, where = os.path.realpath(root), os.path.realpath(location)
        if where != base and not where.startswith(base + "/"):
            continue
        parts = [p for p in where[len(base) :].split("/") if p]
        if not any(p.startswith(".") for p in parts):
            return root
    return None


def default_proxy(settings: Settings, observer: Observer, client: Any = None) -> ProxyCache | None:
    """The caching proxy's cache (--proxy), in a folder or a bucket (--proxy-cache, else
    .pkgserver/proxy of the first root), or None without --proxy. ``client``: the bucket's
    S3 client to share."""
    if not settings.proxying:
        return None
    from .proxy import DirectoryProxyStore, Hooks, ProxyCache, ProxyStore

    location = settings.proxy_location
    served = _served_root_holding(location, settings.roots)
    if served is not None:
        # Its files would be listed as hosted: cached upstream files must never count as such.
        raise UsageError(
            f"--proxy-cache {location} is inside the package directory {served}, where its "
            "files would be served as hosted ones: give a place outside it, or under a folder "
            "whose name starts with a dot (the default is .pkgserver/proxy)"
        )
    store: ProxyStore
    if location.startswith("s3://"):
        from .s3 import S3ProxyStore

        # Downloads are written here before they go to the bucket: the spool folder the
        # bucket's uploads use (publish.Spool sweeps the folders of dead processes in its
        # base, so the base must be a folder of its own, never the cache folder itself).
        cache_dir = settings.cache_dir
        spool = os.path.join(cache_dir, "spool") if cache_dir else None
        store = S3ProxyStore(location, client=client, spool_base=spool)
    else:
        try:
            store = DirectoryProxyStore(location)
        except OSError as exc:
            raise UsageError(
                f"cannot keep the proxy's cache in {location}: {exc.strerror or exc} "
                "(--proxy-cache names another place)"
            ) from None
    fallback = settings.fallback
    assert fallback is not None
    cache = ProxyCache(
        store,
        fallback,
        ttl=settings.proxy_ttl,
        offline=settings.proxy_offline,
        max_bytes=settings.proxy_cache_size,
        hooks=Hooks(observer.proxy_event, observer.proxy_fetched, observer.proxy_evicted),
    )
    observer.proxy_cache_size(lambda: cache.cached_files, lambda: cache.cached_bytes)
    log.info(
        "proxy: projects not hosted are served from %s through the cache in %s%s",
        fallback,
        location,
        " (offline: the cache only)" if settings.proxy_offline else "",
    )
    return cache


def create_app(
    settings: Settings,
    catalog: Catalog,
    *,
    auth: Authenticator | None = None,
    metadata: MetadataStore | None = None,
    uploads: Uploads | None = None,
    storage: Storage | None = None,
    on_stale: Callable[[str], None] | None = None,
    on_published: Callable[[DistFile], None] | None = None,
    hosted: HostedNames | None = None,
    upload_log: Uploaders | None = None,
    records: Sequence[Records] | None = None,
    observer: Observer | None = None,
    ready: Callable[[], str | None] | None = None,
    trusted: TrustedPublishing | None = None,
    proxy: ProxyCache | None = None,
    fast_path: bool = True,
) -> bottle.Bottle:
    """Build the WSGI app. Everything it needs is passed in; nothing is global.

    ``ready()`` says what the server is still doing before it serves everything it found at
    start (None once it does); /health answers 503 until then. ``storage`` is where uploads
    publish (the package directories when not given), ``records`` where its yanks are kept
    (each directory's ``.pkgserver`` when not given). ``trusted`` answers /_/oidc/ (trusted
    publishing; 404 there without). ``proxy`` is the caching proxy's cache (by default, the
    one --proxy configures: ``default_proxy``). ``fast_path=False`` leaves every
    request to the routes (the tests compare both)."""
    if observer is None:
        observer = Observer(catalog, health=settings.health_endpoint)
    auth = auth or default_auth(settings, records, observer)
    if uploads is None:
        rights = auth.rights
        uploads = Uploads(
            settings.roots,
            catalog,
            overwrite=settings.overwrite,
            # A file the index would not list (--max-file-size) is not taken either.
            max_size=min(settings.max_upload_size, settings.file_size_limit),
            extra_algos=settings.extra_algos,
            on_published=on_published,
            upload_log=upload_log,
            storage=storage,
            records=records,
            # PEP 740: attestations are verified against the rights file's publishers.
            publishers=lambda project: rights.current.publishers_for(project),
        )
    site = Site(
        settings,
        catalog,
        auth=auth,
        metadata=metadata or MetadataStore(opener=uploads.storage.open),
        uploads=uploads,
        observer=observer,
        on_stale=on_stale,
        hosted=hosted,
        upload_log=upload_log,
        ready=ready,
    )
    site.trusted = (
        trusted if trusted is not None else default_trusted(site.auth, records, settings, observer)
    )
    if proxy is None:  # (a bucket's cache shares the bucket's client, when there is one)
        proxy = default_proxy(settings, observer, getattr(uploads.storage, "client", None))
    site.proxy = proxy
    app = _App()
    app.prefix = settings.base_path
    app.trust_proxy = settings.trust_proxy
    app.observer = observer
    app.config["json.enable"] = False
    for code in (400, 404, 405, 413, 500):
        app.error(code)(answers.plain_error)
    api = InstallerAPI(site)
    api.install(app)
    Pages(site).install(app)
    api.install_shortcuts(app)  # last: they take any first path segment
    if fast_path:
        app.fast = api.fast
    return app
