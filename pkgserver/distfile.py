"""Distribution filenames: which project and version a file belongs to.

Pure: no disk, no web. Names and versions come from ``packaging.utils`` parsers
(``foo-2fa-1.0.tar.gz`` is project ``foo-2fa``); the legacy formats that old directories
still hold are attributed only when that can be done without guessing.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

__all__ = [
    "DIST_EXTENSIONS",
    "SIDECARS",
    "DistInfo",
    "InvalidDistFilename",
    "file_key",
    "is_prerelease",
    "is_valid_project_name",
    "normalize",
    "parse_dist_filename",
    "version_key",
    "version_sort_key",
]

# Longest first, so that ".tar.gz" wins over a hypothetical ".gz".
DIST_EXTENSIONS = (".tar.bz2", ".tar.gz", ".tgz", ".whl", ".zip", ".egg")

# Files kept beside a distribution, named after it: a GPG signature, PEP 740 attestations
# as sent (a project without a trusted publisher: unverified, never served), and the
# provenance object of attestations that verified (served, see pkgserver.attest).
SIDECARS = (".asc", ".attestations.json", ".provenance.json")

# Kinds, as the upload API's ``filetype`` and warehouse's ``packagetype`` name them.
KIND_WHEEL = "bdist_wheel"
KIND_SDIST = "sdist"
KIND_EGG = "bdist_egg"

# Always with fullmatch: "$" also matches before a final newline, and "demo\n" (from
# /simple/demo%0a/) would pass as a name.
_VALID_NAME = re.compile(r"[A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9]", re.IGNORECASE)


class InvalidDistFilename(ValueError):
    """The filename is not a distribution that can be attributed to one project."""


class DistInfo(NamedTuple):
    project: NormalizedName
    version: str  # as written in the filename (normalized for PEP 440 versions)
    kind: str  # KIND_WHEEL, KIND_SDIST or KIND_EGG


def normalize(name: str) -> NormalizedName:
    """PEP 503 normalization."""
    return canonicalize_name(name)


def is_valid_project_name(name: str) -> bool:
    """PEP 508 / core metadata rule for a project name (ASCII, case-insensitive)."""
    return name.isascii() and bool(_VALID_NAME.fullmatch(name))


def dist_extension(filename: str) -> str | None:
    lower = filename.lower()
    for ext in DIST_EXTENSIONS:
        if lower.endswith(ext):
            return ext
    return None


def parse_dist_filename(filename: str) -> DistInfo:
    """Attribute ``filename`` to (project, version, kind) or raise InvalidDistFilename."""
    ext = dist_extension(filename)
    if ext is None:
        raise InvalidDistFilename(f"not a distribution file: {filename!r}")
    if not filename.isascii() or any(c in filename for c in " /\\\x00"):
        raise InvalidDistFilename(f"not a valid distribution filename: {filename!r}")
    if ext == ".whl":
        if not is_valid_project_name(filename.split("-", 1)[0]):
            raise InvalidDistFilename(f"invalid project name in {filename!r}")
        try:
            name, version, _build, _tags = parse_wheel_filename(filename)
        except (InvalidWheelFilename, InvalidVersion, ValueError) as exc:
            raise InvalidDistFilename(str(exc)) from None
        return DistInfo(name, str(version), KIND_WHEEL)
    stem = filename[: -len(ext)]
    if ext == ".egg":
        return _parse_egg(stem)
    if ext in (".tar.gz", ".zip"):
        if not is_valid_project_name(stem.rpartition("-")[0] or stem):
            return _parse_legacy_sdist(stem)
        try:
            name, version = parse_sdist_filename(filename)
        except (InvalidSdistFilename, InvalidVersion, ValueError):
            return _parse_legacy_sdist(stem)
        return DistInfo(name, str(version), KIND_SDIST)
    # .tar.bz2 and .tgz: the same naming as a .tar.gz sdist.
    if not is_valid_project_name(stem.rpartition("-")[0] or stem):
        return _parse_legacy_sdist(stem)
    try:
        name, version = parse_sdist_filename(stem + ".tar.gz")
    except (InvalidSdistFilename, InvalidVersion, ValueError):
        return _parse_legacy_sdist(stem)
    return DistInfo(name, str(version), KIND_SDIST)


def _parse_legacy_sdist(stem: str) -> DistInfo:
    """Old sdists with non-PEP 440 versions, e.g. ``foo-1.0-beta``.

    Attributed only when exactly one ``-<digit>`` boundary exists, so that the split between
    name and version is not a guess (``foo-2fa-1.0-beta`` stays unattributed).
    """
    cuts = [m.start() for m in re.finditer(r"-(?=\d)", stem)]
    if len(cuts) != 1:
        raise InvalidDistFilename(f"cannot tell project from version in {stem!r}")
    name, version = stem[: cuts[0]], stem[cuts[0] + 1 :]
    if not is_valid_project_name(name) or not _is_plain_version(version):
        raise InvalidDistFilename(f"cannot attribute {stem!r}")
    return DistInfo(normalize(name), version, KIND_SDIST)


def _parse_egg(stem: str) -> DistInfo:
    # Eggs are ``name-version(-pyX.Y(-platform))``, with "-" in the name escaped as "_".
    parts = stem.split("-")
    if len(parts) < 2:
        raise InvalidDistFilename(f"egg without a version: {stem!r}")
    name, version = parts[0], parts[1]
    if not is_valid_project_name(name) or not _is_plain_version(version):
        raise InvalidDistFilename(f"cannot attribute egg {stem!r}")
    try:
        version = str(Version(version))
    except (InvalidVersion, ValueError):
        pass
    return DistInfo(normalize(name), version, KIND_EGG)


def _is_plain_version(version: str) -> bool:
    return (
        bool(version)
        and version.isascii()
        and bool(re.fullmatch(r"[0-9][A-Za-z0-9.+_!-]*", version))
    )


def file_key(filename: str) -> tuple[object, ...] | None:
    """What makes two files "the same file" to the index (None if ``filename`` is no
    distribution): the same distribution for an installer, so that it could take either.

    - Names that differ only in case or in ``-_.``, and versions that are equal (1.0 == 1.0.0).
    - Wheels: the same build tag and tags. Eggs: the same Python and platform part.
    - sdists: any two of one release, whatever their format (``.tar.gz``, ``.zip``,
      ``.tar.bz2``, ``.tgz``): PEP 527 allows one sdist per release.

    The one rule for uploads (a second such file is "File already exists") and for
    ``pkgserver check`` (it reports two such files as duplicates)."""
    try:
        info = parse_dist_filename(filename)
    except InvalidDistFilename:
        return None
    version = version_key(info.version)
    if info.kind == KIND_WHEEL:
        _, _, build, tags = parse_wheel_filename(filename)
        return (info.project, version, info.kind, build, frozenset(str(t) for t in tags))
    if info.kind == KIND_EGG:
        # name-version-pyX.Y(-platform).egg: the python and platform parts tell eggs apart.
        tail = filename[: -len(".egg")].split("-")[2:]
        return (info.project, version, info.kind, "-".join(tail).lower())
    return (info.project, version, info.kind)


def version_key(version: str) -> Version | str:
    """What makes two spellings one version: the PEP 440 version (1.0 == 1.0.0), or for
    other versions the lower-cased string."""
    try:
        return Version(version)
    except (InvalidVersion, ValueError):  # ValueError: a number too long to convert
        return version.lower()


def is_prerelease(version: str) -> bool:
    key = version_key(version)
    return isinstance(key, Version) and key.is_prerelease


@functools.lru_cache(maxsize=65536)  # versions repeat across projects: parse each once
def version_sort_key(version: str) -> tuple[int, Version | str]:
    """Sort key that puts non-PEP 440 versions first, then PEP 440 versions in order."""
    try:
        return (1, Version(version))
    except (InvalidVersion, ValueError):  # ValueError: an int too long to convert
        return (0, version)
