"""Attacks on the upload endpoint of a live server: filenames, form fields, archives, bodies.

Every case posts to a running pkgserver and asserts the 4xx it gets; the ``unchanged`` fixture
then asserts that the directory is byte for byte as it was and that the server still serves
every seeded file with its listed hash.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import socket
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from builders import make_sdist, make_wheel, metadata_text
from forms import multipart, upload_form

from security.harness import SEEDED, Target, basic, raw_exchange, status_of

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid new release (demo 1.1) that the attacks dress up."""
    return make_wheel(tmp_path_factory.mktemp("dist"), "demo", "1.1")


def _form_named(wheel: Path, filename: str) -> tuple[bytes, str]:
    data = wheel.read_bytes()
    fields = [
        (":action", "file_upload"),
        ("name", "demo"),
        ("version", "1.1"),
        ("filetype", "bdist_wheel"),
        ("sha256_digest", hashlib.sha256(data).hexdigest()),
    ]
    return multipart(fields, [("content", filename, data)])


HOSTILE_FILENAMES = [
    "../demo-1.1-py3-none-any.whl",
    "../../demo-1.1-py3-none-any.whl",
    "/tmp/demo-1.1-py3-none-any.whl",
    "sub/demo-1.1-py3-none-any.whl",
    "sub\\demo-1.1-py3-none-any.whl",
    "..\\demo-1.1-py3-none-any.whl",
    "C:\\demo-1.1-py3-none-any.whl",
    "..%2fdemo-1.1-py3-none-any.whl",
    "%2e%2e%2fdemo-1.1-py3-none-any.whl",
    "..%252fdemo-1.1-py3-none-any.whl",
    "demo-1.1-py3-none-any.whl\x00.txt",
    "demo-1.1-py3-none-any.whl%00",
    "demo\x1b[31m-1.1-py3-none-any.whl",
    "demo-1.1-py3-none-any.whl\x7f",
    "demo\t-1.1-py3-none-any.whl",
    "d\u0435mo-1.1-py3-none-any.whl",  # Cyrillic e
    "\uff44emo-1.1-py3-none-any.whl",  # fullwidth d
    "demo-1.1-py3-none-any.wh\u0131",  # dotless i
    "demo-1.1-py3-none-any.whl\u200b",  # zero-width space
    "\u202edemo-1.1-py3-none-any.whl",  # right-to-left override
    "de\u0301mo-1.1-py3-none-any.whl",  # combining accent (NFD)
    "d\u00e9mo-1.1-py3-none-any.whl",  # NFC
    " demo-1.1-py3-none-any.whl",
    "demo-1.1-py3-none-any.whl ",
    "demo-1.1-py3-none-any.whl.",
    ".demo-1.1-py3-none-any.whl",
    ".pkgserver-demo-1.1-py3-none-any.whl",
    ".pkgserver",
    ".",
    "..",
    "",
    "demo-1.1-py3-none-any.whl/",
    "demo-1.1-py3-none-any.exe",
    "demo-1.1-py3-none-any.whl.exe",
    "demo-1.1.tar.gz.whl",
    "demo-1.1-py3-none-any",
    "CON",
    "nul.whl",
    "a" * 300 + "-1.1-py3-none-any.whl",
    "demo-" + "1" * 5000 + "-py3-none-any.whl",
    "demo-1.1-py3-none-any.whl;rm -rf ~",
    "demo-1.1-py3-none-any.whl\r\nX-Injected: 1",
    'demo-1.1-py3-none-any.whl"; name="x',
    "demo-1.1-py3-none-any.whl\ud800",  # lone surrogate
    "other-2.0-py3-none-any.whl",  # an existing file of another project, different bytes
    "OTHER-2.0-py3-none-any.whl",  # its case variant
]


@pytest.mark.parametrize("filename", HOSTILE_FILENAMES, ids=range(len(HOSTILE_FILENAMES)))
def test_hostile_filenames(unchanged: Target, wheel: Path, filename: str) -> None:
    try:
        body, ctype = _form_named(wheel, filename)
    except UnicodeEncodeError:
        body, ctype = _form_named(
            wheel, filename.encode("utf-8", "surrogatepass").decode("latin-1")
        )
    res = unchanged.post(body, ctype)
    assert res.status in (400, 409), f"{filename!r}: {res.status} {res.text[:300]}"


def test_an_rfc5987_filename_cannot_smuggle_a_path(unchanged: Target, wheel: Path) -> None:
    body, ctype = _form_named(wheel, "demo-1.1-py3-none-any.whl")
    body = body.replace(
        b'filename="demo-1.1-py3-none-any.whl"',
        b"filename*=UTF-8''..%2F..%2Fdemo-1.1-py3-none-any.whl",
    )
    res = unchanged.post(body, ctype)
    assert res.status == 400, res.text


def test_an_existing_file_is_not_replaced_by_other_bytes(unchanged: Target, tmp_path: Path) -> None:
    impostor = make_wheel(tmp_path, "demo", "1.0", summary="impostor")
    body, ctype = upload_form(impostor)
    res = unchanged.post(body, ctype)
    assert res.status == 409, res.text


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": "other"},
        {"name": "demo-evil"},
        {"version": "1.0"},
        {"version": "9.9"},
        {"filetype": "sdist"},
        {"filetype": "bdist_wininst"},
        {"md5_digest": "0" * 32},
        {"sha256_digest": "0" * 64},
        {"blake2_256_digest": "0" * 64},
        {"sha256_digest": "not-hex"},
        {"sha256_digest": "a" * 10_000},
        {":action": "file_upload\x00"},
        {":action": "remove_pkg"},
    ],
    ids=lambda o: ",".join(f"{k}={v[:12]!r}" for k, v in o.items()),
)
def test_lying_form_fields(unchanged: Target, wheel: Path, overrides: dict[str, Any]) -> None:
    body, ctype = upload_form(wheel, **overrides)
    res = unchanged.post(body, ctype)
    assert res.status in (400, 403, 404), f"{overrides}: {res.status} {res.text[:300]}"


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _metadata(name: str = "demo", version: str = "1.1") -> bytes:
    return metadata_text(name, version).encode()


WHEEL_FILE = b"Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def _bomb_wheel() -> bytes:
    """METADATA that inflates to 256 MB from about 256 KB (deflate's best ratio, ~1000:1)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("demo-1.1.dist-info/WHEEL", WHEEL_FILE)
        with zf.open("demo-1.1.dist-info/METADATA", "w", force_zip64=True) as member:
            block = b"\0" * (1 << 20)
            for _ in range(256):
                member.write(block)
    return buf.getvalue()


def _many_members_wheel() -> bytes:
    members = {f"demo/m{i}.py": b"" for i in range(100_001)}
    members["demo-1.1.dist-info/METADATA"] = _metadata()
    members["demo-1.1.dist-info/WHEEL"] = WHEEL_FILE
    return _zip(members, zipfile.ZIP_STORED)


def _gzip_bomb_sdist() -> bytes:
    """A .tar.gz whose tar stream is 300 MB of one member before any PKG-INFO."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9) as gz:
        info = tarfile.TarInfo("demo-1.1/zeros.bin")
        info.size = 300 * 1024 * 1024
        gz.write(info.tobuf(format=tarfile.USTAR_FORMAT))
        block = b"\0" * (1 << 20)
        for _ in range(300):
            gz.write(block)
    return raw.getvalue()


def _huge_pax_sdist() -> bytes:
    """A pax header of 64 MB (a few KB gzipped), then PKG-INFO."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("demo-1.1/PKG-INFO")
        info.pax_headers = {"comment": "x" * (64 * 1024 * 1024)}
        data = _metadata()
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return raw.getvalue()


ARCHIVES = {
    "random bytes as a wheel": (
        "demo-1.1-py3-none-any.whl",
        b"\x89PNG\r\n" + bytes(range(256)) * 20,
    ),
    "an empty file": ("demo-1.1-py3-none-any.whl", b""),
    "a zip without METADATA": ("demo-1.1-py3-none-any.whl", _zip({"demo/x.py": b"x"})),
    "METADATA of another project": (
        "demo-1.1-py3-none-any.whl",
        _zip(
            {
                "other-1.1.dist-info/METADATA": _metadata("other"),
                "other-1.1.dist-info/WHEEL": WHEEL_FILE,
            }
        ),
    ),
    "METADATA of another version": (
        "demo-1.1-py3-none-any.whl",
        _zip(
            {
                "demo-1.1.dist-info/METADATA": _metadata("demo", "6.6"),
                "demo-1.1.dist-info/WHEEL": WHEEL_FILE,
            }
        ),
    ),
    "two dist-info folders": (
        "demo-1.1-py3-none-any.whl",
        _zip(
            {
                "demo-1.1.dist-info/METADATA": _metadata(),
                "demo_x-1.1.dist-info/METADATA": _metadata(),
                "demo-1.1.dist-info/WHEEL": WHEEL_FILE,
            }
        ),
    ),
    "a tar.gz named .whl": ("demo-1.1-py3-none-any.whl", b""),  # filled in below
    "a zip named .tar.gz": (
        "demo-1.1.tar.gz",
        _zip({"demo-1.1/PKG-INFO": _metadata()}),
    ),
    "a truncated wheel": ("demo-1.1-py3-none-any.whl", b""),  # filled in below
    "a 256 MB METADATA bomb": ("demo-1.1-py3-none-any.whl", b""),
    "100,001 members": ("demo-1.1-py3-none-any.whl", b""),
    "a 300 MB tar stream": ("demo-1.1.tar.gz", b""),
    "a 64 MB pax header": ("demo-1.1.tar.gz", b""),
    "METADATA of 17 MB": (
        "demo-1.1-py3-none-any.whl",
        b"",
    ),
}


def _archive(case: str, tmp_path: Path) -> tuple[str, bytes]:
    filename, data = ARCHIVES[case]
    if case == "a tar.gz named .whl":
        data = make_sdist(tmp_path, "demo", "1.1").read_bytes()
    elif case == "a truncated wheel":
        full = make_wheel(tmp_path, "demo", "1.1").read_bytes()
        data = full[: len(full) // 2]
    elif case == "a 256 MB METADATA bomb":
        data = _bomb_wheel()
    elif case == "100,001 members":
        data = _many_members_wheel()
    elif case == "a 300 MB tar stream":
        data = _gzip_bomb_sdist()
    elif case == "a 64 MB pax header":
        data = _huge_pax_sdist()
    elif case == "METADATA of 17 MB":
        desc = os.urandom(9 * 1024 * 1024).hex()[: 17 * 1024 * 1024].encode()
        data = _zip(
            {
                "demo-1.1.dist-info/METADATA": _metadata() + b"\n" + desc,
                "demo-1.1.dist-info/WHEEL": WHEEL_FILE,
            },
            zipfile.ZIP_STORED,
        )
    return filename, data


@pytest.mark.parametrize("case", list(ARCHIVES))
def test_archives_that_lie_or_explode(
    unchanged: Target, tmp_path: Path, case: str, request: pytest.FixtureRequest
) -> None:
    filename, data = _archive(case, tmp_path)
    kind = "bdist_wheel" if filename.endswith(".whl") else "sdist"
    fields = [
        (":action", "file_upload"),
        ("name", "demo"),
        ("version", "1.1"),
        ("filetype", kind),
        ("sha256_digest", hashlib.sha256(data).hexdigest()),
    ]
    body, ctype = multipart(fields, [("content", filename, data)])
    started = time.monotonic()
    res = unchanged.post(body, ctype)
    took = time.monotonic() - started
    assert res.status == 400, f"{case}: {res.status} {res.text[:300]}"
    request.node.user_properties.append(("seconds", round(took, 2)))


MALFORMED_BODIES = {
    "no boundary parameter": (b"--XyZ\r\n\r\n", "multipart/form-data"),
    "empty body": (b"", "multipart/form-data; boundary=XyZ"),
    "only the closing boundary": (b"--XyZ--\r\n", "multipart/form-data; boundary=XyZ"),
    "truncated inside a part": (
        b'--XyZ\r\nContent-Disposition: form-data; name=":action"\r\n\r\nfile_up',
        "multipart/form-data; boundary=XyZ",
    ),
    "truncated inside the headers": (
        b"--XyZ\r\nContent-Disposition: form-da",
        "multipart/form-data; boundary=XyZ",
    ),
    "a part without headers": (
        b"--XyZ\r\n\r\nvalue\r\n--XyZ--\r\n",
        "multipart/form-data; boundary=XyZ",
    ),
    "a part without a name": (
        b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nvalue\r\n--XyZ--\r\n",
        "multipart/form-data; boundary=XyZ",
    ),
    "another boundary": (
        b'--Other\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--Other--\r\n',
        "multipart/form-data; boundary=XyZ",
    ),
    "10,000 headers in a part": (
        b"--XyZ\r\n" + b"X-A: b\r\n" * 10_000 + b"\r\nv\r\n--XyZ--\r\n",
        "multipart/form-data; boundary=XyZ",
    ),
    "a 1 MB header line": (
        b'--XyZ\r\nContent-Disposition: form-data; name="'
        + b"a" * (1 << 20)
        + b'"\r\n\r\nv\r\n--XyZ--\r\n',
        "multipart/form-data; boundary=XyZ",
    ),
    "100,000 tiny fields": (
        b"".join(
            b'--XyZ\r\nContent-Disposition: form-data; name="f"\r\n\r\nv\r\n'
            for _ in range(100_000)
        )
        + b"--XyZ--\r\n",
        "multipart/form-data; boundary=XyZ",
    ),
    "a boundary of 5,000 characters": (
        b"--" + b"B" * 5000 + b"--\r\n",
        "multipart/form-data; boundary=" + "B" * 5000,
    ),
    "urlencoded instead of multipart": (
        b":action=file_upload&name=demo",
        "application/x-www-form-urlencoded",
    ),
    "JSON instead of multipart": (b'{":action": "file_upload"}', "application/json"),
    "text/plain (what a browser form may send cross-site)": (b":action=file_upload", "text/plain"),
}


@pytest.mark.parametrize("case", list(MALFORMED_BODIES))
def test_malformed_bodies(unchanged: Target, case: str) -> None:
    body, ctype = MALFORMED_BODIES[case]
    res = unchanged.post(body, ctype)
    assert res.status in (400, 413, 415), f"{case}: {res.status} {res.text[:300]}"


def test_a_body_over_the_limit_is_refused_before_it_is_sent(unchanged: Target) -> None:
    """Content-Length says 5 GB (the server takes 32 MB): the answer comes without a byte of
    the body."""
    head = (
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {basic()}\r\n"
        "Content-Type: multipart/form-data; boundary=XyZ\r\n"
        f"Content-Length: {5 * 1024**3}\r\n\r\n"
    ).encode()
    answer = raw_exchange(unchanged.srv.port, head, timeout=10)
    assert status_of(answer) == 413, answer[:300]


def test_a_chunked_body_over_the_limit_is_cut_off(unchanged: Target) -> None:
    """No Content-Length to check beforehand: the server stops reading at its limit."""
    sock = socket.create_connection(("127.0.0.1", unchanged.srv.port), timeout=20)
    try:
        sock.sendall(
            (
                "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: {basic()}\r\n"
                "Content-Type: multipart/form-data; boundary=XyZ\r\n"
                "Transfer-Encoding: chunked\r\n\r\n"
            ).encode()
        )
        chunk = b"x" * 65536
        sent = 0
        closed = False
        try:
            while sent < 96 * 1024 * 1024:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            closed = True  # the server closed the connection after its limit
        answer = b""
        try:
            while chunk_in := sock.recv(65536):
                answer += chunk_in
            closed = True
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            pass
    finally:
        sock.close()
    # Either an answer refusing the body, or the connection closed on us: never silence.
    assert answer or closed, "the server neither answered nor closed the connection"
    if answer:
        assert status_of(answer) in (400, 413), answer[:300]


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {
            "Origin": "https://evil.example",
            "Sec-Fetch-Site": "cross-site",
            "Sec-Fetch-Mode": "no-cors",
        },
        {"Referer": "https://evil.example/form.html", "Origin": "https://evil.example"},
    ],
    ids=["origin", "null-origin", "sec-fetch-site", "both", "referer"],
)
def test_cross_site_browser_posts(unchanged: Target, wheel: Path, headers: dict[str, str]) -> None:
    body, ctype = upload_form(wheel)
    res = unchanged.post(body, ctype, headers=headers)
    assert res.status == 403, res.text


@pytest.mark.parametrize(
    "auth", [None, basic(password="wrong"), basic("bob", "bobs-password")[:-4]]
)
def test_uploads_without_valid_credentials(
    unchanged: Target, wheel: Path, auth: str | None
) -> None:
    body, ctype = upload_form(wheel)
    res = unchanged.post(body, ctype, auth=auth)
    assert res.status in (401, 403), res.text


def test_remove_pkg_of_a_seeded_project_needs_credentials(unchanged: Target) -> None:
    body, ctype = multipart([(":action", "remove_pkg"), ("name", "demo"), ("version", "1.0")], [])
    res = unchanged.post(body, ctype, auth=None)
    assert res.status == 401, res.text


def test_a_client_that_lies_about_its_length_and_vanishes(unchanged: Target, wheel: Path) -> None:
    """The whole form, but Content-Length promises 100 KB more; then the client is gone."""
    body, ctype = upload_form(wheel)
    head = (
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {basic()}\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body) + 100_000}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", unchanged.srv.port), timeout=10) as sock:
        sock.sendall(head + body)
    assert unchanged.srv.get("/health").status == 200


def test_the_seeded_projects_are_all_still_there(target: Target) -> None:
    """After the whole module: the index lists exactly what was seeded, nothing more."""
    for project, count in SEEDED.items():
        assert len(target.srv.project_json(project).json()["files"]) == count
    assert target.srv.get("/simple/").text.count("<a ") == len(SEEDED)
