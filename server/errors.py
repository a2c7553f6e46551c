"""The one place where errors become HTTP responses.

Every error, including aiohttp's own (unknown route, wrong method, body too large), leaves as the
GenericError JSON body with the matching status. Unexpected exceptions become a 500 whose body
names only a request id; the details go to the log, never to the client.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

from protocol.codec import DecodeBodyError, encode_body, wants_msgpack
from protocol.errors import ApiError, BadRequest, InternalError, error_body
from server.appkeys import SETTINGS
from server.store import StoreError

__all__ = ["REQUEST_ID", "error_middleware", "json_response"]

REQUEST_ID = web.RequestKey("request_id", str)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_MESSAGES = {
    404: "route not found",
    405: "method not allowed on this route",
    413: "request body is too large",
}


def json_response(
    request: web.Request, payload: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """JSON by default, msgpack when the client sends ``Accept: application/msgpack``."""
    body, content_type = encode_body(payload, wants_msgpack(request.headers.get("Accept")))
    return web.Response(body=body, status=status, content_type=content_type, headers=headers)


def _error(
    request: web.Request, status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    request_id = request.get(REQUEST_ID, "")
    merged = {"X-Request-Id": request_id, **(headers or {})}
    if status >= 500 or status in (408, 429):
        # The route template, never the path: a session id in a path is a capability.
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        log.warning(
            "request %s %s %s -> %d: %s", request_id, request.method, route, status, message
        )
    body = error_body(status, message, request_id)
    return json_response(request, body, status=status, headers=merged)


def _too_large_message(request: web.Request) -> str:
    """aiohttp refused a body over ``client_max_size``: name the limits that apply."""
    settings = request.app.get(SETTINGS)
    if settings is None:
        return _HTTP_MESSAGES[413]
    return (
        f"request body is larger than {settings.max_request_body_bytes} bytes; an audio chunk "
        f"may be at most {settings.max_chunk_bytes} bytes once base64-decoded "
        "(TYMPAN_MAX_CHUNK_BYTES)"
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[REQUEST_ID] = request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8)
    try:
        response = await handler(request)
    except ApiError as exc:
        return _error(request, exc.status_code, exc.message, exc.headers)
    except DecodeBodyError as exc:
        return _error(request, BadRequest.status_code, str(exc))
    except StoreError as exc:
        log.error("request %s: storage failure: %s", request[REQUEST_ID], exc)
        return _error(
            request,
            InternalError.status_code,
            f"storage is failing; the request was not applied (request {request[REQUEST_ID]})",
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = _HTTP_MESSAGES.get(exc.status, exc.reason or "request failed")
        if exc.status == 413:
            message = _too_large_message(request)
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return _error(request, exc.status, message, headers)
    except Exception:
        log.exception("request %s failed", request[REQUEST_ID])
        return _error(request, 500, f"unexpected server error (request {request[REQUEST_ID]})")
    response.headers.setdefault("X-Request-Id", request[REQUEST_ID])
    return response
