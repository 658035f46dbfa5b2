from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from builders import make_wheel
from conftest import make_testapp, scan

from pkgserver import render
from pkgserver.catalog import RenderBudget, RenderCache
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
    assert '<meta name="pypi:repository-version" content="1.1">' in body
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
    assert doc["meta"] == {"api-version": "1.1"}
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
def test_render_budget_evicts_least_recently_used_across_caches() -> None:
    budget = RenderBudget(max_bytes=10_000)
    caches = [RenderCache(budget) for _ in range(20)]
    page = render.Rendered(b"x" * 1_000, HTML, '"e"')
    caches[0]["page"] = page
    for c in caches[1:]:
        caches[0].get("page")  # kept in use
        c["page"] = page
    assert budget.used <= budget.max_bytes
    assert caches[0].get("page") is page
    held = [c for c in caches if "page" in c]
    assert len(held) == len(budget) < len(caches)
    assert caches[-1].get("page") is page  # the newest stays
    assert "page" not in caches[1]  # the oldest untouched ones went first
    budget.clear()
    assert budget.used == 0 and not any("page" in c for c in caches)


def test_replacing_an_entry_does_not_count_it_twice() -> None:
    budget = RenderBudget(max_bytes=1_000_000)
    cache = RenderCache(budget)
    for n in range(50):
        cache["k"] = b"y" * 1_000 + str(n).encode()
    assert len(budget) == 1 and budget.used < 2_000


def test_two_catalogs_have_budgets_of_their_own(tmp_path: Path) -> None:
    # Two apps in one process (the tests, or a server embedding two indexes) must not evict
    # each other's renderings or count each other's bytes.
    make_wheel(tmp_path / "a", "alpha", "1.0")
    make_wheel(tmp_path / "b", "beta", "1.0")
    app_a, catalog_a = make_testapp([tmp_path / "a"])
    app_b, catalog_b = make_testapp([tmp_path / "b"])
    assert catalog_a.budget is not catalog_b.budget
    app_a.get("/simple/alpha/", headers={"Accept": HTML})
    assert len(catalog_a.budget) == 1 and len(catalog_b.budget) == 0
    app_b.get("/simple/beta/", headers={"Accept": HTML})
    assert len(catalog_a.budget) == len(catalog_b.budget) == 1


def test_cached_lists_count_against_the_budget() -> None:
    budget = RenderBudget(max_bytes=1_000_000)
    cache = RenderCache(budget)
    cache["search"] = [("name", None)] * 1_000
    assert budget.used >= 1_000 * 50  # not 0: a cached search result holds memory too


def test_pages_stay_right_when_the_budget_is_far_too_small(tmp_path: Path) -> None:
    # Every project page of a 40-project index is asked for twice, in JSON and HTML and
    # gzipped, with room for about three renderings: each answer must still be the right one.
    for n in range(40):
        make_wheel(tmp_path, f"proj{n}", "1.0", summary=f"project {n}")
    app, catalog = make_testapp([tmp_path])
    budget = catalog.budget  # each catalog has its own
    budget.max_bytes = 4_000
    seen: dict[tuple[int, str, str], str] = {}
    for _round in range(2):
        for n in range(40):
            for accept in (HTML, JSON_V1):
                for encoding in ("identity", "gzip"):
                    res = app.get(
                        f"/simple/proj{n}/",
                        headers={"Accept": accept, "Accept-Encoding": encoding},
                    )
                    body = res.body
                    if res.headers.get("Content-Encoding") == "gzip":
                        body = gzip.decompress(body)
                    assert f"proj{n}-1.0-py3-none-any.whl".encode() in body
                    etag = seen.setdefault((n, accept, encoding), res.headers["ETag"])
                    assert res.headers["ETag"] == etag  # a re-rendering is byte-identical
                    assert budget.used <= budget.max_bytes + 2_000
        res = app.get("/simple/", headers={"Accept": HTML})
        assert res.body.count(b"<a ") == 40
    assert 0 < len(budget) < 10


def test_replaced_projects_give_their_renderings_back(tmp_path: Path) -> None:
    # Every upload makes a new snapshot: the old one's index renderings and the replaced
    # project's pages must not sit in the budget until evicted.
    make_wheel(tmp_path, "stay", "1.0")
    make_wheel(tmp_path, "grow", "1.0")
    app, catalog = make_testapp([tmp_path])
    budget = catalog.budget
    for page in ("/simple/", "/simple/stay/", "/simple/grow/"):
        app.get(page, headers={"Accept": HTML})
    before = len(budget)
    assert before == 3
    stay = catalog.snapshot.projects["stay"]
    extra = make_wheel(tmp_path, "grow", "2.0")
    from pkgserver.scan import describe

    catalog.apply([describe(str(tmp_path), extra.name, extra.stat())])
    assert len(budget) == 1  # only "stay", which did not change, keeps its page
    assert "stay" in catalog.snapshot.projects and catalog.snapshot.projects["stay"] is stay
