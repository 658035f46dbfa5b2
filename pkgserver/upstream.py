"""An upstream index's project page, read as untrusted input (the caching proxy, --proxy).

``parse_page`` turns the body of an upstream ``/simple/<project>/`` (PEP 691 JSON or PEP 503
HTML) into an ``UpstreamPage``: only files whose name parses as a distribution of that very
project, whose URL is http(s) (https under an https page), and that come with a sha256 (the
cache keeps nothing it cannot verify). Every other field is checked for its type and bound in
size before it is kept; what does not pass is dropped, never trusted. Pure: no I/O here.
"""

from __future__ import annotations

import html.parser
import json
import re
from typing import Any, NamedTuple
from urllib.parse import unquote, urljoin, urlsplit

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from .distfile import InvalidDistFilename, normalize, parse_dist_filename, version_key

__all__ = [
    "MAX_FILES",
    "UpstreamFile",
    "UpstreamPage",
    "UpstreamPageError",
    "parse_page",
]

MAX_FILES = 200_000  # files kept of one page (PyPI's largest pages hold a few ten thousand)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_UPLOAD_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")
_MAX_TEXT = 1024  # requires-python, a yank reason


class UpstreamPageError(ValueError):
    """The upstream's answer is not a project page pkgserver can read."""


class UpstreamFile(NamedTuple):
    """One file of an upstream page, as the cache keeps and serves it."""

    filename: str
    url: str  # absolute, http(s), without fragment
    sha256: str
    version: str
    size: int | None = None
    requires_python: str | None = None
    yanked: str | None = None  # None: not yanked; "" yanked without a reason
    metadata_sha256: str | None = None  # PEP 658 metadata, when the upstream has it hashed
    upload_time: str | None = None  # PEP 700, as the upstream gave it (checked form)

    def as_record(self) -> dict[str, Any]:
        return {k: v for k, v in self._asdict().items() if v is not None}


# Pages' filename -> entry dicts, by id() of the page (kept with the page itself, so that an id
# reused by another page is told apart).
_INDEXES: dict[int, tuple[UpstreamPage, dict[str, UpstreamFile]]] = {}


class UpstreamPage(NamedTuple):
    """A project's page as fetched from the upstream, with what revalidating it needs."""

    name: str  # normalized
    url: str  # where it was fetched
    files: tuple[UpstreamFile, ...]
    fetched: float  # when the upstream last confirmed it (fetched or answered 304)
    etag: str | None = None
    last_modified: str | None = None
    max_age: float = 0.0  # the upstream's Cache-Control max-age, seconds (bounded)

    @property
    def versions(self) -> list[str]:
        return sorted({f.version for f in self.files}, key=version_key)

    def file(self, filename: str) -> UpstreamFile | None:
        """The entry of ``filename``: a dict lookup, the dict made once per page."""
        index = _INDEXES.get(id(self))
        if index is None or index[0] is not self:
            index = (self, {f.filename: f for f in self.files})
            if len(_INDEXES) > 4096:
                _INDEXES.clear()
            _INDEXES[id(self)] = index
        return index[1].get(filename)

    def to_json(self) -> bytes:
        doc = {
            "v": 1,
            "name": self.name,
            "url": self.url,
            "fetched": self.fetched,
            "etag": self.etag,
            "last_modified": self.last_modified,
            "max_age": self.max_age,
            "files": [f.as_record() for f in self.files],
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, name: str) -> UpstreamPage:
        """A page the cache stored (``to_json``); checked again as the upstream's were, since
        the cache folder may have been edited. Raises UpstreamPageError."""
        try:
            doc = json.loads(data)
        except ValueError:
            raise UpstreamPageError("cached page is not JSON") from None
        if not isinstance(doc, dict) or doc.get("v") != 1 or doc.get("name") != name:
            raise UpstreamPageError("cached page is not one of this version's")
        url = doc.get("url")
        fetched = doc.get("fetched")
        if not isinstance(url, str) or not isinstance(fetched, (int, float)):
            raise UpstreamPageError("cached page lacks its URL or time")
        files = doc.get("files")
        if not isinstance(files, list):
            raise UpstreamPageError("cached page lacks its files")
        entries = []
        for item in files[:MAX_FILES]:
            if not isinstance(item, dict):
                continue
            f = _checked_entry(
                name,
                url,
                item.get("filename"),
                item.get("url"),
                item.get("sha256"),
                size=item.get("size"),
                requires_python=item.get("requires_python"),
                yanked=item.get("yanked"),
                metadata_sha256=item.get("metadata_sha256"),
                upload_time=item.get("upload_time"),
            )
            if f is not None:
                entries.append(f)
        return cls(
            name,
            url,
            _first_of_each(entries),
            float(fetched),
            _text_or_none(doc.get("etag")),
            _text_or_none(doc.get("last_modified")),
            max_age_of(f"max-age={doc.get('max_age')}"),
        )


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and len(value) <= _MAX_TEXT else None


def _first_of_each(files: list[UpstreamFile]) -> tuple[UpstreamFile, ...]:
    """One entry per filename, the first (a page listing a name twice with two hashes would
    have installers take one link and the cache verify the other)."""
    seen: set[str] = set()
    out = []
    for f in files:
        if f.filename not in seen:
            seen.add(f.filename)
            out.append(f)
    return tuple(out)


def parse_page(
    body: bytes, content_type: str, page_url: str, name: str, fetched: float
) -> UpstreamPage:
    """The upstream's answer for ``/simple/<name>/`` (``name`` normalized) as a page; raises
    UpstreamPageError when it is neither PEP 691 JSON nor HTML."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media.endswith("json"):
        files = _from_json(body, page_url, name)
    elif media in ("text/html", "application/vnd.pypi.simple.v1+html", ""):
        files = _from_html(body, page_url, name)
    else:
        raise UpstreamPageError(f"the upstream answered {media!r}, not a project page")
    return UpstreamPage(name, page_url, _first_of_each(files), fetched)


def _from_json(body: bytes, page_url: str, name: str) -> list[UpstreamFile]:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise UpstreamPageError("the upstream's JSON page does not parse") from None
    if not isinstance(doc, dict):
        raise UpstreamPageError("the upstream's JSON page is not an object")
    meta = doc.get("meta")
    version = meta.get("api-version") if isinstance(meta, dict) else None
    if not isinstance(version, str) or not version.startswith("1."):
        raise UpstreamPageError("the upstream's JSON page is not of the simple API version 1")
    files = doc.get("files")
    if not isinstance(files, list):
        raise UpstreamPageError("the upstream's JSON page has no list of files")
    out: list[UpstreamFile] = []
    for item in files:
        if len(out) >= MAX_FILES:
            break
        if not isinstance(item, dict):
            continue
        hashes = item.get("hashes")
        sha = hashes.get("sha256") if isinstance(hashes, dict) else None
        core = item.get("core-metadata", item.get("dist-info-metadata"))
        meta_sha = core.get("sha256") if isinstance(core, dict) else None
        yanked = item.get("yanked")
        f = _checked_entry(
            name,
            page_url,
            item.get("filename"),
            item.get("url"),
            sha,
            size=item.get("size"),
            requires_python=item.get("requires-python"),
            yanked=("" if yanked is True else yanked if isinstance(yanked, str) else None),
            metadata_sha256=meta_sha,
            upload_time=item.get("upload-time"),
        )
        if f is not None:
            out.append(f)
    return out


class _Anchors(html.parser.HTMLParser):
    """The attributes of every <a> of a page (bounded by MAX_FILES)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a" and len(self.found) < MAX_FILES:
            self.found.append(dict(attrs))


def _from_html(body: bytes, page_url: str, name: str) -> list[UpstreamFile]:
    parser = _Anchors()
    try:
        parser.feed(body.decode("utf-8", "replace"))
        parser.close()
    except (AssertionError, ValueError):  # (html.parser's own, on some malformed input)
        raise UpstreamPageError("the upstream's HTML page does not parse") from None
    out: list[UpstreamFile] = []
    for attrs in parser.found:
        href = attrs.get("href")
        if not href:
            continue
        _, _, fragment = href.partition("#")
        algo, _, digest = fragment.partition("=")
        core = attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
        meta_algo, _, meta_digest = (core or "").partition("=")
        filename = unquote(urlsplit(href).path.rsplit("/", 1)[-1])
        f = _checked_entry(
            name,
            page_url,
            filename,
            href,
            digest if algo == "sha256" else None,
            requires_python=attrs.get("data-requires-python"),
            yanked=attrs.get("data-yanked") if "data-yanked" in attrs else None,
            metadata_sha256=meta_digest if meta_algo == "sha256" else None,
        )
        if f is not None:
            out.append(f)
    return out


def _checked_entry(
    name: str,
    page_url: str,
    filename: Any,
    url: Any,
    sha256: Any,
    *,
    size: Any = None,
    requires_python: Any = None,
    yanked: Any = None,
    metadata_sha256: Any = None,
    upload_time: Any = None,
) -> UpstreamFile | None:
    """One file as kept, or None when it cannot be served safely: another project's name, a
    name that is not a distribution's, a URL that is not http(s) (or a downgrade from https),
    no sha256."""
    if not isinstance(filename, str) or not isinstance(url, str) or len(filename) > 255:
        return None
    if filename.startswith(".") or not filename.isprintable() or len(url) > 4096:
        return None  # (Version strips whitespace: "p-1.0\n.tar.gz" parses)
    try:
        info = parse_dist_filename(filename)
    except InvalidDistFilename:
        return None
    if normalize(info.project) != name:
        return None
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256.lower()):
        return None
    absolute = urljoin(page_url, url).partition("#")[0]
    parts = urlsplit(absolute)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    if urlsplit(page_url).scheme == "https" and parts.scheme != "https":
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        size = None
    return UpstreamFile(
        filename,
        absolute,
        sha256.lower(),
        info.version,
        size,
        _requires_python(requires_python),
        yanked[:_MAX_TEXT] if isinstance(yanked, str) else None,
        (
            metadata_sha256.lower()
            if isinstance(metadata_sha256, str) and _SHA256.fullmatch(metadata_sha256.lower())
            else None
        ),
        _upload_time(upload_time),
    )


def _requires_python(value: Any) -> str | None:
    """A requires-python that parses as a specifier set (else dropped: pip ignores one that
    does not, and it reaches HTML)."""
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_TEXT:
        return None
    try:
        SpecifierSet(value)
    except InvalidSpecifier:
        return None
    return value


def _upload_time(value: Any) -> str | None:
    return value if isinstance(value, str) and _UPLOAD_TIME.fullmatch(value) else None


MAX_AGE_CAP = 86400.0  # an upstream's max-age is believed up to a day
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d{1,9})(?:\.0)?\"?(?:$|[,\s])")


def max_age_of(cache_control: str | None) -> float:
    """The ``max-age`` of a Cache-Control value in seconds (0 when absent, ``no-store`` or
    ``no-cache``), at most MAX_AGE_CAP."""
    value = (cache_control or "").lower()
    if "no-store" in value or "no-cache" in value:
        return 0.0
    m = _MAX_AGE.search(value)
    return min(float(m.group(1)), MAX_AGE_CAP) if m else 0.0
