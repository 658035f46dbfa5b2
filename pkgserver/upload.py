"""The legacy upload API (what twine, uv, poetry, pdm, hatch, flit and distutils send).

No web framework here: ``Uploads.handle(stream, length, content_type, user)`` reads the form,
streams the file to a temporary dot-file while hashing it, validates everything, then publishes
atomically and tells the catalog. Every failure raises a typed error (errors.py) after removing
the temporary file, so the directory is exactly as it was and a retry can succeed.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import hmac
import logging
import re
import threading
import zipfile
from collections.abc import Callable, Sequence
from typing import IO, Any, NamedTuple

from packaging.utils import canonicalize_name

from .attest import AttestationRefused, parse_field, verify
from .catalog import Catalog, DistFile
from .distfile import (
    DIST_EXTENSIONS,
    KIND_SDIST,
    KIND_WHEEL,
    InvalidDistFilename,
    dist_extension,
    file_key,
    parse_dist_filename,
    version_key,
)
from .errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    HTTPProblem,
    LengthRequired,
    NotFound,
    TooLarge,
    Unavailable,
)
from .manage import forget_yanks_of_removed
from .metadata import CoreMetadata, InvalidArchive
from .multipart import (
    Form,
    FormError,
    FormTooLarge,
    Limits,
    parse_boundary,
    parse_form,
    parse_urlencoded,
)
from .publish import FileOps, TempFile, TooLargeError
from .records import RecordDir
from .rights import Publisher
from .scan import read_core_metadata
from .storage import DirectoryStorage, Records, Storage, StoreFull, StoreUnavailable, Uploaders

__all__ = ["InsufficientStorage", "Uploads"]

log = logging.getLogger(__name__)

MAX_FILENAME = 255
# Extensions an upload may have for each filetype: what the directory serves. PyPI refuses new
# .tar.bz2/.tgz sdists (PEP 527); pypiserver takes them, and so do we (one sdist a release).
_FILETYPE_EXTENSIONS = {
    "sdist": (".tar.gz", ".zip", ".tar.bz2", ".tgz"),
    "bdist_wheel": (".whl",),
    "bdist_egg": (".egg",),
}
MAX_URLENCODED = 64 * 1024  # a form-encoded POST carries a few fields (remove_pkg), no file
_HEX = re.compile(r"[0-9a-fA-F]+")  # fullmatch
# Names, PEP 440 versions (with + and !) and wheel tags use only these.
_FILENAME_CHARS = re.compile(r"[A-Za-z0-9._+!-]+")
_DIGEST_FIELDS = (
    ("md5_digest", "md5", 32),
    ("sha256_digest", "sha256", 64),
    ("blake2_256_digest", "blake2_256", 64),
)


class InsufficientStorage(HTTPProblem):
    """The disk is full or a write failed: a server-side condition a retry may get past."""

    status = 507


class Outcome(NamedTuple):
    status: int
    message: str


class Uploads:
    def __init__(
        self,
        roots: Sequence[str],
        catalog: Catalog,
        *,
        overwrite: bool = False,
        max_size: int = 1024**3,
        extra_algos: Sequence[str] = (),
        ops: FileOps | None = None,
        storage: Storage | None = None,
        on_published: Callable[[DistFile], None] | None = None,
        upload_log: Uploaders | None = None,
        records: Sequence[Records] | None = None,
        publishers: Callable[[str], Sequence[Publisher]] | None = None,
        require_attestations: bool = False,
    ) -> None:
        self.on_published = on_published
        # PEP 740: the trusted publishers of a (normalized) project, whose attestations an
        # upload of it must carry when it brings any (and must bring, with
        # require_attestations); none by default.
        self.publishers = publishers or _no_publishers
        self.require_attestations = require_attestations
        self.upload_log = upload_log  # who uploaded what, for the web pages
        self.roots = list(roots)
        # Where the yanks are (a removal forgets them): each root's, unless given (a bucket's).
        self.records = list(records) if records is not None else [RecordDir(r) for r in roots]
        self.catalog = catalog
        self.overwrite = overwrite
        self.max_size = max_size
        self.extra_algos = tuple(extra_algos)
        # Where the files live; the package directories unless another storage is given.
        self.storage: Storage = storage or DirectoryStorage(roots, ops)
        # Publishing (the existence check, the link, the catalog update) is short and serialized,
        # so two uploads of one name cannot both be told they were first. Streaming is not.
        self._publish_lock = threading.Lock()

    # -- entry point --
    def handle(
        self,
        stream: IO[bytes],
        length: int,
        content_type: str | None,
        user: str | None,
        permit: Callable[[str, str], None] | None = None,
    ) -> Outcome:
        """Answer one upload request. ``permit(action, project)`` ("upload" or "remove", the
        normalized name) raises when the request's credentials do not cover that project."""
        if length < 0:
            raise LengthRequired("Content-Length required")
        if length > self.max_size + 64 * 1024 * 1024:
            raise TooLarge(f"upload larger than the limit of {self.max_size} bytes")
        media = (content_type or "").split(";", 1)[0].strip().lower()
        if media == "application/x-www-form-urlencoded":
            # pypiserver's `curl -d ':action=remove_pkg&name=...&version=...' URL`.
            return self._dispatch(self._urlencoded(stream, length), None, user, permit)
        try:
            boundary = parse_boundary(content_type)
        except FormError as exc:
            raise BadRequest(f"invalid upload form: {exc}") from None
        temps: dict[str, TempFile] = {}

        def sink(name: str, _filename: str) -> TempFile | None:
            if name != "content" or "content" in temps:
                return None  # other file parts (gpg_signature, ...) stay small, in memory
            try:
                temps[name] = self.storage.stage(self.max_size)
            except OSError as exc:
                raise _storage_error(exc) from None
            return temps[name]

        try:
            try:
                form = parse_form(stream, length, boundary, file_sink=sink, limits=Limits())
            except (TooLargeError, FormTooLarge) as exc:
                raise TooLarge(str(exc)) from None
            except FormError as exc:
                raise BadRequest(f"invalid upload form: {exc}") from None
            except OSError as exc:
                raise _storage_error(exc) from None
            return self._dispatch(form, temps.get("content"), user, permit)
        finally:
            for temp in temps.values():
                temp.discard()  # after a publish the temp name is gone already; else clean up

    @staticmethod
    def _urlencoded(stream: IO[bytes], length: int) -> Form:
        if length > MAX_URLENCODED:
            raise TooLarge(
                f"a form-encoded request may carry {MAX_URLENCODED} bytes; upload files as "
                "multipart/form-data"
            )
        body = b""
        while len(body) < length:
            chunk = stream.read(length - len(body))
            if not chunk:
                raise BadRequest("the request body ended early")
            body += chunk
        try:
            return parse_urlencoded(body)
        except FormError as exc:
            raise BadRequest(f"invalid form: {exc}") from None

    def _dispatch(
        self,
        form: Form,
        content: TempFile | None,
        user: str | None,
        permit: Callable[[str, str], None] | None = None,
    ) -> Outcome:
        action = form.get(":action")
        if action == "file_upload":
            return self._file_upload(form, content, user, permit)
        if action == "remove_pkg":
            name = form.get("name")
            if name and permit is not None:
                permit("remove", canonicalize_name(name))
            return self.remove(name, form.get("version"))
        if action in ("submit", "verify"):
            return Outcome(200, "OK (registration is not needed here; nothing was changed)")
        if action == "doc_upload":
            raise Gone("documentation uploads are not supported")
        if not action:
            raise BadRequest("missing :action field")
        raise BadRequest(f"unsupported :action {action[:40]!r}")

    # -- file_upload --
    def _file_upload(
        self,
        form: Form,
        content: TempFile | None,
        user: str | None,
        permit: Callable[[str, str], None] | None = None,
    ) -> Outcome:
        if content is None:
            raise BadRequest("missing file: the form has no 'content' file part")
        filename = form.filenames.get("content", "")
        check_filename(filename)
        try:
            info = parse_dist_filename(filename)
        except InvalidDistFilename:
            raise BadRequest(f"invalid distribution filename {filename!r}") from None
        if permit is not None:
            permit("upload", info.project)
        filetype = form.get("filetype")
        if filetype:
            allowed = _FILETYPE_EXTENSIONS.get(filetype)
            if allowed is None:
                raise BadRequest(f"unsupported filetype {filetype[:40]!r}")
            if not filename.lower().endswith(allowed):
                raise BadRequest(f"filename {filename!r} does not match filetype {filetype!r}")
        elif not filename.lower().endswith(DIST_EXTENSIONS):
            raise BadRequest(f"unsupported file extension in {filename!r}")
        self._refuse_closed(info.project)  # before reading the file: the clearest answer
        name = form.get("name")
        if name and canonicalize_name(name) != info.project:
            raise BadRequest(f"name {name[:100]!r} does not match the filename {filename!r}")
        version = form.get("version")
        if version and version_key(version) != version_key(info.version):
            raise BadRequest(f"version {version[:60]!r} does not match the filename {filename!r}")
        if content.size == 0:
            raise BadRequest("the file is empty")
        digests = content.digests()
        # Digests are optional in the legacy API; every one that is sent must match.
        for field, algo, length in _DIGEST_FIELDS:
            sent = form.get(field).strip()
            if not sent:
                continue
            if algo == "blake2_256" and len(sent) == 128:
                # Python's own distutils sends BLAKE2b-512 under this name; check it as such.
                algo, length = "blake2b_512", 128
                digests[algo] = _file_digest(content.path, lambda: hashlib.blake2b())
            if len(sent) != length or not _HEX.fullmatch(sent):
                raise BadRequest(f"{field} is not a hex digest of {length} digits")
            if not hmac.compare_digest(sent.lower(), digests[algo]):
                raise BadRequest(f"{field} does not match the uploaded bytes (corrupted upload?)")
        try:
            content.finish()
        except OSError as exc:
            raise _storage_error(exc) from None
        for algo in self.extra_algos:  # --hash-algo: hashed here, not read back once stored
            if algo not in digests:
                digests[algo] = _file_digest(content.path, functools.partial(hashlib.new, algo))
        meta = self._check_archive(content.path, filename, info.kind, info.project, info.version)
        signature = form.blobs.get("gpg_signature")
        if signature is None and form.get("gpg_signature"):
            signature = form.get("gpg_signature").encode()
        if signature is not None and len(signature) > 64 * 1024:
            raise BadRequest("gpg_signature is too large")
        sidecars = {
            ".asc": signature,
            **self._attestations(form.get("attestations"), filename, info.project, digests),
        }
        return self._publish(content, filename, info.project, digests, meta, sidecars, user)

    def _attestations(
        self, field: str, filename: str, project: str, digests: dict[str, str]
    ) -> dict[str, bytes | None]:
        """The attestation sidecars of an upload (PEP 740). A project with trusted publishers:
        attestations sent must verify against one of them and the file, and become its
        provenance (``FILE.provenance.json``, served); none sent is accepted unless
        ``require_attestations``. A project without: attestations are kept as they were sent
        (``FILE.attestations.json``), unverified and never served. Raises BadRequest."""
        publishers = list(self.publishers(project))
        sent = field.strip()
        if not sent:
            if publishers and self.require_attestations:
                raise BadRequest(
                    f"{project} has a trusted publisher: its uploads must carry PEP 740 "
                    "attestations (twine upload --attestations)"
                )
            return {".attestations.json": None, ".provenance.json": None}
        try:
            attestations = parse_field(sent)
            if not publishers:
                return {".attestations.json": sent.encode(), ".provenance.json": None}
            provenance = verify(attestations, filename, digests["sha256"], publishers)
        except AttestationRefused as exc:
            raise BadRequest(f"attestations refused: {exc}; nothing was stored") from None
        return {".attestations.json": None, ".provenance.json": provenance}

    def _check_archive(
        self, path: str, filename: str, kind: str, project: str, version: str
    ) -> CoreMetadata:
        try:
            meta = read_core_metadata(path, kind, project, filename)
        except InvalidArchive as exc:
            what = "wheel" if kind == KIND_WHEEL else "sdist" if kind == KIND_SDIST else "egg"
            raise BadRequest(f"{filename!r} is not a valid {what}: {exc}") from None
        if kind == KIND_WHEEL:
            try:
                with zipfile.ZipFile(path) as zf:
                    names = zf.namelist()
            except (zipfile.BadZipFile, OSError) as exc:
                raise BadRequest(f"{filename!r} is not a valid wheel: {exc}") from None
            if not any(n.count("/") == 1 and n.endswith(".dist-info/WHEEL") for n in names):
                raise BadRequest(f"{filename!r} is not a valid wheel: no .dist-info/WHEEL")
            # pip refuses a wheel with several .dist-info folders, or one of another project:
            # the index would list a file no installer can use.
            folders = {top for n in names if (top := n.split("/", 1)[0]).endswith(".dist-info")}
            if len(folders) != 1:
                raise BadRequest(
                    f"{filename!r} is not a valid wheel: {len(folders)} .dist-info folders"
                )
            # pip's rule, with a separator: "<name>-<version>" whatever the version holds.
            folder = canonicalize_name(folders.pop()[: -len(".dist-info")])
            if folder != project and not folder.startswith(project + "-"):
                raise BadRequest(
                    f"{filename!r} is not a valid wheel: its .dist-info is another project's"
                )
        if not meta.name or canonicalize_name(meta.name) != project:
            raise BadRequest(
                f"the metadata name {meta.name!r} does not match the filename {filename!r}"
            )
        if not meta.version or version_key(meta.version) != version_key(version):
            raise BadRequest(
                f"the metadata version {meta.version!r} does not match the filename {filename!r}"
            )
        return meta

    def _refuse_closed(self, project: str) -> None:
        """PEP 792: an archived or quarantined project takes no uploads (not even of bytes
        it has already: the answer does not depend on what was there)."""
        status = self.catalog.status_of(project)
        if status is not None and status.refuses_uploads:
            why = f" ({status.reason})" if status.reason else ""
            raise Forbidden(f"project {project} is {status.status}{why}: it takes no uploads")

    # -- publishing --
    def _existing(self, filename: str) -> DistFile | None:
        key = file_key(filename)
        info = parse_dist_filename(filename)
        project = self.catalog.snapshot.project(info.project)
        if project is None or key is None:
            return None
        for f in project.files:
            if f.filename == filename or file_key(f.filename) == key:
                return f
        return None

    def _publish(
        self,
        content: TempFile,
        filename: str,
        project: str,
        digests: dict[str, str],
        meta: CoreMetadata,
        sidecars: dict[str, bytes | None],
        user: str | None,
    ) -> Outcome:
        provenance = sidecars.get(".provenance.json")
        with self._publish_lock:
            self._refuse_closed(project)  # (again: it may have changed while the file came)
            final, existing, superseded = self._destination(filename, project, digests)
            if final is None:  # identical content is there already
                return Outcome(200, f"{filename} already exists with identical content")
            published, note = self._put(
                content, final, replace=existing is not None, sidecars=sidecars
            )
            if published:
                gone = []
                if superseded is not None:
                    try:
                        self.storage.remove(superseded.path)
                        gone.append(superseded.relpath)
                    except OSError as exc:
                        log.warning("could not remove %r, superseded: %s", superseded.relpath, exc)
                self._tell_catalog(final, digests, meta, user, gone, provenance)
        if not published:
            return self._lost_race(final, filename, content.size, digests["sha256"])
        log.info("%s uploaded %r", user or "anonymous", filename)
        return Outcome(200, f"OK: {filename} published{note}")

    def _destination(
        self, filename: str, project: str, digests: dict[str, str]
    ) -> tuple[str | None, DistFile | None, DistFile | None]:
        """Where the file goes (None: the same bytes are there), the listed file it replaces,
        and an sdist of the release in another format that it supersedes. Raises Conflict."""
        existing = self._existing(filename)
        if existing is None:
            listed = self.catalog.snapshot.project(project)
            return self.storage.place(filename, listed.files if listed else ()), None, None
        if existing.sha256 == digests["sha256"]:
            return None, existing, None
        if not self.overwrite:
            what = (
                f"{existing.filename} has different content"
                if existing.filename.lower() == filename.lower() or existing.kind != KIND_SDIST
                else f"this release has an sdist already, {existing.filename} (one "
                "sdist per release, PEP 527)"
            )
            raise Conflict(
                f"File already exists: {what} (start the server with --overwrite to "
                "allow replacing files)"
            )
        if dist_extension(existing.filename) != dist_extension(filename):
            # --overwrite with another sdist format: the new file is published under its own
            # name, then the old one goes (one sdist per release).
            return self.storage.beside(existing.path, filename), None, existing
        return existing.path, existing, None

    def _put(
        self, content: TempFile, final: str, *, replace: bool, sidecars: dict[str, bytes | None]
    ) -> tuple[bool, str]:
        """Publish the file and its sidecars: (False, "") when another writer took the name
        first, else (True, a note on what went wrong after the file itself was replaced).

        A failure before the file is in place, or of a new name (create), leaves everything as
        it was (HTTP 507 or 403). A replaced file cannot be taken back, as its old bytes are gone:
        it stays published, without a sidecar that could not be stored (and never with the old
        file's), and the note says so."""
        storage = self.storage
        staged: list[tuple[TempFile, str]] = []
        placed: list[str] = []
        replaced = False
        try:
            # Sidecars are staged first and put in place only once the file itself is ours: a
            # refused upload never touches another file's signature.
            for ext, data in sidecars.items():
                if data is not None:
                    staged.append((storage.stage_bytes(final, data), final + ext))
            if replace:
                storage.replace(content, final)
                replaced = True
            elif not storage.create(content, final):
                return False, ""
            for temp, dst in staged:
                storage.replace(temp, dst)
                placed.append(dst)
            staged = []
            if replace:
                # New bytes: a signature of the old ones must not stay beside them.
                for ext, data in sidecars.items():
                    if data is None:
                        storage.discard(final + ext)
            storage.sync([final])
        except OSError as exc:
            if not replaced:
                if not replace:
                    storage.undo_create(final, content)
                    for dst in placed:
                        storage.discard(dst)
                raise _storage_error(exc) from None
            log.error("replaced %s, but then: %s", final, exc)
            for ext in sidecars:
                if final + ext not in placed:
                    storage.discard(final + ext)  # the old file's would be wrong beside it
            return True, f" (but not all of it was stored: {exc.strerror or exc})"
        finally:
            for temp, _ in staged:
                temp.discard()
        return True, ""

    def _lost_race(self, final: str, filename: str, size: int, sha256: str) -> Outcome:
        """Something (another upload, a copy) took the name between our check and our
        publishing. Identical bytes are a success (checked outside the publish lock)."""
        if self.storage.sha256_of(final, size) == sha256:
            return Outcome(200, f"{filename} already exists with identical content")
        raise Conflict(
            f"File already exists: {filename} was published a moment ago with other content"
        )

    def _tell_catalog(
        self,
        path: str,
        digests: dict[str, str],
        meta: CoreMetadata,
        user: str | None,
        gone: list[str],
        provenance: bytes | None = None,
    ) -> None:
        """List the new file at once, complete with hashes, metadata and provenance."""
        relpath = self.storage.relpath(path)
        if self.upload_log is not None:
            self.upload_log.record(relpath, digests["sha256"], user)
        try:
            described = self.storage.describe(path, self.extra_algos, digests, meta)
        except (OSError, InvalidDistFilename) as exc:
            log.warning("published %s but could not list it yet: %s", relpath, exc)
            self.catalog.apply([], gone)
            return
        if provenance is not None:
            described = described._replace(provenance_sha256=hashlib.sha256(provenance).hexdigest())
        self.catalog.apply([described], gone)
        if self.on_published is not None:
            self.on_published(described)  # the persistent cache, so a restart need not read it

    # -- remove_pkg --
    def remove(self, name: str, version: str) -> Outcome:
        """remove_pkg: what ``pkgserver remove NAME VERSION`` does, through the same functions:
        every file of that version on disk (listed or not: too large, unreadable, still being
        hashed), with its sidecars; then a version with no file left loses its yank."""
        if not name or not version:
            raise BadRequest("remove_pkg needs name and version")
        project = canonicalize_name(name)
        with self._publish_lock:
            try:
                found = self.storage.files_of(project, version)
            except OSError as exc:
                raise _storage_error(exc) from None
            if not found:
                raise NotFound(f"{name[:100]} {version[:60]} is not hosted here")
            removed = []
            try:
                for f in found:
                    self.storage.remove(f.location)
                    removed.append(f)
            except OSError as exc:
                raise _storage_error(exc) from None
            finally:
                listed = self.catalog.snapshot.files
                self.catalog.apply(
                    removals=[
                        f.relpath
                        for f in removed
                        if (g := listed.get(f.relpath)) and g.path == f.location
                    ]
                )
            for f in found:
                try:
                    self.storage.sync([f.location])
                except OSError:
                    pass
            left = {f.version for f in self.storage.files_of(project)}
            forget_yanks_of_removed(self.records, project, [f.version for f in found], left)
        log.info("removed %s %s (%d files)", project, version, len(removed))
        return Outcome(200, f"OK: removed {len(removed)} files of {name} {version}")


def _no_publishers(_project: str) -> Sequence[Publisher]:
    return ()


def _file_digest(path: str, new: Callable[[], Any]) -> str:
    h = new()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            h.update(chunk)
    return str(h.hexdigest())


def check_filename(filename: str) -> None:
    """Refuse names that could escape the directory or hide: the form's filename is hostile."""
    if not filename:
        raise BadRequest("the file part has no filename")
    if len(filename.encode("utf-8", "replace")) > MAX_FILENAME:
        raise BadRequest("filename too long")
    if "/" in filename or "\\" in filename or filename in (".", ".."):
        raise BadRequest("filename must not contain path separators")
    if filename.startswith("."):
        raise BadRequest("filename must not start with a dot")
    if any(ord(c) < 32 or ord(c) == 127 for c in filename):
        raise BadRequest("filename must not contain control characters")
    if not filename.isascii():
        raise BadRequest("filename must be ASCII (distribution filenames are)")
    if not _FILENAME_CHARS.fullmatch(filename):
        raise BadRequest("filename has characters no distribution filename has")
    # An sdist's extension may be in any case (the directory serves .ZIP, as pypiserver takes
    # it, and pip reads archives whatever the case); a wheel's may not: pip and uv take only
    # ".whl", so a ".WHL" would be listed and never installed.
    if dist_extension(filename) == ".whl" and not filename.endswith(".whl"):
        raise BadRequest("the extension must be written '.whl': installers take no other")


def _storage_error(exc: OSError) -> HTTPProblem:
    log.error("storage error during upload: %s", exc)
    if isinstance(exc, StoreUnavailable):
        # Away, overloaded or throttling: a retry in a moment may well succeed.
        return Unavailable(f"{exc.strerror}, try again later; nothing was changed")
    if isinstance(exc, StoreFull):
        return InsufficientStorage(f"{exc.strerror}; nothing was stored")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage("the index is out of disk space; nothing was stored")
    if exc.errno == errno.EFBIG:
        return TooLarge(f"{exc.strerror or exc}; nothing was stored")
    if exc.errno == errno.EROFS:
        # A volume mounted read-only (docker -v ...:ro) is how an index is made download-only.
        return Forbidden(
            "this index is read-only: its package directory is on a read-only "
            "filesystem; nothing was stored"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return InsufficientStorage(
            "the package directory is not writable by the server; nothing was stored"
        )
    return InsufficientStorage(
        f"could not store the file ({exc.strerror or exc}); nothing was stored"
    )
