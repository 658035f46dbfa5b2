"""The in-memory zip reader that indexing uses must give zipfile's answer or step aside.

``archives.member_in_memory`` reads the metadata member of a small archive without zipfile's
object per member (most of the cost of a first start). It may return None ("ask zipfile"), but
whenever it answers, the answer must be the one zipfile gives: the same bytes, or a refusal
where zipfile refuses too. Checked on crafted archives and, with hypothesis, on random
archives and on valid wheels with bytes flipped.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pkgserver import archives
from pkgserver.archives import InvalidArchive

META = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nSummary: in memory\n"


def _zip(members: list[tuple[str, bytes, int]], comment: bytes = b"", prefix: bytes = b"") -> bytes:
    buf = io.BytesIO()
    buf.write(prefix)
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, method in members:
            zf.writestr(zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0)), data, compress_type=method)
        zf.comment = comment
    return buf.getvalue()


def _wheel(**kw: Any) -> bytes:
    members = [
        ("demo/__init__.py", b"x = 1\n", zipfile.ZIP_DEFLATED),
        ("demo-1.0.dist-info/METADATA", META, zipfile.ZIP_DEFLATED),
        ("demo-1.0.dist-info/WHEEL", b"Wheel-Version: 1.0\n", zipfile.ZIP_DEFLATED),
    ]
    return _zip(members, **kw)


SELECT = archives.wheel_metadata_member("demo")


def _by_zipfile(data: bytes) -> bytes | Exception:
    try:
        return archives.zip_member(io.BytesIO(data), SELECT)
    except Exception as exc:  # InvalidArchive, or whatever zipfile raises on damage
        return exc


def _in_memory(data: bytes) -> bytes | Exception | None:
    try:
        return archives.member_in_memory(data, SELECT)
    except InvalidArchive as exc:
        return exc


def assert_agrees(data: bytes) -> bytes | Exception | None:
    """The in-memory answer, after checking it against zipfile's."""
    fast = _in_memory(data)
    if fast is None:
        return None  # handed to zipfile: nothing to compare
    slow = _by_zipfile(data)
    if isinstance(fast, bytes):
        assert slow == fast, "the in-memory reader accepted what zipfile reads differently"
    else:
        assert isinstance(slow, Exception), f"refused ({fast}) what zipfile reads"
    return fast


def test_a_plain_wheel_is_read_in_memory_with_zipfile_s_bytes() -> None:
    assert assert_agrees(_wheel()) == META


def test_a_stored_member_is_read_in_memory() -> None:
    data = _zip([("demo-1.0.dist-info/METADATA", META, zipfile.ZIP_STORED)])
    assert assert_agrees(data) == META


@pytest.mark.parametrize(
    "data",
    [
        _wheel(comment=b"an archive comment"),
        # Bytes put before a finished archive (a self-extracting one): its offsets are off.
        b"#!/bin/sh\nexit 0\n" + _wheel(),
        _zip([("demo-1.0.dist-info/METADATA", META, zipfile.ZIP_BZIP2)]),
        _zip([("demo-1.0.dist-info/METADATA", META, zipfile.ZIP_LZMA)]),
    ],
    ids=["comment", "prefix", "bzip2", "lzma"],
)
def test_unusual_shapes_are_left_to_zipfile(data: bytes) -> None:
    assert archives.member_in_memory(data, SELECT) is None
    assert _by_zipfile(data) == META  # and zipfile still reads them


def test_a_damaged_member_is_left_to_zipfile_which_refuses_it() -> None:
    good = _wheel()
    at = good.index(zlib.compress(META)[2:8])  # inside the deflated METADATA
    bad = good[:at] + bytes([good[at] ^ 0xFF]) + good[at + 1 :]
    assert _in_memory(bad) is None
    assert isinstance(_by_zipfile(bad), Exception)


def test_two_metadata_files_are_refused_as_zipfile_would() -> None:
    data = _zip(
        [
            ("demo-1.0.dist-info/METADATA", META, zipfile.ZIP_DEFLATED),
            ("other-1.0.dist-info/METADATA", META, zipfile.ZIP_DEFLATED),
            ("again-1.0.dist-info/METADATA", META, zipfile.ZIP_DEFLATED),
        ]
    )
    # "demo" picks its own among several: the same answer both ways.
    assert assert_agrees(data) == META
    twice = _zip([("x-1.0.dist-info/METADATA", META, 8), ("y-1.0.dist-info/METADATA", META, 8)])
    assert isinstance(assert_agrees(twice), InvalidArchive)


def test_a_bomb_is_refused_without_being_inflated() -> None:
    huge = b"A" * (archives.MAX_METADATA_BYTES + 1)
    data = _zip([("demo-1.0.dist-info/METADATA", huge, zipfile.ZIP_DEFLATED)])
    assert len(data) < 100_000
    outcome = assert_agrees(data)
    assert isinstance(outcome, InvalidArchive) and "too large" in str(outcome)


def test_a_lying_size_in_the_directory_cannot_inflate_past_the_limit() -> None:
    """The central directory says 10 bytes; the member inflates to 17 MB."""
    huge = b"A" * (archives.MAX_METADATA_BYTES + 1)
    data = bytearray(_zip([("demo-1.0.dist-info/METADATA", huge, zipfile.ZIP_DEFLATED)]))
    cd = data.rindex(b"PK\x01\x02")
    struct.pack_into("<L", data, cd + 24, 10)  # uncompressed size
    outcome = _in_memory(bytes(data))
    # Either refused for its size or handed to zipfile (size and CRC do not match): never
    # 17 MB of bytes.
    assert outcome is None or isinstance(outcome, InvalidArchive)
    assert isinstance(_by_zipfile(bytes(data)), Exception)


def test_too_many_members_are_refused_before_reading_them() -> None:
    data = bytearray(_wheel())
    eocd = data.rindex(b"PK\x05\x06")
    struct.pack_into("<HH", data, eocd + 8, 0xFFFE, 0xFFFE)  # entries claimed
    # 65,534 claimed entries are under the bound: the walk finds the directory too short.
    assert _in_memory(bytes(data)) is None
    old = archives.MAX_ZIP_MEMBERS
    try:
        archives.MAX_ZIP_MEMBERS = 100
        assert isinstance(_in_memory(bytes(data)), InvalidArchive)
    finally:
        archives.MAX_ZIP_MEMBERS = old


def test_data_written_after_a_prefix_is_read_in_memory() -> None:
    """zipfile writing after a prefix records offsets from the start of the file: plain."""
    assert assert_agrees(_wheel(prefix=b"#!/bin/sh\nexit 0\n")) == META


def test_a_name_with_a_nul_is_left_to_zipfile() -> None:
    """zipfile cuts the name at the NUL, and so finds METADATA: a reader that does not would
    serve no metadata, or another file's."""
    made = _zip([("demo-1.0.dist-info/METADATAX.txt", META, zipfile.ZIP_DEFLATED)])
    data = made.replace(b"METADATAX.txt", b"METADATA\0.txt")
    assert _in_memory(data) is None
    assert _by_zipfile(data) == META


def test_a_zip64_locator_hidden_before_the_end_record_is_left_to_zipfile() -> None:
    """A member comment ending in a zip64 locator makes zipfile (and pip) read another
    directory: the in-memory reader must not answer from this one."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("demo-1.0.dist-info/METADATA", (2024, 1, 1, 0, 0, 0))
        info.comment = b"PK\x06\x07" + b"\0" * 16
        zf.writestr(info, META)
    assert _in_memory(buf.getvalue()) is None


def test_the_local_header_must_name_the_same_member() -> None:
    data = bytearray(_wheel())
    name_at = data.index(b"demo-1.0.dist-info/METADATA")  # the local header's copy comes first
    assert data[name_at - 30 : name_at - 26] == b"PK\x03\x04"
    assert data[name_at : name_at + 4] == b"demo"
    data[name_at : name_at + 4] = b"evil"
    assert _in_memory(bytes(data)) is None
    assert isinstance(_by_zipfile(bytes(data)), Exception)


names = st.sampled_from(
    [
        "demo-1.0.dist-info/METADATA",
        "Demo-1.0.dist-info/METADATA",
        "other-2.0.dist-info/METADATA",
        "demo-1.0.dist-info/RECORD",
        "../demo-1.0.dist-info/METADATA",
        "a/demo-1.0.dist-info/METADATA",
        "demo/__init__.py",
        "démo-1.0.dist-info/METADATA",
    ]
)
members = st.lists(
    st.tuples(
        names,
        st.binary(max_size=300),
        st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
    ),
    max_size=6,
)


@given(members=members, comment=st.sampled_from([b"", b"c"]))
def test_random_archives_get_zipfile_s_answer(
    members: list[tuple[str, bytes, int]], comment: bytes
) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        data = _zip(members, comment=comment)
    assert_agrees(data)


@given(
    flips=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=1, max_value=255)),
        min_size=1,
        max_size=4,
    )
)
def test_damaged_wheels_get_zipfile_s_answer(flips: list[tuple[int, int]]) -> None:
    data = bytearray(_wheel())
    for at, mask in flips:
        data[at % len(data)] ^= mask
    assert_agrees(bytes(data))


def test_a_unicode_path_extra_field_is_refused_by_both_readers() -> None:
    """Python 3.12+ (and pip there) renames a member after its 0x7075 record, 3.11 does not:
    such an archive could show one METADATA here and another to the installer."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("demo-1.0.dist-info/METADATA", (2024, 1, 1, 0, 0, 0))
        name = b"README"
        record = b"\x01" + struct.pack("<L", zlib.crc32(info.filename.encode())) + name
        info.extra = struct.pack("<HH", 0x7075, len(record)) + record
        zf.writestr(info, META)
    data = buf.getvalue()
    assert archives.member_in_memory(data, SELECT) is None
    refused = _by_zipfile(data)
    assert isinstance(refused, InvalidArchive) and "Unicode Path" in str(refused)


def test_utf8_flags_that_differ_between_headers_are_left_to_zipfile() -> None:
    """zipfile decodes each header's name by its own flag: a non-ASCII name flagged UTF-8 in
    one header only is a mismatch to zipfile, whatever the bytes."""
    made = _zip([("demo-1.0.dist-info/METADATA", META, zipfile.ZIP_DEFLATED)])
    data = bytearray(made)
    central = data.rindex(b"PK\x01\x02")
    flags = struct.unpack_from("<H", data, central + 8)[0]
    struct.pack_into("<H", data, central + 8, flags | 0x800)
    assert archives.member_in_memory(bytes(data), SELECT) is None
