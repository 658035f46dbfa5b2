"""Attacks on authentication, against a live server.

Malformed Authorization headers, unknown users, overlong and non-ASCII passwords; a burst of
wrong passwords from many connections while other clients keep reading; the password file
rewritten while authenticated requests are in flight.
"""

from __future__ import annotations

import base64
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from builders import make_wheel
from forms import upload_form

from security.harness import (
    PASSWORD,
    USER,
    Target,
    basic,
    htpasswd_line,
    raw_exchange,
    start_target,
    status_of,
)

pytestmark = pytest.mark.e2e


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


MALFORMED = {
    "empty": "",
    "scheme only": "Basic",
    "scheme and space": "Basic ",
    "padding only": "Basic ====",
    "not base64": "Basic !!!!****",
    "base64 with a bad tail": "Basic " + b64(f"{USER}:{PASSWORD}".encode()) + "A",
    "base64 of no colon": "Basic " + b64(USER.encode()),
    "base64 of a colon": "Basic " + b64(b":"),
    "empty user": "Basic " + b64(f":{PASSWORD}".encode()),
    "empty password": "Basic " + b64(f"{USER}:".encode()),
    "wrong password": basic(password="wrong"),
    "password of another user": basic(USER, "bobs-password"),
    "unknown user": basic("mallory", PASSWORD),
    "user with a NUL": "Basic " + b64(f"{USER}\0:{PASSWORD}".encode()),
    "password with a NUL": "Basic " + b64(f"{USER}:{PASSWORD}\0".encode()),
    "password prefix": basic(password=PASSWORD[:-1]),
    "password with a suffix": basic(password=PASSWORD + "x"),
    "password in another case": basic(password=PASSWORD.upper()),
    "user in another case": basic(USER.upper(), PASSWORD),
    "user with spaces": basic(f" {USER} ", PASSWORD),
    "non-ASCII password": basic(password="p\u00e4ssw\u00f6rd-\uff50\uff41\uff53\uff53"),
    "invalid UTF-8": "Basic " + b64(USER.encode() + b":\xff\xfe\xfd"),
    "UTF-16": "Basic " + b64(f"{USER}:{PASSWORD}".encode("utf-16")),
    "72-byte bcrypt prefix, then more": basic(password="p" * 72 + "tail"),
    "100 KB password": basic(password="x" * 100_000),
    "100 KB user": basic("u" * 100_000, PASSWORD),
    "Bearer token": "Bearer " + PASSWORD,
    "Digest": f'Digest username="{USER}", realm="pkgserver", response="0"',
    "two credentials": basic() + ", " + basic(),
    "scheme without credentials, then junk": "Basic\tjunk junk",
}


@pytest.fixture(scope="module")
def new_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_wheel(tmp_path_factory.mktemp("dist"), "demo", "1.1")


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_or_wrong_credentials(unchanged: Target, new_wheel: Path, case: str) -> None:
    body, ctype = upload_form(new_wheel)
    res = unchanged.post(body, ctype, auth=MALFORMED[case])
    assert res.status in (400, 401, 403), f"{case}: {res.status} {res.text[:200]}"
    if res.status == 401:
        assert res.headers.get("www-authenticate", "").startswith("Basic")


def test_a_header_too_large_for_the_server(unchanged: Target) -> None:
    request = (
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic "
        + b"A" * 400_000
        + b"\r\nContent-Length: 0\r\n\r\n"
    )
    answer = raw_exchange(unchanged.srv.port, request)
    assert status_of(answer) in (400, 431), answer[:200]


def test_raw_header_bytes_that_are_not_text(unchanged: Target) -> None:
    request = (
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic \xff\xfe\x00\x01\r\n"
        b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 0\r\n\r\n"
    )
    answer = raw_exchange(unchanged.srv.port, request)
    assert status_of(answer) in (400, 401, 403), answer[:200]


def test_a_brute_force_burst_does_not_starve_readers(tmp_path: Path) -> None:
    """64 connections guess passwords for 6 s against a real-cost bcrypt entry (12 rounds)
    while readers list and download. Guesses get 403 (or 503 once the password checks already
    use every core); every read succeeds; the right password still works afterwards."""
    target = start_target(tmp_path)
    try:
        (target.base / "htpasswd").write_text(htpasswd_line(USER, PASSWORD, rounds=12))
        time.sleep(1.2)  # the server re-reads the file when its stamp changes (at most every 1 s)
        wheel = make_wheel(tmp_path / "dist", "demo", "1.1")
        body, ctype = upload_form(wheel)
        stop = threading.Event()
        guesses: dict[int, int] = {}
        reads: list[tuple[int, float]] = []
        lock = threading.Lock()

        def guess(n: int) -> None:
            while not stop.is_set():
                res = target.post(body, ctype, auth=basic(password=f"guess-{n}-{random.random()}"))
                with lock:
                    guesses[res.status] = guesses.get(res.status, 0) + 1

        def read() -> None:
            paths = ["/simple/demo/", "/simple/", "/health"]
            while not stop.is_set():
                started = time.monotonic()
                res = target.srv.get(random.choice(paths))
                with lock:
                    reads.append((res.status, time.monotonic() - started))

        with ThreadPoolExecutor(max_workers=68) as pool:
            futures = [pool.submit(guess, n) for n in range(64)]
            futures += [pool.submit(read) for _ in range(4)]
            time.sleep(6)
            stop.set()
            for f in futures:
                f.result()
        assert guesses, "no guess was answered"
        assert set(guesses) <= {403, 503}, guesses
        assert reads and all(status == 200 for status, _ in reads), reads[:20]
        slowest = max(seconds for _, seconds in reads)
        print(f"\nguesses {guesses}; {len(reads)} reads, slowest {slowest:.3f}s")
        res = target.post(body, ctype)  # the right password, after the burst
        assert res.status == 200, res.text
    finally:
        target.srv.stop()


def test_the_password_file_rewritten_while_requests_are_in_flight(tmp_path: Path) -> None:
    """Authenticated reads (-a list,download,update) while the file flips between two
    passwords, rewritten in place (as an editor does) and replaced by rename (as tools do):
    every answer is 200 or 401/403, never an error, and once the edits stop the last password
    is the one that works."""
    target = start_target(tmp_path, "-a", "update,list,download", wait=False)
    deadline = time.monotonic() + 10
    while (
        target.srv.request("GET", "/simple/demo/", headers={"Authorization": basic()}).status != 200
    ):
        assert time.monotonic() < deadline, target.srv.output
        time.sleep(0.05)
    htpasswd = target.base / "htpasswd"
    versions = [htpasswd_line(USER, "first-pw"), htpasswd_line(USER, "second-pw")]
    stop = threading.Event()
    answers: dict[int, int] = {}
    lock = threading.Lock()

    def edit() -> None:
        n = 0
        while not stop.is_set():
            text = versions[n % 2]
            if n % 3 == 0:
                tmp = htpasswd.with_suffix(".new")
                tmp.write_text(text)
                os.replace(tmp, htpasswd)
            else:
                with open(htpasswd, "r+") as fh:  # in place: truncate, then write in two pieces
                    fh.truncate(0)
                    fh.write(text[:10])
                    fh.flush()
                    fh.write(text[10:])
            n += 1
            time.sleep(0.01)

    def read() -> None:
        while not stop.is_set():
            pw = random.choice(["first-pw", "second-pw", PASSWORD])
            res = target.srv.request(
                "GET", "/simple/demo/", headers={"Authorization": basic(password=pw)}
            )
            with lock:
                answers[res.status] = answers.get(res.status, 0) + 1

    try:
        with ThreadPoolExecutor(max_workers=9) as pool:
            futures = [pool.submit(edit)] + [pool.submit(read) for _ in range(8)]
            time.sleep(5)
            stop.set()
            for f in futures:
                f.result()
        assert set(answers) <= {200, 401, 403}, answers
        assert answers.get(200), answers
        htpasswd.write_text(versions[1])
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            new = target.srv.request(
                "GET", "/simple/demo/", headers={"Authorization": basic(password="second-pw")}
            )
            old = target.srv.request(
                "GET", "/simple/demo/", headers={"Authorization": basic(password="first-pw")}
            )
            if new.status == 200 and old.status == 403:
                break
            time.sleep(0.1)
        assert (new.status, old.status) == (200, 403)
        print(f"\nanswers during the edits: {answers}")
    finally:
        target.srv.stop()
