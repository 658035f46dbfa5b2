"""End to end: ``pkgserver status`` run as a command while pkgserver serves, then real pip, uv
and twine against it (PEP 792 project status markers).

The server runs with ``--disable-fallback`` on 127.0.0.1; the clients get an environment without
this machine's configuration (``server.client_env``) and install wheels only.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from builders import make_wheel
from server import Server, client_env, output, run_client, running_server

pytestmark = pytest.mark.e2e

PY = sys.executable
USER, PASSWORD = "publisher", "s3cret-Pa55word"
POLL = 0.05
TIMEOUT = 5.0  # the promise is "within a second"; a change unseen by then is a failure


def uv_bin() -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        pytest.fail("uv is not installed in the test environment: it is part of the test extras")


def twine_bin() -> str:
    found = shutil.which("twine", path=os.path.dirname(PY)) or shutil.which(
        "twine", path=os.path.join(sys.prefix, "bin")
    )
    if not found:
        pytest.fail("twine is not installed in the test environment: it is part of the test extras")
    return found


def admin(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    """``python -m pkgserver ARGS`` as the admin runs it beside the server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PKGSERVER_")}
    return subprocess.run(
        [PY, "-m", "pkgserver", *(os.fspath(a) for a in args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def settled(directory: Path) -> Path:
    old = time.time() - 120
    for p in directory.rglob("*"):
        if p.is_file():
            os.utime(p, (old, old))
    return directory


def files_of(directory: Path) -> dict[str, str]:
    """{relative path: sha256} of the distributions (the server's .pkgserver/ records aside)."""
    return {
        rel: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
        and not (rel := p.relative_to(directory).as_posix()).startswith(".pkgserver/")
    }


def wait_status(srv: Server, project: str, expected: dict[str, str] | None) -> float:
    """Poll the PEP 691 page until its "project-status" is ``expected``; the seconds it took."""
    started = time.monotonic()
    while True:
        res = srv.project_json(project)
        assert res.status == 200, res
        if res.json().get("project-status") == expected:
            return time.monotonic() - started
        if time.monotonic() - started > TIMEOUT:
            pytest.fail(f"{project} did not show {expected} within {TIMEOUT}s: {res.text}")
        time.sleep(POLL)


def run(
    cmd: Sequence[str | os.PathLike[str]],
    env: dict[str, str],
    ok: bool | None = True,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    return run_client(cmd, env, ok=ok, cwd=cwd, timeout=180)


class _NoVulnerabilities(http.server.BaseHTTPRequestHandler):
    """OSV's POST /v1/querybatch, answering "nothing known" for every query: what ``uv audit``
    asks besides the index, kept on 127.0.0.1."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        out = json.dumps({"results": [{} for _ in body.get("queries", [])]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def vulnerability_service() -> Iterator[str]:
    """A local stand-in for api.osv.dev; yields its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoVulnerabilities)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_status_set_while_serving_reaches_pip_uv_and_twine(tmp_path: Path) -> None:
    pkgdir = tmp_path / "packages"
    make_wheel(pkgdir, "kept-pkg", "1.0", summary="archived here")
    make_wheel(pkgdir, "bad-pkg", "1.0", summary="quarantined here")
    settled(pkgdir)
    htpasswd = tmp_path / "htpasswd"
    res = subprocess.run(
        [PY, "-m", "pkgserver", "passwd", htpasswd, USER],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    env = client_env(tmp_path)
    env.update(PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring", COLUMNS="200")
    uv = uv_bin()

    with running_server("-P", htpasswd, "--disable-fallback", pkgdir) as srv:
        srv.wait_listed("kept-pkg", "kept_pkg-1.0-py3-none-any.whl")
        srv.wait_listed("bad-pkg", "bad_pkg-1.0-py3-none-any.whl")

        # -- the admin marks both projects, as commands, while the server serves ----------
        res = admin("status", "kept-pkg", "archived", "--reason", "read only now", pkgdir)
        assert (res.returncode, res.stderr) == (0, "kept-pkg is now archived (read only now)\n")
        res = admin("status", "bad-pkg", "quarantined", "--reason", "malware", pkgdir)
        assert res.returncode == 0, res.stderr
        took = wait_status(srv, "bad-pkg", {"status": "quarantined", "reason": "malware"})
        took = max(
            took, wait_status(srv, "kept-pkg", {"status": "archived", "reason": "read only now"})
        )
        print(f"TIMING status picked up by the running server: {took:.3f}s")
        assert "project kept-pkg is now archived (read only now)" in srv.output
        assert srv.project_json("bad-pkg").json()["files"] == []
        assert srv.get("/packages/bad_pkg-1.0-py3-none-any.whl").status == 404
        assert srv.get("/packages/kept_pkg-1.0-py3-none-any.whl").status == 200
        index = srv.get("/simple/").text
        assert ">bad-pkg</a>" in index and ">kept-pkg</a>" in index

        # -- pip and uv: the quarantined project has nothing to install, the archived one
        # installs as before ------------------------------------------------------------------
        simple = srv.url + "simple/"
        venv = tmp_path / "venv"
        run([uv, "venv", "--python", PY, venv], env)
        python = venv / "bin" / "python"
        pip_cmd: list[str | os.PathLike[str]] = [PY, "-m", "pip", "--python", python, "install"]
        pip_cmd.append("--only-binary=:all:")
        uv_cmd: list[str | os.PathLike[str]] = [uv, "pip", "install", "--python", python]
        uv_cmd.append("--no-build")

        res = run([*pip_cmd, "--index-url", simple, "bad-pkg"], env, ok=False)
        assert "No matching distribution found for bad-pkg" in output(res), output(res)
        print(f"NOTE pip on a quarantined project:\n{output(res)}")
        res = run([*uv_cmd, "--index-url", simple, "bad-pkg"], env, ok=False)
        assert "bad-pkg" in output(res) and "no versions" in output(res).lower(), output(res)
        print(f"NOTE uv on a quarantined project:\n{output(res)}")

        res = run([*pip_cmd, "--index-url", simple, "kept-pkg"], env)
        print(f"NOTE pip on an archived project:\n{output(res)}")
        res = run([*uv_cmd, "--reinstall", "--index-url", simple, "kept-pkg"], env)
        print(f"NOTE uv on an archived project:\n{output(res)}")
        res = run(
            [python, "-I", "-c", "import importlib.metadata as m; print(m.version('kept-pkg'))"],
            env,
        )
        assert res.stdout.strip() == "1.0"

        # -- uv audit reports the status (uv pip install, lock and add say nothing of it) ----
        app = tmp_path / "app"
        app.mkdir()
        (app / "pyproject.toml").write_text(
            '[project]\nname = "app"\nversion = "0"\nrequires-python = ">=3.8"\n'
            'dependencies = ["kept-pkg"]\n'
        )
        with vulnerability_service() as osv:
            res = run(
                [uv, "audit", "--default-index", simple, "--service-url", osv],
                {**env, "UV_PYTHON": PY},
                cwd=app,
            )
        print(f"NOTE uv audit:\n{output(res)}")
        assert "kept-pkg is archived: read only now" in output(res)

        # -- twine: an upload to the archived project is refused, and nothing is written ----
        dist = make_wheel(tmp_path / "dist", "kept-pkg", "2.0")
        before = files_of(pkgdir)
        twine = [twine_bin(), "upload", "--repository-url", srv.url, "-u", USER, "-p", PASSWORD]
        twine += ["--disable-progress-bar", "--non-interactive"]
        res = run([*twine, dist], env, ok=False)
        said = output(res)
        assert "403" in said and "project kept-pkg is archived (read only now)" in said, said
        assert files_of(pkgdir) == before

        # -- active again: the same upload is taken -----------------------------------------
        res = admin("status", "kept-pkg", "active", pkgdir)
        assert (res.returncode, res.stderr) == (0, "kept-pkg is now active\n")
        wait_status(srv, "kept-pkg", None)
        run([*twine, dist], env)
        srv.wait_listed("kept-pkg", dist.name)
        assert (pkgdir / dist.name).read_bytes() == dist.read_bytes()
