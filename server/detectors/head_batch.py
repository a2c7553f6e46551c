"""Custom heads over many sessions: segments of frames, planned into few ONNX Runtime calls.

A head's graph takes one stretch of frames ``[frames, width]`` and zero-pads its context
(``context_frames`` either side, zeros being the training mean) beyond the stretch's ends. A
session hands over a ``HeadSegment``: its frames with ``context_frames`` of real context before
and after the ones whose probabilities it wants. Such *interior* segments can simply be laid end
to end in one call: no kept frame's context reaches past its own segment, so nothing leaks
between sessions. A segment that needs the graph's zero padding (the stream's first frames have
no frames before them; at the end, none after) must sit at the call's start (or end):
``plan_calls`` puts at most one of each kind in a call, around the interior ones.

``HeadBatcher`` is the execution: sessions ``submit`` segments; an executor thread takes every
segment queued, per model (runner), plans them and runs the calls, and hands each segment its
probabilities back on the event loop. While a call runs new segments queue, so the busier the
server the larger the calls (no delay is added: a head's call costs less than waiting would).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from concurrent.futures import Future as ThreadFuture
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["HeadBatcher", "HeadSegment", "HeadStats", "plan_calls", "run_segments"]

log = logging.getLogger(__name__)

Frames = npt.NDArray[np.float32]


class Head(Protocol):
    def run(self, features: Frames) -> Frames: ...


@dataclass(frozen=True, eq=False)
class HeadSegment:
    """Frames of one session and which of their outputs it keeps."""

    features: Frames  # [frames, width]
    keep_from: int  # first kept row of ``features``
    keep_count: int
    pad_before: bool  # its kept frames need the graph's zero padding before the segment
    pad_after: bool

    @property
    def frames(self) -> int:
        return int(self.features.shape[0])


def plan_calls(segments: Sequence[HeadSegment]) -> list[list[int]]:
    """Indices of ``segments``, grouped into calls in order: interior segments together, each
    call with at most one padded-before segment first and one padded-after segment last; a
    segment needing both is a call of its own."""
    interior = [i for i, s in enumerate(segments) if not s.pad_before and not s.pad_after]
    before = [i for i, s in enumerate(segments) if s.pad_before and not s.pad_after]
    after = [i for i, s in enumerate(segments) if s.pad_after and not s.pad_before]
    both = [[i] for i, s in enumerate(segments) if s.pad_before and s.pad_after]
    calls: list[list[int]] = []
    for n in range(max(len(before), len(after), 1 if interior else 0)):
        call = before[n : n + 1] + (interior if n == 0 else []) + after[n : n + 1]
        calls.append(call)
    return calls + both


def run_segments(head: Head, segments: Sequence[HeadSegment]) -> list[Frames]:
    """Each segment's kept probabilities, in as few calls as ``plan_calls`` allows."""
    out: list[Frames | None] = [None] * len(segments)
    for call in plan_calls(segments):
        joined = np.concatenate([segments[i].features for i in call])
        probabilities = head.run(joined)
        row = 0
        for i in call:
            segment = segments[i]
            start = row + segment.keep_from
            out[i] = probabilities[start : start + segment.keep_count]
            row += segment.frames
    return [p for p in out if p is not None]


@dataclass
class HeadStats:
    calls: int = 0
    segments: int = 0
    frames: int = 0
    compute_s: float = 0.0


@dataclass(eq=False)
class _Queued:
    head: Head
    segment: HeadSegment
    future: asyncio.Future[Frames]


class HeadBatcher:
    """One for the server: batches every session's segments per model."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._lock = threading.Lock()
        self._queue: list[_Queued] = []
        self._draining = False
        self._drains: set[ThreadFuture[None]] = set()
        self.stats = HeadStats()

    async def submit(self, head: Head, segment: HeadSegment) -> Frames:
        """The probabilities ``[keep_count, types]`` of the segment's kept frames."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Frames] = loop.create_future()
        with self._lock:
            self._queue.append(_Queued(head, segment, future))
            start = not self._draining
            self._draining = True
        if start:
            try:
                drain = self._executor.submit(self._drain, loop)
            except RuntimeError:  # shutting down
                with self._lock:
                    self._draining = False
                raise asyncio.CancelledError("the executor is stopping") from None
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
        return await future

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            with self._lock:
                items, self._queue = self._queue, []
                if not items:
                    self._draining = False
                    return
            for group in _by_head(items):
                self._run(loop, group)

    def _run(self, loop: asyncio.AbstractEventLoop, group: list[_Queued]) -> None:
        started = time.perf_counter()
        try:
            outputs: list[Frames] | None = run_segments(group[0].head, [q.segment for q in group])
            error: Exception | None = None
        except Exception as exc:  # the sessions fail; the drain carries on
            log.exception("custom detector execution failed")
            outputs, error = None, exc
        elapsed = time.perf_counter() - started
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(self._deliver, group, outputs, error, elapsed)

    def _deliver(
        self,
        group: list[_Queued],
        outputs: list[Frames] | None,
        error: Exception | None,
        elapsed_s: float,
    ) -> None:
        if outputs is None:
            for q in group:
                if not q.future.done():
                    q.future.set_exception(RuntimeError(f"custom detector failed: {error}"))
            return
        self.stats.calls += len(plan_calls([q.segment for q in group]))
        self.stats.segments += len(group)
        self.stats.frames += sum(q.segment.frames for q in group)
        self.stats.compute_s += elapsed_s
        for q, probabilities in zip(group, outputs, strict=True):
            if not q.future.done():
                q.future.set_result(probabilities)


def _by_head(items: list[_Queued]) -> list[list[_Queued]]:
    groups: dict[int, list[_Queued]] = {}
    for item in items:
        groups.setdefault(id(item.head), []).append(item)
    return list(groups.values())
