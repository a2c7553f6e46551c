"""The calibrated per-class thresholds: the committed CSV is complete, in model order and on the
model's grid midpoints, and with the real model it still tags speech and nothing else."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.yamnet.calibrate import choose_threshold
from models.yamnet.frontend import patches_offline, quantize_patches
from models.yamnet.labels import CLASS_COUNT, load_labels
from models.yamnet.offline import OfflineModel
from models.yamnet.spec import FRONTEND, WEIGHTS_DIR
from models.yamnet.thresholds import (
    DEFAULT_THRESHOLD_LOGIT,
    OUTPUT_SCALE,
    THRESHOLDS_PATH,
    load_thresholds,
)
from server.runner import OnnxRunner
from server.tagging import OTHERS, Tagger
from tests.conftest import SAMPLE_RATE_HZ, tone

HOP_FRAMES = 50  # 0.5 s windows hop, as the server's default


@pytest.fixture(scope="module")
def runner() -> OnnxRunner:
    return OnnxRunner(WEIGHTS_DIR / "model.onnx")


@pytest.fixture(scope="module")
def tagger() -> Tagger:
    return Tagger(load_labels(), base_threshold_logit=load_thresholds())


def _tags(runner: OnnxRunner, tagger: Tagger, samples: np.ndarray) -> list[set[str]]:
    patches = quantize_patches(
        patches_offline(samples, HOP_FRAMES),
        runner.input_quant.scale,
        runner.input_quant.zero_point,
    )
    windows = tagger.tags(runner.run(patches), tagger.thresholds(0))
    return [{name for name, _ in window} for window in windows]


def test_csv_has_one_row_per_class_in_model_order() -> None:
    with THRESHOLDS_PATH.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == CLASS_COUNT
    assert [int(row["index"]) for row in rows] == list(range(CLASS_COUNT))
    assert tuple(row["display_name"] for row in rows) == load_labels()
    assert all(int(row["positive_clips"]) >= 0 for row in rows)


def test_thresholds_are_finite_grid_midpoints(runner: OnnxRunner) -> None:
    thresholds = load_thresholds()
    assert thresholds.shape == (CLASS_COUNT,)
    assert np.all(np.isfinite(thresholds))
    assert runner.output_quant.scale == pytest.approx(OUTPUT_SCALE)
    steps = thresholds / runner.output_quant.scale - 0.5
    assert np.allclose(steps, np.round(steps), atol=1e-4)
    # Classes without evidence keep the default: exactly what probability > 0.5 passed.
    assert np.count_nonzero(~np.isclose(thresholds, DEFAULT_THRESHOLD_LOGIT, atol=1e-6)) < 50
    labels = load_labels()
    assert thresholds[labels.index("Siren")] == pytest.approx(DEFAULT_THRESHOLD_LOGIT, abs=1e-6)


def test_loading_thresholds_imports_no_set_up_code() -> None:
    code = (
        "import sys; from models.yamnet.thresholds import load_thresholds; load_thresholds(); "
        "heavy = {'onnxruntime', 'onnx', 'av', 'models.yamnet.calibrate'} & set(sys.modules); "
        "sys.exit(f'imported {sorted(heavy)}' if heavy else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_the_calibration_sees_what_the_runner_sees(runner: OnnxRunner) -> None:
    """The calibration runs the model through ``models.yamnet.offline``, not the server's
    runner: same probabilities, and its uint8 codes are the runner's probabilities' grid."""
    t = np.arange(3 * SAMPLE_RATE_HZ) / SAMPLE_RATE_HZ
    chirp = 0.5 * np.sin(2 * np.pi * (200.0 * t + 600.0 * t**2))
    noise = np.random.default_rng(5).normal(0.0, 0.1, t.size)
    signal = np.concatenate([tone(440.0, 2.0), chirp, noise, np.zeros(8000)]).astype(np.float32)
    patches = patches_offline(signal, HOP_FRAMES)
    model = OfflineModel(WEIGHTS_DIR / "model.onnx")
    probabilities = runner.run(
        quantize_patches(patches, runner.input_quant.scale, runner.input_quant.zero_point)
    )
    np.testing.assert_array_equal(model.probabilities(patches), probabilities)
    raw = model.raw(patches)
    assert raw.dtype == np.uint8
    # Around every threshold the calibration can choose, the codes are what the probabilities
    # round-trip to (float32 probabilities saturate only far out, beyond any threshold).
    with np.errstate(divide="ignore"):
        logits = np.log(probabilities.astype(np.float64)) - np.log1p(-probabilities)
    codes = np.rint(logits / runner.output_quant.scale) + runner.output_quant.zero_point
    near = np.abs(raw.astype(np.int64) - runner.output_quant.zero_point) <= 10
    assert near.any()
    np.testing.assert_array_equal(codes[near], raw[near])


def test_missing_rows_are_an_error(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.csv"
    path.write_text("index,display_name,threshold_logit,positive_clips,negative_clips\n")
    with pytest.raises(ValueError, match="rows"):
        load_thresholds(path)


def test_choose_threshold_prefers_f1_and_guards_lowering() -> None:
    default_q = 190.5
    positives = np.array([195, 196, 197, 189, 189], dtype=np.int64)
    negatives = np.array([150, 160, 170, 180, 189], dtype=np.int64)
    # Lowering to 188.5 catches every positive but lets a negative through (precision 5/6).
    assert choose_threshold(positives, negatives, default_q) == default_q
    clean = np.array([150, 160, 170, 180, 185], dtype=np.int64)
    assert choose_threshold(positives, clean, default_q) == 188.5
    noisy = np.array([150, 194, 194, 193, 160], dtype=np.int64)
    assert choose_threshold(positives, noisy, default_q) == 194.5


def test_speech_is_tagged_at_sensitivity_zero(
    runner: OnnxRunner, tagger: Tagger, speech_16k: np.ndarray
) -> None:
    windows = _tags(runner, tagger, speech_16k)
    assert sum("Speech" in window for window in windows) >= len(windows) // 2


def test_tone_is_not_speech_and_silence_is_nothing(runner: OnnxRunner, tagger: Tagger) -> None:
    seconds = 3.0
    assert not any("Speech" in window for window in _tags(runner, tagger, tone(1000.0, seconds)))
    silence = np.zeros(int(seconds * SAMPLE_RATE_HZ), dtype=np.float32)
    windows = _tags(runner, tagger, silence)
    assert len(windows) == 1 + int((seconds * SAMPLE_RATE_HZ - FRONTEND.patch_samples) // 8000)
    assert all(window == {OTHERS} for window in windows)
