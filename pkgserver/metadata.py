"""Core metadata read out of a distribution archive, safely.

Archives are untrusted input: member counts, member sizes and the bytes decompressed are bounded,
nothing is extracted to disk, and any failure is an ``InvalidArchive`` rather than a crash.
"""

from __future__ import annotations

import bz2
import gzip
import io
import tarfile
import zipfile
from typing import IO, NamedTuple

from packaging.metadata import parse_email
from packaging.utils import canonicalize_name

from .distfile import KIND_WHEEL

__all__ = [
    "MAX_METADATA_BYTES",
    "CoreMetadata",
    "InvalidArchive",
    "parse_core_metadata",
    "read_core_metadata",
]

# A METADATA/PKG-INFO larger than this is refused (descriptions of a few hundred KB are normal).
MAX_METADATA_BYTES = 16 * 1024 * 1024
# Members a zip may list in its central directory before we refuse to read it.
MAX_ZIP_MEMBERS = 200_000
# Tar members inspected, and bytes decompressed, while looking for PKG-INFO.
MAX_TAR_MEMBERS = 20_000
MAX_TAR_SCAN_BYTES = 256 * 1024 * 1024
# A metadata member may not be compressed by more than this ratio (zip bombs).
MAX_COMPRESSION_RATIO = 200

# Fields whose dynamic status would make an sdist's PKG-INFO differ from its built wheel in a way
# that matters to installers (PEP 643); if any is dynamic we do not advertise the sdist's metadata.
_INSTALL_RELEVANT = frozenset(
    {
        "name",
        "version",
        "requires-dist",
        "requires-python",
        "provides-extra",
        "requires-external",
        "provides-dist",
        "obsoletes-dist",
    }
)


class InvalidArchive(ValueError):
    """The archive cannot be read, or its metadata is missing or unsafe."""


class CoreMetadata(NamedTuple):
    raw: bytes  # the METADATA / PKG-INFO file, as served at <file>.metadata
    name: str | None
    version: str | None
    summary: str | None
    requires_python: str | None
    requires_dist: tuple[str, ...]
    metadata_version: str | None
    dynamic: tuple[str, ...]
    # Whether installers may use ``raw`` instead of the distribution's own (PEP 658 for sdists).
    servable: bool


def _version_tuple(value: str | None) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in (value or "").split("."))
    except ValueError:
        return (0,)


def parse_core_metadata(raw: bytes, *, is_wheel: bool) -> CoreMetadata:
    """Parse METADATA/PKG-INFO bytes leniently (unknown or malformed fields are ignored)."""
    text = raw.decode("utf-8", errors="replace")
    fields, _unparsed = parse_email(text)
    dynamic = tuple(d.lower() for d in (fields.get("dynamic") or []))
    mv = fields.get("metadata_version")
    if is_wheel:
        servable = True
    else:
        servable = _version_tuple(mv) >= (2, 2) and not (_INSTALL_RELEVANT & set(dynamic))
    summary = fields.get("summary")
    return CoreMetadata(
        raw=raw,
        name=fields.get("name"),
        version=fields.get("version"),
        summary=summary.strip() if summary else None,
        requires_python=(fields.get("requires_python") or "").strip() or None,
        requires_dist=tuple(fields.get("requires_dist") or ()),
        metadata_version=mv,
        dynamic=dynamic,
        servable=servable,
    )


def read_core_metadata(
    path: str, kind: str, project: str | None = None, filename: str | None = None
) -> CoreMetadata:
    """Read the core metadata of the distribution at ``path``.

    ``kind`` is the distfile kind; ``project`` (normalized) picks the right ``.dist-info`` when a
    wheel has several; ``filename`` names the format when ``path`` does not (a temp file).
    Raises InvalidArchive.
    """
    lower = (filename or path).lower()
    try:
        with open(path, "rb") as fh:
            if kind == KIND_WHEEL:
                raw = _zip_member(fh, _wheel_metadata_member(project))
                return parse_core_metadata(raw, is_wheel=True)
            if lower.endswith((".zip", ".egg")):
                selector = _egg_pkg_info if lower.endswith(".egg") else _sdist_pkg_info
                raw = _zip_member(fh, selector)
            else:
                raw = _tar_pkg_info(fh, lower)
            return parse_core_metadata(raw, is_wheel=False)
    except InvalidArchive:
        raise
    except (
        OSError,
        zipfile.BadZipFile,
        tarfile.TarError,
        EOFError,
        ValueError,
        LookupError,
    ) as exc:
        # zlib.error, lzma and bz2 errors subclass OSError or ValueError.
        raise InvalidArchive(f"unreadable archive: {exc}") from None


def _is_top_level(name: str, leaf: str) -> bool:
    """``<dir>/<leaf>`` with an ordinary directory name: no "..", absolute paths or backslashes."""
    parts = name.split("/")
    return (
        len(parts) == 2
        and parts[1] == leaf
        and parts[0] not in ("", ".", "..")
        and "\\" not in name
    )


def _wheel_metadata_member(project: str | None):  # type: ignore[no-untyped-def]
    def select(names: list[str]) -> str | None:
        candidates = [
            n for n in names if _is_top_level(n, "METADATA") and n.endswith(".dist-info/METADATA")
        ]
        if len(candidates) > 1 and project:
            named = [
                n
                for n in candidates
                if canonicalize_name(n.split("/")[0][: -len(".dist-info")].rsplit("-", 1)[0])
                == project
            ]
            candidates = named or candidates
        return candidates[0] if len(candidates) == 1 else None

    return select


def _sdist_pkg_info(names: list[str]) -> str | None:
    candidates = [n for n in names if _is_top_level(n, "PKG-INFO")]
    return candidates[0] if len(candidates) == 1 else None


def _egg_pkg_info(names: list[str]) -> str | None:
    return "EGG-INFO/PKG-INFO" if "EGG-INFO/PKG-INFO" in names else None


def _zip_member(fh: IO[bytes], select) -> bytes:  # type: ignore[no-untyped-def]
    with zipfile.ZipFile(fh) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise InvalidArchive("archive has too many members")
        name = select([i.filename for i in infos])
        if name is None:
            raise InvalidArchive("no single metadata file in the archive")
        info = zf.getinfo(name)
        if info.file_size > MAX_METADATA_BYTES:
            raise InvalidArchive("metadata file too large")
        if (
            info.file_size > 1024 * 1024
            and info.file_size / max(info.compress_size, 1) > MAX_COMPRESSION_RATIO
        ):
            raise InvalidArchive("metadata file compressed suspiciously well")
        with zf.open(info) as member:
            # Read one byte past the limit: the header's file_size may lie.
            data = member.read(MAX_METADATA_BYTES + 1)
        if len(data) > MAX_METADATA_BYTES:
            raise InvalidArchive("metadata file too large")
        return data


class _BoundedReader(io.RawIOBase):
    """Refuses to yield more than ``limit`` bytes: bounds the work a decompression bomb causes."""

    def __init__(self, fh: IO[bytes] | gzip.GzipFile | bz2.BZ2File, limit: int) -> None:
        self._fh = fh
        self._left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, b):  # type: ignore[no-untyped-def]
        if self._left <= 0:
            raise InvalidArchive("archive too large to scan for PKG-INFO")
        n = min(len(b), self._left)
        data = self._fh.read(n)
        b[: len(data)] = data
        self._left -= len(data)
        return len(data)


def _tar_pkg_info(fh: IO[bytes], lower: str) -> bytes:
    decompressed: gzip.GzipFile | bz2.BZ2File
    if lower.endswith((".tar.gz", ".tgz")):
        decompressed = gzip.GzipFile(fileobj=fh, mode="rb")
    elif lower.endswith(".tar.bz2"):
        decompressed = bz2.BZ2File(fh, mode="rb")
    else:
        raise InvalidArchive("unknown archive format")
    # The bound is on decompressed bytes, so a small bomb cannot keep us busy for long.
    reader = io.BufferedReader(_BoundedReader(decompressed, MAX_TAR_SCAN_BYTES))
    # Streaming mode: members are read in order, nothing is seeked or extracted.
    with tarfile.open(fileobj=reader, mode="r|") as tf:
        for count, member in enumerate(tf):
            if count >= MAX_TAR_MEMBERS:
                raise InvalidArchive("archive has too many members")
            name = member.name
            if _is_top_level(name, "PKG-INFO") and member.isfile():
                if member.size > MAX_METADATA_BYTES:
                    raise InvalidArchive("metadata file too large")
                extracted = tf.extractfile(member)
                if extracted is None:
                    raise InvalidArchive("PKG-INFO is not a regular file")
                return extracted.read(member.size)
    raise InvalidArchive("no PKG-INFO in the archive")
