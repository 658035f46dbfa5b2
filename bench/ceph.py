"""An S3 server for the benchmarks: a throwaway Ceph RADOS Gateway started by the workplace's
ceph-s3-up.sh (Debian's ceph-mon, ceph-osd and radosgw), or an endpoint given; buckets, and a
corpus put into one with a pool of threads.

The tool is found as tests/test_s3.py finds it: $PKGSERVER_CEPH_TOOL, then
../shared/tools/ceph-s3-up.sh beside the checkout, then /work/shared/tools/ceph-s3-up.sh.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import ROOT, log

TOOL_PLACES = [
    os.environ.get("PKGSERVER_CEPH_TOOL", ""),
    str(ROOT.parent / "shared" / "tools" / "ceph-s3-up.sh"),
    "/work/shared/tools/ceph-s3-up.sh",
]
REGION = "us-east-1"


def tool() -> str:
    found = next((p for p in TOOL_PLACES if p and os.access(p, os.X_OK)), None)
    if found is None:
        raise SystemExit(
            "ceph-s3-up.sh not found (set PKGSERVER_CEPH_TOOL, or give --endpoint); it needs"
            " apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw"
        )
    return found


@contextlib.contextmanager
def gateway(endpoint: str | None = None) -> Iterator[dict[str, str]]:
    """S3_ENDPOINT, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY of a Ceph RGW started for the
    block (stopped and removed after it), or of ``endpoint`` with the keys of the environment."""
    if endpoint:
        keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        missing = [k for k in keys if not os.environ.get(k)]
        if missing:
            raise SystemExit(f"--endpoint needs {' and '.join(missing)} in the environment")
        yield {"S3_ENDPOINT": endpoint, **{k: os.environ[k] for k in keys}}
        return
    up = tool()
    with tempfile.TemporaryDirectory(prefix="s3-bench-") as tmp:
        where = Path(tmp) / "ceph"
        t0 = time.monotonic()
        done = subprocess.run(
            [up, str(where)], capture_output=True, text=True, timeout=600, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"{up} failed: {done.stderr[-2000:]}")
        env = dict(line.split("=", 1) for line in done.stdout.split() if "=" in line)
        log(f"Ceph RGW up at {env['S3_ENDPOINT']} in {time.monotonic() - t0:.1f}s")
        try:
            yield env
        finally:
            subprocess.run([up, "--down", str(where)], capture_output=True, timeout=300)


def server_env(env: dict[str, str]) -> dict[str, str]:
    """What ``pkgserver run s3://...`` reads to reach the store: the usual AWS settings."""
    return {
        "AWS_ENDPOINT_URL": env["S3_ENDPOINT"],
        "AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", REGION),
    }


def client(env: dict[str, str], connections: int = 10) -> Any:
    """A boto3 client, path-style (Ceph and MinIO), with ``connections`` pooled connections."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=env["S3_ENDPOINT"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=os.environ.get("AWS_DEFAULT_REGION", REGION),
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=connections),
    )


def new_bucket(s3: Any, tag: str) -> str:
    name = f"bench-{tag}-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    return name


def put_files(s3: Any, bucket: str, prefix: str, files: list[Path], threads: int) -> float:
    """PUT each file as PREFIX/NAME with ``threads`` at once; the seconds it took."""
    t0 = time.monotonic()

    def put(path: Path) -> None:
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{path.name}", Body=path.read_bytes())

    with ThreadPoolExecutor(threads) as pool:
        for n, _done in enumerate(pool.map(put, files), 1):
            if n % 20_000 == 0:
                log(f"put {n:,} of {len(files):,} objects ({time.monotonic() - t0:.0f}s)")
    return time.monotonic() - t0


def count_keys(s3: Any, bucket: str, prefix: str) -> int:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sum(len(page.get("Contents", ())) for page in pages)


def remove_bucket(s3: Any, bucket: str) -> None:
    """Every object of ``bucket``, then the bucket (an endpoint given is left as found)."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", ())]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    s3.delete_bucket(Bucket=bucket)
