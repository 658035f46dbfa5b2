"""The in-memory catalog: what a project computes from its files, and the one byte budget that
all cached renderings share."""

from __future__ import annotations

import gzip
from pathlib import Path

from builders import make_wheel
from conftest import make_testapp

from pkgserver import render
from pkgserver.catalog import DistFile, Project, RenderBudget, RenderCache
from pkgserver.render import HTML, JSON_V1


def _file(version: str, name: str = "big") -> DistFile:
    return DistFile(
        filename=f"{name}-{version}-py3-none-any.whl",
        relpath=f"{name}-{version}-py3-none-any.whl",
        root="/nowhere",
        project=name,
        version=version,
        kind="bdist_wheel",
        size=1,
        mtime_ns=0,
        ino=0,
        sha256="0" * 64,
        extra_hashes=(),
        requires_python=None,
        metadata_sha256=None,
        summary=None,
        display_name=None,
    )


def test_a_project_computes_its_versions_and_current_once() -> None:
    project = Project("big", [_file(f"1.0.dev{i}") for i in range(2000)])
    calls = 0
    real = Project._grouped

    def counting(self: Project) -> dict[str, list[DistFile]]:
        nonlocal calls
        calls += 1
        return real(self)

    Project._grouped = counting  # type: ignore[method-assign]
    try:
        assert project.current == "1.0.dev1999"
        for _ in range(100):
            assert project.current == "1.0.dev1999"
            project.files_of("1.0.dev5")
    finally:
        Project._grouped = real  # type: ignore[method-assign]
    assert project._current == "1.0.dev1999"
    assert project._by_version is not None and len(project._by_version) == 2000


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
