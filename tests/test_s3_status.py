"""Project status markers (PEP 792) on a bucket: ``pkgserver status s3://...`` reaches a running
replica through the bucket's journal, as ``pkgserver yank`` does (Ceph RGW, see tests/ceph.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builders import make_wheel
from server import Server
from test_s3 import OPEN_REPLICA, _objects, _pkgserver, _put_files, _until

from pkgserver.records import STATUS_FILE


@pytest.mark.e2e
def test_status_on_a_bucket_reaches_a_running_replica(
    s3_env: dict[str, str], aws: dict[str, str], bucket_url: str, tmp_path: Path
) -> None:
    dist = tmp_path / "dist"
    w10 = make_wheel(dist, "demo", "1.0")
    other = make_wheel(dist, "other", "1.0")
    _put_files(s3_env, bucket_url, {p.name: p.read_bytes() for p in (w10, other)})
    with Server(bucket_url, *OPEN_REPLICA, env=aws) as replica:
        replica.wait_listed("demo", w10.name)
        assert replica.get(f"/packages/{w10.name}").status == 200

        res = _pkgserver(aws, "status", "demo", "quarantined", bucket_url, "--reason", "malware")
        assert (res.returncode, res.stderr) == (0, "demo is now quarantined (malware)\n"), res
        stored = json.loads(_objects(s3_env, bucket_url)[f".pkgserver/{STATUS_FILE}"])
        assert stored == {
            "project-status": {"demo": {"status": "quarantined", "reason": "malware"}}
        }
        expected = {"status": "quarantined", "reason": "malware"}
        _until(
            lambda: replica.project_json("demo").json().get("project-status") == expected,
            "the status shown by the replica",
        )
        assert replica.project_json("demo").json()["files"] == []
        assert replica.get(f"/packages/{w10.name}").status == 404
        assert replica.get(f"/packages/{other.name}").status == 200

        res = _pkgserver(aws, "status", "demo", bucket_url)
        assert (res.returncode, res.stdout) == (0, "quarantined\tmalware\n"), res

        res = _pkgserver(aws, "status", "demo", "active", bucket_url)
        assert (res.returncode, res.stderr) == (0, "demo is now active\n"), res
        _until(
            lambda: "project-status" not in replica.project_json("demo").json(),
            "the status cleared on the replica",
        )
        assert replica.get(f"/packages/{w10.name}").status == 200
    assert "Traceback" not in replica.output
