"""A session's event log: what ``EventTracker`` reports, as durable, numbered entries.

The engine feeds each stored window's probabilities to the session's ``SessionEventLog`` and
writes the entries it returns, and the tracker's state, in the same transaction as the windows:
after a crash the log and the tracker carry on from exactly the windows that were stored, so an
event keeps its id and no entry is written twice.

Entries, per window (so any batching of windows gives the same log): an ``open`` entry when the
tracker first reports an event, a ``closed`` entry when it closes it; when both happen on the
same window only the ``closed`` one is written. The tracker's ``update``s (a growing end) are not
logged: the ``closed`` entry carries the final edges.

Probabilities are stored with each window as float32 (2,084 bytes for 521 classes, which the
store compresses), and the
tracker is fed those same float16 values, so a log derived later from the stored windows (other
rule parameters, per request) is computed from exactly what the live log saw.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.errors import BadRequest
from protocol.events import EventParams, EventState, SoundEvent
from server.detectors.frame_events import FrameEvents
from server.events import (
    DEFAULT_MERGE_WINDOW_MS,
    DEFAULT_MIN_DURATION_MS,
    EventRules,
    EventTracker,
    EventTransition,
)

__all__ = [
    "LogEntry",
    "SessionEventLog",
    "pack_probabilities",
    "probabilities_from_tags",
    "replay_log",
    "rules_for",
    "unpack_probabilities",
]

_STORED_DTYPE = np.dtype("<f4")


@dataclass(frozen=True)
class LogEntry:
    """One log entry: ``seq`` numbers all entries of the session, ``kind_seq`` the entries of
    its state (open or closed), so either view pages with a plain index."""

    seq: int
    kind_seq: int
    event: SoundEvent
    windows: int  # windows seen when it was made: a live feed sends it after that many


def rules_for(
    labels: Sequence[str],
    thresholds: npt.ArrayLike,
    params: EventParams,
    hop_s: float,
    window_s: float,
) -> EventRules:
    """The rules for these parameters; 400 naming an unknown tag."""
    try:
        return EventRules.build(
            labels,
            thresholds,
            threshold=params.threshold,
            merge_window_ms=DEFAULT_MERGE_WINDOW_MS
            if params.merge_window_ms is None
            else params.merge_window_ms,
            min_duration_ms=DEFAULT_MIN_DURATION_MS
            if params.min_duration_ms is None
            else params.min_duration_ms,
            tag_threshold=params.tag_threshold,
            tag_merge_window_ms=params.tag_merge_window_ms,
            tag_min_duration_ms=params.tag_min_duration_ms,
            hop_s=hop_s,
            window_s=window_s,
            boundary="naive" if params.boundary == "naive" else "refined",
        )
    except ValueError as exc:
        raise BadRequest(f"events: {exc} (GET /api/v1/tags/official lists the tags)") from None


def pack_probabilities(probabilities: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], list[bytes]]:
    """Windows [n, classes] -> (the probabilities as the tracker sees them; one blob per window).

    Stored as the model's float32 values, exactly: events, tags and a replay of the stored
    windows all see the same numbers. (float16 probabilities lose the four fifths of a window's
    classes under 6e-5 to subnormals, which numpy converts ~20x slower; float16 logits cost
    ~70 us a window on the event loop in log, log1p and exp. The store compresses the blobs:
    ~640 bytes a window for the int8 model's 256-level outputs, ~1.4 KB for float models.)"""
    values = np.asarray(probabilities, dtype=_STORED_DTYPE)
    return values.astype(np.float64), [row.tobytes() for row in values]


def unpack_probabilities(blob: bytes) -> npt.NDArray[np.float64]:
    return np.frombuffer(blob, dtype=_STORED_DTYPE).astype(np.float64)


def probabilities_from_tags(
    tags: Iterable[tuple[str, float]], index: Mapping[str, int], classes: int
) -> npt.NDArray[np.float64]:
    """Windows stored before probabilities were: the tags that passed, zero elsewhere."""
    row = np.zeros(classes)
    for name, probability in tags:
        position = index.get(name)
        if position is not None:
            row[position] = probability
    return row


def _entries(
    transitions: list[EventTransition], logged: int, closed: int, windows: int
) -> tuple[list[LogEntry], int, int]:
    closing = {t.event.event_id for t in transitions if t.kind == "close"}
    out: list[LogEntry] = []
    for transition in transitions:
        event = transition.event
        if transition.kind == "update" or (transition.kind == "open" and event.event_id in closing):
            continue
        state: EventState = "closed" if transition.kind == "close" else "open"
        kind_seq = closed if state == "closed" else logged - closed
        wire = SoundEvent(
            event.event_id,
            event.tag,
            event.start_time_s,
            event.end_time_s,
            event.confidence,
            state,
        )
        out.append(LogEntry(logged, kind_seq, wire, windows))
        logged += 1
        closed += state == "closed"
    return out, logged, closed


_YAMNET_SOURCE = ""


class _EventNumbering:
    """The log's own event ids, for a session whose log has several sources (YAMNet's tracker
    and its custom detectors' frame trackers, each numbering its events from 0): ids in the
    order the log first reports events. Only the ids of events not yet closed are kept."""

    def __init__(self, next_id: int = 0, open_ids: dict[tuple[str, int], int] | None = None):
        self.next_id = next_id
        self.open_ids = open_ids or {}

    def renumber(self, source: str, transition: EventTransition) -> EventTransition:
        key = (source, transition.event.event_id)
        log_id = self.open_ids.get(key)
        if log_id is None:
            log_id = self.open_ids[key] = self.next_id
            self.next_id += 1
        if transition.kind == "close":
            del self.open_ids[key]
        return replace(transition, event=replace(transition.event, event_id=log_id))

    def state(self) -> dict[str, Any]:
        return {"next_id": self.next_id, "open": [[s, t, i] for (s, t), i in self.open_ids.items()]}

    @classmethod
    def restore(cls, state: Mapping[str, Any]) -> _EventNumbering:
        return cls(int(state["next_id"]), {(s, int(t)): int(i) for s, t, i in state["open"]})


class SessionEventLog:
    """One session's tracker and log counters; with custom detectors (``frames``), their frame
    trackers too, whose events join the same log (after YAMNet's, window by window)."""

    def __init__(
        self,
        tracker: EventTracker,
        logged: int = 0,
        closed: int = 0,
        frames: FrameEvents | None = None,
        numbering: _EventNumbering | None = None,
    ) -> None:
        self.tracker = tracker
        self.logged = logged
        self.closed = closed
        self.frames = frames
        self._numbering = (
            numbering if numbering is not None or frames is None else _EventNumbering()
        )
        self._stored_idle: tuple[int, int] | None = None  # (logged, next event id) when idle

    @classmethod
    def restore(
        cls,
        rules: EventRules,
        state_json: str | None,
        previous: npt.NDArray[np.float64] | None,
        windows_stored: int = 0,
        frames: Callable[[Any], FrameEvents] | None = None,
    ) -> SessionEventLog:
        """From the state stored with the windows (None: none stored with them yet) and the
        last stored window's probabilities; the log carries on at ``windows_stored``.
        ``frames``: for a session with custom detectors, builds their frame trackers from
        their stored state (None when none is stored)."""
        if state_json is None:
            tracker = EventTracker(rules, windows_stored, report_updates=False)
            return cls(tracker, frames=None if frames is None else frames(None))
        state = json.loads(state_json)
        tracker = EventTracker.restore(rules, state["tracker"], previous, report_updates=False)
        if tracker.idle and tracker.next_window < windows_stored:
            tracker.skip_to(windows_stored)  # quiet windows stored without a new state
        numbering = None
        if "numbering" in state:
            numbering = _EventNumbering.restore(state["numbering"])
        return cls(
            tracker,
            int(state["logged"]),
            int(state["closed"]),
            None if frames is None else frames(state.get("frames")),
            numbering,
        )

    def state_to_store(self) -> str | None:
        """The state to store with the windows just fed, or None when the stored one still
        holds: the tracker is idle and nothing was logged since an idle state was stored
        (``restore`` then carries on at the stored windows' end). Most windows of most streams
        are quiet, and this spares them a JSON encoding each."""
        if self.tracker.idle and (self.frames is None or self.frames.idle):
            mark = (self.logged, self.tracker.state()["next_id"])
            if mark == self._stored_idle:
                return None
            self._stored_idle = mark
        else:
            self._stored_idle = None
        return self.state_json()

    @property
    def finished(self) -> bool:
        return bool(self.tracker.state()["finished"])

    def feed(
        self,
        probabilities: npt.NDArray[np.float64],
        frames: Sequence[Sequence[tuple[int, npt.NDArray[np.float32]]]] | None = None,
    ) -> list[LogEntry]:
        """Windows in order (as stored: float32 values); the entries they add. ``frames``:
        per window, the custom detectors' frame probabilities that window brings (per model,
        its first frame and ``[frames, types]``), whose events follow YAMNet's."""
        out: list[LogEntry] = []
        for i, row in enumerate(probabilities):
            transitions = self.tracker.feed(row)
            if self.frames is not None and frames is not None:
                transitions = self._merged(transitions, self.frames.feed(frames[i]))
            entries, self.logged, self.closed = _entries(
                transitions, self.logged, self.closed, self.tracker.next_window
            )
            out.extend(entries)
        return out

    def finish(self) -> list[LogEntry]:
        transitions = self.tracker.finish()
        if self.frames is not None:
            transitions = self._merged(transitions, self.frames.finish())
        entries, self.logged, self.closed = _entries(
            transitions, self.logged, self.closed, self.tracker.next_window
        )
        return entries

    def _merged(
        self, yamnet: list[EventTransition], custom: list[tuple[str, EventTransition]]
    ) -> list[EventTransition]:
        numbering = self._numbering
        assert numbering is not None
        out = [numbering.renumber(_YAMNET_SOURCE, t) for t in yamnet]
        out.extend(numbering.renumber(source, t) for source, t in custom)
        return out

    def state_json(self) -> str:
        state: dict[str, Any] = {
            "tracker": self.tracker.state(),
            "logged": self.logged,
            "closed": self.closed,
        }
        if self.frames is not None and self._numbering is not None:
            state["frames"] = self.frames.state()
            state["numbering"] = self._numbering.state()
        return json.dumps(state, separators=(",", ":"))


def replay_log(
    probabilities: Iterable[npt.NDArray[np.float64]], rules: EventRules, finished: bool
) -> list[LogEntry]:
    """The whole log the rules give on stored windows (per-request parameters)."""
    log = SessionEventLog(EventTracker(rules, report_updates=False))
    entries: list[LogEntry] = []
    for row in probabilities:
        entries.extend(log.feed(row[None, :]))
    if finished:
        entries.extend(log.finish())
    return entries
