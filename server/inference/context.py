"""The inference jobs' part of ``create_app``: repository, service and worker, started in a
cleanup context after the store, the models' loader, media and dataset audio (whose form
signer the uploads share), stopped before them."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from server.appkeys import BLOBS, DETECTOR_MODELS, KEYS, MEDIA, SERVICE, SETTINGS, STORE
from server.audio import DecodeLimits
from server.datasets.audio_routes import AUDIO_FILES
from server.inference.repository import SqliteInferenceRepository
from server.inference.routes import INFERENCE
from server.inference.service import InferenceService
from server.inference.worker import InferenceWorker

__all__ = ["inference_context"]


async def inference_context(app: web.Application) -> AsyncIterator[None]:
    """Files a killed server left ``processing`` are ``pending`` again before the worker
    claims any."""
    settings, store = app[SETTINGS], app[STORE]
    repository = SqliteInferenceRepository(store)
    await repository.prepare()
    loader = app[DETECTOR_MODELS]
    worker = InferenceWorker(
        repository,
        loader.repository,
        app[BLOBS],
        DecodeLimits(max_duration_s=settings.max_session_duration_s),
        max_upload_bytes=settings.media_max_bytes,
    )
    app[INFERENCE] = InferenceService(
        settings,
        app[KEYS],
        app[BLOBS],
        repository,
        loader,
        app[MEDIA],
        app[AUDIO_FILES].signer,
        on_waiting=worker.wake,
        rate_check=app[SERVICE].rate_check,
    )
    await worker.recover()
    worker.start()
    try:
        yield
    finally:
        await worker.close()
