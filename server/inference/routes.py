"""HTTP handlers of inference jobs (``/api/v1/inference-jobs``, Relay's Step 6): parse, call
``InferenceService``, shape. Creation answers 201, removal 204; every error is a GenericError
body (see ``protocol.inference_openapi`` for the statuses). The service lives under its own
``AppKey`` here, so this part and the rest of the app grow apart without touching each other."""

from __future__ import annotations

from aiohttp import web

from protocol.wire import to_wire
from server.appkeys import SETTINGS
from server.auth import presented_key
from server.errors import json_response
from server.handlers import read_small_body
from server.inference.service import InferenceService

__all__ = ["INFERENCE", "JOBS_PATH", "inference_routes"]

INFERENCE: web.AppKey[InferenceService] = web.AppKey("inference_jobs")

inference_routes = web.RouteTableDef()
JOBS_PATH = "/api/v1/inference-jobs"
_JOB = JOBS_PATH + "/{job_id}"


def _origin(request: web.Request) -> str:
    public_url = request.app[SETTINGS].public_url
    return public_url.rstrip("/") if public_url else str(request.url.origin())


def _job_id(request: web.Request) -> str:
    return request.match_info["job_id"]


@inference_routes.post(JOBS_PATH)
async def create_job(request: web.Request) -> web.Response:
    job = await request.app[INFERENCE].create(
        presented_key(request.headers), await read_small_body(request)
    )
    return json_response(request, to_wire(job), status=201)


@inference_routes.get(JOBS_PATH)
async def list_jobs(request: web.Request) -> web.Response:
    page = await request.app[INFERENCE].page(presented_key(request.headers), request.query)
    return json_response(request, to_wire(page))


@inference_routes.get(_JOB)
async def get_job(request: web.Request) -> web.Response:
    job = await request.app[INFERENCE].get(presented_key(request.headers), _job_id(request))
    return json_response(request, to_wire(job))


@inference_routes.delete(_JOB)
async def delete_job(request: web.Request) -> web.Response:
    await request.app[INFERENCE].delete(presented_key(request.headers), _job_id(request))
    return web.Response(status=204)


@inference_routes.post(_JOB + "/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    job = await request.app[INFERENCE].cancel(presented_key(request.headers), _job_id(request))
    return json_response(request, to_wire(job))


@inference_routes.post(_JOB + "/files/upload-url")
async def upload_url(request: web.Request) -> web.Response:
    answer = await request.app[INFERENCE].upload_url(
        presented_key(request.headers),
        _job_id(request),
        await read_small_body(request),
        _origin(request),
    )
    return json_response(request, to_wire(answer))


@inference_routes.post(_JOB + "/files/confirm")
async def confirm(request: web.Request) -> web.Response:
    file = await request.app[INFERENCE].confirm(
        presented_key(request.headers), _job_id(request), await read_small_body(request)
    )
    return json_response(request, to_wire(file))


@inference_routes.post(_JOB + "/files")
async def add_media_file(request: web.Request) -> web.Response:
    file = await request.app[INFERENCE].add_media(
        presented_key(request.headers), _job_id(request), await read_small_body(request)
    )
    return json_response(request, to_wire(file), status=201)
