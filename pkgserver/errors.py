"""Typed errors, each carrying its HTTP status and a short human message.

``app.py`` turns them into responses in one place: the message goes into the reason phrase
(twine prints it) and into a plain-text body (uv prints that).
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "Busy",
    "Conflict",
    "Forbidden",
    "Gone",
    "HTTPProblem",
    "LengthRequired",
    "NotAcceptable",
    "NotFound",
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
