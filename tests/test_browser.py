"""The web pages in a real browser: headless Chromium (Debian's /usr/bin/chromium, never a
downloaded one) driven by Playwright against a pkgserver process.

Skipped when Chromium or Playwright is missing, unless PKGSERVER_REQUIRE_BROWSER=1 (CI): then the
module fails. Full-page screenshots are saved to $PKGSERVER_SCREENSHOTS (default
<repo>/test-artifacts/screenshots) for people to look at.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from builders import make_sdist, make_wheel
from server import Server, running_server, server_env

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parent.parent
REQUIRE = os.environ.get("PKGSERVER_REQUIRE_BROWSER") == "1"


def _missing() -> str | None:
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is not installed (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"playwright is not installed ({exc})"
    return None


_WHY = _missing()
if _WHY is not None:
    if REQUIRE:
        pytest.fail(f"PKGSERVER_REQUIRE_BROWSER=1 but {_WHY}", pytrace=False)
    pytest.skip(f"browser tests skipped: {_WHY}", allow_module_level=True)

from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright  # noqa: E402

pytestmark = pytest.mark.e2e

DESKTOP = {"width": 1200, "height": 900}
PHONE = {"width": 390, "height": 844}
LIBS = 57  # lib-00 ... lib-56: with the others, more than one page of 50
PROJECTS = LIBS + 4
FILES = LIBS + 7
DEMO_README = """\
# Demo package

Does **demo** things, for the tests of the web pages.

```python
import demo_pkg
demo_pkg.run()
```

| Option | Meaning |
| ------ | ------- |
| `-v`   | verbose |
"""
# What a real README often holds: a command line and a bare link, longer than a phone is wide.
WIDE_READMES = {
    "wide-code": (
        "# Install\n\n```\npip install --index-url https://pypi.example.com/simple/"
        " --extra-index-url https://mirror.example.com/simple/ wide-code\n```\n"
    ),
    "wide-url": (
        "# Docs\n\nRead https://github.com/exampleorg/wideurl/blob/main/docs/reference/"
        "configuration/options.md first.\n"
    ),
}
# The browser asks every site for /favicon.ico by itself (see test_favicon_stays_on_this_server).
FAVICON_PATHS = ("/favicon.ico", "/simple/favicon-ico/")
YANK = [sys.executable, "-m", "pkgserver", "yank", "demo-pkg", "2.0", "--reason", "broken build"]


# -- the site ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("browser-site")
    when = time.time() - 30 * 86400  # old enough to be listed at once, in a known order

    def add(path: Path) -> None:
        nonlocal when
        when += 60
        os.utime(path, (when, when))

    for i in range(LIBS):
        add(make_wheel(d, f"lib-{i:02d}", "1.0", summary=f"Library number {i}"))
    add(make_wheel(d / "helper", "helper", "1.0", summary="Helps the demo"))
    for name, readme in WIDE_READMES.items():
        add(
            make_wheel(
                d,
                name,
                "1.0",
                summary="A README wider than a phone",
                description=readme,
                extra_headers=[("Description-Content-Type", "text/markdown")],
            )
        )
    add(make_wheel(d, "demo-pkg", "1.0", summary="The demo package"))
    add(make_sdist(d, "demo-pkg", "1.0", summary="The demo package"))
    add(
        make_wheel(
            d,
            "demo-pkg",
            "1.1",
            summary="The demo package",
            requires_python=">=3.9",
            requires_dist=["helper>=1"],
            description=DEMO_README,
            extra_headers=[
                ("Description-Content-Type", "text/markdown"),
                ("Project-URL", "Documentation, https://docs.example.org/demo"),
            ],
        )
    )
    add(make_wheel(d, "demo-pkg", "2.0", summary="The demo package"))
    files = [p for p in d.rglob("*") if p.is_file()]
    assert len(files) == FILES
    subprocess.run(
        [*YANK, str(d)],
        env=server_env(),
        check=True,
        capture_output=True,
        timeout=60,
    )
    return d


@pytest.fixture(scope="module")
def srv(site: Path) -> Iterator[Server]:
    # The site's files are dated by their mtimes (the recent releases' order): say so, since
    # files copied in are otherwise dated when the server first sees them (all at this start).
    with running_server("--disable-fallback", "--upload-time", "mtime", site) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def shots() -> Path:
    d = Path(os.environ.get("PKGSERVER_SCREENSHOTS", REPO / "test-artifacts" / "screenshots"))
    d.mkdir(parents=True, exist_ok=True)
    return d


# -- watching what a page does -------------------------------------------------------------
_CSP_WATCH = """
document.addEventListener("securitypolicyviolation", function (e) {
  window.__pkgserverCsp(e.violatedDirective + " blocked " + (e.blockedURI || "inline"));
});
"""


class Watch:
    """Every request (Playwright's and the browser's own, seen through CDP), console error,
    uncaught exception and Content-Security-Policy violation of a page."""

    def __init__(self, context: BrowserContext, page: Page) -> None:
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.csp: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.expose_function("__pkgserverCsp", lambda text: self.csp.append(text))
        page.add_init_script(_CSP_WATCH)
        cdp = context.new_cdp_session(page)
        cdp.on("Network.requestWillBeSent", lambda e: self.requests.append(e["request"]["url"]))
        cdp.send("Network.enable")

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            where = (msg.location or {}).get("url", "")
            self.errors.append(f"console: {msg.text} ({where})")
        elif "Content Security Policy" in msg.text:
            self.errors.append(f"console {msg.type}: {msg.text}")

    def offsite(self, port: int) -> list[str]:
        found = []
        for url in self.requests:
            parts = urlsplit(url)
            if parts.scheme in ("data", "blob", "about"):
                continue
            if parts.scheme not in ("http", "https") or parts.netloc != f"127.0.0.1:{port}":
                found.append(url)
        return found

    def check(self, port: int, *, ignore_favicon: bool = True) -> None:
        """Nothing but this server was asked for anything; no errors, no CSP violations."""
        errors = self.errors
        if ignore_favicon:  # a known bug of its own (test_favicon_stays_on_this_server)
            errors = [e for e in errors if not any(f"{p})" in e for p in FAVICON_PATHS)]
        assert not self.offsite(port), f"requests to other hosts: {self.offsite(port)}"
        assert not errors, f"errors in the browser: {errors}"
        assert not self.csp, f"Content-Security-Policy violations: {self.csp}"
        assert self.requests, "the watcher saw no request at all"


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Any]:
    contexts: list[BrowserContext] = []

    def opener(**context_kw: Any) -> tuple[Page, Watch]:
        context_kw.setdefault("viewport", DESKTOP)
        context = browser.new_context(**context_kw)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        return page, Watch(context, page)

    yield opener
    for context in contexts:
        context.close()


def screenshot(page: Page, shots: Path, name: str, width: int) -> Path:
    path = shots / name
    path.unlink(missing_ok=True)
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    png_width, png_height = struct.unpack(">II", data[16:24])
    assert png_width == width, (path, png_width)
    assert png_height >= 400, (path, png_height)
    assert len(data) > 10_000, f"{path} is only {len(data)} bytes"
    return path


def scroll_width(page: Page) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth"))


# -- the tests -----------------------------------------------------------------------------
def test_home_shows_counts_recent_releases_and_snippets(
    srv: Server, open_page: Any, shots: Path
) -> None:
    page, watch = open_page()
    page.goto(srv.url)
    expect(page).to_have_title("Home · pkgserver")
    expect(page.locator("#count-projects")).to_have_text(str(PROJECTS))
    expect(page.locator("#count-files")).to_have_text(str(FILES))
    recent = page.locator("ul.recent li")
    expect(recent).to_have_count(10)
    expect(recent.nth(0).locator("a")).to_have_text("demo-pkg 2.0")
    expect(recent.nth(0).locator(".badge.yanked")).to_be_visible()
    expect(recent.nth(1).locator("a")).to_have_text("demo-pkg 1.1")
    expect(page.locator("#pip-extra")).to_have_text(
        f"pip install --extra-index-url {srv.url}simple/ PROJECT"
    )
    expect(page.locator("button.copy").first).to_be_visible()
    screenshot(page, shots, "home.png", DESKTOP["width"])
    watch.check(srv.port)


def test_search_from_the_home_page_then_open_the_project(
    srv: Server, open_page: Any, shots: Path
) -> None:
    page, watch = open_page()
    page.goto(srv.url)
    box = page.locator("form.search.big input[name=q]")
    box.fill("Demo_PKG")
    box.press("Enter")
    page.wait_for_url(re.compile(r"/-/projects/\?q="))
    url = urlsplit(page.url)
    assert url.path == "/-/projects/"
    assert parse_qs(url.query) == {"q": ["Demo_PKG"]}
    expect(page.locator("h1")).to_have_text("1 project matching “Demo_PKG”")
    expect(page.locator("header input[name=q]")).to_have_value("Demo_PKG")
    first = page.locator("ol.projects li a.name").first
    expect(first).to_have_text("demo-pkg")
    screenshot(page, shots, "search.png", DESKTOP["width"])
    first.click()
    page.wait_for_url(f"{srv.url}project/demo-pkg/")
    expect(page.locator(".project-head h1")).to_have_text("demo-pkg 1.1")
    expect(page.locator(".readme h1")).to_have_text("Demo package")
    # the header's search box works too, from a project page
    page.locator("header input[name=q]").fill("Number 42")
    page.locator("header form.search button").click()
    page.wait_for_url(re.compile(r"/-/projects/\?q=Number\+42$"))
    expect(page.locator("ol.projects li a.name")).to_have_text(["lib-42"])
    watch.check(srv.port)


def test_copy_button_copies_the_exact_install_command(
    srv: Server, open_page: Any, shots: Path
) -> None:
    page, watch = open_page(permissions=["clipboard-read", "clipboard-write"])
    page.goto(f"{srv.url}project/demo-pkg/")
    command = f"pip install --extra-index-url {srv.url}simple/ demo-pkg"
    expect(page.locator("#install-cmd")).to_have_text(command)
    button = page.locator(".install button.copy")
    expect(button).to_be_visible()
    expect(button).to_have_text("Copy")
    expect(page.locator(".readme pre")).to_contain_text("demo_pkg.run()")
    expect(page.locator("details#v1\\.1")).to_have_attribute("open", "")
    screenshot(page, shots, "project.png", DESKTOP["width"])
    button.click()
    expect(button).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == command
    # Another snippet copies its own text, whole (several lines).
    page.goto(srv.url)
    page.locator("button[data-copy=pypirc]").click()
    expect(page.locator("button[data-copy=pypirc]")).to_have_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == page.locator("#pypirc").text_content()
    assert copied.startswith("[distutils]\n") and f"repository = {srv.url}\n" in copied
    watch.check(srv.port)


def test_yanked_release_page(srv: Server, open_page: Any) -> None:
    page, watch = open_page()
    page.goto(f"{srv.url}project/demo-pkg/2.0/")
    expect(page.locator(".banner.yanked")).to_contain_text("yanked: broken build")
    expect(page.locator("#install-cmd")).to_have_text(
        f"pip install --extra-index-url {srv.url}simple/ demo-pkg==2.0"
    )
    expect(page.locator("details#v2\\.0 .badge.yanked")).to_have_text("yanked: broken build")
    # A file link downloads the file.
    with page.expect_download() as info:
        page.locator("details#v2\\.0 tbody a").first.click()
    assert info.value.suggested_filename == "demo_pkg-2.0-py3-none-any.whl"
    watch.check(srv.port)


def test_pages_work_without_javascript(srv: Server, open_page: Any) -> None:
    page, watch = open_page(java_script_enabled=False)
    page.goto(f"{srv.url}project/demo-pkg/")
    expect(page.locator("#install-cmd")).to_be_visible()
    expect(page.locator("#install-cmd")).to_have_text(
        f"pip install --extra-index-url {srv.url}simple/ demo-pkg"
    )
    assert page.locator("button.copy").count() == 1
    expect(page.locator("button.copy")).to_be_hidden()
    expect(page.locator(".readme h1")).to_have_text("Demo package")
    # Navigation and search are plain links and GET forms.
    page.locator("header nav a", has_text="Projects").click()
    page.wait_for_url(f"{srv.url}-/projects/")
    expect(page.locator("ol.projects li")).to_have_count(50)
    page.locator("a[rel=next]").click()
    page.wait_for_url(f"{srv.url}-/projects/?page=2")
    expect(page.locator("ol.projects li")).to_have_count(PROJECTS - 50)
    expect(page.locator("nav.pages")).to_contain_text("Page 2 of 2")
    page.locator("header input[name=q]").fill("helper")
    page.locator("header input[name=q]").press("Enter")
    page.wait_for_url(re.compile(r"/-/projects/\?q=helper$"))
    page.locator("ol.projects a.name", has_text="helper").click()
    page.wait_for_url(f"{srv.url}project/helper/")
    expect(page.locator(".project-head h1")).to_have_text("helper 1.0")
    page.goto(srv.url)
    expect(page.locator("button.copy").first).to_be_hidden()
    watch.check(srv.port)


def test_phone_layout_does_not_scroll_sideways(srv: Server, open_page: Any, shots: Path) -> None:
    page, watch = open_page(viewport=PHONE, is_mobile=True, has_touch=True)
    for path in (
        "",
        "-/projects/",
        "-/projects/?q=demo",
        "project/demo-pkg/",
        "project/demo-pkg/2.0/",
    ):
        page.goto(srv.url + path)
        assert scroll_width(page) <= PHONE["width"], f"/{path} is {scroll_width(page)}px wide"
    page.goto(f"{srv.url}project/demo-pkg/")
    button = page.locator(".install button.copy")
    expect(button).to_be_visible()
    box = button.bounding_box()
    assert box is not None and box["x"] + box["width"] <= PHONE["width"]
    screenshot(page, shots, "project-phone.png", PHONE["width"])
    watch.check(srv.port)


@pytest.mark.parametrize("name", sorted(WIDE_READMES))
def test_phone_layout_with_a_wide_readme(srv: Server, open_page: Any, name: str) -> None:
    page, _ = open_page(viewport=PHONE, is_mobile=True, has_touch=True)
    page.goto(f"{srv.url}project/{name}/")
    expect(page.locator(".readme h1")).to_be_visible()
    assert scroll_width(page) <= PHONE["width"]


def test_csp_is_enforced_and_seen(srv: Server, open_page: Any) -> None:
    # The watcher is not blind: an inline script is refused, and the refusal is reported.
    page, watch = open_page()
    page.goto(srv.url)
    page.evaluate(
        """() => { const s = document.createElement("script");
                   s.textContent = "window.__injected = 1"; document.body.appendChild(s); }"""
    )
    page.wait_for_function("document.readyState === 'complete'")
    deadline = time.monotonic() + 5
    while not watch.csp and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert page.evaluate("window.__injected") is None
    assert watch.csp and watch.csp[0].startswith("script-src")
    with pytest.raises(AssertionError):
        watch.check(srv.port)


def test_favicon_stays_on_this_server(site: Path, open_page: Any) -> None:
    with running_server("--fallback-url", "http://fallback.invalid/simple/", site) as other:
        page, watch = open_page()
        page.goto(other.url)
        expect(page.locator("#count-projects")).to_have_text(str(PROJECTS))
        deadline = time.monotonic() + 5  # the browser asks for the icon after the page loaded
        while time.monotonic() < deadline and not any(
            "favicon" in u and "127.0.0.1" not in u for u in watch.requests
        ):
            page.wait_for_timeout(100)
        watch.check(other.port, ignore_favicon=False)
