"""XML-RPC ``search`` (what ``pip search`` sends), through the WSGI app: answers, faults, and
requests that must be refused."""

from __future__ import annotations

import xmlrpc.client

import pytest


def _search_body(query: str, operator: str = "or") -> bytes:
    return xmlrpc.client.dumps(({"name": [query], "summary": [query]}, operator), "search").encode()


@pytest.mark.parametrize("path", ["/RPC2", "/"])
def test_pip_search_finds_by_name_and_summary(testapp, path: str) -> None:  # type: ignore[no-untyped-def]
    res = testapp.post(path, _search_body("DEMO"), content_type="text/xml")
    (hits,), _ = xmlrpc.client.loads(res.body)
    assert [(h["name"].lower().replace("_", "-"), h["version"]) for h in hits] == [
        ("demo-pkg", "1.10")
    ]
    res = testapp.post(path, _search_body("factor"), content_type="text/xml")
    (hits,), _ = xmlrpc.client.loads(res.body)
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
def test_malformed_xmlrpc_gets_400(testapp, body: bytes) -> None:  # type: ignore[no-untyped-def]
    res = testapp.post("/RPC2", body, content_type="text/xml", expect_errors=True)
    assert res.status_int == 400
    assert b"root:" not in res.body


def test_unknown_xmlrpc_method_gets_a_fault(testapp) -> None:  # type: ignore[no-untyped-def]
    body = xmlrpc.client.dumps((), "list_packages").encode()
    res = testapp.post("/RPC2", body, content_type="text/xml")
    with pytest.raises(xmlrpc.client.Fault):
        xmlrpc.client.loads(res.body)
