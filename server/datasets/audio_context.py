"""The audio files' part of ``create_app``: repositories, the form signer and the processor,
started in a cleanup context after the blob store and the store, stopped before them."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from models.yamnet.spec import WEIGHTS_DIR
from server.appkeys import BLOBS, KEYS, SERVICE, SETTINGS, STORE
from server.audio import DecodeLimits
from server.datasets.audio_processing import AudioProcessor
from server.datasets.audio_routes import AUDIO_FILES
from server.datasets.audio_service import AudioFileService
from server.datasets.post_policy import PostPolicySigner
from server.datasets.repository import SqliteAudioFileRepository, SqliteDatasetRepository
from server.runner import embedding_path

__all__ = ["audio_files_context"]

log = logging.getLogger(__name__)

_POLICY_SECRET = "dataset_upload_policy_key"
_WORK_DIR = "audio-processing"  # temporary outputs of the file in hand, under the data dir


async def audio_files_context(app: web.Application) -> AsyncIterator[None]:
    """Files a killed server left ``processing`` are ``pending`` again before the processor
    claims any."""
    settings, store = app[SETTINGS], app[STORE]
    datasets = SqliteDatasetRepository(store)
    audio = SqliteAudioFileRepository(store)
    await datasets.prepare()
    await audio.prepare()
    secret = await store.write(lambda s: s.secret(_POLICY_SECRET))
    model_dir = settings.model_dir or WEIGHTS_DIR
    has_embeddings = embedding_path(model_dir).exists()
    if not has_embeddings:
        log.warning(
            "no embedding graph at %s (python -m models.yamnet.embedding prepares it): dataset "
            "audio is processed without embeddings",
            embedding_path(model_dir),
        )
    processor = AudioProcessor(
        audio,
        app[BLOBS],
        DecodeLimits(max_duration_s=settings.max_session_duration_s),
        settings.data_dir / _WORK_DIR,
        max_upload_bytes=settings.media_max_bytes,
        model_dir=model_dir if has_embeddings else None,
    )
    app[AUDIO_FILES] = AudioFileService(
        settings,
        app[KEYS],
        app[BLOBS],
        datasets,
        audio,
        PostPolicySigner(secret),
        on_confirmed=processor.wake,
        rate_check=app[SERVICE].rate_check,
    )
    await processor.recover()
    processor.start()
    try:
        yield
    finally:
        await processor.close()
