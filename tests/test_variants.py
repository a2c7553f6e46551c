"""Prepared model variants against the fetched w8a8 model, on real audio patches.

Tolerances come from measurements (onnxruntime 1.31 CPU, AMD EPYC Zen 4) on 111 windows:
two espeak-ng sentences, speech + noise, clipped loud speech, tone, chirp, white noise,
silence and a loud sweep, cut every 0.48 s.

- w8a8-dyn is the same integer graph: its uint8 output must equal the original's bit for bit,
  one patch at a time and in batches.
- fp32 (weights folded, activation Q/DQ replaced by Clips) measured max |dp| 0.206 (loud
  speech), mean |dp| 0.00024, top-1 agreement 100%. The original rounds its logits to steps of
  0.757, which alone moves a probability near 0.5 by up to 0.094 (a whole step is 0.19), so the
  bound is max |dp| <= 0.25 and mean |dp| <= 0.002. Top-1 counts any class tied for first in the
  original (its quantised output ties often: plain argmax agreed on only 56% of noise windows);
  bound >= 95%.
- fp16 measured max |dp| 0.209 vs the original and 0.0048 vs fp32; bound 0.02 vs fp32.
- Batched runs of the float variants measured equal to one-at-a-time runs; bound 1e-5 (fp32).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest

from models.yamnet.frontend import patches_offline
from models.yamnet.spec import WEIGHTS_DIR
from models.yamnet.variants import (
    INPUT_FLOAT32,
    INPUT_UINT8,
    OUTPUT_FLOAT_LOGITS,
    OUTPUT_UINT8_LOGITS,
    VARIANTS,
    VariantMetadata,
    load_variant_metadata,
    prepare_variants,
    variant_path,
    verify_variant,
)
from server.runner import OnnxRunner

HOP_FRAMES = 48
MAX_PROB_DIFF = 0.25
MAX_MEAN_PROB_DIFF = 0.002
MIN_TOP1_AGREEMENT = 0.95
MAX_FP16_VS_FP32 = 0.02
MAX_FP32_BATCH_DIFF = 1e-5
SAMPLE_RATE_HZ = 16_000


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * logits))


class Model:
    """One variant on a CPU session, fed the way its metadata says."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        self.meta: VariantMetadata = load_variant_metadata(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def raw(self, patches: np.ndarray, batch: int) -> np.ndarray:
        feed = self.meta.model_input(patches)
        return np.concatenate(
            [
                self.session.run(None, {self.meta.input_name: feed[i : i + batch]})[0]
                for i in range(0, len(feed), batch)
            ]
        )

    def probabilities(self, patches: np.ndarray, batch: int = 1) -> np.ndarray:
        return _sigmoid(self.meta.logits(self.raw(patches, batch)))


@pytest.fixture(scope="session")
def variant_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not (WEIGHTS_DIR / "model.onnx").is_file():
        pytest.fail("YAMNet weights are missing; run `make setup`")
    return prepare_variants(WEIGHTS_DIR, out_dir=tmp_path_factory.mktemp("variants"))


@pytest.fixture(scope="session")
def original() -> Model:
    return Model(WEIGHTS_DIR / "model.onnx")


@pytest.fixture(scope="session")
def models(variant_paths: dict[str, Path]) -> dict[str, Model]:
    return {name: Model(path) for name, path in variant_paths.items()}


@pytest.fixture(scope="session")
def signals(speech_16k: np.ndarray) -> dict[str, np.ndarray]:
    t = np.arange(5 * SAMPLE_RATE_HZ) / SAMPLE_RATE_HZ
    rng = np.random.default_rng(7)
    speech = speech_16k.astype(np.float64)
    return {
        "speech": speech,
        "speech+noise": speech + rng.normal(0.0, 0.03, speech.shape),
        "loud speech": np.clip(3.0 * speech, -1.0, 1.0),
        "tone": 0.5 * np.sin(2 * np.pi * 440.0 * t),
        "chirp": 0.99 * np.sin(2 * np.pi * (50.0 * t + 400.0 * t**2)),
        "noise": rng.normal(0.0, 0.2, t.shape),
        "silence": np.zeros_like(t),
    }


@pytest.fixture(scope="session")
def patches(signals: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([patches_offline(s, HOP_FRAMES) for s in signals.values()])


@pytest.fixture(scope="session")
def reference(original: Model, patches: np.ndarray) -> np.ndarray:
    return original.probabilities(patches)


def _top1_agreement(probs: np.ndarray, reference: np.ndarray) -> float:
    top = probs.argmax(axis=1)
    return float(np.mean(reference[np.arange(len(top)), top] == reference.max(axis=1)))


def test_metadata_tells_how_to_feed_each_variant(models: dict[str, Model]) -> None:
    assert set(models) == set(VARIANTS)
    dyn = models["w8a8-dyn"].meta
    assert (dyn.input_dtype, dyn.output_kind, dyn.dynamic_batch) == (
        INPUT_UINT8,
        OUTPUT_UINT8_LOGITS,
        True,
    )
    assert dyn.input_zero_point == 144 and dyn.output_zero_point == 190
    for name in ("fp32", "fp16"):
        meta = models[name].meta
        assert (meta.input_dtype, meta.output_kind, meta.dynamic_batch) == (
            INPUT_FLOAT32,
            OUTPUT_FLOAT_LOGITS,
            True,
        )
        assert meta.input_scale is None and meta.output_scale is None
        inputs = models[name].session.get_inputs()[0]
        assert inputs.type == "tensor(float)" and inputs.shape[1:] == [1, 96, 64]
    original = load_variant_metadata(WEIGHTS_DIR / "model.onnx")
    assert original.name == "w8a8" and not original.dynamic_batch


def test_variants_are_self_contained(variant_paths: dict[str, Path]) -> None:
    for path in variant_paths.values():
        model = onnx.load(str(path), load_external_data=False)
        assert all(
            init.data_location != onnx.TensorProto.EXTERNAL for init in model.graph.initializer
        )
        quantized = any(node.op_type == "QuantizeLinear" for node in model.graph.node)
        assert quantized == (path.stem == "w8a8-dyn")


def test_w8a8_dyn_is_bit_identical_to_the_original(
    original: Model, models: dict[str, Model], patches: np.ndarray
) -> None:
    expected = original.raw(patches, batch=1)
    dyn = models["w8a8-dyn"]
    for batch in (1, 7, len(patches)):
        np.testing.assert_array_equal(dyn.raw(patches, batch), expected)


@pytest.mark.parametrize("name", ["fp32", "fp16"])
def test_float_variant_matches_the_original(
    name: str, models: dict[str, Model], patches: np.ndarray, reference: np.ndarray
) -> None:
    probs = models[name].probabilities(patches)
    diff = np.abs(probs - reference)
    assert diff.max() <= MAX_PROB_DIFF, f"max |dp| {diff.max():.4f}"
    assert diff.mean() <= MAX_MEAN_PROB_DIFF, f"mean |dp| {diff.mean():.5f}"
    assert _top1_agreement(probs, reference) >= MIN_TOP1_AGREEMENT


def test_float_variants_batch_equals_one_at_a_time(
    models: dict[str, Model], patches: np.ndarray
) -> None:
    for name, bound in (("fp32", MAX_FP32_BATCH_DIFF), ("fp16", 1e-3)):
        single = models[name].probabilities(patches, batch=1)
        for batch in (5, len(patches)):
            batched = models[name].probabilities(patches, batch=batch)
            assert np.abs(batched - single).max() <= bound, (name, batch)


def test_fp16_stays_close_to_fp32(models: dict[str, Model], patches: np.ndarray) -> None:
    fp32 = models["fp32"].probabilities(patches, batch=16)
    fp16 = models["fp16"].probabilities(patches, batch=16)
    assert np.abs(fp16 - fp32).max() <= MAX_FP16_VS_FP32
    assert np.mean(fp16.argmax(1) == fp32.argmax(1)) >= MIN_TOP1_AGREEMENT


def test_verify_variant_reports_the_same_figures(
    variant_paths: dict[str, Path], patches: np.ndarray
) -> None:
    exact = verify_variant(variant_paths["w8a8-dyn"], WEIGHTS_DIR / "model.onnx", patches)
    assert (exact.max_abs_diff, exact.top1_agreement, exact.batch_max_abs_diff) == (0.0, 1.0, 0.0)
    assert exact.windows == len(patches)
    fp32 = verify_variant(variant_paths["fp32"], WEIGHTS_DIR / "model.onnx", patches)
    assert 0.0 < fp32.max_abs_diff <= MAX_PROB_DIFF
    assert fp32.top1_agreement >= MIN_TOP1_AGREEMENT


def test_runner_runs_the_dynamic_variant_like_the_original(
    variant_paths: dict[str, Path], patches: np.ndarray
) -> None:
    """The unchanged runner already batches w8a8-dyn (its batch dim is symbolic)."""
    quantized = load_variant_metadata(variant_paths["w8a8-dyn"]).model_input(patches)[:, 0]
    runner = OnnxRunner(variant_paths["w8a8-dyn"], provider="CPU")
    assert runner.fixed_batch is None
    expected = OnnxRunner(WEIGHTS_DIR / "model.onnx", provider="CPU").run(quantized)
    np.testing.assert_array_equal(runner.run(quantized), expected)


@pytest.mark.parametrize("variant", ["w8a8-dyn", "fp32"])
def test_prepared_input_gives_the_same_probabilities(
    variant_paths: dict[str, Path], patches: np.ndarray, variant: str
) -> None:
    """The engine prepares windows for the model as they are cut (uint8 for the int8 model)
    and the runner looks up the probability of each output byte: both must give exactly
    what converting inside the runner and computing the sigmoid give."""
    runner = OnnxRunner(variant_paths[variant], provider="CPU")
    float_patches = patches.astype(np.float32)
    prepared = runner.prepare(float_patches)
    assert prepared.shape == float_patches.shape
    probabilities = runner.run(prepared)
    np.testing.assert_array_equal(probabilities, runner.run(float_patches))
    meta = load_variant_metadata(variant_paths[variant])
    raw = runner._session.run(None, {meta.input_name: meta.model_input(float_patches)})[0]
    logits = meta.logits(raw)
    sigmoid = (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32)
    np.testing.assert_allclose(probabilities, sigmoid, rtol=0, atol=1e-6)


@pytest.fixture
def one_variant(tmp_path: Path) -> Iterator[Path]:
    prepare_variants(WEIGHTS_DIR, out_dir=tmp_path, names=("w8a8-dyn",))
    yield variant_path("w8a8-dyn", WEIGHTS_DIR, tmp_path)


def test_prepare_is_idempotent_and_rebuilds_broken_files(one_variant: Path) -> None:
    before = one_variant.stat()
    paths = prepare_variants(WEIGHTS_DIR, out_dir=one_variant.parent, names=("w8a8-dyn",))
    assert paths == {"w8a8-dyn": one_variant}
    assert one_variant.stat().st_mtime_ns == before.st_mtime_ns
    assert one_variant.stat().st_ino == before.st_ino

    one_variant.write_bytes(one_variant.read_bytes()[:1000])  # a torn copy
    prepare_variants(WEIGHTS_DIR, out_dir=one_variant.parent, names=("w8a8-dyn",))
    assert load_variant_metadata(one_variant).name == "w8a8-dyn"
    assert sorted(os.listdir(one_variant.parent)) == ["w8a8-dyn.onnx"]  # no temporary left


def test_prepare_rebuilds_when_the_source_changes(one_variant: Path) -> None:
    model = onnx.load(str(one_variant))
    stale = {p.key: p.value for p in model.metadata_props}
    stale["tympan.source_sha256"] = "0" * 64
    onnx.helper.set_model_props(model, stale)
    onnx.save(model, str(one_variant))
    prepare_variants(WEIGHTS_DIR, out_dir=one_variant.parent, names=("w8a8-dyn",))
    assert load_variant_metadata(one_variant).source_sha256 != "0" * 64


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown variant"):
        variant_path("int4")
