"""Core metadata: read out of a distribution archive (through archives.py, which bounds
everything) and parsed, for installers (``CoreMetadata``) and for people (``Details``).
"""

from __future__ import annotations

from typing import IO, NamedTuple

from .archives import (
    MAX_METADATA_BYTES,
    InvalidArchive,
    egg_pkg_info,
    sdist_pkg_info,
    tar_pkg_info,
    wheel_metadata_member,
    zip_member,
)
from .distfile import KIND_WHEEL

__all__ = [
    "MAX_METADATA_BYTES",
    "CoreMetadata",
    "Details",
    "InvalidArchive",
    "core_metadata_of",
    "parse_core_metadata",
    "parse_details",
]

# Fields a METADATA may have; real ones have tens to a few hundred. Old metadata
# (1.x) folds the whole description into a header, hence the generous byte bound.
MAX_HEADER_LINES = 10_000
MAX_HEADER_BYTES = 4 * 1024 * 1024
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
    fields = _parse_headers(text)
    dynamic = tuple(d.lower() for d in fields.get("dynamic", ()))
    mv = _first(fields, "metadata-version")
    if is_wheel:
        servable = True
    else:
        servable = _version_tuple(mv) >= (2, 2) and not (_INSTALL_RELEVANT & set(dynamic))
    summary = _first(fields, "summary")
    return CoreMetadata(
        raw=raw,
        name=_first(fields, "name"),
        version=_first(fields, "version"),
        summary=summary.strip() if summary else None,
        requires_python=(_first(fields, "requires-python") or "").strip() or None,
        requires_dist=tuple(fields.get("requires-dist", ())),
        metadata_version=mv,
        dynamic=dynamic,
        servable=servable,
    )


def _parse_headers(head: str) -> dict[str, list[str]]:
    """RFC 822 style header block -> lower-cased field name -> values (continuations joined).

    Core metadata is this simple; email.parser was most of the cost of indexing a file. Linear
    in the input (folded lines are collected, then joined once) and bounded in lines and bytes.
    """
    fields: dict[str, list[str]] = {}
    pieces: list[str] | None = None  # the value being built, with its continuation lines
    target: list[str] | None = None
    size = 0

    def flush() -> None:
        if target is not None and pieces is not None:
            target.append(" ".join(pieces))

    count = 0
    for line in head.splitlines():
        if not line.strip():
            break  # the body (description) follows the first blank line
        size += len(line) + 1
        if size > MAX_HEADER_BYTES:
            # Parsing cost grows with the header section, not with the body after it.
            raise InvalidArchive("metadata header section too large")
        if line[:1] in (" ", "\t"):
            if pieces is not None:
                pieces.append(line.strip())
            continue
        count += 1
        if count > MAX_HEADER_LINES:
            raise InvalidArchive("metadata header section too large (too many fields)")
        flush()
        key, colon, value = line.partition(":")
        if not colon:
            target = pieces = None
            continue
        target = fields.setdefault(key.strip().lower(), [])
        pieces = [value.strip()]
    flush()
    return fields


def _first(fields: dict[str, list[str]], key: str) -> str | None:
    values = fields.get(key)
    return values[0] if values else None


def core_metadata_of(
    fh: IO[bytes],
    filename: str,
    kind: str,
    project: str | None = None,
    data: bytes | None = None,
) -> CoreMetadata:
    """The core metadata of the distribution open as ``fh`` (whose bytes ``data`` may also be,
    for reading a small zip without zipfile).

    ``filename`` names the format; ``kind`` is the distfile kind; ``project`` (normalized)
    picks the right ``.dist-info`` when a wheel has several. Raises InvalidArchive, whatever
    the bytes do.
    """
    lower = filename.lower()
    try:
        if kind == KIND_WHEEL:
            raw = zip_member(fh, wheel_metadata_member(project), data)
            return parse_core_metadata(raw, is_wheel=True)
        if lower.endswith((".zip", ".egg")):
            selector = egg_pkg_info if lower.endswith(".egg") else sdist_pkg_info
            raw = zip_member(fh, selector, data)
        else:
            raw = tar_pkg_info(fh, lower)
        return parse_core_metadata(raw, is_wheel=False)
    except InvalidArchive:
        raise
    except Exception as exc:
        # Untrusted bytes reach zipfile, zlib, bz2 and our tar reader, which raise a zoo of
        # types (zlib.error, RuntimeError for encrypted members, NotImplementedError for unknown
        # compression, ...). Whatever it is, the archive is unreadable; never let it escape.
        raise InvalidArchive(f"unreadable archive: {type(exc).__name__}: {exc}") from None


class Details(NamedTuple):
    """What a project page shows of a release's core metadata (not needed to serve installers,
    so parsed only when a page is rendered)."""

    summary: str | None
    description: str
    description_content_type: str | None
    requires_python: str | None
    requires_dist: tuple[str, ...]
    project_urls: tuple[tuple[str, str], ...]  # (label, url)
    author: str | None
    license: str | None
    keywords: str | None
    classifiers: tuple[str, ...]


def parse_details(raw: bytes) -> Details:
    """The human-facing fields of a METADATA / PKG-INFO file, leniently.

    The description is the body after the headers (Metadata 2.1+) or the ``Description``
    header, whose continuation lines carry 8 spaces or ``|`` (distutils' folding)."""
    import email.parser
    import email.policy

    text = raw.decode("utf-8", errors="replace")
    msg = email.parser.Parser(policy=email.policy.compat32).parsestr(text)

    def first(name: str) -> str | None:
        value = msg.get(name)
        if value is None:
            return None
        value = str(value).strip()
        return value if value and value.upper() != "UNKNOWN" else None

    def every(name: str) -> tuple[str, ...]:
        return tuple(str(v).strip() for v in (msg.get_all(name) or ()) if str(v).strip())

    body = msg.get_payload()
    description = body if isinstance(body, str) and body.strip() else ""
    if not description:
        header = msg.get("Description")
        if header is not None:
            lines = str(header).splitlines()
            unfolded = [lines[0]] if lines else []
            for line in lines[1:]:
                if line.startswith("        "):
                    line = line[8:]
                elif line.startswith("       |"):
                    line = line[8:]
                unfolded.append(line)
            description = "\n".join(unfolded)
    urls: list[tuple[str, str]] = []
    home = first("Home-page")
    if home:
        urls.append(("Homepage", home))
    for item in every("Project-URL"):
        label, sep, url = item.partition(",")
        if sep and url.strip():
            urls.append((label.strip() or url.strip(), url.strip()))
    author = first("Author") or first("Author-email") or first("Maintainer")
    license_ = first("License-Expression") or first("License")
    if license_ and len(license_) > 200:  # a whole license text pasted in: not a headline
        license_ = None
    return Details(
        summary=first("Summary"),
        description=description,
        description_content_type=first("Description-Content-Type"),
        requires_python=first("Requires-Python"),
        requires_dist=every("Requires-Dist"),
        project_urls=tuple(urls),
        author=author,
        license=license_,
        keywords=first("Keywords"),
        classifiers=every("Classifier"),
    )
