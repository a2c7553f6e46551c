"""``create_app(settings)``: the whole server, assembled with aiohttp cleanup contexts so that
start-up happens in order and teardown in reverse, only for what started.

Order: blob store -> store and the custom detector models (repository, loader) -> model
(loaded and warmed) -> scheduler and engine -> sessions recovered -> inactivity sweeper ->
media (repository, upload signer, retention sweeper) -> jobs (repository, expired leases requeued, runner, webhooks, output sweeper) -> dataset audio files
(repositories, form signer, processor with interrupted files requeued) -> datasets and
annotation sets (which remove a dataset's audio files through the audio files' service) ->
training jobs and models (``server.training.context``) -> inference jobs (repository, worker
with interrupted files requeued).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from aiohttp import web
from aiohttp.typedefs import Middleware
from threadpoolctl import threadpool_limits

from models.yamnet.frontend import log_mel_frames
from models.yamnet.labels import load_class_map
from models.yamnet.spec import FRONTEND, WEIGHTS_DIR
from models.yamnet.thresholds import load_thresholds
from protocol.tokens import TokenCodec
from server.appkeys import (
    ANNOTATIONS,
    BLOBS,
    DATASETS,
    DETECTOR_MODELS,
    ENGINE,
    ENGINE_STATE,
    EVENTS,
    JOBS,
    KEYS,
    MEDIA,
    METRICS,
    SERVICE,
    SETTINGS,
    STORE,
    EngineState,
)
from server.audio import DecodeLimits
from server.auth import KeyDirectory
from server.config import Settings
from server.cors import cors_headers, cors_middleware
from server.datasets.annotation_service import AnnotationService
from server.datasets.annotations_sqlite import SqliteAnnotationRepository
from server.datasets.audio_context import audio_files_context
from server.datasets.audio_routes import AUDIO_FILES, audio_routes
from server.datasets.repository import SqliteAudioFileRepository, SqliteDatasetRepository
from server.datasets.routes import dataset_routes
from server.datasets.service import DatasetService
from server.detectors.loader import ModelLoader
from server.detectors.repository import SqliteModelRepository
from server.engine import EngineConfig, InferenceEngine
from server.errors import error_middleware
from server.event_reads import EventReads
from server.handlers import routes
from server.inference.context import inference_context
from server.inference.routes import inference_routes
from server.jobs.repository import SqliteJobRepository
from server.jobs.routes import job_routes
from server.jobs.runner import JobRunner
from server.jobs.service import JobService, view
from server.jobs.sound_events import SoundEventsHandler, SoundEventsJob
from server.jobs.webhooks import JobWebhooks
from server.logredact import install_redaction
from server.media.grants import UploadSigner
from server.media.repository import SqliteMediaRepository
from server.media.routes import media_routes
from server.media.service import MediaService
from server.metrics import Metrics, metrics_middleware
from server.runner import OnnxRunner, load_runner
from server.scheduler import BatchScheduler
from server.service import SessionService
from server.storage.factory import make_blob_store
from server.storage.local import LocalBlobStore
from server.store import Store, StoreThread
from server.tagging import SENSITIVITY_STEP_LOGIT, Tagger, official_tags
from server.training.context import training_context
from server.training.routes import training_routes
from server.webhooks import WebhookDispatcher

__all__ = ["create_app", "silence_probabilities"]

log = logging.getLogger(__name__)


def _model_dir(settings: Settings) -> Path:
    return settings.model_dir or WEIGHTS_DIR


def create_app(settings: Settings) -> web.Application:
    install_redaction()
    metrics = Metrics()
    middlewares: list[Middleware] = [metrics_middleware(metrics), error_middleware]
    if settings.cors_origins.strip():
        middlewares.insert(0, cors_middleware(settings.cors_origins))
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_request_body_bytes)
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[ENGINE_STATE] = EngineState()
    app.add_routes(routes)
    app.add_routes(media_routes)
    app.add_routes(job_routes)
    app.add_routes(audio_routes)
    app.add_routes(dataset_routes)
    app.add_routes(training_routes)
    app.add_routes(inference_routes)
    if settings.cors_origins.strip():
        app.on_response_prepare.append(cors_headers)
    app.cleanup_ctx.append(_blob_context)
    app.cleanup_ctx.append(_server_context)
    app.cleanup_ctx.append(_media_context)
    app.cleanup_ctx.append(_jobs_context)
    app.cleanup_ctx.append(audio_files_context)
    app.cleanup_ctx.append(_datasets_context)
    app.cleanup_ctx.append(training_context)
    app.cleanup_ctx.append(inference_context)
    app.on_shutdown.append(_end_live_feeds)
    return app


async def _server_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # BLAS (the filterbank product) gets one thread: its products here are small, and its
    # worker threads spin between calls, which on a 2-core machine took the second core from
    # the model. Measured with 300 in-process streams: CPU per audio second 6.1 ms -> 3.3 ms.
    threadpool_limits(limits=1, user_api="blas")
    previous_switch_interval = sys.getswitchinterval()
    state = app[ENGINE_STATE]
    store = Store(settings.db_path, fsync=settings.fsync)
    token_key = store.secret("next_token_key")
    store_thread = StoreThread(store, reader=Store(settings.db_path, read_only=True))
    keys = KeyDirectory(settings.db_path)
    app[STORE] = store_thread
    app[KEYS] = keys
    infer_executor = ThreadPoolExecutor(
        settings.inference_workers, thread_name_prefix="tympan-infer"
    )
    decode_executor = ThreadPoolExecutor(2, thread_name_prefix="tympan-decode")
    scheduler: BatchScheduler | None = None
    engine: InferenceEngine | None = None
    sweeper: asyncio.Task[None] | None = None
    webhooks: WebhookDispatcher | None = None
    try:
        sys.setswitchinterval(settings.gil_switch_interval_ms / 1000.0)  # see Settings
        models = SqliteModelRepository(store_thread)
        await models.prepare()
        app[DETECTOR_MODELS] = ModelLoader(models, app[BLOBS])
        loop = asyncio.get_running_loop()
        model_dir = _model_dir(settings)
        runner = await loop.run_in_executor(
            infer_executor, lambda: load_runner(settings, model_dir)
        )
        step = runner.output_quant.scale if runner.output_quant else SENSITIVITY_STEP_LOGIT
        class_map = load_class_map(model_dir)
        labels = tuple(name for _, name in class_map)
        tagger = Tagger(labels, load_thresholds(), sensitivity_step_logit=step)
        metrics = app[METRICS]

        def record_batch(windows: int, compute_s: float, waits_s: list[float]) -> None:
            metrics.batches.inc()
            metrics.windows.inc(windows)
            metrics.compute_seconds.observe(compute_s)
            for wait_s in waits_s:
                metrics.queue_seconds.observe(wait_s)

        scheduler = BatchScheduler(
            runner.run,
            infer_executor,
            settings.max_batch_size,
            settings.max_queue_delay_ms / 1000.0,
            concurrency=settings.inference_workers,
            on_batch=record_batch,
        )
        warm_s = await loop.run_in_executor(infer_executor, _warm_up, runner)
        limits = DecodeLimits(max_duration_s=settings.max_session_duration_s)
        config = EngineConfig(
            limits,
            prune_consumed_audio=settings.audio_retention == "consumed",
            silence_gate_dbfs=settings.silence_gate_dbfs,
        )
        silence = await loop.run_in_executor(infer_executor, silence_probabilities, runner)
        engine = InferenceEngine(
            config,
            tagger,
            store_thread,
            scheduler,
            decode_executor,
            metrics,
            silence,
            prepare_input=runner.prepare,
        )
        service = SessionService(
            settings,
            store_thread,
            keys,
            engine,
            TokenCodec(token_key),
            FRONTEND.window_seconds,
            metrics,
            official_tags(class_map),
        )
        service.detector_models = app[DETECTOR_MODELS]
        app[SERVICE] = service
        app[ENGINE] = engine
        webhooks = WebhookDispatcher(settings, store_thread, engine, metrics)
        service.webhooks = webhooks
        app[EVENTS] = EventReads(
            settings, service, store_thread, engine, TokenCodec(token_key), FRONTEND.window_seconds
        )
        recovered = await service.load()
        for session in service.all_sessions():
            webhooks.watch(session)
        sweeper = asyncio.create_task(_sweep_inactive(service, settings), name="inactivity-sweeper")
        state.provider = runner.provider
        state.variant = f"yamnet-{runner.variant}"
        state.details = {
            "max_batch_size": settings.max_batch_size,
            "batch_buckets": list(runner.bucket_sizes),
            "warmup_s": round(warm_s, 3),
            "variant_checks": runner.variant_checks,
        }
        metrics.provider.labels(runner.provider, state.variant).set(1)
        for checked, summary in runner.variant_checks.items():
            for measure, value in summary.items():
                if isinstance(value, bool | int | float):
                    metrics.variant_check.labels(checked, measure).set(float(value))
        _freeze_start_up_heap()
        state.ready = True
        log.info(
            "ready: provider=%s variant=%s sessions recovered=%d",
            runner.provider,
            state.variant,
            recovered,
        )
        yield
    finally:
        state.ready = False
        if EVENTS in app:
            app[EVENTS].stop()
        gc.unfreeze()  # what start-up made may be collected again (tests start many apps)
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        if webhooks is not None:
            await webhooks.close()
        if engine is not None:
            await engine.stop()
        if scheduler is not None:
            await scheduler.stop()
        infer_executor.shutdown(wait=True)
        decode_executor.shutdown(wait=True)
        keys.close()
        sys.setswitchinterval(previous_switch_interval)
        store_thread.close()
        log.info("store closed")


async def _blob_context(app: web.Application) -> AsyncIterator[None]:
    """The blob store of ``TYMPAN_BLOB_STORE``; it opens nothing until first used."""
    settings = app[SETTINGS]
    blobs = make_blob_store(settings)
    app[BLOBS] = blobs
    if isinstance(blobs, LocalBlobStore):
        # A crash mid-upload leaves its temporary file; one untouched for longer than a body
        # may stall is dead whoever wrote it (that writer answered 408 and removed its own).
        removed = await asyncio.get_running_loop().run_in_executor(
            None, blobs.remove_stale_uploads, settings.body_read_timeout_s
        )
        if removed:
            log.info("removed %d unfinished uploads left by a crash", removed)
    try:
        yield
    finally:
        await blobs.close()


_MEDIA_SECRET = "media_upload_key"


async def _media_context(app: web.Application) -> AsyncIterator[None]:
    """The Media API over the blob store and the store, and its retention sweeper. Expiry
    lives in the repository, so a restarted server sweeps what the previous one left."""
    settings, store = app[SETTINGS], app[STORE]
    repository = SqliteMediaRepository(store)
    await repository.prepare()
    secret = await store.write(lambda s: s.secret(_MEDIA_SECRET))
    media = MediaService(
        settings,
        app[KEYS],
        app[BLOBS],
        repository,
        UploadSigner(secret),
        rate_check=app[SERVICE].rate_check,
    )
    app[MEDIA] = media
    interval_s = max(1.0, min(300.0, settings.media_retention_s / 10))
    sweeper = asyncio.create_task(media.run_sweeper(interval_s), name="media-retention-sweeper")
    try:
        yield
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper


_JOB_WEBHOOK_SECRET = "job_webhook_key"


async def _jobs_context(app: web.Application) -> AsyncIterator[None]:
    """Jobs on media. Jobs live in the repository: at start-up the ones a stopped process left
    running (their lease expired) are pending again before the runner claims any."""
    settings, store, engine = app[SETTINGS], app[STORE], app[ENGINE]
    repository = SqliteJobRepository(store)
    await repository.prepare()
    webhook_key = await store.write(lambda s: s.secret(_JOB_WEBHOOK_SECRET))
    webhooks = JobWebhooks(settings, repository, webhook_key, lambda job: view(job).to_dict())
    runner = JobRunner(
        repository,
        SoundEventsHandler(SqliteMediaRepository(store), SoundEventsJob(engine, app[BLOBS])),
        workers=settings.job_workers,
        lease_s=settings.job_lease_s,
        output_retention_s=settings.job_output_retention_s,
        on_finished=webhooks.wake,
    )
    jobs = JobService(
        app[MEDIA],
        repository,
        engine.tagger,
        engine.config.window_seconds,
        webhook_key,
        on_created=runner.wake,
        on_canceled=webhooks.wake,
        max_unfinished=settings.max_unfinished_jobs_per_key,
    )
    app[JOBS] = jobs
    await runner.requeue_expired()
    runner.start()
    webhooks.start()
    interval_s = max(1.0, min(300.0, settings.job_output_retention_s / 10))
    sweeper = asyncio.create_task(jobs.run_output_sweeper(interval_s), name="job-output-sweeper")
    try:
        yield
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        await runner.close()
        await webhooks.close()


async def _datasets_context(app: web.Application) -> AsyncIterator[None]:
    """Datasets and annotation sets over the store. A dataset's audio files (rows, uploads and
    processing outputs) are removed with it by the audio files' service, started before."""
    store = app[STORE]
    datasets = SqliteDatasetRepository(store)
    audio = SqliteAudioFileRepository(store)
    annotations = SqliteAnnotationRepository(store)
    for repository in (datasets, audio, annotations):
        await repository.prepare()
    service = DatasetService(app[KEYS], datasets, annotations, app[AUDIO_FILES].remove_dataset)
    app[DATASETS] = service
    app[ANNOTATIONS] = AnnotationService(service, audio, annotations)
    yield


async def _end_live_feeds(app: web.Application) -> None:
    """Before connections are drained: live feeds would otherwise hold the shutdown open."""
    if EVENTS in app:
        app[EVENTS].stop()


def _freeze_start_up_heap() -> None:
    """Keep what start-up built (modules, the model's session, labels, routes) out of every
    later garbage collection. A full collection walks every tracked object while holding the
    interpreter lock, so it stalls the event loop, the store and the model thread alike; with
    400 live streams it took 33-89 ms, once or twice in a 20 s run, and each one put a step
    into the latency tail. Only objects created after start-up are walked from here on."""
    gc.collect()
    gc.freeze()


def _warm_up(runner: OnnxRunner) -> float:
    """Run every batch-size bucket once, so the first user never pays for a shape's set-up
    (TensorRT and CUDA build kernels per shape)."""
    started = time.perf_counter()
    patch = log_mel_frames(np.zeros(FRONTEND.patch_samples))[None].astype(np.float32)
    for size in runner.bucket_sizes:
        runner.run(np.repeat(patch, size, axis=0))
    return time.perf_counter() - started


def silence_probabilities(runner: OnnxRunner) -> np.ndarray:
    """What the model says for digital silence: reported for windows under the silence gate."""
    frames = log_mel_frames(np.zeros(FRONTEND.patch_samples))
    return runner.run(frames[None].astype(np.float32))[0]


async def _sweep_inactive(service: SessionService, settings: Settings) -> None:
    interval_s = max(0.05, min(60.0, settings.inactivity_timeout_s / 4))
    while True:
        await asyncio.sleep(interval_s)
        try:
            await service.expire_inactive()
        except Exception:
            log.exception("inactivity sweep failed")
