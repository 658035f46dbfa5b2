from __future__ import annotations

import json
from pathlib import Path

import pytest
from builders import make_wheel
from conftest import scan

from pkgserver import render
from pkgserver.render import HTML, HTML_V1, JSON_V1, negotiate

PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
UV_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"


@pytest.mark.parametrize(
    ("accept", "fmt", "expected"),
    [
        (PIP_ACCEPT, None, JSON_V1),
        (UV_ACCEPT, None, JSON_V1),
        (None, None, HTML),
        ("", None, HTML),
        ("*/*", None, HTML),
        ("text/html", None, HTML),
        ("text/html, application/xhtml+xml, */*;q=0.8", None, HTML),
        ("application/vnd.pypi.simple.v1+html", None, HTML_V1),
        ("application/vnd.pypi.simple.latest+json", None, JSON_V1),
        ("application/vnd.pypi.simple.latest+html", None, HTML_V1),
        ("application/json", None, None),
        ("application/vnd.pypi.simple.v2+json", None, None),
        ("text/html;q=0, application/vnd.pypi.simple.v1+json;q=0.5", None, JSON_V1),
        ("application/vnd.pypi.simple.v1+json;q=0.2, text/html;q=0.9", None, HTML),
        ("application/vnd.pypi.simple.v1+json;q=bogus, text/html", None, HTML),
        ("text/html", "application/vnd.pypi.simple.v1+json", JSON_V1),
        (PIP_ACCEPT, "text/html", HTML),
        (None, "json", JSON_V1),
        (None, "application/vnd.pypi.simple.latest+json", JSON_V1),
        (None, "image/png", None),
    ],
)
def test_negotiation_follows_pep_691(
    accept: str | None, fmt: str | None, expected: str | None
) -> None:
    assert negotiate(accept, fmt) == expected


def test_hostile_metadata_is_escaped_in_html(tmp_path: Path) -> None:
    make_wheel(
        tmp_path,
        "evil",
        "1.0",
        summary="<script>alert(1)</script>",
        requires_python='>=3.8"><script>x</script>',
    )
    catalog = scan(tmp_path)
    project = catalog.snapshot.project("evil")
    assert project is not None
    body = render.render_project(project, HTML).body.decode()
    assert "<script>" not in body
    assert 'data-requires-python="&gt;=3.8&quot;&gt;&lt;script&gt;x&lt;/script&gt;"' in body
    index = render.render_index(catalog.snapshot, HTML).body.decode()
    assert "<script>" not in index


def test_project_html_has_pep_503_658_629_attributes(tmp_path: Path) -> None:
    make_wheel(tmp_path, "demo", "1.0", requires_python=">=3.8")
    project = scan(tmp_path).snapshot.project("demo")
    assert project is not None
    f = project.files[0]
    body = render.render_project(project, HTML).body.decode()
    assert '<meta name="pypi:repository-version" content="1.4">' in body
    assert f'href="../../packages/demo-1.0-py3-none-any.whl#sha256={f.sha256}"' in body
    assert 'data-requires-python="&gt;=3.8"' in body
    assert f'data-core-metadata="sha256={f.metadata_sha256}"' in body
    assert f'data-dist-info-metadata="sha256={f.metadata_sha256}"' in body
    assert ">demo-1.0-py3-none-any.whl</a>" in body


def test_project_json_follows_pep_691_and_700(tmp_path: Path) -> None:
    make_wheel(tmp_path, "demo", "1.0", requires_python=">=3.8")
    make_wheel(tmp_path, "demo", "0.9")
    project = scan(tmp_path).snapshot.project("demo")
    assert project is not None
    doc = json.loads(render.render_project(project, JSON_V1).body)
    assert doc["meta"] == {"api-version": "1.4"}
    assert doc["name"] == "demo"
    assert doc["versions"] == ["0.9", "1.0"]
    newest = doc["files"][-1]
    assert newest["filename"] == "demo-1.0-py3-none-any.whl"
    assert newest["hashes"]["sha256"] == project.latest.sha256
    assert newest["size"] == project.latest.size
    assert newest["requires-python"] == ">=3.8"
    assert newest["core-metadata"] == {"sha256": project.latest.metadata_sha256}
    assert newest["upload-time"].endswith("Z") and len(newest["upload-time"]) == 27
    assert "dist-info-metadata" not in json.dumps(doc)


def test_renderings_are_cached_per_snapshot(tmp_path: Path) -> None:
    make_wheel(tmp_path, "demo", "1.0")
    snap = scan(tmp_path).snapshot
    assert render.render_index(snap, HTML) is render.render_index(snap, HTML)
    project = snap.project("demo")
    assert project is not None
    assert render.render_project(project, JSON_V1) is render.render_project(project, JSON_V1)


def test_hash_algo_changes_the_fragment_only(tmp_path: Path) -> None:
    make_wheel(tmp_path, "demo", "1.0")
    project = scan(tmp_path, extra_algos=["md5"]).snapshot.project("demo")
    assert project is not None
    md5 = dict(project.latest.extra_hashes)["md5"]
    assert f"#md5={md5}" in render.render_project(project, HTML, "md5").body.decode()
    assert (
        "#"
        not in render.render_project(project, HTML, None)
        .body.decode()
        .split("href=")[1]
        .split(">")[0]
    )
    doc = json.loads(render.render_project(project, JSON_V1, "md5").body)
    assert doc["files"][0]["hashes"] == {"sha256": project.latest.sha256, "md5": md5}


# -- one byte budget for all renderings ---------------------------------------------------------
