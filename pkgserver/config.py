"""Settings: one frozen dataclass fed by the CLI, PKGSERVER_* environment variables, defaults.

Each field is an option of ``pkgserver run``, declared (flags, variables, type, help, this same
default) in pkgserver.options; tests/test_options.py checks that the two agree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["ACTIONS", "DEFAULT_FALLBACK_URL", "UPLOAD_TIMES", "Settings", "parse_actions"]

DEFAULT_FALLBACK_URL = "https://pypi.org/simple/"
# What -a/--authenticate can protect (pypiserver's names).
# "metrics" (ours) protects /metrics alone; /metrics also needs whatever "list" needs.
ACTIONS = ("update", "download", "list", "metrics")
# What --upload-time can serve: when a file was uploaded or first seen (recorded), or its mtime.
UPLOAD_TIMES = ("first-seen", "mtime")


@dataclasses.dataclass(frozen=True)
class Settings:
    roots: tuple[str, ...] = ()
    host: str = "0.0.0.0"
    port: int = 8080
    password_file: str | None = None  # None: no htpasswd (-P . or not given)
    rights_file: str | None = None  # --rights: per-project rights, trusted publishers
    authenticate: frozenset[str] = frozenset({"update"})
    overwrite: bool = False
    max_upload_size: int = 1024**3  # bytes; larger uploads get 413
    max_file_size: int | None = None  # bytes; larger files are not listed (None: max_upload_size)
    fallback_url: str = DEFAULT_FALLBACK_URL
    disable_fallback: bool = False
    proxy: bool = False  # projects not hosted: served through a cache of the fallback index
    proxy_ttl: float = 600.0  # seconds a cached upstream page is served before revalidating
    proxy_offline: bool = False  # serve only what the cache holds
    proxy_cache_size: int | None = None  # bytes of upstream files kept (None: no bound)
    proxy_cache: str | None = None  # None: .pkgserver/proxy of the first root (or bucket)
    hash_algo: str | None = "sha256"  # None: no hash fragment on HTML links
    welcome_file: str | None = None
    health_endpoint: str = "/health"
    server_base_url: str | None = None  # an absolute URL, or (pypiserver's form) a path
    trust_proxy: bool = False  # honour X-Forwarded-Host/-Proto/-Prefix (and -For, in the log)
    cache_control: int | None = None  # seconds: Cache-Control max-age on downloads
    redirect_downloads: bool = False  # s3://: downloads redirected to a presigned URL
    show_uploaders: bool = False  # uploaders' names on project pages even when listing is open
    cache_dir: str | None = None  # None: no persistent index cache
    rescan_interval: float = 0.0  # 0: rely on inotify (a fallback interval applies without it)
    upload_time: str = "first-seen"  # one of UPLOAD_TIMES
    watch: bool = True
    threads: int = 16
    connection_limit: int = 900
    connections_per_address: int = 100  # 0: no cap (behind a proxy, every client is the proxy)
    header_timeout: float = 15.0  # seconds to send a request's headers once they have begun
    channel_timeout: float = 60.0  # seconds a connection may stay idle
    shutdown_timeout: float = 5.0
    verbosity: int = 0
    log_file: str | None = None
    log_stream: str | None = "stderr"
    log_frmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # pypiserver's --log-frmt
    log_format: str = "combined"  # of the access log and, for "json", of every line
    access_log: bool = True

    @property
    def file_size_limit(self) -> int:
        """Files larger than this are not listed: --max-file-size, else what uploads allow."""
        return self.max_file_size if self.max_file_size is not None else self.max_upload_size

    @property
    def extra_algos(self) -> tuple[str, ...]:
        """The hash computed beside sha256 for the links (--hash-algo), if any."""
        algo = self.hash_algo
        return (algo,) if algo and algo != "sha256" else ()

    @property
    def absolute_base_url(self) -> str | None:
        """--server-base-url when it is an absolute URL (a path only names the prefix)."""
        url = self.server_base_url
        return url if url and not url.startswith("/") else None

    @property
    def base_path(self) -> str:
        """The path of --server-base-url without its final slash ("" for none, or "/")."""
        if not self.server_base_url:
            return ""
        return urlsplit(self.server_base_url).path.rstrip("/")

    @property
    def proxying(self) -> bool:
        """Whether projects not hosted are served through the cache (--proxy)."""
        return (self.proxy or self.proxy_offline) and self.fallback is not None

    @property
    def proxy_location(self) -> str:
        """Where the proxy's cache lives: --proxy-cache, else .pkgserver/proxy beside the
        first root's packages (a folder, or the bucket's prefix)."""
        if self.proxy_cache:
            return self.proxy_cache
        return self.roots[0].rstrip("/") + "/.pkgserver/proxy"

    @property
    def fallback(self) -> str | None:
        """The URL prefix projects not hosted here are redirected to, or None."""
        if self.disable_fallback or not self.fallback_url:
            return None
        url = self.fallback_url
        return url if url.endswith("/") else url + "/"


def parse_actions(value: str | Iterable[str]) -> frozenset[str]:
    """``update,download`` or ``.`` (nothing), or actions already apart (the default) -> a set
    of actions; raises ValueError."""
    items: list[str] = []
    for part in [value] if isinstance(value, str) else list(value):
        items.extend(p.strip().lower() for p in part.replace(",", " ").split())
    if items == ["."] or not items:
        return frozenset()
    unknown = [i for i in items if i not in ACTIONS]
    if unknown:
        raise ValueError(
            f"unknown action(s) {', '.join(unknown)}: choose from {', '.join(ACTIONS)} or '.'"
        )
    return frozenset(items)
