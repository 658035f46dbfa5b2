from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from builders import make_sdist, make_wheel

from pkgserver import metadata
from pkgserver.distfile import KIND_SDIST, KIND_WHEEL
from pkgserver.metadata import InvalidArchive, read_core_metadata


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
    monkeypatch.setattr(metadata, "MAX_TAR_SCAN_BYTES", 1_000_000)
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
