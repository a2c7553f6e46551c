"""Custom detectors on a stream give the offline answer whatever the chunking: frame features,
head probabilities, window frames and frame-level events (``server.detectors``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.heads.features import LOG_MEL, WITH_SAMPLE_FEATURES, frame_features
from models.heads.metrics import EventRule, frames_to_events
from server.detectors.feature_stream import FeatureStream
from server.detectors.frame_events import FrameEventTracker
from server.detectors.head_batch import HeadSegment, plan_calls, run_segments
from server.detectors.live import DetectorModel, SessionDetectors, fed_frames
from server.runner import HeadRunner, load_head_runner
from tests.detector_fixtures import click_and_pause_audio, tiny_head_onnx

# Frames recomputed over a sliding buffer are the same numbers as on the whole stream up to the
# float32 rounding of BLAS products of other sizes (measured max |diff| ~1e-6 on log values).
FEATURE_ATOL = 1e-4
PROBABILITY_ATOL = 1e-5


def _cuts(rng: np.random.Generator, total: int, mean: int) -> list[int]:
    cuts, at = [], 0
    while at < total:
        at = min(total, at + int(rng.integers(1, 2 * mean)))
        cuts.append(at)
    return cuts


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    samples, _ = click_and_pause_audio(4.0, [0.7, 2.31], [1.4], seed=3)
    return samples


@pytest.fixture(scope="module")
def runner() -> HeadRunner:
    return load_head_runner(tiny_head_onnx())


@pytest.mark.parametrize("spec", [LOG_MEL, WITH_SAMPLE_FEATURES], ids=lambda s: s.name)
@pytest.mark.parametrize("mean_chunk", [37, 800, 8000])
def test_streamed_features_are_the_offline_features(
    audio: np.ndarray, spec: object, mean_chunk: int
) -> None:
    offline = frame_features(spec, samples=audio)  # type: ignore[arg-type]
    stream = FeatureStream(spec)  # type: ignore[arg-type]
    parts, at = [], 0
    for cut in _cuts(np.random.default_rng(mean_chunk), audio.shape[0], mean_chunk):
        first, frames = stream.push(audio[at:cut], at)
        assert first == sum(p.shape[0] for p in parts)
        parts.append(frames)
        at = cut
    parts.append(stream.finish()[1])
    streamed = np.concatenate(parts)
    assert streamed.shape == offline.shape
    np.testing.assert_allclose(streamed, offline, atol=FEATURE_ATOL, rtol=0)


def test_a_resumed_feature_stream_starts_where_asked(audio: np.ndarray) -> None:
    offline = frame_features(WITH_SAMPLE_FEATURES, samples=audio)
    stream = FeatureStream(WITH_SAMPLE_FEATURES, first_frame=120)
    start = 8000  # a replay from an earlier chunk boundary: what is not needed is dropped
    first, frames = stream.push(audio[start:], start)
    rest = stream.finish()[1]
    assert first == 120
    np.testing.assert_allclose(np.concatenate([frames, rest]), offline[120:], atol=FEATURE_ATOL)


def _stream_detectors(
    runner: HeadRunner, audio: np.ndarray, cuts: list[int], resume_window: int = 0
) -> tuple[list[np.ndarray], dict[int, list[tuple[str, float]]]]:
    """Run SessionDetectors as the engine does (without the batcher); every window's frames
    and tags."""
    detectors = SessionDetectors([DetectorModel("m", runner)], 50, resume_window=resume_window)
    windows = 1 + max(0, -(-(audio.shape[0] - 15600) // 8000))
    frames: list[np.ndarray] = []
    tags: dict[int, list[tuple[str, float]]] = {}
    fed = detectors.first_fed_frame
    at, held = 0, resume_window
    if resume_window:
        at = resume_window * 8000 - detectors.lookback_samples

    def collect() -> None:
        nonlocal fed
        released = detectors.release()
        if released is None:
            return
        for i, (window_tags, window_frames) in enumerate(
            zip(released.tags, released.frames, strict=True)
        ):
            first, probabilities = window_frames[0]
            assert first <= fed
            frames.append(probabilities[fed - first :])
            fed = first + probabilities.shape[0]
            tags[released.first_index + i] = window_tags

    for cut in [c for c in cuts if c > at]:
        for i, segment in enumerate(detectors.advance(audio[at:cut], at)):
            if segment is not None:
                detectors.accept(i, run_segments(runner, [segment])[0])
        at = cut
        complete = max(0, (cut - 15600) // 8000 + 1)
        while held < complete:
            detectors.hold(held, np.zeros((1, 3), np.float32))
            held += 1
        collect()
    for i, segment in enumerate(detectors.advance(None, at, final=True)):
        if segment is not None:
            detectors.accept(i, run_segments(runner, [segment])[0])
    detectors.mark_finished()
    while held < windows:
        detectors.hold(held, np.zeros((1, 3), np.float32))
        held += 1
    collect()
    assert detectors.held == 0
    return frames, tags


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(min_value=1, max_value=20_000), st.integers(0, 2**31))
def test_streamed_probabilities_and_window_tags_are_offline(
    audio: np.ndarray, runner: HeadRunner, mean_chunk: int, seed: int
) -> None:
    offline = runner.run(frame_features(runner.spec, samples=audio))
    cuts = _cuts(np.random.default_rng(seed), audio.shape[0], mean_chunk)
    frames, tags = _stream_detectors(runner, audio, cuts)
    streamed = np.concatenate(frames)
    assert streamed.shape == offline.shape
    np.testing.assert_allclose(streamed, offline, atol=PROBABILITY_ATOL, rtol=0)
    for index, window_tags in tags.items():
        span = offline[index * 50 : index * 50 + 96]
        best = span.max(axis=0)
        expected = {
            name: round(float(p), 4)
            for name, rule, p in zip(runner.artifact_types, runner.rules, best, strict=True)
            if p > rule.threshold
        }
        assert dict(window_tags) == pytest.approx(expected, abs=1e-4)


def test_a_resumed_session_recomputes_the_same_frames(
    audio: np.ndarray, runner: HeadRunner
) -> None:
    offline = runner.run(frame_features(runner.spec, samples=audio))
    cuts = list(range(8000, audio.shape[0] + 8000, 8000))
    frames, _ = _stream_detectors(runner, audio, cuts, resume_window=3)
    streamed = np.concatenate(frames)
    first = fed_frames(3, 50)
    np.testing.assert_allclose(streamed, offline[first:], atol=PROBABILITY_ATOL, rtol=0)


def test_segments_of_several_sessions_in_one_call_are_their_own_answers(
    runner: HeadRunner,
) -> None:
    rng = np.random.default_rng(0)
    reach = runner.context_frames
    segments = []
    for n, (before, after) in enumerate(
        [(True, False), (False, False), (False, False), (False, True), (True, True), (True, False)]
    ):
        features = rng.normal(size=(40 + 7 * n, runner.spec.width)).astype(np.float32)
        keep_from = 0 if before else reach
        keep_to = features.shape[0] if after else features.shape[0] - reach
        segments.append(HeadSegment(features, keep_from, keep_to - keep_from, before, after))
    calls = plan_calls(segments)
    assert sorted(i for call in calls for i in call) == list(range(len(segments)))
    assert len(calls) == 3  # [0, 1, 2, 3], [5], [4]
    together = run_segments(runner, segments)
    for segment, probabilities in zip(segments, together, strict=True):
        alone = runner.run(segment.features)
        expected = alone[segment.keep_from : segment.keep_from + segment.keep_count]
        np.testing.assert_allclose(probabilities, expected, atol=1e-6)


_RULES = st.builds(
    EventRule,
    threshold=st.sampled_from([0.3, 0.5, 0.8]),
    merge_window_ms=st.sampled_from([0.0, 10.0, 20.0, 45.0, 200.0]),
    min_duration_ms=st.sampled_from([0.0, 10.0, 30.0, 100.0]),
    onset_shift_ms=st.sampled_from([0.0, 8.0, -6.5]),
    offset_shift_ms=st.sampled_from([0.0, -8.5, 12.0]),
)


@settings(max_examples=300, deadline=None)
@given(
    _RULES,
    st.lists(st.sampled_from([0.0, 0.2, 0.4, 0.6, 0.9, 1.0]), max_size=120),
    st.lists(st.integers(1, 30), max_size=30),
)
def test_the_frame_tracker_is_frames_to_events_whatever_the_chunking(
    rule: EventRule, probabilities: list[float], chunks: list[int]
) -> None:
    expected = [
        (round(float(s) / 1000, 3), round(float(e) / 1000, 3), round(float(c), 4))
        for s, e, c in frames_to_events(probabilities, rule)
    ]
    tracker = FrameEventTracker("x", rule)
    transitions, at = [], 0
    for size in [*chunks, len(probabilities)]:
        transitions += tracker.feed(np.asarray(probabilities[at : at + size]))
        at = min(len(probabilities), at + size)
        state = tracker.state()  # a restart between any two chunks carries on the same
        tracker = FrameEventTracker.restore("x", rule, state)
    transitions += tracker.finish()
    closed = [t.event for t in transitions if t.kind == "close"]
    assert [(e.start_time_s, e.end_time_s, e.confidence) for e in closed] == expected
    opened = {t.event.event_id: t.event for t in transitions if t.kind == "open"}
    assert sorted(opened) == [e.event_id for e in closed] == list(range(len(closed)))
    for event in closed:  # an open entry's start is final and its end a lower bound
        assert opened[event.event_id].start_time_s == event.start_time_s
        assert opened[event.event_id].end_time_s <= event.end_time_s
