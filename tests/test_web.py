"""The web pages for people (home, project list and search, project pages, static assets), tested
on the WSGI app with webtest and read with BeautifulSoup, as a browser would see them."""

from __future__ import annotations

import base64
import configparser
import datetime
import hashlib
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from bs4 import BeautifulSoup
from builders import make_sdist, make_wheel
from conftest import make_testapp, scan
from webtest import TestApp, TestResponse

from pkgserver.app import create_app
from pkgserver.catalog import Catalog
from pkgserver.config import Settings
from pkgserver.records import UploadLog

HOSTILE = "<img src=x onerror=alert(1)>"
DAY = 86400.0
NOW = 1_700_000_000.0  # upload times are set explicitly: the recent list has a known order

MARKDOWN = """\
# Demo Title

Some **bold** text and a [link](https://example.org/docs).

```python
print("hello from a code block")
```

<script>alert("markdown")</script>

<img src="https://example.org/logo.png" onerror="alert(2)">

[bad link](javascript:alert(3))
"""

RST = """\
RST Title
=========

Some *emphasis* and ``inline code``.

Usage
-----

.. code-block:: python

   import rst_pkg
"""


# -- helpers -----------------------------------------------------------------------------------
def html(res: TestResponse) -> BeautifulSoup:
    assert res.headers["Content-Type"] == "text/html; charset=utf-8", res.headers["Content-Type"]
    return BeautifulSoup(res.text, "html.parser")


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def stamp(path: Path, when: float) -> Path:
    os.utime(path, (when, when))
    return path


def resolve(page: str, href: str) -> str:
    """The app path a relative link or Location of ``page`` leads to (with its query)."""
    parts = urlsplit(urljoin("http://localhost" + page, href))
    assert parts.netloc == "localhost", f"{href!r} of {page} leaves the site"
    return parts.path + (f"?{parts.query}" if parts.query else "")


def redirect_target(app: TestApp, url: str, status: int = 301) -> str:
    res = app.get(url, status=status)
    return resolve(url.split("?")[0], res.headers["Location"])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def iso(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def human_size(size: int) -> str:
    return f"{size} bytes" if size < 1024 else f"{size / 1024:.1f} KB"


def csp(res: TestResponse) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in res.headers["Content-Security-Policy"].split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


def code_text(soup: BeautifulSoup, ident: str) -> str:
    found = soup.find("code", id=ident)
    assert found is not None, f"no <code id={ident!r}>"
    return str(found.get_text())


def row_names(soup: BeautifulSoup) -> list[str]:
    return [a.get_text() for a in soup.select("ol.projects li a.name")]


def protected_app(pkgdir: Path, tmp_path: Path, **settings_kw: object) -> tuple[TestApp, Catalog]:
    from passlib.apache import HtpasswdFile

    path = tmp_path / "htpasswd"
    ht = HtpasswdFile(str(path), new=True, default_scheme="bcrypt")
    ht.set_password("alice", "s3cret")
    ht.save()
    return make_testapp(
        [pkgdir],
        password_file=str(path),
        authenticate=frozenset({"update", "list"}),
        **settings_kw,
    )


# -- a site of a few projects ------------------------------------------------------------------
@pytest.fixture
def site(tmp_path: Path) -> Path:
    """demo-pkg: 1.0 (wheel + sdist), 1.5 (the current one), 2.0 (yanked below), 3.0b1; projects
    with reStructuredText, plain text and hostile metadata; known upload times."""
    d = tmp_path / "site"
    d.mkdir()
    common = {"summary": "A demo package for testing"}
    stamp(make_wheel(d, "Demo-Pkg", "1.0", requires_python=">=3.8", **common), NOW - 10 * DAY)
    stamp(make_sdist(d, "Demo-Pkg", "1.0", **common), NOW - 10 * DAY + 60)
    stamp(
        make_wheel(
            d,
            "Demo-Pkg",
            "1.5",
            requires_python=">=3.9",
            requires_dist=["helper>=1", 'colorama; sys_platform == "win32"'],
            description=MARKDOWN,
            extra_headers=[
                ("Description-Content-Type", "text/markdown; charset=UTF-8; variant=GFM"),
                ("Author", "Ada Lovelace"),
                ("License", "MIT"),
                ("Project-URL", "Documentation, https://docs.example.org/demo"),
                ("Project-URL", "Tracker, javascript:alert(document.cookie)"),
            ],
            **common,
        ),
        NOW - 5 * DAY,
    )
    stamp(make_wheel(d, "Demo-Pkg", "2.0", **common), NOW - 3 * DAY)
    stamp(make_wheel(d, "Demo-Pkg", "3.0b1", **common), NOW - 2 * DAY)
    stamp(
        make_wheel(d, "rst-pkg", "1.0", summary="Has a reStructuredText README", description=RST),
        NOW - 4 * DAY,
    )
    stamp(
        make_wheel(
            d,
            "plain-pkg",
            "0.1",
            summary="Plain text README",
            description="plain <b>text</b>\n  keeps its lines",
            extra_headers=[("Description-Content-Type", "text/plain")],
        ),
        NOW - 6 * DAY,
    )
    stamp(
        make_wheel(
            d,
            "hostile-pkg",
            "1.0",
            summary=HOSTILE,
            extra_headers=[
                ("Author", HOSTILE),
                ("Project-URL", f"{HOSTILE}, https://evil.example/"),
                ("Project-URL", 'Quoted, https://evil.example/" onmouseover="alert(1)'),
            ],
        ),
        NOW - 1 * DAY,
    )
    return d


@pytest.fixture
def site_app(site: Path) -> TestApp:
    app, catalog = make_testapp([site])
    catalog.set_yanks({"demo-pkg": {"2.0": "broken <b>build</b>"}})
    return app


SITE_PROJECTS = ("demo-pkg", "hostile-pkg", "plain-pkg", "rst-pkg")


# -- home ----------------------------------------------------------------------------------------
def test_home_snippets_use_the_request_base_url(site_app: TestApp) -> None:
    url = "http://pkgs.example.com:8080/"
    soup = html(site_app.get("/", headers={"Host": "pkgs.example.com:8080"}))
    assert code_text(soup, "pip-index") == f"pip install --index-url {url}simple/ PROJECT"
    assert code_text(soup, "pip-extra") == f"pip install --extra-index-url {url}simple/ PROJECT"
    conf = configparser.ConfigParser()
    conf.read_string(code_text(soup, "pip-conf"))
    assert conf["global"]["index-url"] == f"{url}simple/"
    assert code_text(soup, "uv-pip") == f"uv pip install --index-url {url}simple/ PROJECT"
    assert code_text(soup, "uv-toml").splitlines() == [
        "[[tool.uv.index]]",
        'name = "corp"',
        f'url = "{url}simple/"',
    ]
    assert (
        code_text(soup, "poetry-source")
        == f"poetry source add --priority=primary corp {url}simple/"
    )
    pypirc = configparser.ConfigParser()
    pypirc.read_string(code_text(soup, "pypirc"))
    assert pypirc["distutils"]["index-servers"].split() == ["corp"]
    assert pypirc["corp"]["repository"] == url
    assert set(pypirc["corp"]) == {"repository", "username", "password"}
    assert code_text(soup, "uv-publish") == f"uv publish --publish-url {url} dist/*"
    assert code_text(soup, "poetry-publish").splitlines() == [
        f"poetry config repositories.corp {url}",
        "poetry publish -r corp",
    ]
    # Every snippet has its copy button, hidden until the script shows it.
    for code in soup.select(".snippet code"):
        button = code.find_parent(class_="snippet").find("button", class_="copy")
        assert button is not None and button.has_attr("hidden")
        assert button["data-copy"] == code["id"]


def test_home_snippets_under_a_path_prefix_and_a_spoofed_host(site_app: TestApp) -> None:
    soup = html(site_app.get("/", extra_environ={"SCRIPT_NAME": "/pypi"}))
    assert code_text(soup, "pip-index") == (
        "pip install --index-url http://localhost:80/pypi/simple/ PROJECT"
    )
    evil = html(site_app.get("/", headers={"Host": 'evil"><script>x</script>'}))
    assert code_text(evil, "pip-index") == (
        "pip install --index-url http://localhost:80/simple/ PROJECT"
    )
    assert len(evil.find_all("script")) == 1


def test_favicon_request_stays_on_this_server(site: Path) -> None:
    app, _ = make_testapp([site])  # the default settings: fallback to pypi.org
    soup = html(app.get("/"))
    icons = [link for link in soup.find_all("link") if "icon" in link.get("rel", [])]
    if icons:  # an icon of its own (or data:), and the browser asks for nothing else
        assert not re.match(r"^\s*(https?:)?//", icons[0]["href"])
        return
    url = "/favicon.ico"
    for _ in range(5):
        res = app.get(url, expect_errors=True)
        if res.status_int not in (301, 302, 303, 307, 308):
            break
        url = urljoin("http://localhost" + url, res.headers["Location"])
        assert urlsplit(url).netloc == "localhost", f"/favicon.ico is sent to {url}"
        url = urlsplit(url).path


def test_home_search_forms_target_the_project_list(site_app: TestApp) -> None:
    soup = html(site_app.get("/"))
    forms = soup.select("form.search")
    assert len(forms) == 2  # the header's and the big one
    for form in forms:
        assert form.get("method", "get").lower() == "get"
        assert resolve("/", form["action"]) == "/-/projects/"
        assert form.find("input", attrs={"name": "q"}) is not None


def test_home_counts_projects_and_files(site_app: TestApp) -> None:
    soup = html(site_app.get("/"))
    assert soup.find(id="count-projects").get_text() == "4"
    assert soup.find(id="count-files").get_text() == "8"


def test_home_recent_releases_newest_first(site_app: TestApp) -> None:
    soup = html(site_app.get("/"))
    items = soup.select("ul.recent li")
    assert [li.a.get_text() for li in items] == [
        "hostile-pkg 1.0",
        "Demo-Pkg 3.0b1",
        "Demo-Pkg 2.0",
        "rst-pkg 1.0",
        "Demo-Pkg 1.5",
        "plain-pkg 0.1",
        "Demo-Pkg 1.0",
    ]
    times = [li.time["datetime"] for li in items]
    assert times == sorted(times, reverse=True)
    assert times[0] == iso(NOW - DAY)
    assert times[-1] == iso(NOW - 10 * DAY + 60)  # a release's time is its newest file's
    assert resolve("/", items[1].a["href"]) == "/project/demo-pkg/3.0b1/"
    yanked = [li.a.get_text() for li in items if li.select_one(".badge.yanked")]
    assert yanked == ["Demo-Pkg 2.0"]


def test_home_recent_releases_with_many_files_each(tmp_path: Path) -> None:
    d = tmp_path / "wheels"
    for i in range(12):
        stamp(make_wheel(d, f"small-{i:02d}", "1.0"), NOW + i)
    for release in range(3):  # three releases of 30 wheels each, uploaded last
        for k in range(30):
            wheel = make_wheel(d, "big", f"{release}.0", tag=f"cp3{k:02d}-none-any")
            stamp(wheel, NOW + 100 + release * 50 + k)
    app, _ = make_testapp([d])
    names = [a.get_text() for a in html(app.get("/")).select("ul.recent li a")]
    assert names == [
        "big 2.0",
        "big 1.0",
        "big 0.0",
        *[f"small-{i:02d} 1.0" for i in range(11, 4, -1)],
    ]


def test_home_hides_the_catalog_when_listing_needs_credentials(site: Path, tmp_path: Path) -> None:
    app, _ = protected_app(site, tmp_path)
    for headers in ({}, basic("alice", "wrong"), basic("mallory", "s3cret")):
        res = app.get("/", headers=headers)  # never a challenge: the snippets are for everyone
        soup = html(res)
        assert soup.find(id="count-projects") is None
        assert soup.find(id="count-files") is None
        assert not soup.select("ul.recent")
        assert code_text(soup, "pip-index").startswith("pip install --index-url")
        lowered = res.text.lower()
        for name in (*SITE_PROJECTS, "demo_pkg", "a demo package"):
            assert name not in lowered, name
    soup = html(app.get("/", headers=basic("alice", "s3cret")))
    assert soup.find(id="count-projects").get_text() == "4"
    assert soup.find(id="count-files").get_text() == "8"
    assert "Demo-Pkg 3.0b1" in [a.get_text() for a in soup.select("ul.recent li a")]


def test_welcome_file_still_replaces_the_home_page(site: Path, tmp_path: Path) -> None:
    page = tmp_path / "welcome.html"
    page.write_text(
        "<p>Corp index {{URL}} has {{NUMPROJECTS}} projects, {{NUMFILES}} files "
        "({{NUMPKGS}} packages, as pypiserver counts them)</p>"
    )
    app, _ = make_testapp([site], welcome_file=str(page))
    res = app.get("/")
    assert res.text == (
        "<p>Corp index http://localhost:80/ has 4 projects, 8 files (8 packages, as pypiserver "
        "counts them)</p>"
    )
    # Only the home page: the others are still there.
    assert app.get("/-/projects/").status_int == 200


# -- the list of projects and search -----------------------------------------------------------
@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> TestApp:
    d = tmp_path_factory.mktemp("many")
    for i in range(120):
        make_wheel(d, f"proj-{i:03d}", "1.0", summary=f"Project number {i}")
    app, _ = make_testapp([d])
    return app


def test_list_paginates_fifty_a_page(many: TestApp) -> None:
    seen: list[str] = []
    url = "/-/projects/"
    expected = [
        (50, 1, None, "?page=2"),
        (50, 51, "?page=1", "?page=3"),
        (20, 101, "?page=2", None),
    ]
    for number, (rows, start, prev, nxt) in enumerate(expected, 1):
        soup = html(many.get(url))
        assert soup.h1.get_text(" ", strip=True) == "All 120 projects"
        names = row_names(soup)
        assert len(names) == rows
        assert soup.select_one("ol.projects")["start"] == str(start)
        assert names[0] == f"proj-{start - 1:03d}"
        pages = soup.select_one("nav.pages")
        assert f"Page {number} of 3" in pages.get_text()
        prev_link = pages.find("a", rel="prev")
        next_link = pages.find("a", rel="next")
        assert (prev_link["href"] if prev_link else None) == prev
        assert (next_link["href"] if next_link else None) == nxt
        seen.extend(names)
        if next_link:
            url = resolve(url, next_link["href"])
    assert seen == [f"proj-{i:03d}" for i in range(120)]
    assert url == "/-/projects/?page=3"


def test_list_page_past_the_end_is_an_html_404(many: TestApp) -> None:
    res = many.get("/-/projects/?page=4", status=404)
    soup = html(res)
    assert "no such page" in soup.h1.get_text()
    assert "Content-Security-Policy" in res.headers
    many.get("/-/projects/?q=proj-119&page=2", status=404)


@pytest.mark.parametrize("page", ["abc", "-1", "1.5", "1e3", "99999999", "9" * 40, "%20"])
def test_list_bad_page_numbers_are_400(many: TestApp, page: str) -> None:
    res = many.get(f"/-/projects/?page={page}", status=400)
    assert "page must be a positive number" in html(res).get_text()


@pytest.mark.parametrize("page", ["0", "000", "%B2"])
def test_list_page_zero_is_400(many: TestApp, page: str) -> None:
    many.get(f"/-/projects/?page={page}", status=400)


def test_list_without_slash_redirects(many: TestApp) -> None:
    assert redirect_target(many, "/-/projects") == "/-/projects/"


def test_search_pages_keep_the_query(many: TestApp) -> None:
    soup = html(many.get("/-/projects/?q=proj"))
    assert soup.h1.get_text(" ", strip=True) == "120 projects matching “proj”"
    assert soup.find("a", rel="next")["href"] == "?q=proj&page=2"
    soup = html(many.get("/-/projects/?q=proj&page=3"))
    assert len(row_names(soup)) == 20
    assert soup.find("a", rel="prev")["href"] == "?q=proj&page=2"


@pytest.fixture
def search_app(tmp_path: Path) -> TestApp:
    d = tmp_path / "search"
    for name, summary in (
        ("Demo_Pkg", "A demo"),
        ("demo-pkg-extras", "More for the demo"),
        ("pkg", "The plain one"),
        ("pkg-extra", "Extras"),
        ("apkg", "Another"),
        ("my-pkg", "Mine"),
        ("zeta", "Helps with pkg files"),
        ("alpha-tools", "Fast parser"),
        ("beta-tools", "Slow parser"),
        ("gamma", "Fast printer"),
        ("mixed-case", "Reads YAML Quickly"),
    ):
        make_wheel(d, name, "1.0", summary=summary)
    app, _ = make_testapp([d])
    return app


@pytest.mark.parametrize("query", ["Demo_PKG", "demo.pkg", "DEMO-pkg", "  demo__pkg  "])
def test_search_is_case_insensitive_and_normalized(search_app: TestApp, query: str) -> None:
    soup = html(search_app.get("/-/projects/", params={"q": query}))
    assert row_names(soup)[:2] == ["Demo_Pkg", "demo-pkg-extras"]
    first = soup.select_one("ol.projects li a.name")
    assert resolve("/-/projects/", first["href"]) == "/project/demo-pkg/"


def test_search_matches_summaries(search_app: TestApp) -> None:
    assert row_names(html(search_app.get("/-/projects/?q=yaml"))) == ["mixed-case"]
    assert row_names(html(search_app.get("/-/projects/?q=printer"))) == ["gamma"]


def test_search_words_must_all_match(search_app: TestApp) -> None:
    assert row_names(html(search_app.get("/-/projects/?q=fast+parser"))) == ["alpha-tools"]
    assert row_names(html(search_app.get("/-/projects/?q=tools+parser"))) == [
        "alpha-tools",
        "beta-tools",
    ]
    soup = html(search_app.get("/-/projects/?q=fast+nothing"))
    assert row_names(soup) == []
    assert "No project matches" in soup.get_text()


def test_search_ranks_the_exact_name_first(search_app: TestApp) -> None:
    # exact, then names starting with it, then names holding it, then summaries
    assert row_names(html(search_app.get("/-/projects/?q=PKG"))) == [
        "pkg",
        "pkg-extra",
        "apkg",
        "Demo_Pkg",
        "demo-pkg-extras",
        "my-pkg",
        "zeta",
    ]


def test_search_query_is_echoed_escaped(search_app: TestApp) -> None:
    query = '<script>alert("q")</script>'
    res = search_app.get("/-/projects/", params={"q": query})
    soup = html(res)
    assert "<script>alert" not in res.text
    scripts = soup.find_all("script")
    assert len(scripts) == 1  # copy.js, nothing of the query
    assert scripts[0]["src"].split("?")[0].endswith("-/static/copy.js")
    assert query in soup.h1.get_text()
    assert soup.select_one("header form.search input[name=q]")["value"] == query
    assert soup.title.get_text().startswith(f"Search: {query}")


def test_protected_list_and_project_pages_challenge(site: Path, tmp_path: Path) -> None:
    app, _ = protected_app(site, tmp_path)
    for url in (
        "/-/projects/",
        "/-/projects/?q=demo",
        "/project/demo-pkg/",
        "/project/demo-pkg/1.0/",
    ):
        res = app.get(url, status=401)
        assert res.headers["WWW-Authenticate"] == 'Basic realm="pkgserver"'
        soup = html(res)
        assert "demo" not in soup.get_text(" ").lower().replace("q=demo", "")
        app.get(url, headers=basic("alice", "nope"), status=403)
        assert app.get(url, headers=basic("alice", "s3cret")).status_int == 200
    # An unknown project is not told apart from a hosted one without credentials.
    assert app.get("/project/nope/", status=401).headers["WWW-Authenticate"]


# -- project pages -------------------------------------------------------------------------------
def test_project_page_shows_the_newest_final_release_not_yanked(site_app: TestApp) -> None:
    soup = html(site_app.get("/project/demo-pkg/"))
    assert soup.h1.get_text(" ", strip=True) == "Demo-Pkg 1.5"
    assert soup.select_one(".project-head p.summary").get_text() == "A demo package for testing"
    assert soup.select_one(".project-head .banner") is None
    latest = soup.find("details", id="v1.5")
    assert latest.has_attr("open")
    assert latest.select_one(".badge").get_text() == "latest"
    assert [d["id"] for d in soup.select("details.release")] == ["v3.0b1", "v2.0", "v1.5", "v1.0"]
    assert [d["id"] for d in soup.select("details.release[open]")] == ["v1.5"]


def test_project_page_install_command_and_copy_button(site_app: TestApp, site: Path) -> None:
    soup = html(site_app.get("/project/demo-pkg/"))
    install = soup.select_one(".install .snippet")
    assert install.code.get_text() == (
        "pip install --index-url http://localhost:80/simple/ Demo-Pkg"
    )
    button = install.find("button", class_="copy")
    assert button["data-copy"] == install.code["id"] == "install-cmd"
    assert button.has_attr("hidden")  # shown by copy.js only
    assert button["type"] == "button"
    # Without a fallback the index is an extra one; an older release is pinned.
    app, catalog = make_testapp([site], disable_fallback=True)
    catalog.set_yanks({"demo-pkg": {"2.0": ""}})
    soup = html(app.get("/project/demo-pkg/1.0/"))
    assert code_text(soup, "install-cmd") == (
        "pip install --extra-index-url http://localhost:80/simple/ Demo-Pkg==1.0"
    )
    banner = soup.select_one(".project-head .banner")
    assert "not the latest release" in banner.get_text()
    assert resolve("/project/demo-pkg/1.0/", banner.a["href"]) == "/project/demo-pkg/1.5/"


def test_project_page_about_dependencies_and_links(site_app: TestApp) -> None:
    soup = html(site_app.get("/project/demo-pkg/"))
    about = dict(
        zip(
            [dt.get_text() for dt in soup.select("aside dl dt")],
            [dd.get_text() for dd in soup.select("aside dl dd")],
        )
    )
    assert about == {"Requires Python": ">=3.9", "Author": "Ada Lovelace", "License": "MIT"}
    assert [c.get_text() for c in soup.select("ul.deps li code")] == [
        "helper>=1",
        'colorama; sys_platform == "win32"',
    ]
    links = soup.select("ul.links li")
    assert len(links) == 2
    docs = links[0].find("a")
    assert docs.get_text() == "Documentation"
    assert docs["href"] == "https://docs.example.org/demo"
    assert "noopener" in docs["rel"] and "nofollow" in docs["rel"]
    assert links[1].find("a") is None  # javascript: is shown as text, never a link
    assert "javascript:alert(document.cookie)" in links[1].get_text()
    for a in soup.find_all("a", href=True):
        assert not a["href"].strip().lower().startswith(("javascript:", "data:", "vbscript:"))
    # An older release shows its own metadata.
    soup = html(site_app.get("/project/demo-pkg/1.0/"))
    assert soup.select_one("aside dl dd").get_text() == ">=3.8"
    assert "None." in soup.select_one("aside").get_text()


def test_markdown_description_is_rendered_and_sanitized(site_app: TestApp) -> None:
    res = site_app.get("/project/demo-pkg/1.5/")
    readme = html(res).select_one("article.description .readme")
    assert readme.h1.get_text(strip=True) == "Demo Title"
    assert readme.strong.get_text() == "bold"
    assert 'print("hello from a code block")' in readme.pre.get_text()
    assert readme.find("a", string="link")["href"] == "https://example.org/docs"
    assert readme.find("script") is None
    assert "<script>alert" not in res.text
    for tag in readme.find_all(True):
        assert not [a for a in tag.attrs if a.lower().startswith("on")], tag
        for attr in ("href", "src"):
            assert not tag.get(attr, "").lower().startswith("javascript:"), tag
    assert readme.find("a", string="bad link") is not None  # kept, its href dropped


def test_restructuredtext_description_is_rendered(site_app: TestApp) -> None:
    readme = html(site_app.get("/project/rst-pkg/")).select_one(".readme")
    assert readme.h1.get_text(strip=True) == "RST Title"
    assert readme.h2.get_text(strip=True) == "Usage"
    assert readme.em.get_text() == "emphasis"
    assert "import rst_pkg" in readme.pre.get_text()


def test_plain_text_description_is_escaped(site_app: TestApp) -> None:
    readme = html(site_app.get("/project/plain-pkg/")).select_one(".readme")
    assert readme.find("b") is None
    assert "plain <b>text</b>" in readme.get_text()
    assert "keeps its lines" in readme.get_text()


@pytest.mark.parametrize(
    ("description", "content_type"),
    [
        # ~200 nested block quotes: docutils recursed past the limit, and the page was a 500.
        (
            "\n\n".join(" " * i + f"quote {i} <script>alert(1)</script>" for i in range(0, 400, 2)),
            None,
        ),
        (
            "\n\n".join(" " * i + f"quote {i} <script>alert(1)</script>" for i in range(0, 400, 2)),
            "text/x-rst",
        ),
        (">" * 2000 + " quote 398 <script>alert(1)</script>", "text/markdown"),
        ("quote 398 <script>alert(1)</script> " + "x" * 600_000, None),  # beyond the bound
    ],
)
def test_any_description_renders_or_falls_back_to_text(
    tmp_path: Path, description: str, content_type: str | None
) -> None:
    headers = [("Description-Content-Type", content_type)] if content_type else []
    make_wheel(tmp_path, "deep-pkg", "1.0", description=description, extra_headers=headers)
    app, _ = make_testapp([tmp_path])
    res = app.get("/project/deep-pkg/")  # 200, never a 500
    assert "quote 398" in res.text
    assert "<script>alert" not in res.text


def test_a_renderer_that_fails_gives_escaped_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from readme_renderer import rst, txt

    def broken(*_a: object, **_k: object) -> str:
        raise RuntimeError("renderer bug")

    monkeypatch.setattr(rst, "render", broken)
    monkeypatch.setattr(txt, "render", broken)
    make_wheel(tmp_path, "odd-pkg", "1.0", description="a <script>x</script> line")
    app, _ = make_testapp([tmp_path])
    readme = html(app.get("/project/odd-pkg/")).select_one(".readme")
    assert readme.find("script") is None and "a <script>x</script> line" in readme.get_text()


def test_no_description(site_app: TestApp) -> None:
    soup = html(site_app.get("/project/demo-pkg/2.0/"))
    assert soup.select_one(".readme") is None
    assert "No description." in soup.select_one("article.description").get_text()


def test_every_file_of_every_version_with_size_time_hash_and_a_working_link(
    site_app: TestApp, site: Path
) -> None:
    on_disk = {p.name: p for p in site.iterdir() if p.is_file()}
    url = "/project/demo-pkg/"
    soup = html(site_app.get(url))
    listed = []
    for release in soup.select("details.release"):
        version = release["id"][1:]
        for row in release.select("tbody tr"):
            cells = row.find_all("td", recursive=False)
            link = cells[0].a
            path = on_disk[link.get_text()]
            data = path.read_bytes()
            assert f"-{version}" in path.name
            assert cells[1].get_text() == human_size(len(data))
            assert cells[2].time["datetime"] == iso(path.stat().st_mtime)
            assert len(cells) == 4  # no "By" column: no uploaders are shown here
            assert cells[3].get_text() == sha256(data)
            assert row.select_one(".hash.narrow").get_text() == f"sha256 {sha256(data)}"
            download = site_app.get(resolve(url, link["href"]))
            assert sha256(download.body) == sha256(data)
            listed.append(path.name)
    assert sorted(listed) == sorted(n for n in on_disk if n.startswith("demo_pkg"))
    assert len(listed) == 5


def test_yanked_release_shows_badge_and_reason(site_app: TestApp) -> None:
    res = site_app.get("/project/demo-pkg/2.0/")
    soup = html(res)
    banner = soup.select_one(".project-head .banner.yanked")
    assert "This release is yanked: broken <b>build</b>" in banner.get_text()
    assert banner.find("b") is None  # the reason is text
    release = soup.find("details", id="v2.0")
    assert "yanked" in release["class"] and release.has_attr("open")
    badge = release.select_one(".badge.yanked")
    assert badge.get_text() == "yanked: broken <b>build</b>"
    assert badge["title"] == "broken <b>build</b>"
    assert code_text(soup, "install-cmd").endswith(" Demo-Pkg==2.0")
    # The project page shows the badge in the history, and only there.
    soup = html(site_app.get("/project/demo-pkg/"))
    assert [d["id"] for d in soup.select("details.release.yanked")] == ["v2.0"]
    assert soup.select_one(".banner.yanked") is None


def _uploader_app(site: Path, **settings: Any) -> tuple[TestApp, Path, Path]:
    log = UploadLog([str(site)])
    wheel = site / "demo_pkg-1.0-py3-none-any.whl"
    sdist = site / "demo_pkg-1.0.tar.gz"
    log.record(wheel.name, sha256(wheel.read_bytes()), "alice")
    log.record(sdist.name, sha256(b"other bytes"), "mallory")  # not these bytes: not shown
    other = site / "hostile_pkg-1.0-py3-none-any.whl"
    log.record(other.name, sha256(other.read_bytes()), HOSTILE)
    app = create_app(Settings(roots=(str(site),), **settings), scan(site), upload_log=log)
    return TestApp(app), wheel, sdist


def _uploaders(res: TestResponse) -> dict[str, str] | None:
    """File -> the "By" column of a release table, or None when the column is not there."""
    table = html(res).select_one("details#v1\\.0 table")
    heads = [th.get_text() for th in table.select("thead th")]
    if "By" not in heads:
        return None
    column = heads.index("By")
    return {
        row.td.a.get_text(): row.find_all("td")[column].get_text()
        for row in table.select("tbody tr")
    }


def test_uploaders_are_shown_with_the_option_and_escaped(site: Path) -> None:
    app, wheel, sdist = _uploader_app(site, show_uploaders=True)
    assert _uploaders(app.get("/project/demo-pkg/1.0/")) == {wheel.name: "alice", sdist.name: "—"}
    res = app.get("/project/hostile-pkg/")
    assert html(res).select_one("tbody tr").find_all("td")[3].get_text() == HOSTILE
    assert HOSTILE not in res.text


def test_uploaders_are_not_shown_to_anyone_on_an_open_index(site: Path) -> None:
    # Login names tell an attacker whom to phish: an index anyone may list shows none.
    app, _, _ = _uploader_app(site)
    res = app.get("/project/demo-pkg/1.0/")
    assert _uploaders(res) is None and "alice" not in res.text


def test_uploaders_are_shown_to_those_who_list_with_credentials(site: Path, tmp_path: Path) -> None:
    from passlib.hash import bcrypt

    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("bob:" + bcrypt.using(rounds=4).hash("pw") + "\n")
    app, wheel, sdist = _uploader_app(
        site, password_file=str(htpasswd), authenticate=frozenset({"list", "update"})
    )
    app.get("/project/demo-pkg/1.0/", status=401)
    app.authorization = ("Basic", ("bob", "pw"))
    res = app.get("/project/demo-pkg/1.0/")
    assert _uploaders(res) == {wheel.name: "alice", sdist.name: "—"}


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("/project/Demo_PKG/", "/project/demo-pkg/"),
        ("/project/demo.pkg/", "/project/demo-pkg/"),
        ("/project/demo-pkg", "/project/demo-pkg/"),
        ("/project/Demo-Pkg", "/project/demo-pkg/"),
        ("/project/demo-pkg/2.0.0/", "/project/demo-pkg/2.0/"),
        ("/project/demo-pkg/1.5", "/project/demo-pkg/1.5/"),
        ("/project/demo-pkg/v1.5.0/", "/project/demo-pkg/1.5/"),
        ("/project/demo-pkg/3.0.0-beta1/", "/project/demo-pkg/3.0b1/"),
        ("/project/DEMO_pkg/1.5/", "/project/demo-pkg/1.5/"),
    ],
)
def test_project_pages_redirect_to_the_canonical_url(
    site_app: TestApp, url: str, target: str
) -> None:
    assert redirect_target(site_app, url) == target
    assert site_app.get(target).status_int == 200


def test_non_normalized_name_and_version_end_at_the_canonical_page(site_app: TestApp) -> None:
    res = site_app.get("/project/Demo_PKG/2.0.0/").maybe_follow()
    assert res.request.path == "/project/demo-pkg/2.0/"
    assert html(res).h1.get_text(" ", strip=True) == "Demo-Pkg 2.0"


@pytest.mark.parametrize(
    "url",
    [
        "/project/nope/",
        "/project/nope/1.0/",
        "/project/demo-pkg/9.9/",
        "/project/demo-pkg/not-a-version/",
        "/project/" + "x" * 300 + "/",
    ],
)
def test_unknown_project_or_version_is_an_html_404(site_app: TestApp, url: str) -> None:
    res = site_app.get(url, status=404)
    soup = html(res)
    assert soup.h1.get_text().strip()
    assert soup.select_one("header.top form.search") is not None  # the site's layout
    assert csp(res)["script-src"] == ["'self'"]
    # Its links work from where it is.
    css = soup.find("link", rel="stylesheet")["href"]
    assert site_app.get(resolve(url, css)).status_int == 200


def test_hostile_metadata_is_escaped_everywhere(site_app: TestApp) -> None:
    for url in ("/", "/-/projects/", "/-/projects/?q=onerror", "/project/hostile-pkg/"):
        res = site_app.get(url)
        soup = html(res)
        assert HOSTILE not in res.text, url
        assert soup.find("img") is None, url
        assert HOSTILE in soup.get_text(), url
        for tag in soup.find_all(True):
            assert not [a for a in tag.attrs if a.lower().startswith("on")], (url, tag)
    soup = html(site_app.get("/project/hostile-pkg/"))
    assert soup.select_one(".project-head p.summary").get_text() == HOSTILE
    assert soup.select_one("aside dl dd:nth-of-type(2)").get_text() == HOSTILE
    labels = [a.get_text() for a in soup.select("ul.links a")]
    assert labels == [HOSTILE, "Quoted"]
    quoted = soup.select("ul.links a")[1]
    assert quoted["href"] == 'https://evil.example/" onmouseover="alert(1)'


ALL_PAGES = [
    "/",
    "/-/projects/",
    "/-/projects/?q=demo",
    "/-/projects/?q=nothing-matches",
    "/project/demo-pkg/",
    "/project/demo-pkg/2.0/",
    "/project/rst-pkg/1.0/",
    "/project/nope/",
]


def test_csp_allows_no_external_scripts_or_styles(site_app: TestApp) -> None:
    for url in ALL_PAGES:
        res = site_app.get(url, expect_errors=True)
        policy = csp(res)
        assert policy["default-src"] == ["'self'"], url
        assert policy["script-src"] == ["'self'"], url
        assert policy["style-src"] == ["'self'"], url
        assert policy["object-src"] == ["'none'"], url
        assert policy["base-uri"] == ["'none'"], url
        assert policy["frame-ancestors"] == ["'none'"], url
        assert res.headers["X-Content-Type-Options"] == "nosniff"


def test_pages_load_no_external_assets(site_app: TestApp) -> None:
    external = re.compile(r"^\s*(https?:)?//", re.I)
    for url in ALL_PAGES:
        res = site_app.get(url, expect_errors=True)
        soup = html(res)
        scripts = soup.find_all("script")
        assert scripts, url
        for script in scripts:
            assert script.get("src") and not external.match(script["src"]), (url, script)
            assert not script.get_text().strip(), "inline scripts are refused by the CSP"
        for link in soup.find_all("link"):
            assert not external.match(link.get("href", "")), (url, link)
        assert soup.find("style") is None, url
        assert not [t for t in soup.find_all(style=True)], url
        # The stylesheet and script URLs lead to them from this page.
        css = soup.find("link", rel="stylesheet")["href"]
        js = soup.script["src"]
        assert site_app.get(resolve(url.split("?")[0], css)).content_type == "text/css"
        assert site_app.get(resolve(url.split("?")[0], js)).content_type == "text/javascript"


# -- static assets ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content_type", "needle"),
    [
        ("style.css", "text/css; charset=utf-8", b"button.copy"),
        ("copy.js", "text/javascript; charset=utf-8", b"navigator.clipboard"),
    ],
)
def test_static_assets_are_cached_forever(
    site_app: TestApp, name: str, content_type: str, needle: bytes
) -> None:
    res = site_app.get(f"/-/static/{name}")
    assert res.headers["Content-Type"] == content_type
    assert needle in res.body
    source = Path(__file__).parent.parent / "pkgserver" / "static" / name
    assert res.body == source.read_bytes()
    cache = [p.strip() for p in res.headers["Cache-Control"].split(",")]
    assert "immutable" in cache and "public" in cache
    assert int(next(p for p in cache if p.startswith("max-age="))[8:]) >= 86400 * 30
    etag = res.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{8,}"', etag)
    again = site_app.get(
        f"/-/static/{name}?v=whatever", headers={"If-None-Match": etag}, status=304
    )
    assert again.body == b""
    assert again.headers["ETag"] == etag
    weak = site_app.get(f"/-/static/{name}", headers={"If-None-Match": f"W/{etag}"}, status=304)
    assert weak.body == b""
    assert site_app.get(f"/-/static/{name}", headers={"If-None-Match": '"other"'}).body == res.body


def test_page_links_assets_with_their_version(site_app: TestApp) -> None:
    soup = html(site_app.get("/"))
    css = soup.find("link", rel="stylesheet")["href"]
    js = soup.script["src"]
    assert re.fullmatch(r"\./-/static/style\.css\?v=[0-9a-f]+", css)
    assert re.fullmatch(r"\./-/static/copy\.js\?v=[0-9a-f]+", js)
    assert soup.script.has_attr("defer")


@pytest.mark.parametrize(
    "url",
    [
        "/-/static/nope.css",
        "/-/static/STYLE.CSS",
        "/-/static/../app.py",
        "/-/static/..%2Fapp.py",
        "/-/static/%2e%2e/app.py",
        "/-/static/..%2F..%2Fpkgserver%2Fapp.py",
        "/-/static/layout.tpl",
        "/-/static/",
    ],
)
def test_static_unknown_names_are_404_and_leak_nothing(site_app: TestApp, url: str) -> None:
    res = site_app.get(url, status=404)
    assert len(res.body) < 100
    assert b"create_app" not in res.body
    assert b"import" not in res.body
    assert b"rebase(" not in res.body


# -- the new pages leave the older routes alone ------------------------------------------------
@pytest.fixture
def clash_app(tmp_path: Path) -> tuple[TestApp, Path]:
    d = tmp_path / "clash"
    for name in ("project", "projects", "static"):
        make_wheel(d, name, "1.0", summary=f"named {name}")
    app, _ = make_testapp([d], disable_fallback=True)
    return app, d


@pytest.mark.parametrize("name", ["project", "projects", "static"])
def test_projects_named_like_web_routes_keep_their_api_routes(
    clash_app: tuple[TestApp, Path], name: str
) -> None:
    app, d = clash_app
    wheel = f"{name}-1.0-py3-none-any.whl"
    simple = app.get(f"/simple/{name}/")
    assert simple.status_int == 200
    assert wheel in simple.text
    # pypiserver's --extra-index-url http://host:port form: /<name>/ → /simple/<name>/.
    assert redirect_target(app, f"/{name}/") == f"/simple/{name}/"
    assert redirect_target(app, f"/{name}") == f"/simple/{name}/"
    assert redirect_target(app, f"/simple/{name}") == f"/simple/{name}/"
    download = app.get(f"/packages/{wheel}")
    assert download.body == (d / wheel).read_bytes()
    assert app.get(f"/pypi/{name}/json").json["info"]["version"] == "1.0"
    # and they have web pages too
    soup = html(app.get(f"/project/{name}/"))
    assert soup.h1.get_text(" ", strip=True) == f"{name} 1.0"
    assert name in row_names(html(app.get("/-/projects/")))


def test_simple_index_and_unknown_routes_are_unchanged(clash_app: tuple[TestApp, Path]) -> None:
    app, _ = clash_app
    index = app.get("/simple/")
    for name in ("project", "projects", "static"):
        assert f">{name}<" in index.text
    # API errors stay plain text, not the web pages' HTML
    res = app.get("/simple/nope/", status=404)
    assert res.headers["Content-Type"].startswith("text/plain")
    res = app.get("/packages/nope-1.0.tar.gz", status=404)
    assert res.headers["Content-Type"].startswith("text/plain")
    assert "project-1.0-py3-none-any.whl" in app.get("/packages/").text  # pypiserver's listing
    app.get("/-/", status=404)
    assert redirect_target(app, "/simple") == "/simple/"


# -- many releases, pre-releases ------------------------------------------------------------
def test_a_project_page_lists_old_releases_as_links_only(tmp_path: Path) -> None:
    for i in range(130):
        make_wheel(tmp_path, "big", f"1.{i}")
    app, _ = make_testapp([tmp_path])
    soup = BeautifulSoup(app.get("/project/big/").text, "html.parser")
    assert len(soup.select("details.release")) == 100
    older = soup.select("section.releases > p a")
    assert [a.get_text() for a in older] == [f"1.{i}" for i in range(29, -1, -1)]
    # An old release's own page shows its files.
    page = BeautifulSoup(app.get("/project/big/1.3/").text, "html.parser")
    assert page.select_one("details.release[open] summary a").get_text() == "1.3"


def test_install_command_pins_a_prerelease_current(tmp_path: Path) -> None:
    make_wheel(tmp_path, "pre", "2.0rc1")
    app, _ = make_testapp([tmp_path])
    text = app.get("/project/pre/").text
    assert "pre==2.0rc1</code>" in text
