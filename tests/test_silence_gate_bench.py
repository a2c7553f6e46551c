"""The silence-gate benchmark's accounting: levels, scene layout, and what counts as a skipped
window, a changed window and a missed event. The benchmark's figures in RESULTS.md rest on
these; the real-audio run itself needs the Debian packages and is not part of the suite."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.silence_gate import (
    RATE,
    Analysed,
    Event,
    active_level_dbfs,
    build_scene,
    evaluate,
    pink_noise,
)
from models.yamnet.calibrate import Clip
from server.tagging import Tagger


def _tone(seconds: float, amplitude: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_active_level_ignores_the_silence_around_a_sound() -> None:
    sound = np.concatenate([np.zeros(3 * RATE, np.float32), _tone(1.0, 0.1), np.zeros(RATE)])
    assert active_level_dbfs(sound) == pytest.approx(10 * np.log10(0.1**2 / 2), abs=0.05)


def test_pink_noise_has_the_requested_power_and_falls_with_frequency() -> None:
    noise = pink_noise(10 * RATE, -60.0, np.random.default_rng(0))
    assert 10 * np.log10(np.mean(noise.astype(np.float64) ** 2)) == pytest.approx(-60.0, abs=0.01)
    power = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(noise.size, 1 / RATE)
    low = power[(freqs > 100) & (freqs < 200)].mean()
    high = power[(freqs > 3200) & (freqs < 6400)].mean()
    # 1/f: 4.5 octaves between the bands' centres, 3 dB each
    assert 10 * np.log10(low / high) == pytest.approx(13.5, abs=1.5)


def test_scene_places_each_clip_at_its_time_and_level() -> None:
    clips = [
        Clip("a", _tone(1.0, 0.5), frozenset({"Speech"}), frozenset()),
        Clip("b", _tone(2.0, 0.01), frozenset({"Dog"}), frozenset()),
    ]
    scene, events = build_scene(clips, (-30.0, -20.0), seed=3)
    assert sorted(e.source for e in events) == ["a", "b"]
    for event in events:
        start, end = round(event.start_s * RATE), round(event.end_s * RATE)
        assert not scene[start - 2 * RATE : start].any()  # at least 2 s of pause before
        assert -30.0 <= event.level_dbfs <= -20.0
        assert active_level_dbfs(scene[start:end]) == pytest.approx(event.level_dbfs, abs=0.05)


def test_a_gate_is_scored_by_skipped_windows_changed_tags_and_missed_events() -> None:
    labels = ["Silence", "Speech", "Dog"]
    tagger = Tagger(labels)  # thresholds at probability 0.5
    silence = np.array([0.9, 0.1, 0.1], np.float32)  # digital silence: no reportable tag
    probabilities = np.array(
        [
            [0.9, 0.1, 0.1],  # window 0: pause
            [0.1, 0.1, 0.6],  # window 1: the dog, quietly
            [0.1, 0.1, 0.9],  # window 2: the dog, louder
            [0.1, 0.1, 0.2],  # window 3: the dog's tail, not tagged
            [0.9, 0.1, 0.1],  # windows 4, 5: pause
            [0.9, 0.1, 0.1],
        ],
        dtype=np.float32,
    )
    levels = np.array([-120.0, -65.0, -48.0, -70.0, -120.0, -120.0])
    events = [Event("dog", frozenset({"Dog"}), 1.0, 1.9, -50.0)]  # overlaps windows 1-3
    analysed = Analysed(levels, probabilities, model_s=0.0)
    by_gate = {
        row["threshold_dbfs"]: row
        for row in evaluate(analysed, silence, events, tagger, [-90, -50, -45])
    }
    assert by_gate[-90]["windows_skipped"] == 3  # the digital silence only
    assert by_gate[-90]["windows_changed"] == 0
    assert by_gate[-50]["windows_skipped"] == 5
    assert by_gate[-50]["windows_changed"] == 1  # window 1 lost its tag...
    assert by_gate[-50]["events_missed"] == 0  # ...but window 2 still reports the dog
    assert by_gate[-45]["events_missed"] == 1
    assert by_gate[-45]["missed"] == ["dog"]
    for row in by_gate.values():
        assert row["events_detected_ungated"] == 1
        assert row["pause_windows"] == 3  # windows 0, 4 and 5 do not overlap 1.0-1.9 s
