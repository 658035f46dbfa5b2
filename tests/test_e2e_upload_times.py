"""End to end: the upload times pkgserver serves are what pip's ``--uploaded-prior-to`` and
uv's ``--exclude-newer`` filter on, and a file copied in with an mtime from the past (``cp -p``)
counts from when the server first saw it.

Two versions of a project are copied into a served directory one after the other, both with
2019 mtimes (version 2's even older than version 1's, as ``cp -p`` or ``rsync -a`` keep them);
a cutoff between the two upload times the server reports gets version 1 from both clients,
and no cutoff gets version 2. The times are the same after a restart without the index cache.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from builders import make_wheel
from server import Server, client_env, output, run_client, running_server

pytestmark = pytest.mark.e2e

PY = sys.executable
PROJECT = "timed-pkg"
V1_MTIME = datetime.datetime(2019, 6, 1, tzinfo=datetime.timezone.utc).timestamp()
V2_MTIME = datetime.datetime(2019, 1, 1, tzinfo=datetime.timezone.utc).timestamp()
NO_UPLOAD_TIME = "does not provide upload-time metadata"  # pip's message for such a file


def _uv() -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if not found:
            pytest.fail("uv is not installed: it is part of the test extras")
        return found


def parse_time(text: str) -> datetime.datetime:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text), text  # PEP 700
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def upload_times(srv: Server) -> dict[str, datetime.datetime]:
    res = srv.project_json(PROJECT)
    assert res.status == 200, res
    return {f["filename"]: parse_time(f["upload-time"]) for f in res.json()["files"]}


def pip_install(
    tmp: Path, env: dict[str, str], url: str, *args: str, ok: bool = True
) -> tuple[str | None, str]:
    """(the version pip installed, or None; its output) in a new environment."""
    target = tmp / f"pip-{len(list(tmp.glob('pip-*')))}"
    run_client([PY, "-m", "venv", "--without-pip", target], env)
    python = target / "bin" / "python"
    cmd: list[str | os.PathLike[str]] = [PY, "-m", "pip", "--python", python, "install", "-v"]
    cmd.append("--only-binary=:all:")
    res = run_client([*cmd, "--index-url", url, *args, PROJECT], env, ok=ok)
    return installed_version(python, env), output(res)


def uv_install(
    tmp: Path, env: dict[str, str], url: str, *args: str, ok: bool = True
) -> tuple[str | None, str]:
    """(the version uv installed, or None; its output) in a new environment."""
    uv = _uv()
    target = tmp / f"uv-{len(list(tmp.glob('uv-*')))}"
    run_client([uv, "venv", "--python", PY, target], env)
    python = target / "bin" / "python"
    cmd: list[str | os.PathLike[str]] = [uv, "pip", "install", "--python", python, "--no-build"]
    cmd += ["--index-url", url]
    res = run_client([*cmd, *args, PROJECT], env, ok=ok)
    return installed_version(python, env), output(res)


def installed_version(python: Path, env: dict[str, str]) -> str | None:
    code = f"import importlib.metadata as m\ntry: print(m.version({PROJECT!r}))\nexcept Exception: pass"
    res = subprocess.run(
        [python, "-I", "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return res.stdout.strip() or None


def test_cutoffs_between_two_first_seen_times_pick_version_1(tmp_path: Path) -> None:
    served = tmp_path / "packages"
    served.mkdir()
    src = tmp_path / "src"
    v1 = make_wheel(src, PROJECT, "1.0")
    v2 = make_wheel(src, PROJECT, "2.0")
    os.utime(v1, (V1_MTIME, V1_MTIME))
    os.utime(v2, (V2_MTIME, V2_MTIME))
    cache = tmp_path / "index-cache"
    env = client_env(tmp_path)
    clients = tmp_path / "envs"
    clients.mkdir()

    with running_server("--disable-fallback", "--cache-dir", cache, served) as srv:
        started = datetime.datetime.now(datetime.timezone.utc)
        shutil.copy2(v1, served / v1.name)  # cp -p: bytes, then the 2019 mtime
        srv.wait_listed(PROJECT, v1.name)
        shutil.copy2(v2, served / v2.name)
        srv.wait_listed(PROJECT, v1.name, v2.name)
        times = upload_times(srv)
        t1, t2 = times[v1.name], times[v2.name]
        # First seen now, in the order they came; not their mtimes.
        assert started - datetime.timedelta(seconds=1) <= t1 < t2
        assert (served / v2.name).stat().st_mtime == V2_MTIME
        cutoff = iso(t1 + (t2 - t1) / 2)

        version, out = pip_install(clients, env, srv.url + "simple/", "--uploaded-prior-to", cutoff)
        assert version == "1.0", out
        assert NO_UPLOAD_TIME not in out
        version, out = uv_install(clients, env, srv.url + "simple/", "--exclude-newer", cutoff)
        assert version == "1.0", out

        version, out = pip_install(clients, env, srv.url + "simple/")
        assert version == "2.0", out
        version, out = uv_install(clients, env, srv.url + "simple/")
        assert version == "2.0", out

        # The mtimes (2019) are not what the clients see: a 2020 cutoff finds nothing.
        old_cutoff = "2020-01-01T00:00:00Z"
        version, out = pip_install(
            clients, env, srv.url + "simple/", "--uploaded-prior-to", old_cutoff, ok=False
        )
        assert version is None and "No matching distribution" in out, out
        assert NO_UPLOAD_TIME not in out
        version, out = uv_install(
            clients, env, srv.url + "simple/", "--exclude-newer", old_cutoff, ok=False
        )
        assert version is None, out

    # A restart, without the index cache: the same times, from .pkgserver/upload-times.jsonl.
    shutil.rmtree(cache)
    with running_server("--disable-fallback", "--cache-dir", cache, served) as srv:
        srv.wait_listed(PROJECT, v1.name, v2.name)
        assert upload_times(srv) == times


def test_upload_time_mtime_serves_the_copied_mtimes(tmp_path: Path) -> None:
    served = tmp_path / "packages"
    served.mkdir()
    v1 = make_wheel(tmp_path / "src", PROJECT, "1.0")
    os.utime(v1, (V1_MTIME, V1_MTIME))
    shutil.copy2(v1, served / v1.name)
    env = client_env(tmp_path)
    clients = tmp_path / "envs"
    clients.mkdir()
    with running_server("--disable-fallback", "--upload-time", "mtime", served) as srv:
        srv.wait_listed(PROJECT, v1.name)
        assert iso(upload_times(srv)[v1.name]) == "2019-06-01T00:00:00.000000Z"
        version, out = pip_install(
            clients, env, srv.url + "simple/", "--uploaded-prior-to", "2020-01-01T00:00:00Z"
        )
        assert version == "1.0", out
    assert not (served / ".pkgserver" / "upload-times.jsonl").exists()


def test_an_upload_keeps_the_time_it_was_published_across_restarts(tmp_path: Path) -> None:
    from passlib.hash import bcrypt

    served = tmp_path / "packages"
    served.mkdir()
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("alice:" + bcrypt.using(rounds=4).hash("secret") + "\n")
    wheel = make_wheel(tmp_path / "dist", PROJECT, "1.0")
    os.utime(wheel, (V1_MTIME, V1_MTIME))  # the client's copy is old: that is no upload time
    twine = shutil.which("twine", path=os.path.dirname(PY)) or "twine"
    cache = tmp_path / "index-cache"
    args = ("--disable-fallback", "-P", htpasswd, "--cache-dir", cache, served)
    with running_server(*args) as srv:
        before = datetime.datetime.now(datetime.timezone.utc)
        upload = [twine, "upload", "--non-interactive", "--repository-url", srv.url]
        run_client([*upload, "-u", "alice", "-p", "secret", wheel], client_env(tmp_path))
        after = datetime.datetime.now(datetime.timezone.utc)
        published = upload_times(srv)[wheel.name]
        assert before - datetime.timedelta(seconds=1) <= published <= after
    shutil.rmtree(cache)
    with running_server(*args) as srv:
        srv.wait_listed(PROJECT, wheel.name)
        assert upload_times(srv)[wheel.name] == published
