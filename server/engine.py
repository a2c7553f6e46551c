"""The inference engine: one worker per active session feeds its pipeline, the shared batch
scheduler runs the model, results are stored and then announced.

A chunk's path: ``chunk_accepted`` -> session worker -> pipeline (executor) -> scheduler ->
runner (executor) -> tagger -> store -> ``changed`` event (long-polling status readers).

Workers are tracked tasks; deleting a session cancels its worker, and the scheduler drops the
cancelled windows between batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from models.yamnet.spec import FRONTEND
from protocol.states import SessionState
from server.audio import DecodeError, DecodeLimits, parse_content_type
from server.audio.overlap import OverlapGeometry
from server.detectors.frame_events import FrameEvents
from server.detectors.head_batch import HeadBatcher
from server.detectors.live import ReleasedWindows, SessionDetectors
from server.event_log import (
    LogEntry,
    SessionEventLog,
    pack_probabilities,
    probabilities_from_tags,
    rules_for,
    unpack_probabilities,
)
from server.metrics import Metrics
from server.pipeline import AudioPipeline, WindowBatch, replay_frame_bytes, split_batch
from server.scheduler import BatchScheduler
from server.sessions import Session
from server.store import EventLogRow, ResultRow, Store, StoreError, StoreThread
from server.tagging import Tagger

__all__ = ["EngineConfig", "InferenceEngine"]

log = logging.getLogger(__name__)

_FINISH = object()


@dataclass(frozen=True)
class _Fail:
    """Queued for a recovered session that cannot carry on (its custom model is gone)."""

    message: str


@dataclass(frozen=True)
class EngineConfig:
    limits: DecodeLimits
    window_seconds: float = FRONTEND.window_seconds
    prune_consumed_audio: bool = True
    silence_gate_dbfs: float | None = None


_PRUNE_EVERY_CHUNKS = 8
_RECENT_RESULTS = 256
_FILE_WINDOWS_PER_RESULT_WRITE = 256
# Raw PCM already at 16 kHz needs no decoding, only the frontend: ~0.15 ms for a 0.5 s chunk,
# less than the executor round trip it would otherwise take (submit, wake-up, future chaining
# measured at a third of the event loop's time with hundreds of streams). Such chunks up to
# 1 s are processed on the event loop; everything else goes to the decode threads.
_INLINE_RAW_CHUNK_BYTES = 32_000
# Stream chunks are decoded this much at a time (see _Worker._chunk).
_FEED_SLICE_BYTES = 256 * 1024
# How many of a stream's latest chunks remember which windows they completed (predict).
_CHUNK_WINDOWS_KEPT = 16


class _Worker:
    """Per-session runtime: the pipeline and the queue of work for it."""

    def __init__(
        self, session: Session, engine: InferenceEngine, layout: list[tuple[int, int, int]]
    ) -> None:
        self.session = session
        self.engine = engine
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.busy = False
        self.pending_since: deque[float] = deque()  # acknowledgement time of queued chunks
        # The latest stored results, so that live readers (who ask for what just arrived) are
        # answered without a database round trip.
        self.recent: deque[ResultRow] = deque(maxlen=_RECENT_RESULTS)
        params = session.params
        fmt = parse_content_type(params.content_type)
        self.thresholds = engine.tagger.thresholds(
            params.default_sensitivity, params.tags_sensitivity
        )
        self.hop_samples = round(params.window_hop_s * FRONTEND.sample_rate_hz)
        # Replayable streams keep only the chunks the next window still needs (see _prune).
        replayable = session.is_stream and engine.config.prune_consumed_audio
        self.frame_bytes = replay_frame_bytes(fmt) if replayable else None
        # The end of the timeline stays stored: after a restart the sliding-window rule reads it.
        geometry = OverlapGeometry.for_stream(fmt, params.window_hop_s)
        self.history_bytes = geometry.history_bytes if geometry else 0
        self.kept: list[tuple[int, int, int]] = list(layout)  # (seq, byte offset, size)
        # Sessions prune every few chunks, each at its own phase: streams started together
        # (400 in the benchmark) otherwise all deleted their audio in the same half second,
        # a burst of page writes (secure_delete zeroes them) that stalled every result for
        # 50-130 ms once per prune cycle.
        self.prune_after = 1 + zlib.crc32(session.id.encode()) % _PRUNE_EVERY_CHUNKS
        self.fed_through_seq = -1  # the last chunk given to the pipeline
        self.done_through_seq = -1  # the last chunk whose windows are stored (or that failed)
        # [first, end) window indices that recent chunks completed, for synchronous predict.
        self.chunk_windows: dict[int, tuple[int, int]] = {}
        raw_at_model_rate = replay_frame_bytes(fmt) is not None
        self.inline_limit_bytes = _INLINE_RAW_CHUNK_BYTES if raw_at_model_rate else 0
        self.next_offset = layout[-1][1] + layout[-1][2] if layout else 0
        self.skip_first_bytes = 0
        first_window = first_sample = 0
        if self.frame_bytes and layout:
            first_offset = layout[0][1]
            self.skip_first_bytes = -first_offset % self.frame_bytes
            first_sample = (first_offset + self.skip_first_bytes) // self.frame_bytes
            first_window = session.results_count
        self.event_rules = rules_for(
            engine.tagger.labels,
            self.thresholds,
            params.events,
            params.window_hop_s,
            engine.config.window_seconds,
        )
        self.events: SessionEventLog | None = None  # restored from the store on first use
        # Custom detectors (``server.detectors.live``): None for a session without models,
        # which then runs exactly as before they existed.
        self.detectors: SessionDetectors | None = None
        if session.detectors:
            self.detectors = SessionDetectors(
                session.detectors,
                FRONTEND.hop_frames(params.window_hop_s),
                resume_window=session.results_count,
            )
        self.pipeline = AudioPipeline(
            fmt,
            params.window_hop_s,
            engine.config.limits,
            skip_below=session.results_count,
            first_window=first_window,
            first_sample=first_sample,
            prepare=engine.prepare_input,
            keep_samples=self.detectors is not None,
        )

    def notify(self) -> None:
        self.engine.notify(self.session.id)

    def put(self, item: Any) -> None:
        if item is not _FINISH:
            self.pending_since.append(time.monotonic())
        self.queue.put_nowait(item)
        if self.task is None or self.task.done():
            self.task = self.engine._spawn(self._run(), f"session-{self.session.id[:8]}")

    async def _run(self) -> None:
        while not self.queue.empty():
            item = self.queue.get_nowait()
            self.busy = True
            try:
                if item is _FINISH:
                    await self._finish()
                elif isinstance(item, _Fail):
                    await self._fail(RuntimeError(item.message))
                else:
                    await self._chunk(*item)
            except (DecodeError, StoreError, RuntimeError) as exc:
                await self._fail(exc)
            except Exception as exc:  # a bug must fail this session, never kill its worker
                log.exception("session %s: unexpected error", self.session.id[:8])
                await self._fail(RuntimeError(f"internal error ({type(exc).__name__})"))
            finally:
                self.busy = False
            self.notify()
        if self.session.finished:
            self.engine.forget_finished(self.session)

    async def _chunk(self, seq: int, data: bytes | None) -> None:
        session = self.session
        try:
            if data is None:  # recovery: the chunk is on disk
                data = await self.engine.store.read(
                    partial(Store.read_chunk, session_id=session.id, seq=seq)
                )
            else:
                self.kept.append((seq, self.next_offset, len(data)))
                self.next_offset += len(data)
            if self.skip_first_bytes:  # the rest of a sample whose start was pruned
                data, self.skip_first_bytes = data[self.skip_first_bytes :], 0
            self.fed_through_seq = seq
            seen_before = self.pipeline.samples_seen
            first_window = session.results_count
            metrics = self.engine.metrics
            if self.inline_limit_bytes and len(data) <= self.inline_limit_bytes:
                batch = self.pipeline.feed_chunk(data)  # see _INLINE_RAW_CHUNK_BYTES
                await self._infer_and_store(batch, live=True)
                windows = len(batch)
            else:
                windows = 0
                # A large chunk (up to TYMPAN_MAX_CHUNK_BYTES) is fed in slices, each decoded,
                # inferred and stored before the next: its decoded audio and log-mel patches
                # never sit in memory all at once. The decoders keep state across calls, so
                # slicing gives the same windows.
                for start in range(0, len(data), _FEED_SLICE_BYTES):
                    piece = data[start : start + _FEED_SLICE_BYTES]
                    batch = await self.engine.run_blocking(self.pipeline.feed_chunk, piece)
                    await self._infer_and_store(batch, live=True)
                    windows += len(batch)
            decoded_s = (self.pipeline.samples_seen - seen_before) / FRONTEND.sample_rate_hz
            metrics.audio_seconds.labels("stream").inc(decoded_s)
            if windows and self.pending_since:
                metrics.result_latency.observe(time.monotonic() - self.pending_since[0])
            self.chunk_windows[seq] = (first_window, session.results_count)
            while len(self.chunk_windows) > _CHUNK_WINDOWS_KEPT:
                del self.chunk_windows[next(iter(self.chunk_windows))]
        finally:
            self.done_through_seq = seq
            session.pending_chunks = max(0, session.pending_chunks - 1)
            if self.pending_since:
                self.pending_since.popleft()
        await self._prune()

    async def _prune(self) -> None:
        """Delete the audio of chunks entirely before the next window's first sample: a restart
        replays from the first kept chunk, so that is all it needs. The timeline's last
        ``history_bytes`` stay too: the sliding-window rule rebuilds its state from them."""
        if not self.frame_bytes:
            return
        needed_from = self.session.results_count * self.hop_samples
        if self.detectors is not None:  # they recompute their frames' context after a restart
            needed_from = max(0, needed_from - self.detectors.lookback_samples)
        history_from = self.next_offset - self.history_bytes
        # Only chunks already fed: after a restart, kept chunks before the next window are
        # still queued for replay (they rebuild the frontend's state) and must stay readable.
        done = [
            seq
            for seq, offset, size in self.kept
            if -(-(offset + size) // self.frame_bytes) <= needed_from
            and offset + size <= history_from
            and seq <= self.fed_through_seq
        ]
        if len(done) < self.prune_after:
            return
        self.prune_after = _PRUNE_EVERY_CHUNKS
        self.kept = self.kept[len(done) :]
        await self.engine.store.write(
            partial(Store.prune_chunk_seqs, session_id=self.session.id, seqs=done)
        )

    async def _finish(self) -> None:
        session = self.session
        if session.is_stream:
            batch = await self.engine.run_blocking(self.pipeline.finish)
            await self._infer_and_store(batch, live=True, final=True)
        else:
            await self._infer_file()
            session.pending_chunks = 0
        await self._mark_done()

    async def _infer_file(self) -> None:
        """Decode, then compute windows block by block while earlier blocks are in the model,
        and store results in order as they come back."""
        session_id = self.session.id
        data = await self.engine.store.read(partial(_read_all_chunks, session_id=session_id))
        samples = await self.engine.run_blocking(self.pipeline.decode_file, data)
        del data
        self.engine.metrics.audio_seconds.labels("file").inc(len(samples) / FRONTEND.sample_rate_hz)
        in_flight: deque[tuple[WindowBatch, asyncio.Future[Any]]] = deque()

        def submit(batch: WindowBatch) -> None:
            for piece in split_batch(batch, _FILE_WINDOWS_PER_RESULT_WRITE):
                in_flight.append(
                    (piece, asyncio.ensure_future(self._probabilities(piece, live=False)))
                )

        try:
            for block in self.pipeline.file_blocks(samples):
                batch = await self.engine.run_blocking(self.pipeline.push_block, block)
                await self._detect(batch, final=False)
                submit(batch)
                while in_flight and in_flight[0][1].done():
                    batch, probabilities = in_flight.popleft()
                    await self._store(batch, probabilities.result())
            batch = await self.engine.run_blocking(self.pipeline.finish_file)
            await self._detect(batch, final=True)
            submit(batch)
            while in_flight:
                batch, probabilities = in_flight.popleft()
                await self._store(batch, await probabilities)
            await self._release()
        finally:
            for _, future in in_flight:
                future.cancel()

    async def _infer_and_store(self, batch: WindowBatch, live: bool, final: bool = False) -> None:
        if self.detectors is None:
            if len(batch):
                await self._store(batch, await self._probabilities(batch, live))
            return
        detected = self._detect(batch, final)
        if len(batch):  # YAMNet and the heads at once; the windows wait for both
            probabilities, _ = await asyncio.gather(self._probabilities(batch, live), detected)
            self.detectors.hold(batch.first_index, probabilities)
        else:
            await detected
        await self._release()

    async def _detect(self, batch: WindowBatch, final: bool) -> None:
        """The batch's samples through the custom detectors: features (decode threads), then
        each model's head, batched with other sessions' (``HeadBatcher``)."""
        detectors = self.detectors
        if detectors is None:
            return
        samples = batch.samples if batch.samples is not None and batch.samples.size else None
        if samples is None and not final:
            return
        segments = await self.engine.run_blocking(
            detectors.advance, samples, batch.samples_start, final
        )
        wanted = [(i, s) for i, s in enumerate(segments) if s is not None]
        heads = self.engine.heads
        outputs = await asyncio.gather(
            *(heads.submit(detectors.models[i].runner, s) for i, s in wanted)
        )
        for (i, _), probabilities in zip(wanted, outputs, strict=True):
            detectors.accept(i, probabilities)
        if final:
            detectors.mark_finished()

    async def _release(self) -> None:
        """Store the held windows whose custom detectors' frames are all final."""
        if self.detectors is None:
            return
        await self._event_log()  # restores the frame trackers before any window is taken
        released = self.detectors.release()
        if released is not None:
            await self._write(released.first_index, released.probabilities, released)

    async def _probabilities(self, batch: WindowBatch, live: bool) -> Any:
        """The model's probabilities; windows under the silence gate skip the model and get
        the probabilities of digital silence (computed once at start-up)."""
        gate = self.engine.config.silence_gate_dbfs
        if gate is None or batch.levels_dbfs is None:
            return await self.engine.scheduler.submit(batch.patches, live=live)
        quiet = batch.levels_dbfs < gate
        result = np.repeat(self.engine.silence_probabilities[None, :], len(batch), axis=0)
        if not quiet.all():
            loud = ~quiet
            result[loud] = await self.engine.scheduler.submit(batch.patches[loud], live=live)
        self.engine.metrics.windows_skipped.inc(int(quiet.sum()))
        return result

    async def _event_log(self) -> SessionEventLog:
        """The session's event log, carried on from what the store holds (after a restart)."""
        if self.events is None:
            session_id = self.session.id
            state, blob, tags = await self.engine.store.read(
                partial(Store.event_resume, session_id=session_id)
            )
            previous = None
            if blob is not None:
                previous = unpack_probabilities(blob)
            elif tags:
                previous = probabilities_from_tags(
                    tags, self.engine.label_index, len(self.engine.tagger.labels)
                )
            detectors = self.detectors
            frames = None
            if detectors is not None:
                first_frame = detectors.first_fed_frame

                def frames(stored: Any) -> FrameEvents:
                    return FrameEvents.build(detectors.rules, first_frame, stored)

            self.events = SessionEventLog.restore(
                self.event_rules,
                state,
                previous,
                windows_stored=self.session.results_count,
                frames=frames,
            )
        return self.events

    async def _store(self, batch: WindowBatch, probabilities: Any) -> None:
        if self.detectors is None:
            await self._write(batch.first_index, probabilities)
        else:
            self.detectors.hold(batch.first_index, probabilities)
            await self._release()

    async def _write(
        self, first_index: int, probabilities: Any, custom: ReleasedWindows | None = None
    ) -> None:
        """Store windows ``first_index, ...`` (YAMNet's probabilities; with ``custom``, the
        custom detectors' tags after YAMNet's and their frames for the event log)."""
        hop = self.session.params.window_hop_s
        window = self.engine.config.window_seconds
        tagged = self.engine.tagger.tags(probabilities, self.thresholds)
        if custom is not None:
            tagged = [yamnet + extra for yamnet, extra in zip(tagged, custom.tags, strict=True)]
        rows = [
            ResultRow(index, round(index * hop, 3), round(index * hop + window, 3), tags)
            for index, tags in enumerate(tagged, start=first_index)
        ]
        stored, blobs = pack_probabilities(probabilities)
        events = await self._event_log()
        already = max(0, events.tracker.next_window - first_index)  # fed before a crash
        frames = None if custom is None else custom.frames[already:]
        entries = events.feed(stored[already:], frames)
        session_id = self.session.id
        count = await self.engine.store.write(
            partial(
                Store.add_results,
                session_id=session_id,
                results=rows,
                probabilities=blobs,
                events=[_log_row(entry) for entry in entries],
                event_state=events.state_to_store(),
            )
        )
        self.recent.extend(rows)  # stored: now they may be served from memory
        self.session.results_count = count
        self._logged(events)
        self.notify()
        for listener in self.engine.result_listeners:
            try:
                listener(session_id, first_index, len(rows))
            except Exception:  # an observer's bug must not fail the session
                log.exception("result listener failed")

    def _logged(self, events: SessionEventLog) -> None:
        self.session.events_logged = events.logged
        self.session.events_closed = events.closed

    async def _mark_done(self) -> None:
        """Inference is over: close the events still open and record it, then drop the audio
        in the background. Pruning a long file zeroes megabytes of pages (secure_delete), tens
        of milliseconds that readers need not wait for; audio left by a crash in between is
        pruned at the next start."""
        session_id = self.session.id
        events = await self._event_log()
        entries = [_log_row(entry) for entry in events.finish()]
        await self.engine.store.write(
            partial(
                _finish_events,
                session_id=session_id,
                events=entries,
                event_state=events.state_json(),
            )
        )
        self.session.inference_done = True
        self._logged(events)
        if self.engine.config.prune_consumed_audio:
            self.engine.prune_in_background(session_id)

    async def _fail(self, exc: Exception) -> None:
        """An error makes the session readonly and cancels its pending inference."""
        session = self.session
        if session.state is SessionState.DELETED:  # deleted meanwhile: nothing left to fail
            return
        message = str(exc) if isinstance(exc, DecodeError) else f"inference failed: {exc}"
        log.warning("session %s failed: %s", session.id[:8], message)
        while not self.queue.empty():
            self.queue.get_nowait()
        # Readers see the error and the end of inference together (a page with the error
        # carries no next_token). Should the write below not land before a crash, the
        # restart replays the session and meets the same error.
        session.make_readonly(error=message)
        session.inference_done = True
        session.pending_chunks = 0
        session_id = session.id
        entries: list[EventLogRow] = []
        state = None
        with contextlib.suppress(StoreError):
            events = await self._event_log()
            entries = [_log_row(entry) for entry in events.finish()]
            state = events.state_json()
        with contextlib.suppress(StoreError):
            await self.engine.store.write(
                partial(
                    _fail_session,
                    session_id=session_id,
                    error=message,
                    events=entries,
                    event_state=state,
                )
            )
        if self.events is not None:
            self._logged(self.events)


def _log_row(entry: LogEntry) -> EventLogRow:
    event = entry.event
    return EventLogRow(
        entry.seq,
        event.state,
        entry.kind_seq,
        event.id,
        event.tag,
        event.start_time,
        event.end_time,
        event.confidence,
        entry.windows,
    )


def _finish_events(
    store: Store, session_id: str, events: list[EventLogRow], event_state: str
) -> None:
    store.add_events(session_id, events, event_state)
    store.mark_inference_done(session_id)


def _read_all_chunks(store: Store, session_id: str) -> bytes:
    return b"".join(store.read_chunk(session_id, seq) for seq in store.retained_chunks(session_id))


def _fail_session(
    store: Store,
    session_id: str,
    error: str,
    events: list[EventLogRow],
    event_state: str | None,
) -> None:
    store.set_state(session_id, "readonly", error)
    store.add_events(session_id, events, event_state)
    _finish_session(store, session_id)


def _finish_session(store: Store, session_id: str) -> None:
    """Inference is over: mark it, and drop the raw audio nobody needs any more."""
    store.mark_inference_done(session_id)
    store.prune_chunks(session_id, below_seq=2**62)


class InferenceEngine:
    def __init__(
        self,
        config: EngineConfig,
        tagger: Tagger,
        store: StoreThread,
        scheduler: BatchScheduler,
        decode_executor: Executor,
        metrics: Metrics,
        silence_probabilities: Any,
        prepare_input: Callable[[Any], Any] | None = None,
    ) -> None:
        """``prepare_input``: float32 patches -> the model's input, applied as windows are cut
        (``OnnxRunner.prepare``); None keeps float32 patches."""
        self.prepare_input = prepare_input
        self.config = config
        self.metrics = metrics
        self.silence_probabilities = silence_probabilities
        self.tagger = tagger
        self.label_index = {name: i for i, name in enumerate(tagger.labels)}
        self.store = store
        self.scheduler = scheduler
        self._decode_executor = decode_executor
        # Custom detectors' heads, every session's segments batched per model.
        self.heads = HeadBatcher(decode_executor)
        self._workers: dict[str, _Worker] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed: dict[str, asyncio.Event] = {}  # only for sessions someone waits on
        # Called on the event loop with (session id, first window index, count) as soon as
        # results are stored: in-process observers (benchmarks) without a reader per session.
        self.result_listeners: list[Callable[[str, int, int], None]] = []

    def _spawn(self, coroutine: Any, name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def run_blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._decode_executor, fn, *args)

    def _worker(
        self, session: Session, layout: list[tuple[int, int, int]] | None = None
    ) -> _Worker:
        worker = self._workers.get(session.id)
        if worker is None:
            worker = _Worker(session, self, layout or [])
            self._workers[session.id] = worker
        return worker

    # -- events from the session service ---------------------------------------------------

    def chunk_accepted(self, session: Session, seq: int, data: bytes) -> None:
        session.pending_chunks += 1
        if session.is_stream:
            self._worker(session).put((seq, data))
        if session.state is SessionState.READONLY:
            self.readonly(session)

    def readonly(self, session: Session) -> None:
        if not session.inference_done:
            self._worker(session).put(_FINISH)

    def deleted(self, session: Session) -> None:
        worker = self._workers.pop(session.id, None)
        if worker is not None and worker.task is not None:
            worker.task.cancel()
        self.notify(session.id)

    def recover(self, session: Session, layout: list[tuple[int, int, int]]) -> None:
        """After a restart: replay the kept chunks that inference has not finished with."""
        if session.inference_done:
            return
        if session.detector_error is not None:
            session.pending_chunks = 0
            self._worker(session, layout).put(_Fail(session.detector_error))
            return
        if session.is_stream:
            worker = self._worker(session, layout)
            for seq, _, _ in layout:
                session.pending_chunks += 1
                worker.put((seq, None))
        else:
            session.pending_chunks = len(layout)
        if session.state is SessionState.READONLY:
            self.readonly(session)

    def prune_in_background(self, session_id: str) -> None:
        """Delete the kept audio of a session whose inference is over, off the reader's path."""

        async def prune() -> None:
            with contextlib.suppress(StoreError):
                await self.store.write(
                    partial(Store.prune_chunks, session_id=session_id, below_seq=2**62)
                )

        self._spawn(prune(), f"prune-{session_id[:8]}")

    # -- queries --------------------------------------------------------------------------

    def stream_lag_s(self) -> float:
        """How far behind live inference is: the age of the oldest unprocessed stream chunk."""
        now = time.monotonic()
        oldest = min(
            (w.pending_since[0] for w in self._workers.values() if w.pending_since), default=now
        )
        return now - oldest

    def is_working(self, session: Session) -> bool:
        worker = self._workers.get(session.id)
        return worker is not None and (worker.busy or not worker.queue.empty())

    def notify(self, session_id: str) -> None:
        """Wake the readers waiting on this session (a result, an error, a state change)."""
        event = self._changed.pop(session_id, None)
        if event is not None:
            event.set()

    def change_event(self, session_id: str) -> asyncio.Event:
        """An event set at the session's next change. Take it *before* reading the session's
        state when awaits come between the read and the wait: a change in between then still
        wakes the reader (it is not lost)."""
        event = self._changed.get(session_id)
        if event is None:
            event = self._changed[session_id] = asyncio.Event()
        return event

    async def wait_for_change(self, session: Session, timeout_s: float) -> None:
        event = self.change_event(session.id)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await event.wait()

    async def windows_of_chunk(self, session: Session, seq: int) -> tuple[int, int] | None:
        """Wait until stream chunk ``seq`` is through the model; the [first, end) indices of
        the windows it completed, or None when it failed or the session went away."""
        while session.state is not SessionState.DELETED:
            worker = self._workers.get(session.id)
            if worker is None:
                return None
            if worker.done_through_seq >= seq:
                return worker.chunk_windows.get(seq)
            await self.wait_for_change(session, 1.0)
        return None

    def recent_results(self, session_id: str, offset: int, count: int) -> list[ResultRow] | None:
        """Stored results ``[offset, offset + count)`` from memory, or None if not all there."""
        worker = self._workers.get(session_id)
        if worker is None or not worker.recent:
            return None
        first = worker.recent[0].idx
        if offset < first:
            return None
        start = offset - first
        return list(itertools.islice(worker.recent, start, start + count))

    def forget_finished(self, session: Session) -> None:
        worker = self._workers.get(session.id)
        if worker is not None and session.finished and worker.queue.empty():
            self._workers.pop(session.id, None)

    async def stop(self) -> None:
        """Cancel workers; acknowledged chunks are on disk and replay after the restart."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
