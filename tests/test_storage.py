"""pkgserver.storage: uploads reach the files only through the Storage interface.

A Storage that records its calls (and delegates to the directory) shows which operations each
kind of upload makes; a Storage that loses the create-only race shows the outcome."""

from __future__ import annotations

import ast
import errno
import hashlib
import io
import os
from pathlib import Path
from typing import Any, cast

import pytest
from builders import make_wheel
from conftest import scan
from forms import upload_form

from pkgserver.catalog import Catalog
from pkgserver.errors import Conflict
from pkgserver.indexer import Indexer
from pkgserver.publish import FileOps, TempFile
from pkgserver.records import RecordDir
from pkgserver.storage import ChangeFeed, DirectoryStorage, Records, Storage
from pkgserver.upload import Outcome, Uploads

PACKAGE = Path(__file__).resolve().parent.parent / "pkgserver"


class Recording:
    """A Storage recording the names of the calls made to it, done by a DirectoryStorage."""

    def __init__(self, inner: DirectoryStorage) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return attr(*args, **kwargs)

        return call


def uploads_on(root: Path, storage: Storage, **kw: Any) -> Uploads:
    return Uploads([str(root)], scan(root), storage=storage, **kw)


def upload(uploads: Uploads, wheel: Path, **extra: str) -> Outcome:
    body, ctype = upload_form(wheel, extra=list(extra.items()))
    return uploads.handle(io.BytesIO(body), len(body), ctype, "alice")


def test_the_directory_is_a_storage_a_change_feed_and_records(tmp_path: Path) -> None:
    # The three interfaces and their directory implementations (checked by mypy too).
    storage: Storage = DirectoryStorage([str(tmp_path)])
    feed: ChangeFeed = Indexer([str(tmp_path)], Catalog(), watch=False)
    records: Records = RecordDir(str(tmp_path))
    assert storage.place("a-1.0.tar.gz", ()) == str(tmp_path / "a-1.0.tar.gz")
    assert feed.ready() is not None  # not started
    records.replace("note", b"kept")
    assert records.read("note") == b"kept"


def test_a_stored_file_opens_with_what_identifies_it(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "demo", "1.0")
    fh, st = DirectoryStorage([str(tmp_path)]).open(str(wheel))
    with fh:
        assert fh.read() == wheel.read_bytes()
    assert (st.st_size, st.st_ino) == (wheel.stat().st_size, wheel.stat().st_ino)
    os.mkfifo(tmp_path / "fifo-1.0-py3-none-any.whl")
    with pytest.raises(OSError):  # at once: a FIFO is not a plain file
        DirectoryStorage([str(tmp_path)]).open(str(tmp_path / "fifo-1.0-py3-none-any.whl"))


def test_an_upload_stages_creates_and_syncs(tmp_path: Path) -> None:
    root, dist = tmp_path / "packages", tmp_path / "dist"
    root.mkdir()
    wheel = make_wheel(dist, "demo", "1.0")
    rec = Recording(DirectoryStorage([str(root)]))
    uploads = uploads_on(root, cast(Storage, rec))
    assert upload(uploads, wheel).status == 200
    assert rec.calls == ["stage", "place", "create", "sync", "relpath", "describe"]
    assert (root / wheel.name).read_bytes() == wheel.read_bytes()
    assert [p.name for p in root.iterdir()] == [wheel.name]  # nothing staged is left

    rec.calls.clear()  # the same bytes again: nothing published
    assert upload(uploads, wheel).status == 200
    assert rec.calls == ["stage"]


def test_a_signature_is_staged_first_and_put_beside_the_file(tmp_path: Path) -> None:
    root, dist = tmp_path / "packages", tmp_path / "dist"
    root.mkdir()
    wheel = make_wheel(dist, "demo", "1.0")
    rec = Recording(DirectoryStorage([str(root)]))
    uploads = uploads_on(root, cast(Storage, rec))
    signature = "-----BEGIN PGP SIGNATURE-----\nxx\n-----END PGP SIGNATURE-----\n"
    assert upload(uploads, wheel, gpg_signature=signature).status == 200
    assert rec.calls == [
        "stage",
        "place",
        "stage_bytes",
        "create",
        "replace",
        "sync",
        "relpath",
        "describe",
    ]
    assert (root / (wheel.name + ".asc")).read_text() == signature


def test_an_overwrite_replaces_and_drops_the_old_signature(tmp_path: Path) -> None:
    root, dist = tmp_path / "packages", tmp_path / "dist"
    root.mkdir()
    old = make_wheel(root, "demo", "1.0", summary="old")
    (root / (old.name + ".asc")).write_text("old signature")
    new = make_wheel(dist, "demo", "1.0", summary="new")
    rec = Recording(DirectoryStorage([str(root)]))
    uploads = uploads_on(root, cast(Storage, rec), overwrite=True)
    assert upload(uploads, new).status == 200
    # Each sidecar of the old bytes goes: signature, attestations as sent, provenance.
    discards = ["discard"] * 3
    assert rec.calls == ["stage", "replace", *discards, "sync", "relpath", "describe"]
    assert (root / new.name).read_bytes() == new.read_bytes()
    assert not (root / (old.name + ".asc")).exists()


class Racing(DirectoryStorage):
    """Another writer puts ``theirs`` at the location just before our create-only publish."""

    def __init__(self, roots: list[str], theirs: bytes) -> None:
        super().__init__(roots)
        self.theirs = theirs

    def create(self, staged: TempFile, location: str) -> bool:
        Path(location).write_bytes(self.theirs)
        return super().create(staged, location)


def test_a_create_lost_to_other_bytes_is_a_conflict_and_keeps_theirs(tmp_path: Path) -> None:
    root, dist = tmp_path / "packages", tmp_path / "dist"
    root.mkdir()
    wheel = make_wheel(dist, "demo", "1.0")
    uploads = uploads_on(root, Racing([str(root)], b"their bytes"))
    body, ctype = upload_form(wheel)
    with pytest.raises(Conflict, match="a moment ago"):
        uploads.handle(io.BytesIO(body), len(body), ctype, "alice")
    assert (root / wheel.name).read_bytes() == b"their bytes"
    assert [p.name for p in root.iterdir()] == [wheel.name]


def test_a_create_lost_to_the_same_bytes_is_a_success(tmp_path: Path) -> None:
    root, dist = tmp_path / "packages", tmp_path / "dist"
    root.mkdir()
    wheel = make_wheel(dist, "demo", "1.0")
    uploads = uploads_on(root, Racing([str(root)], wheel.read_bytes()))
    outcome = upload(uploads, wheel)
    assert outcome.status == 200 and "identical content" in outcome.message


def test_remove_pkg_finds_removes_and_syncs_through_the_storage(tmp_path: Path) -> None:
    root = tmp_path / "packages"
    make_wheel(root, "demo", "1.0")
    make_wheel(root, "demo", "2.0")
    rec = Recording(DirectoryStorage([str(root)]))
    uploads = uploads_on(root, cast(Storage, rec))
    body = b":action=remove_pkg&name=demo&version=1.0"
    outcome = uploads.handle(
        io.BytesIO(body), len(body), "application/x-www-form-urlencoded", "alice"
    )
    assert outcome.status == 200
    assert rec.calls == ["files_of", "remove", "sync", "files_of"]
    assert [p.name for p in root.iterdir()] == ["demo-2.0-py3-none-any.whl"]


def test_uploads_touch_no_file_themselves() -> None:
    # Every file operation of upload.py goes through its Storage: it imports neither os nor
    # the system-call layer's functions.
    tree = ast.parse((PACKAGE / "upload.py").read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not imported & {"os", "shutil", "tempfile"}


# -- what fails after the file itself is in place --------------------------------------------------
class Failing(FileOps):
    """Fails the n-th call of one operation with EIO."""

    def __init__(self, step: str, nth: int) -> None:
        super().__init__()
        self.step, self.nth, self.calls = step, nth, 0

    def _count(self, step: str) -> None:
        if step == self.step:
            self.calls += 1
            if self.calls == self.nth:
                raise OSError(errno.EIO, "Input/output error")

    def replace(self, src: str, dst: str) -> None:
        self._count("replace")
        super().replace(src, dst)

    def unlink(self, path: str) -> None:
        self._count("unlink")
        super().unlink(path)

    def fsync_dir(self, directory: str) -> None:
        self._count("fsync_dir")
        super().fsync_dir(directory)


def test_a_temp_file_that_cannot_be_removed_does_not_fail_a_published_upload(
    tmp_path: Path,
) -> None:
    # The upload is decided (published); a temp name that cannot be unlinked afterwards is left
    # to the shutdown, never turned into a 500 for an upload that succeeded.
    root, dist = tmp_path / "packages", tmp_path / "dist"
    root.mkdir()
    wheel = make_wheel(dist, "demo", "1.0")
    storage = DirectoryStorage([str(root)], Failing("unlink", 1))
    outcome = upload(uploads_on(root, storage), wheel)
    assert outcome.status == 200 and outcome.message.endswith("published")
    assert (root / wheel.name).read_bytes() == wheel.read_bytes()
    assert storage.remove_live() == 1  # the one left, removed at shutdown
    assert [p.name for p in root.iterdir()] == [wheel.name]


@pytest.mark.parametrize(("step", "nth"), [("replace", 2), ("fsync_dir", 1)])
def test_a_replaced_file_stays_published_when_its_sidecar_or_sync_fails(
    tmp_path: Path, step: str, nth: int
) -> None:
    # After the rename the old bytes are gone: the answer says the new file is published, and
    # no signature of the old file stays beside it.
    root, dist = tmp_path / "packages", tmp_path / "dist"
    root.mkdir()
    old = make_wheel(root, "demo", "1.0", summary="old")
    (root / (old.name + ".asc")).write_text("old signature")
    new = make_wheel(dist, "demo", "1.0", summary="new")
    storage = DirectoryStorage([str(root)], Failing(step, nth))
    uploads = uploads_on(root, storage, overwrite=True)
    signature = "-----BEGIN PGP SIGNATURE-----\nnew\n-----END PGP SIGNATURE-----\n"
    outcome = upload(uploads, new, gpg_signature=signature)
    assert outcome.status == 200 and "not all of it was stored" in outcome.message
    assert (root / new.name).read_bytes() == new.read_bytes()
    assert (
        uploads.catalog.snapshot.files[new.name].sha256
        == hashlib.sha256(new.read_bytes()).hexdigest()
    )
    sidecar = root / (new.name + ".asc")
    assert not sidecar.exists() or sidecar.read_text() == signature
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".pkgserver-tmp")) == []
