"""pypiserver's command lines and URLs, as a migrating user brings them (README: "a pypiserver
command line works after changing the command name").

Parsing is checked in-process; what a user sees (headers, pages, logs, exit status) against a
live server started the way pypiserver is started.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from builders import make_sdist, make_wheel
from forms import upload_form
from passlib.hash import bcrypt
from server import Server, client_env, run_client, server_env, without_root_powers

from pkgserver import cli
from pkgserver.validate import settings_from

JSON_V1 = "application/vnd.pypi.simple.v1+json"

# pypiserver 2.4.2's own welcome.html (its wording, as its users have copied and edited it).
PYPISERVER_WELCOME = """<html><head><title>Welcome to pypiserver!</title></head><body>
<h1>Welcome to pypiserver!</h1>
<p>This is a PyPI compatible package index serving {{NUMPKGS}} packages.</p>
<p> To use this server with <code>pip</code>, run the following command:
<blockquote><pre>
pip install --index-url {{URL}}simple/ PACKAGE [PACKAGE2...]
</pre></blockquote></p>
<p>The complete list of all packages can be found <a href="{{PACKAGES}}">here</a>
or via the <a href="{{SIMPLE}}">simple</a> index.</p>
<p>This instance is running version {{VERSION}} of the pypiserver software.</p>
</body></html>
"""


def parse(argv: list[str]):  # type: ignore[no-untyped-def]
    ns = cli.parse_args(argv)
    return ns, (settings_from(ns) if ns.command == "run" else None)


def pkgserver(*args: str | os.PathLike[str], cwd: Path | None = None, timeout: float = 30):  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "pkgserver", *(os.fspath(a) for a in args)],
        capture_output=True,
        text=True,
        env=server_env(),
        cwd=cwd,
        timeout=timeout,
    )


@pytest.fixture
def packages(tmp_path: Path) -> Path:
    d = tmp_path / "packages"
    d.mkdir()
    make_wheel(d, "centodeps", "0.0.0")
    make_sdist(d, "centodeps", "0.0.0", metadata_version="2.2")
    return d


# -- options before the subcommand, pypiserver 1.x forms -------------------------------------------
@pytest.mark.parametrize(
    ("argv", "check"),
    [
        (["-v", "run", "{d}"], lambda s: s.verbosity == 1),
        (["-vv", "run", "-p", "9000", "{d}"], lambda s: s.verbosity == 2 and s.port == 9000),
        (["--hash-algo", "md5", "run", "{d}"], lambda s: s.hash_algo == "md5"),
        (["--hash-algo=sha512", "run", "{d}"], lambda s: s.hash_algo == "sha512"),
        (["--log-file", "{d}/log", "run", "{d}"], lambda s: s.log_file.endswith("/log")),
        (["--log-stream", "NONE", "run", "{d}"], lambda s: s.log_stream is None),
        (["-v", "--log-frmt", "%(message)s", "run", "{d}"], lambda s: s.log_frmt == "%(message)s"),
        (["{d}", "-p", "8081"], lambda s: s.port == 8081),  # 1.x: no subcommand
        (["-vp", "8082", "run", "{d}"], lambda s: s.port == 8082 and s.verbosity == 1),
        (["-vp8083", "run", "{d}"], lambda s: s.port == 8083),
        (["--log-file", "run", "run", "{d}"], lambda s: s.log_file == "run"),
        (["-P", ".", "-a", ".", "{d}"], lambda s: s.authenticate == frozenset()),
    ],
)
def test_options_before_the_subcommand_and_the_old_forms(
    packages: Path, argv: list[str], check: Callable[[Any], bool]
) -> None:
    _, settings = parse([a.replace("{d}", str(packages)) for a in argv])
    assert check(settings), settings


def test_dash_U_means_update(packages: Path) -> None:
    ns, _ = parse([str(packages), "-U", "-x", "--blacklist-file", os.devnull])
    assert ns.command == "update" and ns.execute and ns.roots == [str(packages)]
    # pypiserver 1.x took -U with a run command line: run's options are accepted, ignored.
    ns, _ = parse(["-i", "0.0.0.0", "-p", "8080", "-P", ".", "-a", ".", "-U", str(packages)])
    assert ns.command == "update" and ns.roots == [str(packages)]


@pytest.mark.parametrize(
    "argv",
    [
        ["--server", "gunicorn"],
        ["--backend", "cached-dir"],
        ["--log-req-frmt", "%(bottle.request)s"],
        ["--log-res-frmt", "%(status)s"],
        ["--log-err-frmt", "%(body)s"],
    ],
)
def test_pypiservers_other_options_are_accepted_with_a_notice(
    packages: Path, argv: list[str]
) -> None:
    ns, _ = parse(["run", *argv, str(packages)])
    (notice,) = cli.ignored_notices(ns)
    assert notice.startswith(f"ignoring pypiserver's {argv[0]}")


def test_the_notice_is_in_the_log_and_values_pypiserver_refuses_are_refused(
    packages: Path,
) -> None:
    with Server("--server", "paste", "--backend", "simple-dir", packages) as srv:
        assert srv.get("/health").status == 200
    assert "ignoring pypiserver's --server 'paste'" in srv.output
    assert "ignoring pypiserver's --backend 'simple-dir'" in srv.output
    res = pkgserver("run", "--server", "foobar", packages)
    assert res.returncode == 2 and "invalid choice: 'foobar'" in res.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-P", "."], "-P . (no password file) needs -a . as well"),
        (["--health-endpoint", "/health!"], "invalid --health-endpoint"),
        (["--hash-algo", "md6"], "unknown or unusable --hash-algo"),
        (["--server-base-url", "ftp://x/"], "neither an http(s) URL"),
    ],
)
def test_what_pypiserver_refuses_is_refused_in_one_line(
    packages: Path, argv: list[str], message: str
) -> None:
    res = pkgserver("run", *argv, packages)
    assert res.returncode == 2 and message in res.stderr and res.stderr.count("\n") == 1


def test_versions_answer_anywhere() -> None:
    for argv in (["--version"], ["run", "--version"], ["update", "--version"]):
        res = pkgserver(*argv)
        assert res.returncode == 0 and res.stdout.startswith("pkgserver "), argv


# -- what a live server does with them ------------------------------------------------------------
def test_hash_algo_before_run_reaches_the_links(packages: Path) -> None:
    # Started as `pkgserver --hash-algo md5 run ...`: the options before the subcommand apply.
    argv = ["--hash-algo", "md5", "-v", "run", "-p", "0", "-i", "127.0.0.1"]
    with Server(argv=[*argv, "--disable-fallback", str(packages)]) as srv:
        page = srv.get("/simple/centodeps/", accept="text/html").text
    wheel = (packages / "centodeps-0.0.0-py3-none-any.whl").read_bytes()
    assert f"#md5={hashlib.md5(wheel).hexdigest()}" in page


def test_cache_control_on_downloads_only(packages: Path) -> None:
    with Server("--cache-control", "86400", packages) as srv:
        wheel = srv.get("/packages/centodeps-0.0.0-py3-none-any.whl")
        assert wheel.headers["cache-control"] == "public, max-age=86400"
        sdist = srv.get("/packages/centodeps-0.0.0.tar.gz")
        assert sdist.headers["cache-control"] == "public, max-age=86400"
        page = srv.get("/simple/centodeps/")
        assert page.headers["cache-control"] == "max-age=0, must-revalidate"
    with Server(packages) as srv:  # without it: a year, as a file never changes (README)
        found = srv.get("/packages/centodeps-0.0.0.tar.gz").headers["cache-control"]
        assert found == "public, max-age=31536000, immutable"


def test_downloads_and_error_pages_are_never_sniffed(packages: Path) -> None:
    with Server(packages) as srv:
        for path in (
            "/packages/centodeps-0.0.0-py3-none-any.whl",  # the fast path
            "/packages/centodeps-0.0.0.tar.gz",
            "/packages/centodeps-0.0.0-py3-none-any.whl.metadata",
            "/packages/nope-<b>1.0</b>.whl",
        ):
            res = srv.get(path)
            assert res.headers.get("x-content-type-options") == "nosniff", path


@pytest.mark.parametrize("base", ["http://proxy.example/pypi/", "/pypi/", "/pypi"])
def test_server_base_url_with_a_path_serves_under_it_too(packages: Path, base: str) -> None:
    with Server("--server-base-url", base, packages) as srv:
        for prefix in ("", "/pypi"):
            assert srv.get(prefix + "/health").text == "Ok"
            page = srv.get(prefix + "/simple/centodeps/", accept=JSON_V1)
            assert page.status == 200, prefix
            url = urllib.parse.urljoin(
                prefix + "/simple/centodeps/", page.json()["files"][0]["url"]
            )
            assert url.startswith(prefix + "/packages/") and srv.get(url).status == 200
        assert srv.get("/pypi/packages/").status == 200
        assert srv.get("/pypis/simple/").status != 200  # a prefix is a whole segment
        api = srv.get("/pypi/pypi/centodeps/json").json()
        expected = "http://proxy.example/pypi/" if base.startswith("http") else "/pypi/"
        assert expected in api["urls"][0]["url"]
        # The root's own /pypi/ routes stay theirs under a /pypi prefix, with or without it.
        for path in (
            "/pypi/centodeps/0.0.0/json",
            "/pypi/pypi/centodeps/0.0.0/json",
            "/pypi/centodeps/json",
        ):
            assert srv.get(path).json()["info"]["version"] == "0.0.0", path
        assert srv.get("/pypi/").status == 200 and srv.get("/pypi").status in (200, 301)


@pytest.mark.parametrize("base", ["/packages/", "http://h/simple/", "/project", "/-/x/"])
def test_a_base_url_path_that_would_hide_the_index_is_refused(packages: Path, base: str) -> None:
    res = pkgserver("run", "--server-base-url", base, packages)
    assert res.returncode == 2 and "one of the index's own paths" in res.stderr


def test_a_forwarded_prefix_is_not_doubled(packages: Path) -> None:
    # A proxy that passes the prefix on and also says it (X-Forwarded-Prefix).
    with Server("--server-base-url", "/pypi/", "--trust-proxy", packages) as srv:
        headers = {"X-Forwarded-Prefix": "/pypi", "X-Forwarded-Host": "pypi.example.com"}
        api = srv.request("GET", "/pypi/pypi/centodeps/json", headers=headers).json()
        assert api["urls"][0]["url"].startswith("http://pypi.example.com/pypi/packages/")


def test_forwarded_headers_only_behind_trust_proxy(packages: Path) -> None:
    headers = {
        "X-Forwarded-Host": "pypi.example.com",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Prefix": "/team",
        "X-Forwarded-For": "203.0.113.9",
    }
    with Server(packages) as srv:
        api = srv.request("GET", "/pypi/centodeps/json", headers=headers).json()
        assert api["urls"][0]["url"].startswith(f"http://127.0.0.1:{srv.port}/packages/")
    with Server("--trust-proxy", packages) as srv:
        api = srv.request("GET", "/pypi/centodeps/json", headers=headers).json()
        assert api["urls"][0]["url"].startswith("https://pypi.example.com/team/packages/")
        # pypiserver's nginx recipe: the prefix inside X-Forwarded-Host.
        home = srv.request("GET", "/", headers={"X-Forwarded-Host": "forward.ed/priv/"}).text
        assert "http://forward.ed/priv/simple/" in home
        # Values that do not look right are ignored, not echoed.
        odd = srv.request("GET", "/pypi/centodeps/json", headers={"X-Forwarded-Host": "a b<c"})
        assert odd.json()["urls"][0]["url"].startswith(f"http://127.0.0.1:{srv.port}/")
    assert "203.0.113.9 - -" in srv.output  # the client, in the access log


def test_pypiservers_welcome_page_renders(packages: Path, tmp_path: Path) -> None:
    welcome = tmp_path / "welcome.html"
    welcome.write_text(PYPISERVER_WELCOME)
    with Server("--welcome", welcome, packages) as srv:
        res = srv.get("/")
    assert res.status == 200 and res.headers["content-type"].startswith("text/html")
    assert "serving 2 packages" in res.text  # pypiserver counts files
    assert f"pip install --index-url http://127.0.0.1:{srv.port}/simple/ PACKAGE" in res.text
    assert '<a href="/packages/">here</a>' in res.text and '<a href="/simple/">' in res.text


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "<p>{{PACKAGES}} {{NUMBER_OF_THINGS}}</p>",
            "uses 'NUMBER_OF_THINGS', which is not provided",
        ),
        ("% if URL\n<p>x</p>", "is not a usable template"),
        ("{{NUMPKGS + 'x'}}", "is not a usable template"),
        ("% if not URL:\n{{HIDDEN_IN_A_BRANCH}}\n% end\n", "uses 'HIDDEN_IN_A_BRANCH'"),
        ("% for p in PACKAGES_LIST:\n{{p}}\n% end\n", "uses 'PACKAGES_LIST'"),
    ],
)
def test_a_welcome_template_that_cannot_render_is_refused_at_start(
    packages: Path, tmp_path: Path, template: str, message: str
) -> None:
    welcome = tmp_path / "welcome.html"
    welcome.write_text(template)
    res = pkgserver("run", "--welcome", welcome, packages)
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_a_welcome_template_is_tried_as_anonymous_visitors_see_it(
    packages: Path, tmp_path: Path
) -> None:
    # With -a list, a visitor without credentials gets no counts: a template that needs them
    # as numbers fails for them, and is refused at start rather than failing on every visit.
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("alice:" + bcrypt.using(rounds=4).hash("pw") + "\n")
    welcome = tmp_path / "welcome.html"
    welcome.write_text("<p>{{NUMPKGS + 1}} files</p>")
    res = pkgserver("run", "-P", htpasswd, "-a", "list,update", "--welcome", welcome, packages)
    assert res.returncode == 2 and "is not a usable template" in res.stderr
    welcome.write_text("% x = 1\n<p>{{x}} {{URL}} {{len(SIMPLE)}}</p>")  # its own names, builtins
    with Server("-P", htpasswd, "-a", "list,update", "--welcome", welcome, packages) as srv:
        assert srv.get("/").status == 200


def test_packages_listing_feeds_pip_find_links(packages: Path, tmp_path: Path) -> None:
    with Server("--disable-fallback", packages) as srv:
        listing = srv.get("/packages/")
        assert listing.status == 200
        assert '<a href="centodeps-0.0.0-py3-none-any.whl#sha256=' in listing.text
        assert srv.get("/packages").status == 301
        env = client_env(tmp_path)
        out = tmp_path / "out"
        run_client(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-index",
                "--only-binary",
                ":all:",
                "--find-links",
                srv.url + "packages/",
                "-d",
                out,
                "centodeps",
            ],
            env,
        )
    assert [p.name for p in out.iterdir()] == ["centodeps-0.0.0-py3-none-any.whl"]


def test_project_json_at_the_bare_path(packages: Path) -> None:
    with Server(packages) as srv:
        bare = srv.get("/centodeps/json")
        assert bare.status == 200 and bare.json() == srv.get("/pypi/centodeps/json").json()
        assert bare.json()["info"]["version"] == "0.0.0"
        assert srv.get("/nothere/json").status == 404


def test_form_encoded_remove_pkg_as_curl_sends_it(packages: Path, tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("alice:" + bcrypt.using(rounds=4).hash("pw") + "\n")
    import base64

    auth = "Basic " + base64.b64encode(b"alice:pw").decode()
    body = b":action=remove_pkg&name=centodeps&version=0.0.0"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with Server("-P", htpasswd, packages) as srv:
        assert srv.request("POST", "/", body=body, headers=form).status == 401
        res = srv.request("POST", "/", body=body, headers={**form, "Authorization": auth})
        assert res.status == 200, res.text
        assert srv.project_json("centodeps").json()["files"] == []
        bad = srv.request(
            "POST",
            "/",
            body=b":action=remove_pkg&name=centodeps",
            headers={**form, "Authorization": auth},
        )
        assert bad.status == 400
    assert sorted(p.name for p in packages.iterdir() if not p.name.startswith(".")) == []


@pytest.mark.parametrize(
    ("filename", "fmt"),
    [
        ("centodeps-1.0.tar.bz2", "tar.bz2"),
        ("centodeps-1.0.tgz", "tgz"),
        ("centodeps-1.0.ZIP", "zip"),
    ],
)
def test_legacy_sdist_formats_upload_like_the_directory_serves_them(
    tmp_path: Path, filename: str, fmt: str
) -> None:
    root = tmp_path / "packages"
    root.mkdir()
    sdist = make_sdist(tmp_path / "dist", "centodeps", "1.0", fmt=fmt, filename=filename)
    body, ctype = upload_form(sdist, name="centodeps", version="1.0", filetype="sdist")
    with Server("-P", ".", "-a", ".", root) as srv:
        res = srv.request("POST", "/", body=body, headers={"Content-Type": ctype})
        assert res.status == 200, res.text
        listed = srv.project_json("centodeps").json()["files"]
        assert [f["filename"] for f in listed] == [filename]
        # One sdist per release, whatever its format (PEP 527): another is "already exists".
        other = make_sdist(tmp_path / "dist2", "centodeps", "1.0")
        body, ctype = upload_form(other)
        res = srv.request("POST", "/", body=body, headers={"Content-Type": ctype})
        assert res.status == 409 and "one sdist per release" in res.text
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == [filename]


def test_update_lists_and_fetches_newer_releases(packages: Path, tmp_path: Path) -> None:
    upstream_dir = tmp_path / "upstream"
    upstream_dir.mkdir()
    make_wheel(upstream_dir, "centodeps", "0.0.0")  # the release held here is a mirror's
    make_wheel(upstream_dir, "centodeps", "0.0.1")
    make_wheel(upstream_dir, "centodeps", "0.1.0rc1")
    with Server("--disable-fallback", upstream_dir) as up:
        index = up.url + "simple/"
        res = pkgserver("update", "--index-url", index, packages)
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines()[0] == "checking 1 packages for newer version"
        assert "# update centodeps from 0.0.0 to 0.0.1" in res.stdout
        assert f"pip -q download --no-deps -i {index} -d {packages} centodeps==0.0.1" in res.stdout
        unstable = pkgserver("-U", "-u", "--index-url", index, packages)
        assert "to 0.1.0rc1" in unstable.stdout
        env = {**client_env(tmp_path), "PIP_INDEX_URL": index}
        done = subprocess.run(
            [sys.executable, "-m", "pkgserver", "update", "-x", "--index-url", index, packages],
            capture_output=True,
            text=True,
            env={**server_env(), **env},
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    assert (packages / "centodeps-0.0.1-py3-none-any.whl").is_file()


def test_update_never_fetches_a_private_project_from_the_upstream(
    packages: Path, tmp_path: Path
) -> None:
    # Someone published "acme-internal" 99.0 on the public index: the version held here (1.0)
    # is not there, so the project is private here and must not be "updated" from it.
    make_wheel(packages, "acme-internal", "1.0")
    upstream_dir = tmp_path / "upstream"
    upstream_dir.mkdir()
    make_wheel(upstream_dir, "acme-internal", "99.0")
    make_wheel(upstream_dir, "centodeps", "0.0.0")
    make_wheel(upstream_dir, "centodeps", "0.0.2")
    with Server("--disable-fallback", upstream_dir) as up:
        res = pkgserver("update", "-x", "--index-url", up.url + "simple/", packages, timeout=120)
    assert "acme-internal==99.0" not in res.stdout and "skipped" in res.stdout
    assert "acme-internal" in res.stdout.split("skipped", 1)[1]
    assert "# update centodeps from 0.0.0 to 0.0.2" in res.stdout
    assert not (packages / "acme_internal-99.0-py3-none-any.whl").exists()


def test_update_says_when_the_upstream_cannot_be_read(packages: Path) -> None:
    res = pkgserver("update", "--index-url", "http://127.0.0.1:9/simple/", packages)
    assert res.returncode == 1 and "cannot read" in res.stderr
    assert "Traceback" not in res.stderr


# -- access control as pypiserver users set it ----------------------------------------------------
def test_a_password_file_without_update_protected_warns_loudly(
    packages: Path, tmp_path: Path
) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("alice:" + bcrypt.using(rounds=4).hash("pw") + "\n")
    with Server("-P", htpasswd, "-a", "download,list", packages) as srv:
        wheel = make_wheel(tmp_path / "dist", "newcomer", "1.0")
        body, ctype = upload_form(wheel)
        # pypiserver's meaning of -a is kept: uploads are open, as the warning says.
        assert srv.request("POST", "/", body=body, headers={"Content-Type": ctype}).status == 200
    assert "UPLOADS AND REMOVALS NEED NO PASSWORD" in srv.output
    with Server("-P", htpasswd, "-a", "update,download", packages) as srv:
        pass
    assert "NEED NO PASSWORD" not in srv.output


def test_plain_text_htpasswd_entries_are_named_at_start(packages: Path, tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("a:a\nlocked:!\nalice:" + bcrypt.using(rounds=4).hash("pw") + "\n")
    with Server("-P", htpasswd, packages) as srv:
        pass
    assert "'a' cannot log in: the entry is not a password hash" in srv.output
    assert "'locked'" not in srv.output


# -- the first run --------------------------------------------------------------------------------
def test_the_readme_first_command_serves_at_once(tmp_path: Path) -> None:
    argv = ["run", "-p", "0", "-i", "127.0.0.1", "packages/"]
    with Server(argv=argv, cwd=tmp_path) as srv:
        assert srv.get("/health").status == 200
        make_wheel(tmp_path / "packages", "corp-app", "1.0")
        srv.wait_listed("corp-app")
    assert "created the package directory 'packages/'" in srv.output
    assert (tmp_path / "packages").is_dir()


def test_a_mistyped_option_is_not_made_into_a_folder(tmp_path: Path) -> None:
    res = pkgserver(tmp_path / "packages", "--hash-algo BAD", cwd=tmp_path)
    assert res.returncode == 2 and "'--hash-algo BAD' does not exist" in res.stderr
    assert not (tmp_path / "--hash-algo BAD").exists()


def test_an_unreachable_directory_is_permission_denied(tmp_path: Path) -> None:
    closed = tmp_path / "data"
    (closed / "packages").mkdir(parents=True)
    closed.chmod(0o700)
    prefix = without_root_powers()
    if os.geteuid() == 0:
        os.chown(closed, 12345, 12345)
    try:
        res = subprocess.run(
            [*prefix, sys.executable, "-m", "pkgserver", "run", closed / "packages"],
            capture_output=True,
            text=True,
            env=server_env(),
            timeout=30,
        )
    finally:
        closed.chmod(0o755)
    assert res.returncode == 2
    assert "permission denied" in res.stderr and "does not exist" not in res.stderr
    assert "must have read/execute access" in res.stderr


def test_health_says_ok_as_pypiserver(packages: Path) -> None:
    with Server(packages) as srv:
        res = srv.get("/health")
    assert (res.status, res.text) == (200, "Ok")


def test_a_name_with_a_trailing_newline_is_not_redirected(packages: Path) -> None:
    with Server(packages) as srv:
        assert srv.get("/simple/centodeps%0a/").status == 404
        assert srv.get("/simple/centodeps%0A/", accept=JSON_V1).status == 404
        assert srv.get("/centodeps%0a/").status == 404
        assert srv.get("/simple/not-here/").status == 303  # (an unknown valid name still is)
