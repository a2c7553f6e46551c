"""``AudioProcessor``: the durable worker that turns confirmed uploads into training material.

A file is claimed by a conditional transition ``pending -> processing`` that counts the attempt,
so two workers never both take it. Nothing lives only in memory: a server killed mid-file
leaves the row ``processing``; at the next start (one server per database, as for sessions)
every such row is ``pending`` again, and a file that has killed its worker ``MAX_ATTEMPTS``
times is failed instead of being tried forever. A clean shutdown hands its file back without
counting the attempt.

Live streams come first. The decoding, the frontend and the embeddings run in a child process
(``server.datasets.audio_child``) at nice 10, one file at a time, fed the upload's chunks: a
thread of the server would share the GIL with the event loop that answers the streams (measured
in ``benchmarks/processing_interference.py``), and a decoder crash on a hostile file ends the
child, not the server (the file is failed; a new child takes the next one). Embeddings use the
set-up-prepared embedding graph with one ONNX thread.
The outputs are written next to the upload only when complete, then the row goes ``ready``; a
file deleted meanwhile has its outputs removed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import shutil
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

from server.audio import AudioLimitError, DecodeError, DecodeLimits, parse_content_type
from server.audio.formats import MIME_MP4
from server.audio.probe import probe_source
from server.audio.sniff import CONTAINER_MIMES, SNIFF_BYTES, sniff_container
from server.datasets import audio_child
from server.datasets.audio_keys import EMBEDDINGS_NAME, FEATURES_NAME, NORMALISED_NAME, derived_key
from server.datasets.audio_normalise import Normalised
from server.datasets.repository import (
    AudioFileRecord,
    AudioFileRepository,
    AudioStatus,
    with_status,
)
from server.storage import BlobNotFound, BlobStore

__all__ = ["MAX_ATTEMPTS", "AudioProcessor", "ProcessingFailed"]

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_ATTEMPTS = 3
_NICE = 10
_PROBE_BYTES = 256 * 1024
_CLAIM_BATCH = 8
_IDLE_POLL_S = 30.0  # a missed wake-up costs at most this
_COPY_CHUNK_BYTES = 1024 * 1024
_SUPPORTED = "WAV, MP3, Ogg, FLAC, WebM, AAC, MP4"


class ProcessingFailed(Exception):
    """The file cannot be processed; the message is its ``processing_error``."""


class _ChildNormaliser:
    """The child's normaliser for the file in hand, called from the event loop."""

    def __init__(self, processor: AudioProcessor) -> None:
        self._processor = processor

    async def feed_chunk(self, data: bytes) -> None:
        await self._processor.in_child(audio_child.feed_chunk, data)

    async def feed_file(self, data: bytes) -> None:
        await self._processor.in_child(audio_child.feed_file, data)

    async def finish(self, streamed: bool) -> Normalised:
        return await self._processor.in_child(audio_child.finish, streamed)

    async def discard(self) -> None:
        with contextlib.suppress(ProcessingFailed):
            await self._processor.in_child(audio_child.discard)


class AudioProcessor:
    def __init__(
        self,
        audio: AudioFileRepository,
        blobs: BlobStore,
        limits: DecodeLimits,
        work_dir: Path,
        *,
        max_upload_bytes: int,
        model_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``model_dir``: where set-up put the embedding graph (None: no embeddings)."""
        self._audio = audio
        self._blobs = blobs
        self._limits = limits
        self._work_dir = work_dir
        self._max_upload_bytes = max_upload_bytes
        self._model_dir = model_dir
        self._clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._current: AudioFileRecord | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tympan-audio-files")
        self._child: ProcessPoolExecutor | None = None

    def _child_pool(self) -> ProcessPoolExecutor:
        if self._child is None:
            self._child = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=audio_child.init,
                initargs=(None if self._model_dir is None else str(self._model_dir), _NICE),
            )
        return self._child

    async def in_child(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the child process. A child that died (a decoder crash) fails the
        file in hand; the next file gets a new child."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._child_pool(), fn, *args)
        except BrokenProcessPool:
            broken, self._child = self._child, None
            if broken is not None:
                broken.shutdown(wait=False, cancel_futures=True)
            raise ProcessingFailed(
                "not audio: decoding the file stopped its processing process"
            ) from None

    async def recover(self) -> int:
        """Files a stopped server left ``processing`` are ``pending`` again (their attempt
        stays counted). Call before ``start``."""
        shutil.rmtree(self._work_dir, ignore_errors=True)  # a killed worker's temporary files
        self._work_dir.mkdir(parents=True, exist_ok=True)
        recovered = 0
        while orphans := await self._audio.with_status(("processing",), 100):
            for record in orphans:
                back = with_status(record, "pending", self._clock())
                recovered += await self._audio.transition(record.audio_id, ("processing",), back)
        if recovered:
            log.info("audio files: %d whose processing stopped are pending again", recovered)
        return recovered

    def start(self) -> None:
        self._task = asyncio.create_task(self._work(), name="audio-file-processor")

    def wake(self) -> None:
        """A file was confirmed: look now, not at the next poll."""
        self._wake.set()

    async def close(self) -> None:
        """Stop; the file in hand is ``pending`` again with its attempt uncounted (a shutdown
        is not a failure)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        current = self._current
        if current is not None:
            back = with_status(current, "pending", self._clock(), attempts=current.attempts - 1)
            try:
                await self._audio.transition(current.audio_id, ("processing",), back)
            except Exception:
                log.exception("audio files: handing back %s failed", current.audio_id)
        if self._child is not None:
            # Queued discards still run; the call in hand finishes first (one chunk's worth).
            await asyncio.to_thread(self._child.shutdown, True)
        self._executor.shutdown(wait=True)

    async def _work(self) -> None:
        while True:
            try:
                record = await self._claim()
            except Exception:
                log.exception("audio files: claim failed")
                record = None
            if record is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_IDLE_POLL_S):
                        await self._wake.wait()
                continue
            self._current = record
            try:
                await self._process(record)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("audio files: %s failed unexpectedly", record.audio_id)
                await self._finish(record, error="internal error while processing the file")
            self._current = None

    async def _claim(self) -> AudioFileRecord | None:
        for record in await self._audio.with_status(("pending",), _CLAIM_BATCH):
            claimed = with_status(record, "processing", self._clock(), attempts=record.attempts + 1)
            if await self._audio.transition(record.audio_id, ("pending",), claimed):
                return claimed
        return None

    async def _process(self, record: AudioFileRecord) -> None:
        if record.attempts > MAX_ATTEMPTS:
            stopped = record.attempts - 1
            await self._finish(
                record, error=f"the server stopped {stopped} times while processing this file"
            )
            return
        try:
            normalised, source = await self._normalise(record)
        except ProcessingFailed as exc:
            await self._finish(record, error=str(exc))
            return
        try:
            keys = await self._store(record, normalised)
        finally:
            await self._run(shutil.rmtree, normalised.wav_path.parent, True)
        rate, channels = source if source is not None else (None, None)
        done = await self._finish(
            record,
            duration_ms=normalised.duration_ms,
            sample_rate_hz=rate,
            channels=channels,
        )
        if not done:  # deleted while processing: what was written goes too
            for key in keys:
                await self._blobs.delete(key)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _normalise(self, record: AudioFileRecord) -> tuple[Normalised, Any]:
        normaliser: _ChildNormaliser | None = None
        head = b""
        whole: list[bytes] | None = None  # MP4: its index may follow the media
        source = None
        try:
            async with self._blobs.open(record.blob_key) as chunks:
                async for chunk in self._bounded(chunks):
                    if normaliser is None:
                        head += chunk
                        if len(head) < max(SNIFF_BYTES, _PROBE_BYTES):
                            continue
                        chunk, head = head, b""
                        normaliser, whole = await self._start(chunk)
                        source = await self._run(probe_source, chunk[:_PROBE_BYTES])
                    if whole is not None:
                        whole.append(chunk)
                    else:
                        await normaliser.feed_chunk(chunk)
            if normaliser is None:
                if not head:
                    raise ProcessingFailed("empty: the upload holds no bytes")
                normaliser, whole = await self._start(head)
                source = await self._run(probe_source, head)
                if whole is None:
                    await normaliser.feed_chunk(head)
                else:
                    whole.append(head)
            if whole is not None:
                data = b"".join(whole)
                whole.clear()
                source = source or await self._run(probe_source, data)
                await normaliser.feed_file(data)
            result = await normaliser.finish(whole is None)
        except BaseException as exc:
            if normaliser is not None and self._child is not None:
                # Behind whatever call still runs in the child (a cancelled await does not
                # stop the call itself).
                with contextlib.suppress(RuntimeError):  # a pool already shut down
                    self._child.submit(audio_child.discard)
            failure = _failure(exc)
            if failure is None:
                raise
            raise failure from None
        if result.samples == 0:
            await normaliser.discard()
            raise ProcessingFailed("empty: the file holds no audio samples")
        return result, source

    async def _start(self, head: bytes) -> tuple[_ChildNormaliser, list[bytes] | None]:
        container = sniff_container(head[:SNIFF_BYTES])
        if container is None:
            raise ProcessingFailed(
                f"not audio: the file is not in a supported format ({_SUPPORTED})"
            )
        fmt = parse_content_type(CONTAINER_MIMES[container])
        await self.in_child(audio_child.start, fmt, self._limits, str(self._work_dir))
        return _ChildNormaliser(self), [] if fmt.mime == MIME_MP4 else None

    async def _bounded(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The upload's chunks; an object larger than uploads may be (placed in S3 by other
        means) is refused rather than read."""
        read = 0
        async for chunk in chunks:
            read += len(chunk)
            if read > self._max_upload_bytes:
                raise ProcessingFailed("the upload is larger than the upload limit")
            yield chunk

    async def _store(self, record: AudioFileRecord, result: Normalised) -> tuple[str, ...]:
        written = []
        outputs = [(NORMALISED_NAME, result.wav_path), (FEATURES_NAME, result.features_path)]
        if result.embeddings_path is not None:
            outputs.append((EMBEDDINGS_NAME, result.embeddings_path))
        for name, path in outputs:
            key = derived_key(record.blob_key, name)
            await self._blobs.put_stream(
                key, self._file_chunks(path), max_bytes=path.stat().st_size
            )
            written.append(key)
        return tuple(written)

    async def _file_chunks(self, path: Path) -> AsyncIterator[bytes]:
        with path.open("rb") as file:
            while chunk := await self._run(file.read, _COPY_CHUNK_BYTES):
                yield chunk

    async def _finish(
        self, record: AudioFileRecord, error: str | None = None, **found: Any
    ) -> bool:
        """The row ``ready`` (or ``failed`` with ``error``) if it is still this worker's."""
        status: AudioStatus = "failed" if error is not None else "ready"
        done = with_status(record, status, self._clock(), error=error, **found)
        return await self._audio.transition(record.audio_id, ("processing",), done)


def _failure(exc: BaseException) -> ProcessingFailed | None:
    """What the client is told for an error that is the file's fault (None: not the file's)."""
    if isinstance(exc, ProcessingFailed):
        return exc
    if isinstance(exc, BlobNotFound):
        return ProcessingFailed("the upload is gone: it was deleted")
    if isinstance(exc, AudioLimitError):
        return ProcessingFailed(f"longer than the limit: {exc}")
    if isinstance(exc, DecodeError):
        return ProcessingFailed(f"not audio: the file could not be decoded ({exc})")
    return None
