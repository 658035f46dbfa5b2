"""Which S3 client for the object-store backend: boto3, obstore or minio, on a real Ceph RGW.

    python bench/s3_clients.py                 # all three, each in its own venv (bench/.venvs)
    python bench/s3_clients.py --out bench/results/s3-clients.md

For each client, in a venv of its own (its installed size is measured there, minus pip and
setuptools): the create-only PUT (If-None-Match: *) must succeed once and be refused the second
time with the first bytes kept; then it times 300 PUTs and 300 GETs of 4 KiB objects, 8 PUTs and
GETs of 8 MiB, and listing 300 keys. The S3 server is a single-node Ceph RADOS Gateway started by
the workplace's ceph-s3-up.sh on 127.0.0.1 (Debian's ceph-mon, ceph-osd and radosgw).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from ceph import gateway
from common import HERE

CLIENTS = {"boto3": "boto3", "obstore": "obstore", "minio": "minio"}
SMALL, LARGE = 4 * 1024, 8 * 1024 * 1024

# One client's trial, run in that client's venv; prints a JSON line.
TRIAL = r"""
import json, os, sys, time, uuid
client_name, endpoint, key, secret = sys.argv[1:5]
SMALL, LARGE = 4 * 1024, 8 * 1024 * 1024
bucket = "b-" + uuid.uuid4().hex[:16]
host = endpoint.split("://", 1)[1]
if client_name == "boto3":
    import boto3
    from botocore.config import Config
    c = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key,
                     aws_secret_access_key=secret, region_name="us-east-1",
                     config=Config(s3={"addressing_style": "path"}))
    c.create_bucket(Bucket=bucket)
    def put(k, data, create=False):
        kw = {"IfNoneMatch": "*"} if create else {}
        try:
            c.put_object(Bucket=bucket, Key=k, Body=data, **kw); return True
        except Exception as exc:
            if getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode") == 412:
                return False
            raise
    def get(k): return c.get_object(Bucket=bucket, Key=k)["Body"].read()
    def listing(): return [o["Key"] for p in c.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in p.get("Contents", [])]
elif client_name == "obstore":
    import obstore
    from obstore.store import S3Store
    # obstore cannot create a bucket: the driver makes one beforehand (_make_bucket).
    bucket = os.environ["S3_BENCH_BUCKET"]
    store = S3Store(bucket, endpoint=endpoint, access_key_id=key, secret_access_key=secret,
                    region="us-east-1", client_options={"allow_http": True},
                    virtual_hosted_style_request=False)
    def put(k, data, create=False):
        try:
            obstore.put(store, k, data, mode="create" if create else "overwrite"); return True
        except Exception as exc:
            if "AlreadyExists" in type(exc).__name__ or "Precondition" in str(exc) or "already exists" in str(exc).lower():
                return False
            raise
    def get(k): return bytes(obstore.get(store, k).bytes())
    def listing(): return [o["path"] for chunk in obstore.list(store) for o in chunk]
else:
    from minio import Minio
    from minio.error import S3Error
    c = Minio(host, access_key=key, secret_key=secret, secure=False, region="us-east-1")
    c.make_bucket(bucket)
    import io
    def put(k, data, create=False):
        # minio-py has no conditional PUT of its own: the header goes as "metadata", which it
        # sends as is for standard header names.
        headers = {"If-None-Match": "*"} if create else None
        try:
            c.put_object(bucket, k, io.BytesIO(data), len(data), metadata=headers); return True
        except S3Error as exc:
            if exc.code in ("PreconditionFailed",): return False
            raise
    def get(k):
        r = c.get_object(bucket, k)
        try: return r.read()
        finally: r.close(); r.release_conn()
    def listing(): return [o.object_name for o in c.list_objects(bucket, recursive=True)]
out = {"client": client_name}
first, second = put("x.whl", b"one", create=True), put("x.whl", b"two", create=True)
out["create_only"] = first and not second and get("x.whl") == b"one"
small, large = os.urandom(SMALL), os.urandom(LARGE)
t = time.perf_counter()
for n in range(300): put(f"s/{n}.whl", small)
out["put_4k_per_s"] = 300 / (time.perf_counter() - t)
t = time.perf_counter()
for n in range(300): assert get(f"s/{n}.whl") == small
out["get_4k_per_s"] = 300 / (time.perf_counter() - t)
t = time.perf_counter()
for n in range(8): put(f"l/{n}.whl", large)
out["put_8m_mb_per_s"] = 8 * 8 / (time.perf_counter() - t)
t = time.perf_counter()
for n in range(8): assert len(get(f"l/{n}.whl")) == LARGE
out["get_8m_mb_per_s"] = 8 * 8 / (time.perf_counter() - t)
t = time.perf_counter()
assert len([k for k in listing() if k.startswith("s/")]) == 300
out["list_300_s"] = time.perf_counter() - t
print(json.dumps(out))
"""


def _venv(client: str) -> Path:
    venv = HERE / ".venvs" / f"s3-{client}"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", CLIENTS[client]],
            check=True,
        )
    return venv


def _size_mb(venv: Path) -> float:
    site = next((venv / "lib").glob("python3*/site-packages"))
    total = 0
    for path in site.rglob("*"):
        top = path.relative_to(site).parts[0]
        if path.is_file() and not top.startswith(("pip", "setuptools", "_distutils_hack")):
            total += path.stat().st_size
    return total / 1e6


def _make_bucket(env: dict[str, str]) -> str:
    """A bucket for obstore, which cannot create one: made with boto3 from this venv's
    neighbour (bench/.venvs/s3-boto3)."""
    code = (
        "import sys, uuid, boto3; from botocore.config import Config; "
        "b='b-'+uuid.uuid4().hex[:16]; "
        "boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id=sys.argv[2], "
        "aws_secret_access_key=sys.argv[3], region_name='us-east-1', "
        "config=Config(s3={'addressing_style':'path'})).create_bucket(Bucket=b); print(b)"
    )
    python = _venv("boto3") / "bin" / "python"
    args = [env["S3_ENDPOINT"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]]
    return subprocess.run(
        [str(python), "-c", code, *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def trial(client: str, env: dict[str, str]) -> dict[str, object]:
    venv = _venv(client)
    extra_env = dict(os.environ)
    if client == "obstore":
        extra_env["S3_BENCH_BUCKET"] = _make_bucket(env)
    done = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            TRIAL,
            client,
            env["S3_ENDPOINT"],
            env["AWS_ACCESS_KEY_ID"],
            env["AWS_SECRET_ACCESS_KEY"],
        ],
        capture_output=True,
        text=True,
        env=extra_env,
        timeout=600,
    )
    if done.returncode != 0:
        return {"client": client, "error": done.stderr.strip().splitlines()[-1:]}
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    result["installed_mb"] = round(_size_mb(venv), 1)
    return result


def report(results: list[dict[str, object]]) -> str:
    lines = [
        "| client | installed | create-only PUT on Ceph | PUT 4 KiB | GET 4 KiB | PUT 8 MiB"
        " | GET 8 MiB | list 300 |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['client']} | | error: {r['error']} | | | | | |")
            continue
        lines.append(
            f"| {r['client']} | {r['installed_mb']} MB | {'works' if r['create_only'] else 'NO'}"
            f" | {r['put_4k_per_s']:.0f}/s | {r['get_4k_per_s']:.0f}/s"
            f" | {r['put_8m_mb_per_s']:.0f} MB/s | {r['get_8m_mb_per_s']:.0f} MB/s"
            f" | {r['list_300_s'] * 1000:.0f} ms |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", default=",".join(CLIENTS))
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    with gateway() as env:
        results = [trial(c.strip(), env) for c in args.clients.split(",") if c.strip()]
    text = report(results)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
