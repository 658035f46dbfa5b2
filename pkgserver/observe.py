"""What the admin sees of a running server: Prometheus metrics and the access log.

``Observer.wrap(start_response)`` is called once per request by the app (around its fast path
and its routes), and ``Observer.done`` records the request when the app has answered: its
route (a fixed set of names, never the path: labels must stay few), status, latency (to the
response's start; a download's streaming is not in it), and the bytes its Content-Length
announced. The access log line is queued at the same moment, and written by the
:class:`AccessLog`'s thread.

The access log never holds credentials: the user field is the name that authenticated
(``REMOTE_USER``, set by the app after a good password), and the request line is rebuilt from
the method, path and query, so a URL's ``user:password@`` can never reach it.
"""

from __future__ import annotations

import collections
import datetime
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any
from urllib.parse import quote

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .catalog import STATUSES, Catalog, Snapshot

__all__ = ["ACCESS_LOGGER", "AccessLog", "JsonFormatter", "Observer", "route_of"]

ACCESS_LOGGER = "pkgserver.access"
LOG_FORMATS = ("combined", "common", "json")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_DURATION_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def route_of(method: str, path: str, content_type: str = "", health: str = "/health") -> str:
    """A request's route name for the metrics: one of a small fixed set."""
    if path.startswith("/_/oidc/"):
        return "oidc"
    if method == "POST":
        if path in ("/RPC2", "/pypi") or content_type.startswith(("text/xml", "application/xml")):
            return "xmlrpc"
        if path in ("/", "/legacy", "/legacy/"):
            return "upload"
        return "other"
    if path.startswith("/simple/"):
        return "simple_index" if path == "/simple/" else "simple_project"
    if path.startswith("/packages/"):
        if path.endswith(".metadata"):
            return "metadata"
        return "signature" if path.endswith(".asc") else "file"
    if path.startswith("/pypi/") and path.endswith("/json"):
        return "json_api"
    if path == "/":
        return "home"
    if path.startswith("/project/"):
        return "web_project"
    if path.startswith("/-/projects"):
        return "web_projects"
    if path.startswith("/-/static/"):
        return "static"
    if path == "/metrics":
        return "metrics"
    if path == health:
        return "health"
    if path.startswith(("/+simple/", "/legacy/+simple/")):
        return "simple_project"
    if path.startswith("/proxy/"):
        return "proxy_metadata" if path.endswith(".metadata") else "proxy_file"
    return "other"


def upload_outcome(status: int, message: str = "") -> str:
    """An upload's answer as a label: published, exists, conflict, denied, too_large,
    invalid or error."""
    if status == 200:
        return "exists" if "already exists" in message else "published"
    if status == 409:
        return "conflict"
    if status in (401, 403):
        return "denied"
    if status == 413:
        return "too_large"
    if status < 500:
        return "invalid"
    return "error"


class _CatalogCollector(Collector):
    """Catalog sizes, read from the current snapshot at scrape time (totals once per
    snapshot: summing 100,000 sizes at every scrape would be waste)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._totals: tuple[Snapshot, int, int, dict[str, int]] | None = None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        snap = self.catalog.snapshot
        if self._totals is None or self._totals[0] is not snap:
            size = sum(f.size for f in snap.files.values())
            yanked = sum(len(p.yanked) for p in snap.projects.values() if p.yanked)
            marked = dict.fromkeys(STATUSES[1:], 0)  # PEP 792's, but the default (active)
            for p in snap.projects.values():
                if p.status is not None:
                    marked[p.status.status] += 1
            self._totals = (snap, size, yanked, marked)
        _, size, yanked, marked = self._totals
        yield GaugeMetricFamily("pkgserver_projects", "Projects hosted", value=len(snap.projects))
        yield GaugeMetricFamily(
            "pkgserver_files", "Distribution files listed", value=len(snap.files)
        )
        yield GaugeMetricFamily("pkgserver_files_bytes", "Bytes of the files listed", value=size)
        yield GaugeMetricFamily("pkgserver_yanked_releases", "Releases yanked", value=yanked)
        statuses = GaugeMetricFamily(
            "pkgserver_projects_marked",
            "Projects hosted with a PEP 792 status other than active",
            labels=["status"],
        )
        for status, count in marked.items():
            statuses.add_metric([status], count)
        yield statuses


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and exception)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        doc["message"] = record.getMessage()
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def _clean(value: str) -> str:
    """A header value for a quoted log field: quotes, backslashes and control characters
    escaped (Apache's way), so that no value can end the field or forge a line."""
    if value.isprintable() and '"' not in value and "\\" not in value:
        return value
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif not ch.isprintable():
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


class _WithoutCreated(Collector):
    """The registry's metrics without their *_created series: they double the exposition and
    no dashboard reads them. Filtered here, per registry, rather than by the library's switch
    (disable_created_metrics), which is process-wide."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Any]:
        for family in self.registry.collect():  # (fresh objects on every collect)
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


class Observer:
    def __init__(
        self,
        catalog: Catalog | None = None,
        *,
        access: AccessLog | None = None,
        health: str = "/health",
        process: bool = True,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.health = health
        self.access = access
        r = self.registry
        self.requests = Counter(
            "pkgserver_requests",
            "HTTP requests answered",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "pkgserver_request_duration_seconds",
            "Time to answer a request (to the response's start)",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.sent = Counter(
            "pkgserver_response_bytes",
            "Bytes of response bodies announced (Content-Length)",
            ["route"],
            registry=r,
        )
        self.uploads = Counter(
            "pkgserver_uploads", "Upload requests by outcome", ["outcome"], registry=r
        )
        self.auth_failures = Counter(
            "pkgserver_auth_failures",
            "Requests refused by authentication (missing: no credentials; invalid: wrong "
            "ones or none possible; shed: too many password checks at once)",
            ["reason"],
            registry=r,
        )
        self.decisions = Counter(
            "pkgserver_access_decisions",
            "Tokens and rights at work: token used/unknown/expired/no-owner/refused (its "
            "scope lacks the action), token created/revoked/minted, rights refused (a "
            "per-project right missing), oidc granted/refused",
            ["what", "outcome"],
            registry=r,
        )
        self.trusted_publishing = Counter(
            "pkgserver_trusted_publishing",
            "OIDC token exchanges (POST /_/oidc/mint-token) by outcome: granted, or the reason "
            "of the refusal",
            ["outcome"],
            registry=r,
        )
        self.scans = Histogram(
            "pkgserver_scan_duration_seconds",
            "Scans of the package directories (initial: at start; rescan: later)",
            ["kind"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.hashes = Histogram(
            "pkgserver_hash_duration_seconds",
            "Reading and hashing one file in the indexer thread (files that appear or change "
            "while running; a first scan of many files uses worker processes, not counted)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.initial_scan = Gauge(
            "pkgserver_initial_scan_seconds", "Duration of the scan at start", registry=r
        )
        # The caching proxy (--proxy); zero without it.
        self.proxy_requests = Counter(
            "pkgserver_proxy_requests",
            "Requests for pages and files of the upstream index by outcome: hit (served from "
            "the cache), miss (fetched), revalidated (asked again, 304 or new), stale (served "
            "from the cache, the upstream failing), error (nothing to serve), refused "
            "(--proxy-offline, not cached), rejected (a download whose bytes did not have the "
            "sha256 the upstream's page lists: not kept)",
            ["what", "outcome"],
            registry=r,
        )
        self.proxy_bytes = Counter(
            "pkgserver_proxy_bytes",
            "Bytes fetched from the upstream index (fetched) and served from the cache (served)",
            ["direction"],
            registry=r,
        )
        self.proxy_evictions = Counter(
            "pkgserver_proxy_evictions",
            "Cached upstream files evicted to keep the cache within --proxy-cache-size",
            registry=r,
        )
        self.proxy_cache_bytes = Gauge(
            "pkgserver_proxy_cache_bytes", "Bytes of upstream files in the cache", registry=r
        )
        self.proxy_cache_files = Gauge(
            "pkgserver_proxy_cache_files", "Upstream files in the cache", registry=r
        )
        if catalog is not None:
            r.register(_CatalogCollector(catalog))
        if process:
            ProcessCollector(registry=r)
        # Children of labelled metrics, found once: .labels() takes a lock and builds a tuple.
        self._children: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format, and its content type."""
        return generate_latest(_WithoutCreated(self.registry)), CONTENT_TYPE_LATEST

    # -- hooks for the indexer and the app --
    def scan_done(self, kind: str, seconds: float) -> None:
        self.scans.labels(kind).observe(seconds)
        if kind == "initial":
            self.initial_scan.set(seconds)

    def hash_done(self, seconds: float) -> None:
        self.hashes.observe(seconds)

    def upload_done(self, status: int, message: str = "") -> None:
        self.uploads.labels(upload_outcome(status, message)).inc()

    def auth_failed(self, reason: str) -> None:
        self.auth_failures.labels(reason).inc()

    def access_decision(self, what: str, outcome: str) -> None:
        self.decisions.labels(what, outcome).inc()

    def trusted_publishing_done(self, outcome: str) -> None:
        """An OIDC token exchange's outcome (``TrustedPublishing(on_outcome=...)``): "granted"
        or one of oidc's fixed refusal reasons."""
        self.trusted_publishing.labels(outcome).inc()

    def proxy_event(self, what: str, outcome: str) -> None:
        self.proxy_requests.labels(what, outcome).inc()

    def proxy_fetched(self, n: int) -> None:
        self.proxy_bytes.labels("fetched").inc(n)

    def proxy_served(self, n: int) -> None:
        self.proxy_bytes.labels("served").inc(n)

    def proxy_evicted(self, n: int) -> None:
        self.proxy_evictions.inc(n)

    def proxy_cache_size(self, files: Callable[[], int], size: Callable[[], int]) -> None:
        """The cache's size, asked at each scrape."""
        self.proxy_cache_files.set_function(files)
        self.proxy_cache_bytes.set_function(size)

    # -- per request --
    def wrap(self, start_response: Callable[..., Any], box: list[Any]) -> Callable[..., Any]:
        """A start_response that notes the status and Content-Length in ``box``."""

        def noting(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            box[0] = status
            for key, value in headers:
                if key == "Content-Length" or key.lower() == "content-length":
                    box[1] = value
                    break
            if exc_info is not None:
                return start_response(status, headers, exc_info)
            return start_response(status, headers)

        return noting

    def done(self, environ: dict[str, Any], box: list[Any], started: float) -> None:
        elapsed = time.perf_counter() - started
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        route = route_of(method, path, environ.get("CONTENT_TYPE", ""), self.health)
        status = (box[0] or "500").split(" ", 1)[0]
        length = box[1]
        key = (route, method if method in ("GET", "HEAD", "POST") else "other", status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(*key),
                self.latency.labels(route),
                self.sent.labels(route),
            )
            if len(self._children) < 2000:
                self._children[key] = children
        children[0].inc()
        children[1].observe(elapsed)
        if length and method != "HEAD":
            try:
                children[2].inc(int(length))
            except ValueError:
                pass
        if self.access is not None:
            # The request thread only queues the raw fields; the writer's thread formats and
            # writes them in batches (one write per batch, not per line).
            self.access.put(
                (
                    time.time(),
                    environ.get("REMOTE_ADDR", "-"),
                    environ.get("REMOTE_USER"),
                    method,
                    path,
                    environ.get("QUERY_STRING", ""),
                    environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
                    status,
                    None if method == "HEAD" else length,  # HEAD sends no body
                    elapsed,
                    route,
                    environ.get("HTTP_REFERER", ""),
                    environ.get("HTTP_USER_AGENT", ""),
                )
            )


AccessRecord = tuple[float, str, Any, str, str, str, str, str, Any, float, str, str, str]


class AccessLog:
    """Access log lines, formatted and written by a thread of its own, in batches.

    ``put`` is a deque append: a request never waits for a terminal, a pipe or a disk, and
    pays no logging-module record. Beyond ``limit`` waiting lines (a writer that cannot keep
    up), lines are dropped and counted, never waited for.
    """

    def __init__(
        self,
        streams: Sequence[IO[str]],
        log_format: str = "combined",
        *,
        limit: int = 20000,
        interval: float = 0.2,
        thread: bool = True,
    ) -> None:
        self.streams = list(streams)
        self.log_format = log_format
        self.limit = limit
        self.interval = interval
        self.dropped = 0
        self._pending: collections.deque[AccessRecord] = collections.deque()
        self._stamp: tuple[int, str] = (0, "")
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one drain at a time
        self._thread: threading.Thread | None = None
        if thread:
            self._thread = threading.Thread(
                target=self._run, name="pkgserver-access-log", daemon=True
            )
            self._thread.start()

    def put(self, record: AccessRecord) -> None:
        if len(self._pending) < self.limit:
            self._pending.append(record)
        else:
            self.dropped += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.drain()
        self.drain()

    def close(self) -> None:
        """Write what is waiting and stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.drain()

    def drain(self) -> None:
        with self._lock:
            lines = []
            pending = self._pending
            while pending:
                lines.append(self.format(pending.popleft()))
            if not lines:
                return
            text = "\n".join(lines) + "\n"
            for stream in self.streams:
                try:
                    stream.write(text)
                    stream.flush()
                except (OSError, ValueError):
                    pass  # a closed or broken stream: the log is lost, the server goes on

    def format(self, record: AccessRecord) -> str:
        (
            when,
            remote,
            user,
            method,
            path,
            query,
            protocol,
            status,
            length,
            elapsed,
            route,
            referer,
            agent,
        ) = record
        # PATH_INFO is decoded (latin-1 per PEP 3333): quoted again, it is the path as sent,
        # without a scheme, host or userinfo of an absolute-form request line.
        target = quote(path.encode("latin-1", "replace"), safe="/:@!$&'()*+,;=-._~%")
        if query:
            target += "?" + query
        if self.log_format == "json":
            doc = {
                "time": _iso(when),
                "level": "info",
                "logger": ACCESS_LOGGER,
                "remote": remote,
                "user": user or None,
                "method": method,
                "path": target,
                "protocol": protocol,
                "status": int(status) if status.isdigit() else status,
                "bytes": int(length) if length and length.isdigit() else None,
                "duration_ms": round(elapsed * 1000, 3),
                "route": route,
                "referer": referer or None,
                "user_agent": agent or None,
            }
            return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
        second = int(when)
        if second != self._stamp[0]:  # formatted once a second, not once a line
            self._stamp = (second, time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(second)))
        line = (
            f"{remote} - {_clean(user) if user else '-'} [{self._stamp[1]}] "
            f'"{_clean(method)} {_clean(target)} {_clean(protocol)}" {status} {length or "-"}'
        )
        if self.log_format == "combined":
            line += f' "{_clean(referer) or "-"}" "{_clean(agent) or "-"}"'
        return line


def _iso(when: float) -> str:
    moment = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
