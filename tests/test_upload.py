"""The upload endpoint through webtest: every validation rule, auth rule and failure path.

Each refusal asserts the status, the message, and that the package directory is exactly as it
was (no final file, no temp file, old files intact).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import webtest
from builders import make_sdist, make_wheel
from conftest import scan
from forms import multipart, upload_form
from webtest import TestApp, TestResponse

from pkgserver.app import create_app
from pkgserver.catalog import Catalog
from pkgserver.config import Settings
from pkgserver.distfile import file_key
from pkgserver.publish import TEMP_PREFIX, FileOps
from pkgserver.upload import Uploads


def snapshot_dir(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    return tmp_path / "dist"


def make_app(
    root: Path, htpasswd: Path | None, ops: FileOps | None = None, **settings_kw: Any
) -> tuple[TestApp, Catalog]:
    settings = Settings(
        roots=(str(root),),
        password_file=str(htpasswd) if htpasswd else None,
        **settings_kw,
    )
    catalog = scan(root)
    uploads = Uploads(
        settings.roots,
        catalog,
        overwrite=settings.overwrite,
        max_size=settings.max_upload_size,
        ops=ops,
    )
    app = webtest.TestApp(create_app(settings, catalog, uploads=uploads))
    app.authorization = ("Basic", ("alice", "s3cret"))
    return app, catalog


@pytest.fixture
def app(root: Path, htpasswd: Path) -> TestApp:
    return make_app(root, htpasswd)[0]


def raw_post(
    app: TestApp,
    path: str,
    body: bytes,
    ctype: str,
    status: int | str = "*",
    headers: dict[str, str] | None = None,
    extra_environ: dict[str, object] | None = None,
) -> TestResponse:
    """POST these exact bytes (webtest's post() would re-encode a multipart body)."""
    environ = {"CONTENT_TYPE": ctype, **(extra_environ or {})}
    return app.request(
        path,
        method="POST",
        body=body,
        headers=headers or {},
        environ=environ,
        status=status,
        expect_errors=True,
    )


def post(
    app: TestApp,
    body_ctype: tuple[bytes, str],
    path: str = "/",
    status: int | str = "*",
    **headers: str,
) -> TestResponse:
    body, ctype = body_ctype
    return raw_post(app, path, body, ctype, status, headers)


# -- the happy paths -------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/legacy/", "/legacy"])
def test_upload_publishes_and_lists_at_once(
    app: TestApp, root: Path, dist: Path, path: str
) -> None:
    whl = make_wheel(dist, "demo-pkg", "1.0", summary="Demo", requires_python=">=3.8")
    res = post(app, upload_form(whl), path)
    assert res.status_int == 200
    assert (root / whl.name).read_bytes() == whl.read_bytes()
    page = app.get("/simple/demo-pkg/")
    assert f"#sha256={hashlib.sha256(whl.read_bytes()).hexdigest()}" in page.text
    assert "data-core-metadata" in page.text
    assert app.get(f"/packages/{whl.name}.metadata").body.startswith(b"Metadata-Version")
    assert not [p for p in os.listdir(root) if p.startswith(".")]


def test_sdist_upload_with_long_description_and_many_classifiers(
    app: TestApp, root: Path, dist: Path
) -> None:
    sd = make_sdist(dist, "demo-pkg", "1.0", metadata_version="2.2")
    extra = [("description", "x" * 150_000)] + [
        ("classifiers", f"Topic :: Thing {i}") for i in range(500)
    ]
    assert post(app, upload_form(sd, extra=extra)).status_int == 200
    assert (root / sd.name).exists()


def test_reupload_of_identical_bytes_is_accepted_and_changes_nothing(
    app: TestApp, root: Path, dist: Path
) -> None:
    whl = make_wheel(dist, "demo-pkg", "1.0")
    post(app, upload_form(whl), status=200)
    before = os.stat(root / whl.name)
    res = post(app, upload_form(whl), status=200)
    assert "identical" in res.text
    after = os.stat(root / whl.name)
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_different_bytes_under_an_existing_name_get_409(
    app: TestApp, root: Path, dist: Path, tmp_path: Path
) -> None:
    whl = make_wheel(dist, "demo-pkg", "1.0")
    post(app, upload_form(whl), status=200)
    original = whl.read_bytes()
    other = make_wheel(tmp_path / "other", "demo-pkg", "1.0", body="CHANGED = True\n")
    res = post(app, upload_form(other), status=409)
    assert "File already exists" in res.text
    assert "File already exists" in res.status
    assert (root / whl.name).read_bytes() == original


@pytest.mark.parametrize(
    "variant",
    [
        "Demo_Pkg-1.0-py3-none-any.whl",
        "demo.pkg-1.0-py3-none-any.whl",
        "DEMO_PKG-1.0.0-py3-none-any.whl",
    ],
)
def test_case_and_separator_variants_count_as_the_same_file(
    app: TestApp, root: Path, dist: Path, tmp_path: Path, variant: str
) -> None:
    whl = make_wheel(dist, "demo-pkg", "1.0")
    post(app, upload_form(whl), status=200)
    other = make_wheel(tmp_path / "v", "demo-pkg", "1.0", body="OTHER = 1\n", filename=variant)
    res = post(app, upload_form(other, name="demo-pkg", version="1.0"), status=409)
    assert "File already exists" in res.text
    assert sorted(os.listdir(root)) == [whl.name]


def test_overwrite_replaces_the_file_atomically(
    root: Path, htpasswd: Path, dist: Path, tmp_path: Path
) -> None:
    app, catalog = make_app(root, htpasswd, overwrite=True)
    whl = make_wheel(dist, "demo-pkg", "1.0")
    post(app, upload_form(whl), status=200)
    inode = os.stat(root / whl.name).st_ino
    other = make_wheel(tmp_path / "o", "demo-pkg", "1.0", body="NEW = 1\n")
    post(app, upload_form(other), status=200)
    assert (root / whl.name).read_bytes() == other.read_bytes()
    assert os.stat(root / whl.name).st_ino != inode  # renamed over, not rewritten in place
    listed = catalog.snapshot.file(whl.name)
    assert listed is not None and listed.sha256 == hashlib.sha256(other.read_bytes()).hexdigest()


def test_uploads_go_into_the_projects_existing_subfolder(
    root: Path, htpasswd: Path, dist: Path
) -> None:
    make_wheel(root / "demo-pkg", "demo-pkg", "0.9")
    app, _ = make_app(root, htpasswd)
    whl = make_wheel(dist, "demo-pkg", "1.0")
    post(app, upload_form(whl), status=200)
    assert (root / "demo-pkg" / whl.name).exists()
    assert not (root / whl.name).exists()


def test_signature_and_attestations_are_kept_beside_the_file(
    app: TestApp, root: Path, dist: Path
) -> None:
    whl = make_wheel(dist, "demo-pkg", "1.0")
    data = whl.read_bytes()
    fields = [
        (":action", "file_upload"),
        ("name", "demo-pkg"),
        ("version", "1.0"),
        ("filetype", "bdist_wheel"),
        ("attestations", '[{"version": 1}]'),
    ]
    sig = b"-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n"
    post(
        app,
        multipart(fields, [("content", whl.name, data), ("gpg_signature", whl.name + ".asc", sig)]),
        status=200,
    )
    assert (root / (whl.name + ".asc")).read_bytes() == sig
    assert (root / (whl.name + ".attestations.json")).read_text() == '[{"version": 1}]'
    assert app.get(f"/packages/{whl.name}.asc").body == sig


def test_submit_and_verify_change_nothing(app: TestApp, root: Path) -> None:
    for action in ("submit", "verify"):
        post(app, multipart([(":action", action), ("name", "x"), ("version", "1")], []), status=200)
    assert os.listdir(root) == []


def test_doc_upload_is_gone(app: TestApp) -> None:
    res = post(
        app,
        multipart([(":action", "doc_upload"), ("name", "x")], [("content", "x.zip", b"PK")]),
        status=410,
    )
    assert "documentation" in res.text


# -- validation: each failure is a 400 with a message, and nothing is written -----------------------
def _bad_zip() -> bytes:
    return b"this is not a zip file at all"


def _wheel_without(member: str, dist: Path) -> bytes:
    whl = make_wheel(dist / "src", "demo-pkg", "1.0")
    out = io.BytesIO()
    with zipfile.ZipFile(whl) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if not info.filename.endswith(member):
                dst.writestr(info, src.read(info))
    return out.getvalue()


BAD_FILENAMES = [
    ("../demo_pkg-1.0-py3-none-any.whl", "path separators"),
    ("sub/demo_pkg-1.0-py3-none-any.whl", "path separators"),
    ("..\\demo_pkg-1.0-py3-none-any.whl", "path separators"),
    (".demo_pkg-1.0-py3-none-any.whl", "start with a dot"),
    ("demo_pkg-1.0-py3-none-any\x00.whl", "control characters"),
    ("demo_pkg-1.0-py3-none-any\t.whl", "control characters"),
    ("demo_pkg-1.0-py3-none-any.whl\r\nX: y", "filename"),  # breaks the part header itself
    ("demo_pkg-1.0-py3-none-any.wh\u0142", "ASCII"),
    ("d\u0435mo_pkg-1.0-py3-none-any.whl", "ASCII"),  # Cyrillic "e"
    ("demo_pkg-1.0-py3-none-any" + "x" * 300 + ".whl", "too long"),
    ("demo_pkg.whl", "invalid distribution filename"),
    ("demo_pkg-1.0.exe", "invalid distribution filename"),
]


@pytest.mark.parametrize(("filename", "message"), BAD_FILENAMES)
def test_hostile_filenames_are_refused(
    app: TestApp, root: Path, dist: Path, filename: str, message: str
) -> None:
    whl = make_wheel(dist, "demo-pkg", "1.0")
    body = multipart(
        [(":action", "file_upload"), ("name", "demo-pkg"), ("version", "1.0")],
        [("content", filename, whl.read_bytes())],
    )
    res = post(app, body, status=400)
    assert message in res.text
    assert os.listdir(root) == []
    assert not list(root.parent.glob("*.whl"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"filetype": "sdist"}, "does not match filetype"),
        ({"filetype": "bdist_wininst"}, "unsupported filetype"),
        ({"name": "other-pkg"}, "name 'other-pkg' does not match"),
        ({"version": "2.0"}, "version '2.0' does not match"),
        ({"md5_digest": "0" * 32}, "md5_digest does not match"),
        ({"sha256_digest": "0" * 64}, "sha256_digest does not match"),
        ({"blake2_256_digest": "f" * 64}, "blake2_256_digest does not match"),
        ({"sha256_digest": "xyz"}, "not a hex digest"),
        ({":action": "frobnicate"}, "unsupported :action"),
        ({":action": ""}, "missing :action"),
    ],
)
def test_lying_form_fields_are_refused(
    app: TestApp, root: Path, dist: Path, overrides: dict[str, Any], message: str
) -> None:
    whl = make_wheel(dist, "demo-pkg", "1.0")
    res = post(app, upload_form(whl, **overrides), status=400)
    assert message in res.text
    assert message in res.status or len(res.status) > 20
    assert os.listdir(root) == []


def test_digests_in_upper_case_are_accepted(app: TestApp, root: Path, dist: Path) -> None:
    whl = make_wheel(dist, "demo-pkg", "1.0")
    data = whl.read_bytes()
    post(app, upload_form(whl, sha256_digest=hashlib.sha256(data).hexdigest().upper()), status=200)


def test_names_compare_after_normalization(app: TestApp, root: Path, dist: Path) -> None:
    # uv sends demo_pkg, twine demo-pkg; both are the project of demo_pkg-1.0-...whl.
    whl = make_wheel(dist, "demo-pkg", "1.0.0")
    post(app, upload_form(whl, name="Demo_Pkg", version="1.0"), status=200)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("empty", "empty"),
        ("notzip", "not a valid wheel"),
        ("nometadata", "not a valid wheel"),
        ("nowheelfile", "no .dist-info/WHEEL"),
        ("othername", "is another project"),
        ("otherversion", "metadata version"),
        ("sdist-as-wheel", "not a valid wheel"),
    ],
)
def test_archives_that_are_not_what_their_name_says_are_refused(
    app: TestApp, root: Path, dist: Path, content: str, message: str
) -> None:
    name = "demo_pkg-1.0-py3-none-any.whl"
    makers: dict[str, Callable[[], bytes]] = {
        "empty": lambda: b"",
        "notzip": _bad_zip,
        "nometadata": lambda: _wheel_without("METADATA", dist),
        "nowheelfile": lambda: _wheel_without("WHEEL", dist),
        "othername": lambda: make_wheel(dist / "o", "other-pkg", "1.0", filename=name).read_bytes(),
        "otherversion": lambda: make_wheel(
            dist / "v", "demo-pkg", "9.9", filename=name
        ).read_bytes(),
        "sdist-as-wheel": lambda: make_sdist(dist / "s", "demo-pkg", "1.0").read_bytes(),
    }
    data = makers[content]()
    body = multipart(
        [
            (":action", "file_upload"),
            ("name", "demo-pkg"),
            ("version", "1.0"),
            ("filetype", "bdist_wheel"),
        ],
        [("content", name, data)],
    )
    res = post(app, body, status=400)
    assert message in res.text
    assert os.listdir(root) == []


def test_sdist_whose_pkg_info_disagrees_is_refused(app: TestApp, root: Path, dist: Path) -> None:
    sd = make_sdist(
        dist, "demo-pkg", "1.0", pkg_info="Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n"
    )
    res = post(app, upload_form(sd), status=400)
    assert "metadata name" in res.text
    assert os.listdir(root) == []


@pytest.mark.parametrize(
    ("body", "ctype", "status"),
    [
        (b"", "multipart/form-data; boundary=xyz", 400),
        (
            b'--xyz\r\nContent-Disposition: form-data; name=":action"\r\n\r\nfile_upload',
            "multipart/form-data; boundary=xyz",
            400,
        ),
        (b"garbage", "multipart/form-data; boundary=xyz", 400),
        (b"a=b", "application/x-www-form-urlencoded", 400),
        (
            b"--xyz\r\nContent-Disposition: form-data\r\n\r\nx\r\n--xyz--\r\n",
            "multipart/form-data; boundary=xyz",
            400,
        ),
        (
            b'--xyz\r\nContent-Disposition: form-data; name="content"; filename="a-1.0.tar.gz"\r\n\r\nabc',
            "multipart/form-data; boundary=xyz",
            400,
        ),
    ],
)
def test_malformed_and_truncated_multipart_bodies_get_400(
    app: TestApp, root: Path, body: bytes, ctype: str, status: int
) -> None:
    res = raw_post(app, "/", body, ctype, status)
    assert res.text.strip()
    assert os.listdir(root) == []


def test_missing_content_part(app: TestApp, root: Path) -> None:
    res = post(
        app,
        multipart([(":action", "file_upload"), ("name", "x"), ("version", "1")], []),
        status=400,
    )
    assert "content" in res.text


def test_oversized_upload_gets_413_and_leaves_nothing(
    root: Path, htpasswd: Path, dist: Path
) -> None:
    app, _ = make_app(root, htpasswd, max_upload_size=10_000)
    whl = make_wheel(dist, "demo-pkg", "1.0", body="x = '" + os.urandom(20_000).hex() + "'\n")
    res = post(app, upload_form(whl), status=413)
    assert "limit" in res.text
    assert os.listdir(root) == []


def test_oversized_content_length_is_refused_before_reading(root: Path, htpasswd: Path) -> None:
    app, _ = make_app(root, htpasswd, max_upload_size=10_000)

    class Unreadable(io.RawIOBase):
        def read(self, n: int = -1) -> bytes:
            raise AssertionError("the body must not be read")

    environ = webtest.TestRequest.blank("/", method="POST").environ
    environ.update(
        {
            "CONTENT_LENGTH": str(10**12),
            "CONTENT_TYPE": "multipart/form-data; boundary=x",
            "wsgi.input": Unreadable(),
            "HTTP_AUTHORIZATION": "Basic "
            + __import__("base64").b64encode(b"alice:s3cret").decode(),
        }
    )
    seen: list[str] = []
    body = b"".join(app.app(environ, lambda status, headers, exc_info=None: seen.append(status)))
    assert seen[0].startswith("413 ")
    assert b"limit" in body
    assert os.listdir(root) == []


def test_client_that_disconnects_mid_body_leaves_nothing(
    app: TestApp, root: Path, dist: Path
) -> None:
    whl = make_wheel(dist, "demo-pkg", "1.0", body="x = '" + os.urandom(200_000).hex() + "'\n")
    body, ctype = upload_form(whl)
    # The body stops half-way although Content-Length promised all of it.
    env = {"CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body[: len(body) // 2])}
    res = raw_post(app, "/", body[: len(body) // 2], ctype, 400, extra_environ=env)
    assert "ended" in res.text
    assert os.listdir(root) == []


# -- auth -------------------------------------------------------------------------------------------
def test_uploads_without_password_file_are_refused_with_a_hint(root: Path, dist: Path) -> None:
    app, _ = make_app(root, None)
    whl = make_wheel(dist, "demo-pkg", "1.0")
    res = post(app, upload_form(whl), status=403)
    assert "-P HTPASSWD" in res.text
    assert os.listdir(root) == []


def test_open_server_accepts_anonymous_uploads(root: Path, dist: Path) -> None:
    app, _ = make_app(root, None, authenticate=frozenset())
    app.authorization = None
    whl = make_wheel(dist, "demo-pkg", "1.0")
    post(app, upload_form(whl), status=200)


def test_upload_auth_401_403(app: TestApp, root: Path, dist: Path) -> None:
    whl = make_wheel(dist, "demo-pkg", "1.0")
    app.authorization = None
    res = post(app, upload_form(whl), status=401)
    assert res.headers["WWW-Authenticate"] == 'Basic realm="pkgserver"'
    app.authorization = ("Basic", ("alice", "wrong"))
    post(app, upload_form(whl), status=403)
    app.authorization = ("Basic", ("mallory", "s3cret"))
    post(app, upload_form(whl), status=403)
    assert os.listdir(root) == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://localhost:8080"},  # another port is another origin
    ],
)
def test_cross_site_browser_posts_are_refused(
    app: TestApp, root: Path, dist: Path, headers: dict[str, str]
) -> None:
    whl = make_wheel(dist, "demo-pkg", "1.0")
    res = post(app, upload_form(whl), status=403, **headers)
    assert "cross-site" in res.text
    assert os.listdir(root) == []


def test_same_origin_post_is_allowed(app: TestApp, dist: Path) -> None:
    whl = make_wheel(dist, "demo-pkg", "1.0")
    post(
        app,
        upload_form(whl),
        status=200,
        Origin="http://localhost:80",
        **{"Sec-Fetch-Site": "same-origin"},
    )


# -- remove_pkg -------------------------------------------------------------------------------------
def test_remove_pkg_removes_exactly_that_project_and_version(root: Path, htpasswd: Path) -> None:
    keep = [
        make_wheel(root, "foo", "1.1"),
        make_wheel(root, "foo-bar", "1.0"),
        make_wheel(root, "foo.x", "1.0"),
        make_wheel(root, "foox", "1.0"),
    ]
    gone = [make_wheel(root, "foo", "1.0"), make_sdist(root, "foo", "1.0")]
    (root / (gone[0].name + ".asc")).write_text("sig")
    app, catalog = make_app(root, htpasswd)
    res = post(
        app,
        multipart([(":action", "remove_pkg"), ("name", "FOO"), ("version", "1.0.0")], []),
        status=200,
    )
    assert "removed 2 files" in res.text
    assert sorted(os.listdir(root)) == sorted(p.name for p in keep)
    assert catalog.snapshot.project("foo") is not None
    assert [f.version for f in catalog.snapshot.project("foo").files] == ["1.1"]  # type: ignore[union-attr]
    post(
        app,
        multipart([(":action", "remove_pkg"), ("name", "foo"), ("version", "1.0")], []),
        status=404,
    )


def test_remove_pkg_clears_the_yank_as_pkgserver_remove_does(root: Path, htpasswd: Path) -> None:
    # One rule for both ways of removing a release: a version with no file left loses its yank,
    # so that uploaded again it starts unyanked (the HTTP remove_pkg kept it).
    from pkgserver.records import load_yanks, set_yank

    make_wheel(root, "foo", "1.0")
    make_sdist(root, "foo", "1.0")
    make_wheel(root, "foo", "2.0")
    set_yank([str(root)], "foo", "1.0", "broken")
    set_yank([str(root)], "foo", "2.0", "also broken")
    app, _ = make_app(root, htpasswd)
    form = multipart([(":action", "remove_pkg"), ("name", "foo"), ("version", "1.0")], [])
    post(app, form, status=200)
    assert load_yanks([str(root)]) == {"foo": {"2.0": "also broken"}}


def test_an_upload_over_the_listing_limit_is_refused(
    root: Path, htpasswd: Path, dist: Path
) -> None:
    whl = make_wheel(dist, "demo-pkg", "1.0", description=os.urandom(20_000).hex())
    settings = Settings(roots=(str(root),), password_file=str(htpasswd), max_file_size=10_000)
    app = webtest.TestApp(create_app(settings, scan(root)))
    app.authorization = ("Basic", ("alice", "s3cret"))
    res = post(app, upload_form(whl), status=413)
    assert "larger than the upload limit (10000 bytes)" in res.text
    assert os.listdir(root) == []


def test_remove_pkg_removes_the_versions_files_the_index_does_not_list(
    root: Path, htpasswd: Path
) -> None:
    # A 1.0 file the index skips (over --max-file-size) is still a file of 1.0: removed too,
    # so that 1.0 does not come back, unyanked, once the limit is raised.
    from pkgserver.records import load_yanks, set_yank

    big = make_wheel(root, "foo", "1.0")
    make_sdist(root, "foo", "1.0")
    make_wheel(root, "foo", "2.0")
    set_yank([str(root)], "foo", "1.0", "broken")
    catalog = scan(root, max_file_size=big.stat().st_size - 1)
    assert big.name not in {f.filename for f in catalog.snapshot.files.values()}
    settings = Settings(roots=(str(root),), password_file=str(htpasswd))
    uploads = Uploads(settings.roots, catalog)
    app = webtest.TestApp(create_app(settings, catalog, uploads=uploads))
    app.authorization = ("Basic", ("alice", "s3cret"))
    form = multipart([(":action", "remove_pkg"), ("name", "foo"), ("version", "1.0")], [])
    assert "removed 2 files" in post(app, form, status=200).text
    assert sorted(p for p in os.listdir(root) if not p.startswith(".")) == [
        "foo-2.0-py3-none-any.whl"
    ]
    assert load_yanks([str(root)]) == {}


def test_remove_pkg_and_the_command_leave_the_same_tree(tmp_path: Path, htpasswd: Path) -> None:
    import subprocess
    import sys

    from pkgserver.records import set_yank

    trees = []
    for way in ("http", "command"):
        root = tmp_path / way
        root.mkdir()
        make_wheel(root, "foo", "1.0")
        (root / "foo-1.0-py3-none-any.whl.asc").write_text("sig")
        make_wheel(root, "foo", "2.0")
        set_yank([str(root)], "foo", "1.0", "broken")
        if way == "http":
            app, _ = make_app(root, htpasswd)
            form = multipart([(":action", "remove_pkg"), ("name", "foo"), ("version", "1.0")], [])
            post(app, form, status=200)
        else:
            cmd = [sys.executable, "-m", "pkgserver", "remove", "foo", "1.0", str(root)]
            subprocess.run(cmd, check=True, capture_output=True)
        trees.append(
            {
                str(p.relative_to(root)): p.read_bytes()
                for p in sorted(root.rglob("*"))
                if p.is_file() and p.name not in ("lock", "uploads.jsonl", "hosted-projects")
            }
        )
    assert trees[0] == trees[1]
    assert "foo-1.0-py3-none-any.whl.asc" not in trees[0]


def test_a_second_sdist_format_of_a_release_is_the_same_file(
    app: TestApp, dist: Path, root: Path
) -> None:
    # The rule `pkgserver check` reports duplicates by is the one uploads refuse by.
    from pkgserver.manage import check

    post(app, upload_form(make_sdist(dist, "demo-pkg", "1.0")), status=200)
    zipped = make_sdist(dist / "z", "demo-pkg", "1.0", fmt="zip")
    res = post(app, upload_form(zipped), status=409)
    assert "File already exists" in res.text and "one sdist per release" in res.text
    assert sorted(p for p in os.listdir(root) if not p.startswith(".")) == ["demo_pkg-1.0.tar.gz"]
    import io as _io

    (root / zipped.name).write_bytes(zipped.read_bytes())  # copied in by hand instead
    out = _io.StringIO()
    assert check([str(root)], None, progress=False, out=out) == 1
    assert "the same distribution as" in out.getvalue()


def test_overwrite_with_another_sdist_format_replaces_the_old_one(
    root: Path, htpasswd: Path, dist: Path
) -> None:
    app, catalog = make_app(root, htpasswd, overwrite=True)
    post(app, upload_form(make_sdist(dist, "demo-pkg", "1.0")), status=200)
    post(app, upload_form(make_sdist(dist / "z", "demo-pkg", "1.0", fmt="zip")), status=200)
    assert sorted(p for p in os.listdir(root) if not p.startswith(".")) == ["demo_pkg-1.0.zip"]
    assert [f.filename for f in catalog.snapshot.project("demo-pkg").files] == ["demo_pkg-1.0.zip"]  # type: ignore[union-attr]


def test_remove_pkg_needs_the_update_permission(root: Path, htpasswd: Path) -> None:
    make_wheel(root, "foo", "1.0")
    app, _ = make_app(root, htpasswd)
    app.authorization = ("Basic", ("alice", "nope"))
    post(
        app,
        multipart([(":action", "remove_pkg"), ("name", "foo"), ("version", "1.0")], []),
        status=403,
    )
    assert len(os.listdir(root)) == 1


# -- faults: a write that fails part-way leaves the directory as it was, and a retry succeeds ------
class FailingOps(FileOps):
    def __init__(self, step: str, exc: OSError) -> None:
        super().__init__()
        self.step, self.exc, self.armed = step, exc, True

    def _maybe_fail(self, step: str) -> None:
        if self.armed and step == self.step:
            self.armed = False
            raise self.exc

    def open_temp(self, directory: str) -> tuple[int, str]:
        self._maybe_fail("open_temp")
        return super().open_temp(directory)

    def write(self, fd: int, data: bytes) -> None:
        self._maybe_fail("write")
        super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self._maybe_fail("fsync")
        super().fsync(fd)

    def link(self, src: str, dst: str) -> None:
        self._maybe_fail("link")
        super().link(src, dst)

    def fsync_dir(self, directory: str) -> None:
        self._maybe_fail("fsync_dir")
        super().fsync_dir(directory)


@pytest.mark.parametrize("step", ["open_temp", "write", "fsync", "link", "fsync_dir"])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_storage_failure_at_each_step_leaves_nothing_and_a_retry_succeeds(
    root: Path, htpasswd: Path, dist: Path, step: str, code: int
) -> None:
    ops = FailingOps(step, OSError(code, os.strerror(code)))
    app, catalog = make_app(root, htpasswd, ops=ops)
    whl = make_wheel(dist, "demo-pkg", "1.0")
    res = post(app, upload_form(whl), status=507)
    assert ("out of disk space" in res.text) == (code == errno.ENOSPC)
    assert os.listdir(root) == [], os.listdir(root)
    assert catalog.snapshot.project("demo-pkg") is None
    post(app, upload_form(whl), status=200)
    assert (root / whl.name).read_bytes() == whl.read_bytes()


def test_failed_overwrite_keeps_the_old_file(
    root: Path, htpasswd: Path, dist: Path, tmp_path: Path
) -> None:
    whl = make_wheel(root, "demo-pkg", "1.0")
    original = whl.read_bytes()

    class NoReplace(FileOps):
        def replace(self, src: str, dst: str) -> None:
            raise OSError(errno.EIO, "I/O error")

    app, _ = make_app(root, htpasswd, ops=NoReplace(), overwrite=True)
    other = make_wheel(tmp_path / "o", "demo-pkg", "1.0", body="NEW = 1\n")
    post(app, upload_form(other), status=507)
    assert os.listdir(root) == [whl.name]
    assert whl.read_bytes() == original


# -- concurrency ------------------------------------------------------------------------------------
def test_concurrent_uploads_of_one_new_name_have_exactly_one_winner(
    root: Path, htpasswd: Path, tmp_path: Path
) -> None:
    app, catalog = make_app(root, htpasswd)
    wsgi = app.app
    contenders = [
        make_wheel(tmp_path / f"c{i}", "demo-pkg", "1.0", body=f"WHO = {i}\n") for i in range(8)
    ]
    forms = [upload_form(w) for w in contenders]
    statuses: list[int] = [0] * len(forms)
    barrier = threading.Barrier(len(forms))

    def go(i: int) -> None:
        client = webtest.TestApp(wsgi)
        client.authorization = ("Basic", ("alice", "s3cret"))
        barrier.wait()
        statuses[i] = post(client, forms[i]).status_int

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(forms))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] + [409] * (len(forms) - 1)
    winner = contenders[statuses.index(200)]
    stored = (root / winner.name).read_bytes()
    assert stored == winner.read_bytes()
    listed = catalog.snapshot.file(winner.name)
    assert listed is not None and listed.sha256 == hashlib.sha256(stored).hexdigest()
    assert os.listdir(root) == [winner.name]


def test_leftover_temp_files_are_swept(root: Path) -> None:
    from pkgserver.publish import sweep_temp_files

    (root / (TEMP_PREFIX + "abc")).write_bytes(b"half")
    (root / ".rsync-tmp").write_bytes(b"someone else's")
    (root / "sub").mkdir()
    (root / "sub" / (TEMP_PREFIX + "def")).write_bytes(b"half")
    assert sweep_temp_files([str(root)]) == 2
    assert sorted(os.listdir(root)) == [".rsync-tmp", "sub"]


# -- odd targets, signatures, names and versions --------------------------------------------
@pytest.mark.parametrize("kind", ["fifo", "devzero"])
def test_something_odd_at_the_target_name_gets_409_without_hanging(
    root: Path, htpasswd: Path, tmp_path: Path, kind: str
) -> None:
    app, _ = make_app(root, htpasswd)
    whl = make_wheel(tmp_path / "dist", "demo", "7.0")
    target = root / whl.name
    if kind == "fifo":
        os.mkfifo(target)
    else:
        os.symlink("/dev/zero", target)
    done: list[int] = []
    threading.Thread(
        target=lambda: done.append(post(app, upload_form(whl)).status_int), daemon=True
    ).start()
    deadline = time.monotonic() + 5
    while not done and time.monotonic() < deadline:
        time.sleep(0.02)
    assert done == [409]
    other = make_wheel(tmp_path / "dist", "other", "1.0")
    assert post(app, upload_form(other)).status_int == 200  # the publish lock is free


def test_a_refused_upload_never_touches_another_files_signature(
    root: Path, htpasswd: Path, tmp_path: Path
) -> None:
    app, _ = make_app(root, htpasswd)
    whl = make_wheel(tmp_path / "dist", "demo", "6.0")
    (root / whl.name).write_bytes(b"")  # unlisted: being copied in, say
    (root / (whl.name + ".asc")).write_text("ORIGINAL SIGNATURE")
    fields = [
        (":action", "file_upload"),
        ("name", "demo"),
        ("version", "6.0"),
        ("attestations", '[{"version": 1}]'),
    ]
    body = multipart(
        fields,
        [
            ("content", whl.name, whl.read_bytes()),
            ("gpg_signature", whl.name + ".asc", b"ATTACKER"),
        ],
    )
    assert post(app, body).status_int == 409
    assert (root / (whl.name + ".asc")).read_text() == "ORIGINAL SIGNATURE"
    assert not (root / (whl.name + ".attestations.json")).exists()
    assert not [n for n in os.listdir(root) if n.startswith(".")]


def test_overwrite_without_a_signature_drops_the_old_one(
    root: Path, htpasswd: Path, tmp_path: Path
) -> None:
    app, _ = make_app(root, htpasswd, overwrite=True)
    whl = make_wheel(tmp_path / "a", "demo", "1.0")
    fields = [(":action", "file_upload"), ("name", "demo"), ("version", "1.0")]
    post(
        app,
        multipart(
            fields, [("content", whl.name, whl.read_bytes()), ("gpg_signature", "x.asc", b"SIG")]
        ),
        status=200,
    )
    assert (root / (whl.name + ".asc")).exists()
    new = make_wheel(tmp_path / "b", "demo", "1.0", body="NEW = 1\n")
    post(app, upload_form(new), status=200)
    assert not (root / (whl.name + ".asc")).exists()
    app.get(f"/packages/{whl.name}.asc", status=404)


def test_eggs_for_different_pythons_are_different_files() -> None:
    assert file_key("eggy-1.0-py3.8.egg") != file_key("eggy-1.0-py3.9.egg")
    assert file_key("eggy-1.0-py3.8.egg") == file_key("Eggy-1.0.0-py3.8.egg")


@pytest.mark.parametrize("field", ["version", "remove"])
def test_absurdly_long_version_numbers_get_400_not_500(
    root: Path, htpasswd: Path, tmp_path: Path, field: str
) -> None:
    app, _ = make_app(root, htpasswd)
    big = "1" * 5000
    if field == "version":
        whl = make_wheel(tmp_path / "dist", "demo", "1.0")
        res = post(app, upload_form(whl, version=big))
        assert res.status_int == 400
    else:
        res = post(
            app, multipart([(":action", "remove_pkg"), ("name", "demo"), ("version", big)], [])
        )
        assert res.status_int == 404


def test_a_boundary_containing_xml_is_still_an_upload(
    root: Path, htpasswd: Path, tmp_path: Path
) -> None:
    app, _ = make_app(root, htpasswd)
    whl = make_wheel(tmp_path / "dist", "demo", "1.0")
    body, _ = upload_form(whl)
    boundary = body.split(b"\r\n", 1)[0][2:]
    body = body.replace(boundary, b"xmlXMLxml")
    res = post(app, (body, "multipart/form-data; boundary=xmlXMLxml"))
    assert res.status_int == 200, res.text


@pytest.mark.parametrize(
    "filename", ["demo-2.0-py3-none-<b>#%2e%2e.whl", "demo-1.0-py3-none-any.WHL"]
)
def test_filenames_no_build_tool_makes_are_refused(
    root: Path, htpasswd: Path, tmp_path: Path, filename: str
) -> None:
    app, _ = make_app(root, htpasswd)
    whl = make_wheel(tmp_path / "dist", "demo", "1.0")
    body = multipart(
        [(":action", "file_upload"), ("name", "demo"), ("version", "1.0")],
        [("content", filename, whl.read_bytes())],
    )
    assert post(app, body).status_int == 400
    assert os.listdir(root) == []
