"""Settings: one frozen dataclass fed by the CLI, PKGSERVER_* environment variables, defaults."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

__all__ = ["ACTIONS", "DEFAULT_FALLBACK_URL", "Settings", "parse_actions"]

DEFAULT_FALLBACK_URL = "https://pypi.org/simple/"
# What -a/--authenticate can protect (pypiserver's names).
# "metrics" (ours) protects /metrics alone; /metrics also needs whatever "list" needs.
ACTIONS = ("update", "download", "list", "metrics")


@dataclasses.dataclass(frozen=True)
class Settings:
    roots: tuple[str, ...] = ()
    host: str = "0.0.0.0"
    port: int = 8080
    password_file: str | None = None  # None: no htpasswd (-P . or not given)
    authenticate: frozenset[str] = frozenset({"update"})
    overwrite: bool = False
    max_upload_size: int = 1024**3  # bytes; larger uploads get 413
    fallback_url: str = DEFAULT_FALLBACK_URL
    disable_fallback: bool = False
    hash_algo: str | None = "sha256"  # None: no hash fragment on HTML links
    welcome_file: str | None = None
    health_endpoint: str = "/health"
    server_base_url: str | None = None
    cache_dir: str | None = None  # None: no persistent index cache
    rescan_interval: float = 0.0  # 0: rely on inotify (a fallback interval applies without it)
    watch: bool = True
    threads: int = 16
    connection_limit: int = 400
    shutdown_timeout: float = 5.0
    verbosity: int = 0
    log_file: str | None = None
    log_stream: str | None = "stderr"
    log_frmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # pypiserver's --log-frmt
    log_format: str = "combined"  # of the access log and, for "json", of every line
    access_log: bool = True

    @property
    def fallback(self) -> str | None:
        """The URL prefix projects not hosted here are redirected to, or None."""
        if self.disable_fallback or not self.fallback_url:
            return None
        url = self.fallback_url
        return url if url.endswith("/") else url + "/"


def parse_actions(value: str | Sequence[str]) -> frozenset[str]:
    """``update,download`` or ``.`` (nothing) -> a set of actions; raises ValueError."""
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
