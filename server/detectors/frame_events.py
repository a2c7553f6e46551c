"""Custom detectors' events from their 10 ms frames, incrementally: ``frames_to_events`` on a stream.

``models.heads.metrics.frames_to_events`` turns one file's per-frame probabilities into events:
a frame passes above the type's threshold, a run of passing frames spans their cells, runs closer
than ``merge_window_ms`` merge, the onset and offset shifts move the edges, and events shorter
than ``min_duration_ms`` are dropped. ``FrameEventTracker`` gives the same events from frames
that arrive chunk by chunk, as the event log needs them: an event is reported ``open`` once it
is certain to last its minimum (with the end it reaches so far; its start never changes), and
``close``d once no later run can merge into it (the next run could start no earlier than the
next frame's cell) or at ``finish``. Its state is a few numbers, stored with the windows.

``FrameEvents`` holds one tracker per artifact type of a session's models; each tracker numbers
its own events (``source`` tells them apart: the session's event log gives them its ids).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.heads.metrics import EventRule
from server.events import Event, EventTransition

__all__ = ["FrameEventTracker", "FrameEvents"]

_TIME_DECIMALS = 3  # as server.events: what the wire carries
_CONFIDENCE_DECIMALS = 4
_EPS = 1e-9


@dataclass
class FrameEventTracker:
    """One artifact type's events; ``feed`` frames in order (from ``next_frame``), then ``finish``."""

    tag: str
    rule: EventRule
    next_frame: int = 0
    next_id: int = 0
    run_first: int | None = None  # the passing run in progress
    event_start_ms: float | None = None  # the event in the making (unshifted)
    event_end_ms: float = 0.0  # where its last finished run ends (unshifted)
    confidence: float = 0.0
    event_id: int | None = None  # set once reported open
    finished: bool = False

    @property
    def idle(self) -> bool:
        return self.event_start_ms is None and self.run_first is None

    def feed(self, probabilities: npt.ArrayLike) -> list[EventTransition]:
        """Frames ``next_frame, next_frame + 1, ...``: the transitions they cause, in order."""
        if self.finished:
            raise RuntimeError("feed after finish")
        out: list[EventTransition] = []
        rule = self.rule
        values = np.asarray(probabilities, dtype=np.float64).ravel()
        passing = values > rule.threshold
        if self.idle and not passing.any():  # the common case: nothing, and nothing pending
            self.next_frame += int(values.shape[0])
            return out
        for value, passes in zip(values.tolist(), passing.tolist(), strict=True):
            self._step(value, passes, out)
        return out

    def finish(self) -> list[EventTransition]:
        out: list[EventTransition] = []
        if not self.finished:
            self.finished = True
            if self.run_first is not None:
                self.event_end_ms = self._cell_ms(self.next_frame)
                self.run_first = None
            self._close(out)
        return out

    def _cell_ms(self, frame: int) -> float:
        return self.rule.cell_offset_ms + frame * self.rule.hop_ms

    def _step(self, value: float, passes: bool, out: list[EventTransition]) -> None:
        frame = self.next_frame
        self.next_frame = frame + 1
        rule = self.rule
        if passes:
            if self.run_first is None:
                start_ms = self._cell_ms(frame)
                if self.event_start_ms is not None and (
                    start_ms - self.event_end_ms > rule.merge_window_ms
                ):
                    self._close(out)
                if self.event_start_ms is None:
                    self.event_start_ms, self.confidence = start_ms, 0.0
                self.run_first = frame
            self.confidence = max(self.confidence, value)
            if self.event_id is None:
                self._maybe_open(self._cell_ms(frame + 1), out)
            return
        if self.run_first is not None:
            self.event_end_ms = self._cell_ms(frame)
            self.run_first = None
            if self.event_id is None:
                self._maybe_open(self.event_end_ms, out)
        if self.event_start_ms is not None:
            earliest_next_ms = self._cell_ms(frame + 1)
            if earliest_next_ms - self.event_end_ms > rule.merge_window_ms:
                self._close(out)

    def _edges(self, end_ms: float) -> tuple[float, float]:
        assert self.event_start_ms is not None
        start = self.event_start_ms + self.rule.onset_shift_ms
        return start, max(start, end_ms + self.rule.offset_shift_ms)

    def _long_enough(self, start: float, end: float) -> bool:
        return end - start >= self.rule.min_duration_ms - _EPS

    def _event(self, start: float, end: float, closed: bool) -> Event:
        if self.event_id is None:
            self.event_id = self.next_id
            self.next_id += 1
        return Event(
            self.event_id,
            self.tag,
            round(start / 1000.0, _TIME_DECIMALS),
            round(end / 1000.0, _TIME_DECIMALS),
            round(self.confidence, _CONFIDENCE_DECIMALS),
            closed,
        )

    def _maybe_open(self, end_bound_ms: float, out: list[EventTransition]) -> None:
        start, end = self._edges(end_bound_ms)
        if self._long_enough(start, end):
            out.append(EventTransition("open", self._event(start, end, closed=False)))

    def _close(self, out: list[EventTransition]) -> None:
        if self.event_start_ms is None:
            return
        start, end = self._edges(self.event_end_ms)
        if self.event_id is not None or self._long_enough(start, end):
            if self.event_id is None:
                out.append(EventTransition("open", self._event(start, end, closed=False)))
            out.append(EventTransition("close", self._event(start, end, closed=True)))
        self.event_start_ms, self.event_id, self.confidence = None, None, 0.0

    def state(self) -> dict[str, Any]:
        return {
            "next_frame": self.next_frame,
            "next_id": self.next_id,
            "run_first": self.run_first,
            "start_ms": self.event_start_ms,
            "end_ms": self.event_end_ms,
            "confidence": self.confidence,
            "event_id": self.event_id,
            "finished": self.finished,
        }

    @classmethod
    def restore(cls, tag: str, rule: EventRule, state: Mapping[str, Any]) -> FrameEventTracker:
        return cls(
            tag,
            rule,
            int(state["next_frame"]),
            int(state["next_id"]),
            state["run_first"],
            state["start_ms"],
            float(state["end_ms"]),
            float(state["confidence"]),
            state["event_id"],
            bool(state["finished"]),
        )


class FrameEvents:
    """The frame trackers of one session: per model, per artifact type. Frames are handed over
    with their absolute index; those already fed (before a restart) are skipped."""

    def __init__(self, trackers: Sequence[Sequence[FrameEventTracker]]) -> None:
        self.trackers = [list(per_model) for per_model in trackers]

    @classmethod
    def build(
        cls,
        models: Sequence[tuple[Sequence[str], Sequence[EventRule]]],
        first_frame: int,
        state: Sequence[Sequence[Mapping[str, Any]]] | None = None,
    ) -> FrameEvents:
        """``models``: per model its types and rules. ``state``: what ``state()`` stored, or
        None for a session with none stored yet (it starts at ``first_frame``). An idle stored
        state older than ``first_frame`` (quiet windows stored without a new state) carries on
        there."""
        trackers = []
        for m, (types, rules) in enumerate(models):
            per_model = []
            for t, (tag, rule) in enumerate(zip(types, rules, strict=True)):
                if state is None:
                    tracker = FrameEventTracker(tag, rule, next_frame=first_frame)
                else:
                    tracker = FrameEventTracker.restore(tag, rule, state[m][t])
                    if tracker.idle and tracker.next_frame < first_frame:
                        tracker.next_frame = first_frame
                per_model.append(tracker)
            trackers.append(per_model)
        return cls(trackers)

    @staticmethod
    def source(model: int, type_index: int) -> str:
        return f"{model}.{type_index}"

    @property
    def idle(self) -> bool:
        return all(t.idle for per_model in self.trackers for t in per_model)

    def feed(
        self, frames: Sequence[tuple[int, npt.NDArray[np.float32]]]
    ) -> list[tuple[str, EventTransition]]:
        """Per model ``(first frame, probabilities [frames, types])``; transitions, tagged by
        source, model by model and type by type."""
        out: list[tuple[str, EventTransition]] = []
        for m, (first, probabilities) in enumerate(frames):
            for t, tracker in enumerate(self.trackers[m]):
                skip = tracker.next_frame - first
                if skip < 0:
                    raise RuntimeError(
                        f"frames from {first} given to a tracker at {tracker.next_frame}"
                    )
                if skip < probabilities.shape[0]:
                    source = self.source(m, t)
                    out.extend((source, x) for x in tracker.feed(probabilities[skip:, t]))
        return out

    def finish(self) -> list[tuple[str, EventTransition]]:
        return [
            (self.source(m, t), x)
            for m, per_model in enumerate(self.trackers)
            for t, tracker in enumerate(per_model)
            for x in tracker.finish()
        ]

    def state(self) -> list[list[dict[str, Any]]]:
        return [[t.state() for t in per_model] for per_model in self.trackers]
