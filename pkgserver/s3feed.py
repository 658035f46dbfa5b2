"""The object store's change feed: how a replica's catalog follows a bucket that several
replicas and other tools write to.

Three sources, from the cheapest:
- the **journal** (``s3.Journal``): every replica notes its uploads, removals and record
  changes as empty objects under one small prefix, which every replica lists a few times a
  second (``POLL``); a notice costs its reader one HEAD and one small GET per file;
- the **snapshot**: the whole catalog in one object (``PREFIX/.pkgserver/snapshot.json.gz``),
  kept by the replicas as the bucket changes, from which a replica starts without listing the
  bucket or reading any distribution (then applies the notices written since);
- the **listing** of the whole bucket, every ``interval`` seconds and at once after a start
  from a snapshot: it finds what the journal cannot know (files put there by ``aws s3 cp``,
  ``rclone`` or a CI job, notices missed while away) and lists and unlists accordingly.

A new object is read once, by the first replica that sees it: its hashes and metadata are
stored beside it (``PREFIX/.pkgserver/meta/RELPATH.json``, keyed by the object's version),
and every other replica, and every later start, takes them from there.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Literal

from .catalog import Catalog, DistFile, FileStat
from .distfile import InvalidDistFilename, dist_extension, parse_dist_filename
from .manage import Candidate, read_for_check, report_check
from .s3 import S3Storage, _as_oserror, _stat_of, _status, describe_object, listable
from .scan import entry_from_fields, fields_of

__all__ = ["IndexSnapshot", "S3Feed", "check_bucket"]

log = logging.getLogger(__name__)

POLL = 0.25  # seconds between listings of the journal
WORKERS = 16  # objects described (or their descriptions read) at once
SWEEP_EVERY = 3600.0  # seconds between sweeps of descriptions whose object is gone


class IndexSnapshot:
    """The catalog of a bucket in one object, for a fast start. Written by any replica whose
    catalog differs from it once it is ``EVERY`` seconds old (or when there is none); racing
    writers are harmless, each snapshot being whole and the journal and listing covering what
    one misses."""

    EVERY = 300.0
    LIMIT = 2 * 1024**3  # bytes of JSON read at most (a hostile object is no bomb)

    def __init__(self, storage: S3Storage) -> None:
        self.storage = storage
        base = f"{storage.prefix}/.pkgserver" if storage.prefix else ".pkgserver"
        self.key = f"{base}/snapshot.json.gz"

    @staticmethod
    def digest(files: Iterable[DistFile]) -> str:
        """What identifies a catalog's contents: its relpaths and their objects' versions."""
        h = hashlib.sha256()
        for f in sorted(files, key=lambda f: f.relpath):
            h.update(f"{f.relpath}\0{f.size}\0{f.mtime_ns}\0{f.ino}\n".encode())
        return h.hexdigest()

    def state(self) -> tuple[str, float] | None:
        """(digest, age in seconds by the store's clock) of the stored snapshot, or None."""
        s = self.storage
        try:
            head = s.client.head_object(Bucket=s.bucket, Key=self.key)
        except Exception as exc:
            if _status(exc) == 404:
                return None
            raise _as_oserror(exc) from None
        now = head.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        age = 0.0
        if now and head.get("LastModified") is not None:
            from email.utils import parsedate_to_datetime

            age = (parsedate_to_datetime(now) - head["LastModified"]).total_seconds()
        return str(head.get("Metadata", {}).get("digest", "")), age

    def save(self, files: Sequence[DistFile], digest: str) -> None:
        rows = [[f.relpath, f.size, f.mtime_ns, f.ino, *fields_of(f)] for f in files]
        body = gzip.compress(json.dumps({"format": 1, "files": rows}).encode(), 5)
        s = self.storage
        try:
            s.client.put_object(
                Bucket=s.bucket, Key=self.key, Body=body, Metadata={"digest": digest}
            )
        except Exception as exc:
            raise _as_oserror(exc) from None

    def load(
        self, extra_algos: Sequence[str] = ()
    ) -> tuple[list[DistFile], list[tuple[str, FileStat, str]], float] | None:
        """The files of the stored snapshot, those it describes without a hash this replica
        links (--hash-algo; as (relpath, version, project), to be read again), and when it
        was written (epoch seconds); None when there is none or it cannot be read (then the
        bucket is listed instead)."""
        s = self.storage
        files, lacking = [], []
        try:
            got = s.client.get_object(Bucket=s.bucket, Key=self.key)
            with gzip.GzipFile(fileobj=got["Body"]) as gz:
                raw = gz.read(self.LIMIT + 1)
            if len(raw) > self.LIMIT:
                raise ValueError(f"larger than {self.LIMIT} bytes")
            for row in json.loads(raw)["files"]:
                relpath, size, mtime_ns, ino, *fields = row
                if not listable(str(relpath)):
                    continue
                st = FileStat(int(size), int(mtime_ns), int(ino))
                f = entry_of(s.url, str(relpath), st, fields, extra_algos)
                if f is not None:
                    files.append(f)
                else:
                    lacking.append((str(relpath), st, str(fields[0])))
        except Exception as exc:
            if _status(exc) != 404:
                log.warning("cannot read the index snapshot %s: %s", self.key, exc)
            return None
        return files, lacking, got["LastModified"].timestamp()


def entry_of(
    url: str, relpath: str, st: FileStat, fields: object, extra_algos: Sequence[str]
) -> DistFile | None:
    """A catalog entry from stored fields (a description's or a snapshot row's), with the
    extra hashes this replica links; None when the fields are not of the right shape or lack
    one of those hashes (the object is then read again)."""
    # 9 fields: stored before provenance was listed (pkgserver.attest); 10 since
    if not isinstance(fields, list) or len(fields) not in (9, 10):
        return None
    try:
        known = dict(tuple(pair) for pair in fields[4])
    except (TypeError, ValueError):
        return None
    if any(a not in known for a in extra_algos):
        return None
    fields = [*fields[:4], tuple((a, known[a]) for a in extra_algos), *fields[5:]]
    try:
        return entry_from_fields(url, relpath, st, tuple(fields))
    except (TypeError, ValueError):
        return None


class S3Feed:
    """The object store's ChangeFeed (see the module's docstring)."""

    def __init__(
        self,
        storage: S3Storage,
        catalog: Catalog,
        *,
        interval: float = 60.0,
        on_claim: Callable[[Iterable[str]], None] | None = None,
        max_file_size: int = 1024**3,
        on_tick: Callable[[], None] | None = None,
        on_records: Callable[[set[str]], None] | None = None,
        on_files: Callable[[], None] | None = None,
        extra_algos: Sequence[str] = (),
        poll: float = POLL,
    ) -> None:
        self.storage, self.catalog = storage, catalog
        self.interval, self.on_claim, self.max_file_size = interval, on_claim, max_file_size
        self.on_tick = on_tick  # after each reconcile (the service reloads the yanks)
        self.on_records = on_records  # records another replica changed (by name)
        self.on_files = on_files  # files another replica published or removed (uploaders)
        self.extra_algos = tuple(extra_algos)  # --hash-algo: hashed with the sha256
        self.poll = poll
        self.journal = storage.journal
        self.snapshot = IndexSnapshot(storage)
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="pkgserver-s3-read")
        self._wake, self._stop = threading.Event(), threading.Event()
        self._threads: list[threading.Thread] = []
        self._ready = False
        self._rechecks: set[str] = set()
        self._rechecks_lock = threading.Lock()
        self._away: str | None = None  # the journal's last failure, logged once
        self._count_lock = threading.Lock()
        self.described = 0  # objects read (not taken from their stored description)
        self.started_from_snapshot = False
        self._listed: set[str] | None = None  # the relpaths of the last whole listing
        self._swept = time.monotonic()

    # -- ChangeFeed ------------------------------------------------------------------------------
    def start(self) -> None:
        began = time.monotonic()
        loaded = self.snapshot.load(self.extra_algos)
        if loaded is not None:
            files, lacking, written = loaded
            if self.on_claim is not None:
                self.on_claim({f.project for f in files} | {p for _, _, p in lacking})
            # Described without a hash this replica links (written by a replica with another
            # --hash-algo): read again, before listening, as without a snapshot.
            learnt = self._pool.map(lambda t: self._learn(t[0], t[1]), lacking)
            files += [f for f in learnt if f is not None]
            self.catalog.apply(files)
            # The notices written since (a minute's margin for clocks), then the listing at
            # once in the background, for what the journal does not know.
            since = int((written - 60) * 1e9)
            self.apply(self.journal.poll(since_ns=max(since, 0)))
            self.started_from_snapshot = True
            how = f"from the index snapshot ({len(files)} files)"
        else:
            self.journal.poll(since_ns=time.time_ns())  # notices from now on
            self.reconcile()
            how = f"by listing the bucket (no snapshot yet; {self.described} objects read)"
        log.info("%s listed %s in %.1fs", self.storage.url, how, time.monotonic() - began)
        self._ready = True
        for target, name in ((self._follow, "journal"), (self._run, "listing")):
            t = threading.Thread(target=target, name=f"pkgserver-s3-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def interrupt(self) -> None:
        self._stop.set()

    def ready(self) -> str | None:
        return None if self._ready else "starting: the bucket is not listed yet"

    def recheck(self, path: str, delay: float = 0.0) -> None:
        """A download found the object changed: look at that object again (at once)."""
        if path.startswith(self.storage.url + "/"):
            with self._rechecks_lock:
                self._rechecks.add(self.storage.relpath(path))

    def remember(self, f: DistFile) -> None:
        """An upload here: its description beside it, then the notice to the other replicas."""
        self._store_description(f)
        self.journal.note("file", f.relpath)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the journal -----------------------------------------------------------------------------
    def _follow(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                notices = self.journal.poll()
                with self._rechecks_lock:
                    rechecks, self._rechecks = self._rechecks, set()
                self.apply(notices, also=rechecks)
            except Exception as exc:  # the store away: poll again, say so once
                if str(exc) != self._away:
                    log.warning("cannot follow the changes in %s: %s", self.storage.url, exc)
                    self._away = str(exc)
                continue
            if self._away is not None:
                log.info("following the changes in %s again", self.storage.url)
                self._away = None

    def apply(self, notices: Sequence[tuple[int, str, str]], also: Iterable[str] = ()) -> None:
        """Pass on the records the notices name, and list, relist or unlist the objects they
        name (each looked at as it is now, whatever the notice said)."""
        paths = dict.fromkeys(p for _, kind, p in notices if kind in ("file", "gone"))
        paths.update(dict.fromkeys(also))
        records = {p for _, kind, p in notices if kind == "record"}
        # Records first: the hosted names another replica claimed are then known here, and
        # the files below do not claim them a second time.
        if records and self.on_records is not None:
            self.on_records(records)
        if paths:
            snap = self.catalog.snapshot
            upserts: list[DistFile] = []
            removals: list[str] = []
            for relpath, found in zip(paths, self._pool.map(self._look, paths), strict=True):
                if found is None:
                    if relpath in snap.files:
                        removals.append(relpath)
                elif found is not False:
                    upserts.append(found)
            if upserts or removals:
                self.catalog.apply(upserts, removals)
            if self.on_files is not None:
                self.on_files()

    def _look(self, relpath: str) -> DistFile | Literal[False] | None:
        """The object's entry now: None when it is gone, False when it is not to be listed
        (or is listed as it is)."""
        if not listable(relpath):
            return False
        try:
            info = parse_dist_filename(relpath.rsplit("/", 1)[-1])
        except InvalidDistFilename:
            return False
        s = self.storage
        try:
            head = s.client.head_object(Bucket=s.bucket, Key=s.key(f"{s.url}/{relpath}"))
        except Exception as exc:
            if _status(exc) == 404:
                return None
            raise
        if self.on_claim is not None:
            self.on_claim([info.project])
        st = _stat_of(head)
        if _same(self.catalog.snapshot.files.get(relpath), st):
            return False
        found = self._learn(relpath, st)
        return False if found is None else found

    # -- the listing -----------------------------------------------------------------------------
    def _run(self) -> None:
        # At once after the start: the listing after a start from a snapshot (what the journal
        # cannot know), or the snapshot after a start that listed the bucket.
        first = True
        while not self._stop.is_set():
            if not first:
                self._wake.wait(self.interval)
                self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if not first or self.started_from_snapshot:
                    self.reconcile()
                    if self.on_tick is not None:
                        self.on_tick()
                self._keep_snapshot()
                self.journal.sweep()
                if time.monotonic() - self._swept > SWEEP_EVERY:
                    self.sweep_descriptions()
            except OSError as exc:  # the store away for a while: list again next time
                log.warning("could not list %s: %s", self.storage.url, exc)
            except Exception:
                log.exception("could not reconcile with %s", self.storage.url)
            first = False

    def reconcile(self) -> None:
        """List the bucket; list what is new or changed, unlist what is gone."""
        snap = self.catalog.snapshot
        seen: set[str] = set()
        claims: set[str] = set()
        todo: list[tuple[str, FileStat]] = []
        for relpath, item in self.storage.listing():
            st = _stat_of(item)
            try:
                info = parse_dist_filename(relpath.rsplit("/", 1)[-1])
            except InvalidDistFilename:
                continue
            claims.add(info.project)
            seen.add(relpath)
            if _same(snap.files.get(relpath), st):
                continue
            if st.st_size == 0 or st.st_size > self.max_file_size:
                continue
            todo.append((relpath, st))
        if claims and self.on_claim is not None:
            self.on_claim(claims)
        # Many to read (a cold bucket): list which descriptions exist first, a thousand names
        # a request, rather than ask for each of them.
        stored = self._descriptions() if len(todo) > 100 else None
        upserts = [f for f in self._pool.map(lambda t: self._learn(t[0], t[1], stored), todo) if f]
        # Unlisted: what was listed when the listing began and is not in it. (A file the
        # journal listed meanwhile was not in ``snap``; it stays.)
        removals = [r for r in snap.files if r not in seen]
        self._listed = seen
        if upserts or removals:
            self.catalog.apply(upserts, removals)

    def sweep_descriptions(self, older_than: float = 3600.0) -> int:
        """Delete the descriptions of objects that are gone (removed by another tool; a
        removal through pkgserver deletes its own) once they are ``older_than`` seconds old,
        so a description stored just before its object is published stays. How many."""
        self._swept = time.monotonic()
        listed = self._listed
        if listed is None:
            return 0
        s = self.storage
        base = s.meta + "/"
        horizon = time.time() - older_than
        gone = []
        try:
            pages = s.client.get_paginator("list_objects_v2").paginate(Bucket=s.bucket, Prefix=base)
            for page in pages:
                for item in page.get("Contents", ()):
                    relpath = item["Key"][len(base) : -len(".json")]
                    if relpath not in listed and item["LastModified"].timestamp() < horizon:
                        gone.append(item["Key"])
            for i in range(0, len(gone), 1000):
                batch = [{"Key": k} for k in gone[i : i + 1000]]
                s.client.delete_objects(Bucket=s.bucket, Delete={"Objects": batch, "Quiet": True})
        except Exception as exc:
            raise _as_oserror(exc) from None
        if gone:
            log.info("removed %d descriptions of objects no longer there", len(gone))
        return len(gone)

    def _keep_snapshot(self) -> None:
        files = list(self.catalog.snapshot.files.values())
        digest = IndexSnapshot.digest(files)
        state = self.snapshot.state()
        if state is not None and (state[0] == digest or state[1] < IndexSnapshot.EVERY):
            return
        began = time.monotonic()
        self.snapshot.save(files, digest)
        log.info("index snapshot of %d files stored in %.1fs", len(files), time.monotonic() - began)

    # -- descriptions ----------------------------------------------------------------------------
    def _learn(self, relpath: str, st: FileStat, stored: set[str] | None = None) -> DistFile | None:
        if st.st_size == 0 or st.st_size > self.max_file_size:
            return None
        if stored is None or relpath in stored:
            found = self._stored_description(relpath, st)
            if found is not None:
                return found
        return self._describe(relpath, st)

    def _descriptions(self) -> set[str] | None:
        """The relpaths that have a stored description, or None when it cannot be listed."""
        s = self.storage
        base = s.meta + "/"
        try:
            pages = s.client.get_paginator("list_objects_v2").paginate(Bucket=s.bucket, Prefix=base)
            keys = [item["Key"] for page in pages for item in page.get("Contents", ())]
        except Exception:
            return None
        return {k[len(base) : -len(".json")] for k in keys if k.endswith(".json")}

    def _stored_description(self, relpath: str, st: FileStat) -> DistFile | None:
        storage = self.storage
        try:
            got = storage.client.get_object(
                Bucket=storage.bucket, Key=storage.description_key(relpath)
            )
            doc = json.loads(got["Body"].read(1024 * 1024))
        except Exception:
            return None
        if not isinstance(doc, dict) or doc.get("stamp") != list(st):
            return None  # of another version of the object
        return entry_of(storage.url, relpath, st, doc.get("fields"), self.extra_algos)

    def _describe(self, relpath: str, st: FileStat) -> DistFile | None:
        """Read the object once: its hashes and metadata, then stored beside it (with the
        version that was read, which may be newer than the one listed)."""
        try:
            f = describe_object(self.storage, relpath, self.extra_algos)
        except (InvalidDistFilename, OSError) as exc:
            log.warning("cannot read %s: %s", relpath, exc)
            return None
        with self._count_lock:
            self.described += 1
        self._store_description(f)
        return f

    def _store_description(self, f: DistFile) -> None:
        doc = {"stamp": [f.size, f.mtime_ns, f.ino], "fields": list(fields_of(f))}
        storage = self.storage
        try:
            storage.client.put_object(
                Bucket=storage.bucket,
                Key=storage.description_key(f.relpath),
                Body=json.dumps(doc).encode(),
            )
        except Exception as exc:  # the next replica reads the object itself instead
            log.warning("cannot store the description of %s: %s", f.relpath, exc)


def _same(listed: DistFile | None, st: FileStat) -> bool:
    """Whether the catalog's entry is of this version of the object (size, second, ETag)."""
    return listed is not None and listed.matches(st) and listed.ino == st.st_ino


# -- pkgserver check s3://... ---------------------------------------------------------------------
def check_bucket(
    storage: S3Storage, *, progress: bool | None = None, out: IO[str] | None = None
) -> int:
    """``pkgserver check`` of a bucket: every object read as a replica reads it, and compared
    with the description stored beside it (which every replica serves instead of reading it)."""
    feed = S3Feed(storage, Catalog())  # (only for reading the stored descriptions)
    candidates, others = [], []
    for relpath, _item in storage.listing():
        location = f"{storage.url}/{relpath}"
        if dist_extension(relpath.rsplit("/", 1)[-1]) is None:
            others.append(location)
            continue
        read = functools.partial(_check_object, feed, relpath)
        candidates.append(Candidate(relpath, location, read))
    note = "compared with the descriptions stored in the bucket"
    return report_check(candidates, others, note, progress=progress, out=out)


def _check_object(feed: S3Feed, relpath: str, problems: list[str]) -> DistFile | None:
    storage = feed.storage
    location = f"{storage.url}/{relpath}"
    f = read_for_check(location, problems, lambda: describe_object(storage, relpath))
    if f is None:
        return None
    stored = feed._stored_description(relpath, FileStat(f.size, f.mtime_ns, f.ino))
    if stored is not None and stored.sha256 != f.sha256:
        problems.append(
            f"hash mismatch {location}: the description stored in the bucket lists sha256 "
            f"{stored.sha256} for this version of the object, which has {f.sha256} (every "
            "replica serves the description: remove it, or the object, to have it read again)"
        )
    return f
