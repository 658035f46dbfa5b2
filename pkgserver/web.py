"""What the web pages show, computed from a catalog snapshot: search, pages of projects, recent
releases, sizes and times for people, and project descriptions rendered safely.

No web framework here (app.py renders the templates). Descriptions go through warehouse's
``readme_renderer``, which sanitizes its HTML output (nh3): the only markup the templates insert
unescaped.
"""

from __future__ import annotations

import datetime
import heapq
import html
import io
import re
from collections.abc import Sequence
from typing import NamedTuple

from packaging.version import Version

from .catalog import DistFile, Project, Snapshot
from .distfile import version_key

__all__ = [
    "PAGE_SIZE",
    "Release",
    "human_size",
    "human_time",
    "iso_time",
    "normalize_query",
    "page_of",
    "recent_releases",
    "render_description",
    "same_version",
    "search_projects",
]

PAGE_SIZE = 50  # projects per page of the list
MAX_RELEASES = 100  # releases a project page shows with their files; older ones as links
MAX_QUERY = 200  # characters of a search query
MAX_DESCRIPTION = 512 * 1024  # characters rendered; longer descriptions are shown as plain text
_SEPARATORS = re.compile(r"[-_.]+")


class Release(NamedTuple):
    project: Project
    version: str
    time: float  # newest upload time of its files


def normalize_query(query: str) -> list[str]:
    """Search terms: lower-cased words, with runs of ``-_.`` as one ``-`` (PEP 503)."""
    return [_SEPARATORS.sub("-", t) for t in query.casefold()[:MAX_QUERY].split() if t][:10]


def _search_index(snapshot: Snapshot) -> list[tuple[str, str, Project]]:
    """(name, lower-cased summary, project) of every project, sorted by name; made once per
    snapshot (a search of 10,000 projects is then a pass over plain strings)."""
    key = ("web-search-index",)
    found: list[tuple[str, str, Project]] | None = snapshot.cache.get(key)
    if found is None:
        found = sorted(
            (p.name, _SEPARATORS.sub("-", (p.summary or "").casefold()), p)
            for p in snapshot.projects.values()
        )
        snapshot.cache[key] = found
    return found


def search_projects(snapshot: Snapshot, query: str) -> list[Project]:
    """Projects whose name or summary holds every term (case-insensitive, ``-_.`` alike).

    Best matches first: the exact name, names starting with the query, names holding every
    term, then matches in the summary; alphabetical within each."""
    index = _search_index(snapshot)
    terms = normalize_query(query)
    if not terms:
        return [p for _, _, p in index]
    whole = "-".join(terms)
    ranked: list[tuple[int, str, Project]] = []
    for name, summary, project in index:
        in_name = [t in name for t in terms]
        if not all(hit or t in summary for hit, t in zip(in_name, terms)):
            continue
        if name == whole:
            rank = 0
        elif name.startswith(whole):
            rank = 1
        elif all(in_name):
            rank = 2
        else:
            rank = 3
        ranked.append((rank, name, project))
    ranked.sort(key=lambda r: (r[0], r[1]))
    return [p for _, _, p in ranked]


def page_of(items: Sequence[Project], page: int, size: int = PAGE_SIZE) -> tuple[int, int]:
    """(first index, number of pages) of ``page`` (1-based); ValueError past the last page."""
    pages = max(1, -(-len(items) // size))
    if page < 1 or page > pages:
        raise ValueError(f"there are {pages} pages")
    return (page - 1) * size, pages


def recent_releases(snapshot: Snapshot, count: int = 10) -> list[Release]:
    """The ``count`` most recently uploaded releases, newest first (once per snapshot)."""
    key = ("web-recent", count)
    found: list[Release] | None = snapshot.cache.get(key)
    if found is None:
        newest: dict[tuple[str, str], DistFile] = {}
        # The newest files, more of them until they hold ``count`` releases (a release of
        # many platform wheels takes many files).
        wanted = count * 8
        while True:
            newest.clear()
            offered = (f for f in snapshot.files.values() if snapshot.offers(f))
            top = heapq.nlargest(wanted, offered, key=lambda f: f.upload_time_ns)
            for f in top:
                newest.setdefault((f.project, f.version), f)  # the newest file comes first
            if len(newest) >= count or len(top) < wanted:
                break
            wanted *= 4
        found = []
        ordered = sorted(newest.items(), key=lambda kv: -kv[1].upload_time_ns)
        for (name, version), f in ordered[:count]:
            project = snapshot.projects.get(name)
            if project is not None:
                found.append(Release(project, version, f.upload_time))
        snapshot.cache[key] = found
    return found


def same_version(versions: Sequence[str], wanted: str) -> str | None:
    """The one of ``versions`` equal to ``wanted`` as a PEP 440 version (1.0.0 == 1.0)."""
    target = version_key(wanted)
    if not isinstance(target, Version):
        return None
    return next((v for v in versions if version_key(v) == target), None)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover


def iso_time(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def human_time(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _content_type(value: str | None) -> tuple[str, dict[str, str]]:
    if not value:
        return "", {}
    kind, *params = value.split(";")
    parsed = {}
    for param in params:
        key, _, val = param.partition("=")
        parsed[key.strip().lower()] = val.strip().strip('"')
    return kind.strip().lower(), parsed


def render_description(text: str, content_type: str | None) -> str:
    """Safe HTML of a project description: Markdown (GFM or CommonMark), reStructuredText (the
    default, as on PyPI) or plain text, the way warehouse renders it.

    Any description renders: one that the renderer cannot take (a RecursionError on 200
    nested reST block quotes, or anything else it raises) is shown as plain text, escaped."""
    if not text.strip():
        return ""
    from readme_renderer import txt

    if len(text) > MAX_DESCRIPTION:
        text = text[:MAX_DESCRIPTION] + "\n[... cut at 512 KB ...]"
        content_type = "text/plain"
    try:
        rendered = _render_markup(text, content_type)
    except Exception:  # RecursionError included: the text is the project's, not ours to fix
        rendered = None
    if rendered is None:  # text/plain, markup that does not parse, or a renderer that failed
        try:
            rendered = txt.render(text)
        except Exception:
            rendered = None
    if rendered is None:
        return "<pre>" + html.escape(text) + "</pre>"
    return str(rendered)


def _render_markup(text: str, content_type: str | None) -> str | None:
    kind, params = _content_type(content_type)
    if kind == "text/markdown":
        from readme_renderer import markdown

        variant = params.get("variant", "GFM")
        out = markdown.render(text, variant=variant if variant in ("GFM", "CommonMark") else "GFM")
        return None if out is None else str(out)
    if kind in ("", "text/x-rst"):
        from readme_renderer import rst

        out = rst.render(text, stream=io.StringIO())  # warnings are not the page's
        return None if out is None else str(out)
    return None
