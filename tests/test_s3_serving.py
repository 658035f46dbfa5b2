"""Serving from a bucket, against a real Ceph RADOS Gateway: downloads redirected to presigned
URLs (--redirect-downloads), a store that goes away and comes back (503, never 500), a store
out of room (507), a server killed mid-upload (kill -9) and a 1 GB wheel.

The session's gateway (conftest.py) serves most of them; the tests that stop the gateway get a
cluster of their own, so that nothing else ever meets a gateway that is away.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import http.client
import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from builders import big_wheel, make_wheel
from ceph import Cluster, ceph_cluster
from forms import streamed_form, upload_form
from server import Response, Server, client_env, run_client

from pkgserver.catalog import Catalog
from pkgserver.publish import Spool
from pkgserver.storage import DirectoryStorage, StoreFull, StoreUnavailable
from pkgserver.upload import Uploads

OPEN = ("-P", ".", "-a", ".")
QUIET = ("--rescan-interval", "3600")  # no listing of the bucket during the test


# -- fixtures and helpers -------------------------------------------------------------------------
def new_bucket(cluster: Cluster) -> str:
    name = "t-" + uuid.uuid4().hex[:20]
    cluster.client().create_bucket(Bucket=name)
    return f"s3://{name}/packages"


@pytest.fixture
def bucket(s3_cluster: Cluster) -> str:
    """A new bucket on the session's gateway (s3://NAME/packages)."""
    return new_bucket(s3_cluster)


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster for one test, whose gateway the test may stop: it goes with the test."""
    with ceph_cluster(tmp_path / "ceph") as cluster:
        yield cluster


@pytest.fixture
def own_bucket(own_cluster: Cluster) -> str:
    """A bucket on the test's own cluster."""
    return new_bucket(own_cluster)


def serve(cluster: Cluster, url: str, *args: str, env: dict[str, str] | None = None) -> Server:
    return Server(url, "--disable-fallback", *args, env={**cluster.aws(), **(env or {})})


def distributions(cluster: Cluster, url: str) -> dict[str, bytes]:
    """The objects under the bucket's prefix, but for the server's own (.pkgserver/)."""
    client, bucket, prefix = cluster.client(), *url[len("s3://") :].split("/", 1)
    found = {}
    for item in client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", ()):
        relpath = item["Key"][len(prefix) + 1 :]
        if not relpath.startswith("."):
            found[relpath] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return found


def post_upload(srv: Server, wheel: Path, auth: str | None = None) -> Response:
    body, ctype = upload_form(wheel)
    headers = {"Content-Type": ctype, **({"Authorization": auth} if auth else {})}
    return srv.request("POST", "/", body=body, headers=headers, timeout=60)


def twine(url: str, wheel: Path, env: dict[str, str], ok: bool = True) -> str:
    found = shutil.which("twine", path=os.path.dirname(sys.executable)) or "twine"
    cmd = [found, "upload", "--non-interactive", "--disable-progress-bar"]
    cmd += ["--repository-url", url + "/", "-u", "anyone", "-p", "anything", str(wheel)]
    res = run_client(cmd, env, ok=ok)
    return res.stdout + res.stderr


def pip_install(
    index: str, requirement: str, target: Path, env: dict[str, str], ok: bool = True
) -> str:
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir"]
    cmd += ["--index-url", index + "/simple/", "--target", str(target), requirement]
    res = run_client(cmd, env, ok=ok)
    return res.stdout + res.stderr


def uv_install(
    index: str, requirement: str, target: Path, env: dict[str, str], ok: bool = True
) -> str:
    uv = shutil.which("uv", path=os.path.dirname(sys.executable)) or "uv"
    cmd = [uv, "pip", "install", "--no-deps", "--no-cache", "--index-url", index + "/simple/"]
    res = run_client([*cmd, "--target", str(target), requirement], env, ok=ok)
    return res.stdout + res.stderr


def with_credentials(url: str, user: str = "alice", password: str = "s3cret") -> str:
    return url.replace("http://", f"http://{user}:{password}@", 1)


AUTH = "Basic YWxpY2U6czNjcmV0"  # alice:s3cret


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- the spool --------------------------------------------------------------------------------------
def test_a_spool_folder_is_swept_once_its_process_is_gone_never_while_it_lives(
    tmp_path: Path,
) -> None:
    base = tmp_path / "spool"
    mine = Spool.claim(str(base))
    dead = base / "4242-dead"  # a process killed while it staged: its lock is free
    dead.mkdir()
    (dead / Spool.LOCK).touch()
    (dead / "staged-upload").write_bytes(b"half a wheel")
    unlocked = base / "4243-new"  # killed between making its folder and locking it
    unlocked.mkdir()
    alive = base / "4244-alive"  # another live process's (another container's, say)
    alive.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
            str(alive / Spool.LOCK),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        again = Spool.claim(str(base))
        assert not dead.exists() and not unlocked.exists()
        assert alive.is_dir() and Path(mine.path).is_dir()  # live ones stay
        again.close()
        assert not Path(again.path).exists()  # a clean shutdown takes its own away
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(10)
        holder.stdout.close()
        mine.close()
    last = Spool.claim(str(base))
    assert sorted(p.name for p in base.iterdir()) == sorted([Spool.LOCK, Path(last.path).name])
    last.close()


# -- how a store's refusal is answered (any storage) ------------------------------------------------
class FailingStore(DirectoryStorage):
    """A directory whose publishing fails as an object store's does."""

    def __init__(self, root: Path, error: OSError) -> None:
        super().__init__([str(root)])
        self.error = error

    def create(self, staged: Any, location: str) -> bool:
        raise self.error

    def files_of(self, project: str, version: str | None = None) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("error", "status", "words"),
    [
        (StoreUnavailable("the object store is unavailable (timed out)"), 503, "try again later"),
        (StoreFull("the object store is out of room (QuotaExceeded)"), 507, "QuotaExceeded"),
        (OSError(errno.EFBIG, "the object store takes no object this large"), 413, "this large"),
    ],
)
def test_a_store_away_or_full_is_answered_as_such_and_nothing_is_stored(
    tmp_path: Path, error: OSError, status: int, words: str
) -> None:
    from pkgserver.errors import HTTPProblem

    root = tmp_path / "packages"
    root.mkdir()
    wheel = make_wheel(tmp_path / "dist", "refused", "1.0")
    uploads = Uploads([str(root)], Catalog(), storage=FailingStore(root, error))
    body, ctype = upload_form(wheel)
    with pytest.raises(HTTPProblem) as raised:
        uploads.handle(io.BytesIO(body), len(body), ctype, None)
    assert raised.value.status == status and words in raised.value.message
    assert "nothing was" in raised.value.message
    if status == 503:
        assert raised.value.headers == {"Retry-After": "5"}
        removal = b":action=remove_pkg&name=refused&version=1.0"
        with pytest.raises(HTTPProblem) as raised:
            uploads.handle(
                io.BytesIO(removal), len(removal), "application/x-www-form-urlencoded", None
            )
        assert raised.value.status == 503
    assert list(root.iterdir()) == [] and not uploads.catalog.snapshot.files


def test_the_store_errors_botocore_raises_are_told_apart() -> None:
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
        ResponseStreamingError,
    )

    from pkgserver.s3 import _as_oserror

    def answer(status: int, code: str) -> ClientError:
        response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
        return ClientError(response, "PutObject")

    cases: list[tuple[Exception, type[OSError], int]] = [
        (EndpointConnectionError(endpoint_url="http://s3"), StoreUnavailable, errno.EAGAIN),
        (ConnectTimeoutError(endpoint_url="http://s3"), StoreUnavailable, errno.EAGAIN),
        (ReadTimeoutError(endpoint_url="http://s3"), StoreUnavailable, errno.EAGAIN),
        (ResponseStreamingError(error="reset"), StoreUnavailable, errno.EAGAIN),
        (answer(503, "SlowDown"), StoreUnavailable, errno.EAGAIN),
        (answer(500, "InternalError"), StoreUnavailable, errno.EAGAIN),
        (answer(403, "QuotaExceeded"), StoreFull, errno.ENOSPC),  # Ceph's
        (answer(507, "InsufficientCapacity"), StoreFull, errno.ENOSPC),
        (answer(507, "XMinioStorageFull"), StoreFull, errno.ENOSPC),
        (answer(400, "EntityTooLarge"), OSError, errno.EFBIG),
        (answer(404, "NoSuchKey"), FileNotFoundError, errno.ENOENT),
        (answer(403, "AccessDenied"), PermissionError, errno.EACCES),
        (answer(400, "InvalidArgument"), OSError, errno.EIO),
    ]
    for exc, kind, code in cases:
        got = _as_oserror(exc)
        assert type(got) is kind and got.errno == code, (exc, got)


# -- --redirect-downloads -------------------------------------------------------------------------
def test_redirect_downloads_is_for_an_object_store_only(tmp_path: Path) -> None:
    from pkgserver.cli import parse_run
    from pkgserver.errors import UsageError

    with pytest.raises(UsageError, match="--redirect-downloads needs an s3:// location"):
        parse_run(["run", "--redirect-downloads", str(tmp_path)], environ={})
    settings = parse_run(["run", "s3://corp/packages"], {"PKGSERVER_REDIRECT_DOWNLOADS": "1"})
    assert settings is not None and settings.redirect_downloads
    settings = parse_run(["run", "s3://corp/packages"], environ={})
    assert settings is not None and not settings.redirect_downloads


@pytest.mark.e2e
def test_two_replicas_send_pip_and_uv_to_presigned_urls_of_the_store(
    s3_cluster: Cluster, bucket: str, tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path / "dist", "redirected", "1.0", module="redirected")
    args = ("--redirect-downloads", "--rescan-interval", "0.3", *OPEN)
    with serve(s3_cluster, bucket, *args) as one, serve(s3_cluster, bucket, *args) as two:
        env = client_env(tmp_path)
        twine(one.url, wheel, env)
        two.wait_listed("redirected", wheel.name)
        res = two.get(f"/packages/{wheel.name}")
        assert res.status == 302 and res.body == b""
        location = res.headers["location"]
        assert location.startswith(s3_cluster.env["S3_ENDPOINT"] + "/")
        assert "X-Amz-Signature=" in location and "X-Amz-Expires=300" in location
        # Never kept by a cache: the link expires, and was given after an access check.
        assert res.headers["cache-control"] == "no-store"
        with urllib.request.urlopen(location, timeout=30) as got:
            assert got.read() == wheel.read_bytes()
        head = two.request("HEAD", f"/packages/{wheel.name}")
        assert head.status == 302  # signed as a HEAD: the store answers it
        probe = urllib.request.Request(head.headers["location"], method="HEAD")
        with urllib.request.urlopen(probe, timeout=30) as got:
            assert int(got.headers["Content-Length"]) == wheel.stat().st_size
        # The core metadata is not an object: it is still served by the replica itself.
        meta = two.get(f"/packages/{wheel.name}.metadata")
        assert meta.status == 200 and b"Name: redirected" in meta.body
        pip_install(two.url, "redirected==1.0", tmp_path / "pip-target", env)
        assert (tmp_path / "pip-target" / "redirected" / "__init__.py").is_file()
        uv_install(two.url, "redirected==1.0", tmp_path / "uv-target", env)
        assert (tmp_path / "uv-target" / "redirected" / "__init__.py").is_file()
        # Both installers were sent to the store, not served by the replica: a GET and a
        # HEAD above, pip's and uv's (the access log may come a moment after the answer).
        redirected = f'/packages/{wheel.name} HTTP/1.1" 302 '
        deadline = time.monotonic() + 10
        while two.output.count(redirected) < 4:
            assert time.monotonic() < deadline, two.output
            time.sleep(0.05)
        assert f'/packages/{wheel.name} HTTP/1.1" 200 ' not in two.output


@pytest.mark.e2e
def test_access_is_checked_before_redirecting_and_other_bytes_in_the_store_are_refused(
    s3_cluster: Cluster, bucket: str, tmp_path: Path, htpasswd: Path
) -> None:
    wheel = make_wheel(tmp_path / "dist", "guarded", "1.0", module="guarded")
    args = ("--redirect-downloads", *QUIET, "-P", str(htpasswd), "-a", "update,download,list")
    with serve(s3_cluster, bucket, *args) as srv:
        assert post_upload(srv, wheel, AUTH).status == 200
        path = f"/packages/{wheel.name}"
        anonymous = srv.get(path)
        assert anonymous.status == 401 and "location" not in anonymous.headers
        assert b"Signature" not in anonymous.body and b"127.0.0.1" not in anonymous.body
        wrong = srv.request("GET", path, headers={"Authorization": "Basic YWxpY2U6bm8="})
        assert wrong.status == 403 and "location" not in wrong.headers
        allowed = srv.request("GET", path, headers={"Authorization": AUTH})
        assert allowed.status == 302 and "X-Amz-Signature=" in allowed.headers["location"]
        env = client_env(tmp_path)
        index = with_credentials(srv.url.rstrip("/"))
        pip_install(index, "guarded==1.0", tmp_path / "first", env)
        # Other bytes under the same name, put behind the server's back (not listed yet):
        # the store serves them, and the installers refuse them by the index's sha256.
        other = make_wheel(tmp_path / "other", "guarded", "1.0", module="guarded", summary="x")
        bucket_name, prefix = bucket[len("s3://") :].split("/", 1)
        s3_cluster.client().put_object(
            Bucket=bucket_name, Key=f"{prefix}/{wheel.name}", Body=other.read_bytes()
        )
        said = pip_install(index, "guarded==1.0", tmp_path / "second", env, ok=False)
        assert "DO NOT MATCH THE HASHES" in said, said
        assert not (tmp_path / "second" / "guarded").exists()
        said = uv_install(index, "guarded==1.0", tmp_path / "third", env, ok=False)
        assert "Hash mismatch" in said, said
        assert not (tmp_path / "third" / "guarded").exists()


# -- a store out of room ----------------------------------------------------------------------------
@pytest.mark.e2e
def test_a_bucket_over_its_quota_answers_507_and_stores_nothing(
    s3_cluster: Cluster, bucket: str, tmp_path: Path
) -> None:
    name = bucket[len("s3://") :].split("/", 1)[0]
    s3_cluster.admin("quota", "set", "--quota-scope=bucket", f"--bucket={name}", "--max-size=1M")
    s3_cluster.admin("quota", "enable", "--quota-scope=bucket", f"--bucket={name}")
    heavy = big_wheel(tmp_path / "dist", "heavy", "1.0", 2 * 1024 * 1024)
    with serve(s3_cluster, bucket, *OPEN, *QUIET) as srv:
        res = post_upload(srv, heavy)
        assert res.status == 507, res
        assert res.text == "the object store is out of room (QuotaExceeded); nothing was stored\n"
        assert srv.project_json("heavy").status == 404
        assert distributions(s3_cluster, bucket) == {}
        assert "Traceback" not in srv.output


# -- the store away ---------------------------------------------------------------------------------
@pytest.mark.e2e
def test_while_the_store_is_away_changes_get_503_pages_stay_and_it_all_resumes(
    own_cluster: Cluster, own_bucket: str, tmp_path: Path
) -> None:
    url = own_bucket
    first = make_wheel(tmp_path / "dist", "steady", "1.0", module="steady")
    later = make_wheel(tmp_path / "dist", "steady", "2.0", module="steady")
    env = client_env(tmp_path)
    with serve(own_cluster, url, *OPEN, *QUIET) as srv:
        twine(srv.url, first, env)
        own_cluster.stop_gateway()
        try:
            said = twine(srv.url, later, env, ok=False)
            assert "503" in said and "the object store is unavailable" in said, said
            res = post_upload(srv, later)
            assert res.status == 503 and res.headers["retry-after"] == "5"
            assert res.text == (
                "the object store is unavailable (could not connect), try again later; "
                "nothing was changed\n"
            )
            removal = b":action=remove_pkg&name=steady&version=1.0"
            res = srv.request(
                "POST",
                "/",
                body=removal,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert res.status == 503, res
            download = srv.get(f"/packages/{first.name}")
            assert download.status == 503 and download.headers["retry-after"] == "5"
            # What is listed is served from memory: the pages, and /health.
            assert srv.get("/simple/").status == 200
            page = srv.project_json("steady")
            assert page.status == 200
            assert [f["filename"] for f in page.json()["files"]] == [first.name]
            assert srv.get("/health").status == 200
        finally:
            own_cluster.start_gateway()
        assert set(distributions(own_cluster, url)) == {first.name}
        twine(srv.url, later, env)  # the same upload, once the store is back
        pip_install(srv.url, "steady==2.0", tmp_path / "two", env)
        pip_install(srv.url, "steady==1.0", tmp_path / "one", env)
        assert "Traceback" not in srv.output


@pytest.mark.e2e
def test_under_load_the_store_going_away_and_back_gives_no_500_and_the_server_recovers(
    own_cluster: Cluster, own_bucket: str, tmp_path: Path
) -> None:
    served = make_wheel(tmp_path / "dist", "busy", "1.0", module="busy")
    with serve(own_cluster, own_bucket, *OPEN, *QUIET) as srv:
        assert post_upload(srv, served).status == 200
        seen: dict[str, Counter[int]] = {"download": Counter(), "upload": Counter()}
        seen["page"] = Counter()
        lock = threading.Lock()
        stop = threading.Event()
        counter = iter(range(2, 10_000))

        def upload_one() -> int:
            wheel = make_wheel(tmp_path / "more", "busy", f"{next(counter)}.0", module="busy")
            return post_upload(srv, wheel).status

        work: dict[str, Callable[[], int]] = {
            "download": lambda: srv.get(f"/packages/{served.name}").status,
            "upload": upload_one,
            "page": lambda: srv.project_json("busy").status,
        }

        def run(kind: str) -> None:
            while not stop.is_set():
                try:
                    status = work[kind]()
                except OSError:
                    status = 0  # no answer at all: counted, and refused below
                with lock:
                    seen[kind][status] += 1

        def wait_for(condition: Callable[[], bool], what: str) -> None:
            deadline = time.monotonic() + 120
            while not condition():
                assert time.monotonic() < deadline, f"{what}: {seen}\n{srv.output[-3000:]}"
                time.sleep(0.05)

        def count(kind: str, status: int) -> int:
            with lock:
                return seen[kind][status]

        threads = [threading.Thread(target=run, args=(k,)) for k in ("download",) * 2]
        threads += [threading.Thread(target=run, args=(k,)) for k in ("upload", "page")]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: all(count(k, 200) for k in seen), "every kind of request served")
            own_cluster.stop_gateway()
            try:
                wait_for(
                    lambda: count("download", 503) >= 3 and count("upload", 503) >= 2,
                    "downloads and uploads answered 503 while the store was away",
                )
            finally:
                own_cluster.start_gateway()
            back = {k: count(k, 200) for k in seen}
            wait_for(
                lambda: all(count(k, 200) > back[k] + 2 for k in seen), "served again once back"
            )
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        print(f"STORE AWAY UNDER LOAD {dict(seen)}")
        for kind, statuses in seen.items():
            assert set(statuses) <= {200, 503}, (kind, statuses)
        assert set(seen["page"]) == {200}  # pages never needed the store
        assert "Traceback" not in srv.output


# -- kill -9 mid-upload -----------------------------------------------------------------------------
@pytest.mark.e2e
def test_kill_9_mid_upload_leaves_nothing_in_the_bucket_and_its_spool_is_swept(
    s3_cluster: Cluster, bucket: str, tmp_path: Path
) -> None:
    big = big_wheel(tmp_path / "dist", "killed", "1.0", 150 * 1024 * 1024)
    cache = tmp_path / "cache"  # the spool is under --cache-dir, one folder per process
    env = {"PKGSERVER_CACHE_DIR": str(cache)}
    spool = cache / "spool"
    srv = serve(s3_cluster, bucket, *OPEN, *QUIET, env=env)
    srv.start()
    try:
        assert srv.proc is not None
        (own,) = [p for p in spool.iterdir() if p.is_dir()]
        assert own.name.startswith(f"{srv.proc.pid}-")
        chunks, length, ctype = streamed_form(big)
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)

        def send() -> None:
            try:
                conn.request(
                    "POST",
                    "/",
                    body=chunks,
                    headers={"Content-Type": ctype, "Content-Length": str(length)},
                )
                conn.getresponse().read()
            except OSError:
                pass  # the server is killed under it

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        deadline = time.monotonic() + 60
        while not [p for p in own.iterdir() if p.name != Spool.LOCK and p.stat().st_size]:
            assert time.monotonic() < deadline, "the upload was never staged"
            time.sleep(0.005)
        os.kill(srv.proc.pid, signal.SIGKILL)
        sender.join(30)
        conn.close()
    finally:
        srv._kill()  # killed on purpose: no complaint about its exit status
    assert [p.name for p in own.iterdir() if p.name != Spool.LOCK], "nothing was being staged"
    name = bucket[len("s3://") :].split("/", 1)[0]
    assert distributions(s3_cluster, bucket) == {}
    assert "Uploads" not in s3_cluster.client().list_multipart_uploads(Bucket=name)
    with serve(s3_cluster, bucket, *OPEN, *QUIET, env=env) as again:
        assert not own.exists(), "the dead server's spool folder is still there"
        assert [p.name for p in spool.iterdir() if p.is_dir()] != []
        body, _length, ctype = streamed_form(big)
        res = again.request(
            "POST", "/", body=b"".join(body), headers={"Content-Type": ctype}, timeout=120
        )
        assert res.status == 200, res
        again.wait_listed("killed", big.name)
    assert not [p for p in spool.iterdir() if p.is_dir()], "a clean stop leaves its folder"
    stored = distributions(s3_cluster, bucket)
    assert hashlib.sha256(stored[big.name]).hexdigest() == sha256_of(big)


# -- a 1 GB wheel -----------------------------------------------------------------------------------
def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise KeyError("VmHWM")


@pytest.mark.e2e
def test_a_1_gb_wheel_is_uploaded_and_downloaded_streamed_and_redirected_in_bounded_memory(
    s3_cluster: Cluster, bucket: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    huge = big_wheel(tmp_path / "dist", "huge", "1.0", 1024**3)
    expected = sha256_of(huge)
    env = client_env(tmp_path)
    args = (*OPEN, *QUIET, "--max-upload-size", "2G")
    figures: dict[str, float] = {"build": time.monotonic() - started}
    bucket_name, prefix = bucket[len("s3://") :].split("/", 1)
    try:
        with serve(s3_cluster, bucket, *args) as srv:
            assert srv.proc is not None
            warm = big_wheel(tmp_path / "warm", "warm", "1.0", 1024 * 1024)
            twine(srv.url, warm, env)  # every code path once, before the measure
            pip_download(srv.url, "warm==1.0", tmp_path / "warm-dl", env)
            before = peak_rss_mb(srv.proc.pid)
            figures["upload"] = timed(lambda: twine(srv.url, huge, env))
            figures["streamed"] = timed(
                lambda: pip_download(srv.url, "huge==1.0", tmp_path / "streamed", env)
            )
            figures["rss_before_mb"], figures["rss_peak_mb"] = before, peak_rss_mb(srv.proc.pid)
        assert sha256_of(tmp_path / "streamed" / huge.name) == expected
        with serve(s3_cluster, bucket, *args, "--redirect-downloads") as redirecting:
            figures["redirected"] = timed(
                lambda: pip_download(redirecting.url, "huge==1.0", tmp_path / "redirected", env)
            )
        assert sha256_of(tmp_path / "redirected" / huge.name) == expected
    finally:
        # The memstore keeps objects in memory: give the gigabyte back to the other tests.
        s3_cluster.client().delete_object(Bucket=bucket_name, Key=f"{prefix}/{huge.name}")
    figures["total"] = time.monotonic() - started
    print("1 GB WHEEL " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()))
    grew = figures["rss_peak_mb"] - figures["rss_before_mb"]
    assert grew < 128, f"the server's peak RSS grew by {grew:.0f} MB for a 1 GB wheel"


def pip_download(index: str, requirement: str, dest: Path, env: dict[str, str]) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir"]
    cmd += ["--index-url", index + "/simple/", "-d", str(dest), requirement]
    run_client(cmd, env, timeout=600)


def timed(fn: Callable[[], object]) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


# -- tokens shared by the replicas of a bucket ------------------------------------------------------
def token_cli(cluster: Cluster, *args: str) -> str:
    """``pkgserver token ...`` on the bucket, as an administrator runs it; its stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PKGSERVER_")}
    res = subprocess.run(
        [sys.executable, "-m", "pkgserver", "token", *args],
        env={**env, **cluster.aws()},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return res.stdout.strip()


@pytest.mark.e2e
def test_a_token_revoked_or_expired_is_refused_by_every_replica_within_a_second(
    s3_cluster: Cluster, bucket: str, tmp_path: Path, htpasswd: Path
) -> None:
    args = (*QUIET, "-P", str(htpasswd))
    with serve(s3_cluster, bucket, *args) as a, serve(s3_cluster, bucket, *args) as b:
        secret = token_cli(s3_cluster, "create", "--owner", "alice", "--project", "tok-*", bucket)
        auth = "Basic " + base64.b64encode(f"__token__:{secret}".encode()).decode()
        n = 0

        def upload(srv: Server, name: str = "tok-lib") -> int:
            nonlocal n
            n += 1
            return post_upload(srv, make_wheel(tmp_path / f"d{n}", name, f"1.{n}"), auth).status

        # Created on the bucket a moment ago: both replicas take it at once.
        assert upload(a) == 200 and upload(b) == 200
        assert upload(b, "other-lib") == 403  # outside its scope, on either replica
        token_cli(s3_cluster, "revoke", secret.split("-")[1], bucket)
        revoked = time.monotonic()
        while upload(b) != 403:
            assert time.monotonic() - revoked < 5, "replica B still takes the revoked token"
            time.sleep(0.05)
        print(f"revoked token refused by replica B after {time.monotonic() - revoked:.2f}s")
        # Each replica reads the journal on its own (four times a second): A may need a moment
        # more than B did.
        while upload(a) != 403:
            assert time.monotonic() - revoked < 5, "replica A still takes the revoked token"
            time.sleep(0.05)
        secret = token_cli(
            s3_cluster,
            "create",
            "--owner",
            "alice",
            "--project",
            "tok-*",
            "--expires",
            "3s",
            bucket,
        )
        auth = "Basic " + base64.b64encode(f"__token__:{secret}".encode()).decode()
        assert upload(b) == 200
        time.sleep(3.1)
        assert upload(a) == 403 and upload(b) == 403
    assert not any(k.startswith("other_lib") for k in distributions(s3_cluster, bucket))
