"""Prepared model variants: how to feed them, that batching changes nothing, and that they
compute the shipped model's semantics, judged against the exact reference on the check set.

Correct means agreeing with ``models/yamnet/checkset/reference.npz``, the fetched QDQ graph
evaluated in exact arithmetic (``models.yamnet.exact``), never with whatever this CPU's fused
kernels compute. w8a8-dyn is still the same integer graph as the fetched file, so both run on
the same kernels here and must give the same bytes; whether those bytes are right on this CPU
is what the check-set tests decide (u8s8 kernels saturate on AVX2 CPUs without VNNI).
Batched runs of the float variants measured equal to one-at-a-time runs; bound 1e-5 (fp32).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest

from models.yamnet.checkset import (
    MIN_TOP1_AGREEMENT,
    REFERENCE_PATH,
    check_patches,
    input_sha256,
    load_reference,
)
from models.yamnet.exact import ExactModel
from models.yamnet.frontend import patches_offline
from models.yamnet.spec import WEIGHTS_DIR
from models.yamnet.variant_meta import (
    CPU_CANDIDATES,
    INPUT_FLOAT32,
    INPUT_UINT8,
    OUTPUT_FLOAT_LOGITS,
    OUTPUT_UINT8_LOGITS,
    VARIANTS,
    VariantMetadata,
    load_variant_metadata,
    variant_path,
)
from models.yamnet.variants import check_variant, prepare_variants
from server.config import Settings
from server.runner import OnnxRunner, load_runner

HOP_FRAMES = 48
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


def test_metadata_tells_how_to_feed_each_variant(models: dict[str, Model]) -> None:
    assert set(models) == set(VARIANTS)
    for name in ("w8a8-dyn", "w8a8-u8"):
        dyn = models[name].meta
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
        assert quantized == path.stem.startswith("w8a8")


def test_w8a8_dyn_is_bit_identical_to_the_original(
    original: Model, models: dict[str, Model], patches: np.ndarray
) -> None:
    expected = original.raw(patches, batch=1)
    dyn = models["w8a8-dyn"]
    for batch in (1, 7, len(patches)):
        np.testing.assert_array_equal(dyn.raw(patches, batch), expected)


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
    assert np.mean(fp16.argmax(1) == fp32.argmax(1)) >= 0.95


# -- the exact semantics, the same on every machine ----------------------------------------------


@pytest.fixture(scope="session")
def check_set() -> np.ndarray:
    return check_patches()


def test_the_check_set_gives_the_inputs_the_reference_was_computed_from(
    check_set: np.ndarray,
) -> None:
    """The frontend is exact enough that this CPU quantises every check window to the bytes
    the committed reference saw (a mismatch would make every comparison below meaningless)."""
    reference = load_reference()
    meta = load_variant_metadata(WEIGHTS_DIR / "model.onnx")
    assert len(check_set) == len(reference.output_q) >= 700
    assert input_sha256(np.asarray(meta.model_input(check_set))) == reference.input_sha256
    assert (reference.output_scale, reference.output_zero_point) == (
        meta.output_scale,
        meta.output_zero_point,
    )


@pytest.mark.parametrize("source", ["original", "w8a8-u8"])
def test_exact_evaluation_reproduces_the_committed_reference_here(
    source: str, variant_paths: dict[str, Path], check_set: np.ndarray
) -> None:
    """Integer sums in float64 are exact whatever BLAS does: on any CPU, the exact model gives
    the committed bytes. Run on the w8a8-u8 file it gives them too: moving the weights to uint8
    around 128 does not change the model's semantics."""
    path = WEIGHTS_DIR / "model.onnx" if source == "original" else variant_paths[source]
    meta = load_variant_metadata(WEIGHTS_DIR / "model.onnx")
    picked = np.arange(0, len(check_set), 12)  # 60 windows across every clip, ~4 s
    inputs = np.asarray(meta.model_input(check_set[picked]))
    np.testing.assert_array_equal(ExactModel(path).run(inputs), load_reference().output_q[picked])


def test_the_reference_is_the_committed_file() -> None:
    assert REFERENCE_PATH.is_file() and REFERENCE_PATH.stat().st_size < 1_000_000


def test_the_served_variant_agrees_with_the_exact_semantics_on_this_cpu(
    tmp_path: Path,
) -> None:
    """Whatever CPU runs the suite, start-up serves a variant that passes the check, and
    reports the verdict of every variant it tried."""
    runner = load_runner(Settings(data_dir=tmp_path, provider="CPU"), WEIGHTS_DIR)
    served = runner.variant
    assert served in CPU_CANDIDATES
    checks = runner.variant_checks
    assert list(checks)[-1] == served and checks[served]["ok"] is True
    assert all(checks[name]["ok"] is False for name in list(checks)[:-1])
    assert checks[served]["top1"] >= MIN_TOP1_AGREEMENT
    assert checks[served]["windows"] == len(load_reference().output_q)


def _wrong_copy(source: Path, target: Path) -> None:
    """A real model that computes something else: the classifier's bias moved by 4 logits on
    every other class (the kind of error saturating kernels make, without needing that CPU)."""
    model = onnx.load(str(source))
    for init in model.graph.initializer:
        if init.name == "model.classifier.bias":
            values = onnx.numpy_helper.to_array(init).copy()
            values[::2] += 4.0
            init.CopyFrom(onnx.numpy_helper.from_array(values, init.name))
            break
    else:
        raise AssertionError("no classifier bias in the graph")
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))


def test_start_up_skips_a_variant_that_disagrees_and_says_so(
    variant_paths: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = tmp_path / "model"
    _wrong_copy(variant_paths["w8a8-dyn"], variant_path("w8a8-dyn", model_dir))
    for name in ("w8a8-u8", "fp32"):
        target = variant_path(name, model_dir)
        target.write_bytes(variant_paths[name].read_bytes())
    with caplog.at_level("WARNING", logger="server.runner"):
        runner = load_runner(Settings(data_dir=tmp_path, provider="CPU"), model_dir)
    if runner.variant_checks["w8a8-u8"]["ok"]:
        assert runner.variant == "w8a8-u8"
    assert runner.variant_checks["w8a8-dyn"]["ok"] is False
    assert runner.variant_checks["w8a8-dyn"]["problems"]
    assert "w8a8-dyn disagrees with the exact semantics" in caplog.text
    forced = load_runner(
        Settings(data_dir=tmp_path, provider="CPU", model_variant="w8a8-dyn"), model_dir
    )
    assert forced.variant == "w8a8-dyn" and forced.variant_checks["w8a8-dyn"]["ok"] is False


def test_check_variant_reports_batching_and_agreement(variant_paths: dict[str, Path]) -> None:
    report = check_variant(variant_paths["fp32"])
    assert report.name == "fp32"
    assert report.batch_max_abs_logit_diff is not None
    assert report.batch_max_abs_logit_diff <= 1e-4
    assert report.agreement.windows == len(load_reference().output_q)
    assert 0.0 < report.agreement.within_one_step < 1.0


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
