"""``TrainingHandler``: one training job, from the published set to a stored model.

The server streams each file's processed audio (16 kHz mono WAV, next to the upload in the blob
store: the local store and S3 alike) into the job's work folder, a child process trains on it
(``server.training.child``), and the model is stored (ONNX file first, then its row) before the
runner's terminal UPDATE marks the job completed. The model's id is derived from the job's, so
a job run again after a crash between the two writes finds its model and only finishes: one
job, one model, whatever happened in between.

The child reports each epoch; the job's progress is 0-5 % while the files are fetched, then
5-95 % over the epochs. Every few tenths of a second the handler asks the runner whether the
job is still its own; when it is not (canceled, lease lost) the child is killed at once, as it
is when the server shuts down.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import shutil
import time
import uuid
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from protocol.training import TRAINING
from server.datasets.annotations import AnnotationRepository
from server.datasets.audio_keys import NORMALISED_NAME, derived_key
from server.datasets.repository import AudioFileRepository, DatasetRepository
from server.detectors.loader import store_model
from server.detectors.repository import DetectorModelRecord, ModelRepository
from server.jobs.repository import JobRecord
from server.jobs.runner import Progress
from server.jobs.sound_events import JobFailed
from server.storage import BlobNotFound, BlobStore
from server.training import child
from server.training.material import Material, gather

__all__ = ["TrainingHandler", "model_id_of"]

log = logging.getLogger(__name__)

_MODEL_IDS = uuid.UUID("6f1c1e0a-3b0e-4d59-9a57-2f0e7d1c5a10")  # namespace of uuid5(job id)
_NICE = 10
_POLL_S = 0.2  # how often the child's messages and the job's cancellation are looked at
_FETCHED_PERCENT = 5.0
_TRAINED_PERCENT = 95.0
_JOIN_S = 10.0


def model_id_of(job_id: str) -> str:
    return str(uuid.uuid5(_MODEL_IDS, job_id))


class TrainingHandler:
    """The ``JobHandler`` of ``training`` jobs."""

    kinds = (TRAINING,)
    internal_error = "internal error while training the model"

    def __init__(
        self,
        datasets: DatasetRepository,
        audio: AudioFileRepository,
        annotations: AnnotationRepository,
        models: ModelRepository,
        blobs: BlobStore,
        work_dir: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._datasets = datasets
        self._audio = audio
        self._annotations = annotations
        self._models = models
        self._blobs = blobs
        self._work_dir = work_dir
        self._clock = clock

    async def run(self, job: JobRecord, progress: Progress) -> dict[str, Any]:
        spec = job.input
        model_id = model_id_of(job.job_id)
        stored = await self._models.get(job.team, model_id)
        if stored is not None:  # made by an earlier attempt that stopped before finishing
            return _output(stored)
        dataset = await self._datasets.get(job.team, spec["dataset_id"])
        if dataset is None:
            raise JobFailed("the dataset was deleted before the job ran")
        types = tuple(spec["config"]["artifact_types"])
        material = await self._material(job, types)
        work = self._work_dir / job.job_id
        await asyncio.to_thread(_fresh_dir, work)
        try:
            files = await self._fetch(material, types, work, progress)
            result = await self._train(job, files, model_id, progress)
            if not await progress(_TRAINED_PERCENT):
                raise JobFailed("canceled")
            record = DetectorModelRecord(
                model_id,
                job.team,
                dataset.name,
                dataset.dataset_id,
                spec["annotation_set_id"],
                spec["annotation_set_hash"],
                job.job_id,
                result.artifact_types,
                result.metrics,
                "",
                0,
                "",
                self._clock(),
            )
            stored = await store_model(self._models, self._blobs, record, result.onnx)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        log.info("training job %s made model %s v%d", job.job_id, model_id, stored.version)
        return _output(stored)

    async def _material(self, job: JobRecord, types: tuple[str, ...]) -> Material:
        spec = job.input
        found = await self._annotations.get_set(
            job.team, spec["dataset_id"], spec["annotation_set_id"]
        )
        if found is None or found.content_hash != spec["annotation_set_hash"]:
            raise JobFailed("the annotation set was deleted before the job ran")
        material = await gather(
            self._audio, self._annotations, job.team, spec["dataset_id"], found.set_id
        )
        missing = material.missing_ids()
        if missing:
            raise JobFailed(
                f"{len(missing)} audio file(s) of the annotation set are no longer in the "
                f"dataset or not ready (first: {missing[0]}): the set cannot be trained on as "
                "it was published; publish a new set"
            )
        problems = material.problems(types)
        if problems:
            raise JobFailed("; ".join(problems))
        return material

    async def _fetch(
        self, material: Material, types: tuple[str, ...], work: Path, progress: Progress
    ) -> tuple[tuple[str, str, tuple[tuple[str, float, float], ...]], ...]:
        """Each file's processed audio copied from the blob store into ``work``."""
        events = material.by_file(types)
        out = []
        for n, audio_id in enumerate(material.ready_ids()):
            key = derived_key(material.files[audio_id].blob_key, NORMALISED_NAME)
            path = work / f"{audio_id}.wav"
            try:
                await _copy(self._blobs, key, path)
            except BlobNotFound:
                raise JobFailed(
                    f"the processed audio of file {audio_id} is missing from storage"
                ) from None
            out.append((audio_id, str(path), tuple(events[audio_id])))
            if not await progress(_FETCHED_PERCENT * (n + 1) / len(events)):
                raise JobFailed("canceled")
        return tuple(out)

    async def _train(
        self,
        job: JobRecord,
        files: tuple[tuple[str, str, tuple[tuple[str, float, float], ...]], ...],
        model_id: str,
        progress: Progress,
    ) -> child.ChildResult:
        spec = job.input
        request = child.ChildRequest(
            files,
            spec["config"],
            {
                "model_id": model_id,
                "training_job_id": job.job_id,
                "dataset_id": spec["dataset_id"],
                "annotation_set_id": spec["annotation_set_id"],
                "annotation_set_hash": spec["annotation_set_hash"],
            },
            _NICE,
        )
        context = multiprocessing.get_context("spawn")
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=child.main, args=(sender, request), name="tympan-training", daemon=True
        )
        process.start()  # a fork and exec, and the small request written to the child
        sender.close()
        percent = _FETCHED_PERCENT
        try:
            while True:
                if receiver.poll():
                    try:
                        message = await asyncio.to_thread(receiver.recv)
                    except EOFError:  # it ended without a word: killed, or crashed
                        raise JobFailed(await _crashed(process)) from None
                    if message[0] == "done":
                        result: child.ChildResult = message[1]
                        return result
                    if message[0] == "failed":
                        raise JobFailed(message[1])
                    _, epoch, epochs = message
                    span = _TRAINED_PERCENT - _FETCHED_PERCENT
                    percent = _FETCHED_PERCENT + span * epoch / epochs
                    continue
                if not process.is_alive() and not receiver.poll():
                    raise JobFailed(await _crashed(process))
                if not await progress(percent):
                    raise JobFailed("canceled")
                await asyncio.sleep(_POLL_S)
        finally:
            if process.is_alive():
                process.kill()
            await asyncio.to_thread(process.join, _JOIN_S)
            receiver.close()


async def _crashed(process: BaseProcess) -> str:
    await asyncio.to_thread(process.join, _JOIN_S)
    return f"the training process stopped unexpectedly (exit code {process.exitcode})"


def _output(model: DetectorModelRecord) -> dict[str, Any]:
    return {
        "model_id": model.model_id,
        "artifact_types": list(model.artifact_types),
        "metrics": model.metrics,
    }


def _fresh_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


async def _copy(blobs: BlobStore, key: str, path: Path) -> None:
    file = await asyncio.to_thread(path.open, "wb")
    try:
        async with blobs.open(key) as chunks:
            async for chunk in chunks:
                await asyncio.to_thread(file.write, chunk)
    finally:
        await asyncio.to_thread(file.close)
