"""The caching proxy's cache in a bucket (``--proxy`` with an s3:// root, or ``--proxy-cache
s3://...``), against a real Ceph RADOS Gateway: S3ProxyStore's methods one by one, then
pkgserver processes: an upstream pkgserver feeding a proxy whose root is a bucket, pip
installing through it, a second replica on the same bucket serving the cached files with the
upstream gone, and an upstream that sends other bytes than its page lists (nothing kept).
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import os
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from builders import make_sdist, make_wheel
from ceph import Cluster, ceph_cluster
from server import Server, client_env, run_client

from pkgserver.catalog import FileStat
from pkgserver.s3 import WHOLE_READ, S3ProxyStore, S3Storage
from pkgserver.storage import StoreUnavailable

OPEN = ("-P", ".", "-a", ".")
QUIET = ("--rescan-interval", "3600")  # no listing of the bucket but the one at start
NO_PROXY = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


# -- helpers --------------------------------------------------------------------------------------
def split(url: str) -> tuple[str, str]:
    bucket, _, prefix = url[len("s3://") :].partition("/")
    return bucket, prefix


def objects(cluster: Cluster, url: str) -> dict[str, bytes]:
    """Every object under ``url`` (relative key -> bytes)."""
    client, (bucket, prefix) = cluster.client(), split(url)
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", ()):
            key = item["Key"]
            found[key[len(prefix) :].lstrip("/")] = client.get_object(Bucket=bucket, Key=key)[
                "Body"
            ].read()
    return found


@pytest.fixture
def store(s3_cluster: Cluster, bucket_url: str, tmp_path: Path) -> Iterator[S3ProxyStore]:
    found = S3ProxyStore(
        bucket_url + "/.pkgserver/proxy",
        client=s3_cluster.client(),
        spool_base=str(tmp_path / "spool"),
    )
    yield found
    found.close()


def kept(store: S3ProxyStore, relpath: str, data: bytes) -> FileStat:
    fh, path = store.temp()
    with fh:
        fh.write(data)
    return store.keep(path, relpath)


# -- S3ProxyStore, method by method ---------------------------------------------------------------
def test_pages_are_objects_under_pages(
    store: S3ProxyStore, s3_cluster: Cluster, bucket_url: str
) -> None:
    assert store.read_page("demo") is None
    assert store.page_names() == []
    store.write_page("demo", b'{"page": 1}')
    store.write_page("other-name", b'{"page": 2}')
    assert store.read_page("demo") == b'{"page": 1}'
    assert store.page_names() == ["demo", "other-name"]
    assert objects(s3_cluster, bucket_url) == {
        ".pkgserver/proxy/pages/demo.json": b'{"page": 1}',
        ".pkgserver/proxy/pages/other-name.json": b'{"page": 2}',
    }
    store.write_page("demo", b'{"page": 3}')  # rewritten whole
    assert store.read_page("demo") == b'{"page": 3}'


def test_a_kept_file_is_an_object_and_its_temporary_file_is_gone(
    store: S3ProxyStore, s3_cluster: Cluster, bucket_url: str, tmp_path: Path
) -> None:
    data = b"wheel bytes " * 1000
    fh, path = store.temp()
    # Temporary files are local, in this process's spool folder under the base given.
    assert Path(path).parent.parent == tmp_path / "spool"
    with fh:
        fh.write(data)
    assert store.stat("demo/demo-1.0-py3-none-any.whl") is None
    st = store.keep(path, "demo/demo-1.0-py3-none-any.whl")
    assert not os.path.exists(path)
    assert st.st_size == len(data)
    assert objects(s3_cluster, bucket_url) == {
        ".pkgserver/proxy/files/demo/demo-1.0-py3-none-any.whl": data
    }
    # stat (a HEAD) and the version open reads agree with what keep returned.
    assert store.stat("demo/demo-1.0-py3-none-any.whl") == st
    location = store.where + "/demo/demo-1.0-py3-none-any.whl"
    assert location == bucket_url + "/.pkgserver/proxy/files/demo/demo-1.0-py3-none-any.whl"
    body, opened = store.open(location)
    with body:
        assert body.read() == data
    assert (opened.st_size, opened.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert store.local_path("demo/demo-1.0-py3-none-any.whl") is None
    listed = list(store.files())
    assert [(r, s) for r, s, _t in listed] == [("demo/demo-1.0-py3-none-any.whl", len(data))]
    assert abs(listed[0][2] - st.st_mtime_ns / 1e9) < 2  # when it was stored
    store.touch("demo/demo-1.0-py3-none-any.whl")  # (nothing to note on a bucket)
    store.drop("demo/demo-1.0-py3-none-any.whl")
    assert store.stat("demo/demo-1.0-py3-none-any.whl") is None
    assert objects(s3_cluster, bucket_url) == {}
    store.drop("demo/demo-1.0-py3-none-any.whl")  # gone already: no error


def test_open_takes_only_this_stores_locations(store: S3ProxyStore, bucket_url: str) -> None:
    kept(store, "demo/demo-1.0.tar.gz", b"sdist")
    for location in (
        bucket_url + "/demo-1.0.tar.gz",  # a hosted file's place
        bucket_url + "/.pkgserver/proxy/pages/demo.json",
        store.where + "/../pages/demo.json",
        store.where + "/demo/../demo/demo-1.0.tar.gz",
        store.where + "/demo/missing-1.0.tar.gz",
    ):
        with pytest.raises(OSError):
            store.open(location)


def test_a_large_file_is_streamed_when_opened_and_uploaded_in_parts(
    store: S3ProxyStore, s3_cluster: Cluster, bucket_url: str
) -> None:
    store.MULTIPART_AT = 5 * 1024 * 1024  # S3's smallest part
    data = os.urandom(11 * 1024 * 1024 + 5)
    st = kept(store, "big/big-1.0-py3-none-any.whl", data)
    assert st.st_size == len(data)
    bucket, prefix = split(bucket_url)
    head = s3_cluster.client().head_object(
        Bucket=bucket, Key=f"{prefix}/.pkgserver/proxy/files/big/big-1.0-py3-none-any.whl"
    )
    assert str(head["ETag"]).strip('"').endswith("-3")  # three parts, one object
    body, opened = store.open(store.where + "/big/big-1.0-py3-none-any.whl")
    assert opened.st_size > WHOLE_READ and not hasattr(body, "getvalue")  # not read whole
    with body:
        body.seek(len(data) - 10)
        assert body.read() == data[-10:]
        body.seek(0)
        assert hashlib.sha256(body.read()).digest() == hashlib.sha256(data).digest()
    assert store.stat("big/big-1.0-py3-none-any.whl") == st


def test_drop_page_takes_the_projects_files_and_no_others(
    store: S3ProxyStore, s3_cluster: Cluster, bucket_url: str
) -> None:
    store.write_page("demo", b"{}")
    store.write_page("demo-two", b"{}")
    kept(store, "demo/demo-1.0.tar.gz", b"one")
    kept(store, "demo/demo-1.0-py3-none-any.whl.metadata", b"two")
    kept(store, "demo-two/demo_two-1.0.tar.gz", b"three")
    assert store.drop_page("demo") is True
    assert sorted(objects(s3_cluster, bucket_url)) == [
        ".pkgserver/proxy/files/demo-two/demo_two-1.0.tar.gz",
        ".pkgserver/proxy/pages/demo-two.json",
    ]
    assert store.drop_page("demo") is False
    assert store.page_names() == ["demo-two"]


def test_the_hosted_listing_never_sees_the_cache(
    store: S3ProxyStore, s3_cluster: Cluster, bucket_url: str, tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path, "hosted", "1.0")
    bucket, prefix = split(bucket_url)
    s3_cluster.client().put_object(
        Bucket=bucket, Key=f"{prefix}/{wheel.name}", Body=wheel.read_bytes()
    )
    store.write_page("cached", b"{}")
    kept(
        store,
        "cached/cached-1.0-py3-none-any.whl",
        make_wheel(tmp_path, "cached", "1.0").read_bytes(),
    )
    hosted = S3Storage(bucket_url, client=s3_cluster.client(), spool=str(tmp_path))
    assert [relpath for relpath, _item in hosted.listing()] == [wheel.name]
    assert hosted.files_of("cached") == []


def test_a_location_without_a_bucket_is_a_usage_error(tmp_path: Path) -> None:
    from pkgserver.errors import UsageError

    with pytest.raises(UsageError, match="proxy's cache"):
        S3ProxyStore("s3:///cache", client=object(), spool_base=str(tmp_path))


def test_a_store_that_is_away(tmp_path: Path) -> None:
    """Reads say "not cached" (and log it), writes raise StoreUnavailable: never a 500."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9",  # discard: nothing listens
        aws_access_key_id="k",
        aws_secret_access_key="s",
        region_name="us-east-1",
        config=Config(connect_timeout=1, retries={"total_max_attempts": 1}),
    )
    away = S3ProxyStore("s3://gone/cache", client=client, spool_base=str(tmp_path / "spool"))
    try:
        assert away.read_page("demo") is None
        assert away.page_names() == []
        assert list(away.files()) == []
        assert away.stat("demo/demo-1.0.tar.gz") is None
        away.drop("demo/demo-1.0.tar.gz")
        with pytest.raises(StoreUnavailable):
            away.write_page("demo", b"{}")
        with pytest.raises(StoreUnavailable):
            away.open(away.where + "/demo/demo-1.0.tar.gz")
        fh, path = away.temp()
        with fh:
            fh.write(b"x")
        with pytest.raises(StoreUnavailable):
            away.keep(path, "demo/demo-1.0.tar.gz")
        with pytest.raises(StoreUnavailable):
            away.drop_page("demo")
    finally:
        away.close()
    assert not (tmp_path / "spool").exists() or [
        p.name for p in (tmp_path / "spool").iterdir()
    ] == [".lock"]  # the spool folder went with the store


def test_the_caches_bound_holds_over_a_bucket_after_a_restart(store: S3ProxyStore) -> None:
    from pkgserver.proxy import ProxyCache

    for name in ("aaa", "bbb", "ccc"):
        kept(store, f"{name}/{name}-1.0.tar.gz", name.encode() * 400)
    # A new process's cache: the files stored before count against the bound.
    cache = ProxyCache(store, "http://127.0.0.1:9/simple/", max_bytes=2500)
    assert (cache.cached_files, cache.cached_bytes) == (3, 3600)
    assert cache.evict() == 1
    assert sorted(r for r, _s, _t in store.files()) == ["bbb/bbb-1.0.tar.gz", "ccc/ccc-1.0.tar.gz"]
    assert cache.cached_bytes == 2400


def test_a_bucketed_cache_spools_in_a_folder_of_its_own_under_the_cache_dir(
    s3_cluster: Cluster, bucket_url: str, tmp_path: Path
) -> None:
    """The spool's sweep removes the folders it does not find locked: under --cache-dir
    itself it would take the index cache and the uploads' spool with it."""
    from pkgserver.app import default_proxy
    from pkgserver.catalog import Catalog
    from pkgserver.config import Settings
    from pkgserver.observe import Observer

    cache_dir = tmp_path / "cache"
    (cache_dir / "index").mkdir(parents=True)
    (cache_dir / "index" / "kept").write_text("the index cache")
    settings = Settings(
        roots=(bucket_url,),
        proxy=True,
        fallback_url="http://127.0.0.1:9/simple/",
        cache_dir=str(cache_dir),
    )
    proxy = default_proxy(settings, Observer(Catalog()), s3_cluster.client())
    assert proxy is not None and isinstance(proxy.store, S3ProxyStore)
    try:
        assert proxy.store.where == bucket_url + "/.pkgserver/proxy/files"
        assert Path(proxy.store.spool).parent == cache_dir / "spool"
        assert (cache_dir / "index" / "kept").read_text() == "the index cache"
    finally:
        proxy.store.close()


# -- pkgserver processes ----------------------------------------------------------------------------
def pip_install(
    index: str, requirement: str, target: Path, env: dict[str, str], ok: bool = True
) -> str:
    cmd = [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--index-url", index]
    res = run_client([*cmd, "--target", str(target), requirement], env, ok=ok)
    return res.stdout + res.stderr


def simple_names(srv: Server) -> set[str]:
    res = srv.get("/simple/", accept="application/vnd.pypi.simple.v1+json")
    assert res.status == 200, res.text
    return {p["name"] for p in res.json()["projects"]}


def metric(srv: Server, what: str, outcome: str) -> float:
    res = srv.get("/metrics")
    assert res.status == 200, res.text
    total = 0.0
    for line in res.text.splitlines():
        if (
            line.startswith("pkgserver_proxy_requests_total{")
            and f'what="{what}"' in line
            and f'outcome="{outcome}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.e2e
def test_pip_installs_through_a_bucketed_proxy_and_a_replica_serves_the_cache_alone(
    s3_cluster: Cluster, bucket_url: str, aws: dict[str, str], tmp_path: Path
) -> None:
    upstream_dir = tmp_path / "upstream"
    upstream_files = [
        make_wheel(upstream_dir, "app", "1.0", requires_dist=["lib>=1.0"]),
        make_wheel(upstream_dir, "lib", "1.0", requires_dist=["leaf"]),
        make_wheel(upstream_dir, "lib", "0.9"),
        make_wheel(upstream_dir, "leaf", "2.0"),
        make_sdist(upstream_dir, "leaf", "2.0"),
    ]
    by_name = {p.name: p.read_bytes() for p in upstream_files}
    # One project hosted in the bucket itself.
    house = make_wheel(tmp_path / "hosted", "house", "1.0")
    bucket, prefix = split(bucket_url)
    s3_cluster.client().put_object(
        Bucket=bucket, Key=f"{prefix}/{house.name}", Body=house.read_bytes()
    )
    env = client_env(tmp_path)
    upstream = Server(upstream_dir, "--disable-fallback", *OPEN).start()
    upstream_running = True
    try:
        proxy_args = (bucket_url, "--proxy", "--fallback-url", upstream.url + "simple/", *OPEN)
        with Server(*proxy_args, *QUIET, env={**aws, **NO_PROXY}) as proxy:
            out = pip_install(proxy.url + "simple/", "app", tmp_path / "one", env)
            for module in ("app", "lib", "leaf"):
                assert (tmp_path / "one" / module / "__init__.py").is_file(), out
            stored = objects(s3_cluster, bucket_url)
            cache = {k: v for k, v in stored.items() if k.startswith(".pkgserver/proxy/")}
            assert {k for k in cache if k.startswith(".pkgserver/proxy/pages/")} == {
                ".pkgserver/proxy/pages/app.json",
                ".pkgserver/proxy/pages/lib.json",
                ".pkgserver/proxy/pages/leaf.json",
            }
            files = {
                k[len(".pkgserver/proxy/files/") :]: v
                for k, v in cache.items()
                if k.startswith(".pkgserver/proxy/files/") and not k.endswith(".metadata")
            }
            # What pip downloaded, byte for byte the upstream's; nothing it did not ask for.
            assert files == {
                "app/app-1.0-py3-none-any.whl": by_name["app-1.0-py3-none-any.whl"],
                "lib/lib-1.0-py3-none-any.whl": by_name["lib-1.0-py3-none-any.whl"],
                "leaf/leaf-2.0-py3-none-any.whl": by_name["leaf-2.0-py3-none-any.whl"],
            }
            # The bucket's hosted files are the hosted one alone, and so is the listing.
            assert [k for k in stored if not k.startswith(".")] == [house.name]
            assert simple_names(proxy) == {"house"}
            assert metric(proxy, "file", "miss") == 3

            # A second replica on the same bucket, started now. Without the index snapshot
            # it lists the whole bucket before it serves, cache and all, and takes none of
            # the cache's objects for a hosted file (nor their names for hosted names, which
            # would never be proxied).
            s3_cluster.client().delete_object(
                Bucket=bucket, Key=f"{prefix}/.pkgserver/snapshot.json.gz"
            )
            replica_args = (*proxy_args, "--proxy-ttl", "0")  # asks the upstream every time
            with Server(*replica_args, *QUIET, env={**aws, **NO_PROXY}) as replica:
                assert "by listing the bucket" in replica.output
                assert simple_names(replica) == {"house"}
                upstream.stop()
                upstream_running = False
                out = pip_install(replica.url + "simple/", "app", tmp_path / "two", env)
                for module in ("app", "lib", "leaf"):
                    assert (tmp_path / "two" / module / "__init__.py").is_file(), out
                # Every file from the bucket; every page the bucket's, stale (upstream gone).
                assert metric(replica, "file", "hit") >= 3
                assert metric(replica, "file", "miss") == 0
                assert metric(replica, "page", "stale") >= 3
                assert "the upstream failed" in replica.output
                # A file never fetched cannot be had without the upstream: 502, nothing kept.
                res = replica.get("/proxy/lib/lib-0.9-py3-none-any.whl")
                assert res.status == 502, res.text
            # The replica changed nothing in the cache.
            after = objects(s3_cluster, bucket_url)
            assert {k: v for k, v in after.items() if k.startswith(".pkgserver/proxy/")} == cache
    finally:
        if upstream_running:
            upstream.stop()


class _Tampering(http.server.BaseHTTPRequestHandler):
    """An upstream whose page lists one file's sha256 and which sends other bytes for it."""

    page = b""
    body = b""

    def do_GET(self) -> None:
        if self.path == "/simple/evil/":
            data, ctype = self.page, "text/html"
        elif self.path == "/files/evil-1.0-py3-none-any.whl":
            data, ctype = self.body, "application/octet-stream"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.e2e
def test_a_tampered_upstream_file_is_never_kept_in_the_bucket(
    s3_cluster: Cluster, bucket_url: str, aws: dict[str, str], tmp_path: Path
) -> None:
    genuine = make_wheel(tmp_path / "genuine", "evil", "1.0").read_bytes()
    tampered = bytearray(genuine)
    tampered[len(tampered) // 2] ^= 0xFF  # same size, one byte other
    page = (
        b'<html><body><a href="/files/evil-1.0-py3-none-any.whl#sha256='
        + hashlib.sha256(genuine).hexdigest().encode()
        + b'">evil-1.0-py3-none-any.whl</a></body></html>'
    )

    class Handler(_Tampering):
        pass

    Handler.page, Handler.body = page, bytes(tampered)
    handler = Handler
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{upstream.server_address[1]}/simple/"
        args = (bucket_url, "--proxy", "--fallback-url", url, *OPEN, *QUIET)
        with Server(*args, env={**aws, **NO_PROXY}) as proxy:
            listed = proxy.get("/simple/evil/")
            assert listed.status == 200 and b"evil-1.0-py3-none-any.whl" in listed.body
            conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
            try:
                conn.request("GET", "/proxy/evil/evil-1.0-py3-none-any.whl")
                res = conn.getresponse()
                try:
                    got = res.read()
                except http.client.IncompleteRead as exc:
                    got = exc.partial
            finally:
                conn.close()
            assert got != bytes(tampered) and len(got) < len(tampered)  # never the whole
            out = pip_install(
                proxy.url + "simple/", "evil", tmp_path / "t", client_env(tmp_path), ok=False
            )
            assert not (tmp_path / "t" / "evil").exists(), out
            stored = objects(s3_cluster, bucket_url)
            assert ".pkgserver/proxy/pages/evil.json" in stored  # the page is fine
            assert not [k for k in stored if k.startswith(".pkgserver/proxy/files/")]
            assert "does not have the sha256 its upstream page lists" in proxy.output
            # Nor is it left in the spool on this machine.
            spool = Path(proxy.env["PKGSERVER_CACHE_DIR"]) / "spool"
            assert not [p for p in spool.rglob("proxy-*")]
    finally:
        upstream.shutdown()
        upstream.server_close()
        thread.join(5)


@pytest.mark.e2e
def test_pkgserver_mirror_fills_and_forgets_a_bucketed_cache(
    s3_cluster: Cluster, bucket_url: str, aws: dict[str, str], tmp_path: Path
) -> None:
    upstream_dir = tmp_path / "upstream"
    app = make_wheel(upstream_dir, "app", "1.0", requires_dist=["leaf"])
    leaf = make_wheel(upstream_dir, "leaf", "2.0")
    env = {**client_env(tmp_path), **aws, **NO_PROXY}
    with Server(upstream_dir, "--disable-fallback", *OPEN) as upstream:
        fallback = ["--fallback-url", upstream.url + "simple/"]
        mirror = [sys.executable, "-m", "pkgserver", "mirror", bucket_url]
        out = run_client([*mirror, "app", *fallback], env)
        assert "Traceback" not in out.stderr, out.stderr
    files = {
        k: v
        for k, v in objects(s3_cluster, bucket_url).items()
        if k.startswith(".pkgserver/proxy/files/") and not k.endswith(".metadata")
    }
    assert files == {
        ".pkgserver/proxy/files/app/app-1.0-py3-none-any.whl": app.read_bytes(),
        ".pkgserver/proxy/files/leaf/leaf-2.0-py3-none-any.whl": leaf.read_bytes(),
    }
    out = run_client([*mirror, "--forget", "app"], env)  # (the upstream is gone: not needed)
    assert "app: dropped from the cache" in out.stderr
    left = sorted(objects(s3_cluster, bucket_url))
    assert [k for k in left if "/app" in k] == []
    assert ".pkgserver/proxy/pages/leaf.json" in left


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster for one test, whose gateway the test stops: it goes with the test."""
    with ceph_cluster(tmp_path / "ceph") as cluster:
        yield cluster


def fetch(srv: Server, path: str) -> tuple[int, bytes]:
    """Status and body, a body cut short included."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    try:
        conn.request("GET", path)
        res = conn.getresponse()
        try:
            return res.status, res.read()
        except http.client.IncompleteRead as exc:
            return res.status, exc.partial
    finally:
        conn.close()


@pytest.mark.e2e
def test_while_the_bucket_is_away_the_proxy_answers_no_500_and_then_resumes(
    own_cluster: Cluster, tmp_path: Path
) -> None:
    bucket = "t-" + uuid.uuid4().hex[:20]
    own_cluster.client().create_bucket(Bucket=bucket)
    url = f"s3://{bucket}/packages"
    upstream_dir = tmp_path / "upstream"
    app = make_wheel(upstream_dir, "app", "1.0")
    lib = make_wheel(upstream_dir, "lib", "1.0")
    with Server(upstream_dir, "--disable-fallback", *OPEN) as upstream:
        args = (url, "--proxy", "--fallback-url", upstream.url + "simple/", *OPEN, *QUIET)
        with Server(*args, env={**own_cluster.aws(), **NO_PROXY}) as proxy:
            assert proxy.get("/simple/app/").status == 200
            assert fetch(proxy, f"/proxy/app/{app.name}") == (200, app.read_bytes())
            own_cluster.stop_gateway()
            try:
                assert proxy.get("/simple/app/").status == 200  # from memory
                assert proxy.get("/simple/lib/").status == 200  # from the upstream
                for name in (app.name, lib.name):
                    status, _body = fetch(proxy, f"/proxy/{name.split('-')[0]}/{name}")
                    assert status != 500
            finally:
                own_cluster.start_gateway()
            assert fetch(proxy, f"/proxy/app/{app.name}") == (200, app.read_bytes())
            assert fetch(proxy, f"/proxy/lib/{lib.name}") == (200, lib.read_bytes())
            assert f".pkgserver/proxy/files/lib/{lib.name}" in objects(own_cluster, url)
            assert "the object store is unavailable" in proxy.output  # said, once or so
