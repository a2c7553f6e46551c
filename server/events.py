"""From per-window probabilities to sound events, incrementally: open, update, close.

An event is one tag over one stretch of time: ``{tag, start_time, end_time, confidence}``.

The rule, per tag (``EventRules`` holds the parameters):

1. A window *passes* when its probability is above the tag's threshold (the session's
   calibrated threshold, ``Tagger.thresholds``, unless a threshold is given).
2. A *run* is a maximal stretch of consecutive passing windows, first ``i``, last ``j``.
3. Its boundaries. ``naive``: the window edges, ``[i * hop, j * hop + window]``. ``refined``:
   the logit is interpolated linearly between the centres of the last failing and the first
   passing window (and of the last passing and the first failing one); where it crosses the
   threshold, a window centred there would just pass. If a window passes once the sound fills
   a fraction ``onset_fill`` of it, the sound began ``window * (1/2 - onset_fill)`` after that
   crossing (likewise ``offset_fill`` for the end, before the crossing). The onset is clamped
   to ``[(i - 1) * hop, i * hop + window / 2]`` and the offset to
   ``[j * hop + window / 2, (j + 1) * hop + window]``: never later than the first passing
   window's centre, never earlier than the last passing window's centre, and at most one hop
   beyond the naive edge. A run that starts at the stream's first window, or is still passing
   at ``finish()``, keeps the naive edge there (there is no evidence beyond it). The two fill
   fractions were tuned on scenes apart from those reported (``benchmarks/events_quality.py``).
4. Runs of one tag merge into one event while the gap from an event's end to the next run's
   start is at most ``merge_window_ms`` (a negative gap, from refined edges, merges too).
5. An event shorter than ``min_duration_ms`` is dropped; ``confidence`` is the highest
   probability of the tag in the event's passing windows.

On a stream a reader never sees an event in two contradictory states: an event is reported
``open`` only once it is certain to survive (its duration's lower bound, up to the last passing
window's centre, reached ``min_duration_ms``), ``update``s only move its ``end_time`` later or
its ``confidence`` higher (``start_time`` never changes once reported), and it is ``close``d once,
when no later run can merge into it any more (the earliest onset a later run can have is past
``end_time + merge_window``) or at ``finish()``. An event that reaches its minimum only when its
final edge is known is reported ``open`` and ``close``d in the same step.

The tracker keeps, per stream, the previous window's probabilities and the state of the tags
that are passing or waiting for a merge: its work per window does not grow with the stream.
Windows are processed one at a time in order, so any split of the same windows into ``feed``
calls gives the same transitions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_MERGE_WINDOW_MS",
    "DEFAULT_MIN_DURATION_MS",
    "DEFAULT_OFFSET_FILL",
    "DEFAULT_ONSET_FILL",
    "Event",
    "EventRules",
    "EventTracker",
    "EventTransition",
    "derive_events",
]

DEFAULT_MERGE_WINDOW_MS = 500
DEFAULT_MIN_DURATION_MS = 0
DEFAULT_ONSET_FILL = 0.4  # tuned: benchmarks/events_quality.py, RESULTS.md "Event boundaries"
DEFAULT_OFFSET_FILL = 0.7
_NOT_EVENTS = frozenset({"Silence"})  # as in server.tagging: never a sound event
_TIME_DECIMALS = 3
_CONFIDENCE_DECIMALS = 4
_EPS = 1e-7
Boundary = Literal["refined", "naive"]
TransitionKind = Literal["open", "update", "close"]


@dataclass(frozen=True)
class Event:
    """One event as a reader sees it; times in seconds from the stream's start."""

    event_id: int
    tag: str
    start_time_s: float
    end_time_s: float
    confidence: float
    closed: bool


@dataclass(frozen=True)
class EventTransition:
    kind: TransitionKind
    event: Event


@dataclass(frozen=True)
class EventRules:
    """Per-class parameters for one session (or one request): build with ``EventRules.build``."""

    labels: tuple[str, ...]
    threshold: npt.NDArray[np.float64]  # probability, per class
    merge_window_s: npt.NDArray[np.float64]
    min_duration_s: npt.NDArray[np.float64]
    reportable: npt.NDArray[np.bool_]
    hop_s: float = 0.5
    window_s: float = 0.975
    boundary: Boundary = "refined"
    onset_fill: float = DEFAULT_ONSET_FILL
    offset_fill: float = DEFAULT_OFFSET_FILL

    @property
    def event_threshold(self) -> npt.NDArray[np.float64]:
        """Per class, what a probability must exceed to pass: infinite for non-events."""
        cached: npt.NDArray[np.float64] | None = self.__dict__.get("_event_threshold")
        if cached is None:
            cached = np.where(self.reportable, self.threshold, np.inf)
            object.__setattr__(self, "_event_threshold", cached)
        return cached

    @classmethod
    def build(
        cls,
        labels: Sequence[str],
        thresholds: npt.ArrayLike,
        *,
        threshold: float | None = None,
        merge_window_ms: int = DEFAULT_MERGE_WINDOW_MS,
        min_duration_ms: int = DEFAULT_MIN_DURATION_MS,
        tag_threshold: Mapping[str, float] | None = None,
        tag_merge_window_ms: Mapping[str, int] | None = None,
        tag_min_duration_ms: Mapping[str, int] | None = None,
        hop_s: float = 0.5,
        window_s: float = 0.975,
        boundary: Boundary = "refined",
        onset_fill: float = DEFAULT_ONSET_FILL,
        offset_fill: float = DEFAULT_OFFSET_FILL,
    ) -> EventRules:
        """``thresholds``: per-class probabilities (``Tagger.thresholds(sensitivity)``);
        ``threshold`` replaces them all, ``tag_*`` override single tags. Unknown tag names raise
        ``ValueError`` naming them, as do negative durations."""
        names = tuple(labels)
        index = {name: i for i, name in enumerate(names)}
        count = len(names)
        base = np.asarray(thresholds, dtype=np.float64)
        if base.shape != (count,):
            raise ValueError(f"thresholds has shape {base.shape}, expected ({count},)")
        per_class = base.copy() if threshold is None else np.full(count, float(threshold))
        merge = np.full(count, merge_window_ms / 1000.0)
        minimum = np.full(count, min_duration_ms / 1000.0)
        for overrides, target, scale in (
            (tag_threshold, per_class, 1.0),
            (tag_merge_window_ms, merge, 1e-3),
            (tag_min_duration_ms, minimum, 1e-3),
        ):
            for name, value in (overrides or {}).items():
                if name not in index:
                    raise ValueError(f"unknown tag {name!r}")
                target[index[name]] = float(value) * scale
        if np.any(merge < 0) or np.any(minimum < 0):
            raise ValueError("merge_window_ms and min_duration_ms must not be negative")
        if not 0.0 <= onset_fill <= 1.0 or not 0.0 <= offset_fill <= 1.0:
            raise ValueError("onset_fill and offset_fill must lie in [0, 1]")
        reportable = np.array([name not in _NOT_EVENTS for name in names])
        return cls(
            names, per_class, merge, minimum, reportable, hop_s, window_s, boundary,
            onset_fill, offset_fill,
        )  # fmt: skip


@dataclass
class _Pending:
    """One tag's event in the making: the runs merged so far."""

    event_id: int | None  # assigned when first reported
    start_s: float
    end_s: float  # the last run's offset once known, else its lower bound
    end_known: bool  # False while the last run is still passing
    last_pass: int  # index of the last passing window
    confidence: float
    reported: Event | None = None


def _logit(p: float) -> float:
    q = min(max(p, _EPS), 1.0 - _EPS)
    return math.log(q / (1.0 - q))


@dataclass
class EventTracker:
    """One stream's incremental event state; ``feed`` windows in order, then ``finish``."""

    rules: EventRules
    first_window: int = 0
    # False: no ``update`` transitions (a reported event is not re-snapshotted every window;
    # the event log only needs open and close).
    report_updates: bool = True
    _next_window: int = field(init=False)
    _previous: npt.NDArray[np.float64] | None = field(init=False, default=None)
    _was: set[int] | None = field(init=False, default=None)  # the tags _previous passed
    _pending: dict[int, _Pending] = field(init=False, default_factory=dict)
    _next_id: int = field(init=False, default=0)
    _finished: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self._next_window = self.first_window

    def feed(self, probabilities: npt.ArrayLike) -> list[EventTransition]:
        """Windows [n, classes] (or one window [classes]); the transitions they cause, in order."""
        if self._finished:
            raise RuntimeError("feed after finish")
        rows = np.asarray(probabilities, dtype=np.float64)
        if rows.ndim == 1:
            rows = rows[None, :]
        if rows.ndim != 2 or rows.shape[1] != len(self.rules.labels):
            raise ValueError(f"probabilities have shape {rows.shape}, expected [n, classes]")
        out: list[EventTransition] = []
        for row in rows:
            self._step(row, out)
        return out

    def finish(self) -> list[EventTransition]:
        """End of stream: close what is open (keeping naive edges where runs are cut off)."""
        out: list[EventTransition] = []
        if not self._finished:
            self._finished = True
            for tag in sorted(self._pending):
                pending = self._pending[tag]
                if not pending.end_known:
                    pending.end_s = self._naive_end(pending.last_pass)
                    pending.end_known = True
                self._close(tag, out)
            self._pending.clear()
        return out

    def state(self) -> dict[str, Any]:
        """Everything needed to carry on after a restart except the previous window's
        probabilities (stored with the results): plain JSON, floats round-trip exactly."""
        return {
            "first_window": self.first_window,
            "next_window": self._next_window,
            "next_id": self._next_id,
            "finished": self._finished,
            "pending": [
                {
                    "tag": tag,
                    "event_id": p.event_id,
                    "start_s": p.start_s,
                    "end_s": p.end_s,
                    "end_known": p.end_known,
                    "last_pass": p.last_pass,
                    "confidence": p.confidence,
                    "reported": None
                    if p.reported is None
                    else [
                        p.reported.start_time_s,
                        p.reported.end_time_s,
                        p.reported.confidence,
                    ],
                }
                for tag, p in sorted(self._pending.items())
            ],
        }

    @classmethod
    def restore(
        cls,
        rules: EventRules,
        state: Mapping[str, Any],
        previous: npt.ArrayLike | None,
        report_updates: bool = True,
    ) -> EventTracker:
        """A tracker as ``state()`` described it; ``previous``: the probabilities of window
        ``next_window - 1`` (None when no window was fed yet)."""
        tracker = cls(rules, int(state["first_window"]), report_updates)
        tracker._next_window = int(state["next_window"])
        tracker._next_id = int(state["next_id"])
        tracker._finished = bool(state["finished"])
        if previous is not None:
            tracker._previous = np.asarray(previous, dtype=np.float64)
        for item in state["pending"]:
            tag = int(item["tag"])
            pending = _Pending(
                item["event_id"],
                float(item["start_s"]),
                float(item["end_s"]),
                bool(item["end_known"]),
                int(item["last_pass"]),
                float(item["confidence"]),
            )
            if item["reported"] is not None:
                start, end, confidence = item["reported"]
                pending.reported = Event(
                    int(item["event_id"]), rules.labels[tag], start, end, confidence, False
                )
            tracker._pending[tag] = pending
        return tracker

    @property
    def next_window(self) -> int:
        return self._next_window

    @property
    def idle(self) -> bool:
        """No tag passing or waiting for a merge: the state is just counters."""
        return not self._pending

    def skip_to(self, window: int) -> None:
        """An idle tracker whose stored state predates quiet windows: carry on at ``window``."""
        if not self.idle or window < self._next_window:
            raise ValueError(f"cannot skip from window {self._next_window} to {window}")
        self._next_window = window

    def open_events(self) -> list[Event]:
        """Events reported open and not yet closed (for a reader who joins mid-stream)."""
        return [p.reported for p in self._pending.values() if p.reported is not None]

    # -- per window -------------------------------------------------------------------------

    def _step(self, row: npt.NDArray[np.float64], out: list[EventTransition]) -> None:
        rules = self.rules
        index = self._next_window
        passing = self._passing(row)
        was = self._passing(self._previous) if self._was is None else self._was
        active = sorted(passing | self._pending.keys()) if self._pending else sorted(passing)
        for tag in active:
            now, before = tag in passing, tag in was
            pending = self._pending.get(tag)
            if now and not before:
                onset = self._onset(tag, index, row)
                if pending is not None and onset - pending.end_s > rules.merge_window_s[tag]:
                    self._close(tag, out)
                    pending = None
                if pending is None:
                    pending = _Pending(None, onset, 0.0, False, index, 0.0)
                    self._pending[tag] = pending
                pending.end_known = False
            if now:
                assert pending is not None
                pending.last_pass = index
                pending.end_s = max(pending.end_s, self._end_bound(index))
                pending.confidence = max(pending.confidence, float(row[tag]))
            elif pending is not None:
                if before:
                    pending.end_s = max(pending.end_s, self._offset(tag, index, row))
                    pending.end_known = True
                earliest_next = self._earliest_onset(index + 1)
                if earliest_next - pending.end_s > rules.merge_window_s[tag]:
                    self._close(tag, out)
                    continue
            self._report(tag, out)
        self._previous = row
        self._was = passing
        self._next_window = index + 1

    def _passing(self, row: npt.NDArray[np.float64] | None) -> set[int]:
        if row is None:
            return set()
        return set((row > self.rules.event_threshold).nonzero()[0].tolist())

    # -- boundaries -------------------------------------------------------------------------

    def _start(self, index: int) -> float:
        return index * self.rules.hop_s

    def _naive_end(self, index: int) -> float:
        return index * self.rules.hop_s + self.rules.window_s

    def _centre(self, index: int) -> float:
        return index * self.rules.hop_s + self.rules.window_s / 2

    def _end_bound(self, index: int) -> float:
        """The lowest offset a run whose last passing window is ``index`` can get."""
        return self._naive_end(index) if self.rules.boundary == "naive" else self._centre(index)

    def _earliest_onset(self, index: int) -> float:
        """The lowest onset a run whose first passing window is ``index`` or later can get."""
        if self.rules.boundary == "naive":
            return self._start(index)
        return max(self._start(index - 1), self._start(self.first_window))

    def _crossing(self, tag: int, index: int, row: npt.NDArray[np.float64]) -> float:
        """Where the logit, linear between the centres of windows index-1 and index, crosses the
        threshold."""
        assert self._previous is not None
        before = _logit(float(self._previous[tag]))
        after = _logit(float(row[tag]))
        level = _logit(float(self.rules.threshold[tag]))
        span = after - before
        alpha = 0.5 if abs(span) < 1e-12 else (level - before) / span
        alpha = min(max(alpha, 0.0), 1.0)
        return self._centre(index - 1) + alpha * self.rules.hop_s

    def _onset(self, tag: int, index: int, row: npt.NDArray[np.float64]) -> float:
        rules = self.rules
        if rules.boundary == "naive" or self._previous is None:
            return self._start(index)
        guess = self._crossing(tag, index, row) + rules.window_s * (0.5 - rules.onset_fill)
        return min(max(guess, self._start(index - 1)), self._centre(index))

    def _offset(self, tag: int, index: int, row: npt.NDArray[np.float64]) -> float:
        """Offset of a run whose last passing window is index-1 (window ``index`` fails)."""
        rules = self.rules
        if rules.boundary == "naive":
            return self._naive_end(index - 1)
        guess = self._crossing(tag, index, row) - rules.window_s * (0.5 - rules.offset_fill)
        return min(max(guess, self._centre(index - 1)), self._naive_end(index))

    # -- transitions ------------------------------------------------------------------------

    def _snapshot(self, tag: int, pending: _Pending, closed: bool) -> Event:
        if pending.event_id is None:
            pending.event_id = self._next_id
            self._next_id += 1
        return Event(
            pending.event_id,
            self.rules.labels[tag],
            round(pending.start_s, _TIME_DECIMALS),
            round(pending.end_s, _TIME_DECIMALS),
            round(pending.confidence, _CONFIDENCE_DECIMALS),
            closed,
        )

    def _long_enough(self, tag: int, pending: _Pending) -> bool:
        return pending.end_s - pending.start_s >= self.rules.min_duration_s[tag] - 1e-9

    def _report(self, tag: int, out: list[EventTransition]) -> None:
        pending = self._pending[tag]
        if pending.reported is None and not self._long_enough(tag, pending):
            return
        if pending.reported is not None and not self.report_updates:
            return
        event = self._snapshot(tag, pending, closed=False)
        if event != pending.reported:
            out.append(EventTransition("open" if pending.reported is None else "update", event))
            pending.reported = event

    def _close(self, tag: int, out: list[EventTransition]) -> None:
        pending = self._pending.pop(tag)
        if pending.reported is None and not self._long_enough(tag, pending):
            return
        if pending.reported is None:
            out.append(EventTransition("open", self._snapshot(tag, pending, closed=False)))
        out.append(EventTransition("close", self._snapshot(tag, pending, closed=True)))


def derive_events(probabilities: npt.ArrayLike, rules: EventRules) -> list[Event]:
    """All events of a whole recording (windows [n, classes]), ordered by start then tag."""
    tracker = EventTracker(rules)
    transitions = tracker.feed(probabilities) + tracker.finish()
    closed = [t.event for t in transitions if t.kind == "close"]
    return sorted(closed, key=lambda e: (e.start_time_s, e.tag, e.event_id))
