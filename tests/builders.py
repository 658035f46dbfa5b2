"""Build valid wheels and sdists in-process, for tests and the benchmark (no binaries shipped).

The wheels install with pip and uv: METADATA, WHEEL and a RECORD with real hashes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tarfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal


def _dist_name(name: str) -> str:
    # Wheel and sdist filenames use the normalized name with "_" (PEP 427, PEP 625).
    return re.sub(r"[-_.]+", "_", name).lower()


def metadata_text(
    name: str,
    version: str,
    *,
    summary: str | None = None,
    requires_python: str | None = None,
    requires_dist: Sequence[str] = (),
    metadata_version: str = "2.1",
    dynamic: Sequence[str] = (),
    description: str | None = None,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> str:
    lines = [f"Metadata-Version: {metadata_version}", f"Name: {name}", f"Version: {version}"]
    if summary is not None:
        lines.append(f"Summary: {summary}")
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    lines.extend(f"Requires-Dist: {r}" for r in requires_dist)
    lines.extend(f"Dynamic: {d}" for d in dynamic)
    lines.extend(f"{k}: {v}" for k, v in extra_headers)
    text = "\n".join(lines) + "\n"
    if description:
        text += "\n" + description + "\n"
    return text


def make_wheel(
    directory: str | os.PathLike[str],
    name: str,
    version: str,
    *,
    module: str | None = None,
    body: str | None = None,
    tag: str = "py3-none-any",
    filename: str | None = None,
    **meta: Any,
) -> Path:
    """Write an installable pure-Python wheel; returns its path."""
    dist = _dist_name(name)
    module = module or dist
    dist_info = f"{dist}-{version}.dist-info"
    files: dict[str, bytes] = {
        f"{module}/__init__.py": (body or f"NAME = {name!r}\nVERSION = {version!r}\n").encode(),
        f"{dist_info}/METADATA": metadata_text(name, version, **meta).encode(),
        f"{dist_info}/WHEEL": (
            f"Wheel-Version: 1.0\nGenerator: pkgserver-tests\nRoot-Is-Purelib: true\nTag: {tag}\n"
        ).encode(),
    }
    record_lines = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record_lines.append(f"{path},sha256={digest},{len(data)}")
    record_lines.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record_lines) + "\n").encode()
    out = Path(directory) / (filename or f"{dist}-{version}-{tag}.whl")
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            info = zipfile.ZipInfo(path, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    out.write_bytes(buf.getvalue())
    return out


def make_sdist(
    directory: str | os.PathLike[str],
    name: str,
    version: str,
    *,
    fmt: str = "tar.gz",
    filename: str | None = None,
    pkg_info: str | None = None,
    **meta: Any,
) -> Path:
    """Write an sdist (tar.gz, tar.bz2 or zip) with PKG-INFO; returns its path."""
    stem = f"{_dist_name(name)}-{version}"
    out = Path(directory) / (filename or f"{stem}.{fmt}")
    out.parent.mkdir(parents=True, exist_ok=True)
    members = {
        f"{stem}/PKG-INFO": (pkg_info or metadata_text(name, version, **meta)).encode(),
        f"{stem}/setup.py": b"from setuptools import setup\nsetup()\n",
    }
    if fmt == "zip":
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for path, data in members.items():
                zf.writestr(path, data)
    else:
        modes: dict[str, Literal["w:gz", "w:bz2"]] = {
            "tar.gz": "w:gz",
            "tgz": "w:gz",
            "tar.bz2": "w:bz2",
        }
        mode = modes[fmt]
        with tarfile.open(out, mode) as tf:
            for path, data in members.items():
                info = tarfile.TarInfo(path)
                info.size = len(data)
                info.mtime = int(time.time())
                tf.addfile(info, io.BytesIO(data))
    return out


def big_wheel(directory: Path, name: str, version: str, size: int) -> Path:
    """A valid wheel with one stored (uncompressed) member of ``size`` random bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{version}-py3-none-any.whl"
    di = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{di}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(
            f"{di}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        with zf.open(f"{name}/blob.bin", "w", force_zip64=True) as member:
            left = size
            while left:
                n = min(left, 8 * 1024 * 1024)
                member.write(os.urandom(n))
                left -= n
        zf.writestr(f"{di}/RECORD", "")
    return path
