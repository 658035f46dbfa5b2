"""The container's entrypoint and health check (docker/entrypoint.py), run on the host.

docker/smoke-test.sh checks the same behaviour inside a real container; these tests pin the
decisions (which arguments go to pkgserver, when it refuses to start and what it says) where
they are quick to run and to debug.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import pytest
from server import running_server, server_env, without_root_powers

ENTRYPOINT = Path(__file__).resolve().parent.parent / "docker" / "entrypoint.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pkgserver_entrypoint", ENTRYPOINT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ep = _load()


def run_entrypoint(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = server_env(env)
    return subprocess.run(
        [sys.executable, str(ENTRYPOINT), *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- which command runs ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ("pkgserver", ["run"])),
        (
            ["-v", "-P", ".htpasswd", "packages"],
            ("pkgserver", ["-v", "-P", ".htpasswd", "packages"]),
        ),
        (["run", "-p", "9000", "packages"], ("pkgserver", ["run", "-p", "9000", "packages"])),
        (["passwd", ".htpasswd", "alice"], ("pkgserver", ["passwd", ".htpasswd", "alice"])),
        (["/srv/pkgs"], ("pkgserver", ["/srv/pkgs"])),
        (["./packages"], ("pkgserver", ["./packages"])),
        (["sh", "-c", "true"], ("exec", ["sh", "-c", "true"])),
        (["/bin/sh"], ("exec", ["/bin/sh"])),
        ([sys.executable, "-V"], ("exec", [sys.executable, "-V"])),
        (["no-such-program-here"], ("pkgserver", ["no-such-program-here"])),
        (["s3://corp-index/packages"], ("pkgserver", ["s3://corp-index/packages"])),
    ],
)
def test_arguments_go_to_pkgserver_like_pypiservers_image(
    args: list[str], expected: tuple[str, list[str]]
) -> None:
    assert ep.command_for(args) == expected


def test_a_folder_named_like_a_program_is_still_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sh").mkdir()
    monkeypatch.chdir(tmp_path)
    assert ep.command_for(["sh"]) == ("pkgserver", ["sh"])


# -- refusing to start, in one line -----------------------------------------------------------------
def test_missing_password_file_is_explained_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "packages").mkdir()
    res = run_entrypoint("-P", ".htpasswd", "packages", cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "password file '.htpasswd'" in lines[0]
    assert "-v ~/pypi/.htpasswd:/data/.htpasswd" in lines[0]


def test_missing_package_folder_is_explained_in_one_line(tmp_path: Path) -> None:
    res = run_entrypoint("-P", ".", "-a", ".", "packages", cwd=tmp_path)
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "packages" in res.stderr and "-v <folder>:/data/packages" in res.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the check as another user")
def test_unwritable_package_folder_is_explained_without_touching_it() -> None:
    top = Path(tempfile.mkdtemp(prefix="pkgserver-ep-"))  # pytest's tmp_path is root-only
    top.chmod(0o755)
    pkgs = top / "packages"
    pkgs.mkdir(mode=0o755)  # root's, like a folder docker created for a missing host path
    os.setegid(65534)
    os.seteuid(65534)
    try:
        problem = ep.writable_problem(str(pkgs))
    finally:
        os.seteuid(0)
        os.setegid(0)
    assert problem is not None
    assert "\n" not in problem
    assert "not writable by this container's user (uid 65534, gid 65534" in problem
    assert "owned by 0:0, mode 755" in problem
    assert "chown -R 65534:65534" in problem and ":ro" in problem
    assert os.listdir(pkgs) == [] and pkgs.stat().st_uid == 0  # never chowned, nothing left
    shutil.rmtree(top)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a read-only tmpfs needs root")
def test_read_only_folder_is_accepted_as_download_only(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        assert ep.writable_problem(str(ro)) is None
        assert os.listdir(ro) == []
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_only_the_upload_folder_is_checked_and_only_when_uploads_are_possible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pkgserver.config import Settings

    probed: list[str] = []
    monkeypatch.setattr(ep, "writable_problem", lambda root: probed.append(root))
    roots = (str(tmp_path / "upload"), str(tmp_path / "mirror"))
    ep.preflight(Settings(roots=roots, password_file="htpasswd"))
    assert probed == [roots[0]]  # uploads go to the first folder only
    probed.clear()
    ep.preflight(Settings(roots=roots, password_file=None, authenticate=frozenset()))
    assert probed == [roots[0]]  # -P . -a .: anyone may upload
    probed.clear()
    ep.preflight(Settings(roots=roots, password_file=None, authenticate=frozenset({"update"})))
    assert probed == []  # no password file: nobody can upload, a read-only folder is fine


@pytest.mark.parametrize(
    ("args", "roots"),
    [
        pytest.param(["-P", ".", "-a", "."], "s3://corp-index/packages", id="PKGSERVER_ROOTS"),
        pytest.param(["-P", ".", "-a", ".", "s3://corp-index/packages"], None, id="argument"),
    ],
)
def test_a_bucket_is_served_with_the_aws_settings_and_no_folder_probe(
    args: list[str], roots: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docker run -e PKGSERVER_ROOTS=s3://... -e AWS_ENDPOINT_URL=... IMAGE -P . -a .: uploads
    # are open, but there is no folder to probe; the AWS settings reach the server.
    pytest.importorskip("boto3")
    aws = {
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "AWS_ACCESS_KEY_ID": "key",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }
    for key in [k for k in os.environ if k.startswith(("PKGSERVER_", "AWS_"))]:
        monkeypatch.delenv(key)
    for key, value in {**aws, **({"PKGSERVER_ROOTS": roots} if roots else {})}.items():
        monkeypatch.setenv(key, value)
    probed: list[str] = []
    monkeypatch.setattr(ep, "writable_problem", probed.append)
    started: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setattr(ep.os, "execve", lambda exe, argv, env: started.append((argv, env)))
    ep.entrypoint(args)
    assert probed == []
    ((argv, env),) = started
    assert argv[1:] == args
    assert {k: env[k] for k in aws} == aws
    settings = ep.cli.parse_run(argv[1:], env)  # what the server (and the health check) reads
    assert settings is not None and settings.roots == ("s3://corp-index/packages",)


def test_writable_folder_passes_and_the_probe_leaves_nothing(tmp_path: Path) -> None:
    assert ep.writable_problem(str(tmp_path)) is None
    assert os.listdir(tmp_path) == []


# -- health check -------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.e2e
def test_healthcheck_finds_the_servers_own_port_and_endpoint(tmp_path: Path) -> None:
    port = _free_port()
    with running_server(
        "-p",
        str(port),
        "--health-endpoint",
        "/hc",
        "-P",
        ".",
        "-a",
        ".",
        tmp_path,
        env={"PKGSERVER_DISABLE_FALLBACK": "1"},
    ) as srv:
        assert srv.proc is not None
        pid = str(srv.proc.pid)
        assert ep.health_url([pid]) == f"http://127.0.0.1:{port}/hc"
        assert ep.healthcheck([pid]) == 0


@pytest.mark.e2e
def test_healthcheck_reads_the_port_from_the_servers_environment(tmp_path: Path) -> None:
    # As in a container run with -e PKGSERVER_PORT=...: no -p on the command line.
    port = _free_port()
    env = server_env(
        {
            "PKGSERVER_PORT": str(port),
            "PKGSERVER_HEALTH_ENDPOINT": "/alive",
            "PKGSERVER_CACHE_DIR": "off",
            "PKGSERVER_DISABLE_FALLBACK": "1",
        }
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pkgserver",
            "run",
            "-i",
            "127.0.0.1",
            "-P",
            ".",
            "-a",
            ".",
            str(tmp_path),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_healthy(proc)
        assert ep.health_url([str(proc.pid)]) == f"http://127.0.0.1:{port}/alive"
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0


def _wait_healthy(proc: subprocess.Popen[bytes], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while ep.healthcheck([str(proc.pid)]) != 0:
        assert proc.poll() is None and time.monotonic() < deadline, "never became healthy"
        time.sleep(0.1)


def test_healthcheck_fails_when_nothing_answers(tmp_path: Path) -> None:
    assert ep.healthcheck(["999999999"]) == 1  # no such process: the default URL, refused


# -- pypiserver's variables -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("environ", "port"),
    [
        ({"PYPISERVER_PORT": "9090"}, "9090"),
        ({"PORT": "9191"}, "9191"),
        ({"PYPISERVER_PORT": "9090", "PORT": "9191"}, "9090"),  # the newer name wins
        ({"PKGSERVER_PORT": "9292", "PYPISERVER_PORT": "9090"}, "9292"),  # ours wins
        ({}, None),
    ],
)
def test_pypiservers_port_variables_set_the_port(environ: dict[str, str], port: str | None) -> None:
    env = ep.port_from_pypiserver_variables(environ)
    assert env.get("PKGSERVER_PORT") == port


def test_the_port_variables_leave_the_entrypoints_own_environment_alone() -> None:
    environ = {"PYPISERVER_PORT": "9090"}
    assert ep.port_from_pypiserver_variables(environ)["PKGSERVER_PORT"] == "9090"
    assert environ == {"PYPISERVER_PORT": "9090"}


def test_a_program_run_in_the_image_sees_the_port_pkgserver_would(tmp_path: Path) -> None:
    # The environment handed to the exec'd command is the one pkgserver would get.
    res = run_entrypoint(
        "sh", "-c", 'echo "$PKGSERVER_PORT"', cwd=tmp_path, env={"PYPISERVER_PORT": "9090"}
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "9090"


@pytest.mark.e2e
def test_the_image_listens_on_pypiserver_port(tmp_path: Path) -> None:
    # docker run -e PYPISERVER_PORT=... IMAGE: the entrypoint, then the server it execs.
    port = _free_port()
    (tmp_path / "packages").mkdir()
    env = server_env({"PYPISERVER_PORT": str(port), "PKGSERVER_HOST": "127.0.0.1"})
    proc = subprocess.Popen(
        [sys.executable, str(ENTRYPOINT), "-P", ".", "-a", ".", str(tmp_path / "packages")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_healthy(proc)
        assert ep.health_url([str(proc.pid)]) == f"http://127.0.0.1:{port}/health"
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0


def test_an_unreadable_data_folder_says_permission_denied(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "packages").mkdir(parents=True)
    data.chmod(0o700)
    prefix = without_root_powers()
    if os.geteuid() == 0:
        os.chown(data, 12345, 12345)
    try:
        res = subprocess.run(
            [
                *prefix,
                sys.executable,
                str(ENTRYPOINT),
                "-P",
                ".",
                "-a",
                ".",
                str(data / "packages"),
            ],
            cwd=tmp_path,
            env=server_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        data.chmod(0o755)
    assert res.returncode == 2
    assert "permission denied" in res.stderr and "does not exist" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
