"""HTTP handlers of the Media API and ``GET /v1/test``: parse, call ``MediaService``, shape."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from protocol.errors import BadRequest, RequestTimeout
from protocol.media import KEY_IS_VALID
from protocol.media_openapi import media_openapi_document
from protocol.wire import to_wire
from server.appkeys import MEDIA, SETTINGS
from server.auth import presented_key
from server.errors import json_response
from server.handlers import read_small_body
from server.media.service import UPLOAD_ROUTE

__all__ = ["media_routes"]

media_routes = web.RouteTableDef()


@media_routes.get("/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(request, media_openapi_document())


@media_routes.get("/v1/test")
async def test_key(request: web.Request) -> web.Response:
    request.app[MEDIA].authenticate(presented_key(request.headers))
    return json_response(request, to_wire(KEY_IS_VALID))


@media_routes.post("/v1/media/input")
async def create_input(request: web.Request) -> web.Response:
    public_url = request.app[SETTINGS].public_url
    origin = public_url.rstrip("/") if public_url else str(request.url.origin())
    upload = await request.app[MEDIA].create_input(
        presented_key(request.headers), await read_small_body(request), origin
    )
    return json_response(request, to_wire(upload), status=201)


@media_routes.put(UPLOAD_ROUTE + "{token}")
async def upload(request: web.Request) -> web.Response:
    """No API key: the signed URL is the capability."""
    uploaded = await request.app[MEDIA].upload(
        request.match_info["token"], request.content_length, _body_chunks(request)
    )
    return json_response(request, to_wire(uploaded))


@media_routes.get("/v1/media/{object_key:.+}")
async def describe(request: web.Request) -> web.Response:
    media = await request.app[MEDIA].describe(
        presented_key(request.headers), request.match_info["object_key"]
    )
    return json_response(request, to_wire(media))


@media_routes.delete("/v1/media/{object_key:.+}")
async def delete(request: web.Request) -> web.Response:
    await request.app[MEDIA].delete(
        presented_key(request.headers), request.match_info["object_key"]
    )
    return web.Response(status=204)


async def _body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The body as it arrives. A stall longer than the body read timeout is a 408; a body that
    ends before its Content-Length (a dropped connection) is an error, never a short object."""
    idle_s = request.app[SETTINGS].body_read_timeout_s
    expected, received = request.content_length, 0
    while True:
        try:
            async with asyncio.timeout(idle_s):
                chunk = await request.content.readany()
        except TimeoutError:
            raise RequestTimeout(f"no upload data for {idle_s:g} s") from None
        except OSError:  # the client went away; nothing is published
            raise BadRequest(f"the connection dropped after {received} bytes") from None
        if not chunk:
            break
        received += len(chunk)
        yield chunk
    if expected is not None and received != expected:
        raise BadRequest(f"the upload ended after {received} of {expected} bytes")
