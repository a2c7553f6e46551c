"""The trainable head: data shaping, a tiny training run, ONNX parity, metrics, config."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from models.heads.config import ConfigError, TrainingConfig
from models.heads.data import (
    AnnotatedFile,
    Annotation,
    build_examples,
    frame_targets,
    split_by_file,
)
from models.heads.export import INPUT_NAME, export_onnx, read_metadata
from models.heads.features import LOG_MEL, WITH_SAMPLE_FEATURES, frame_features, sample_features
from models.heads.metrics import (
    EventRule,
    average_precision,
    boundary_shifts,
    choose_threshold,
    frames_to_events,
    match_events,
    score_events,
)
from models.heads.network import Architecture, forward, init_weights
from models.heads.training import TrainedHead, TrainingCanceled, train_head

RATE = 16_000


def _noise(seconds: float, seed: int, level: float = 0.01) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (level * rng.standard_normal(int(seconds * RATE))).astype(np.float32)


def _clicky_files(count: int, seed: int = 0) -> list[AnnotatedFile]:
    """Noise with 2 ms clicks at known places: trivially separable for a head."""
    rng = np.random.default_rng(seed)
    files = []
    for i in range(count):
        samples = _noise(2.0, seed * 100 + i)
        annotations = []
        if i % 4 != 3:  # every fourth file is clean: background only
            for at in rng.choice(np.arange(2000, 30000, 2500), size=3, replace=False):
                samples[at : at + 32] += 0.3 * rng.choice([-1.0, 1.0])
                annotations.append(("glitch", at / 16, (at + 32) / 16))
        files.append(AnnotatedFile.build(f"f{i}", annotations, samples=samples))
    return files


# -- data --------------------------------------------------------------------------------------


def test_a_one_ms_click_marks_its_cell_and_grazed_cells_are_left_out() -> None:
    targets, weights = frame_targets(
        [Annotation("glitch", 100.0, 101.0), Annotation("long_pause", 200.0, 260.0)],
        ["glitch", "long_pause"],
        40,
        WITH_SAMPLE_FEATURES,
    )
    # cell i spans [7.5 + 10 i, 17.5 + 10 i) ms: 100-101 ms lies in cell 9
    assert np.flatnonzero(targets[:, 0]).tolist() == [9]
    # 200-260 ms covers cells 20..24 fully or by half; cell 19 (197.5-207.5) holds 7.5 ms
    assert np.flatnonzero(targets[:, 1]).tolist() == [19, 20, 21, 22, 23, 24]
    assert weights[25, 1] == 0.0  # 257.5-267.5: only 2.5 ms inside, left out of the loss
    assert weights[30, 1] == 1.0 and targets[30, 1] == 0.0


def test_files_without_an_annotation_of_a_type_are_background_for_it() -> None:
    files = _clicky_files(4)
    examples = build_examples(files, ["glitch", "long_pause"], WITH_SAMPLE_FEATURES)
    clean = examples[3]
    assert clean.targets.sum() == 0 and clean.weights.min() == 1.0
    assert all(ex.targets[:, 1].sum() == 0 for ex in examples)  # long_pause: background
    assert examples[0].targets[:, 0].sum() >= 3


def test_split_is_by_file_seeded_and_keeps_each_type_on_both_sides() -> None:
    examples = build_examples(_clicky_files(10), ["glitch"], LOG_MEL)
    train, val = split_by_file(examples, 0.2, seed=5)
    assert sorted(train + val) == list(range(10)) and not set(train) & set(val)
    assert len(val) == 2
    assert split_by_file(examples, 0.2, seed=5) == (train, val)
    assert any(examples[i].targets.any() for i in val)
    with pytest.raises(ValueError, match="at least 2"):
        split_by_file(examples[:1], 0.2, seed=0)


def test_sample_features_show_a_click_in_speechlike_noise() -> None:
    white = _noise(1.0, 0, level=0.02).astype(np.float64)
    samples = np.convolve(white, 0.95 ** np.arange(200))[: white.size]  # low-pass, predictable
    assert np.abs(samples).max() > 0.2  # louder than the click
    samples[8000:8016] += 0.1
    crest = sample_features(samples)[:, 1]
    click_frame = (8000 - 120) // 160  # the frame whose cell holds sample 8000
    assert int(np.argmax(crest)) == click_frame
    assert frame_features(WITH_SAMPLE_FEATURES, samples=samples).shape == (98, 66)


def test_precomputed_log_mel_is_enough_only_without_sample_features() -> None:
    samples = _noise(0.5, 1)
    mel = frame_features(LOG_MEL, samples=samples)
    np.testing.assert_array_equal(frame_features(LOG_MEL, log_mel=mel), mel)
    with pytest.raises(ValueError, match="need the samples"):
        frame_features(WITH_SAMPLE_FEATURES, log_mel=mel)


# -- training ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained() -> TrainedHead:
    config = TrainingConfig(epochs=8, batch_size=64, validation_split=0.25, seed=3)
    return train_head(_clicky_files(8), config, architecture=Architecture(hidden_units=8))


def test_a_tiny_run_learns_separable_clicks(trained: TrainedHead) -> None:
    glitch = trained.metrics["glitch"]
    assert glitch["f1"] >= 0.9 and glitch["frame_auprc"] >= 0.9
    assert glitch["median_onset_error_ms"] <= 10.0
    assert set(trained.train_files).isdisjoint(trained.validation_files)


def test_training_is_deterministic_and_reports_progress(trained: TrainedHead) -> None:
    seen: list[tuple[int, int]] = []
    config = TrainingConfig(epochs=8, batch_size=64, validation_split=0.25, seed=3)
    again = train_head(
        _clicky_files(8),
        config,
        architecture=Architecture(hidden_units=8),
        progress=lambda epoch, total, metrics: seen.append((epoch, total)),
    )
    assert seen == [(epoch, 8) for epoch in range(1, 9)]
    assert again.metrics == trained.metrics
    np.testing.assert_array_equal(again.weights.w1, trained.weights.w1)


def test_cancel_stops_training() -> None:
    with pytest.raises(TrainingCanceled):
        train_head(_clicky_files(4), TrainingConfig(epochs=2), should_cancel=lambda: True)


# -- export ------------------------------------------------------------------------------------


@pytest.mark.parametrize("hidden_units", [0, 8])
def test_onnx_runtime_matches_the_numpy_forward(hidden_units: int) -> None:
    rng = np.random.default_rng(hidden_units)
    width, types = 66, 2
    arch = Architecture(hidden_units=hidden_units, dense_radius=2, dilated_radius=3, dilation=5)
    mean = rng.standard_normal(width).astype(np.float32)
    std = rng.uniform(0.5, 2.0, width).astype(np.float32)
    weights = init_weights(arch, mean, std, types, rng)
    weights.b1 += rng.standard_normal(weights.b1.shape).astype(np.float32)
    head = TrainedHead(
        weights,
        ("glitch", "long_pause"),
        WITH_SAMPLE_FEATURES,
        (EventRule(0.4), EventRule(0.6)),
        {},
        (),
        (),
    )
    session = ort.InferenceSession(export_onnx(head), providers=["CPUExecutionProvider"])
    for frames in (1, 7, 300, 4100):  # around the context and the numpy forward's 4096 chunk
        features = (rng.standard_normal((frames, width)) * 3).astype(np.float32)
        (onnx_out,) = session.run(None, {INPUT_NAME: features})
        np.testing.assert_allclose(onnx_out, forward(features, weights), atol=1e-5, rtol=0)


def test_the_exported_model_carries_its_metadata(trained: TrainedHead) -> None:
    meta = read_metadata(export_onnx(trained))
    assert meta["artifact_types"] == ["glitch"]
    assert meta["thresholds"] == [trained.rules[0].threshold]
    assert meta["frame_hop_ms"] == 10.0 and meta["cell_offset_ms"] == 7.5
    assert meta["context_frames"] == trained.weights.architecture.reach_frames
    assert meta["feature_spec"]["width"] == 66 and meta["feature_spec"]["name"] == "log_mel+lpc"
    assert meta["metrics"]["glitch"]["f1"] == trained.metrics["glitch"]["f1"]


# -- metrics -----------------------------------------------------------------------------------


def test_frames_to_events_thresholds_merges_and_drops_short_ones() -> None:
    p = np.array([0, 0.9, 0.8, 0, 0.7, 0, 0, 0, 0.6, 0])
    rule = EventRule(
        threshold=0.5, merge_window_ms=10, min_duration_ms=0, hop_ms=10, cell_offset_ms=0
    )
    assert frames_to_events(p, rule) == [(10.0, 50.0, 0.9), (80.0, 90.0, 0.6)]
    longer = EventRule(0.5, 10, 20, 10, 0)
    assert frames_to_events(p, longer) == [(10.0, 50.0, 0.9)]
    assert frames_to_events(np.zeros(5), rule) == []


def test_event_matching_uses_the_collar_one_to_one() -> None:
    reference = [(100.0, 102.0), (1000.0, 1600.0)]
    # onset 15 ms late: inside the 20 ms collar; the pause's offset may be 20 % of 600 ms off
    detected = [(115.0, 120.0), (990.0, 1700.0), (1005.0, 1590.0)]
    assert match_events(reference, detected) == [(0, 0), (1, 1)]
    score = score_events(reference, detected)
    assert (score.true_positives, score.false_positives, score.false_negatives) == (2, 1, 0)
    assert score.onset_errors_ms == (15.0, 10.0)
    late = score_events(reference, [(125.0, 127.0)])
    assert late.true_positives == 0 and late.recall == 0.0 and late.precision == 0.0
    assert score_events([], []).f1 == 1.0


def test_average_precision_on_hand_made_rankings() -> None:
    assert average_precision([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0
    assert average_precision([0.9, 0.8, 0.1], [0, 1, 1]) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert average_precision([0.5, 0.5], [1, 0]) == 0.5  # a tie counts as one step
    assert average_precision([0.9, 0.1], [0, 1], weights=[0, 1]) == 1.0
    assert average_precision([0.3], [0]) is None


def test_boundary_shifts_cancel_a_consistent_bias() -> None:
    rule = EventRule(threshold=0.5, hop_ms=10, cell_offset_ms=0, merge_window_ms=0)
    p = np.zeros(100)
    p[23:58] = 0.9  # the head fires 30 ms late and stops 20 ms early on [200, 600] ms
    onset, offset = boundary_shifts([p], [[(200.0, 600.0)]], rule)
    assert (onset, offset) == (-30.0, 20.0)
    shifted = EventRule(0.5, 0, 0, 10, 0, onset, offset)
    assert frames_to_events(p, shifted) == [(200.0, 600.0, 0.9)]
    assert boundary_shifts([np.zeros(10)], [[(0.0, 50.0)]], rule) == (0.0, 0.0)
    assert boundary_shifts([p], [[(500.0, 1000.0)]], rule, limit_ms=25)[0] == 25.0


def test_the_threshold_chosen_maximises_event_f1() -> None:
    p = np.array([0.0, 0.3, 0.0, 0.0, 0.7, 0.0])
    rule = EventRule(hop_ms=10, cell_offset_ms=0, merge_window_ms=0)
    threshold, score = choose_threshold([p], [[(40.0, 50.0)]], rule, candidates=[0.2, 0.5, 0.8])
    assert threshold == 0.5 and score.f1 == 1.0


# -- config ------------------------------------------------------------------------------------


def test_config_defaults_are_the_references() -> None:
    config = TrainingConfig.from_mapping(None)
    assert (config.epochs, config.learning_rate, config.batch_size) == (20, 0.001, 32)
    assert config.validation_split == 0.2
    assert TrainingConfig.from_mapping({"artifact_types": ["glitch"]}).artifact_types == ("glitch",)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"epochs": 0}, "epochs must be between 1 and 1000, got 0"),
        ({"epochs": 2.5}, "epochs must be an integer, got 2.5"),
        ({"batch_size": True}, "batch_size must be an integer, got True"),
        ({"validation_split": 1.0}, "validation_split must be greater than 0 and less than 1"),
        ({"learning_rate": float("nan")}, "learning_rate must be a finite number"),
        ({"learning_rate": 0}, "learning_rate must be greater than 0"),
        ({"artifact_types": "glitch"}, "artifact_types must be a list of names"),
        ({"artifact_types": ["a", "a"]}, "artifact_types must not repeat a name"),
        ({"artifact_types": [""]}, "each name must be a non-empty string"),
        ({"epoch": 3}, "unknown config key(s): epoch"),
    ],
)
def test_config_errors_name_the_key_and_value(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        TrainingConfig.from_mapping(raw)
    assert message in str(caught.value)


# -- benchmark ---------------------------------------------------------------------------------


def test_the_benchmark_runs_on_a_tiny_set() -> None:
    """The benchmark's set and one head's run, on a few files: it must not rot between runs."""
    from benchmarks.custom_head import _annotated, run_one
    from benchmarks.tts_artifacts import build_set

    train_set, test_set = build_set("train", 6, seed=1), build_set("test", 2, seed=1)
    assert {f.voice for f in train_set}.isdisjoint(f.voice for f in test_set)
    for file in train_set + test_set:
        for kind, start_ms, end_ms in file.annotations:
            assert 0 <= start_ms < end_ms <= 1000 * file.samples.size / RATE
            if kind == "glitch":
                assert 1.0 <= end_ms - start_ms <= 3.0
            else:
                assert 500.0 <= end_ms - start_ms <= 900.0
    result = run_one(
        _annotated(train_set),
        _annotated(test_set),
        test_set,
        Architecture(),
        WITH_SAMPLE_FEATURES,
        seed=0,
        epochs=1,
    )
    assert set(result["test"]) == {"glitch", "long_pause"}
    assert result["onnx_cpu_fraction_of_audio"] > 0
