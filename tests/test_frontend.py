"""YAMNet's log-mel frontend: known signals, counts, and streaming equal to offline."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.yamnet.frontend import (
    PatchWindower,
    StreamingLogMel,
    log_mel_frames,
    mel_weight_matrix,
    patches_offline,
    quantize_patches,
)
from models.yamnet.spec import FRONTEND

RATE = FRONTEND.sample_rate_hz


def hz_to_mel(freq_hz: float) -> float:
    return 1127.0 * np.log1p(freq_hz / 700.0)


def tone(freq_hz: float, seconds: float) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * freq_hz * np.arange(int(seconds * RATE)) / RATE)


@pytest.mark.parametrize("freq_hz", [250.0, 1000.0, 3000.0, 6000.0])
def test_a_tone_peaks_in_its_mel_band(freq_hz: float) -> None:
    frames = log_mel_frames(tone(freq_hz, 1.0))
    band = int(np.argmax(frames.mean(axis=0)))
    # band centres are evenly spaced in HTK mel between 125 and 7500 Hz
    edges = np.linspace(hz_to_mel(125.0), hz_to_mel(7500.0), FRONTEND.mel_bands + 2)
    expected = int(np.argmin(np.abs(edges[1:-1] - hz_to_mel(freq_hz))))
    assert abs(band - expected) <= 1


def test_filterbank_shape_and_coverage() -> None:
    weights = mel_weight_matrix()
    assert weights.shape == (257, 64)
    assert np.all(weights[0] == 0)  # DC is never counted
    bin_hz = np.linspace(0, RATE / 2, 257)
    assert np.all(weights[bin_hz < 125.0] == 0) and np.all(weights[bin_hz > 7500.0] == 0)
    assert np.all(weights.max(axis=0) > 0.5)  # every band has a peak
    assert np.all(weights <= 1.0)


@pytest.mark.parametrize(
    ("samples", "frames", "patches_hop_50"),
    [
        (399, 0, 0),
        (400, 1, 0),
        (559, 1, 0),
        (560, 2, 0),
        (15_599, 95, 0),
        (15_600, 96, 1),
        (23_599, 145, 1),
        (23_600, 146, 2),
        (160_000, 998, 19),
    ],
)
def test_frame_and_patch_counts(samples: int, frames: int, patches_hop_50: int) -> None:
    audio = np.zeros(samples)
    assert log_mel_frames(audio).shape == (frames, 64)
    assert patches_offline(audio, 50).shape[0] == patches_hop_50


def test_silence_is_the_log_offset() -> None:
    frames = log_mel_frames(np.zeros(16_000))
    assert np.allclose(frames, np.log(FRONTEND.log_offset))


def test_window_geometry() -> None:
    assert FRONTEND.patch_samples == 15_600
    assert FRONTEND.window_seconds == 0.975
    assert FRONTEND.hop_frames(0.5) == 50 and FRONTEND.hop_frames(1.0) == 100
    with pytest.raises(ValueError):
        FRONTEND.hop_frames(0.333)


def test_quantisation_rounds_and_clips() -> None:
    patches = np.array([[-100.0, 0.0, 0.024, 0.025, 0.03, 100.0]])
    # round half to even, as ONNX QuantizeLinear does: 0.025 / 0.05 = 0.5 rounds to 0
    assert quantize_patches(patches, 0.05, 144).tolist() == [[0, 144, 144, 144, 145, 255]]


def stream(audio: np.ndarray, cuts: list[int], hop_frames: int) -> list[np.ndarray]:
    frontend, windower = StreamingLogMel(), PatchWindower(hop_frames)
    patches = []
    start = 0
    for cut in [*sorted(cuts), len(audio)]:
        patches += windower.push(frontend.push(audio[start:cut]))
        start = cut
    return [p.frames for p in patches]


@settings(max_examples=40, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=48_000), max_size=30),
    hop_frames=st.sampled_from([50, 100]),
)
def test_any_chunking_gives_the_offline_patches_bit_for_bit(
    cuts: list[int], hop_frames: int
) -> None:
    rng = np.random.default_rng(7)
    audio = rng.normal(0, 0.2, 48_000) + tone(440.0, 3.0)
    offline = patches_offline(audio, hop_frames)
    streamed = stream(audio, cuts, hop_frames)
    assert len(streamed) == len(offline)
    for a, b in zip(streamed, offline, strict=True):
        assert np.array_equal(a, b)


def test_one_sample_at_a_time_equals_offline() -> None:
    audio = tone(1000.0, 2.0)
    streamed = stream(audio, list(range(1, len(audio))), 50)
    offline = patches_offline(audio, 50)
    assert len(streamed) == 3 and all(
        np.array_equal(a, b) for a, b in zip(streamed, offline, strict=True)
    )
