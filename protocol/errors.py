"""The error catalogue: one exception type per documented status, and the GenericError body.

Server code raises these; one middleware turns them into responses. The statuses are the Cochl
reference's (400, 401, 403, 404, 409, 413, 429, 500) plus 405 for a known route with the wrong
method and 503 while the server is not ready.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Any, ClassVar

from pydantic import ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

__all__ = [
    "ApiError",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "GenericError",
    "InternalError",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RequestTimeout",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "error_body",
    "error_from_body",
]


class ApiError(Exception):
    """An error with an HTTP status and a message safe to show a client."""

    status_code: ClassVar[int] = 500

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status_code, self.message)


class BadRequest(ApiError):
    status_code = 400


class Unauthorized(ApiError):
    status_code = 401


class Forbidden(ApiError):
    status_code = 403


class NotFound(ApiError):
    status_code = 404


class MethodNotAllowed(ApiError):
    status_code = 405


class RequestTimeout(ApiError):
    status_code = 408


class Conflict(ApiError):
    status_code = 409


class PayloadTooLarge(ApiError):
    status_code = 413


class TooManyRequests(ApiError):
    status_code = 429


class InternalError(ApiError):
    status_code = 500


class ServiceUnavailable(ApiError):
    status_code = 503


_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status_code: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        Conflict,
        PayloadTooLarge,
        TooManyRequests,
        InternalError,
        ServiceUnavailable,
    )
}


@dataclass(frozen=True)
class GenericError:
    """Every error body (a wire type: see ``protocol.wire``, which this module cannot import)."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    error: Annotated[str, Field(description="Human-readable description; do not parse it.")]
    status_code: Annotated[int, Field(ge=400, le=599, description="HTTP status code returned.")]
    request_id: (
        Annotated[
            str,
            Field(
                description="Identifies the request in the server's logs (also in X-Request-Id)."
            ),
        ]
        | SkipJsonSchema[None]
    ) = None


def error_body(status_code: int, message: str, request_id: str | None = None) -> dict[str, Any]:
    """A GenericError body: the request id that the server's log lines carry, when there is one."""
    error = GenericError(message, status_code, request_id or None)
    return {name: value for name, value in asdict(error).items() if value is not None}


def error_from_body(status_code: int, body: Any) -> ApiError:
    """Rebuild the typed error a server sent (used by the client)."""
    message = body.get("error") if isinstance(body, dict) else None
    cls = _BY_STATUS.get(status_code, ApiError)
    error = cls(str(message) if message else f"HTTP {status_code}")
    if cls is ApiError:
        error.status_code = status_code  # type: ignore[misc]
    return error
