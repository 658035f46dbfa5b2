"""The streaming multipart parser: round trips under hostile content and arbitrary read sizes."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pkgserver.multipart import (
    Form,
    FormError,
    FormTooLarge,
    Limits,
    parse_boundary,
    parse_form,
    parse_header_params,
)


class Trickle(io.RawIOBase):
    """Returns at most a few bytes per read, to split delimiters across reads."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.pos, self.sizes, self.i = data, 0, sizes or [1], 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        step = self.sizes[self.i % len(self.sizes)]
        self.i += 1
        out = self.data[self.pos : self.pos + min(n, step)]
        self.pos += len(out)
        return out


def encode(
    boundary: bytes, fields: list[tuple[str, bytes]], files: list[tuple[str, str, bytes]]
) -> bytes:
    out = b"preamble to ignore\r\n"
    for name, value in fields:
        out += (
            b"--"
            + boundary
            + b'\r\nContent-Disposition: form-data; name="'
            + name.encode()
            + b'"\r\n\r\n'
            + value
            + b"\r\n"
        )
    for name, filename, data in files:
        out += (
            b"--"
            + boundary
            + b'\r\nContent-Disposition: form-data; name="'
            + name.encode()
            + b'"; filename="'
            + filename.encode()
            + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
            + data
            + b"\r\n"
        )
    return out + b"--" + boundary + b"--\r\nepilogue"


def parse(
    body: bytes, boundary: bytes, sizes: list[int] | None = None, limits: Limits | None = None
) -> tuple[Form, dict[str, bytes]]:
    sinks: dict[str, io.BytesIO] = {}

    def sink(name: str, filename: str) -> io.BytesIO | None:
        if name != "content":
            return None
        sinks[name] = io.BytesIO()
        return sinks[name]

    stream = Trickle(body, sizes) if sizes else io.BytesIO(body)
    form = parse_form(stream, len(body), boundary, file_sink=sink, limits=limits)  # type: ignore[arg-type]
    return form, {k: v.getvalue() for k, v in sinks.items()}


tricky = st.sampled_from(
    [
        b"\r\n--",
        b"--",
        b"\r\n",
        b"\r",
        b"\n",
        b"-",
        b"b",
        b"bound",
        b"\r\n--bound",
        b"\x00",
        b"\xff",
    ]
)
payload = st.lists(st.one_of(tricky, st.binary(max_size=40)), max_size=30).map(b"".join)


@given(
    data=payload,
    text=payload,
    sizes=st.lists(st.integers(min_value=1, max_value=17), min_size=1, max_size=5),
)
def test_round_trip_with_delimiter_like_bytes_and_split_reads(
    data: bytes, text: bytes, sizes: list[int]
) -> None:
    boundary = b"boundary"
    body = encode(
        boundary,
        [(":action", b"file_upload"), ("description", text)],
        [("content", "a-1.0.tar.gz", data), ("gpg_signature", "a.asc", text)],
    )
    form, files = parse(body, boundary, sizes)
    assert files["content"] == data
    assert form.blobs["gpg_signature"] == text
    assert form.get(":action") == "file_upload"
    assert form.get("description") == text.decode("utf-8", "replace")
    assert form.filenames == {"content": "a-1.0.tar.gz", "gpg_signature": "a.asc"}


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_parser(body: bytes) -> None:
    try:
        parse(body, b"xyz")
    except FormError:
        pass


def test_repeated_fields_keep_every_value() -> None:
    body = encode(b"b", [("classifiers", b"A"), ("classifiers", b"B")], [])
    form, _ = parse(body, b"b")
    assert form.fields["classifiers"] == ["A", "B"]


def test_bounds_are_enforced() -> None:
    body = encode(b"b", [("description", b"x" * 1000)], [])
    with pytest.raises(FormTooLarge):
        parse(body, b"b", limits=Limits(field_bytes=100))
    many = encode(b"b", [("f", b"1")] * 50, [])
    with pytest.raises(FormTooLarge):
        parse(many, b"b", limits=Limits(parts=10))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            'form-data; name="content"; filename="a-1.0.tar.gz"',
            ("form-data", {"name": "content", "filename": "a-1.0.tar.gz"}),
        ),
        ("form-data; name=content", ("form-data", {"name": "content"})),
        ('form-data; name="a;b"', ("form-data", {"name": "a;b"})),
        (
            'form-data; name="x"; filename="..\\evil.whl"',
            ("form-data", {"name": "x", "filename": "..\\evil.whl"}),
        ),
        ('FORM-DATA; NAME="x"', ("form-data", {"name": "x"})),
    ],
)
def test_header_params(value: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_header_params(value) == expected


@pytest.mark.parametrize(
    "ctype",
    [None, "", "text/plain", "multipart/form-data", "multipart/form-data; boundary=" + "x" * 300],
)
def test_bad_content_types_are_refused(ctype: str | None) -> None:
    with pytest.raises(FormError):
        parse_boundary(ctype)


@pytest.mark.parametrize(
    "value",
    [
        'form-data; name="content"; filename="a-1.0.tar.gz"; name="x"',
        'form-data; name="content"; filename="a.whl"; FILENAME="../b.whl"',
        "multipart/form-data; boundary=a; boundary=b",
    ],
)
def test_a_parameter_given_twice_is_refused(value: str) -> None:
    """Parsers disagree on which of two values counts: neither is taken."""
    with pytest.raises(FormError):
        parse_header_params(value)
