from __future__ import annotations

import pytest

from pkgserver.distfile import (
    InvalidDistFilename,
    is_valid_project_name,
    parse_dist_filename,
    version_sort_key,
)


@pytest.mark.parametrize(
    ("filename", "project", "version", "kind"),
    [
        ("demo_pkg-1.0-py3-none-any.whl", "demo-pkg", "1.0", "bdist_wheel"),
        (
            "Demo.Pkg-2.0rc1-cp311-cp311-manylinux_2_17_x86_64.whl",
            "demo-pkg",
            "2.0rc1",
            "bdist_wheel",
        ),
        ("foo-2fa-1.0.tar.gz", "foo-2fa", "1.0", "sdist"),
        ("foo_2fa-1.0.tar.gz", "foo-2fa", "1.0", "sdist"),
        ("foo-1.0.zip", "foo", "1.0", "sdist"),
        ("foo-1.0.tar.bz2", "foo", "1.0", "sdist"),
        ("foo-1.0.tgz", "foo", "1.0", "sdist"),
        ("FOO-1.0.TAR.GZ", "foo", "1.0", "sdist"),
        ("foo_bar-1.0-py3.11.egg", "foo-bar", "1.0", "bdist_egg"),
        ("foo-1.0-beta.tar.gz", "foo", "1.0-beta", "sdist"),  # legacy, unambiguous
    ],
)
def test_filenames_are_attributed_with_packaging_rules(
    filename: str, project: str, version: str, kind: str
) -> None:
    info = parse_dist_filename(filename)
    assert (info.project, info.version, info.kind) == (project, version, kind)


@pytest.mark.parametrize(
    "filename",
    [
        "README.txt",
        "foo.whl",
        "foo-1.0.whl",  # a wheel needs tags
        "foo-2fa-1.0-beta.tar.gz",  # two places where the version could start
        "-1.0.tar.gz",
        "foo.tar.gz",
        "bad name-1.0.tar.gz",
        "foo-1.0-py3-none-any.whl.metadata",
        "f\u00f6o-1.0.tar.gz",
    ],
)
def test_unattributable_filenames_are_refused(filename: str) -> None:
    with pytest.raises(InvalidDistFilename):
        parse_dist_filename(filename)


def test_project_name_rule() -> None:
    assert is_valid_project_name("a")
    assert is_valid_project_name("Foo.Bar-baz_9")
    assert not is_valid_project_name("-foo")
    assert not is_valid_project_name("foo-")
    assert not is_valid_project_name("f\u00f6o")
    assert not is_valid_project_name("foo/bar")
    assert not is_valid_project_name("")


def test_versions_sort_newest_last_with_legacy_versions_first() -> None:
    versions = ["1.10", "1.2", "1.0-beta", "1.0", "2.0rc1", "2.0"]
    assert sorted(versions, key=version_sort_key) == [
        "1.0-beta",
        "1.0",
        "1.2",
        "1.10",
        "2.0rc1",
        "2.0",
    ]
