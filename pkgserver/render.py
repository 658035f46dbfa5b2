"""Pure renderers: catalog entries -> PEP 503 HTML, PEP 691 JSON, warehouse JSON; negotiation.

Nothing here touches the disk or the web framework. Every string that reaches HTML goes through
``esc`` (PEP 503 pages are hand-written for speed, so escaping is explicit and tested).
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import html
import json
from typing import Any, NamedTuple
from urllib.parse import quote

from .catalog import DistFile, Project, ProjectStatus, RenderCache, Snapshot
from .metadata import CoreMetadata
from .upstream import UpstreamFile, UpstreamPage

__all__ = [
    "HTML",
    "HTML_V1",
    "JSON_V1",
    "Rendered",
    "esc",
    "etag_of",
    "file_url",
    "negotiate",
    "provenance_url",
    "render_file_list",
    "render_index",
    "render_project",
    "render_project_json_api",
    "render_proxied",
]

HTML = "text/html"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
JSON_V1 = "application/vnd.pypi.simple.v1+json"
API_VERSION = "1.4"  # PEP 700 (1.1), PEP 740 provenance (1.3), PEP 792 project status (1.4)

# Media types we answer; "latest" aliases are answered with the real v1 type (PEP 691).
_ALIASES = {
    "application/vnd.pypi.simple.latest+json": JSON_V1,
    "application/vnd.pypi.simple.latest+html": HTML_V1,
    JSON_V1: JSON_V1,
    HTML_V1: HTML_V1,
    HTML: HTML,
}
# Server preference among explicit types of equal q-value: JSON first.
_PREFERENCE = (JSON_V1, HTML_V1, HTML)
# ?format= values: the media types themselves, plus short names people type by hand.
_FORMAT_NAMES = {"json": JSON_V1, "html": HTML}


class Rendered(NamedTuple):
    body: bytes
    content_type: str
    etag: str  # quoted strong ETag


GZIP_MIN = 1024  # smaller bodies are sent as they are


def accepts_gzip(header: str | None) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (pip and uv send "gzip, deflate, ...")."""
    if not header:
        return False
    star = False
    for item in header.lower().split(","):
        coding, _, params = item.strip().partition(";")
        q = 1.0
        key, _, value = params.strip().partition("=")
        if key.strip() == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
        if coding.strip() in ("gzip", "x-gzip"):
            return q > 0
        if coding.strip() == "*":
            star = q > 0
    return star


def gzipped(cache: RenderCache, key: Any, page: Rendered) -> Rendered | None:
    """The gzip variant of a cached rendering, compressed once (None if not worth it).

    Its ETag differs from the plain one's: they are different representations.
    """
    if len(page.body) < GZIP_MIN:
        return None
    variant: Rendered | None = cache.get((key, "gzip"))
    if variant is None:
        body = gzip.compress(page.body, compresslevel=6, mtime=0)
        variant = Rendered(body, page.content_type, page.etag[:-1] + '-gz"')
        cache[(key, "gzip")] = variant
    return variant


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def etag_of(body: bytes) -> str:
    """The quoted strong ETag of a rendering."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


# -- negotiation (PEP 691) -------------------------------------------------------------------
def negotiate(accept: str | None, format_param: str | None = None) -> str | None:
    """The media type to answer with, or None (406)."""
    if format_param:
        value = format_param.strip().lower()
        value = _FORMAT_NAMES.get(value, value)
        return _ALIASES.get(value) or (HTML if value in ("text/*", "*/*") else None)
    if not accept or not accept.strip():
        accept = "*/*"
    best: tuple[float, int, str] | None = None
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";")]
        media = parts[0].lower()
        if not media:
            continue
        q = 1.0
        for param in parts[1:]:
            key, _, val = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(val.strip())
                except ValueError:
                    q = 0.0
                q = min(max(q, 0.0), 1.0)
        if q <= 0:
            continue
        if media in _ALIASES:
            candidates = [_ALIASES[media]]
        elif media == "*/*":
            # Wildcards get HTML: what curl, wget and pre-PEP 691 tools expect to see.
            candidates = [HTML]
        elif media == "application/*":
            candidates = [JSON_V1, HTML_V1]
        elif media == "text/*":
            candidates = [HTML]
        else:
            continue
        for media_type in candidates:
            rank = (q, -_PREFERENCE.index(media_type), media_type)
            if best is None or rank[:2] > best[:2]:
                best = rank
            break
    return best[2] if best else None


# -- helpers ------------------------------------------------------------------------------------
def file_url(f: DistFile, prefix: str = "../../packages/") -> str:
    """URL of a file relative to a project page (``/simple/<name>/``), so proxies with a path
    prefix keep working without configuration."""
    return prefix + quote(f.relpath, safe="/")


def provenance_url(f: DistFile, base_url: str) -> str:
    """Where the file's PEP 740 provenance is served (the Integrity API's path, as PyPI's):
    absolute, as PEP 740 wants it; ``base_url`` ends in a slash."""
    parts = (f.project, f.version, f.filename)
    return base_url + "integrity/" + "/".join(quote(p, safe="") for p in parts) + "/provenance"


def has_provenance(project: Project) -> bool:
    """Whether a file of the project has provenance: its pages then hold absolute URLs, so
    they depend on the base URL they are served under."""
    return project.has_provenance


def upload_time(f: DistFile) -> str:
    """PEP 700's ``upload-time``: ISO 8601 in UTC with microseconds and a ``Z``."""
    seconds, ns = divmod(f.upload_time_ns, 1_000_000_000)
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.replace(microsecond=ns // 1000).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _hash_fragment(f: DistFile, hash_algo: str | None) -> str:
    if not hash_algo:
        return ""
    if hash_algo == "sha256":
        return f"#sha256={f.sha256}"
    for algo, digest in f.extra_hashes:
        if algo == hash_algo:
            return f"#{algo}={digest}"
    return f"#sha256={f.sha256}"


_HEAD = (
    "<!DOCTYPE html>\n<html>\n  <head>\n"
    f'    <meta name="pypi:repository-version" content="{API_VERSION}">\n{{meta}}'
    "    <title>{title}</title>\n  </head>\n  <body>\n"
)


def _head(title: str, status: ProjectStatus | None = None) -> str:
    """The head of a page (``title`` escaped already), with a project's PEP 792 status marker
    and reason as meta tags. An active project has none (the PEP lets an index omit them)."""
    meta = ""
    if status is not None:
        meta = f'    <meta name="pypi:project-status" content="{esc(status.status)}">\n'
        if status.reason:
            meta += f'    <meta name="pypi:project-status-reason" content="{esc(status.reason)}">\n'
    return _HEAD.format(title=title, meta=meta)


def _status_json(status: ProjectStatus) -> dict[str, str]:
    """PEP 792's JSON "project-status": "status", and "reason" only when one was given. (The
    PEP's prose names the first key "state"; its example, PyPI and uv use "status".)"""
    return {"status": status.status, **({"reason": status.reason} if status.reason else {})}


_TAIL = "  </body>\n</html>\n"


# -- /simple/ ------------------------------------------------------------------------------------
def render_index(snapshot: Snapshot, media_type: str) -> Rendered:
    key = ("index", media_type)
    cached = snapshot.cache.get(key)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    projects = sorted(snapshot.projects.values(), key=lambda p: p.name)
    if media_type == JSON_V1:
        doc = {
            "meta": {"api-version": API_VERSION, "_last-serial": snapshot.generation},
            "projects": [{"name": p.display_name} for p in projects],
        }
        body = json.dumps(doc, separators=(",", ":")).encode()
    else:
        out = [_head("Simple index"), "    <h1>Simple index</h1>\n"]
        out.extend(
            f'    <a href="{esc(quote(p.name))}/">{esc(p.display_name)}</a><br>\n' for p in projects
        )
        out.append(_TAIL)
        body = "".join(out).encode()
    rendered = Rendered(body, media_type, etag_of(body))
    snapshot.cache[key] = rendered
    return rendered


# -- /packages/ ---------------------------------------------------------------------------------
def render_file_list(snapshot: Snapshot, hash_algo: str | None = "sha256") -> Rendered:
    """Every file as a link, as pypiserver's ``/packages/`` lists them: what
    ``pip install --find-links URL/packages/`` reads (links relative to that page)."""
    key = ("files", hash_algo)
    cached = snapshot.cache.get(key)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    files = sorted(
        (f for f in snapshot.files.values() if snapshot.offers(f)),
        key=lambda f: (f.project, f.sort_key, f.relpath),
    )
    out = [_head("Index of packages"), "    <h1>Index of packages</h1>\n"]
    out.extend(
        f'    <a href="{esc(file_url(f, "") + _hash_fragment(f, hash_algo))}">'
        f"{esc(f.filename)}</a><br>\n"
        for f in files
    )
    out.append(_TAIL)
    body = "".join(out).encode()
    rendered = Rendered(body, HTML, etag_of(body))
    snapshot.cache[key] = rendered
    return rendered


# -- /simple/<project>/ -------------------------------------------------------------------------
MAX_BASES = 8  # renderings kept per project and format for distinct base URLs (Host headers)


def project_key(project: Project, media_type: str, hash_algo: str | None, base_url: str) -> Any:
    """The key of a project page in its cache: with the base URL only when the page holds
    one (a file with provenance), so that most pages are one rendering whatever the Host."""
    if has_provenance(project):
        return ("project", media_type, hash_algo, base_url)
    return ("project", media_type, hash_algo)


def render_project(
    project: Project, media_type: str, hash_algo: str | None = "sha256", base_url: str = "/"
) -> Rendered:
    """The project page. ``base_url`` (absolute, ending in a slash) is what the provenance URLs
    of files that have one start with."""
    key = project_key(project, media_type, hash_algo, base_url)
    cached = project.cache.get(key)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    if media_type == JSON_V1:
        body = _project_json(project, hash_algo, base_url)
    else:
        body = _project_html(project, hash_algo, base_url)
    rendered = Rendered(body, media_type, etag_of(body))
    # The base URL comes from the Host header: a page per base, but only a few of them.
    if len(key) == 3 or len(project.cache) < MAX_BASES * 4:
        project.cache[key] = rendered
    return rendered


def _project_html(project: Project, hash_algo: str | None, base_url: str) -> bytes:
    title = f"Links for {project.display_name}"
    out = [_head(esc(title), project.status), f"    <h1>{esc(title)}</h1>\n"]
    for f in project.offered:  # none while quarantined
        out.append(
            _anchor(
                file_url(f) + _hash_fragment(f, hash_algo),
                f.filename,
                f.requires_python,
                f.metadata_sha256,
                project.yank_of(f.version),
                provenance_url(f, base_url) if f.provenance_sha256 else None,
            )
        )
    out.append(_TAIL)
    return "".join(out).encode()


def _anchor(
    href: str,
    filename: str,
    requires_python: str | None,
    metadata_sha256: str | None,
    yank: str | None,
    provenance: str | None = None,
) -> str:
    """One file's link on a PEP 503 page, every value escaped."""
    attrs = [f'href="{esc(href)}"']
    if requires_python:
        attrs.append(f'data-requires-python="{esc(requires_python)}"')
    if metadata_sha256:
        value = esc(f"sha256={metadata_sha256}")
        # PEP 714 name, plus the PEP 658 one that older pip versions read.
        attrs.append(f'data-core-metadata="{value}"')
        attrs.append(f'data-dist-info-metadata="{value}"')
    if yank is not None:
        attrs.append(f'data-yanked="{esc(yank)}"')  # PEP 592: "" when no reason is given
    if provenance is not None:
        attrs.append(f'data-provenance="{esc(provenance)}"')  # PEP 740
    return f"    <a {' '.join(attrs)}>{esc(filename)}</a><br>\n"


def _project_json(project: Project, hash_algo: str | None, base_url: str) -> bytes:
    files = []
    for f in project.offered:  # none while quarantined
        hashes = {"sha256": f.sha256}
        hashes.update(f.extra_hashes)
        entry: dict[str, Any] = {
            "filename": f.filename,
            "url": file_url(f),
            "hashes": hashes,
            "size": f.size,
            "upload-time": upload_time(f),
            # PEP 691: true, or the reason as a non-empty string.
            "yanked": _yank_value(project.yank_of(f.version)),
        }
        if f.requires_python:
            entry["requires-python"] = f.requires_python
        # PEP 714: "core-metadata" only; never "dist-info-metadata" in JSON.
        entry["core-metadata"] = {"sha256": f.metadata_sha256} if f.metadata_sha256 else False
        # PEP 740: the provenance's URL, or null for a file without verified attestations.
        entry["provenance"] = provenance_url(f, base_url) if f.provenance_sha256 else None
        files.append(entry)
    doc: dict[str, Any] = {"meta": {"api-version": API_VERSION}, "name": project.name}
    if project.status is not None:
        doc["project-status"] = _status_json(project.status)
    # A quarantined project keeps its versions (as PEP 792's example does), with no files.
    doc["versions"] = project.versions
    doc["files"] = files
    del hash_algo  # JSON always carries sha256 (and any extra algorithm)
    return json.dumps(doc, separators=(",", ":")).encode()


def _yank_value(reason: str | None) -> bool | str:
    if reason is None:
        return False
    return reason or True


# -- /simple/<project>/ of a project cached from the upstream (--proxy) --------------------------
def proxied_url(name: str, f: UpstreamFile) -> str:
    """Where pkgserver serves a cached upstream file, relative to the project page."""
    return f"../../proxy/{quote(name, safe='')}/{quote(f.filename, safe='')}"


def render_proxied(page: UpstreamPage, media_type: str, hash_algo: str | None) -> Rendered:
    """The upstream's page as pkgserver serves it: the same files, requires-python, yanks,
    metadata hashes and upload times, each link pointing at pkgserver's cache. Everything in
    it came from the upstream and was checked (pkgserver.upstream); it is escaped as any."""
    if media_type == JSON_V1:
        files = []
        for f in page.files:
            entry: dict[str, Any] = {
                "filename": f.filename,
                "url": proxied_url(page.name, f),
                "hashes": {"sha256": f.sha256},
                "yanked": _yank_value(f.yanked),
                "core-metadata": {"sha256": f.metadata_sha256} if f.metadata_sha256 else False,
                "provenance": None,
            }
            if f.size is not None:
                entry["size"] = f.size
            if f.upload_time is not None:
                entry["upload-time"] = f.upload_time
            if f.requires_python:
                entry["requires-python"] = f.requires_python
            files.append(entry)
        doc = {
            "meta": {"api-version": API_VERSION},
            "name": page.name,
            "versions": page.versions,
            "files": files,
        }
        body = json.dumps(doc, separators=(",", ":")).encode()
    else:
        title = f"Links for {page.name}"
        out = [_head(esc(title)), f"    <h1>{esc(title)}</h1>\n"]
        for f in page.files:
            fragment = f"#sha256={f.sha256}" if hash_algo else ""
            href = proxied_url(page.name, f) + fragment
            out.append(_anchor(href, f.filename, f.requires_python, f.metadata_sha256, f.yanked))
        out.append(_TAIL)
        body = "".join(out).encode()
    return Rendered(body, media_type, etag_of(body))


def render_claimed(name: str, media_type: str, status: ProjectStatus | None = None) -> Rendered:
    """The page of a project that was hosted here and has no files any more: no links, and
    no redirect to the fallback index (see pkgserver.hosted). Not cached: it is rare."""
    if media_type == JSON_V1:
        doc: dict[str, Any] = {"meta": {"api-version": API_VERSION}, "name": name}
        if status is not None:
            doc["project-status"] = _status_json(status)
        doc.update(versions=[], files=[])
        body = json.dumps(doc, separators=(",", ":")).encode()
    else:
        title = f"Links for {name}"
        body = (
            _head(esc(title), status)
            + f"    <h1>{esc(title)}</h1>\n"
            + "    <!-- hosted here before; no files now, and never redirected elsewhere -->\n"
            + _TAIL
        ).encode()
    return Rendered(body, media_type, etag_of(body))


# -- warehouse JSON (/pypi/<project>/json) ------------------------------------------------------
def _release_file(f: DistFile, base_url: str, yank: str | None) -> dict[str, Any]:
    digests = {"sha256": f.sha256}
    digests.update(f.extra_hashes)
    return {
        "filename": f.filename,
        "url": base_url + "packages/" + quote(f.relpath, safe="/"),
        "digests": digests,
        "size": f.size,
        "packagetype": f.kind,
        "python_version": "source" if f.kind == "sdist" else "py3",
        "requires_python": f.requires_python,
        "upload_time": upload_time(f)[:19],
        "upload_time_iso_8601": upload_time(f),
        "yanked": yank is not None,
        "yanked_reason": yank or None,
    }


def render_project_json_api(
    project: Project,
    version: str,
    metadata: CoreMetadata | None,
    base_url: str,
    releases: bool = True,
) -> bytes:
    """``version`` must be one of the project's versions (the latest for /pypi/<p>/json).
    A quarantined project's files are left out (``urls`` and ``releases`` list none)."""
    every = project.files_of(version)
    files = every if project.offered else []
    yank = project.yank_of(version)
    info: dict[str, Any] = {
        "name": (metadata.name if metadata and metadata.name else project.display_name),
        "version": version,
        "summary": metadata.summary if metadata else project.summary,
        "requires_python": metadata.requires_python if metadata else every[-1].requires_python,
        "requires_dist": list(metadata.requires_dist)
        if metadata and metadata.requires_dist
        else None,
        "package_url": f"{base_url}simple/{project.name}/",
        "project_url": f"{base_url}simple/{project.name}/",
        "release_url": f"{base_url}simple/{project.name}/",
        "yanked": yank is not None,
        "yanked_reason": yank or None,
    }
    doc: dict[str, Any] = {"info": info, "urls": [_release_file(f, base_url, yank) for f in files]}
    if releases:
        by_version: dict[str, list[dict[str, Any]]] = {}
        for f in project.offered:
            by_version.setdefault(f.version, []).append(
                _release_file(f, base_url, project.yank_of(f.version))
            )
        doc["releases"] = by_version
    doc["last_serial"] = 0
    return json.dumps(doc, separators=(",", ":")).encode()


def search(
    snapshot: Snapshot, spec: dict[str, list[str]], operator: str = "or"
) -> list[dict[str, str]]:
    """XML-RPC ``search``: ``spec`` maps a field (name, summary) to terms; a field matches when
    any of its terms is a case-insensitive substring; fields combine with ``operator``."""
    wanted = {
        field: [t.lower() for t in terms if t]
        for field, terms in spec.items()
        if field in ("name", "summary")
    }
    wanted = {field: terms for field, terms in wanted.items() if terms}
    if not wanted:
        return []
    combine = all if operator.lower() == "and" else any
    results = []
    for project in snapshot.projects.values():
        haystacks = {
            "name": f"{project.name} {project.display_name}".lower(),
            "summary": (project.summary or "").lower(),
        }
        if combine(any(t in haystacks[field] for t in terms) for field, terms in wanted.items()):
            results.append(
                {
                    "name": project.display_name,
                    "version": project.current,
                    "summary": project.summary or "",
                }
            )
    results.sort(key=lambda r: r["name"].lower())
    return results
