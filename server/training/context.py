"""The training part of ``create_app``: the training jobs' runner (one worker: a training job
takes a core for minutes), the services, started after the datasets and stopped before them.

Training jobs share the jobs table with the Jobs API but have a runner of their own, which
claims only ``training`` jobs; expired leases are swept by every runner, so a job whose server
was killed is pending again at the next start-up. A training job's output (its model id and
metrics) is kept for as long as the job.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from server.appkeys import BLOBS, DATASETS, DETECTOR_MODELS, SETTINGS, STORE
from server.datasets.annotations_sqlite import SqliteAnnotationRepository
from server.datasets.repository import SqliteAudioFileRepository, SqliteDatasetRepository
from server.jobs.repository import SqliteJobRepository
from server.jobs.runner import JobRunner
from server.training.handler import TrainingHandler
from server.training.models_service import ModelService
from server.training.routes import MODELS, TRAINING_JOBS
from server.training.service import TrainingService

__all__ = ["WORK_DIR", "training_context"]

WORK_DIR = "training"  # the job in hand's audio files, under the data dir
_WORKERS = 1


def _clear(path: Path) -> None:
    """What a killed server's job left; the job runs again from the blob store."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)


async def training_context(app: web.Application) -> AsyncIterator[None]:
    settings, store = app[SETTINGS], app[STORE]
    jobs = SqliteJobRepository(store)
    await jobs.prepare()
    audio = SqliteAudioFileRepository(store)
    annotations = SqliteAnnotationRepository(store)
    loader = app[DETECTOR_MODELS]
    work_dir = settings.data_dir / WORK_DIR
    await asyncio.to_thread(_clear, work_dir)
    handler = TrainingHandler(
        SqliteDatasetRepository(store),
        audio,
        annotations,
        loader.repository,
        app[BLOBS],
        work_dir,
    )
    runner = JobRunner(
        jobs,
        handler,
        workers=_WORKERS,
        lease_s=settings.job_lease_s,
        output_retention_s=None,
    )
    app[TRAINING_JOBS] = TrainingService(
        app[DATASETS],
        audio,
        annotations,
        jobs,
        on_created=runner.wake,
        on_canceled=runner.canceled,
        max_unfinished=settings.max_unfinished_jobs_per_key,
    )
    app[MODELS] = ModelService(app[DATASETS], loader, app[BLOBS])
    await runner.requeue_expired()
    runner.start()
    try:
        yield
    finally:
        await runner.close()
