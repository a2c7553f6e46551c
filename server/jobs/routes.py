"""HTTP handlers of the Jobs API: parse, call ``JobService``, shape.

Cancelling is ``POST /v1/jobs/<jobId>/cancel`` (pyannoteAI-like); the answer is the job as it is
afterwards: ``canceled``, or its terminal status when it had already finished."""

from __future__ import annotations

from aiohttp import web

from server.appkeys import JOBS
from server.auth import presented_key
from server.errors import json_response
from server.handlers import read_small_body

__all__ = ["job_routes"]

job_routes = web.RouteTableDef()


@job_routes.post("/v1/sound-events")
async def create_sound_events(request: web.Request) -> web.Response:
    created = await request.app[JOBS].create_sound_events(
        presented_key(request.headers), await read_small_body(request)
    )
    return json_response(request, created)


@job_routes.get("/v1/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    page = await request.app[JOBS].page(presented_key(request.headers), request.query)
    return json_response(request, page)


@job_routes.get("/v1/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    job = await request.app[JOBS].get(presented_key(request.headers), request.match_info["job_id"])
    return json_response(request, job)


@job_routes.post("/v1/jobs/{job_id}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    job = await request.app[JOBS].cancel(
        presented_key(request.headers), request.match_info["job_id"]
    )
    return json_response(request, job)


@job_routes.get("/v1/webhook-secret")
async def webhook_secret(request: web.Request) -> web.Response:
    return json_response(request, request.app[JOBS].webhook_secret(presented_key(request.headers)))
