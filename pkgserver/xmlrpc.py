"""Just enough XML-RPC for ``pip search``: parse a methodCall safely, write a methodResponse.

Requests are parsed with defusedxml (no entities, no DTDs, no external references); the value
decoder accepts the XML-RPC scalar types, arrays and structs, with a depth and size bound.
"""

from __future__ import annotations

import xmlrpc.client
from typing import Any
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

__all__ = ["MAX_REQUEST_BYTES", "InvalidXmlRpc", "dump_fault", "dump_response", "parse_call"]

MAX_REQUEST_BYTES = 64 * 1024
MAX_DEPTH = 16
MAX_ITEMS = 1000


class InvalidXmlRpc(ValueError):
    """Not a well-formed XML-RPC method call."""


def parse_call(body: bytes) -> tuple[str, list[Any]]:
    if len(body) > MAX_REQUEST_BYTES:
        raise InvalidXmlRpc("request too large")
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except (SafeET.ParseError, DefusedXmlException, ValueError, LookupError) as exc:
        # LookupError: an encoding declaration Python does not know.
        raise InvalidXmlRpc(f"malformed XML: {exc}") from None
    if root.tag != "methodCall":
        raise InvalidXmlRpc("not an XML-RPC methodCall")
    name = root.findtext("methodName")
    if not name or not name.strip():
        raise InvalidXmlRpc("missing methodName")
    params: list[Any] = []
    params_el = root.find("params")
    if params_el is not None:
        for param in params_el.findall("param"):
            value = param.find("value")
            if value is None:
                raise InvalidXmlRpc("param without value")
            params.append(_value(value, 0))
    return name.strip(), params


def _value(el: Element, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise InvalidXmlRpc("value nested too deeply")
    children = list(el)
    if not children:
        return el.text or ""  # a bare <value>text</value> is a string
    if len(children) != 1:
        raise InvalidXmlRpc("value with several types")
    typed = children[0]
    tag, text = typed.tag, (typed.text or "").strip()
    try:
        if tag == "string":
            return typed.text or ""
        if tag in ("int", "i4", "i8"):
            return int(text)
        if tag == "boolean":
            if text not in ("0", "1"):
                raise InvalidXmlRpc("bad boolean")
            return text == "1"
        if tag == "double":
            return float(text)
        if tag == "nil":
            return None
    except ValueError:
        raise InvalidXmlRpc(f"bad {tag} value") from None
    if tag == "array":
        data = typed.find("data")
        items = [] if data is None else data.findall("value")
        if len(items) > MAX_ITEMS:
            raise InvalidXmlRpc("array too long")
        return [_value(v, depth + 1) for v in items]
    if tag == "struct":
        members = typed.findall("member")
        if len(members) > MAX_ITEMS:
            raise InvalidXmlRpc("struct too large")
        out = {}
        for member in members:
            key, value = member.findtext("name"), member.find("value")
            if key is None or value is None:
                raise InvalidXmlRpc("struct member without name or value")
            out[key] = _value(value, depth + 1)
        return out
    raise InvalidXmlRpc(f"unsupported type {tag!r}")


def dump_response(result: Any) -> bytes:
    return xmlrpc.client.dumps((result,), methodresponse=True, allow_none=True).encode()


def dump_fault(code: int, message: str) -> bytes:
    return xmlrpc.client.dumps(xmlrpc.client.Fault(code, message)).encode()
