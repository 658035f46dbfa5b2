"""Archive readers for untrusted distribution files: the one metadata member of a wheel, a zip
or egg sdist (zip), or a tar sdist (gzip, bz2, uncompressed), found and read within bounds.

Member counts, member sizes and the bytes decompressed are bounded before memory is spent,
nothing is extracted, and any failure is an ``InvalidArchive`` rather than a crash. What the
member says is metadata.py's business.
"""

from __future__ import annotations

import bz2
import gzip
import io
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from typing import IO

from packaging.utils import canonicalize_name

__all__ = [
    "MAX_METADATA_BYTES",
    "InvalidArchive",
    "egg_pkg_info",
    "member_in_memory",
    "sdist_pkg_info",
    "tar_pkg_info",
    "walk_tar",
    "wheel_metadata_member",
    "zip_member",
]

Select = Callable[[list[str]], "str | None"]

# A METADATA/PKG-INFO larger than this is refused (descriptions of a few hundred KB are normal).
MAX_METADATA_BYTES = 16 * 1024 * 1024
# Members a zip may list in its central directory before we refuse to read it.
MAX_ZIP_MEMBERS = 100_000
# Bytes of a zip's central directory; zipfile keeps an object per member in memory.
MAX_ZIP_DIRECTORY = 32 * 1024 * 1024
# Bytes of a pax or GNU long-name header (tar); real ones are a few hundred bytes.
MAX_TAR_EXTENDED_HEADER = 1024 * 1024
# Tar members inspected, and bytes decompressed, while looking for PKG-INFO.
MAX_TAR_MEMBERS = 20_000
MAX_TAR_SCAN_BYTES = 256 * 1024 * 1024
# A metadata member may not be compressed by more than this ratio (zip bombs).
MAX_COMPRESSION_RATIO = 200


class InvalidArchive(ValueError):
    """The archive cannot be read, or its metadata is missing or unsafe."""


def _is_top_level(name: str, leaf: str) -> bool:
    """``<dir>/<leaf>`` with an ordinary directory name: no "..", absolute paths or backslashes."""
    parts = name.split("/")
    return (
        len(parts) == 2
        and parts[1] == leaf
        and parts[0] not in ("", ".", "..")
        and "\\" not in name
    )


def wheel_metadata_member(project: str | None) -> Select:
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


def sdist_pkg_info(names: list[str]) -> str | None:
    candidates = [n for n in names if _is_top_level(n, "PKG-INFO")]
    return candidates[0] if len(candidates) == 1 else None


def egg_pkg_info(names: list[str]) -> str | None:
    return "EGG-INFO/PKG-INFO" if "EGG-INFO/PKG-INFO" in names else None


def _zip_precheck(fh: IO[bytes]) -> None:
    """Read the member count and directory size from the end record before zipfile builds a
    Python object for every member (a small zip can list a million of them)."""
    fh.seek(0, io.SEEK_END)
    size = fh.tell()
    tail_len = min(size, 65_535 + 22)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        raise InvalidArchive("not a zip archive (no end of central directory)")
    entries = int.from_bytes(tail[at + 10 : at + 12], "little")
    directory = int.from_bytes(tail[at + 12 : at + 16], "little")
    locator = tail.rfind(b"PK\x06\x07", 0, at)
    if (entries == 0xFFFF or directory == 0xFFFFFFFF) and locator >= 0:
        offset = int.from_bytes(tail[locator + 8 : locator + 16], "little")
        fh.seek(offset)
        record = fh.read(56)
        if record[:4] != b"PK\x06\x06" or len(record) < 56:
            raise InvalidArchive("malformed zip64 end record")
        entries = int.from_bytes(record[32:40], "little")
        directory = int.from_bytes(record[40:48], "little")
    if entries > MAX_ZIP_MEMBERS:
        raise InvalidArchive("archive has too many members")
    if directory > MAX_ZIP_DIRECTORY:
        raise InvalidArchive("zip central directory too large")
    fh.seek(0)


def zip_member(fh: IO[bytes], select: Select, data: bytes | None = None) -> bytes:
    """The selected member; from ``data`` (the archive's bytes) without zipfile where
    member_in_memory can answer, else through zipfile."""
    if data is not None:
        found = member_in_memory(data, select)
        if found is not None:
            return found
    _zip_precheck(fh)
    with zipfile.ZipFile(fh) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise InvalidArchive("archive has too many members")
        if any(i.extra and _renames_members(i.extra) for i in infos):
            raise InvalidArchive("a Unicode Path extra field: zip readers disagree on the names")
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


_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record, 22 bytes
_CENTRAL = struct.Struct("<4s6H3L5H2L")  # central directory header, 46 bytes
_LOCAL = struct.Struct("<4s5H3L2H")  # local file header, 30 bytes


_Entry = tuple[int, int, int, int, int, int, bytes]  # flags, method, crc, sizes, offset, name


def member_in_memory(data: bytes, select: Select) -> bytes | None:
    """The selected member of a plain zip held in memory, without zipfile's object per member.

    Indexing a large directory reads one small archive after another, and zipfile's per-member
    objects were most of the cost. Only the common shape is handled here: one disk, no archive
    comment, no zip64, nothing before the first member, the member stored or deflated and not
    encrypted. Anything else returns None and goes through zipfile, so the outcome is the one
    zipfile (and pip) would give. Refusals follow the same bounds as ``zip_member``.
    """
    found = _central_directory(data)
    if found is None:
        return None
    names, where, cd_offset = found
    chosen = select(names)
    if chosen is None:
        raise InvalidArchive("no single metadata file in the archive")
    return _member_data(data, where[chosen], cd_offset)


def _central_directory(data: bytes) -> tuple[list[str], dict[str, _Entry], int] | None:
    """The member names in order, what the central directory says of each, and where it
    starts; None for a shape left to zipfile."""
    if len(data) < _EOCD.size:
        return None
    sig, disk, cd_disk, _, entries, cd_size, cd_offset, comment = _EOCD.unpack_from(
        data, len(data) - _EOCD.size
    )
    end = len(data) - _EOCD.size
    if sig != b"PK\x05\x06" or disk or cd_disk or comment or cd_offset + cd_size != end:
        return None
    if data[end - 20 : end - 16] == b"PK\x06\x07":
        return None  # zipfile would take this for a zip64 locator and read another directory
    if entries > MAX_ZIP_MEMBERS:
        raise InvalidArchive("archive has too many members")
    if cd_size > MAX_ZIP_DIRECTORY:
        raise InvalidArchive("zip central directory too large")
    names: list[str] = []
    where: dict[str, _Entry] = {}
    pos = cd_offset
    for _ in range(entries):
        if pos + _CENTRAL.size > end:
            return None
        (
            sig,
            _,
            needs,
            flags,
            method,
            _,
            _,
            crc,
            csize,
            usize,
            nlen,
            xlen,
            clen,
            _,
            _,
            _,
            local,
        ) = _CENTRAL.unpack_from(data, pos)
        if sig != b"PK\x01\x02" or needs & 0xFF > 63:
            return None  # 6.3: the newest format zipfile accepts
        if pos + _CENTRAL.size + nlen + xlen + clen > end:
            return None
        raw_name = data[pos + _CENTRAL.size : pos + _CENTRAL.size + nlen]
        if xlen and not _plain_extra(data, pos + _CENTRAL.size + nlen, xlen):
            return None
        try:
            name = raw_name.decode("utf-8" if flags & 0x800 else "cp437")
        except UnicodeDecodeError:
            return None
        if "\0" in name:
            return None  # zipfile cuts such a name short
        names.append(name)
        # Like zipfile's getinfo(), the last of duplicate names wins.
        where[name] = (flags, method, crc, csize, usize, local, raw_name)
        pos += _CENTRAL.size + nlen + xlen + clen
    if pos != end:
        return None
    return names, where, cd_offset


def _member_data(data: bytes, entry: _Entry, cd_offset: int) -> bytes | None:
    """A member's bytes, checked against its local header, size and CRC; None for what is
    left to zipfile's verdict."""
    flags, method, crc, csize, usize, local, raw_name = entry
    if flags & 0x61 or method not in (0, 8) or 0xFFFFFFFF in (csize, usize, local):
        return None  # encrypted or patched data, another method, or zip64 sizes
    if usize > MAX_METADATA_BYTES:
        raise InvalidArchive("metadata file too large")
    if usize > 1024 * 1024 and usize / max(csize, 1) > MAX_COMPRESSION_RATIO:
        raise InvalidArchive("metadata file compressed suspiciously well")
    if local + _LOCAL.size > cd_offset:
        return None
    sig, _, local_flags, _, _, _, _, _, _, lnlen, lxlen = _LOCAL.unpack_from(data, local)
    start = local + _LOCAL.size + lnlen + lxlen
    if sig != b"PK\x03\x04" or data[local + _LOCAL.size : local + _LOCAL.size + lnlen] != raw_name:
        return None
    if (local_flags ^ flags) & 0x800:
        return None  # zipfile decodes each name by its own header's flag, then compares
    if start + csize > cd_offset:
        return None
    body = data[start : start + csize]
    if method == 0:
        out = body
    else:
        try:
            out = zlib.decompressobj(-15).decompress(body, MAX_METADATA_BYTES + 1)
        except zlib.error:
            return None
    if len(out) > MAX_METADATA_BYTES:
        raise InvalidArchive("metadata file too large")
    if len(out) != usize or zlib.crc32(out) != crc:
        return None  # let zipfile give its verdict on a damaged member
    return out


# Info-ZIP's Unicode Path extra field: Python 3.12+ (and so pip there) names the member after
# it, 3.11 ignores it. An archive can use it to show one METADATA to the index and another to
# the installer, so archives carrying it get no metadata here (and uploads are refused).
_UNICODE_PATH = 0x7075


def _extra_kinds(data: bytes, start: int, end: int) -> Iterator[int | None]:
    """The kinds of the records of an extra field in ``data[start:end]``; None for a record
    that overruns the field (zipfile refuses the archive then), after which nothing follows."""
    pos = start
    while end - pos >= 4:
        kind, size = struct.unpack_from("<HH", data, pos)
        if pos + 4 + size > end:
            yield None
            return
        yield kind
        pos += 4 + size


def _plain_extra(data: bytes, start: int, length: int) -> bool:
    """Whether an extra field is well formed and has no zip64 record (zipfile refuses the one
    and reads sizes and offsets from the other) and no Unicode Path record."""
    return all(k not in (None, 1, _UNICODE_PATH) for k in _extra_kinds(data, start, start + length))


def _renames_members(extra: bytes) -> bool:
    """Whether a member's extra field carries a Unicode Path record."""
    return _UNICODE_PATH in _extra_kinds(extra, 0, len(extra))


# A tar stream that decompresses more than this many times what it has read of the archive, past
# RATIO_FREE bytes, is a bomb: a 308-byte .tar.bz2 of zeros cost 0.8 s of CPU (on the indexer's
# thread) to reach the scan bound. Real sdists stay far below (source compresses 4-10 times).
RATIO_FREE = 16 * 1024 * 1024


class _BoundedReader(io.RawIOBase):
    """Refuses to yield more than ``limit`` bytes, or more than MAX_COMPRESSION_RATIO times
    what was read of the compressed ``raw`` file: bounds the work a decompression bomb causes."""

    def __init__(
        self, fh: IO[bytes] | gzip.GzipFile | bz2.BZ2File, limit: int, raw: IO[bytes]
    ) -> None:
        self._fh = fh
        self._left = limit
        self._raw = raw
        self._start = raw.tell()
        self._out = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b):  # type: ignore[no-untyped-def]
        if self._left <= 0:
            raise InvalidArchive("archive too large to scan for PKG-INFO")
        n = min(len(b), self._left)
        data = self._fh.read(n)
        b[: len(data)] = data
        self._left -= len(data)
        self._out += len(data)
        if self._out > RATIO_FREE:
            consumed = max(1, self._raw.tell() - self._start)
            if self._out > consumed * MAX_COMPRESSION_RATIO:
                raise InvalidArchive("archive compressed suspiciously well (a bomb?)")
        return len(data)


def tar_pkg_info(fh: IO[bytes], lower: str) -> bytes:
    """Find ``<top>/PKG-INFO`` in a compressed tar, reading headers ourselves.

    tarfile would hold a pax or GNU long-name header of any size in memory (a 250 KB .tar.gz can
    carry a 250 MB one); here every header, member and the whole scan are bounded, and member
    data is skipped without being kept. Decompressed as it is read, a buffer at a time, also
    when the archive is in memory: decompressing it whole first held up to MAX_TAR_SCAN_BYTES
    (a 250 KB bomb took 500 MB in every indexing process).
    """
    decompressed: gzip.GzipFile | bz2.BZ2File
    if lower.endswith((".tar.gz", ".tgz")):
        decompressed = gzip.GzipFile(fileobj=fh, mode="rb")
    elif lower.endswith(".tar.bz2"):
        decompressed = bz2.BZ2File(fh, mode="rb")
    else:
        raise InvalidArchive("unknown archive format")
    bounded = _BoundedReader(decompressed, MAX_TAR_SCAN_BYTES, fh)
    return walk_tar(io.BufferedReader(bounded, buffer_size=64 * 1024))


def walk_tar(reader: IO[bytes]) -> bytes:
    """Header by header through a tar stream to ``<top>/PKG-INFO``; bounded throughout."""
    long_name: str | None = None
    pax_path: str | None = None
    for _count in range(MAX_TAR_MEMBERS):
        header = _read_exact(reader, 512)
        if header is None or header == b"\0" * 512:
            break
        if _tar_checksum(header) != _tar_number(header[148:156]):
            raise InvalidArchive("not a tar archive (bad header checksum)")
        size = _tar_number(header[124:136])
        kind = header[156:157]
        padded = (size + 511) // 512 * 512
        if kind in (b"x", b"g", b"L", b"K"):
            if size > MAX_TAR_EXTENDED_HEADER:
                raise InvalidArchive("tar extended header too large")
            data = _read_exact(reader, padded)
            if data is None:
                raise InvalidArchive("truncated tar archive")
            payload = data[:size]
            if kind == b"L":
                long_name = payload.rstrip(b"\0").decode("utf-8", "replace")
            elif kind == b"x":
                pax_path = _pax_path(payload) or pax_path
            continue
        name = _tar_name(header)
        if pax_path is not None:
            name = pax_path
        elif long_name is not None:
            name = long_name
        long_name = pax_path = None
        if kind in (b"0", b"\0", b"7") and _is_top_level(name.rstrip("/"), "PKG-INFO"):
            if size > MAX_METADATA_BYTES:
                raise InvalidArchive("metadata file too large")
            data = _read_exact(reader, size)
            if data is None:
                raise InvalidArchive("truncated tar archive")
            return data
        _skip(reader, padded)
    else:
        raise InvalidArchive("archive has too many members")
    raise InvalidArchive("no PKG-INFO in the archive")


def _read_exact(reader: IO[bytes], n: int) -> bytes | None:
    data = reader.read(n)
    return data if len(data) == n else None


def _skip(reader: IO[bytes], n: int) -> None:
    while n > 0:
        chunk = reader.read(min(n, 1024 * 1024))
        if not chunk:
            raise InvalidArchive("truncated tar archive")
        n -= len(chunk)


def _tar_number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # base-256 (GNU) for large values
        value = int.from_bytes(field[1:], "big")
        return value
    text = field.rstrip(b"\0 ").lstrip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise InvalidArchive("not a tar archive (bad number field)") from None


def _tar_checksum(header: bytes) -> int:
    return sum(header[:148]) + 8 * 32 + sum(header[156:])


def _tar_name(header: bytes) -> str:
    name = header[0:100].split(b"\0", 1)[0]
    if header[257:262] == b"ustar":
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "replace")


def _pax_path(payload: bytes) -> str | None:
    """The ``path`` record of a pax header ("<len> path=<value>\\n" records)."""
    pos = 0
    while pos < len(payload):
        space = payload.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(payload[pos:space])
        except ValueError:
            break
        if length <= 0:
            break
        record = payload[space + 1 : pos + length - 1]
        key, _, value = record.partition(b"=")
        if key == b"path":
            return value.decode("utf-8", "replace")
        pos += length
    return None
