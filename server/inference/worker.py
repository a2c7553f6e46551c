"""``InferenceWorker``: the durable worker that runs inference jobs' files, one at a time.

A file is claimed by a conditional transition ``pending -> processing`` that counts the attempt,
so two workers never both take it. Nothing lives only in memory: a server killed mid-file
leaves the row ``processing``; at the next start (one server per database, as for sessions)
every such row is ``pending`` again, and a file that has killed its worker ``MAX_ATTEMPTS``
times is failed instead of being tried forever. A clean shutdown hands its file back without
counting the attempt. The detections are written in the UPDATE that makes the file
``completed``, so a file is processed, as far as anyone can see, exactly once.

The work runs in a child process (``server.inference.child``) at nice 10, fed the file's chunks
from the blob store; the model's ONNX file is read from the blob store, checked against its
recorded sha256 and sent to the child once, where it stays for the files after. A model
deleted before a file runs fails that file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import multiprocessing
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from server.audio import AudioLimitError, DecodeError, DecodeLimits, parse_content_type
from server.audio.formats import MIME_MP4, TARGET_RATE_HZ
from server.audio.sniff import CONTAINER_MIMES, SNIFF_BYTES, sniff_container
from server.detectors.repository import DetectorModelRecord, ModelRepository
from server.inference import child
from server.inference.repository import (
    InferenceFileRecord,
    InferenceJobRecord,
    InferenceRepository,
    with_status,
)
from server.runner import ModelLoadError
from server.storage import BlobNotFound, BlobStore

__all__ = ["MAX_ATTEMPTS", "FileFailed", "InferenceWorker"]

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_ATTEMPTS = 3
_NICE = 10
_IDLE_POLL_S = 30.0  # a missed wake-up costs at most this
_SUPPORTED = "WAV, MP3, Ogg, FLAC, WebM, AAC, MP4"


class FileFailed(Exception):
    """The file cannot be processed; the message is its ``error_message``."""


class InferenceWorker:
    def __init__(
        self,
        repository: InferenceRepository,
        models: ModelRepository,
        blobs: BlobStore,
        limits: DecodeLimits,
        *,
        max_upload_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._repository = repository
        self._models = models
        self._blobs = blobs
        self._limits = limits
        self._max_upload_bytes = max_upload_bytes
        self._clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._current: InferenceFileRecord | None = None
        self._child: ProcessPoolExecutor | None = None

    def _child_pool(self) -> ProcessPoolExecutor:
        if self._child is None:
            self._child = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=child.init,
                initargs=(_NICE,),
            )
        return self._child

    async def _in_child(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the child. A child that died (a decoder crash) fails the file in
        hand; the next file gets a new child."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._child_pool(), fn, *args)
        except BrokenProcessPool:
            broken, self._child = self._child, None
            if broken is not None:
                broken.shutdown(wait=False, cancel_futures=True)
            raise FileFailed(
                "not audio: decoding the file stopped its processing process"
            ) from None

    async def recover(self) -> int:
        """Files a stopped server left ``processing`` are ``pending`` again (their attempt
        stays counted). Call before ``start``."""
        recovered = 0
        while orphans := await self._repository.with_status(("processing",), 100):
            for record in orphans:
                back = with_status(record, "pending", self._clock())
                recovered += await self._repository.transition(
                    record.file_id, ("processing",), back
                )
        if recovered:
            log.info("inference: %d files whose processing stopped are pending again", recovered)
        return recovered

    def start(self) -> None:
        self._task = asyncio.create_task(self._work(), name="inference-worker")

    def wake(self) -> None:
        """A file is waiting: look now, not at the next poll."""
        self._wake.set()

    async def close(self) -> None:
        """Stop; the file in hand is ``pending`` again with its attempt uncounted."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        current = self._current
        if current is not None:
            back = with_status(current, "pending", self._clock(), attempts=current.attempts - 1)
            try:
                await self._repository.transition(current.file_id, ("processing",), back)
            except Exception:
                log.exception("inference: handing back %s failed", current.file_id)
        if self._child is not None:
            await asyncio.to_thread(self._child.shutdown, True, cancel_futures=True)

    async def _work(self) -> None:
        while True:
            try:
                record = await self._repository.claim(self._clock())
            except Exception:
                log.exception("inference: claim failed")
                record = None
            if record is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_IDLE_POLL_S):
                        await self._wake.wait()
                continue
            self._current = record
            started = time.perf_counter()
            try:
                await self._process(record, started)
            except asyncio.CancelledError:
                raise
            except FileFailed as exc:
                await self._finish(record, started, error=str(exc))
            except Exception:
                log.exception("inference: %s failed unexpectedly", record.file_id)
                await self._finish(record, started, error="internal error while processing")
            self._current = None

    async def _process(self, record: InferenceFileRecord, started: float) -> None:
        if record.attempts > MAX_ATTEMPTS:
            stopped = record.attempts - 1
            raise FileFailed(f"the server stopped {stopped} times while processing this file")
        job = await self._repository.get_job(record.team, record.job_id)
        if job is None:
            return  # deleted meanwhile: its rows are gone, nothing to write
        model = await self._models.get(record.team, job.model_id)
        if model is None:
            raise FileFailed("the model was deleted before this file was processed")
        await self._ensure_model(model)
        samples, detections = await self._detect(record, job, model)
        await self._finish(
            record,
            started,
            duration_ms=samples * 1000 // TARGET_RATE_HZ,
            detections=tuple(detections),
        )

    async def _ensure_model(self, model: DetectorModelRecord) -> None:
        if await self._in_child(child.has_model, model.sha256):
            return
        parts: list[bytes] = []
        try:
            async with self._blobs.open(model.blob_key) as chunks:
                async for chunk in chunks:
                    parts.append(chunk)
        except BlobNotFound:
            raise FileFailed("the model's file is missing from storage") from None
        data = b"".join(parts)
        if len(data) != model.size_bytes or hashlib.sha256(data).hexdigest() != model.sha256:
            raise FileFailed("the model's file in storage is not the one that was stored")
        try:
            await self._in_child(child.load_model, model.sha256, data)
        except ModelLoadError as exc:
            raise FileFailed(str(exc)) from None

    async def _detect(
        self, record: InferenceFileRecord, job: InferenceJobRecord, model: DetectorModelRecord
    ) -> tuple[int, list[child.Detection]]:
        started = False
        head = b""
        whole: list[bytes] | None = None  # MP4: its index may follow the media
        try:
            async with self._blobs.open(record.blob_key) as chunks:
                async for chunk in self._bounded(chunks):
                    if not started:
                        head += chunk
                        if len(head) < SNIFF_BYTES:
                            continue
                        chunk, head, started = head, b"", True
                        whole = await self._start(chunk, job, model)
                    if whole is not None:
                        whole.append(chunk)
                    else:
                        await self._in_child(child.feed_chunk, chunk)
            if not started:
                if not head:
                    raise FileFailed("empty: the file holds no bytes")
                whole = await self._start(head, job, model)
                if whole is None:
                    await self._in_child(child.feed_chunk, head)
                else:
                    whole.append(head)
            if whole is not None:
                data = b"".join(whole)
                whole.clear()
                await self._in_child(child.feed_file, data)
            samples, detections = await self._in_child(child.finish, whole is None)
        except BaseException as exc:
            if started and self._child is not None:
                with contextlib.suppress(RuntimeError):  # a pool already shut down
                    self._child.submit(child.discard)
            failure = _failure(exc)
            if failure is None:
                raise
            raise failure from None
        if samples == 0:
            raise FileFailed("empty: the file holds no audio samples")
        return samples, detections

    async def _start(
        self, head: bytes, job: InferenceJobRecord, model: DetectorModelRecord
    ) -> list[bytes] | None:
        container = sniff_container(head[:SNIFF_BYTES])
        if container is None:
            raise FileFailed(f"not audio: the file is not in a supported format ({_SUPPORTED})")
        fmt = parse_content_type(CONTAINER_MIMES[container])
        await self._in_child(child.start, model.sha256, job.rules, fmt, self._limits)
        return [] if fmt.mime == MIME_MP4 else None

    async def _bounded(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The file's chunks; an object larger than uploads may be is refused, not read."""
        read = 0
        async for chunk in chunks:
            read += len(chunk)
            if read > self._max_upload_bytes:
                raise FileFailed("the file is larger than the upload limit")
            yield chunk

    async def _finish(
        self, record: InferenceFileRecord, started: float, error: str | None = None, **found: Any
    ) -> bool:
        """The row ``completed`` (or ``failed`` with ``error``) if it is still this worker's."""
        processing_ms = round((time.perf_counter() - started) * 1000)
        done = with_status(
            record,
            "failed" if error is not None else "completed",
            self._clock(),
            error=error,
            processing_ms=processing_ms,
            **found,
        )
        return await self._repository.transition(record.file_id, ("processing",), done)


def _failure(exc: BaseException) -> FileFailed | None:
    """What the client is told for an error that is the file's fault (None: not the file's)."""
    if isinstance(exc, FileFailed):
        return exc
    if isinstance(exc, BlobNotFound):
        return FileFailed("the file is gone: its upload or media object was deleted")
    if isinstance(exc, AudioLimitError):
        return FileFailed(f"longer than the limit: {exc}")
    if isinstance(exc, DecodeError):
        return FileFailed(f"not audio: the file could not be decoded ({exc})")
    return None
