"""Property tests of every parser that reads untrusted bytes: filenames, core metadata,
archives (zip, tar.gz, tar.bz2), XML-RPC calls, Authorization headers.

Each may refuse its input, but only with its own error type; anything else (an IndexError, a
UnicodeError, a RecursionError, zlib.error) would be a 500 for someone. In the suite they run a
few hundred examples each; `.ci/fuzz` runs them (with the multipart and zip-reader properties)
at volume for a bounded time: HYPOTHESIS_PROFILE=fuzz PKGSERVER_FUZZ_EXAMPLES=N.
"""

from __future__ import annotations

import bz2
import gzip
import io
import re
import tarfile
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pkgserver import archives
from pkgserver.archives import InvalidArchive
from pkgserver.auth import parse_basic
from pkgserver.distfile import (
    KIND_SDIST,
    KIND_WHEEL,
    InvalidDistFilename,
    normalize,
    parse_dist_filename,
)
from pkgserver.metadata import parse_core_metadata
from pkgserver.scan import read_core_metadata
from pkgserver.xmlrpc import InvalidXmlRpc, parse_call

names = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,20}[A-Za-z0-9])?", fullmatch=True)
versions = st.from_regex(
    r"[0-9]{1,3}(\.[0-9]{1,3}){0,3}((a|b|rc)[0-9]{1,2})?(\.post[0-9])?", fullmatch=True
)


@given(st.text(max_size=200))
def test_any_filename_is_attributed_or_refused(filename: str) -> None:
    try:
        info = parse_dist_filename(filename)
    except InvalidDistFilename:
        return
    assert info.project == normalize(info.project)
    assert "/" not in filename and "\\" not in filename and "\0" not in filename


@given(names, versions, st.sampled_from(["-py3-none-any.whl", ".tar.gz", ".zip"]))
def test_built_filenames_are_attributed_to_their_project(
    name: str, version: str, tail: str
) -> None:
    # Wheel filenames escape runs of "-_." as one "_" (PEP 427, as build tools write them).
    stem = re.sub(r"[-_.]+", "_", name) if tail.endswith(".whl") else name
    filename = f"{stem}-{version}{tail}"
    try:
        info = parse_dist_filename(filename)
    except InvalidDistFilename:
        # Refusing is allowed only where the split between name and version is a guess.
        assert not tail.endswith(".whl"), filename
        return
    assert info.project == normalize(name)


@given(st.binary(max_size=2000), st.booleans())
def test_any_metadata_bytes_parse_or_are_refused(raw: bytes, is_wheel: bool) -> None:
    try:
        meta = parse_core_metadata(raw, is_wheel=is_wheel)
    except InvalidArchive:
        return
    assert meta.raw == raw


header_lines = st.lists(
    st.tuples(
        st.sampled_from(
            ["Name", "Version", "Summary", "Requires-Python", "Requires-Dist", "Dynamic", "X"]
        ),
        st.text(max_size=40),
    ),
    max_size=12,
)


@given(header_lines, st.text(max_size=100))
def test_metadata_fields_survive_any_values(lines: list[tuple[str, str]], body: str) -> None:
    text = "Metadata-Version: 2.2\n" + "".join(f"{k}: {v}\n" for k, v in lines) + "\n" + body
    try:
        meta = parse_core_metadata(text.encode("utf-8", "surrogatepass"), is_wheel=False)
    except InvalidArchive:
        return
    assert meta.metadata_version == "2.2"


def _wheel_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def _tar_stream(members: list[tuple[str, bytes]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def _tar_bytes(members: list[tuple[str, bytes]], compress: str) -> bytes:
    plain = _tar_stream(members)
    return gzip.compress(plain) if compress == "gz" else bz2.compress(plain)


member_names = st.sampled_from(
    [
        "demo-1.0.dist-info/METADATA",
        "demo-1.0/PKG-INFO",
        "demo-1.0.dist-info/WHEEL",
        "x/PKG-INFO",
        "../demo-1.0/PKG-INFO",
        "demo/__init__.py",
        "a" * 120 + "/PKG-INFO",
    ]
)
member_lists = st.lists(st.tuples(member_names, st.binary(max_size=200)), max_size=5)


def _mutate(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for at, mask in flips:
        if out:
            out[at % len(out)] ^= mask
    return bytes(out)


flips = st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)), max_size=3)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(member_lists, st.sampled_from(["whl", "zip", "tar.gz", "tar.bz2"]), flips)
def test_archives_built_and_damaged_are_read_or_refused(
    members: list[tuple[str, bytes]], fmt: str, damage: list[tuple[int, int]]
) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        if fmt in ("whl", "zip"):
            data = _wheel_bytes(members)
        else:
            data = _tar_bytes(members, fmt.split(".")[1])
    data = _mutate(data, damage)
    kind = KIND_WHEEL if fmt == "whl" else KIND_SDIST
    filename = "demo-1.0-py3-none-any.whl" if fmt == "whl" else f"demo-1.0.{fmt}"
    try:
        read_core_metadata(filename, kind, "demo", data=data)
    except InvalidArchive:
        pass


@given(st.binary(max_size=600), st.sampled_from(["whl", "zip", "tar.gz", "tar.bz2", "egg"]))
def test_random_bytes_as_archives_are_refused(data: bytes, fmt: str) -> None:
    kind = KIND_WHEEL if fmt == "whl" else KIND_SDIST
    with pytest.raises(InvalidArchive):
        read_core_metadata(f"demo-1.0.{fmt}", kind, "demo", data=data)


@given(member_lists, flips)
def test_the_tar_walker_refuses_only_with_its_own_error(
    members: list[tuple[str, bytes]], damage: list[tuple[int, int]]
) -> None:
    """The walker itself, below read_core_metadata's catch-all: bounded, and InvalidArchive
    is the only way it refuses a damaged stream."""
    stream = _mutate(_tar_stream(members), damage)
    try:
        found = archives.walk_tar(io.BytesIO(stream))
    except InvalidArchive:
        return
    assert len(found) <= archives.MAX_METADATA_BYTES


@given(member_lists, flips)
def test_the_in_memory_zip_reader_refuses_only_with_its_own_error(
    members: list[tuple[str, bytes]], damage: list[tuple[int, int]]
) -> None:
    """Below the catch-all too: None (ask zipfile), bytes, or InvalidArchive; nothing else."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = _mutate(_wheel_bytes(members), damage)
    try:
        archives.member_in_memory(data, archives.wheel_metadata_member("demo"))
    except InvalidArchive:
        pass


xml_fragments = st.sampled_from(
    [
        "<methodCall>",
        "</methodCall>",
        "<methodName>search</methodName>",
        "<methodName>list_packages</methodName>",
        "<params>",
        "</params>",
        "<param>",
        "</param>",
        "<value>",
        "</value>",
        "<string>x</string>",
        "<int>12</int>",
        "<int>99999999999999999999999</int>",
        "<boolean>1</boolean>",
        "<double>1e400</double>",
        "<array><data>",
        "</data></array>",
        "<struct><member><name>name</name>",
        "</member></struct>",
        "<!DOCTYPE x [<!ENTITY a 'b'>]>",
        "&a;",
        "<nil/>",
        "<base64>!!!</base64>",
        "<dateTime.iso8601>x</dateTime.iso8601>",
    ]
)


@given(st.lists(xml_fragments, max_size=25))
def test_xmlrpc_calls_parse_or_are_refused(fragments: list[str]) -> None:
    body = ("<?xml version='1.0'?>" + "".join(fragments)).encode()
    try:
        parse_call(body)
    except InvalidXmlRpc:
        pass


@given(st.binary(max_size=500))
def test_xmlrpc_random_bytes_are_refused(body: bytes) -> None:
    try:
        parse_call(body)
    except InvalidXmlRpc:
        pass


@given(st.text(max_size=300))
def test_any_authorization_header_is_credentials_or_none(header: str) -> None:
    creds = parse_basic(header)
    assert creds is None or (isinstance(creds[0], str) and creds[0] and isinstance(creds[1], str))
