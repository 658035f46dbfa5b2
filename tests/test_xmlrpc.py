"""XML-RPC ``search`` (what ``pip search`` sends), through the WSGI app: answers, faults, and
requests that must be refused."""

from __future__ import annotations

import xmlrpc.client
from pathlib import Path
from typing import cast

import pytest
from builders import make_wheel
from conftest import OneWheel, make_testapp
from webtest import TestApp


def search_hits(body: bytes) -> list[dict[str, str]]:
    """The hits in a search answer: the one value of an XML-RPC methodResponse."""
    (hits,), _ = xmlrpc.client.loads(body)
    return cast("list[dict[str, str]]", hits)


def _search_body(query: str, operator: str = "or") -> bytes:
    return xmlrpc.client.dumps(({"name": [query], "summary": [query]}, operator), "search").encode()


@pytest.mark.parametrize("path", ["/RPC2", "/"])
def test_pip_search_finds_by_name_and_summary(testapp: TestApp, path: str) -> None:
    res = testapp.post(path, _search_body("DEMO"), content_type="text/xml")
    hits = search_hits(res.body)
    assert [(h["name"].lower().replace("_", "-"), h["version"]) for h in hits] == [
        ("demo-pkg", "1.10")
    ]
    res = testapp.post(path, _search_body("factor"), content_type="text/xml")
    hits = search_hits(res.body)
    assert [h["name"] for h in hits] == ["foo-2fa"]
    assert hits[0]["summary"] == "two factor"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml",
        b"<methodCall><methodName>search</methodName><params><param><value><struct>",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
        b"<methodCall><methodName>&b;</methodName></methodCall>",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b"<methodCall><methodName>&e;</methodName></methodCall>",
        b"<methodCall><methodName>search</methodName><params><param><value><int>x</int></value></param></params></methodCall>",
        b"<foo/>",
    ],
)
def test_malformed_xmlrpc_gets_400(testapp: TestApp, body: bytes) -> None:
    res = testapp.post("/RPC2", body, content_type="text/xml", expect_errors=True)
    assert res.status_int == 400
    assert b"root:" not in res.body


def test_unknown_xmlrpc_method_gets_a_fault(testapp: TestApp) -> None:
    body = xmlrpc.client.dumps((), "list_packages").encode()
    res = testapp.post("/RPC2", body, content_type="text/xml")
    with pytest.raises(xmlrpc.client.Fault):
        xmlrpc.client.loads(res.body)


def test_xmlrpc_with_an_unknown_encoding_gets_400(one_wheel: OneWheel) -> None:
    app, _, _, _ = one_wheel
    body = b"<?xml version='1.0' encoding='x-unknown'?><methodCall><methodName>search</methodName></methodCall>"
    app.post("/RPC2", body, content_type="text/xml", status=400)


def test_control_characters_in_summaries_keep_search_answers_valid(tmp_path: Path) -> None:
    make_wheel(tmp_path, "ctl", "1.0", summary="bad\x00nul \x1b[31mred\x01")
    app, _ = make_testapp([tmp_path])
    body = xmlrpc.client.dumps(({"name": ["ctl"]}, "or"), "search").encode()
    hits = search_hits(app.post("/RPC2", body, content_type="text/xml").body)
    assert hits[0]["name"] == "ctl"
    assert "\x1b" not in hits[0]["summary"] and "\x00" not in hits[0]["summary"]


def test_search_terms_are_bounded(tmp_path: Path) -> None:
    make_wheel(tmp_path, "demo", "1.0")
    app, _ = make_testapp([tmp_path])
    # Only the first 10 terms of a field count: "demo" at position 11 is not searched for.
    body = xmlrpc.client.dumps(({"name": ["zz" * 40] * 10 + ["demo"]}, "or"), "search").encode()
    hits = search_hits(app.post("/RPC2", body, content_type="text/xml").body)
    assert hits == []
    body = xmlrpc.client.dumps(({"name": ["zz" * 40] * 9 + ["demo"]}, "or"), "search").encode()
    hits = search_hits(app.post("/RPC2", body, content_type="text/xml").body)
    assert [h["name"] for h in hits] == ["demo"]
