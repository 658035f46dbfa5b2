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
import errno
import hashlib
import io
import logging
import os
import posixpath
import random
import secrets
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, BinaryIO
from urllib.parse import quote, unquote, urlsplit

from .attest import PROVENANCE, PROVENANCE_LIMIT
from .catalog import DistFile, FileStat
from .distfile import SIDECARS, version_key
from .errors import UsageError
from .manage import release_of
from .metadata import CoreMetadata
from .proxy import MAX_PAGE
from .publish import FileOps, Spool, TempFile
from .records import MAX_RECORD_BYTES, UPLOADS_FILE, RecordChanged, Upload
from .scan import describe, entry_from_fields, fields_of
from .storage import SIGNATURE_LIMIT, Stored, StoreFull, StoreUnavailable

__all__ = [
    "Journal",
    "S3ProxyStore",
    "S3Records",
    "S3Storage",
    "S3UploadLog",
    "describe_object",
    "listable",
    "make_client",
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


def listable(relpath: str) -> bool:
    """Whether an object's path may name a distribution: no empty or dot-name part (records,
    descriptions, temp names, ``..``), not a sidecar."""
    parts = relpath.split("/")
    return all(p and not p.startswith(".") for p in parts) and not relpath.endswith(SIDECARS)


# The client's bounds: a store that is away is known within seconds, never waited on for the
# client's defaults (60 s per read, then more attempts); botocore's "standard" retries take
# throttling and 5xx answers too, with a jittered back-off, and are capped here.
CONNECT_TIMEOUT = 3.0  # seconds to connect
READ_TIMEOUT = 30.0  # seconds without a byte from the store during an answer
ATTEMPTS = 3  # the first try and two retries
POOL = 50  # connections kept to the store: the worker threads, the feed, the records


def make_client() -> Any:
    """The boto3 S3 client every part of a bucketed server uses, with the AWS configuration
    users already have (AWS_ENDPOINT_URL, keys, region, profile) and the bounds above."""
    import boto3  # optional: pip install 'pkgserver[s3]'
    from botocore.config import Config

    config = Config(
        # Path-style addressing: Ceph RGW and MinIO serve buckets under the endpoint's path.
        s3={"addressing_style": "path"},
        # botocore presigns with the old SigV2 unless told; AWS and current stores want v4.
        signature_version="s3v4",
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"mode": "standard", "total_max_attempts": ATTEMPTS},
        max_pool_connections=POOL,
    )
    return boto3.client("s3", config=config)


def _claim_spool(base: str | None) -> Spool:
    """This process's spool folder: under ``base``, else (or when ``base`` cannot serve, said
    once in the log) under the system's temp folder, in a folder of this user's. Raises
    UsageError when neither serves."""
    fallback = os.path.join(tempfile.gettempdir(), f"pkgserver-spool-{os.geteuid()}")
    if base is not None:
        try:
            return Spool.claim(base)
        except OSError as exc:
            log.warning("cannot stage uploads in %s (%s); staging them in %s", base, exc, fallback)
    try:
        return Spool.claim(fallback)
    except OSError as exc:
        raise UsageError(
            f"cannot stage uploads in {fallback} ({exc.strerror or exc}): give --cache-dir "
            "a folder of this user's"
        ) from None


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

    def __init__(
        self,
        url: str,
        client: Any = None,
        spool: str | None = None,
        *,
        spool_base: str | None = None,
    ) -> None:
        """``spool``: the folder uploads are staged in; by default one of this process's own
        (``publish.Spool``) under ``spool_base`` (else under the system's temp folder), where
        the folders of processes that died are removed."""
        self.url = url.rstrip("/")
        self.bucket, self.prefix = parse_location(url)
        self.client = client if client is not None else make_client()
        self._spool: Spool | None = None
        if spool is None:
            self._spool = _claim_spool(spool_base)
            spool = self._spool.path
        self.spool = spool
        self.ops = FileOps()
        self.journal = Journal(self.client, self.bucket, self.prefix)
        self.meta = f"{self.prefix}/.pkgserver/meta" if self.prefix else ".pkgserver/meta"

    def close(self) -> None:
        """At shutdown: the spool folder goes (what is left in it belongs to no upload)."""
        if self._spool is not None:
            self._spool.close()

    # -- keys ------------------------------------------------------------------------------------
    def key(self, location: str) -> str:
        if not location.startswith(self.url + "/"):
            raise ValueError(f"{location!r} is not in {self.url}")
        relpath = location[len(self.url) + 1 :]
        return f"{self.prefix}/{relpath}" if self.prefix else relpath

    def relpath(self, location: str) -> str:
        return location[len(self.url) + 1 :]

    def description_key(self, relpath: str) -> str:
        """Where an object's hashes and metadata are kept (see s3feed.S3Feed)."""
        return f"{self.meta}/{relpath}.json"

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
        relpath = self.relpath(location)
        self.journal.note("gone", relpath)
        with contextlib.suppress(Exception):  # a leftover description is swept later
            self.client.delete_object(Bucket=self.bucket, Key=self.description_key(relpath))
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
        """The object as a file, and its version: a small one read whole, a larger one
        streamed as it is read (``ObjectReader``: the first byte goes out at once, and reading
        a wheel's metadata reads its end and one member, not all of it)."""
        return _open_object(self.client, self.bucket, self.key(location))

    def signature(self, location: str) -> bytes | None:
        return self._sidecar(location + ".asc", SIGNATURE_LIMIT)

    def provenance(self, location: str) -> bytes | None:
        return self._sidecar(location + PROVENANCE, PROVENANCE_LIMIT)

    def _sidecar(self, location: str, limit: int) -> bytes | None:
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key(location))
            if int(got.get("ContentLength", 0)) > limit:
                return None
            return bytes(got["Body"].read(limit))
        except Exception as exc:
            if _status(exc) in (403, 404):
                return None
            error = _as_oserror(exc)
            if isinstance(error, StoreUnavailable):
                raise error from None
            return None

    def url_for(self, location: str, expires: int, method: str = "GET") -> str:
        """A presigned URL with which anyone may read the object at ``location`` (GET, or
        HEAD) for ``expires`` seconds, at the endpoint this server uses. Signed here, without
        a request to the store. Raises OSError (no credentials to sign with)."""
        operation = "head_object" if method == "HEAD" else "get_object"
        try:
            url = self.client.generate_presigned_url(
                operation,
                Params={"Bucket": self.bucket, "Key": self.key(location)},
                ExpiresIn=expires,
            )
        except Exception as exc:
            raise _as_oserror(exc) from None
        return str(url)

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
                    if listable(relpath):
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


WHOLE_READ = 1024 * 1024  # objects up to this size are read in one go when opened
CHUNK = 1024 * 1024  # what a streamed object is read by


def _open_object(client: Any, bucket: str, key: str) -> tuple[BinaryIO, FileStat]:
    """An object as a file, and its version (``S3Storage.open``). Raises OSError."""
    try:
        got = client.get_object(Bucket=bucket, Key=key)
        st = _stat_of(got)
        if st.st_size <= WHOLE_READ:
            return io.BytesIO(got["Body"].read()), st
    except Exception as exc:
        raise _as_oserror(exc) from None
    raw = ObjectReader(client, bucket, key, st.st_size, got["Body"])
    return io.BufferedReader(raw, CHUNK), st


class ObjectReader(io.RawIOBase):
    """An object read as a seekable file without a local copy. Reads that follow each other
    come from one GET's stream; a read elsewhere (after a seek) asks for a ``WINDOW`` from
    there and keeps it, so an archive reader that reads the end, jumps about in it, then reads
    one member costs a few small ranged GETs; reading on past a window streams the rest."""

    WINDOW = 128 * 1024

    def __init__(self, client: Any, bucket: str, key: str, size: int, body: Any) -> None:
        super().__init__()
        self._client, self._bucket, self._key, self._size = client, bucket, key, size
        self._body: Any = body  # a GET's stream, at _stream_pos
        self._stream_pos = 0
        self._block: tuple[int, bytes] = (0, b"")  # the last window read: (start, bytes)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        pos = self._pos
        want = min(len(buffer), self._size - pos)
        if want <= 0:
            return 0
        start, block = self._block
        try:
            if start <= pos < start + len(block):
                data = block[pos - start : pos - start + want]
            else:
                if self._body is not None and self._stream_pos != pos:
                    self._drop()
                if self._body is None and block and pos == start + len(block):
                    self._body = self._get(f"bytes={pos}-")  # reading on: the rest
                    self._stream_pos = pos
                if self._body is None:
                    end = min(pos + self.WINDOW, self._size) - 1
                    block = self._get(f"bytes={pos}-{end}").read()
                    self._block = (pos, block)
                    data = block[:want]
                else:
                    data = self._body.read(want)
                    self._stream_pos += len(data)
        except Exception as exc:
            raise _as_oserror(exc) from None
        if not data:
            raise OSError(errno.EIO, "the object store ended the object early")
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n

    def _get(self, byte_range: str) -> Any:
        got = self._client.get_object(Bucket=self._bucket, Key=self._key, Range=byte_range)
        return got["Body"]

    def _drop(self) -> None:
        if self._body is not None:
            with contextlib.suppress(Exception):
                self._body.close()
            self._body = None

    def close(self) -> None:
        self._drop()
        super().close()


class Journal:
    """Change notices shared by the replicas of one bucket: one empty object per change,
    ``PREFIX/.pkgserver/changes/TIME-TOKEN-KIND-PATH``, so that a replica learns of another's
    upload, removal or record change by listing one small prefix (a few times a second)
    instead of the whole bucket, and reads nothing but the keys.

    KIND is ``file`` (a distribution published or replaced: PATH is its relpath), ``gone`` (a
    distribution removed) or ``record`` (a record rewritten: PATH is its name). TIME is the
    writer's clock in nanoseconds, so keys list in about the order they were written; a reader
    lists from ``WINDOW`` seconds before the newest notice it has seen and remembers the keys
    it saw, so writers whose clocks differ by less than that lose nothing. Notices are kept
    ``RETAIN`` seconds; anything a reader misses (a clock further off, a reader away longer
    than that) the periodic listing of the whole bucket finds.
    """

    WINDOW = 30.0
    RETAIN = 900.0
    KINDS = ("file", "gone", "record")

    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client, self.bucket = client, bucket
        self.dir = f"{prefix}/.pkgserver/changes/" if prefix else ".pkgserver/changes/"
        self._lock = threading.Lock()
        self._mine: set[str] = set()  # notices written here (not applied again)
        self._seen: set[str] = set()
        self._newest = 0  # TIME of the newest notice seen

    def note(self, kind: str, path: str) -> None:
        """Tell the other replicas. Never raises: without the notice they learn of the change
        at their next listing of the bucket."""
        key = "%s%019d-%s-%s-%s" % (  # noqa: UP031 (one key, four parts)
            self.dir,
            time.time_ns(),
            secrets.token_hex(4),
            kind,
            quote(path, safe=""),
        )
        with self._lock:
            self._mine.add(key)
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=b"")
        except Exception as exc:
            log.warning("could not tell the other replicas of %s %s: %s", kind, path, exc)

    def _keys(self, start_after: str) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.dir, StartAfter=start_after
        )
        for page in pages:
            for item in page.get("Contents", ()):
                yield item["Key"]

    def poll(self, since_ns: int | None = None) -> list[tuple[int, str, str]]:
        """The notices written since the last poll by other writers, oldest first, as
        (TIME, KIND, PATH). The first poll (or one given ``since_ns``) returns those written
        since then. Raises OSError when the store cannot be listed."""
        window = int(self.WINDOW * 1e9)
        with self._lock:
            if since_ns is not None:
                self._newest = max(self._newest, since_ns)
                start = since_ns
            else:
                start = max(self._newest - window, 0)
        try:
            keys = list(self._keys("%s%019d" % (self.dir, start)))  # noqa: UP031
        except Exception as exc:
            raise _as_oserror(exc) from None
        found = []
        with self._lock:
            for key in keys:
                if key in self._seen:
                    continue
                self._seen.add(key)
                parsed = self._parse(key)
                if parsed is None:
                    continue
                self._newest = max(self._newest, parsed[0])
                if key not in self._mine:
                    found.append(parsed)
            # What lies before the next poll's start is not listed again: forget it.
            horizon = "%s%019d" % (self.dir, max(self._newest - window, 0))  # noqa: UP031
            self._seen = {k for k in self._seen if k >= horizon}
            self._mine = {k for k in self._mine if k >= horizon}
        return found

    def _parse(self, key: str) -> tuple[int, str, str] | None:
        parts = key[len(self.dir) :].split("-", 3)
        if len(parts) != 4 or not parts[0].isdigit() or parts[2] not in self.KINDS:
            return None
        return int(parts[0]), parts[2], unquote(parts[3])

    def sweep(self) -> int:
        """Delete notices older than ``RETAIN`` (any replica may; racing deletes are
        harmless); how many."""
        horizon = "%s%019d" % (self.dir, time.time_ns() - int(self.RETAIN * 1e9))  # noqa: UP031
        old = []
        for key in self._keys(""):
            if key >= horizon:
                break
            old.append(key)
        for i in range(0, len(old), 1000):
            batch = [{"Key": k} for k in old[i : i + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(old)


class S3Records:
    """Small records (hosted names, yanks) as objects under ``PREFIX/.pkgserver/``: a
    ``storage.Records`` that several replicas share.

    An object store has no append: ``append`` reads the record and writes it back only if it
    is still the version read (If-Match, or If-None-Match for a new one), and starts again when
    another replica wrote in between, so no replica's lines are lost. Ceph honours If-Match
    only with the ETag's quotes stripped, and some racing losers get 500 rather than 412:
    both mean "read again" here (a bounded number of times). A 503 (the store overloaded or
    throttling, after the client's own retries) is not a race: it is raised at once.
    """

    ATTEMPTS = 50

    def __init__(self, url: str, client: Any = None) -> None:
        self.url = url.rstrip("/")
        self.bucket, prefix = parse_location(url)
        self.base = f"{prefix}/.pkgserver" if prefix else ".pkgserver"
        self.client = client if client is not None else make_client()
        self.journal = Journal(self.client, self.bucket, prefix)
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        # Within ``locked``: the thread holding it, and the versions of the records it read
        # ("" for one that did not exist), which its ``replace`` writes over only if unchanged.
        self._holder: int | None = None
        self._read_versions: dict[str, str] = {}

    def file(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.base}/{name}"

    def _holding(self) -> bool:
        return self._holder == threading.get_ident()

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
        if self._holding():
            self._read_versions[name] = found[1] if found is not None else ""
        return found[0] if found is not None else None

    def replace(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """Write ``name`` whole. Within ``locked``, after reading it there: only if no other
        writer rewrote it since (If-Match, If-None-Match), else RecordChanged."""
        condition: dict[str, str] = {}
        read = self._read_versions.get(name) if self._holding() else None
        if read is not None:
            condition = {"IfMatch": read} if read else {"IfNoneMatch": "*"}
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=f"{self.base}/{name}", Body=data, **condition
            )
        except Exception as exc:
            # (Ceph answers some racing losers 500 rather than 412.)
            if condition and _status(exc) in (409, 412, 500):
                raise RecordChanged(self.file(name)) from None
            raise _as_oserror(exc) from None
        self.journal.note("record", name)

    def append(self, name: str, data: bytes) -> None:
        for attempt in range(self.ATTEMPTS):
            found = self._get(name, 16 * 1024 * 1024)
            body = (found[0] if found else b"") + data
            condition = {"IfMatch": found[1]} if found else {"IfNoneMatch": "*"}
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=f"{self.base}/{name}", Body=body, **condition
                )
            except Exception as exc:
                if _status(exc) not in (409, 412, 500):
                    raise _as_oserror(exc) from None
            else:
                self.journal.note("record", name)
                return
            time.sleep(random.uniform(0, 0.01 * (attempt + 1)))  # noqa: S311 (jitter, after another replica wrote)
        raise OSError(11, f"the record kept changing; gave up after {self.ATTEMPTS} tries")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One writer at a time within this process; between processes, a ``replace`` of a
        record read here is conditional (RecordChanged: read again), and so is ``append``."""
        with self._lock:
            self._holder, self._read_versions = threading.get_ident(), {}
            try:
                yield
            finally:
                self._holder, self._read_versions = None, {}

    def warn_once(self, consequence: str, exc: BaseException) -> None:
        problem = str(exc)
        with self._lock:
            if problem in self._warned:
                return
            self._warned.add(problem)
        log.warning("%s; %s", problem, consequence)

    def all_well(self, name: str) -> None:
        self._warned.clear()


def _status(exc: BaseException) -> int | None:
    """The HTTP status of a botocore ClientError, else None."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


def _code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError ("QuotaExceeded", "SlowDown"), else ""."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


# Answers that mean "later" (after the client's own retries), and those that mean "no room".
_LATER = frozenset(
    {"SlowDown", "ServiceUnavailable", "RequestTimeout", "Throttling", "ThrottlingException"}
)
_FULL = frozenset({"QuotaExceeded", "InsufficientCapacity", "XMinioStorageFull", "StorageFull"})


def _unreachable(exc: BaseException) -> str | None:
    """What kept the store from answering (connect, time out, cut), or None for an answer."""
    try:
        from botocore import exceptions
    except ImportError:  # (not raised by boto3, then)
        return None
    if isinstance(exc, (exceptions.ConnectTimeoutError, exceptions.ReadTimeoutError)):
        return "timed out"
    if isinstance(exc, exceptions.ConnectionError):
        return "could not connect"
    if isinstance(exc, (exceptions.HTTPClientError, exceptions.IncompleteReadError)):
        return "the connection broke"
    return None


def _as_oserror(exc: BaseException) -> OSError:
    """A store's refusal or absence as the OSError the publisher and the downloads turn into
    a 4xx/5xx: StoreUnavailable (503) for a store away or answering "later", StoreFull (507)
    for one out of room, EFBIG (413) for an object larger than it takes."""
    status, code = _status(exc), _code(exc)
    away = _unreachable(exc)
    if away is not None:
        # Which endpoint it tried (scheme, host, port; no bucket, key or query).
        parts = urlsplit(str(getattr(exc, "kwargs", {}).get("endpoint_url") or ""))
        where = f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""
        return StoreUnavailable(f"the object store is unavailable ({away})", where)
    if code in _FULL or status == 507:
        return StoreFull(f"the object store is out of room ({code or status})")
    if code == "EntityTooLarge":
        return OSError(errno.EFBIG, "the object store takes no object this large")
    if status == 404:
        return FileNotFoundError(errno.ENOENT, "no such object")
    if status in (401, 403):
        return PermissionError(errno.EACCES, f"the object store refused: {exc}")
    if code in _LATER or (status is not None and status >= 500):
        return StoreUnavailable(f"the object store is unavailable ({code or status})")
    return OSError(errno.EIO, f"the object store failed: {exc}")


def describe_object(storage: S3Storage, relpath: str, extra_algos: Sequence[str] = ()) -> DistFile:
    """An object read as the index reads a file (hashes, core metadata), with the version
    that was read (a listing may be older). Raises InvalidDistFilename or OSError."""
    name = relpath.rsplit("/", 1)[-1]
    with tempfile.TemporaryDirectory(dir=storage.spool) as tmp:
        local = os.path.join(tmp, name)  # named as the object: describe reads the name
        with open(local, "wb") as out:
            st = storage.fetch(f"{storage.url}/{relpath}", out)
        provenance = storage.provenance(f"{storage.url}/{relpath}")
        if provenance is not None:  # beside it, where describe looks for it
            with open(local + PROVENANCE, "wb") as out:
                out.write(provenance)
        found = describe(tmp, name, os.stat(local), extra_algos)
    return entry_from_fields(storage.url, relpath, st, fields_of(found))


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


# -- the caching proxy's cache --------------------------------------------------------------------
class S3ProxyStore:
    """The caching proxy's cache in a bucket (a ``pkgserver.proxy.ProxyStore``), under
    ``s3://bucket/PREFIX`` (by default ``.pkgserver/proxy`` beside a bucket's files, where the
    listing of hosted files never looks: dot-names are not distributions, ``listable``):
    ``PREFIX/pages/<project>.json`` and ``PREFIX/files/<project>/<filename>``.

    A download is written to a local temporary file (in a spool folder of this process's, as
    uploads are staged) and, once its sha256 matched, stored with one PUT (a multipart upload
    above ``MULTIPART_AT``): an object is complete under its key or not there, and every
    replica that shares the bucket serves it from then on. Nothing is noted in the journal:
    the cache is no replica's catalog, and each asks the bucket for what it lacks.

    A bucket keeps no access times, so ``touch`` writes nothing: after a restart the least
    recently *stored* files are evicted first; within a process's life, the least recently
    used (``ProxyCache`` keeps that order in memory).
    """

    MULTIPART_AT = 64 * 1024 * 1024  # bytes: larger files go up in parts of this size

    def __init__(self, url: str, client: Any = None, *, spool_base: str | None = None) -> None:
        """``spool_base``: where this process's spool folder goes (``_claim_spool``: else
        under the system's temp folder)."""
        self.url = url.rstrip("/")
        try:
            self.bucket, prefix = parse_location(self.url)
        except ValueError as exc:
            raise UsageError(f"cannot keep the proxy's cache there: {exc}") from None
        base = f"{prefix}/" if prefix else ""
        self.pages_prefix = base + "pages/"
        self.files_prefix = base + "files/"
        self.where = self.url + "/files"  # DistFile.root: a cached file's path is WHERE/RELPATH
        self.client = client if client is not None else make_client()
        spool = _claim_spool(spool_base)
        self.spool = spool.path
        # The folder goes at exit (or with the next start that shares the base, after a kill).
        self._closer = weakref.finalize(self, spool.close)
        self._warned: set[str] = set()

    def close(self) -> None:
        self._closer()

    def _warn(self, consequence: str, exc: BaseException) -> None:
        """A store's failure in a method that must not raise: logged once until it recovers."""
        problem = f"{self.url}: {exc}"
        if problem not in self._warned:
            self._warned.add(problem)
            log.warning("proxy cache: %s; %s", problem, consequence)

    # -- keys ------------------------------------------------------------------------------------
    def _file_key(self, relpath: str) -> str:
        parts = relpath.split("/")
        if len(parts) != 2 or not all(p and p not in (".", "..") for p in parts):
            raise FileNotFoundError(errno.ENOENT, "not a cached file's name", relpath)
        return self.files_prefix + relpath

    def _page_key(self, name: str) -> str:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"not a project name: {name!r}")
        return f"{self.pages_prefix}{name}.json"

    # -- pages -----------------------------------------------------------------------------------
    def read_page(self, name: str) -> bytes | None:
        """The stored page, or None: not stored, or (logged) the store cannot be read now."""
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self._page_key(name))
            if int(got.get("ContentLength", 0)) > MAX_PAGE * 2:
                return None
            data = bytes(got["Body"].read(MAX_PAGE * 2))
        except Exception as exc:
            if _status(exc) != 404:
                self._warn("cached pages are not read", _as_oserror(exc))
            return None
        self._warned.clear()
        return data

    def write_page(self, name: str, data: bytes) -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._page_key(name),
                Body=data,
                ContentType="application/json",
            )
        except Exception as exc:
            raise _as_oserror(exc) from None

    def drop_page(self, name: str) -> bool:
        """Delete a project's page and files; whether the page was there. Raises OSError."""
        key = self._page_key(name)
        try:
            try:
                self.client.head_object(Bucket=self.bucket, Key=key)
                found = True
            except Exception as exc:
                if _status(exc) != 404:
                    raise
                found = False
            self.client.delete_object(Bucket=self.bucket, Key=key)
            keys = [k for k, _item in self._list(f"{self.files_prefix}{name}/")]
            for start in range(0, len(keys), 1000):  # DeleteObjects takes 1,000 keys at most
                batch = [{"Key": k} for k in keys[start : start + 1000]]
                self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
        except Exception as exc:
            raise _as_oserror(exc) from None
        return found

    def page_names(self) -> list[str]:
        """The projects with a stored page ([] when the store cannot be listed now: logged)."""
        names = []
        try:
            for key, _item in self._list(self.pages_prefix):
                name = key[len(self.pages_prefix) :]
                if name.endswith(".json") and "/" not in name and not name.startswith("."):
                    names.append(name[: -len(".json")])
        except Exception as exc:
            self._warn("the cached pages are not known until asked for", _as_oserror(exc))
            return []
        return sorted(names)

    # -- files -----------------------------------------------------------------------------------
    def _list(self, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        for page in pages:
            for item in page.get("Contents", ()):
                yield item["Key"], item

    def files(self) -> Iterator[tuple[str, int, float]]:
        """(relpath, size, when stored) of every cached file. A bucket that cannot be listed
        now (logged) yields what it listed so far: the eviction bound then counts only the
        files stored since."""
        try:
            for key, item in self._list(self.files_prefix):
                relpath = key[len(self.files_prefix) :]
                if relpath.count("/") == 1 and not relpath.startswith("/"):
                    yield relpath, int(item.get("Size", 0)), item["LastModified"].timestamp()
        except Exception as exc:
            self._warn("cached files stored before are not counted", _as_oserror(exc))

    def stat(self, relpath: str) -> FileStat | None:
        """The stored file's version, or None: not stored, or (logged) the store cannot be
        asked now (the file is then fetched from the upstream again)."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._file_key(relpath))
        except Exception as exc:
            if _status(exc) != 404 and not isinstance(exc, FileNotFoundError):
                self._warn("cached files are not served", _as_oserror(exc))
            return None
        self._warned.clear()
        return _stat_of(head)

    def open(self, location: str) -> tuple[BinaryIO, FileStat]:
        """As ``S3Storage.open``, for a DistFile.path of this store. Raises OSError."""
        if not location.startswith(self.where + "/"):
            raise FileNotFoundError(errno.ENOENT, "not in the proxy's cache", location)
        key = self._file_key(location[len(self.where) + 1 :])
        return _open_object(self.client, self.bucket, key)

    def temp(self) -> tuple[BinaryIO, str]:
        fd, path = tempfile.mkstemp(dir=self.spool, prefix="proxy-")
        return os.fdopen(fd, "wb"), path

    def keep(self, temp_path: str, relpath: str) -> FileStat:
        """Store the verified temporary file under its name, then remove it. Raises OSError
        (the temporary file stays: the caller removes it)."""
        key = self._file_key(relpath)
        size = os.path.getsize(temp_path)
        try:
            if size <= self.MULTIPART_AT:
                with open(temp_path, "rb") as body:
                    self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
            else:
                # Parts, sent a few at a time; the object appears whole when the upload is
                # completed (a failed one is aborted: nothing is left under the key).
                from boto3.s3.transfer import TransferConfig

                config = TransferConfig(
                    multipart_threshold=self.MULTIPART_AT,
                    multipart_chunksize=self.MULTIPART_AT,
                    max_concurrency=4,
                )
                self.client.upload_file(temp_path, self.bucket, key, Config=config)
        except Exception as exc:
            raise _as_oserror(exc) from None
        with contextlib.suppress(OSError):
            os.unlink(temp_path)
        try:
            return _stat_of(self.client.head_object(Bucket=self.bucket, Key=key))
        except Exception:  # stored; its version is read again when it is served
            return FileStat(size, int(time.time()) * 1_000_000_000, 0)

    def drop(self, relpath: str) -> None:
        """Delete a cached file (never raises: one left behind is dropped when found stale)."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._file_key(relpath))
        except Exception as exc:
            self._warn("a cached file could not be deleted", _as_oserror(exc))

    def touch(self, relpath: str) -> None:
        """Nothing: a bucket keeps no access times (see the class docstring)."""

    def local_path(self, relpath: str) -> str | None:
        return None
