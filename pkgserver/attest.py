"""PEP 740 attestations: the ``attestations`` upload field, read as untrusted JSON, verified
against a project's trusted publishers, and turned into the provenance object served at
``/integrity/<project>/<version>/<filename>/provenance``.

Verification uses the ``pypi-attestations`` library (``pip install 'pkgserver[attestations]'``)
offline: Sigstore's trust root bundled with ``sigstore``, never a network request, so an index
without Internet access verifies too. Without the library, ``available()`` is False and a
project that has a publisher refuses attestations (it cannot tell good ones from bad).

What is checked (by the library, per PEP 740): the signing certificate chains to Sigstore's
public-good Fulcio and its signature is in the Rekor log as the bundled keys attest; the
certificate was issued to a run of the publisher's repository and workflow (GitHub: the issuer
``https://token.actions.githubusercontent.com``, source repository and build config URI; GitLab:
``https://gitlab.com`` and the CI file path); the statement names exactly the uploaded file
(name parsed as a wheel or sdist name) and its sha256; the predicate is a publish attestation or
SLSA provenance. What is not: a publisher's ``environment``, which the certificate does not
carry, so the provenance served says ``"environment": null``.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Sequence
from typing import Any

from .rights import BUILTIN_ISSUERS, Publisher

__all__ = [
    "MAX_ATTESTATIONS",
    "MAX_FIELD_BYTES",
    "PROVENANCE",
    "PROVENANCE_LIMIT",
    "AttestationRefused",
    "available",
    "parse_field",
    "provenance_covers",
    "verify",
]

log = logging.getLogger(__name__)

MAX_FIELD_BYTES = 256 * 1024  # twine sends ~6-10 KB an attestation
PROVENANCE = ".provenance.json"  # the sidecar holding a file's verified provenance object
PROVENANCE_LIMIT = 2 * MAX_FIELD_BYTES  # the attestations and their publishers
MAX_ATTESTATIONS = 8  # PyPI takes one per predicate type; two types exist today
_MAX_DEPTH = 16  # an attestation nests 5 deep; deeper JSON is refused before it is walked

# The issuers the library's GitHub and GitLab publishers check certificates against.
_LIBRARY_ISSUERS = {i.kind: i.url for i in BUILTIN_ISSUERS}


class AttestationRefused(ValueError):
    """The attestations field is malformed, or does not verify: the upload is refused (400)."""


def available() -> bool:
    """Whether attestations can be verified here (the ``attestations`` extra is installed)."""
    try:
        import pypi_attestations  # noqa: F401
    except ImportError:
        return False
    return True


def parse_field(text: str) -> list[dict[str, Any]]:
    """The ``attestations`` form field as a list of JSON objects (PEP 740: a JSON array of one
    or more attestation objects), bounded in bytes, count and depth. Raises AttestationRefused."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FIELD_BYTES:
        raise AttestationRefused(f"the attestations field is larger than {MAX_FIELD_BYTES} bytes")
    if _depth(text) > _MAX_DEPTH:
        raise AttestationRefused("the attestations field nests too deep")
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise AttestationRefused(f"the attestations field is not valid JSON: {exc}") from None
    if not isinstance(value, list) or not value:
        raise AttestationRefused("the attestations field must be a JSON array of attestations")
    if len(value) > MAX_ATTESTATIONS:
        raise AttestationRefused(f"at most {MAX_ATTESTATIONS} attestations are taken per file")
    if not all(isinstance(item, dict) for item in value):
        raise AttestationRefused("each attestation must be a JSON object")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth(text: str) -> int:
    """The deepest nesting of arrays and objects, counted over the raw text (brackets inside
    strings skipped), so that ``[[[[...]]]]`` is refused without recursing into it."""
    deepest = depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def verify(
    attestations: list[dict[str, Any]],
    filename: str,
    sha256: str,
    publishers: Sequence[Publisher],
) -> bytes:
    """The provenance object (PEP 740, as PyPI serves it) for ``attestations`` of the file
    ``filename`` with digest ``sha256``: each attestation must verify against one of
    ``publishers``; they are bundled by the publisher they verified against. Raises
    AttestationRefused saying why the first one that does not verify fails."""
    try:
        from pydantic import ValidationError
        from pypi_attestations import (
            Attestation,
            AttestationBundle,
            AttestationError,
            Distribution,
            Provenance,
        )
    except ImportError:
        raise AttestationRefused(
            "attestations cannot be verified on this server (it lacks the pypi-attestations "
            "library: pip install 'pkgserver[attestations]')"
        ) from None
    try:
        dist = Distribution(name=filename, digest=sha256)
    except ValidationError:
        raise AttestationRefused(
            f"{filename!r} is not a wheel or sdist name that attestations can name"
        ) from None
    identities = [(p, _identity(p)) for p in publishers]
    usable = [(p, i) for p, i in identities if i is not None]
    if not usable:
        raise AttestationRefused(
            "no trusted publisher of this project can be checked against attestations "
            "(only GitHub and GitLab publishers with their public issuers can)"
        )
    bundles: dict[int, list[Any]] = {}
    for n, raw in enumerate(attestations, 1):
        try:
            attestation = Attestation.model_validate(raw)
        except ValidationError as exc:
            details = exc.errors()
            where, why = "?", "invalid"
            if details:
                where = ".".join(str(p) for p in details[0]["loc"]) or "?"
                why = details[0]["msg"]
            raise AttestationRefused(f"attestation {n} is malformed ({where}: {why})") from None
        failures = []
        for index, (publisher, identity) in enumerate(usable):
            try:
                attestation.verify(identity, dist, offline=True)
            except AttestationError as exc:
                failures.append(f"{_describe(publisher)}: {exc}")
                continue
            except Exception as exc:  # the library's parsers on hostile input: refuse, log
                log.warning("attestation %d of %s could not be checked: %r", n, filename, exc)
                failures.append(f"{_describe(publisher)}: could not be checked ({exc})")
                continue
            bundles.setdefault(index, []).append(attestation)
            break
        else:
            raise AttestationRefused(
                f"attestation {n} of {filename} does not verify against this project's trusted "
                "publishers: " + "; ".join(failures)
            )
    provenance = Provenance(
        attestation_bundles=[
            AttestationBundle(publisher=usable[index][1], attestations=found)
            for index, found in sorted(bundles.items())
        ]
    )
    return provenance.model_dump_json().encode()


def provenance_covers(data: bytes, sha256: str) -> bool:
    """Whether ``data`` is a provenance object whose every attestation's statement names
    ``sha256`` (no signature is checked: that was done at upload; this tells a provenance that
    belongs to these bytes from one left over beside a file replaced by other means)."""
    try:
        doc = json.loads(data)
        attestations = [a for b in doc["attestation_bundles"] for a in b["attestations"]]
        if doc.get("version") != 1 or not attestations:
            return False
        for attestation in attestations:
            statement = json.loads(base64.b64decode(attestation["envelope"]["statement"]))
            subjects = statement["subject"]
            if len(subjects) != 1 or subjects[0]["digest"]["sha256"] != sha256:
                return False
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError):
        return False
    return True


def _identity(publisher: Publisher) -> Any:
    """The library's publisher for ``publisher``, or None if it cannot check it: another kind,
    or an issuer other than the public one (a GitHub Enterprise or self-hosted GitLab: the
    library checks certificates against github.com's and gitlab.com's claims)."""
    from pypi_attestations import GitHubPublisher, GitLabPublisher

    if _LIBRARY_ISSUERS.get(publisher.kind) != publisher.issuer.rstrip("/"):
        return None
    if publisher.kind == "github":
        return GitHubPublisher(repository=publisher.repository, workflow=publisher.workflow)
    if publisher.kind == "gitlab":
        return GitLabPublisher(
            repository=publisher.repository, workflow_filepath=publisher.workflow
        )
    return None


def _describe(publisher: Publisher) -> str:
    return f"{publisher.kind} {publisher.repository} ({publisher.workflow})"
