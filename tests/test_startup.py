"""The start-up window, as a user meets it: ``cp dist/* packages/ && pkgserver run packages/``
and an install at once, many times over.

A file the first scan finds with an mtime under a second old may still be being written, so it
is listed only once it has settled. Before, the server already served meanwhile: for about a
second such a project was missing, and (with the fallback on, the default) redirected to PyPI.
Now every name found is claimed at once and such files are listed before the server listens.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path

import pytest
from builders import make_wheel
from server import Server, client_env, run_client

pytestmark = pytest.mark.e2e

JSON_V1 = "application/vnd.pypi.simple.v1+json"


def _uv() -> str:
    from uv import find_uv_bin

    return str(find_uv_bin())


def test_copy_start_and_install_at_once(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    wheels = [
        make_wheel(dist, "corp-app", "1.0", requires_dist=["corp-lib>=1"]),
        make_wheel(dist, "corp-lib", "1.2"),
    ]
    env = client_env(tmp_path)
    for attempt in range(8):
        packages = tmp_path / f"packages-{attempt}"
        packages.mkdir()
        for wheel in wheels:
            shutil.copyfile(wheel, packages / wheel.name)  # as cp does: a fresh mtime
        # The fallback is on (PyPI, which is out of reach here): a redirect would fail.
        with Server(packages) as srv:
            # What an installer asks first, the moment the server answers.
            page = srv.get("/simple/corp-app/", accept=JSON_V1)
            assert page.status == 200, (attempt, page.status, page.headers.get("location"))
            assert [f["filename"] for f in page.json()["files"]] == [wheels[0].name]
            assert srv.get("/health").status == 200
            target = tmp_path / f"site-{attempt}"
            started = time.monotonic()
            run_client(
                [
                    _uv(),
                    "pip",
                    "install",
                    "--python",
                    sys.executable,
                    "--target",
                    target,
                    "--index-url",
                    srv.url + "simple/",
                    "corp-app",
                ],
                env,
            )
            assert time.monotonic() - started < 60
        assert (target / "corp_lib").is_dir() or any(target.glob("corp_lib*"))


def test_the_start_waits_for_young_files_at_most_a_moment(tmp_path: Path) -> None:
    packages = tmp_path / "packages"
    packages.mkdir()
    make_wheel(packages, "corp-app", "1.0")  # just written: young
    started = time.monotonic()
    with Server(packages) as srv:
        took = time.monotonic() - started
        assert srv.project_json("corp-app").json()["files"]
    assert took < 8  # the settling adds at most ~2 s to an ordinary start


def test_a_file_still_being_written_does_not_hold_up_the_start(tmp_path: Path) -> None:
    packages = tmp_path / "packages"
    packages.mkdir()
    make_wheel(packages, "corp-lib", "1.0")
    partial = packages / "corp_app-1.0-py3-none-any.whl"
    stop = threading.Event()

    def slow_copy() -> None:  # an scp on a slow link: a few bytes now and then
        with open(partial, "wb") as writer:
            while not stop.wait(0.1):
                writer.write(b"x" * 10)
                writer.flush()

    copier = threading.Thread(target=slow_copy, daemon=True)
    copier.start()
    try:
        time.sleep(0.3)
        started = time.monotonic()
        with Server(packages) as srv:
            assert time.monotonic() - started < 10
            res = srv.project_json("corp-app")
            assert res.status == 200 and res.json()["files"] == []  # claimed, not listed
            assert srv.get("/health").status == 200
            assert srv.project_json("corp-lib").json()["files"]
    finally:
        stop.set()
        copier.join()


@pytest.mark.parametrize("fallback", [True, False])
def test_names_are_claimed_before_they_are_listed(tmp_path: Path, fallback: bool) -> None:
    packages = tmp_path / "packages"
    packages.mkdir()
    with Server(packages, *([] if fallback else ["--disable-fallback"])) as srv:
        wheel = make_wheel(tmp_path, "corp-app", "1.0")
        with open(packages / wheel.name, "wb") as writer:  # being copied in, slowly
            writer.write(wheel.read_bytes()[:100])
            writer.flush()
            deadline = time.monotonic() + 5
            while srv.project_json("corp-app").status != 200:
                assert time.monotonic() < deadline, "never claimed"
                time.sleep(0.05)
            assert srv.project_json("corp-app").json()["files"] == []
            writer.write(wheel.read_bytes()[100:])
        srv.wait_listed("corp-app", wheel.name)


def test_health_waits_for_a_large_file_copied_in_just_before_the_start(tmp_path: Path) -> None:
    packages = tmp_path / "packages"
    packages.mkdir()
    big = packages / "big-1.0.tar.gz"
    with open(big, "wb") as fh:
        fh.truncate(2 * 1024**3)  # young, and hashed after serving begins (~2 s)
    with Server("--max-file-size", "4G", packages) as srv:
        listed = bool(srv.project_json("big").json()["files"])
        health = srv.get("/health").status
        assert health == (200 if listed else 503), (health, listed)
        deadline = time.monotonic() + 60
        while srv.get("/health").status != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert srv.project_json("big").json()["files"]  # healthy only once it is listed
