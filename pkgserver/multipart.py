"""A streaming multipart/form-data parser (RFC 7578), working on bytes, tested without sockets.

Why not bottle's parser: the legacy upload form carries long descriptions (100 KB and more are
normal) that bottle 0.13 refuses, and the file part must be streamed to disk while it is hashed,
with memory that does not grow with its size. Text fields are kept in memory within bounds;
file parts named by the caller go to a sink.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import IO, Protocol

__all__ = [
    "Form",
    "FormError",
    "FormTooLarge",
    "Limits",
    "Sink",
    "parse_boundary",
    "parse_form",
    "parse_urlencoded",
]

CHUNK = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024


class FormError(ValueError):
    """The body is not valid multipart/form-data."""


class FormTooLarge(FormError):
    """A field or the form exceeds a bound."""


class Form:
    """What a form held: text fields, the client's filename of each file part, and the bytes
    of file parts kept in memory (those the sink did not take)."""

    def __init__(self) -> None:
        self.fields: dict[str, list[str]] = {}
        self.filenames: dict[str, str] = {}
        self.blobs: dict[str, bytes] = {}

    def get(self, name: str) -> str:
        values = self.fields.get(name)
        return values[0] if values else ""


def parse_urlencoded(body: bytes, max_fields: int = 100) -> Form:
    """An ``application/x-www-form-urlencoded`` body (``curl -d``) as a Form; UTF-8 only."""
    from urllib.parse import parse_qsl

    try:
        text = body.decode("ascii")  # percent-encoded: anything else is not this media type
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=max_fields,
        )
    except (UnicodeError, ValueError) as exc:
        raise FormError(f"not a valid form-encoded body ({exc})") from None
    form = Form()
    for name, value in pairs:
        form.fields.setdefault(name, []).append(value)
    return form


class Sink(Protocol):
    def write(self, data: bytes) -> object: ...


class Limits:
    def __init__(
        self,
        field_bytes: int = 8 * 1024 * 1024,
        fields_bytes: int = 32 * 1024 * 1024,
        parts: int = 10_000,
    ) -> None:
        self.field_bytes = field_bytes  # one in-memory field
        self.fields_bytes = fields_bytes  # all in-memory fields together
        self.parts = parts


# Clients encode parameters the HTML5 way: a quoted value has no backslash escapes (a quote is
# sent as %22), so a backslash is a literal character, never an escape.
_TOKEN = re.compile(r'\s*([^\s=;]+)\s*(?:=\s*("[^"]*"|[^;]*))?\s*(?:;|$)')


def parse_header_params(value: str) -> tuple[str, dict[str, str]]:
    """``form-data; name="a"; filename="b"`` -> ("form-data", {...}).

    A parameter given twice is refused: parsers disagree on which one counts (a proxy or a
    log could see another file name or field than the one stored)."""
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _TOKEN.match(rest, pos)
        if not m or m.end() == pos:
            break
        key, raw = m.group(1).lower(), m.group(2) or ""
        raw = raw.strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = raw[1:-1]
        if key in params:
            raise FormError(f"header parameter {key!r} given twice")
        params[key] = raw
        pos = m.end()
    return main.strip().lower(), params


def parse_boundary(content_type: str | None) -> bytes:
    if not content_type:
        raise FormError("missing Content-Type")
    kind, params = parse_header_params(content_type)
    if kind != "multipart/form-data":
        raise FormError("expected multipart/form-data")
    boundary = params.get("boundary", "")
    if not 1 <= len(boundary) <= 200 or not boundary.isascii():
        raise FormError("missing or invalid multipart boundary")
    return boundary.encode("ascii")


class _Reader:
    """Buffered reads from the body stream, never past ``length`` bytes."""

    def __init__(self, stream: IO[bytes], length: int) -> None:
        self.stream = stream
        self.left = length
        self.buf = b""

    def fill(self) -> bool:
        """Read one more chunk into the buffer; False at the end of the body."""
        if self.left <= 0:
            return False
        data = self.stream.read(min(CHUNK, self.left))
        if not data:
            raise FormError("the body ended early (client disconnected?)")
        self.left -= len(data)
        self.buf += data
        return True


def parse_form(
    stream: IO[bytes],
    length: int,
    boundary: bytes,
    *,
    file_sink: Callable[[str, str], Sink | None],
    limits: Limits | None = None,
) -> Form:
    """Parse the body.

    ``file_sink(field_name, filename)`` is asked for a sink for each part that has a filename;
    it returns None to keep that part's bytes in memory instead (bounded like text fields).
    """
    limits = limits or Limits()
    reader = _Reader(stream, length)
    delimiter = b"--" + boundary
    # The first delimiter may follow a preamble; every later one follows CRLF.
    while True:
        idx = reader.buf.find(delimiter)
        if idx == 0 or (idx > 0 and reader.buf[idx - 2 : idx] == b"\r\n"):
            reader.buf = reader.buf[idx + len(delimiter) :]
            break
        if len(reader.buf) > MAX_HEADER_BYTES:
            raise FormError("no multipart boundary found")
        if not reader.fill():
            raise FormError("no multipart boundary found")
    form = Form()
    in_memory = 0
    parts = 0
    separator = b"\r\n" + delimiter
    while True:
        # After a delimiter: "--" ends the form, CRLF starts a part.
        while len(reader.buf) < 2 and reader.fill():
            pass
        if reader.buf.startswith(b"--"):
            return form
        if not reader.buf.startswith(b"\r\n"):
            # Transport padding (whitespace) is allowed before the CRLF.
            stripped = reader.buf.lstrip(b" \t")
            if not stripped.startswith(b"\r\n"):
                raise FormError("malformed multipart delimiter")
            reader.buf = stripped
        reader.buf = reader.buf[2:]
        parts += 1
        if parts > limits.parts:
            raise FormTooLarge("too many form fields")
        headers = _read_part_headers(reader)
        disposition = headers.get("content-disposition", "")
        kind, params = parse_header_params(disposition)
        if kind != "form-data" or "name" not in params:
            raise FormError("form part without a name")
        name = params["name"]
        filename = params.get("filename")
        sink = file_sink(name, filename) if filename is not None else None
        if filename is not None:
            form.filenames.setdefault(name, filename)
        if sink is not None:
            _copy_part(reader, separator, sink.write)
        else:
            collector = _Collector(name, limits.field_bytes)
            _copy_part(reader, separator, collector.write)
            size = collector.size
            in_memory += size
            if in_memory > limits.fields_bytes:
                raise FormTooLarge("form fields are too large")
            data = b"".join(collector.chunks)
            if filename is not None:
                form.blobs.setdefault(name, data)
            else:
                form.fields.setdefault(name, []).append(data.decode("utf-8", errors="replace"))


class _Collector:
    """Keeps one in-memory part, refusing to grow past its bound."""

    def __init__(self, name: str, limit: int) -> None:
        self.name, self.limit = name, limit
        self.chunks: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise FormTooLarge(f"form field {self.name!r} is too large")
        self.chunks.append(data)


def _read_part_headers(reader: _Reader) -> dict[str, str]:
    while True:
        end = reader.buf.find(b"\r\n\r\n")
        if reader.buf.startswith(b"\r\n"):
            # A part with no headers at all.
            raw, reader.buf = b"", reader.buf[2:]
            break
        if end >= 0:
            raw, reader.buf = reader.buf[:end], reader.buf[end + 4 :]
            break
        if len(reader.buf) > MAX_HEADER_BYTES:
            raise FormError("form part headers too long")
        if not reader.fill():
            raise FormError("the body ended inside part headers")
    headers: dict[str, str] = {}
    for line in raw.split(b"\r\n"):
        if not line.strip():
            continue
        key, colon, value = line.partition(b":")
        if not colon:
            raise FormError("malformed form part header")
        headers[key.strip().lower().decode("latin-1")] = value.strip().decode("utf-8", "replace")
    return headers


def _copy_part(reader: _Reader, separator: bytes, write: Callable[[bytes], object]) -> None:
    """Pass the part's bytes to ``write`` up to the next ``CRLF--boundary``; consume that."""
    keep = len(separator) - 1
    while True:
        idx = reader.buf.find(separator)
        if idx >= 0:
            if idx:
                write(reader.buf[:idx])
            reader.buf = reader.buf[idx + len(separator) :]
            return
        if len(reader.buf) > keep:
            # Everything but a possible partial separator at the end is data.
            write(reader.buf[:-keep])
            reader.buf = reader.buf[-keep:]
        if not reader.fill():
            raise FormError("the body ended inside a form part")
