"""HTTP handlers: parse the request, call the service, shape the response. Nothing else."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable

from aiohttp import web

from protocol.codec import decode_body
from protocol.errors import PayloadTooLarge, RequestTimeout, ServiceUnavailable
from protocol.messages import parse_chunk_data
from protocol.openapi import openapi_document
from protocol.wire import to_wire
from server.appkeys import ENGINE_STATE, EVENTS, METRICS, SERVICE, SETTINGS
from server.auth import presented_key
from server.errors import json_response
from server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

__all__ = ["read_large_body", "read_small_body", "routes"]

routes = web.RouteTableDef()
API = "/api/v1"


async def _body(request: web.Request, limit_bytes: int | None = None) -> object:
    """Read and parse a body within the configured time, size and nesting limits."""
    settings = request.app[SETTINGS]
    if limit_bytes is not None and (request.content_length or 0) > limit_bytes:
        raise PayloadTooLarge(f"request body is larger than {limit_bytes} bytes")
    try:
        async with asyncio.timeout(settings.body_read_timeout_s):
            raw = await request.read()
    except TimeoutError:
        raise RequestTimeout(
            f"request body was not received within {settings.body_read_timeout_s:g} s"
        ) from None
    if limit_bytes is not None and len(raw) > limit_bytes:
        raise PayloadTooLarge(f"request body is larger than {limit_bytes} bytes")
    return decode_body(raw, request.headers.get("Content-Type"), settings.max_json_depth)


def read_small_body(request: web.Request) -> Awaitable[object]:
    """A JSON (or msgpack) body other than an audio chunk, within ``max_json_bytes``."""
    return _body(request, request.app[SETTINGS].max_json_bytes)


def read_large_body(request: web.Request, limit_bytes: int) -> Awaitable[object]:
    """A JSON (or msgpack) body that is large by design (bulk annotations), within
    ``limit_bytes`` or ``max_json_bytes``, whichever is larger."""
    return _body(request, max(limit_bytes, request.app[SETTINGS].max_json_bytes))


def _prefers_no_wait(request: web.Request) -> bool:
    """RFC 7240 ``Prefer: wait=0``: answer at once instead of long-polling."""
    for header in request.headers.getall("Prefer", []):
        for preference in header.split(","):
            name, _, value = preference.strip().partition("=")
            if name.strip().lower() == "wait" and value.strip() == "0":
                return True
    return False


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response(request, {"status": "ok"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    registry = request.app[METRICS]
    if SERVICE in request.app:
        for state, count in request.app[SERVICE].open_sessions.items():
            registry.sessions.labels(state).set(count)
    return web.Response(body=registry.exposition(), headers={"Content-Type": METRICS_CONTENT_TYPE})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    state = request.app[ENGINE_STATE]
    if not state.ready:
        raise ServiceUnavailable("model is not loaded and warmed up yet")
    return json_response(request, {"status": "ready", **state.describe()})


@routes.get(API + "/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(request, openapi_document())


@routes.post(API + "/audio_sessions")
@routes.post(API + "/audio_sessions/")
async def create_session(request: web.Request) -> web.Response:
    created = await request.app[SERVICE].create(
        presented_key(request.headers), await read_small_body(request)
    )
    return json_response(request, created.to_dict())


@routes.put(API + "/audio_sessions/{session_id}/chunks/{seq}")
async def upload_chunk(request: web.Request) -> web.Response:
    data = parse_chunk_data(await _body(request))
    refs = await request.app[SERVICE].put_chunk(
        request.match_info["session_id"],
        request.match_info["seq"],
        presented_key(request.headers),
        data,
    )
    return json_response(request, refs.to_dict())


@routes.post(API + "/audio_sessions/{session_id}/predict")
async def predict(request: web.Request) -> web.Response:
    predicted = await request.app[SERVICE].predict(
        request.match_info["session_id"], presented_key(request.headers), await _body(request)
    )
    return json_response(request, predicted.to_dict())


@routes.get(API + "/tags/official")
async def official_tags(request: web.Request) -> web.Response:
    tags = request.app[SERVICE].official_tags(presented_key(request.headers))
    return json_response(request, to_wire(tags))


@routes.patch(API + "/audio_sessions/{session_id}")
async def update_session(request: web.Request) -> web.Response:
    await request.app[SERVICE].update(
        request.match_info["session_id"],
        presented_key(request.headers),
        await read_small_body(request),
    )
    return web.Response(status=204)


@routes.delete(API + "/audio_sessions/{session_id}")
async def delete_session(request: web.Request) -> web.Response:
    await request.app[SERVICE].delete(
        request.match_info["session_id"], presented_key(request.headers)
    )
    return web.Response(status=204)


@routes.get(API + "/audio_sessions/{session_id}/status")
async def read_status(request: web.Request) -> web.Response:
    status = await request.app[SERVICE].status(
        request.match_info["session_id"],
        presented_key(request.headers),
        request.query,
        wait=not _prefers_no_wait(request),
    )
    return json_response(request, status.to_dict())


@routes.get(API + "/audio_sessions/{session_id}/results")
async def read_results(request: web.Request) -> web.Response:
    body = await request.app[SERVICE].results(
        request.match_info["session_id"], presented_key(request.headers), request.query
    )
    return json_response(request, body)


@routes.get(API + "/audio_sessions/{session_id}/events")
async def read_events(request: web.Request) -> web.Response:
    page = await request.app[EVENTS].page(
        request.match_info["session_id"],
        presented_key(request.headers),
        request.query,
        wait=not _prefers_no_wait(request),
    )
    return json_response(request, page.to_dict())


@routes.get(API + "/audio_sessions/{session_id}/sse")
async def live_feed(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: windows and event log entries as they are stored."""
    messages = await request.app[EVENTS].live(
        request.match_info["session_id"],
        presented_key(request.headers),
        request.headers.get("Last-Event-ID") or request.query.get("last_event_id"),
    )
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # NGINX: pass each message on at once
        }
    )
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):
        async for message in messages:
            await response.write(message)
    return response
