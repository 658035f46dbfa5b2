"""A throwaway Ceph RADOS Gateway (S3) for the object-store tests, from the workplace's
ceph-s3-up.sh (Debian's ceph-mon, ceph-osd and radosgw, which .ci/install-clients.sh installs),
on 127.0.0.1.

``ceph_cluster(where)`` starts one and yields a :class:`Cluster`; it stops it whatever happens.
Without the tool or radosgw the tests skip, except when CI is set: there they fail rather than
skip silently. A test may stop the gateway alone (``stop_gateway``) and start it again: the OSD
keeps the data, so the buckets are still there.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest

REPO = Path(__file__).resolve().parent.parent
TOOL_PLACES = [
    os.environ.get("PKGSERVER_CEPH_TOOL", ""),
    str(REPO.parent / "shared" / "tools" / "ceph-s3-up.sh"),
    "/work/shared/tools/ceph-s3-up.sh",
]
GATEWAY = "client.rgw.a"  # the tool's radosgw


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(why: str) -> None:
    if _in_ci():
        pytest.fail(f"{why}; CI is set, so the object-store tests fail instead of skipping")
    pytest.skip(why)


class Cluster(NamedTuple):
    where: Path  # the tool's folder: ceph.conf, run/ (pid files), log/
    env: dict[str, str]  # S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
    started: list[subprocess.Popen[bytes]]  # gateways started again (waited for at the end)

    @property
    def conf(self) -> str:
        return str(self.where / "ceph.conf")

    def aws(self) -> dict[str, str]:
        """The environment a pkgserver process finds the store by, as on a real deployment."""
        return {
            "AWS_ENDPOINT_URL": self.env["S3_ENDPOINT"],
            "AWS_ACCESS_KEY_ID": self.env["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": self.env["AWS_SECRET_ACCESS_KEY"],
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.env["S3_ENDPOINT"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )

    def admin(self, *args: str) -> str:
        """radosgw-admin on this cluster (quotas, ...)."""
        done = subprocess.run(
            ["radosgw-admin", "-c", self.conf, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    # -- the gateway alone -----------------------------------------------------------------------
    def gateway_pid(self) -> int | None:
        """The running radosgw of this cluster (started with its ceph.conf), if any."""
        for name in (f"{GATEWAY}.pid", "radosgw.launcher.pid"):
            try:
                pid = int((self.where / "run" / name).read_text().strip() or 0)
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, ValueError, IndexError):
                continue
            if self.conf.encode() in cmdline and state != "Z":
                return pid
        return None

    def stop_gateway(self) -> None:
        """Kill radosgw (only this cluster's): the S3 endpoint refuses connections."""
        pid = self.gateway_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        for _ in range(200):
            if self.gateway_pid() is None:
                return
            time.sleep(0.05)
        raise AssertionError(f"radosgw {pid} did not die")

    def start_gateway(self) -> None:
        """radosgw again, as the tool starts it; returns once the endpoint answers."""
        if self.gateway_pid() is not None:
            return
        with open(self.where / "log" / "rgw.stdout", "ab") as out:
            proc = subprocess.Popen(
                ["setsid", "radosgw", "-c", self.conf, "-n", GATEWAY, "-f"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.started.append(proc)
        (self.where / "run" / "radosgw.launcher.pid").write_text(f"{proc.pid}\n")
        client = self.client()
        deadline = time.monotonic() + 60
        while True:
            try:
                client.list_buckets()
                return
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)


def _tool() -> str:
    tool = next((p for p in TOOL_PLACES if p and os.access(p, os.X_OK)), None)
    if tool is None:
        unavailable("ceph-s3-up.sh not found (set PKGSERVER_CEPH_TOOL)")
    if shutil.which("radosgw") is None:
        unavailable("radosgw is not installed (apt-get install ceph-mon ceph-osd radosgw)")
    pytest.importorskip("boto3")
    assert tool is not None
    return tool


@contextmanager
def ceph_cluster(where: Path, memstore_gb: int | None = None) -> Iterator[Cluster]:
    """A new cluster in ``where`` (a new or empty folder), stopped and removed at the end."""
    tool = _tool()
    env = dict(os.environ)
    if memstore_gb is not None:
        env["CEPH_MEMSTORE_GB"] = str(memstore_gb)
    done = subprocess.run(
        [tool, str(where)], capture_output=True, text=True, timeout=300, check=False, env=env
    )
    if done.returncode != 0:
        subprocess.run([tool, "--down", str(where)], capture_output=True, timeout=120)
        unavailable(f"the S3 server did not start: {done.stderr[-2000:]}")
    found = dict(line.split("=", 1) for line in done.stdout.split() if "=" in line)
    cluster = Cluster(where, found, [])
    try:
        yield cluster
    finally:
        subprocess.run([tool, "--down", str(where)], capture_output=True, timeout=120)
        for proc in cluster.started:
            proc.wait(30)
