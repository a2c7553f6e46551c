"""HTTP handlers of training jobs and models (Relay style, under ``/api/v1``): parse, call the
services, shape. Creation answers 201 with the job; removal 204; every error is a GenericError
body (see ``protocol.training_openapi`` for the statuses)."""

from __future__ import annotations

from aiohttp import web

from protocol.wire import to_wire
from server.auth import presented_key
from server.errors import json_response
from server.handlers import read_small_body
from server.training.models_service import ModelService
from server.training.service import TrainingService

__all__ = ["MODELS", "TRAINING_JOBS", "training_routes"]

TRAINING_JOBS: web.AppKey[TrainingService] = web.AppKey("training_jobs")
MODELS: web.AppKey[ModelService] = web.AppKey("models")

training_routes = web.RouteTableDef()
JOBS_PATH = "/api/v1/training-jobs"
JOB = JOBS_PATH + "/{job_id}"
MODELS_PATH = "/api/v1/models"
MODEL = MODELS_PATH + "/{model_id}"
ONNX = "application/octet-stream"


@training_routes.post(JOBS_PATH)
async def create_training_job(request: web.Request) -> web.Response:
    job = await request.app[TRAINING_JOBS].create(
        presented_key(request.headers), await read_small_body(request)
    )
    return json_response(request, to_wire(job), status=201)


@training_routes.get(JOBS_PATH)
async def list_training_jobs(request: web.Request) -> web.Response:
    page = await request.app[TRAINING_JOBS].page(presented_key(request.headers), request.query)
    return json_response(request, to_wire(page))


@training_routes.get(JOB)
async def get_training_job(request: web.Request) -> web.Response:
    job = await request.app[TRAINING_JOBS].get(
        presented_key(request.headers), request.match_info["job_id"]
    )
    return json_response(request, to_wire(job))


@training_routes.post(JOB + "/cancel")
async def cancel_training_job(request: web.Request) -> web.Response:
    job = await request.app[TRAINING_JOBS].cancel(
        presented_key(request.headers), request.match_info["job_id"]
    )
    return json_response(request, to_wire(job))


@training_routes.get(MODELS_PATH)
async def list_models(request: web.Request) -> web.Response:
    page = await request.app[MODELS].page(presented_key(request.headers), request.query)
    return json_response(request, to_wire(page))


@training_routes.get(MODEL)
async def get_model(request: web.Request) -> web.Response:
    model = await request.app[MODELS].get(
        presented_key(request.headers), request.match_info["model_id"]
    )
    return json_response(request, to_wire(model))


@training_routes.get(MODEL + "/file")
async def download_model(request: web.Request) -> web.StreamResponse:
    """The ONNX file as stored (its sha256 is the model's), to run elsewhere."""
    model_id = request.match_info["model_id"]
    async with request.app[MODELS].file(presented_key(request.headers), model_id) as (
        record,
        chunks,
    ):
        response = web.StreamResponse(
            headers={
                "Content-Type": ONNX,
                "Content-Disposition": f'attachment; filename="{record.model_id}.onnx"',
            }
        )
        response.content_length = record.size_bytes
        await response.prepare(request)
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
        return response


@training_routes.delete(MODEL)
async def delete_model(request: web.Request) -> web.Response:
    await request.app[MODELS].delete(presented_key(request.headers), request.match_info["model_id"])
    return web.Response(status=204)
