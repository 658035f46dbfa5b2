from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from builders import make_sdist, make_wheel

from pkgserver import archives, metadata
from pkgserver.distfile import KIND_SDIST, KIND_WHEEL
from pkgserver.metadata import InvalidArchive, parse_core_metadata
from pkgserver.scan import read_core_metadata


def test_wheel_metadata_is_read_with_its_fields(tmp_path: Path) -> None:
    whl = make_wheel(
        tmp_path,
        "Demo-Pkg",
        "1.0",
        summary="Hello",
        requires_python=">=3.8",
        requires_dist=["helper>=1", "extra; extra == 'x'"],
        description="x" * 150_000,
    )
    meta = read_core_metadata(str(whl), KIND_WHEEL, "demo-pkg")
    assert meta.name == "Demo-Pkg"
    assert meta.version == "1.0"
    assert meta.summary == "Hello"
    assert meta.requires_python == ">=3.8"
    assert meta.requires_dist == ("helper>=1", "extra; extra == 'x'")
    assert meta.servable
    assert meta.raw.startswith(b"Metadata-Version: 2.1\nName: Demo-Pkg\n")


@pytest.mark.parametrize("fmt", ["tar.gz", "tar.bz2", "zip"])
def test_sdist_pkg_info_is_servable_only_from_metadata_2_2(tmp_path: Path, fmt: str) -> None:
    old = make_sdist(tmp_path / "old", "foo", "1.0", fmt=fmt, metadata_version="2.1", summary="s")
    new = make_sdist(tmp_path / "new", "foo", "1.0", fmt=fmt, metadata_version="2.2", summary="s")
    old_meta = read_core_metadata(str(old), KIND_SDIST)
    new_meta = read_core_metadata(str(new), KIND_SDIST)
    assert old_meta.summary == new_meta.summary == "s"
    assert not old_meta.servable
    assert new_meta.servable


def test_sdist_with_dynamic_dependencies_is_not_servable(tmp_path: Path) -> None:
    sd = make_sdist(tmp_path, "foo", "1.0", metadata_version="2.2", dynamic=["Requires-Dist"])
    assert not read_core_metadata(str(sd), KIND_SDIST).servable
    harmless = make_sdist(
        tmp_path / "h", "foo", "1.0", metadata_version="2.4", dynamic=["License-File"]
    )
    assert read_core_metadata(str(harmless), KIND_SDIST).servable


def test_wheel_with_several_dist_info_picks_the_projects_own(tmp_path: Path) -> None:
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(
            "other-2.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: other\nVersion: 2.0\n"
        )
        zf.writestr(
            "demo-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"
        )
    assert read_core_metadata(str(path), KIND_WHEEL, "demo").name == "demo"


@pytest.mark.parametrize(
    "content",
    [b"", b"not a zip at all", b"PK\x03\x04" + b"\x00" * 100],
)
def test_garbage_wheels_raise_invalid_archive(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    path.write_bytes(content)
    with pytest.raises(InvalidArchive):
        read_core_metadata(str(path), KIND_WHEEL, "demo")


def test_wheel_without_metadata_raises(tmp_path: Path) -> None:
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("demo/__init__.py", "")
    with pytest.raises(InvalidArchive, match="no single metadata"):
        read_core_metadata(str(path), KIND_WHEEL, "demo")


def test_zip_bomb_metadata_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("demo-1.0.dist-info/METADATA", b"Metadata-Version: 2.1\n" + b"A" * 20_000_000)
    with pytest.raises(InvalidArchive):
        read_core_metadata(str(path), KIND_WHEEL, "demo")


def test_tar_bomb_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archives, "MAX_TAR_SCAN_BYTES", 1_000_000)
    path = tmp_path / "demo-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        big = tarfile.TarInfo("demo-1.0/big.bin")
        big.size = 5_000_000
        tf.addfile(big, io.BytesIO(b"\0" * big.size))
        info = tarfile.TarInfo("demo-1.0/PKG-INFO")
        data = b"Metadata-Version: 2.2\nName: demo\nVersion: 1.0\n"
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(InvalidArchive):
        read_core_metadata(str(path), KIND_SDIST)


def test_tar_with_path_tricks_does_not_yield_outside_pkg_info(tmp_path: Path) -> None:
    path = tmp_path / "demo-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name in ("../PKG-INFO", "/PKG-INFO", "a/b/PKG-INFO"):
            data = b"Metadata-Version: 2.2\nName: evil\nVersion: 6.6\n"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with pytest.raises(InvalidArchive):
        read_core_metadata(str(path), KIND_SDIST)


def test_truncated_tar_raises_invalid_archive(tmp_path: Path) -> None:
    sd = make_sdist(tmp_path, "foo", "1.0")
    data = sd.read_bytes()
    sd.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidArchive):
        read_core_metadata(str(sd), KIND_SDIST)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("top", ["demo-1.0", "d" * 90 + "-1.0", "d\u00e9mo-" + "x" * 120 + "-1.0"])
def test_pkg_info_is_found_in_every_tar_format_and_long_names(
    tmp_path: Path, fmt: int, top: str
) -> None:
    if fmt == tarfile.USTAR_FORMAT and (len(top) > 100 or not top.isascii()):
        pytest.skip("ustar cannot hold this name")
    path = tmp_path / "demo-1.0.tar.gz"
    data = b"Metadata-Version: 2.2\nName: demo\nVersion: 1.0\n"
    with tarfile.open(path, "w:gz", format=fmt) as tf:
        for name, payload in (
            (f"{top}/setup.py", b"x" * 3000),
            (f"{top}/sub/PKG-INFO", b"nope"),
            (f"{top}/PKG-INFO", data),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            info.mtime = 1.5  # a float mtime makes tarfile write a pax header in PAX format
            tf.addfile(info, io.BytesIO(payload))
    assert read_core_metadata(str(path), KIND_SDIST).raw == data


def test_huge_pax_header_is_refused_quickly_and_in_little_memory(tmp_path: Path) -> None:
    import gzip
    import resource

    path = tmp_path / "demo-1.0.tar.gz"
    with (
        gzip.open(path, "wb") as gz,
        tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tf,
    ):
        info = tarfile.TarInfo("demo-1.0/PKG-INFO")
        info.pax_headers = {"comment": "x" * 5_000_000}
        info.size = 5
        tf.addfile(info, io.BytesIO(b"hello"))
    assert path.stat().st_size < 1_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InvalidArchive, match="extended header too large"):
        read_core_metadata(str(path), KIND_SDIST)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 20_000  # KB


def test_metadata_with_absurdly_many_fields_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(
            "demo-1.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n" + "Classifier: x\n" * 50_000,
        )
    with pytest.raises(InvalidArchive, match="header section too large"):
        read_core_metadata(str(path), KIND_WHEEL, "demo")


@pytest.mark.parametrize("kind", ["encrypted", "method97", "baddeflate"])
def test_archives_that_make_zipfile_raise_odd_errors_are_invalid(tmp_path: Path, kind: str) -> None:
    whl = make_wheel(tmp_path / "src", "demo", "1.0")
    data = bytearray(whl.read_bytes())
    if kind == "encrypted":
        # Set the "encrypted" flag bit in every local and central header.
        for sig in (b"PK\x03\x04", b"PK\x01\x02"):
            start = 0
            while (i := data.find(sig, start)) >= 0:
                off = i + (6 if sig == b"PK\x03\x04" else 8)
                data[off] |= 1
                start = i + 4
    elif kind == "method97":
        for sig, off in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
            start = 0
            while (i := data.find(sig, start)) >= 0:
                data[i + off] = 97
                start = i + 4
    else:
        i = data.find(b"METADATA") + len("METADATA")
        data[i : i + 20] = b"\xff" * 20
    bad = tmp_path / "demo-1.0-py3-none-any.whl"
    bad.write_bytes(bytes(data))
    with pytest.raises(InvalidArchive):
        read_core_metadata(str(bad), KIND_WHEEL, "demo")


def test_fields_in_the_description_body_are_not_fields(tmp_path: Path) -> None:
    from pkgserver.metadata import parse_core_metadata

    raw = b"Metadata-Version: 2.1\r\nName: demo\r\nVersion: 1.0\r\nRequires-Dist: a\r\nSummary: s\r\n  continued\r\n\r\nRequires-Dist: evil\r\nName: other\r\n"
    meta = parse_core_metadata(raw, is_wheel=True)
    assert (meta.name, meta.version, meta.requires_dist, meta.summary) == (
        "demo",
        "1.0",
        ("a",),
        "s continued",
    )


def _tar_gz_bomb(path: Path, zeros: int) -> None:
    """A .tar.gz whose first member is ``zeros`` zero bytes (a few hundred KB on disk), then
    PKG-INFO; written as a stream, never whole in memory."""
    import gzip

    class Zeros(io.RawIOBase):
        def __init__(self, n: int) -> None:
            self.left = n

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            n = min(len(b), self.left)
            b[:n] = bytes(n)
            self.left -= n
            return n

    with gzip.open(path, "wb", compresslevel=9) as gz, tarfile.open(fileobj=gz, mode="w|") as tf:
        big = tarfile.TarInfo("demo-1.0/big.bin")
        big.size = zeros
        tf.addfile(big, io.BufferedReader(Zeros(zeros)))
        info = tarfile.TarInfo("demo-1.0/PKG-INFO")
        data = b"Metadata-Version: 2.2\nName: demo\nVersion: 1.0\n"
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))


def test_a_gzip_bomb_in_memory_is_decompressed_a_buffer_at_a_time(tmp_path: Path) -> None:
    # The first start reads small archives whole and opens them in memory: a 250 KB .tar.gz
    # was decompressed whole there, up to the 256 MB scan bound, in every indexing process.
    # Now it is decompressed a buffer at a time, and given up once it has inflated 200 times.
    import subprocess
    import sys

    path = tmp_path / "demo-1.0.tar.gz"
    _tar_gz_bomb(path, 200 * 1024 * 1024)
    assert path.stat().st_size < 400_000
    probe = (
        "import resource, sys\n"
        "from pkgserver.scan import read_core_metadata\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "from pkgserver.metadata import InvalidArchive\n"
        "try:\n"
        "    read_core_metadata(sys.argv[1], 'sdist', 'demo', data=data)\n"
        "except InvalidArchive as exc:\n"
        "    assert 'suspiciously well' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('a bomb was read')\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(path)], capture_output=True, text=True, check=True
    )
    assert int(out.stdout) < 32 * 1024, f"peak memory grew by {int(out.stdout) // 1024} MB"


@pytest.mark.parametrize("fmt", ["tar.gz", "tar.bz2"])
def test_a_bomb_is_given_up_on_quickly(tmp_path: Path, fmt: str) -> None:
    import bz2
    import gzip
    import time

    member = tarfile.TarInfo("demo-1.0/big.bin")
    member.size = 200 * 1024 * 1024
    head = member.tobuf(tarfile.USTAR_FORMAT)
    if fmt == "tar.bz2":  # 200 concatenated streams of 1 MB of zeros: 9 KB in all
        data = bz2.compress(head) + bz2.compress(bytes(1024 * 1024), 9) * 200
    else:
        data = gzip.compress(head + bytes(200 * 1024 * 1024), 9)
    path = tmp_path / f"demo-1.0.{fmt}"
    path.write_bytes(data)
    started = time.process_time()
    with pytest.raises(InvalidArchive, match="suspiciously well"):
        read_core_metadata(str(path), KIND_SDIST)
    # No timing assertion in the suite: the work done is what is bounded. 16 MB inflated
    # is a few hundredths of a second; the 256 MB scan bound took about a second.
    assert time.process_time() - started < 5


def test_real_sdists_are_not_taken_for_bombs(tmp_path: Path) -> None:
    import random

    rng = random.Random(7)
    path = tmp_path / "demo-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for i in range(300):  # 300 source-like files, 20 MB of text before PKG-INFO
            text = "".join(
                rng.choice(["def f():\n", "    return 1\n", "x = 2\n", "# c\n"])
                for _ in range(6000)
            )
            data = text.encode()
            info = tarfile.TarInfo(f"demo-1.0/src/m{i}.py")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        pkg = b"Metadata-Version: 2.2\nName: demo\nVersion: 1.0\n"
        info = tarfile.TarInfo("demo-1.0/PKG-INFO")
        info.size = len(pkg)
        tf.addfile(info, io.BytesIO(pkg))
    assert read_core_metadata(str(path), KIND_SDIST).name == "demo"


def test_an_unreadable_archive_is_read_once_not_per_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 279-byte .tar.bz2 bomb costs 0.65 s of CPU to give up on: a failure is remembered
    # like a success, or every /pypi/<p>/json would pay it again.
    from conftest import make_testapp

    from pkgserver import scan

    (tmp_path / "bomb-1.0.tar.bz2").write_bytes(b"BZh91AY&SY" + b"\0" * 269)
    make_wheel(tmp_path, "fine", "1.0")
    reads: list[str] = []
    original = metadata.core_metadata_of  # what MetadataStore reads with (as scan imports it)

    def counting(fh: Any, filename: str, *args: Any, **kw: Any) -> object:
        reads.append(filename)
        return original(fh, filename, *args, **kw)

    app, _ = make_testapp([tmp_path])
    monkeypatch.setattr(scan, "core_metadata_of", counting)
    for i in range(3):
        # Another Host each time: the rendering, keyed by its base URL, is not reused.
        host = {"HTTP_HOST": f"mirror{i}.example"}
        assert app.get("/pypi/bomb/json", extra_environ=host).json["info"]["name"] == "bomb"
        assert app.get("/pypi/fine/json", extra_environ=host).json["info"]["name"] == "fine"
    assert sorted(Path(p).name for p in reads) == [
        "bomb-1.0.tar.bz2",
        "fine-1.0-py3-none-any.whl",
    ]


def test_a_storage_failure_while_reading_is_not_remembered_as_an_unreadable_archive(
    tmp_path: Path,
) -> None:
    # An object store away mid-read: the archive reader sees an error and calls the archive
    # unreadable, but the next request, with the store back, must read it.
    from pkgserver.catalog import FileStat
    from pkgserver.scan import MetadataStore, describe

    wheel = make_wheel(tmp_path, "demo", "1.0")
    f = describe(str(tmp_path), wheel.name, wheel.stat())
    data = wheel.read_bytes()
    store_away = [True]

    class Flaky(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            if store_away[0] and self.tell() > 0:
                raise OSError(5, "the object store failed: connection reset")
            return super().read(n)

    def opener(path: str) -> tuple[Any, FileStat]:
        return Flaky(data), FileStat(f.size, f.mtime_ns, f.ino)

    store = MetadataStore(opener=opener)
    assert store.get(f) is None
    store_away[0] = False
    found = store.get(f)
    assert found is not None and found.name == "demo"


def test_a_zip_listing_too_many_members_is_refused_before_zipfile_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archives, "MAX_ZIP_MEMBERS", 100)
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(150):
            zf.writestr(f"demo/f{i}", b"")
        zf.writestr(
            "demo-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"
        )

    def no_zipfile(*args: object, **kw: object) -> None:
        raise AssertionError("zipfile.ZipFile must not be reached")

    monkeypatch.setattr(zipfile, "ZipFile", no_zipfile)  # the module metadata reads zips with
    with pytest.raises(metadata.InvalidArchive, match="too many members"):
        read_core_metadata(str(path), KIND_WHEEL, "demo")


def test_a_folded_header_is_joined_and_an_oversized_header_section_refused() -> None:
    folded = "Summary: start\n" + "".join(f"        part {i}\n" for i in range(50_000))
    meta = parse_core_metadata(
        ("Metadata-Version: 2.1\nName: d\nVersion: 1\n" + folded).encode(), is_wheel=True
    )
    assert (
        meta.summary is not None
        and meta.summary.startswith("start part 0 part 1")
        and meta.summary.endswith("part 49999")
    )
    huge = "Summary: " + "x" * 5_000_000 + "\n"
    with pytest.raises(InvalidArchive, match="header section too large"):
        parse_core_metadata(
            ("Metadata-Version: 2.1\nName: d\nVersion: 1\n" + huge).encode(), is_wheel=True
        )
