"""The event rules (server/events.py) and the event benchmark's scoring."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.events_quality import Interval, boundary_errors, matched_count, score
from server.events import EventRules, EventTracker, derive_events

LABELS = ("Dog", "Cat", "Silence")
LOW, HIGH = 0.05, 0.95


def _rules(**kwargs: object) -> EventRules:
    return EventRules.build(LABELS, np.full(len(LABELS), 0.5), **kwargs)  # type: ignore[arg-type]


def _windows(dog: list[int], cat: list[int] | None = None) -> np.ndarray:
    rows = np.full((len(dog), len(LABELS)), LOW)
    rows[:, 0] = [HIGH if on else LOW for on in dog]
    if cat is not None:
        rows[:, 1] = [HIGH if on else LOW for on in cat]
    return rows


def test_naive_rule_uses_window_edges_and_merges_gaps() -> None:
    rows = _windows([0, 1, 1, 0, 1, 0, 0, 0, 0, 1])
    events = derive_events(rows, _rules(boundary="naive", merge_window_ms=0))
    assert [(e.start_time_s, e.end_time_s) for e in events] == [
        (0.5, 1.975),
        (2.0, 2.975),
        (4.5, 5.475),
    ]
    merged = derive_events(rows, _rules(boundary="naive", merge_window_ms=600))
    assert [(e.start_time_s, e.end_time_s) for e in merged] == [(0.5, 2.975), (4.5, 5.475)]


def test_refined_boundaries_interpolate_between_window_centres() -> None:
    # Symmetric logits around the threshold: the crossing is halfway between the centres.
    rows = _windows([0, 1, 1, 0])
    (event,) = derive_events(rows, _rules(merge_window_ms=0, onset_fill=0.5, offset_fill=0.5))
    assert event.start_time_s == pytest.approx(0.25 + 0.4875, abs=1e-3)
    assert event.end_time_s == pytest.approx(1.25 + 0.4875, abs=1e-3)
    assert event.confidence == HIGH


def test_min_duration_drops_short_events_and_silence_is_never_an_event() -> None:
    rows = _windows([0, 1, 0, 0, 1, 1, 1, 0])
    rows[:, 2] = HIGH
    events = derive_events(rows, _rules(merge_window_ms=0, min_duration_ms=800))
    assert [e.tag for e in events] == ["Dog"]
    assert events[0].start_time_s > 1.5


def test_per_tag_overrides() -> None:
    rows = _windows([1, 0, 1, 0, 0, 0], cat=[1, 0, 1, 0, 0, 0])
    events = derive_events(
        rows,
        _rules(boundary="naive", merge_window_ms=0, tag_merge_window_ms={"Cat": 600}),
    )
    assert sorted((e.tag, e.start_time_s, e.end_time_s) for e in events) == [
        ("Cat", 0.0, 1.975),
        ("Dog", 0.0, 0.975),
        ("Dog", 1.0, 1.975),
    ]
    assert derive_events(rows, _rules(tag_threshold={"Dog": 0.99}, tag_merge_window_ms={})) != []
    assert all(e.tag == "Cat" for e in derive_events(rows, _rules(tag_threshold={"Dog": 0.99})))
    with pytest.raises(ValueError, match="unknown tag"):
        _rules(tag_threshold={"Unicorn": 0.5})


def test_open_is_reported_once_certain_and_close_once() -> None:
    tracker = EventTracker(_rules(merge_window_ms=0, min_duration_ms=1000))
    assert tracker.feed(_windows([0, 1, 1])) == []  # not yet certain to last 1 s
    opened = tracker.feed(_windows([1, 1]))
    assert [t.kind for t in opened] == ["open", "update"]
    assert tracker.open_events() == [opened[-1].event]
    closing = tracker.feed(_windows([0, 0]))
    assert [t.kind for t in closing][-1] == "close"
    assert tracker.finish() == []


_PROBABILITY = st.sampled_from([0.01, 0.2, 0.45, 0.55, 0.8, 0.99])


@st.composite
def _streams(draw: st.DrawFn) -> tuple[np.ndarray, list[int], dict[str, object]]:
    count = draw(st.integers(0, 40))
    flat = draw(st.lists(_PROBABILITY, min_size=count * 3, max_size=count * 3))
    rows = np.array(flat, dtype=np.float64).reshape(count, 3)
    cuts = sorted(draw(st.lists(st.integers(0, count), max_size=6)))
    params = {
        "merge_window_ms": draw(st.sampled_from([0, 250, 500, 1500])),
        "min_duration_ms": draw(st.sampled_from([0, 500, 1000, 2500])),
        "boundary": draw(st.sampled_from(["refined", "naive"])),
        "onset_fill": draw(st.sampled_from([0.1, 0.5, 0.9])),
        "offset_fill": draw(st.sampled_from([0.1, 0.5, 0.9])),
    }
    return rows, cuts, params


@settings(max_examples=300, deadline=None)
@given(_streams())
def test_any_split_gives_the_same_transitions_and_a_consistent_story(
    stream: tuple[np.ndarray, list[int], dict[str, object]],
) -> None:
    rows, cuts, params = stream
    rules = _rules(**params)
    whole = EventTracker(rules)
    expected = whole.feed(rows) + whole.finish()
    split = EventTracker(rules)
    got = []
    for start, stop in zip([0, *cuts], [*cuts, len(rows)], strict=True):
        got += split.feed(rows[start:stop])
    got += split.finish()
    assert got == expected

    seen: dict[int, object] = {}
    closed: set[int] = set()
    for transition in expected:
        event = transition.event
        assert event.event_id not in closed
        if transition.kind == "open":
            assert event.event_id not in seen
        else:
            previous = seen[event.event_id]
            assert previous.start_time_s == event.start_time_s  # type: ignore[attr-defined]
            assert previous.end_time_s <= event.end_time_s  # type: ignore[attr-defined]
            assert previous.confidence <= event.confidence  # type: ignore[attr-defined]
        if transition.kind == "close":
            closed.add(event.event_id)
            assert event.end_time_s - event.start_time_s >= rules.min_duration_s[0] - 1e-3
        seen[event.event_id] = event
    assert closed == set(seen)
    assert all(event.tag != "Silence" for event in (t.event for t in expected))
    ends: dict[str, float] = {}
    for event in derive_events(rows, rules):
        if event.tag in ends:
            assert event.start_time_s - ends[event.tag] > rules.merge_window_s[0] - 1e-3
        ends[event.tag] = event.end_time_s


def test_benchmark_scoring_follows_the_collars() -> None:
    long_ref = Interval("Dog", 10.0, 15.0)  # offset collar: 20 % of 5 s = 1 s
    short_ref = Interval("Cat", 2.0, 2.5)  # offset collar: 200 ms
    assert matched_count([long_ref], [Interval("Dog", 10.2, 14.0)]) == 1
    assert matched_count([long_ref], [Interval("Dog", 10.21, 15.0)]) == 0  # onset outside
    assert matched_count([long_ref], [Interval("Dog", 10.0, 13.9)]) == 0  # offset outside
    assert matched_count([long_ref], [Interval("Cat", 10.0, 15.0)]) == 0  # wrong tag
    assert matched_count([short_ref], [Interval("Cat", 1.9, 2.7)]) == 1
    assert matched_count([short_ref], [Interval("Cat", 1.9, 2.8)]) == 0
    # One to one: two detections cannot both match one reference; the matching is maximal.
    refs = [Interval("Dog", 0.0, 1.0), Interval("Dog", 0.15, 1.1)]
    ests = [Interval("Dog", 0.1, 1.05), Interval("Dog", -0.1, 0.9)]
    assert matched_count(refs, ests) == 2
    assert matched_count(refs[:1], ests) == 1
    onsets, offsets, missed = boundary_errors(
        [long_ref, short_ref], [Interval("Dog", 9.0, 10.5), Interval("Dog", 10.4, 16.0)]
    )
    assert (onsets, offsets, missed) == (
        [pytest.approx(0.4)],
        [pytest.approx(1.0)],
        1,
    )
    result = score([([long_ref, short_ref], [Interval("Dog", 10.1, 15.1)])])
    assert (result["precision"], result["recall"], result["f1"]) == (1.0, 0.5, 0.667)
    assert (result["onset_ms_p50"], result["offset_ms_p50"], result["no_overlap"]) == (100, 100, 1)


# -- the session event log: restore after a crash, entries per window ----------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.0, 1.0), min_size=8, max_size=40),
    st.lists(st.floats(0.0, 1.0), min_size=8, max_size=40),
    st.integers(0, 40),
    st.sampled_from(["refined", "naive"]),
)
def test_a_restored_log_carries_on_exactly(
    dog: list[float], cat: list[float], cut: int, boundary: str
) -> None:
    """Stopping after any window, saving the state (as JSON) and restoring it with the last
    window's probabilities gives the same entries as never stopping."""
    from server.event_log import SessionEventLog

    n = min(len(dog), len(cat))
    rows = np.full((n, len(LABELS)), LOW)
    rows[:, 0], rows[:, 1] = dog[:n], cat[:n]
    cut = min(cut, n)
    rules = _rules(merge_window_ms=700, min_duration_ms=300, boundary=boundary)
    whole = SessionEventLog.restore(rules, None, None)
    expected = whole.feed(rows) + whole.finish()
    first = SessionEventLog.restore(rules, None, None)
    got: list = []
    stored = None  # what the store holds: the last state the log asked to store
    for row in rows[:cut]:  # one window a batch, as live streams are fed
        got += first.feed(row[None, :])
        stored = first.state_to_store() or stored
    resumed = SessionEventLog.restore(
        rules, stored, rows[cut - 1] if cut else None, windows_stored=cut
    )
    got += resumed.feed(rows[cut:]) + resumed.finish()
    assert got == expected
    seen = [(entry.event.id, entry.event.state) for entry in expected]
    assert len(seen) == len(set(seen))
    assert [entry.seq for entry in expected] == list(range(len(expected)))
    closed = [entry for entry in expected if entry.event.state == "closed"]
    assert [entry.kind_seq for entry in closed] == list(range(len(closed)))
    assert [e.event.id for e in closed] == sorted(e.event.id for e in closed) or len(LABELS) > 1


def test_an_event_complete_when_first_reported_is_logged_closed_only() -> None:
    from server.event_log import SessionEventLog

    log = SessionEventLog.restore(_rules(merge_window_ms=0, min_duration_ms=1500), None, None)
    # a run still passing at the end reaches the minimum only when finish() fixes its end
    assert log.feed(_windows([0, 1, 1, 1])) == []
    entries = log.finish()
    assert [(e.event.state, e.windows) for e in entries] == [("closed", 4)]
    # a long one opens while it lasts, then closes
    log = SessionEventLog.restore(_rules(merge_window_ms=0, min_duration_ms=500), None, None)
    entries = log.feed(_windows([0, 1, 1, 1, 1, 0, 0]))
    assert [e.event.state for e in entries] == ["open", "closed"]
    assert entries[0].windows < entries[1].windows
