"""Upload forms as twine sends them, for tests that post to the upload endpoint."""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["Field", "multipart", "streamed_form", "upload_form"]

Field = tuple[str, str]


def multipart(
    fields: Sequence[Field], files: Sequence[tuple[str, str, bytes]]
) -> tuple[bytes, str]:
    """Encode a form the way twine does (fields first, then the file part)."""
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode() + b"\r\n")
    for name, filename, data in files:
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def upload_form(
    path: Path,
    *,
    filename: str | None = None,
    extra: Sequence[Field] = (),
    omit: Sequence[str] = (),
    **overrides: str,
) -> tuple[bytes, str]:
    data = path.read_bytes()
    name = filename or path.name
    is_wheel = name.endswith(".whl")
    project, version = (
        (name.split("-")[0], name.split("-")[1])
        if is_wheel
        else name.rsplit(".tar.gz", 1)[0].rsplit(".zip", 1)[0].rsplit("-", 1)
    )
    fields = {
        ":action": "file_upload",
        "protocol_version": "1",
        "name": project,
        "version": version,
        "filetype": "bdist_wheel" if is_wheel else "sdist",
        "pyversion": "py3" if is_wheel else "source",
        "metadata_version": "2.1",
        "md5_digest": hashlib.md5(data).hexdigest(),
        "sha256_digest": hashlib.sha256(data).hexdigest(),
        "blake2_256_digest": hashlib.blake2b(data, digest_size=32).hexdigest(),
    }
    fields.update(overrides)
    items = [(k, v) for k, v in fields.items() if k not in omit] + list(extra)
    return multipart(items, [("content", name, data)])


def streamed_form(path: Path) -> tuple[Iterator[bytes], int, str]:
    """A twine-like multipart body streamed from disk; (chunks, length, content type)."""
    boundary = uuid.uuid4().hex
    name, version = path.name.split("-")[:2]
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    head = b""
    for key, value in (
        (":action", "file_upload"),
        ("name", name),
        ("version", version),
        ("filetype", "bdist_wheel"),
        ("sha256_digest", sha.hexdigest()),
    ):
        head += f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + path.stat().st_size + len(tail)

    def chunks() -> Iterator[bytes]:
        yield head
        with open(path, "rb") as fh:
            yield from iter(lambda: fh.read(1 << 20), b"")
        yield tail

    return chunks(), length, f"multipart/form-data; boundary={boundary}"
