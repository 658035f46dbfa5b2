"""pkgserver.s3: the object-store Storage, against a real S3 server (Ceph RADOS Gateway).

The gateway is started once for the session (conftest.py's ``s3_env``, see tests/ceph.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from builders import big_wheel, make_sdist, make_wheel
from ceph import REPO, unavailable
from forms import upload_form
from server import Server, client_env, run_client, server_env

from pkgserver.catalog import Catalog
from pkgserver.errors import Conflict
from pkgserver.hosted import HostedNames
from pkgserver.metadata import core_metadata_of
from pkgserver.records import YANKED_FILE, Yanks, set_yank_in
from pkgserver.s3 import (
    Journal,
    ObjectReader,
    S3Records,
    S3Storage,
    S3UploadLog,
    listable,
    parse_location,
)
from pkgserver.s3feed import S3Feed
from pkgserver.upload import Outcome, Uploads


def _pkgserver(aws: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``pkgserver ARGS`` as an admin runs it, the store found through the AWS settings."""
    return subprocess.run(
        [sys.executable, "-m", "pkgserver", *args],
        env=server_env(aws),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _until(predicate: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    """Poll until ``predicate()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not true within {timeout}s: {what}"
        time.sleep(0.1)


def _client(env: dict[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=env["S3_ENDPOINT"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=32),
    )


def _storage(env: dict[str, str], url: str, tmp_path: Path) -> S3Storage:
    spool = tmp_path / f"spool-{uuid.uuid4().hex[:6]}"
    spool.mkdir()
    return S3Storage(url, client=_client(env), spool=str(spool))


def _upload(uploads: Uploads, wheel: Path, **extra: str) -> Outcome:
    body, ctype = upload_form(wheel, extra=list(extra.items()))
    return uploads.handle(io.BytesIO(body), len(body), ctype, "alice")


# What the change feed keeps in the bucket: change notices, descriptions, the index snapshot.
OF_THE_FEED = ("changes/", "meta/", "snapshot.json.gz")


def _objects(env: dict[str, str], url: str) -> dict[str, bytes]:
    bucket, prefix = parse_location(url)
    client = _client(env)
    out = {}
    for item in client.list_objects_v2(Bucket=bucket).get("Contents", ()):
        key = item["Key"]
        if key.startswith(tuple(f"{prefix}/.pkgserver/{k}" for k in OF_THE_FEED)):
            continue  # the replicas' own bookkeeping
        out[key[len(prefix) + 1 :]] = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return out


def test_only_plain_paths_may_name_distributions() -> None:
    assert listable("demo-1.0-py3-none-any.whl") and listable("team/demo-1.0.tar.gz")
    for path in ("../demo-1.0.tar.gz", ".pkgserver/x.whl", "a//demo-1.0.tar.gz", "/x.whl"):
        assert not listable(path), path
    assert not listable("demo-1.0.tar.gz.asc")


def test_locations_name_a_bucket_and_a_prefix() -> None:
    assert parse_location("s3://corp-index/pkgs/") == ("corp-index", "pkgs")
    assert parse_location("s3://corp-index") == ("corp-index", "")
    with pytest.raises(ValueError):
        parse_location("/srv/packages")


def test_an_upload_is_published_and_read_back(
    s3_env: dict[str, str], bucket_url: str, tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    storage = _storage(s3_env, bucket_url, tmp_path)
    uploads = Uploads([str(tmp_path / "records")], Catalog(), storage=storage)
    signature = "-----BEGIN PGP SIGNATURE-----\nxx\n-----END PGP SIGNATURE-----\n"
    assert _upload(uploads, wheel, gpg_signature=signature).status == 200
    assert _objects(s3_env, bucket_url) == {
        wheel.name: wheel.read_bytes(),
        wheel.name + ".asc": signature.encode(),
    }
    listed = uploads.catalog.snapshot.files[wheel.name]
    assert listed.path == f"{bucket_url}/{wheel.name}" and listed.size == wheel.stat().st_size
    fh, st = storage.open(listed.path)
    with fh:
        assert fh.read() == wheel.read_bytes()
    assert listed.matches(st)  # the catalog's entry and the object agree on its version
    assert not list(Path(storage.spool).iterdir())  # nothing staged is left
    assert _upload(uploads, wheel).status == 200  # the same bytes again: accepted, unchanged


def test_a_large_object_is_read_as_a_stream_with_ranged_seeks(
    s3_env: dict[str, str], bucket_url: str, tmp_path: Path
) -> None:
    # Over 1 MiB, open() streams: no local copy, a seek asks for the range from there.
    bucket, prefix = parse_location(bucket_url)
    data = os.urandom(3 * 1024 * 1024 + 17)
    client = _client(s3_env)
    client.put_object(Bucket=bucket, Key=f"{prefix}/blob-1.0.tar.gz", Body=data)
    storage = _storage(s3_env, bucket_url, tmp_path)
    ranges: list[str] = []
    storage.client.meta.events.register(
        "before-parameter-build.s3.GetObject",
        lambda params, **_: ranges.append(params.get("Range", "whole")),
    )
    fh, st = storage.open(f"{bucket_url}/blob-1.0.tar.gz")
    with fh:
        assert st.st_size == len(data)
        assert fh.read(1000) == data[:1000]
        fh.seek(-100, io.SEEK_END)
        assert fh.tell() == len(data) - 100 and fh.read() == data[-100:]
        fh.seek(2_000_000)
        assert fh.read(5) == data[2_000_000:2_000_005]
        fh.seek(0)
        assert hashlib.sha256(fh.read()).digest() == hashlib.sha256(data).digest()
    size, window = len(data), ObjectReader.WINDOW
    assert ranges == [
        "whole",  # open(): read on from the start, and the first 1,000 bytes came from it
        f"bytes={size - 100}-{size - 1}",  # a window at the end
        f"bytes=2000000-{2000000 + window - 1}",  # a window there
        f"bytes=0-{window - 1}",  # back to the start: a window, then...
        f"bytes={window}-",  # ...reading on, the rest as a stream
    ]
    assert not list(Path(storage.spool).iterdir())  # nothing was copied to the disk
    # A wheel's metadata is read from its end and one member: a fraction of the object.
    wheel = big_wheel(tmp_path / "big", "bigmeta", "1.0", 8 * 1024 * 1024)
    client.put_object(Bucket=bucket, Key=f"{prefix}/{wheel.name}", Body=wheel.read_bytes())
    read: list[int] = []
    storage.client.meta.events.register(
        "after-call.s3.GetObject", lambda parsed, **_: read.append(parsed["ContentLength"])
    )
    fh, _st = storage.open(f"{bucket_url}/{wheel.name}")
    ranges.clear()  # (open()'s own GET is dropped unread at the first seek)
    read.clear()
    with fh:
        meta = core_metadata_of(fh, wheel.name, "bdist_wheel", "bigmeta")
    assert b"Name: bigmeta" in meta.raw
    assert len(ranges) == 2, ranges  # the end, then the member: two windows
    assert sum(read) < 2 * ObjectReader.WINDOW  # of an 8 MiB object


def test_two_replicas_racing_for_one_name_give_one_winner(
    s3_env: dict[str, str], bucket_url: str, tmp_path: Path
) -> None:
    # Two replicas (two Uploads over the same bucket, each with its own catalog) publish one
    # filename with different bytes at the same moment: If-None-Match makes exactly one win,
    # and the stored bytes are the winner's. Several rounds, each a new name.
    replicas = [
        Uploads([str(tmp_path / "r1")], Catalog(), storage=_storage(s3_env, bucket_url, tmp_path)),
        Uploads([str(tmp_path / "r2")], Catalog(), storage=_storage(s3_env, bucket_url, tmp_path)),
    ]
    expected: dict[str, bytes] = {}
    for round_ in range(8):
        version = f"1.{round_}"
        wheels = [
            make_wheel(tmp_path / f"{side}{round_}", "demo", version, summary=side)
            for side in ("first", "second")
        ]
        results: dict[int, int] = {}
        start = threading.Barrier(2)

        def publish(
            n: int,
            wheel: Path,
            results: dict[int, int] = results,
            start: threading.Barrier = start,
        ) -> None:
            start.wait()
            try:
                results[n] = _upload(replicas[n], wheel).status
            except Conflict:
                results[n] = 409

        threads = [threading.Thread(target=publish, args=(n, w)) for n, w in enumerate(wheels)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(results.values()) == [200, 409], (round_, results)
        winner = wheels[0] if results[0] == 200 else wheels[1]
        expected[winner.name] = winner.read_bytes()
    assert _objects(s3_env, bucket_url) == expected


def test_overwrite_replaces_and_remove_pkg_removes(
    s3_env: dict[str, str], bucket_url: str, tmp_path: Path
) -> None:
    old = make_wheel(tmp_path / "old", "demo", "1.0", summary="old")
    new = make_wheel(tmp_path / "new", "demo", "1.0", summary="new")
    other = make_wheel(tmp_path / "other", "demo", "2.0")
    storage = _storage(s3_env, bucket_url, tmp_path)
    strict = Uploads([str(tmp_path / "records")], Catalog(), storage=storage)
    assert _upload(strict, old).status == 200
    with pytest.raises(Conflict):
        _upload(strict, new)  # different bytes, no --overwrite: refused, nothing changed
    assert _objects(s3_env, bucket_url) == {old.name: old.read_bytes()}
    loose = Uploads([str(tmp_path / "records")], strict.catalog, storage=storage, overwrite=True)
    assert _upload(loose, new).status == 200
    assert _upload(loose, other).status == 200
    assert _objects(s3_env, bucket_url) == {
        new.name: new.read_bytes(),
        other.name: other.read_bytes(),
    }
    body = b":action=remove_pkg&name=demo&version=1.0"
    outcome = loose.handle(io.BytesIO(body), len(body), "application/x-www-form-urlencoded", None)
    assert outcome.status == 200
    assert _objects(s3_env, bucket_url) == {other.name: other.read_bytes()}
    assert list(loose.catalog.snapshot.files) == [other.name]


def test_records_are_objects_read_back_and_versioned(
    s3_env: dict[str, str], bucket_url: str
) -> None:
    records = S3Records(bucket_url, client=_client(s3_env))
    assert records.read("yanked.json") is None and records.stamp("yanked.json") is None
    records.replace("yanked.json", b'{"yanked": {}}\n')
    first = records.stamp("yanked.json")
    assert records.read("yanked.json") == b'{"yanked": {}}\n' and first is not None
    records.append("yanked.json", b"more\n")
    assert records.read("yanked.json") == b'{"yanked": {}}\nmore\n'
    assert records.stamp("yanked.json") != first  # what a replica polls to reload
    assert records.file("x").startswith("s3://") and records.file("x").endswith("/.pkgserver/x")


def test_two_replicas_claiming_names_at_once_lose_none(
    s3_env: dict[str, str], bucket_url: str, tmp_path: Path
) -> None:
    # Each replica claims 25 names of its own, one append each, at the same time as the other:
    # the conditional append (If-Match) keeps every line, whoever wrote between read and write.
    replicas = [
        HostedNames([], folders=[S3Records(bucket_url, client=_client(s3_env))]) for _ in range(2)
    ]
    start = threading.Barrier(2)

    def claim(n: int) -> None:
        start.wait()
        for i in range(25):
            replicas[n].add([f"replica{n}-project{i}"])

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    fresh = HostedNames([], folders=[S3Records(bucket_url, client=_client(s3_env))])
    assert fresh.names() == {f"replica{n}-project{i}" for n in range(2) for i in range(25)}
    replicas[0].reload()  # and a running replica sees the other's claims
    assert "replica1-project24" in replicas[0]


def test_files_put_by_other_tools_are_listed_once_read_and_removed_when_gone(
    s3_env: dict[str, str], bucket_url: str, tmp_path: Path
) -> None:
    # As `aws s3 cp` would: objects put straight into the bucket. The first replica reads each
    # once and stores its description; a second replica (and a restart) takes it from there.
    bucket, prefix = parse_location(bucket_url)
    client = _client(s3_env)
    wheel = make_wheel(tmp_path / "dist", "copied", "1.0", summary="Put there by a CI job")
    client.put_object(Bucket=bucket, Key=f"{prefix}/{wheel.name}", Body=wheel.read_bytes())
    client.put_object(Bucket=bucket, Key=f"{prefix}/notes.txt", Body=b"not a distribution")
    claimed: list[str] = []
    first = S3Feed(
        _storage(s3_env, bucket_url, tmp_path), Catalog(), interval=3600, on_claim=claimed.extend
    )
    first.reconcile()
    listed = first.catalog.snapshot.files[wheel.name]
    assert listed.sha256 == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert listed.metadata_sha256 is not None and listed.summary == "Put there by a CI job"
    assert first.described == 1 and claimed == ["copied"]
    assert list(first.catalog.snapshot.files) == [wheel.name]

    second = S3Feed(_storage(s3_env, bucket_url, tmp_path), Catalog(), interval=3600)
    second.reconcile()
    assert second.described == 0  # from the stored description: no replica reads it again
    assert second.catalog.snapshot.files[wheel.name] == listed

    first.reconcile()  # nothing changed: nothing read again
    assert first.described == 1
    client.delete_object(Bucket=bucket, Key=f"{prefix}/{wheel.name}")
    first.reconcile()
    assert wheel.name not in first.catalog.snapshot.files
    # Its description stays for a while (it might be an upload's, stored just before its
    # object), then a sweep removes it.
    meta = f"{prefix}/.pkgserver/meta/"
    assert first.sweep_descriptions() == 0
    assert client.list_objects_v2(Bucket=bucket, Prefix=meta)["KeyCount"] == 1
    assert first.sweep_descriptions(older_than=0) == 1
    assert client.list_objects_v2(Bucket=bucket, Prefix=meta)["KeyCount"] == 0


def test_an_upload_on_one_replica_is_listed_by_the_other(
    s3_env: dict[str, str], bucket_url: str, tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path / "dist", "shared", "1.0")
    feed_a = S3Feed(_storage(s3_env, bucket_url, tmp_path), Catalog(), interval=3600)
    uploads_a = Uploads(
        [str(tmp_path / "a")], feed_a.catalog, storage=feed_a.storage, on_published=feed_a.remember
    )
    # Replica b lists the bucket once an hour: only the journal can tell it of the upload.
    feed_b = S3Feed(_storage(s3_env, bucket_url, tmp_path), Catalog(), interval=3600)
    feed_b.start()
    try:
        assert _upload(uploads_a, wheel).status == 200
        _wait_for(lambda: wheel.name in feed_b.catalog.snapshot.files, "b never listed it")
        assert (
            feed_b.catalog.snapshot.files[wheel.name] == feed_a.catalog.snapshot.files[wheel.name]
        )
        assert feed_b.described == 0  # the uploader stored the description
        # A removal on a: unlisted on b the same way (and its description goes with it).
        uploads_a.remove("shared", "1.0")
        _wait_for(lambda: wheel.name not in feed_b.catalog.snapshot.files, "b still lists it")
        bucket, prefix = parse_location(bucket_url)
        meta = _client(s3_env).list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/.pkgserver/meta/")
        assert meta.get("KeyCount") == 0
    finally:
        feed_b.stop()


def _wait_for(check: Callable[[], bool], why: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, why
        time.sleep(0.05)


def test_the_journal_tells_other_writers_changes_once_and_keeps_them_a_while(
    s3_env: dict[str, str], bucket_url: str
) -> None:
    bucket, prefix = parse_location(bucket_url)
    writer = Journal(_client(s3_env), bucket, prefix)
    reader = Journal(_client(s3_env), bucket, prefix)
    assert reader.poll(since_ns=0) == []
    writer.note("file", "demo-1.0-py3-none-any.whl")
    writer.note("record", "yanked.json")
    writer.note("gone", "sub dir/odd-name-1.0.tar.gz")  # any relpath survives the key
    got = reader.poll()
    assert [(kind, path) for _, kind, path in got] == [
        ("file", "demo-1.0-py3-none-any.whl"),
        ("record", "yanked.json"),
        ("gone", "sub dir/odd-name-1.0.tar.gz"),
    ]
    assert reader.poll() == []  # each notice once
    assert writer.poll(since_ns=0) == []  # a writer's own notices are not news to it
    # A writer whose clock is 10 s behind: its notice sorts before the newest seen, and is
    # still found (the reader lists from WINDOW seconds before the newest).
    late = time.time_ns() - 10 * 10**9
    client = _client(s3_env)
    client.put_object(
        Bucket=bucket, Key=f"{reader.dir}{late:019d}-0badc10c-file-late.whl", Body=b""
    )
    assert [p for _, _, p in reader.poll()] == ["late.whl"]
    client.put_object(Bucket=bucket, Key=f"{reader.dir}{late:019d}-junk", Body=b"")
    assert reader.poll() == []  # keys of another shape are ignored
    # Notices older than RETAIN are swept; newer ones stay.
    old = time.time_ns() - int((Journal.RETAIN + 60) * 1e9)
    client.put_object(Bucket=bucket, Key=f"{reader.dir}{old:019d}-00000000-gone-x.whl", Body=b"")
    assert reader.sweep() == 1
    left = client.list_objects_v2(Bucket=bucket, Prefix=reader.dir)["KeyCount"]
    assert left == 5


def test_a_replica_starts_from_the_snapshot_without_reading_any_distribution(
    s3_env: dict[str, str], bucket_url: str, tmp_path: Path
) -> None:
    bucket, prefix = parse_location(bucket_url)
    client = _client(s3_env)
    wheels = [make_wheel(tmp_path / f"d{i}", f"snap{i % 7}", f"1.{i}") for i in range(40)]
    for wheel in wheels:
        client.put_object(Bucket=bucket, Key=f"{prefix}/{wheel.name}", Body=wheel.read_bytes())
    first = S3Feed(_storage(s3_env, bucket_url, tmp_path), Catalog(), interval=3600)
    first.start()  # a cold bucket: every object read once, then the snapshot is stored
    try:
        assert first.described == 40 and not first.started_from_snapshot
        _wait_for(lambda: first.snapshot.state() is not None, "no snapshot was stored", 30)
        # After the snapshot: an upload on the first replica (journal), a file put there by
        # another tool (no notice: the listing after the start finds it).
        later = make_wheel(tmp_path / "later", "snap-late", "2.0")
        uploads = Uploads(
            [str(tmp_path / "r")], first.catalog, storage=first.storage, on_published=first.remember
        )
        assert _upload(uploads, later).status == 200
        copied = make_wheel(tmp_path / "copied", "snap-copied", "3.0")
        client.put_object(Bucket=bucket, Key=f"{prefix}/{copied.name}", Body=copied.read_bytes())
        gone = wheels[0].name  # removed by another tool: listed by the snapshot until then
        client.delete_object(Bucket=bucket, Key=f"{prefix}/{gone}")
    finally:
        first.stop()

    storage = _storage(s3_env, bucket_url, tmp_path)
    reads: list[str] = []
    storage.client.meta.events.register(
        "before-parameter-build.s3.GetObject", lambda params, **_: reads.append(params["Key"])
    )
    claimed: list[str] = []
    second = S3Feed(storage, Catalog(), interval=3600, on_claim=claimed.extend)
    second.start()
    try:
        assert second.started_from_snapshot and second.described == 0
        files = second.catalog.snapshot.files
        assert later.name in files  # from the journal
        assert all(w.name in files for w in wheels[1:])
        # Read at start: the snapshot and the uploaded file's description, no distribution.
        assert not [k for k in reads if k.endswith((".whl", ".tar.gz"))], reads
        assert {f"snap{i}" for i in range(7)} <= set(claimed)
        # The listing that follows a start from a snapshot: the copied file, the removal.
        _wait_for(lambda: copied.name in second.catalog.snapshot.files, "copied not listed")
        _wait_for(lambda: gone not in second.catalog.snapshot.files, "removed still listed")
        assert second.described == 1  # the copied one, read once
    finally:
        second.stop()


def test_two_writers_yanking_at_once_lose_no_yank_and_forget_loses_no_claim(
    s3_env: dict[str, str], bucket_url: str
) -> None:
    # Two admins (or replicas) rewrite yanked.json at the same moment, 15 times each: the
    # rewrite is conditional on the version read, and read again when another won.
    writers = [S3Records(bucket_url, client=_client(s3_env)) for _ in range(2)]
    start = threading.Barrier(2)

    def yank(n: int) -> None:
        start.wait()
        for i in range(15):
            set_yank_in([writers[n]], f"p{n}", f"1.{i}", f"reason {i}")

    threads = [threading.Thread(target=yank, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    table = json.loads(writers[0].read(YANKED_FILE) or b"{}")["yanked"]
    assert {p: len(v) for p, v in table.items()} == {"p0": 15, "p1": 15}
    # forget racing with claims: the claims made meanwhile are kept.
    hosted = [HostedNames([], folders=[w]) for w in writers]
    hosted[0].add(["retired"])
    start = threading.Barrier(2)

    def claim() -> None:
        start.wait()
        for i in range(10):
            hosted[1].add([f"new{i}"])

    claimer = threading.Thread(target=claim)
    claimer.start()
    start.wait()
    assert hosted[0].forget("retired")
    claimer.join(120)
    fresh = HostedNames([], folders=[S3Records(bucket_url, client=_client(s3_env))])
    assert fresh.names() == {f"new{i}" for i in range(10)}


def test_a_yank_on_one_replica_is_seen_by_the_other(
    s3_env: dict[str, str], bucket_url: str
) -> None:
    writer = S3Records(bucket_url, client=_client(s3_env))
    reader = Yanks([], folders=[S3Records(bucket_url, client=_client(s3_env))])
    assert reader.poll() == {}
    doc = {"yanked": {"demo": {"1.0": "broken build"}}}
    writer.replace(YANKED_FILE, json.dumps(doc).encode())
    assert reader.poll() == {"demo": {"1.0": "broken build"}}
    assert reader.poll() is None  # nothing changed since


@pytest.mark.e2e
def test_two_replicas_on_one_bucket_with_twine_pip_and_uv(
    aws: dict[str, str], bucket_url: str, tmp_path: Path
) -> None:
    # `pkgserver run s3://bucket/prefix` twice over one bucket: twine uploads to one replica,
    # pip and uv install from the other; the credentials and endpoint come from the AWS
    # environment, as on a real deployment.
    wheel = make_wheel(tmp_path / "dist", "bucketed", "1.0", module="bucketed")
    # The default listing interval (60 s): the other replica learns of the upload from the
    # bucket's change journal.
    args = (bucket_url, "--disable-fallback", "-P", ".", "-a", ".")
    with Server(*args, env=aws) as one, Server(*args, env=aws) as two:
        env = client_env(tmp_path)
        twine = shutil.which("twine", path=os.path.dirname(sys.executable)) or "twine"
        run_client(
            [
                twine,
                "upload",
                "--non-interactive",
                "--repository-url",
                one.url + "/",
                "-u",
                "anyone",
                "-p",
                "anything",
                str(wheel),
            ],
            env,
        )
        deadline = time.monotonic() + 5
        while (
            two.project_json("bucketed").status != 200
            or not two.project_json("bucketed").json()["files"]
        ):
            assert time.monotonic() < deadline, two.output
            time.sleep(0.1)
        target = tmp_path / "pip-target"
        run_client(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--no-deps",
                "--index-url",
                two.url + "/simple/",
                "--target",
                str(target),
                "bucketed==1.0",
            ],
            env,
        )
        assert (target / "bucketed").is_dir()
        uv = shutil.which("uv", path=os.path.dirname(sys.executable)) or "uv"
        run_client(
            [
                uv,
                "pip",
                "install",
                "--no-deps",
                "--index-url",
                two.url + "/simple/",
                "--target",
                str(tmp_path / "uv-target"),
                "bucketed==1.0",
            ],
            env,
        )
        assert (tmp_path / "uv-target" / "bucketed").is_dir()
    assert "Traceback" not in one.output + two.output


@pytest.mark.e2e
def test_a_directory_migrated_with_aws_s3_sync_is_served_from_the_bucket(
    s3_env: dict[str, str], aws: dict[str, str], bucket_url: str, tmp_path: Path
) -> None:
    # README "Moving a directory into a bucket": `aws s3 sync DIR s3://BUCKET/PREFIX` copies
    # the files and the .pkgserver records, which the bucket keeps under the same names: the
    # replicas list the files, keep the yanks and the claim on a name whose files are gone.
    aws_cli = shutil.which("aws") or str(REPO / ".ci" / ".clients" / "bin" / "aws")
    if not os.access(aws_cli, os.X_OK):
        unavailable("the AWS CLI is not installed (bash .ci/install-clients.sh)")
    packages = tmp_path / "packages"
    wheel = make_wheel(packages, "moved", "1.0", module="moved")
    old = make_wheel(packages, "moved", "0.9", module="moved")
    make_wheel(packages / "sub", "nested", "2.0")  # folders in the directory stay folders
    signature = b"-----BEGIN PGP SIGNATURE-----\nmoved\n-----END PGP SIGNATURE-----\n"
    (packages / f"{wheel.name}.asc").write_bytes(signature)
    records = packages / ".pkgserver"
    records.mkdir()
    (records / "yanked.json").write_text(json.dumps({"yanked": {"moved": {"0.9": "broken"}}}))
    (records / "hosted-projects").write_text("moved\nnested\nretired\n")
    synced = subprocess.run(
        [aws_cli, "s3", "sync", str(packages), bucket_url, "--endpoint-url", s3_env["S3_ENDPOINT"]],
        env={**os.environ, **aws},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert synced.returncode == 0, synced.stderr
    with Server(bucket_url, env=aws) as server:
        files = {f["filename"]: f for f in server.project_json("moved").json()["files"]}
        assert set(files) == {wheel.name, old.name}
        assert files[old.name]["yanked"] == "broken" and files[wheel.name]["yanked"] is False
        assert server.get("/simple/nested/").status == 200
        retired = server.project_json("retired")  # claimed: never sent to PyPI
        assert retired.status == 200 and retired.json()["files"] == []
        assert server.get("/simple/never-here/").status in (301, 302, 303)  # not claimed
        served = server.get(f"/packages/{wheel.name}.asc")
        assert served.status == 200 and served.body == signature
        assert server.get(f"/packages/{old.name}.asc").status == 404
        target = tmp_path / "target"
        run_client(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--no-deps",
                "--index-url",
                server.url + "/simple/",
                "--target",
                str(target),
                "moved",
            ],
            client_env(tmp_path),
        )
        assert (target / "moved-1.0.dist-info").is_dir()


def test_an_s3_location_is_served_alone_and_kept_as_given(tmp_path: Path) -> None:
    from pkgserver.cli import parse_run
    from pkgserver.errors import UsageError

    settings = parse_run(["run", "s3://corp-index/packages/"], environ={})
    assert settings is not None and settings.roots == ("s3://corp-index/packages",)
    with pytest.raises(UsageError, match="served alone"):
        parse_run(["run", "s3://corp-index/packages", str(tmp_path)], environ={})
    with pytest.raises(UsageError, match="no bucket"):
        parse_run(["run", "s3:///packages"], environ={})


# -- the management commands on a bucket ------------------------------------------------------------
def _yanked(srv: Server, project: str) -> dict[str, object]:
    """filename -> the PEP 691 "yanked" value of each file a replica lists (none: 404)."""
    res = srv.project_json(project)
    return {f["filename"]: f["yanked"] for f in res.json()["files"]} if res.status == 200 else {}


# A replica that lists the bucket every second, open to all, with no fallback index.
OPEN_REPLICA = ("--disable-fallback", "--rescan-interval", "1", "-P", ".", "-a", ".")


def _put_files(s3_env: dict[str, str], url: str, files: dict[str, bytes]) -> None:
    """As ``aws s3 cp`` would: objects put straight into the bucket."""
    bucket, prefix = parse_location(url)
    client = _client(s3_env)
    for relpath, data in files.items():
        client.put_object(Bucket=bucket, Key=f"{prefix}/{relpath}", Body=data)


@pytest.mark.e2e
def test_remove_yank_unyank_and_forget_on_a_bucket_reach_a_running_replica(
    s3_env: dict[str, str], aws: dict[str, str], bucket_url: str, tmp_path: Path
) -> None:
    # The commands change the bucket through the server's own classes; a replica serving it
    # (a listing every second here) shows each change at its next look, as a directory's
    # server does within a second.
    dist = tmp_path / "dist"
    w10 = make_wheel(dist, "demo", "1.0")
    w20 = make_wheel(dist, "demo", "2.0")
    s20 = make_sdist(dist, "demo", "2.0")
    other = make_wheel(dist, "other", "1.0")
    _put_files(
        s3_env,
        bucket_url,
        {
            **{p.name: p.read_bytes() for p in (w10, w20, s20, other)},
            f"{s20.name}.asc": b"-----BEGIN PGP SIGNATURE-----\n",
        },
    )
    args = (bucket_url, *OPEN_REPLICA)
    with Server(*args, env=aws) as replica:
        replica.wait_listed("demo", w10.name, w20.name, s20.name)

        res = _pkgserver(aws, "yank", "demo", "1.0", bucket_url, "--reason", "broken build")
        assert res.returncode == 0 and "yanked demo 1.0 (broken build)" in res.stderr, res
        _until(lambda: _yanked(replica, "demo")[w10.name] == "broken build", "the yank shown")
        stored = json.loads(_objects(s3_env, bucket_url)[".pkgserver/yanked.json"])
        assert stored == {"yanked": {"demo": {"1.0": "broken build"}}}

        res = _pkgserver(aws, "unyank", "demo", "1.0", bucket_url)
        assert res.returncode == 0, res
        _until(lambda: _yanked(replica, "demo")[w10.name] is False, "the unyank shown")

        before = _objects(s3_env, bucket_url)
        res = _pkgserver(aws, "remove", "--dry-run", "demo", "2.0", bucket_url)
        assert res.returncode == 0, res
        assert res.stdout.splitlines() == [
            f"would remove {bucket_url}/{w20.name}",
            f"would remove {bucket_url}/{s20.name}",
        ]
        assert _objects(s3_env, bucket_url) == before

        res = _pkgserver(aws, "remove", "demo", "2.0", bucket_url)
        assert res.returncode == 0, res
        left = _objects(s3_env, bucket_url)
        assert {w20.name, s20.name, f"{s20.name}.asc"}.isdisjoint(left)  # the signature too
        assert {w10.name, other.name} <= set(left)
        _until(lambda: list(_yanked(replica, "demo")) == [w10.name], "2.0 unlisted")

        # The location may come from PKGSERVER_ROOTS, as for `run`.
        from_env = {**aws, "PKGSERVER_ROOTS": bucket_url}
        assert _pkgserver(from_env, "yank", "demo", "1.0").returncode == 0
        res = _pkgserver(from_env, "remove", "demo")
        assert res.returncode == 0 and "demo: 1 file(s) removed" in res.stderr, res
        assert "stays claimed" in res.stderr
        _until(lambda: replica.project_json("demo").json()["files"] == [], "demo unlisted")
        # A version with no files left is no longer yanked; the name stays claimed.
        stored = json.loads(_objects(s3_env, bucket_url)[".pkgserver/yanked.json"])
        assert stored == {"yanked": {}}
        assert replica.project_json("demo").status == 200

        res = _pkgserver(aws, "forget", "other", bucket_url)
        assert res.returncode == 2 and "still has files" in res.stderr, res
        res = _pkgserver(aws, "forget", "demo", bucket_url)
        assert res.returncode == 0, res
        hosted = _objects(s3_env, bucket_url)[".pkgserver/hosted-projects"].split()
        assert b"demo" not in hosted and b"other" in hosted
        _until(lambda: replica.project_json("demo").status == 404, "demo forgotten")
    assert "Traceback" not in replica.output


@pytest.mark.e2e
def test_remove_pkg_on_a_replica_forgets_the_yank_kept_in_the_bucket(
    s3_env: dict[str, str], aws: dict[str, str], bucket_url: str, tmp_path: Path
) -> None:
    # As `pkgserver remove` does: a version whose files are all gone is no longer yanked.
    wheels = [make_wheel(tmp_path / "dist", "demo", v) for v in ("1.0", "2.0")]
    _put_files(s3_env, bucket_url, {w.name: w.read_bytes() for w in wheels})
    args = (bucket_url, *OPEN_REPLICA)
    with Server(*args, env=aws) as replica:
        replica.wait_listed("demo", *(w.name for w in wheels))
        for version in ("1.0", "2.0"):
            assert _pkgserver(aws, "yank", "demo", version, bucket_url).returncode == 0
        res = replica.request(
            "POST",
            "/",
            body=b":action=remove_pkg&name=demo&version=1.0",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert res.status == 200, res.text
    stored = json.loads(_objects(s3_env, bucket_url)[".pkgserver/yanked.json"])
    assert stored == {"yanked": {"demo": {"2.0": ""}}}
    assert "Traceback" not in replica.output


@pytest.mark.e2e
def test_update_on_a_bucket_puts_newer_releases_beside_the_newest_file(
    s3_env: dict[str, str], aws: dict[str, str], bucket_url: str, tmp_path: Path
) -> None:
    upstream_dir = tmp_path / "upstream"
    held = make_wheel(upstream_dir, "demo", "1.0")
    newer = make_wheel(upstream_dir, "demo", "1.1")
    _put_files(s3_env, bucket_url, {f"sub/{held.name}": held.read_bytes()})
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with (
        Server("--disable-fallback", upstream_dir) as up,
        Server(bucket_url, *OPEN_REPLICA, env=aws) as replica,
    ):
        index = up.url + "simple/"
        res = _pkgserver(aws, "update", "--index-url", index, bucket_url)
        assert res.returncode == 0, res
        assert "# update demo from 1.0 to 1.1" in res.stdout
        # Downloaded into the current folder, where a bucket has none of its own.
        assert f"download --no-deps -i {index} -d {os.getcwd()} demo==1.1" in res.stdout
        files = [k for k in _objects(s3_env, bucket_url) if not k.startswith(".pkgserver/")]
        assert files == [f"sub/{held.name}"]  # printed only
        env = {**aws, **client_env(tmp_path), "PIP_INDEX_URL": index}
        res = _pkgserver(
            env, "update", "-x", "-d", str(downloads), "--index-url", index, bucket_url
        )
        assert res.returncode == 0, res
        assert f"# put {bucket_url}/sub/{newer.name}" in res.stdout
        assert _objects(s3_env, bucket_url)[f"sub/{newer.name}"] == newer.read_bytes()
        replica.wait_listed("demo", newer.name)
        res = _pkgserver(
            env, "update", "-x", "-d", str(downloads), "--index-url", index, bucket_url
        )
        assert res.returncode == 0 and "checking 1 packages" in res.stdout, res


def test_bad_commands_on_a_bucket_are_one_line_and_change_nothing(
    s3_env: dict[str, str], aws: dict[str, str], bucket_url: str, tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    _put_files(s3_env, bucket_url, {wheel.name: wheel.read_bytes()})
    before = _objects(s3_env, bucket_url)
    bucket, _ = parse_location(bucket_url)
    for args, message in [
        (["remove", "demo", "2.0", bucket_url], f"demo has no version '2.0' in {bucket_url}"),
        (["remove", "nothing", bucket_url], f"no project 'nothing' in {bucket_url}"),
        (["yank", "demo", "3.0", bucket_url], f"demo has no version '3.0' in {bucket_url}"),
        (["unyank", "demo", "1.0", bucket_url], f"demo 1.0 is not yanked in {bucket_url}"),
        (["forget", "demo", bucket_url], "demo still has files"),
        (["remove", "demo", f"s3://{bucket}-missing/x"], f"s3://{bucket}-missing/x: "),
        (["remove", "demo", bucket_url, str(tmp_path)], "an s3:// location is served alone"),
    ]:
        res = _pkgserver(aws, *args)
        assert res.returncode == 2, (args, res)
        assert res.stdout == "" and res.stderr.startswith(f"pkgserver: error: {message}"), res
        assert len(res.stderr.splitlines()) == 1, res
    assert _objects(s3_env, bucket_url) == before


def test_check_on_a_bucket_reads_every_object_and_compares_the_stored_descriptions(
    s3_env: dict[str, str], aws: dict[str, str], bucket_url: str, tmp_path: Path
) -> None:
    dist = tmp_path / "dist"
    good = make_wheel(dist, "good", "1.0")
    tampered = make_wheel(dist, "tampered", "1.0")
    sdist = make_sdist(dist, "demo-pkg", "1.0")
    zipped = make_sdist(dist / "zip", "demo-pkg", "1.0", fmt="zip")
    _put_files(
        s3_env,
        bucket_url,
        {
            good.name: good.read_bytes(),
            f"{good.name}.asc": b"sig\n",  # a sidecar: not a problem
            tampered.name: tampered.read_bytes(),
            sdist.name: sdist.read_bytes(),
            zipped.name: zipped.read_bytes(),  # a second sdist of one release
            "junk.whl": b"not a wheel",
            "README.txt": b"read me\n",
        },
    )
    clean = _pkgserver(aws, "check", bucket_url)
    assert clean.returncode == 1, clean
    # A replica reads each object once and stores its description; then one is damaged.
    feed = S3Feed(_storage(s3_env, bucket_url, tmp_path), Catalog(), interval=3600)
    feed.reconcile()
    assert tampered.name in feed.catalog.snapshot.files
    bucket, prefix = parse_location(bucket_url)
    key = f"{prefix}/.pkgserver/meta/{tampered.name}.json"
    client = _client(s3_env)
    doc = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    doc["fields"][3] = "0" * 64  # the sha256 every replica would serve
    client.put_object(Bucket=bucket, Key=key, Body=json.dumps(doc).encode())
    before = _objects(s3_env, bucket_url)

    res = _pkgserver(aws, "check", "--progress", "never", bucket_url)
    assert res.returncode == 1, res
    problems = sorted(res.stdout.splitlines())
    sha = hashlib.sha256(tampered.read_bytes()).hexdigest()
    expected_dup = [
        f"duplicate {bucket_url}/{b}: the same distribution as {bucket_url}/{a} once names "
        "are normalized (an installer may take either)"
        for a, b in ((sdist.name, zipped.name), (zipped.name, sdist.name))
    ]
    assert len(problems) == 4, res
    assert problems[0] == (
        f"cannot attribute {bucket_url}/README.txt: not a distribution file (ignored by the index)"
    )
    assert problems[1].startswith(f"cannot attribute {bucket_url}/junk.whl: Invalid wheel")
    assert problems[2] in expected_dup
    assert problems[3].startswith(
        f"hash mismatch {bucket_url}/{tampered.name}: the description stored in the bucket "
        f"lists sha256 {'0' * 64} for this version of the object, which has {sha}"
    )
    assert "checked 5 files" in res.stderr and "4 problem(s)" in res.stderr
    assert "compared with the descriptions stored in the bucket" in res.stderr
    assert _objects(s3_env, bucket_url) == before  # check reads, never writes


# -- --hash-algo ------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_hash_algo_on_a_bucket_links_the_digest_hashed_at_upload_or_at_first_read(
    s3_env: dict[str, str], aws: dict[str, str], bucket_url: str, tmp_path: Path
) -> None:
    # As on a directory: the HTML links carry #md5=, the JSON APIs carry it beside sha256. The
    # upload hashes it as it receives the file; an object put by another tool is hashed when
    # it is first read, and the digest is stored with its description for the other replicas.
    dist = tmp_path / "dist"
    uploaded = make_wheel(dist, "uploaded", "1.0")
    copied = make_wheel(dist, "copied", "1.0")
    _put_files(s3_env, bucket_url, {copied.name: copied.read_bytes()})
    args = (bucket_url, *OPEN_REPLICA)

    def digests(wheel: Path, *algos: str) -> dict[str, str]:
        return {a: hashlib.new(a, wheel.read_bytes()).hexdigest() for a in ("sha256", *algos)}

    def served(srv: Server, wheel: Path) -> tuple[str, dict[str, str]]:
        project = wheel.name.split("-")[0]
        srv.wait_listed(project, wheel.name)
        (listed,) = srv.project_json(project).json()["files"]
        return srv.get(f"/simple/{project}/").text, listed["hashes"]

    with Server(*args, "--hash-algo", "md5", env=aws) as md5:
        body, ctype = upload_form(uploaded)
        res = md5.request("POST", "/", body=body, headers={"Content-Type": ctype})
        assert res.status == 200, res.text
        for wheel in (uploaded, copied):
            page, hashes = served(md5, wheel)
            assert f"#md5={digests(wheel, 'md5')['md5']}" in page and "#sha256=" not in page
            assert hashes == digests(wheel, "md5")
            json_api = md5.get(f"/pypi/{wheel.name.split('-')[0]}/json").json()
            assert json_api["urls"][0]["digests"]["md5"] == hashes["md5"]
    # Replicas with other settings take what suits them from the stored descriptions, and
    # read an object again for a hash they lack.
    with Server(*args, "--hash-algo", "sha512", env=aws) as sha512, Server(*args, env=aws) as plain:
        for wheel in (uploaded, copied):
            page, hashes = served(sha512, wheel)
            assert f"#sha512={digests(wheel, 'sha512')['sha512']}" in page
            assert hashes == digests(wheel, "sha512")
            page, hashes = served(plain, wheel)
            assert f"#sha256={digests(wheel)['sha256']}" in page and hashes == digests(wheel)
    for srv in (md5, sha512, plain):
        assert "Traceback" not in srv.output


# -- who uploaded what ----------------------------------------------------------------------------
@pytest.mark.e2e
def test_the_uploader_recorded_on_one_replica_is_shown_by_another(
    s3_env: dict[str, str], aws: dict[str, str], bucket_url: str, tmp_path: Path
) -> None:
    from passlib.hash import bcrypt

    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("alice:" + bcrypt.using(rounds=4).hash("secret") + "\n")
    wheel = make_wheel(tmp_path / "dist", "attributed", "1.0")
    args = [bucket_url, "--disable-fallback", "--rescan-interval", "1", "--show-uploaders"]
    args += ["-P", str(htpasswd)]
    with Server(*args, env=aws) as a, Server(*args, env=aws) as b:
        twine = shutil.which("twine", path=os.path.dirname(sys.executable)) or "twine"
        command = [twine, "upload", "--non-interactive", "--repository-url", a.url + "/"]
        run_client([*command, "-u", "alice", "-p", "secret", str(wheel)], client_env(tmp_path))
        row = "<td>alice</td>"
        assert row in a.get("/project/attributed/").text  # at once, where it was uploaded
        b.wait_listed("attributed", wheel.name)
        _until(lambda: row in b.get("/project/attributed/").text, "the uploader shown on b")
        # The same upload time too: the object's, as a directory's server shows the file's.
        (on_a,), (on_b,) = (s.project_json("attributed").json()["files"] for s in (a, b))
        assert on_a["upload-time"] == on_b["upload-time"]
    (record,) = [v for k, v in _objects(s3_env, bucket_url).items() if "/uploads/" in k]
    assert json.loads(record)["user"] == "alice" and json.loads(record)["file"] == wheel.name
    assert "Traceback" not in a.output + b.output


def test_the_upload_log_folds_old_records_into_one_object_and_loses_none(
    s3_env: dict[str, str], bucket_url: str
) -> None:
    bucket, prefix = parse_location(bucket_url)
    client = _client(s3_env)
    # A directory's log, copied into the bucket with the rest: read as the folded part.
    copied = {"file": "old-1.0.tar.gz", "sha256": "a" * 64, "user": "carol", "time": 1.0}
    client.put_object(
        Bucket=bucket, Key=f"{prefix}/.pkgserver/uploads.jsonl", Body=json.dumps(copied) + "\n"
    )
    writer = S3UploadLog(bucket_url, client=_client(s3_env))
    for i in range(6):
        writer.record(f"demo-{i}.whl", f"{i:064x}", "alice")
    writer.record("demo-0.whl", "f" * 64, "bob")  # replaced (--overwrite): the newest counts

    def singles() -> list[str]:
        return [k for k in _objects(s3_env, bucket_url) if k.startswith(".pkgserver/uploads/")]

    assert len(singles()) == 7
    # Two replicas that see enough settled records fold them at the same moment: one wins
    # the conditional write, the other leaves them to it.
    replicas = [S3UploadLog(bucket_url, client=_client(s3_env)) for _ in range(2)]
    start = threading.Barrier(2)
    for replica in replicas:
        replica.COMPACT_AT, replica.SETTLED = 3, -60.0  # (every record counts as settled)

    def look(replica: S3UploadLog) -> None:
        start.wait()
        replica.refresh()

    threads = [threading.Thread(target=look, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert singles() == []
    folded = _objects(s3_env, bucket_url)[".pkgserver/uploads.jsonl"].splitlines()
    assert len(folded) == 7  # a line per file
    writer.record("demo-9.whl", "9" * 64, "dave")  # after the fold: an object of its own
    for log_ in (*replicas, S3UploadLog(bucket_url, client=_client(s3_env))):
        log_.refresh()
        assert log_.uploader("old-1.0.tar.gz", "a" * 64) == "carol"
        assert log_.uploader("demo-0.whl", "f" * 64) == "bob"
        assert log_.uploader("demo-0.whl", "0" * 64) is None  # not these bytes any more
        assert log_.uploader("demo-5.whl", f"{5:064x}") == "alice"
        assert log_.uploader("demo-9.whl", "9" * 64) == "dave"
    assert len(singles()) == 1


def test_a_command_on_an_unreachable_store_names_the_endpoint_in_one_line() -> None:
    # The operator learns which endpoint the settings named; an HTTP client never does (the
    # 503 says only that the store is unavailable: tests/test_s3_serving.py).
    pytest.importorskip("boto3")
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "pkgserver", "check", "s3://nowhere/packages"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        "pkgserver: error: s3://nowhere/packages: the object store is unavailable "
        "(could not connect) at http://127.0.0.1:9\n"
    )
