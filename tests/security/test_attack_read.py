"""Attacks on the read side of a live server: path traversal in every encoding, header
injection through names and redirects, HTML injection through names, summaries and
Requires-Python, spoofed Host and forwarded headers, and XML-RPC bombs.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import SplitResult, urljoin, urlsplit

import pytest
from builders import make_wheel

from security.harness import SECRET, Target, header_block, raw_exchange, start_target, status_of

pytestmark = pytest.mark.e2e


def get_raw(target: Target, path: bytes, extra: bytes = b"") -> bytes:
    return target.raw(
        b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + b"Connection: close\r\n\r\n"
    )


TRAVERSALS = [
    b"/packages/../secret.txt",
    b"/packages/../../secret.txt",
    b"/packages/..%2fsecret.txt",
    b"/packages/..%2Fsecret.txt",
    b"/packages/%2e%2e/secret.txt",
    b"/packages/%2e%2e%2fsecret.txt",
    b"/packages/%252e%252e%252fsecret.txt",
    b"/packages/..%5csecret.txt",
    b"/packages/..\\secret.txt",
    b"/packages/%c0%ae%c0%ae/secret.txt",
    b"/packages/%c0%ae%c0%ae%c0%afsecret.txt",
    b"/packages/%e0%80%ae%e0%80%ae/secret.txt",
    b"/packages/%ef%bc%8e%ef%bc%8e/secret.txt",
    b"/packages/....//secret.txt",
    b"/packages/.%2e/secret.txt",
    b"/packages/./../secret.txt",
    b"/packages//../secret.txt",
    b"/packages/sub/../../secret.txt",
    b"/packages/demo-1.0-py3-none-any.whl/../../secret.txt",
    b"/packages/demo-1.0-py3-none-any.whl%00.txt",
    b"/packages/demo-1.0-py3-none-any.whl%00/../../secret.txt",
    b"/packages/%2fetc%2fpasswd",
    b"/packages//etc/passwd",
    b"/packages/%2Fetc%2Fpasswd",
    b"/packages/file:%2f%2f%2fetc%2fpasswd",
    b"/packages/link-out-1.0-py3-none-any.whl",
    b"/packages/linked-dir/secret.txt",
    b"/simple/../secret.txt",
    b"/simple/..%2f..%2fsecret.txt/",
    b"/simple/%2e%2e/%2e%2e/secret.txt/",
    b"/pypi/..%2f..%2fsecret.txt/json",
    b"/pypi/demo/..%2f..%2f..%2fsecret.txt/json",
    b"/%2e%2e/secret.txt",
    b"/..%2fsecret.txt",
    b"//secret.txt",
    b"/secret.txt",
    b"/../../../../etc/passwd",
    b"/packages/..;/secret.txt",
    b"/packages/%u002e%u002e/secret.txt",
    b"http://127.0.0.1/../secret.txt",
]


@pytest.fixture(scope="module")
def links(target: Target) -> Target:
    """Links in the package directory that point out of it: never followed."""
    root = target.root
    (root / "link-out-1.0-py3-none-any.whl").symlink_to(target.base / "secret.txt")
    (root / "linked-dir").symlink_to(target.base)
    return target


@pytest.mark.parametrize("path", TRAVERSALS, ids=[p.decode() for p in TRAVERSALS])
def test_path_traversal(links: Target, path: bytes) -> None:
    answer = get_raw(links, path)
    status = status_of(answer)
    assert SECRET.encode() not in answer and b"root:x:0:0" not in answer, path
    assert status in (301, 302, 303, 308, 400, 404), (path, answer[:300])
    if status in (301, 302, 303, 308):
        resolved = resolve(path, answer)
        assert resolved.netloc in ("127.0.0.1", "pypi.org"), resolved
        assert ".." not in resolved.path, resolved


def resolve(path: bytes, answer: bytes) -> SplitResult:
    """Where a client goes after this redirect (Location values are relative)."""
    location = re.search(rb"(?im)^location:[ \t]*(\S*)", header_block(answer))
    assert location, answer[:300]
    base = "http://127.0.0.1" + (path.decode("latin-1") if path.startswith(b"/") else "/")
    target: str = location.group(1).decode("latin-1")
    return urlsplit(urljoin(base, target))


INJECTIONS = [
    b"/simple/Demo%0d%0aSet-Cookie:%20evil=1/",
    b"/simple/demo%0d%0aX-Injected:%201/",
    b"/simple/unknown%0d%0aX-Injected:%201/",
    b"/simple/unknown%0aX-Injected:%201/",
    b"/simple/Unknown%E5%98%8A%E5%98%8DX-Injected:%201/",  # UTF-8 that folds to CR LF in Latin-1
    b"/Demo%0d%0aX-Injected:%201",
    b"/packages/demo%0d%0aX-Injected:%201.whl",
    b"/pypi/demo%0d%0aX-Injected:%201/json",
    b"/simple",
    b"/simple/Demo",
]


@pytest.mark.parametrize("path", INJECTIONS, ids=[p.decode() for p in INJECTIONS])
def test_no_header_injection_through_names_or_redirects(target: Target, path: bytes) -> None:
    answer = get_raw(target, path)
    head = header_block(answer)
    assert status_of(answer) < 500, answer[:300]
    lines = head.split(b"\r\n")[1:]
    for line in lines:
        name = line.split(b":", 1)[0].strip().lower()
        assert name not in (b"x-injected", b"set-cookie"), line
        assert b"\r" not in line and b"\n" not in line
    location = re.search(rb"(?im)^location:[ \t]*([^\r\n]*)", head)
    if location:
        value = location.group(1)
        assert all(0x20 < c < 0x7F for c in value), value  # printable, percent-encoded


SCRIPT = '<script>alert("x")</script>'


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A server whose files carry markup in every field a page shows."""
    base = tmp_path_factory.mktemp("html")
    target = start_target(base)
    make_wheel(
        target.root,
        "markup",
        "1.0",
        summary=SCRIPT + "<img src=x onerror=alert(1)>&amp;",
        requires_python='>=3.8"><script>alert("rp")</script>',
        extra_headers=[("Author", SCRIPT), ("Home-page", "javascript:alert(1)")],
    )
    target.srv.wait_listed("markup")
    yield target
    target.srv.stop()


PAGES = [
    "/",
    "/-/projects/",
    "/-/projects/?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    "/project/markup/",
    "/project/markup/1.0/",
    "/project/%3Cscript%3Ealert(1)%3C%2Fscript%3E/",
    "/project/markup/%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E/",
    "/simple/",
    "/simple/markup/",
    "/packages/",
    "/markup/",
    "/simple/<script>alert(1)<%2Fscript>/",
    "/simple/%3Cscript%3Ealert(1)%3C/script%3E/",
    "/packages/%3Cscript%3Ealert(1)%3C%2Fscript%3E.whl",
    "/pypi/%3Cscript%3E/json",
    "/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    "/nothing-here/%22%3E%3Cscript%3E",
]


@pytest.mark.parametrize("path", PAGES)
def test_html_injection_on_every_page(hostile: Target, path: str) -> None:
    answer = get_raw(hostile, path.encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert status_of(answer) < 500, answer[:300]
    # Markup as markup; escaped text (&lt;img src=x onerror=...&gt; in a summary) is fine.
    assert b"<script>alert" not in body and b"<img src=x onerror" not in body, body[:2000]
    assert b'"><script>' not in body
    if b"text/html" in head.lower() and b"markup" in body:
        assert b"&lt;script&gt;" in body or path != "/simple/markup/", body[:2000]


def test_markup_in_metadata_is_data_in_json(hostile: Target) -> None:
    """The JSON APIs carry the fields as they are (JSON escaping is the client's business),
    with a JSON content type that no browser renders as a page."""
    res = hostile.srv.get("/pypi/markup/json")
    assert res.status == 200
    assert res.headers["content-type"].startswith("application/json")
    assert res.json()["info"]["summary"].startswith(SCRIPT)
    simple = hostile.srv.project_json("markup")
    assert simple.headers["content-type"].startswith("application/vnd.pypi.simple.v1+json")


def test_search_answers_escape_markup(hostile: Target) -> None:
    body = (
        b"<?xml version='1.0'?><methodCall><methodName>search</methodName><params><param><value>"
        b"<struct><member><name>name</name><value><array><data><value><string>markup</string>"
        b"</value></data></array></value></member></struct></value></param><param><value>"
        b"<string>or</string></value></param></params></methodCall>"
    )
    res = hostile.srv.request("POST", "/RPC2", body=body, headers={"Content-Type": "text/xml"})
    assert res.status == 200
    assert b"<script>" not in res.body and b"&lt;script&gt;" in res.body


@pytest.mark.parametrize(
    "headers",
    [
        b"Host: evil.example\r\n",
        b"X-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\n",
        b"Forwarded: host=evil.example;proto=https\r\n",
        b"X-Forwarded-Prefix: //evil.example/\r\n",
        b"X-Script-Name: //evil.example\r\n",
    ],
    ids=["host", "x-forwarded", "forwarded", "prefix", "script-name"],
)
@pytest.mark.parametrize(
    "path", [b"/simple/Demo/", b"/simple", b"/Demo/", b"/simple/unknown-project/"]
)
def test_spoofed_host_or_forwarded_headers_steer_no_redirect(
    target: Target, headers: bytes, path: bytes
) -> None:
    request = b"GET " + path + b" HTTP/1.1\r\n"
    if not headers.startswith(b"Host:"):
        request += b"Host: 127.0.0.1\r\n"
    request += headers + b"Connection: close\r\n\r\n"
    answer = target.raw(request)
    assert status_of(answer) in (301, 302, 303, 308), answer[:300]
    resolved = resolve(path, answer)
    assert "evil.example" not in resolved.geturl(), resolved
    if path == b"/simple/unknown-project/":  # the fallback goes to PyPI itself
        assert resolved.netloc == "pypi.org", resolved
    else:
        assert resolved.netloc == "127.0.0.1", resolved


def test_a_configured_base_url_wins_over_a_spoofed_host(tmp_path: Path) -> None:
    target = start_target(tmp_path, "--server-base-url", "https://pypi.corp.example/")
    try:
        answer = target.raw(
            b"GET /pypi/demo/json HTTP/1.1\r\nHost: evil.example\r\n"
            b"X-Forwarded-Host: evil.example\r\nConnection: close\r\n\r\n"
        )
        body = answer.partition(b"\r\n\r\n")[2]
        assert status_of(answer) == 200
        urls = [u["url"] for u in json.loads(body)["urls"]]
        assert urls and all(u.startswith("https://pypi.corp.example/") for u in urls), urls
    finally:
        target.srv.stop()


def xmlrpc(target: Target, body: bytes) -> tuple[int, bytes]:
    res = target.srv.request("POST", "/RPC2", body=body, headers={"Content-Type": "text/xml"})
    return res.status, res.body


LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    + b"]><methodCall><methodName>&lol9;</methodName></methodCall>"
)

XML_ATTACKS = {
    "billion laughs": LAUGHS,
    "quadratic blowup": (
        b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "'
        + b"x" * 50_000
        + b'">]><methodCall><methodName>search</methodName><params><param><value><string>'
        + b"&a;" * 5_000
        + b"</string></value></param></params></methodCall>"
    ),
    "external entity": (
        b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<methodCall><methodName>&x;</methodName></methodCall>"
    ),
    "external DTD": (
        b'<?xml version="1.0"?><!DOCTYPE m SYSTEM "http://127.0.0.1:9/evil.dtd">'
        b"<methodCall><methodName>list_packages</methodName></methodCall>"
    ),
    "parameter entity": (
        b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>'
        b"<methodCall><methodName>list_packages</methodName></methodCall>"
    ),
    "deep nesting": (
        b"<?xml version='1.0'?><methodCall><methodName>search</methodName><params><param>"
        + b"<value><array><data>" * 5000
        + b"</data></array></value>" * 5000
        + b"</param></params></methodCall>"
    ),
    "not XML": b"\x00\x01\x02 definitely not xml",
    "unclosed": b"<?xml version='1.0'?><methodCall><methodName>search",
    "unknown method": (
        b"<?xml version='1.0'?><methodCall><methodName>system.shutdown</methodName></methodCall>"
    ),
    "wrong types": (
        b"<?xml version='1.0'?><methodCall><methodName>search</methodName><params><param><value>"
        b"<int>1</int></value></param></params></methodCall>"
    ),
    "processing instruction": (
        b"<?xml version='1.0'?><?xml-stylesheet href='http://127.0.0.1:9/x'?><methodCall>"
        b"<methodName>list_packages</methodName></methodCall>"
    ),
}


@pytest.mark.parametrize("case", list(XML_ATTACKS))
def test_xmlrpc_bombs_and_entity_tricks(unchanged: Target, case: str) -> None:
    status, body = xmlrpc(unchanged, XML_ATTACKS[case])
    # A refused call is a 400 or an XML-RPC fault; never an expansion, a file or a 5xx.
    assert status in (200, 400, 413), (status, body[:300])
    if status == 200:
        assert b"<fault>" in body, body[:300]
    assert b"root:x:0:0" not in body and b"lollollol" not in body
    assert len(body) < 100_000


def test_an_xmlrpc_body_over_the_limit(unchanged: Target) -> None:
    with socket.create_connection(("127.0.0.1", unchanged.srv.port), timeout=10) as sock:
        sock.sendall(
            b"POST /RPC2 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\n"
            b"Content-Length: 1073741824\r\n\r\n"
        )
        answer = sock.recv(65536)
    assert status_of(answer) == 413, answer[:200]


def test_raw_garbage_requests(unchanged: Target) -> None:
    for request in (
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 64,  # a TLS hello
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 20_000 + b"\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        b"\r\n\r\n\r\n",
        b"GET\x00/ HTTP/1.1\r\n\r\n",
    ):
        # Requests the server answers and keeps open, or waits on for a body: 2 s is plenty.
        answer = raw_exchange(unchanged.srv.port, request, timeout=2)
        if answer:
            assert status_of(answer) < 500 or status_of(answer) == 505, answer[:200]
