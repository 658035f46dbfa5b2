"""Run pkgserver as a real process for end-to-end tests, and isolate the clients that talk to it.

``running_server(*args)`` starts ``python -m pkgserver run -p 0 -i 127.0.0.1 *args``, waits for
its "serving ... on http://127.0.0.1:PORT/" log line and yields a :class:`Server`; on exit it
stops the process with SIGTERM and fails if the server logged a traceback or did not stop.

``client_env(tmp_path)`` is the environment for pip and uv subprocesses: a fresh HOME and caches
under ``tmp_path`` and none of this machine's pip/uv configuration (indexes, find-links), so a
client can only ever see the servers a test started.
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "Response",
    "Server",
    "ServerError",
    "client_env",
    "running_server",
    "server_env",
    "serving",
    "without_root_powers",
]

STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
SERVING = re.compile(
    r"pkgserver \S+ serving .* on (http://127\.0\.0\.1:(\d+)/)(?:\"})?\s*$"
)  # or a JSON line


class ServerError(AssertionError):
    """The server did not start, did not stop, or logged a traceback."""


class Response(NamedTuple):
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


_CACHE_ROOT = tempfile.mkdtemp(prefix="pkgserver-test-cache-")
atexit.register(shutil.rmtree, _CACHE_ROOT, True)


def server_env(extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The environment of a pkgserver process a test starts (extra: None removes a key)."""
    # PKGSERVER_* variables of the machine running the tests must not change the server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PKGSERVER_")}
    env["PYTHONUNBUFFERED"] = "1"
    # Each test server gets a cache of its own, never the user's ~/.cache/pkgserver.
    env["PKGSERVER_CACHE_DIR"] = os.path.join(_CACHE_ROOT, uuid.uuid4().hex)
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class Server:
    """One pkgserver process. Use as a context manager, or call ``start()`` and ``stop()``."""

    def __init__(
        self,
        *args: str | os.PathLike[str],
        env: Mapping[str, str | None] | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
        argv: Sequence[str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        """``args`` follow ``pkgserver run -p 0 -i 127.0.0.1``; or ``argv`` is the whole
        command line after ``pkgserver`` (it must listen on 127.0.0.1 and a free port).
        ``prefix`` goes before the interpreter (e.g. ``without_root_powers()``)."""
        self.args = [os.fspath(a) for a in args]
        self.argv = list(argv) if argv is not None else None
        self.cwd = cwd
        self.prefix = list(prefix)
        self.env = server_env(env)
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()  # the serving line appeared, or the output ended
        self._drain: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def command(self) -> list[str]:
        if self.argv is not None:
            return [*self.prefix, sys.executable, "-m", "pkgserver", *self.argv]
        return [
            *self.prefix,
            *(sys.executable, "-m", "pkgserver", "run", "-p", "0", "-i", "127.0.0.1"),
            *self.args,
        ]

    def start(self) -> Server:
        # Log lines go to stderr; stdout is folded in so nothing the server prints is lost and
        # no pipe is left undrained.
        self.proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
        )
        self._drain = threading.Thread(
            target=self._read_output, name="pkgserver-output", daemon=True
        )
        self._drain.start()
        if not self._ready.wait(self.startup_timeout) or not self.port:
            exited = self.proc.poll() is not None
            self._kill()
            what = (
                f"exited with status {self.proc.returncode} before serving"
                if exited
                else f"did not start within {self.startup_timeout:.0f}s; killed"
            )
            raise ServerError(f"pkgserver {what}: {self.command}\n{self.output}")
        return self

    def _read_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            for raw in iter(self.proc.stdout.readline, b""):
                line = raw.decode("utf-8", "replace")
                with self._lock:
                    self._lines.append(line)
                if not self.port:
                    m = SERVING.search(line)
                    if m:
                        self.url, self.port = m.group(1), int(m.group(2))
                        self._ready.set()
        finally:
            self._ready.set()  # the process ended (or closed its output): stop waiting

    def _kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self._drain is not None:
            self._drain.join(5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL; raises ServerError if it had to kill or saw a traceback."""
        if self.proc is None:
            return
        problems = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                problems.append(f"did not stop within {STOP_TIMEOUT:.0f}s of SIGTERM; killed")
                self.proc.kill()
                self.proc.wait()
        else:
            problems.append(f"had exited before the test ended (status {self.proc.returncode})")
        self._close_pipe()
        if self.proc.returncode not in (0, None) and not problems:
            problems.append(f"exited with status {self.proc.returncode} after SIGTERM")
        if "Traceback (most recent call last)" in self.output:
            problems.append("logged a traceback")
        if problems:
            raise ServerError(f"pkgserver {'; '.join(problems)}:\n{self.output}")

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.stop()
            return
        # The test already failed: stop quietly, and attach what the server said to its error.
        try:
            self.stop()
        except ServerError as err:
            if hasattr(exc, "add_note"):
                exc.add_note(str(err))
        else:
            if hasattr(exc, "add_note"):
                exc.add_note(f"pkgserver output:\n{self.output}")

    # -- what it said -------------------------------------------------------------------------
    @property
    def output(self) -> str:
        """Everything the server wrote so far (stderr, with stdout folded in)."""
        with self._lock:
            return "".join(self._lines)

    # -- talking to it ------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Response:
        """One HTTP request; redirects are returned, not followed."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            res = conn.getresponse()
            data = res.read()
            return Response(res.status, {k.lower(): v for k, v in res.getheaders()}, data)
        finally:
            conn.close()

    def get(self, path: str, accept: str | None = None) -> Response:
        return self.request("GET", path, headers={"Accept": accept} if accept else None)

    def project_json(self, project: str) -> Response:
        return self.get(f"/simple/{project}/", accept="application/vnd.pypi.simple.v1+json")

    def wait_listed(self, project: str, *filenames: str, timeout: float = 10.0) -> float:
        """Poll ``/simple/<project>/`` until it lists ``filenames`` (or any file if none are
        given); returns the seconds it took. Freshly written files are listed only once they
        have settled, so tests wait here instead of sleeping."""
        started = time.monotonic()
        while True:
            res = self.project_json(project)
            if res.status == 200:
                listed = {f["filename"] for f in res.json()["files"]}
                if listed and set(filenames) <= listed:
                    return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(
                    f"{project} did not list {sorted(filenames)} within {timeout}s; last answer "
                    f"{res.status}: {res.text[:500]}\n{self.output}"
                )
            time.sleep(0.05)


def without_root_powers() -> list[str]:
    """A command prefix that runs a process without root's power over file permissions (when
    the tests run as root; nothing otherwise), so that it meets unreadable files as a server
    user would. It stays uid 0, so it still reaches the checkout and the interpreter."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        import pytest

        pytest.skip("running as root without setpriv: cannot drop the capabilities")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]


@contextmanager
def running_server(
    *args: str | os.PathLike[str],
    env: Mapping[str, str | None] | None = None,
    startup_timeout: float = STARTUP_TIMEOUT,
) -> Iterator[Server]:
    """``with running_server("--disable-fallback", pkgdir) as srv: ... srv.url``."""
    with Server(*args, env=env, startup_timeout=startup_timeout) as server:
        yield server


# Variables that point pip or uv at other indexes, caches or configuration. The whole PIP_ and
# UV_ families go (PIP_FIND_LINKS, PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, UV_INDEX_URL,
# UV_EXTRA_INDEX_URL, UV_INDEX, UV_DEFAULT_INDEX, UV_FIND_LINKS, ...), and so do the proxies.
_DROP_PREFIXES = ("PIP_", "UV_", "PKGSERVER_")
_DROP = {
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONUSERBASE",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
    "XDG_CONFIG_DIRS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "REQUESTS_CA_BUNDLE",
    "SSL_CERT_FILE",
}


def client_env(tmp_path: str | os.PathLike[str]) -> dict[str, str]:
    """Environment for pip/uv subprocesses: fresh HOME and caches under ``tmp_path``, no
    configuration files, no inherited index settings, no network but what the test names."""
    base = Path(tmp_path) / "client-home"
    home = base / "home"
    for d in (home, base / "xdg-config", base / "xdg-cache", base / "uv-cache"):
        d.mkdir(parents=True, exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith(_DROP_PREFIXES) and k.upper() not in _DROP
    }
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(base / "xdg-config"),
        XDG_CACHE_HOME=str(base / "xdg-cache"),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONNOUSERSITE="1",
        # pip: no configuration file at all (os.devnull is pip's documented "none" value).
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INPUT="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_COLOR="1",
        PIP_PROGRESS_BAR="off",
        PIP_RETRIES="0",  # a failing server should fail the test now, not after back-offs
        PIP_DEFAULT_TIMEOUT="30",
        # uv: no uv.toml / pyproject settings, its own cache, never download a Python.
        UV_NO_CONFIG="1",
        UV_CACHE_DIR=str(base / "uv-cache"),
        UV_PYTHON_DOWNLOADS="never",
        UV_PYTHON_PREFERENCE="only-system",
        UV_NO_PROGRESS="1",
        UV_HTTP_TIMEOUT="30",
        UV_HTTP_RETRIES="0",
        NO_COLOR="1",
    )
    return env


def run_client(
    cmd: Sequence[str | os.PathLike[str]],
    env: dict[str, str],
    *,
    cwd: Path | None = None,
    ok: bool | None = True,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """Run a client; ``ok`` True/False asserts success/failure (None: no check)."""
    args = [os.fspath(c) for c in cmd]
    res = subprocess.run(
        args,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or env["HOME"],  # never the checkout: its *.egg-info would look installed
        check=False,
    )
    if ok is not None and (res.returncode == 0) != ok:
        raise AssertionError(
            f"{' '.join(args)}\nexited {res.returncode}, expected "
            f"{'success' if ok else 'failure'}\n--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}"
        )
    return res


def output(res: subprocess.CompletedProcess[str]) -> str:
    return res.stdout + res.stderr


@contextmanager
def serving(app: Any) -> Iterator[int]:
    """A WSGI app behind pkgserver's waitress on 127.0.0.1, in this process (what a client
    really sees of it): its port."""
    from pkgserver.server import make_server

    server = make_server(app, host="127.0.0.1", port=0, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield server.effective_port
    finally:
        server.close()
