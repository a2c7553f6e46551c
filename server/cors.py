"""CORS, off by default: browsers may call the API only from origins the operator lists.

Preflight requests are answered here; actual responses get ``Access-Control-Allow-Origin`` for an
allowed origin. Credentials are never allowed: keys travel in headers, not cookies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

__all__ = ["cors_headers", "cors_middleware"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
_ALLOWED_HEADERS = "Content-Type, Accept, x-api-key, Authorization, Prefer, X-Request-Id"
_MAX_AGE_S = "600"


_ORIGIN = web.RequestKey("cors_origin", str)


def cors_middleware(
    origins: str,
) -> Middleware:
    allowed = {origin.strip().rstrip("/") for origin in origins.split(",") if origin.strip()}
    any_origin = "*" in allowed

    def allow(origin: str | None) -> str | None:
        if not origin:
            return None
        if any_origin:
            return "*"
        return origin if origin.rstrip("/") in allowed else None

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = allow(request.headers.get("Origin"))
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if origin is None:
                return web.Response(status=403, text="origin not allowed")
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Methods": _ALLOWED_METHODS,
                    "Access-Control-Allow-Headers": _ALLOWED_HEADERS,
                    "Access-Control-Max-Age": _MAX_AGE_S,
                    "Vary": "Origin",
                },
            )
        if origin is not None:
            request[_ORIGIN] = origin  # the headers go on at prepare: see cors_headers
        return await handler(request)

    return cors


async def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the CORS headers of an allowed origin, on every response as its
    headers are sent, streamed ones included (a live feed's headers leave before its handler
    returns, so a middleware adding them afterwards would be too late)."""
    origin = request.get(_ORIGIN)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "X-Request-Id, Retry-After"
        response.headers["Vary"] = "Origin"
