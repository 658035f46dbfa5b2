"""An S3-compatible object store (``pkgserver run s3://BUCKET/PREFIX``, a preview): the second
implementation of the storage interface, for several replicas over one bucket. ``S3Storage``
holds the files, ``S3Feed`` lists the bucket into the catalog, ``S3Records`` keeps the records.
Tested against a real Ceph RGW.

Locations are ``s3://BUCKET/PREFIX/RELPATH``. Uploads are staged in a local spool (the upload
checks read the archive there) and published with one PUT:
- ``create`` is ``PutObject`` with ``If-None-Match: *``: of two replicas publishing one name
  at once, exactly one wins (the other gets 412 and answers 409 or, for the same bytes, 200);
- ``replace`` is a plain ``PutObject``: readers get the old object or the new one.
A single PUT holds up to 5 GB, above any upload limit pkgserver allows by default; multipart
uploads (whose completion Ceph does not make conditional) are not used.

boto3 is an optional dependency (``pip install 'pkgserver[s3]'``): the conventional client,
with the AWS configuration users already have (endpoint, keys, region, profile).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import posixpath
import random
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import IO, Any, BinaryIO

from .catalog import Catalog, DistFile, FileStat
from .distfile import (
    SIDECARS,
    InvalidDistFilename,
    dist_extension,
    parse_dist_filename,
    version_key,
)
from .manage import Candidate, read_for_check, release_of, report_check
from .metadata import CoreMetadata
from .publish import FileOps, TempFile
from .records import MAX_RECORD_BYTES, UPLOADS_FILE, Upload
from .scan import describe, entry_from_fields, fields_of
from .storage import Stored

__all__ = [
    "S3Feed",
    "S3Records",
    "S3Storage",
    "S3UploadLog",
    "check_bucket",
    "describe_object",
    "parse_location",
]

log = logging.getLogger(__name__)


def parse_location(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without slashes at either end)."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {url!r}")
    return bucket, prefix.strip("/")


def _stat_of(head: dict[str, Any]) -> FileStat:
    """What identifies an object's version, as a FileStat: size, mtime, and the ETag's first
    60 bits in place of an inode (a rewritten object of the same size and second differs)."""
    etag = str(head.get("ETag", "")).strip('"')
    try:
        tag = int(etag[:15], 16)
    except ValueError:
        tag = 0
    mtime = head.get("LastModified")
    # Whole seconds: a HEAD says no more, a listing says milliseconds; both must agree.
    mtime_ns = int(mtime.timestamp()) * 1_000_000_000 if mtime is not None else 0
    size = head["ContentLength"] if "ContentLength" in head else head.get("Size", 0)
    return FileStat(int(size), mtime_ns, tag)


class S3Storage:
    """Distribution files in ``s3://bucket/prefix/``, flat (one key per file)."""

    def __init__(self, url: str, client: Any = None, spool: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.bucket, self.prefix = parse_location(url)
        if client is None:
            import boto3  # optional: pip install 'pkgserver[s3]'
            from botocore.config import Config

            # Path-style addressing: Ceph RGW and MinIO serve buckets under the endpoint's path.
            client = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
        self.client = client
        self.spool = spool or tempfile.mkdtemp(prefix="pkgserver-spool-")
        self.ops = FileOps()

    # -- keys ------------------------------------------------------------------------------------
    def key(self, location: str) -> str:
        if not location.startswith(self.url + "/"):
            raise ValueError(f"{location!r} is not in {self.url}")
        relpath = location[len(self.url) + 1 :]
        return f"{self.prefix}/{relpath}" if self.prefix else relpath

    def relpath(self, location: str) -> str:
        return location[len(self.url) + 1 :]

    def place(self, filename: str, project_files: Sequence[DistFile]) -> str:
        return f"{self.url}/{filename}"

    def beside(self, location: str, filename: str) -> str:
        return posixpath.dirname(location) + "/" + filename

    # -- staging ---------------------------------------------------------------------------------
    def stage(self, limit: int) -> TempFile:
        return TempFile(self.ops, self.spool, limit)

    def stage_bytes(self, beside: str, data: bytes) -> TempFile:
        return TempFile.holding(self.ops, self.spool, data)

    def remove_live(self) -> int:
        return self.ops.remove_live()

    # -- publishing ------------------------------------------------------------------------------
    def _put(self, staged: TempFile, location: str, **conditions: str) -> None:
        """PUT the staged bytes; once stored, the local copy goes (as a rename would)."""
        with open(staged.path, "rb") as body:
            self.client.put_object(
                Bucket=self.bucket, Key=self.key(location), Body=body, **conditions
            )
        staged.discard()

    def create(self, staged: TempFile, location: str) -> bool:
        try:
            self._put(staged, location, IfNoneMatch="*")
        except Exception as exc:
            if _status(exc) in (409, 412):  # another writer has the name (412; 409 in a race)
                return False
            raise _as_oserror(exc) from None
        return True

    def replace(self, staged: TempFile, location: str) -> None:
        try:
            self._put(staged, location)
        except Exception as exc:
            raise _as_oserror(exc) from None

    def undo_create(self, location: str, staged: TempFile) -> None:
        # Only our own object: a single PUT's ETag is the MD5 of its bytes.
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(location))
            if str(head.get("ETag", "")).strip('"') == staged.md5.hexdigest():
                self.client.delete_object(Bucket=self.bucket, Key=self.key(location))
        except Exception as exc:  # never raises: it runs on a failure path
            log.warning("could not take back %s: %s", location, exc)

    def remove(self, location: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(location))
            found = True
        except Exception as exc:
            if _status(exc) != 404:
                raise _as_oserror(exc) from None
            found = False
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(location))
        except Exception as exc:
            raise _as_oserror(exc) from None
        for ext in SIDECARS:
            self.discard(location + ext)
        return found

    def discard(self, location: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(location))
        except Exception as exc:
            log.warning("could not remove %s: %s", location, exc)

    def sync(self, locations: Iterable[str]) -> None:
        """A PUT is durable when it is answered."""

    # -- reading ---------------------------------------------------------------------------------
    def open(self, location: str) -> tuple[BinaryIO, FileStat]:
        """The object spooled to a local temp file (archive readers seek), and its version."""
        fh = tempfile.TemporaryFile(dir=self.spool)
        try:
            st = self.fetch(location, fh)
        except OSError:
            fh.close()
            raise
        fh.seek(0)
        return fh, st

    def fetch(self, location: str, out: BinaryIO) -> FileStat:
        """Write the object to ``out``; its version."""
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key(location))
            for chunk in got["Body"].iter_chunks(1024 * 1024):
                out.write(chunk)
        except Exception as exc:
            raise _as_oserror(exc) from None
        return _stat_of(got)

    def listing(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(relpath, listing entry) of every object that may be a distribution: not under a
        dot-name (records, descriptions, temp names), not a sidecar. Raises OSError."""
        prefix = self.prefix + "/" if self.prefix else ""
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for item in page.get("Contents", ()):
                    relpath = item["Key"][len(prefix) :]
                    if any(part.startswith(".") for part in relpath.split("/")):
                        continue
                    if relpath.endswith(SIDECARS):
                        continue
                    yield relpath, item
        except Exception as exc:
            raise _as_oserror(exc) from None

    def sha256_of(self, location: str, size: int) -> str | None:
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key(location))
        except Exception:
            return None
        if int(got.get("ContentLength", -1)) != size:
            return None
        h = hashlib.sha256()
        for chunk in got["Body"].iter_chunks(1024 * 1024):
            h.update(chunk)
        return h.hexdigest()

    def describe(
        self,
        location: str,
        extra_algos: Sequence[str],
        digests: Mapping[str, str],
        meta: CoreMetadata,
    ) -> DistFile:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(location))
        except Exception as exc:
            raise _as_oserror(exc) from None
        st, relpath = _stat_of(head), self.relpath(location)
        return describe(self.url, relpath, st, extra_algos, known_hashes=digests, known_meta=meta)

    def files_of(self, project: str, version: str | None = None) -> list[Stored]:
        wanted = version_key(version) if version is not None else None
        found = []
        for relpath, _item in self.listing():
            spelled = release_of(relpath, project, wanted)
            if spelled is not None:
                found.append(Stored(f"{self.url}/{relpath}", relpath, spelled))
        return found


class S3Records:
    """Small records (hosted names, yanks) as objects under ``PREFIX/.pkgserver/``: a
    ``storage.Records`` that several replicas share.

    An object store has no append: ``append`` reads the record and writes it back only if it
    is still the version read (If-Match, or If-None-Match for a new one), and starts again when
    another replica wrote in between, so no replica's lines are lost. Ceph honours If-Match
    only with the ETag's quotes stripped, and some racing losers get 500 rather than 412:
    both mean "read again" here (a bounded number of times).
    """

    ATTEMPTS = 50

    def __init__(self, url: str, client: Any = None) -> None:
        self.url = url.rstrip("/")
        self.bucket, prefix = parse_location(url)
        self.base = f"{prefix}/.pkgserver" if prefix else ".pkgserver"
        if client is None:
            client = S3Storage(url).client
        self.client = client
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def file(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.base}/{name}"

    def _get(self, name: str, limit: int) -> tuple[bytes, str] | None:
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=f"{self.base}/{name}")
        except Exception as exc:
            if _status(exc) == 404:
                return None
            raise _as_oserror(exc) from None
        if int(got.get("ContentLength", 0)) > limit:
            raise OSError(27, f"larger than {limit} bytes", self.file(name))
        return got["Body"].read(limit + 1), str(got.get("ETag", "")).strip('"')

    def stamp(self, name: str) -> object:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=f"{self.base}/{name}")
        except Exception as exc:
            return None if _status(exc) == 404 else ("unreadable", str(exc))
        return head.get("ETag")

    def read(self, name: str, limit: int = 16 * 1024 * 1024) -> bytes | None:
        found = self._get(name, limit)
        return found[0] if found is not None else None

    def replace(self, name: str, data: bytes, mode: int = 0o644) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=f"{self.base}/{name}", Body=data)
        except Exception as exc:
            raise _as_oserror(exc) from None

    def append(self, name: str, data: bytes) -> None:
        for attempt in range(self.ATTEMPTS):
            found = self._get(name, 16 * 1024 * 1024)
            body = (found[0] if found else b"") + data
            condition = {"IfMatch": found[1]} if found else {"IfNoneMatch": "*"}
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=f"{self.base}/{name}", Body=body, **condition
                )
                return
            except Exception as exc:
                if _status(exc) not in (409, 412, 500, 503):
                    raise _as_oserror(exc) from None
            time.sleep(random.uniform(0, 0.01 * (attempt + 1)))  # noqa: S311 (jitter, after another replica wrote)
        raise OSError(11, f"the record kept changing; gave up after {self.ATTEMPTS} tries")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Within one process; between replicas, appends are conditional (see above)."""
        with self._lock:
            yield

    def warn_once(self, consequence: str, exc: BaseException) -> None:
        problem = str(exc)
        with self._lock:
            if problem in self._warned:
                return
            self._warned.add(problem)
        log.warning("%s; %s", problem, consequence)

    def all_well(self, name: str) -> None:
        self._warned.clear()


class S3Feed:
    """The object store's ChangeFeed: the bucket's listing reconciled with the catalog at
    start and every ``interval`` seconds (and at once when asked), so files put there by other
    tools (aws s3 cp, rclone, a CI job) and by other replicas are listed.

    A new object is read once, by the first replica that sees it: its hashes and metadata are
    stored beside it (``PREFIX/.pkgserver/meta/RELPATH.json``, keyed by the object's version),
    and every other replica, and every later start, takes them from there.
    """

    def __init__(
        self,
        storage: S3Storage,
        catalog: Catalog,
        *,
        interval: float = 60.0,
        on_claim: Callable[[Iterable[str]], None] | None = None,
        max_file_size: int = 1024**3,
        on_tick: Callable[[], None] | None = None,
        extra_algos: Sequence[str] = (),
    ) -> None:
        self.storage, self.catalog = storage, catalog
        self.extra_algos = tuple(extra_algos)  # --hash-algo: hashed with the sha256
        self.interval, self.on_claim, self.max_file_size = interval, on_claim, max_file_size
        self.on_tick = on_tick  # after each reconcile (the service reloads the yanks)
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = False
        self.described = 0  # objects read (not taken from their stored description)

    # -- ChangeFeed ------------------------------------------------------------------------------
    def start(self) -> None:
        self.reconcile()
        self._ready = True
        self._thread = threading.Thread(target=self._run, name="pkgserver-s3-feed", daemon=True)
        self._thread.start()

    def interrupt(self) -> None:
        self._stop.set()

    def ready(self) -> str | None:
        return None if self._ready else "starting: the bucket's first listing is not done"

    def recheck(self, path: str, delay: float = 0.0) -> None:
        self._wake.set()

    def remember(self, f: DistFile) -> None:
        self._store_description(f)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)

    # -- the reconcile ---------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.reconcile()
                if self.on_tick is not None:
                    self.on_tick()
            except Exception:  # the store may be away for a while: list again next time
                log.exception("could not reconcile with %s", self.storage.url)

    def reconcile(self) -> None:
        """List the bucket; list what is new or changed, unlist what is gone."""
        snap = self.catalog.snapshot
        seen: set[str] = set()
        claims: set[str] = set()
        upserts: list[DistFile] = []
        for relpath, item in self.storage.listing():
            st = _stat_of(item)
            try:
                info = parse_dist_filename(relpath.rsplit("/", 1)[-1])
            except InvalidDistFilename:
                continue
            claims.add(info.project)
            seen.add(relpath)
            listed = snap.files.get(relpath)
            if listed is not None and listed.matches(st):
                continue
            if st.st_size == 0 or st.st_size > self.max_file_size:
                continue
            found = self._stored_description(relpath, st) or self._describe(relpath, st)
            if found is not None:
                upserts.append(found)
        if claims and self.on_claim is not None:
            self.on_claim(claims)
        removals = [r for r in snap.files if r not in seen]
        if upserts or removals:
            self.catalog.apply(upserts, removals)

    def _description_key(self, relpath: str) -> str:
        storage = self.storage
        base = f"{storage.prefix}/.pkgserver/meta" if storage.prefix else ".pkgserver/meta"
        return f"{base}/{relpath}.json"

    def _stored_description(self, relpath: str, st: FileStat) -> DistFile | None:
        storage = self.storage
        try:
            got = storage.client.get_object(
                Bucket=storage.bucket, Key=self._description_key(relpath)
            )
            doc = json.loads(got["Body"].read(1024 * 1024))
        except Exception:
            return None
        if not isinstance(doc, dict) or doc.get("stamp") != list(st):
            return None  # of another version of the object
        fields = doc.get("fields")
        if not isinstance(fields, list) or len(fields) != 9:
            return None
        try:
            known = dict(tuple(pair) for pair in fields[4])  # extra hashes (--hash-algo)
        except (TypeError, ValueError):
            return None
        if any(a not in known for a in self.extra_algos):
            return None  # described without a hash this replica links: read it again
        fields[4] = tuple((a, known[a]) for a in self.extra_algos)
        return entry_from_fields(storage.url, relpath, st, tuple(fields))

    def _describe(self, relpath: str, st: FileStat) -> DistFile | None:
        """Read the object once: its hashes and metadata, then stored beside it."""
        try:
            f = describe_object(self.storage, relpath, self.extra_algos)
        except (InvalidDistFilename, OSError) as exc:
            log.warning("cannot read %s: %s", relpath, exc)
            return None
        self.described += 1
        self._store_description(f)
        return f

    def _store_description(self, f: DistFile) -> None:
        doc = {"stamp": [f.size, f.mtime_ns, f.ino], "fields": list(fields_of(f))}
        storage = self.storage
        try:
            storage.client.put_object(
                Bucket=storage.bucket,
                Key=self._description_key(f.relpath),
                Body=json.dumps(doc).encode(),
            )
        except Exception as exc:  # the next replica reads the object itself instead
            log.warning("cannot store the description of %s: %s", f.relpath, exc)


def _status(exc: BaseException) -> int | None:
    """The HTTP status of a botocore ClientError, else None."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


def _as_oserror(exc: BaseException) -> OSError:
    """A store's refusal or absence as the OSError the publisher turns into a 4xx/5xx."""
    status = _status(exc)
    if status == 404:
        return FileNotFoundError(2, "no such object")
    if status in (401, 403):
        return PermissionError(13, f"the object store refused: {exc}")
    return OSError(5, f"the object store failed: {exc}")


def describe_object(storage: S3Storage, relpath: str, extra_algos: Sequence[str] = ()) -> DistFile:
    """An object read as the index reads a file (hashes, core metadata), with the version
    that was read (a listing may be older). Raises InvalidDistFilename or OSError."""
    name = relpath.rsplit("/", 1)[-1]
    with tempfile.TemporaryDirectory(dir=storage.spool) as tmp:
        local = os.path.join(tmp, name)  # named as the object: describe reads the name
        with open(local, "wb") as out:
            st = storage.fetch(f"{storage.url}/{relpath}", out)
        found = describe(tmp, name, os.stat(local), extra_algos)
    return entry_from_fields(storage.url, relpath, st, fields_of(found))


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


# -- who uploaded what ----------------------------------------------------------------------------
class S3UploadLog:
    """Who uploaded which file, kept in the bucket so that every replica shows it (the
    directories' ``records.UploadLog``; a ``storage.Uploaders``).

    An object store has no append, and a growing object rewritten by every upload would be a
    read-modify-write race between replicas. So an upload writes an object of its own,
    ``PREFIX/.pkgserver/uploads/<ms since 1970>-<random>.json`` (one JSON object, as a line of
    the directories' ``uploads.jsonl``), and every replica reads the new ones at each look at
    the bucket (``refresh``: one listing of that prefix, then one GET per new upload).

    Bounded: once ``COMPACT_AT`` of them are older than ``SETTLED`` seconds, the replica that
    sees it folds them into ``PREFIX/.pkgserver/uploads.jsonl`` (a line per file, the newest
    upload of each), written only if nobody rewrote it since it was read (If-Match), then
    deletes them. That object names the newest upload it holds (metadata ``through``); a
    reader skips the objects up to it. Only uploads older than ``SETTLED`` are folded, so that
    one whose PUT is still on its way, or written by a replica whose clock is behind by less
    than that, is never skipped. At 100,000 uploads a look costs one or two listings of at
    most ``COMPACT_AT`` keys and the 13 MB or so of ``uploads.jsonl`` are read once per
    compaction; of a larger one, the newest 16 MB are read, as on a directory. A directory's
    own ``.pkgserver/uploads.jsonl``, copied into the bucket, is read the same way.
    """

    COMPACT_AT = 1000
    SETTLED = 600.0  # seconds
    LIMIT = MAX_RECORD_BYTES

    def __init__(self, url: str, client: Any = None) -> None:
        self.bucket, prefix = parse_location(url)
        base = f"{prefix}/.pkgserver" if prefix else ".pkgserver"
        self.compacted_key = f"{base}/{UPLOADS_FILE}"
        self.prefix = f"{base}/uploads/"
        self.client = client if client is not None else S3Storage(url).client
        self._lock = threading.Lock()  # one refresh at a time
        self._compacted: dict[str, Upload] = {}  # relpath -> the newest upload folded
        self._compacted_etag: str | None = None
        self._through = ""  # the name of the newest upload folded
        self._single: dict[str, Upload | None] = {}  # name -> what it records (None: junk)
        self._unsaved: dict[str, Upload] = {}  # recorded here, not written
        self._entries: dict[str, Upload] = {}  # what uploader() reads; replaced whole
        self._warned: set[str] = set()

    def record(self, relpath: str, sha256: str, user: str | None) -> None:
        upload = Upload(relpath, sha256, user or "", round(time.time(), 3))
        name = f"{int(upload.time * 1000):013d}-{secrets.token_hex(4)}.json"
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=upload.line())
        except Exception as exc:
            self._warn("uploaders are not recorded", exc)
            with self._lock:
                self._unsaved[relpath] = upload
        with self._lock:
            self._entries = {**self._entries, relpath: upload}

    def uploader(self, relpath: str, sha256: str) -> str | None:
        found = self._entries.get(relpath)
        if found is None or found.sha256 != sha256 or not found.user:
            return None
        return found.user

    def refresh(self) -> None:
        """Read the uploads recorded since the last look, by any replica, and fold the old
        ones when there are many. Never raises: what cannot be read now is read next time."""
        with self._lock:
            try:
                self._refresh()
            except Exception as exc:
                self._warn("uploaders recorded since are not shown", exc)
                return
        self._warned.clear()

    def _refresh(self) -> None:
        compacted_etag, names = self._listing()
        changed = compacted_etag != self._compacted_etag
        if changed:
            self._read_compacted()
        names = [n for n in names if n > self._through]
        for name in names:
            if name not in self._single:
                self._single[name] = self._read_one(name)
                changed = True
        for name in set(self._single) - set(names):  # folded, here or by another replica
            del self._single[name]
            changed = True
        if changed:
            entries = dict(self._compacted)
            for name in sorted(self._single):
                single = self._single[name]
                if single is not None:
                    entries[single.file] = single
            self._entries = {**entries, **self._unsaved}
        self._maybe_compact(sorted(self._single))

    def _listing(self) -> tuple[str | None, list[str]]:
        """The ETag of uploads.jsonl (None: there is none), and the names of the uploads."""
        etag, names = None, []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix.rstrip("/")
        )
        for page in pages:
            for item in page.get("Contents", ()):
                key = item["Key"]
                if key == self.compacted_key:
                    etag = str(item.get("ETag", "")).strip('"')
                elif key.startswith(self.prefix) and key.endswith(".json"):
                    names.append(key[len(self.prefix) :])
        return etag, names

    def _read_compacted(self) -> None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.compacted_key)
        except Exception as exc:
            if _status(exc) != 404:
                raise
            self._compacted, self._compacted_etag, self._through = {}, None, ""
            return
        # Of a larger one, the newest part (its lines are in the order they were written).
        large = int(head.get("ContentLength", 0)) > self.LIMIT
        window = {"Range": f"bytes=-{self.LIMIT}"} if large else {}
        got = self.client.get_object(Bucket=self.bucket, Key=self.compacted_key, **window)
        data = got["Body"].read(self.LIMIT + 1)
        if large:
            data = data.partition(b"\n")[2]  # began mid-line
        compacted = {}
        for raw in data.splitlines():
            upload = Upload.parse(raw)
            if upload is not None:
                compacted[upload.file] = upload
        self._compacted = compacted
        self._compacted_etag = str(got.get("ETag", "")).strip('"')
        self._through = str(got.get("Metadata", {}).get("through", ""))

    def _read_one(self, name: str) -> Upload | None:
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)
        except Exception as exc:
            if _status(exc) == 404:
                return None  # folded meanwhile: the next look reads uploads.jsonl again
            raise
        return Upload.parse(got["Body"].read(64 * 1024))

    def _maybe_compact(self, names: list[str]) -> None:
        settled = f"{int((time.time() - self.SETTLED) * 1000):013d}"
        old = [n for n in names if n < settled]
        if len(old) < self.COMPACT_AT:
            return
        folded = dict(self._compacted)
        for name in old:
            single = self._single[name]
            if single is not None:
                folded[single.file] = single
        if self._compacted_etag is None:
            condition = {"IfNoneMatch": "*"}
        else:
            condition = {"IfMatch": self._compacted_etag}  # (Ceph: without the quotes)
        try:
            put = self.client.put_object(
                Bucket=self.bucket,
                Key=self.compacted_key,
                Body=b"".join(upload.line() for upload in folded.values()),
                Metadata={"through": old[-1]},
                **condition,
            )
        except Exception as exc:
            if _status(exc) in (409, 412, 500, 503):
                return  # another replica folded them first (Ceph: some losers get 500)
            raise
        self._compacted, self._through = folded, old[-1]
        self._compacted_etag = str(put.get("ETag", "")).strip('"') or None
        for start in range(0, len(old), 1000):  # DeleteObjects takes 1,000 keys at most
            batch = [{"Key": self.prefix + n} for n in old[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        for name in old:
            del self._single[name]
        log.info("folded %d upload records into %s", len(old), self.compacted_key)

    def _warn(self, consequence: str, exc: BaseException) -> None:
        problem = f"s3://{self.bucket}/{self.prefix}: {exc}"
        if problem not in self._warned:
            self._warned.add(problem)
            log.warning("%s; %s", problem, consequence)
