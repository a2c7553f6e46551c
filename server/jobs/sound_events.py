"""One sound-events job: the media streamed from the blob store, decoded block by block, its
windows run through the shared ``BatchScheduler`` below live streams (``live=False``), tags per
window and the recording's events.

Memory stays bounded by the blob store's chunk, the decoder's state and the output itself: the
bytes are never held whole (the stream decoders take any chunking), and events are tracked as
windows arrive instead of keeping every window's probabilities.

MP4/M4A is the exception: a plain .m4a may keep its index (moov) after the media, which a
stream demuxer cannot reach, so its bytes are read whole and decoded in one call, bounded by the
upload limit (``TYMPAN_MEDIA_MAX_BYTES``); its decoded samples are then cut into blocks as a
file session's are. The decode limits (``TYMPAN_MAX_SESSION_DURATION_S``) bound every format.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from protocol.errors import NotFound
from protocol.jobs import JOB_HOP_S, SOUND_EVENTS, JobEvent, SoundEventsInput, SoundEventsOutput
from protocol.messages import SenseEvent, SenseEventTag
from server.audio import AudioFormat, AudioLimitError, DecodeError, parse_content_type
from server.audio.formats import MIME_MP4
from server.audio.sniff import CONTAINER_MIMES, SNIFF_BYTES, sniff_container
from server.engine import InferenceEngine
from server.event_log import rules_for
from server.events import EventTracker
from server.jobs.repository import JobRecord
from server.media.repository import MediaRepository
from server.pipeline import AudioPipeline, WindowBatch, split_batch
from server.storage import BlobNotFound, BlobStore, team_key

__all__ = ["JobFailed", "SoundEventsHandler", "SoundEventsJob"]

_MIME_OF = CONTAINER_MIMES
_MEDIA_DELETED = "the media was deleted before the job ran"
HOP_S = JOB_HOP_S
_WINDOWS_PER_SUBMIT = 256  # as a file session submits: one chunk never floods the queue

Progress = Callable[[float], Awaitable[bool]]


class JobFailed(Exception):
    """The job cannot succeed; the message is the job's ``error``."""


def _format(head: bytes) -> AudioFormat:
    container = sniff_container(head[:SNIFF_BYTES])
    if container is None:
        raise JobFailed(
            "the media is not audio in a supported format (WAV, MP3, Ogg, FLAC, WebM, AAC, MP4)"
        )
    return parse_content_type(_MIME_OF[container])


class SoundEventsJob:
    def __init__(self, engine: InferenceEngine, blobs: BlobStore) -> None:
        self._engine = engine
        self._blobs = blobs

    async def run(
        self, team: str, params: SoundEventsInput, size_bytes: int, progress: Progress
    ) -> dict[str, Any]:
        """The output ``{"windows": [...], "events": [...]}``; raises ``JobFailed``.
        ``progress(percent)`` is awaited now and then; it answers False to stop (canceled)."""
        engine = self._engine
        tagger = engine.tagger
        thresholds = tagger.thresholds(params.sensitivity)
        window_s = engine.config.window_seconds
        tracker = EventTracker(rules_for(tagger.labels, thresholds, params.events, HOP_S, window_s))
        windows: list[SenseEvent] = []
        transitions: list[Any] = []

        async def analyse(whole: WindowBatch) -> None:
            for batch in split_batch(whole, _WINDOWS_PER_SUBMIT):
                await analyse_piece(batch)

        async def analyse_piece(batch: WindowBatch) -> None:
            probabilities = await self._probabilities(batch)
            for index, tags in enumerate(
                tagger.tags(probabilities, thresholds), start=batch.first_index
            ):
                windows.append(
                    SenseEvent(
                        round(index * HOP_S, 3),
                        round(index * HOP_S + window_s, 3),
                        tuple(SenseEventTag(name, p) for name, p in tags),
                    )
                )
            transitions.extend(t for t in tracker.feed(probabilities) if t.kind == "close")

        pipeline: AudioPipeline | None = None
        head = b""  # the first bytes, until there are enough to tell the format
        whole: list[bytes] | None = None  # MP4 only: see the module docstring
        read = 0
        try:
            async with self._blobs.open(team_key(team, params.object_key)) as chunks:
                async for chunk in chunks:
                    read += len(chunk)
                    if pipeline is None:
                        head += chunk
                        if len(head) < SNIFF_BYTES:
                            continue
                        chunk, head = head, b""
                        pipeline, whole = self._pipeline(chunk)
                    if whole is not None:
                        whole.append(chunk)
                    else:
                        await analyse(await engine.run_blocking(pipeline.feed_chunk, chunk))
                    if not await progress(min(99.0, 100.0 * read / max(1, size_bytes))):
                        raise JobFailed("canceled")
            if pipeline is None:
                if not head:
                    raise JobFailed("the media is empty")
                pipeline, whole = self._pipeline(head)
                if whole is None:
                    await analyse(await engine.run_blocking(pipeline.feed_chunk, head))
                else:
                    whole.append(head)
            if whole is not None:
                samples = await engine.run_blocking(pipeline.decode_file, b"".join(whole))
                del whole[:]
                for block in pipeline.file_blocks(samples):
                    await analyse(await engine.run_blocking(pipeline.push_block, block))
                await analyse(await engine.run_blocking(pipeline.finish_file))
            else:
                await analyse(await engine.run_blocking(pipeline.finish))
        except BlobNotFound:
            raise JobFailed("the media was deleted before the job ran") from None
        except AudioLimitError as exc:
            raise JobFailed(f"the media is too long: {exc}") from None
        except DecodeError as exc:
            raise JobFailed(f"the media could not be decoded: {exc}") from None
        if not windows:
            raise JobFailed("the media holds no audio")
        transitions.extend(t for t in tracker.finish() if t.kind == "close")
        events = sorted(
            (t.event for t in transitions),
            key=lambda e: (e.start_time_s, e.tag, e.event_id),
        )
        return SoundEventsOutput(
            tuple(windows),
            tuple(JobEvent(e.tag, e.start_time_s, e.end_time_s, e.confidence) for e in events),
        ).to_dict()

    def _pipeline(self, head: bytes) -> tuple[AudioPipeline, list[bytes] | None]:
        fmt = _format(head)
        engine = self._engine
        pipeline = AudioPipeline(fmt, HOP_S, engine.config.limits, prepare=engine.prepare_input)
        return pipeline, [] if fmt.mime == MIME_MP4 else None

    async def _probabilities(self, batch: WindowBatch) -> Any:
        """As a file session computes them: windows under the silence gate skip the model."""
        engine = self._engine
        gate = engine.config.silence_gate_dbfs
        if gate is None or batch.levels_dbfs is None:
            return await engine.scheduler.submit(batch.patches, live=False)
        quiet = batch.levels_dbfs < gate
        result = np.repeat(engine.silence_probabilities[None, :], len(batch), axis=0)
        if not quiet.all():
            loud = ~quiet
            result[loud] = await engine.scheduler.submit(batch.patches[loud], live=False)
        return result


class SoundEventsHandler:
    """The ``JobHandler`` of ``sound-events`` jobs: the job's media looked up, then analysed."""

    kinds = (SOUND_EVENTS,)
    internal_error = "internal error while analysing the media"

    def __init__(self, media: MediaRepository, analysis: SoundEventsJob) -> None:
        self._media = media
        self._analysis = analysis

    async def run(self, job: JobRecord, progress: Progress) -> dict[str, Any]:
        params = SoundEventsInput.from_body(job.input)
        media = await self._media.get(job.team, params.object_key)
        if media is None:
            raise JobFailed(_MEDIA_DELETED)
        try:
            return await self._analysis.run(job.team, params, media.size_bytes, progress)
        except NotFound:
            raise JobFailed(_MEDIA_DELETED) from None
