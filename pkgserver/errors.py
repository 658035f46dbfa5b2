"""Typed errors, each carrying its HTTP status and a short human message.

``app.py`` turns them into responses in one place: the message goes into the reason phrase
(twine prints it) and into a plain-text body (uv prints that), or, for the few whose clients
read JSON (``json_body``), into a JSON body.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BadGateway",
    "BadRequest",
    "Busy",
    "Conflict",
    "Forbidden",
    "Gone",
    "HTTPProblem",
    "LengthRequired",
    "NotAcceptable",
    "NotFound",
    "TokenRefused",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "UsageError",
]


class UsageError(Exception):
    """A bad command-line argument: reported in one line, exit status 2."""


class HTTPProblem(Exception):
    status = 500

    def __init__(self, message: str, **headers: str) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers

    def json_body(self) -> dict[str, Any] | None:
        """The JSON document to answer with instead of plain text (None: plain text)."""
        return None


class BadRequest(HTTPProblem):
    status = 400


class Unauthorized(HTTPProblem):
    status = 401

    def __init__(self, message: str, realm: str = "pkgserver") -> None:
        super().__init__(message)
        self.headers = {"WWW-Authenticate": f'Basic realm="{realm}"'}


class Forbidden(HTTPProblem):
    status = 403


class NotFound(HTTPProblem):
    status = 404


class LengthRequired(HTTPProblem):
    status = 411


class NotAcceptable(HTTPProblem):
    status = 406


class Conflict(HTTPProblem):
    status = 409


class Gone(HTTPProblem):
    status = 410


class TooLarge(HTTPProblem):
    status = 413


class TokenRefused(HTTPProblem):
    """A trusted-publishing token exchange refused (``POST /_/oidc/mint-token``), answered in
    PyPI's shape: ``{"message": "Token request failed", "errors": [{"code", "description"}]}``.
    pypa/gh-action-pypi-publish reads ``errors`` from any non-2xx JSON answer and prints each
    code and description; uv prints the body whole. 403 (PyPI answers 422; the issue asks for
    401/403 for every bad token, and both clients print any 4xx), or 503 when the issuer's
    keys cannot be had for now."""

    status = 403

    def __init__(self, code: str, description: str, status: int = 422, **headers: str) -> None:
        super().__init__(f"Token request failed: {description}", **headers)
        self.status = status
        self.code = code  # PyPI's codes: invalid-payload, invalid-token, invalid-publisher, ...
        self.description = description

    def json_body(self) -> dict[str, Any]:
        error = {"code": self.code, "description": self.description}
        return {"message": "Token request failed", "errors": [error]}


class Busy(HTTPProblem):
    """Load shedding: the client should retry shortly (pip and twine retry 503)."""

    status = 503

    def __init__(self, message: str) -> None:
        super().__init__(message, **{"Retry-After": "1"})


class Unavailable(HTTPProblem):
    """Where the files live cannot be reached for now (an object store away): nothing was
    changed, and the same request may succeed later."""

    status = 503

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message, **{"Retry-After": str(retry_after)})


class BadGateway(HTTPProblem):
    """The upstream index (the caching proxy's) could not answer, and nothing cached could."""

    status = 502
