"""`pkgserver run`: the parts of one running server, how they tell each other things, and its
life (first scan, listen, serve, stop).

Who tells whom (each a plain callback, set here and nowhere else):

    catalog   on_new_projects -> hosted.add         a name that appears is claimed for good
    indexer   on_claim        -> hosted.add         a name seen on disk, even unreadable
    indexer   published       -> upload_log.published  upload times of files uploaded before
                                                    they were recorded
              (the indexer is the directory's ChangeFeed, see storage.py)
    indexer   on_tick         -> reload_records     yanks and project statuses edited on disk
                                                    reach the catalog
    s3feed    on_tick         -> bucket_listed      (a bucket) yanks, statuses, hosted names,
                                                    uploaders re-read after each listing
              on_records      -> records_changed    another replica changed a record (tokens too)
              on_files        -> upload_log.refresh another replica published or removed files
    indexer   on_scan/on_hash -> observer           scan and hash durations (metrics)
    app       on_stale        -> indexer.recheck    a download found its file changed
    app       on_published    -> indexer.remember   an upload goes into the index cache and
                                                    the upload-times record
    app       ready           -> indexer.ready      /health is 503 until the first scan is listed
"""

from __future__ import annotations

import logging
import math
import os
import signal
from collections.abc import Callable
from typing import Any

from . import __version__
from .app import create_app, default_auth
from .auth import Authenticator
from .cache import DescriptionCache
from .catalog import Catalog
from .config import Settings
from .errors import UsageError
from .hosted import HostedNames
from .indexer import Indexer, ScanInterrupted
from .observe import AccessLog, Observer
from .options import SELECT_CONNECTIONS
from .publish import sweep_temp_files
from .records import (
    HOSTED_FILE,
    STATUS_FILE,
    YANKED_FILE,
    RecordDir,
    Statuses,
    UploadLog,
    UploadTimes,
    Yanks,
)
from .scan import MetadataStore
from .server import make_server, serve, stop
from .storage import ChangeFeed, DirectoryStorage, Records, Storage, Uploaders
from .tokens import TOKENS_FILE

__all__ = ["Service", "listening"]

log = logging.getLogger("pkgserver")

OBJECT_STORE_RESCAN = 60.0  # seconds between listings of a bucket (--rescan-interval)


class Service:
    """One `pkgserver run`: built whole in ``__init__``, then ``run()`` until a signal."""

    def __init__(self, settings: Settings, access: AccessLog | None = None) -> None:
        self.settings = settings
        self.stopping = False
        self.server: Any = None
        self.auth: Authenticator | None = None  # once listening
        self.closing: list[Callable[[], None]] = []  # last, when the server has stopped
        bucket = settings.roots[0].startswith("s3://")
        # Where records live: the bucket's (S3Records), else each root's .pkgserver folder.
        records = self._object_store() if bucket else self._directories()
        self.records = records
        # A bucket's hosted names are re-read when the journal says they changed and after
        # each listing (records_changed, bucket_listed), never on a request's thread: a store
        # that is away must not hold up answers served from memory.
        self.hosted = HostedNames(
            settings.roots, folders=records, **({"reload_every": math.inf} if bucket else {})
        )
        self.catalog = Catalog(on_new_projects=self.hosted.add)
        self.yanks = Yanks(settings.roots, folders=records)
        self.catalog.set_yanks(self.yanks.poll() or {})
        self.statuses = Statuses(settings.roots, folders=records)
        self.status_seen = self.statuses.poll() or {}  # (a change is logged)
        self.catalog.set_statuses(self.status_seen)
        self.observer = Observer(self.catalog, access=access, health=settings.health_endpoint)
        self.feed: ChangeFeed = self._bucket_feed() if bucket else self._indexer()

    def _object_store(self) -> list[Records] | None:
        """s3://bucket/prefix: files, records, descriptions and uploaders in the bucket; the
        bucket's listing is the change feed (see s3.py)."""
        from .s3 import S3Records, S3Storage, S3UploadLog

        url, cache_dir = self.settings.roots[0], self.settings.cache_dir
        storage = S3Storage(url, spool_base=os.path.join(cache_dir, "spool") if cache_dir else None)
        self.closing.append(storage.close)  # its spool folder, once nothing uses it
        self.storage: Storage = storage
        uploads = S3UploadLog(url, client=storage.client)
        uploads.refresh()  # then after each look at the bucket
        self.upload_log: Uploaders | None = uploads
        return [S3Records(url, client=storage.client)]

    def _directories(self) -> list[Records] | None:
        """The package directories; records: None, each root's own .pkgserver folder."""
        roots = self.settings.roots
        sweep_temp_files(roots)
        self.storage = DirectoryStorage(roots)
        self.upload_log = UploadLog(roots)
        return None

    def _bucket_feed(self) -> ChangeFeed:
        from .s3 import S3Storage, S3UploadLog
        from .s3feed import S3Feed

        assert isinstance(self.storage, S3Storage) and isinstance(self.upload_log, S3UploadLog)
        settings = self.settings
        uploads = self.upload_log
        return S3Feed(
            self.storage,
            self.catalog,
            interval=settings.rescan_interval or OBJECT_STORE_RESCAN,
            on_claim=self.hosted.add,
            max_file_size=settings.file_size_limit,
            on_tick=self.bucket_listed,
            on_records=self.records_changed,
            on_files=uploads.refresh,
            extra_algos=settings.extra_algos,
        )

    def _indexer(self) -> ChangeFeed:
        """The directories' change feed: inotify and rescans, with the index cache."""
        settings = self.settings
        cache_dir = settings.cache_dir
        indexer = Indexer(
            settings.roots,
            self.catalog,
            cache=DescriptionCache.open(cache_dir, settings.roots) if cache_dir else None,
            rescan_interval=settings.rescan_interval,
            watch=settings.watch,
            extra_algos=settings.extra_algos,
            on_tick=self.reload_records,
            on_claim=self.hosted.add,
            max_file_size=settings.file_size_limit,
            # When each file was uploaded or first seen, in each root's .pkgserver folder;
            # none for --upload-time mtime (the files' mtimes are served).
            upload_times=(
                [UploadTimes(RecordDir(root)) for root in settings.roots]
                if settings.upload_time == "first-seen"
                else None
            ),
            # Files uploaded before upload times were recorded: the time of their upload.
            published=self.upload_log.published if isinstance(self.upload_log, UploadLog) else None,
        )
        indexer.on_scan = self.observer.scan_done
        indexer.on_hash = self.observer.hash_done
        return indexer

    def reload_yanks(self) -> None:
        found = self.yanks.poll()
        if found is not None:
            self.catalog.set_yanks(found)
        auth = self.auth
        if auth is not None and auth.tokens is not None:
            auth.tokens.flush_uses()  # when tokens were last used, now and then

    def reload_statuses(self) -> None:
        found = self.statuses.poll()
        if found is None:
            return
        self.catalog.set_statuses(found)
        before, self.status_seen = self.status_seen, found
        for project in sorted(before.keys() | found.keys()):
            now = found.get(project)
            if now != before.get(project):
                what = now.status if now is not None else "active"
                why = f" ({now.reason})" if now is not None and now.reason else ""
                log.info("project %s is now %s%s", project, what, why)

    def reload_records(self) -> None:
        """The records a running server re-reads within a second of a change."""
        self.reload_yanks()
        self.reload_statuses()

    def bucket_listed(self) -> None:
        """After each listing of a bucket: what other replicas recorded there."""
        self.reload_records()
        self.hosted.reload()
        from .s3 import S3UploadLog

        if isinstance(self.upload_log, S3UploadLog):
            self.upload_log.refresh()
        if self.auth is not None and self.auth.tokens is not None:
            self.auth.tokens.reload()  # a journal notice missed while away

    def records_changed(self, names: set[str]) -> None:
        """Another replica rewrote these records (told through the bucket's journal)."""
        if YANKED_FILE in names:
            self.reload_yanks()
        if STATUS_FILE in names:
            self.reload_statuses()
        if HOSTED_FILE in names:
            self.hosted.reload()
        if TOKENS_FILE in names and self.auth is not None and self.auth.tokens is not None:
            self.auth.tokens.reload()  # a token revoked or created on another replica

    def terminate(self, _signum: int, _frame: Any) -> None:
        """SIGTERM (docker stop, systemd) ends the server like Ctrl-C, from the first scan on
        (a container's main process ignores SIGTERM without a handler); once shutdown has
        begun, further signals are ignored so that the clean-up runs to its end."""
        if self.stopping:
            return
        self.stopping = True
        if self.server is None:
            self.feed.interrupt()  # the scan stops at its next file, where it is safe to
        else:
            raise KeyboardInterrupt  # ends the socket loop

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.terminate)
        signal.signal(signal.SIGINT, self.terminate)
        try:
            self.feed.start()
            if self.stopping:
                raise ScanInterrupted("stopped after the first scan")
            self.server = self.listen()
            if self.stopping:  # a signal came between the scan and this point
                raise ScanInterrupted("stopped before serving")
            log.info(
                "pkgserver %s serving %s on %s",
                __version__,
                ", ".join(self.settings.roots),
                listening(self.server, self.settings.host),
            )
            serve(self.server)
        except (KeyboardInterrupt, ScanInterrupted):
            pass  # a signal during the start, or outside the socket loop
        finally:
            self.stopping = True
            self.close()
        return 0

    def listen(self) -> Any:
        """The app, and the waitress server that will serve it, bound to its socket."""
        settings = self.settings
        self.auth = default_auth(settings, self.records, self.observer)
        app = create_app(
            settings,
            self.catalog,
            auth=self.auth,
            metadata=MetadataStore(opener=self.storage.open),
            on_stale=self.feed.recheck,
            on_published=self.feed.remember,
            hosted=self.hosted,
            upload_log=self.upload_log,
            records=self.records,
            observer=self.observer,
            ready=self.feed.ready,
            storage=self.storage,
        )
        try:
            return make_server(
                app,
                host=settings.host,
                port=settings.port,
                threads=settings.threads,
                connection_limit=settings.connection_limit,
                connections_per_address=settings.connections_per_address,
                header_timeout=settings.header_timeout,
                channel_timeout=settings.channel_timeout,
                # select() stops at 1,024 descriptors, so a larger connection limit needs
                # poll(); below it select() stays: waitress's poll loop served small files at
                # a fifth of the rate here (measured with wrk, 50 connections).
                asyncore_use_poll=settings.connection_limit > SELECT_CONNECTIONS,
                # Room for the form fields around the largest file; waitress answers 413 beyond
                # it before the body is stored in full.
                max_request_body_size=settings.max_upload_size + 64 * 1024 * 1024,
                ident="pkgserver",
                # X-Forwarded-* and Forwarded are dropped by the app itself (see app._App),
                # more cheaply than waitress's middleware, which walks the environ per request.
                clear_untrusted_proxy_headers=False,
            )
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
            ) from None

    def close(self) -> None:
        if self.server is not None:
            log.info("shutting down")
            # Requests in progress may finish (an upload its publishing, and its answer) within
            # the grace time; what is still running after it dies with the process.
            timeout = self.settings.shutdown_timeout
            if not stop(self.server, timeout):
                log.warning("requests still running after %gs; abandoned", timeout)
        else:
            log.info("stopped before serving")
        self.storage.remove_live()  # uploads still running die with the process
        self.feed.stop()
        for close in self.closing:
            close()


def listening(server: Any, host: str) -> str:
    """The URL(s) served: one per address when a host name resolved to several."""
    listen = getattr(server, "effective_listen", None)
    if listen:
        return ", ".join(f"http://{f'[{h}]' if ':' in h else h}:{p}/" for h, p in listen)
    shown = host if ":" not in host else f"[{host}]"
    return f"http://{shown}:{server.effective_port}/"
