"""Fixtures of the attack suite; the harness itself is in harness.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from security.harness import Target, start_target


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """One server for a module's attacks: uploads need a password, files up to 32 MB (so the
    bombs reach the archive readers), and projects not hosted here are redirected to PyPI (the
    default)."""
    t = start_target(tmp_path_factory.mktemp("sec"), "--max-upload-size", "32M")
    try:
        yield t
    finally:
        t.srv.stop()  # raises if the server logged a traceback or would not stop


@pytest.fixture
def unchanged(target: Target) -> Iterator[Target]:
    """The attack must leave the directory exactly as it was and the server healthy."""
    before = target.snapshot()
    yield target
    after = target.snapshot()
    added = sorted(set(after) - set(before))
    lost = sorted(set(before) - set(after))
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    assert not (added or lost or changed), f"added {added}, lost {lost}, changed {changed}"
    target.assert_healthy()
