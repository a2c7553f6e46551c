"""Model variants prepared at set-up from the fetched QDQ export, each checked against it.

The fetched ``model.onnx`` is a w8a8 QDQ graph whose batch dimension (and the Reshape before the
classifier) is fixed to 1, so the runner must loop one patch at a time. From it we derive:

- ``w8a8-dyn``: the same quantized graph with a symbolic batch; same uint8 input and output.
  It must be bit-identical to the original, patch by patch and in batches.
- ``fp32``: weights folded to their dequantized values ``DQ(Q(W))`` (they equal the stored
  float weights: the export was already fake-quantised) and every activation Q/DQ pair replaced
  by a Clip to the range it let through, so activations flow in float without rounding but
  saturate where the calibrated model saturates. The input is the float log-mel patch itself
  (no input rounding) and the output is the float logits.
- ``fp16``: ``fp32`` with float16 weights and activations but float32 input and output (a Cast at
  each end), mostly for GPUs.

Each variant is a self-contained ``variants/NAME.onnx`` next to the weights, written atomically
after its check passes. Its ``metadata_props`` say how to feed it and record the sha256 of the
source files, so preparing again is a no-op until the source (or ``VARIANT_FORMAT``) changes.
The same props are visible at runtime through ``session.get_modelmeta().custom_metadata_map``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper

from models.yamnet.frontend import patches_offline, quantize_patches
from models.yamnet.spec import FRONTEND, WEIGHTS_DIR

__all__ = [
    "ORIGINAL",
    "VARIANTS",
    "VariantAccuracy",
    "VariantCheckError",
    "VariantMetadata",
    "load_variant_metadata",
    "prepare_variants",
    "reference_patches",
    "variant_path",
    "verify_variant",
]

ORIGINAL = "w8a8"
VARIANTS = ("w8a8-dyn", "fp32", "fp16")
VARIANT_FORMAT = "1"  # bump when a transformation changes, so prepared files are rebuilt
SOURCE_FILES = ("model.onnx", "model.data")
BATCH_DIM = "batch"
FLOAT_INPUT = "log_mel"
FLOAT_OUTPUT = "logits"
_PROP_PREFIX = "tympan."

INPUT_UINT8 = "uint8"  # quantize_patches(patches, input_scale, input_zero_point)
INPUT_FLOAT32 = "float32"  # the float log-mel patch as is
OUTPUT_UINT8_LOGITS = "uint8-logits"  # (q - output_zero_point) * output_scale = logits
OUTPUT_FLOAT_LOGITS = "float-logits"

# Checked when a variant is prepared; w8a8-dyn must be exact. For the float variants the
# original's own output rounding (logit steps of ~0.76, up to 0.19 in probability near 0.5)
# dominates: measured max |dp| 0.21, mean 0.0003 (figures in tests/test_variants.py).
MAX_PROB_DIFF = {"w8a8-dyn": 0.0, "fp32": 0.25, "fp16": 0.25}
MAX_MEAN_PROB_DIFF = {"w8a8-dyn": 0.0, "fp32": 0.002, "fp16": 0.002}
MIN_TOP1_AGREEMENT = {"w8a8-dyn": 1.0, "fp32": 0.95, "fp16": 0.95}
# Batched vs one at a time: float kernels may block a batch differently (measured: equal).
MAX_BATCH_PROB_DIFF = {"w8a8-dyn": 0.0, "fp32": 1e-5, "fp16": 1e-3}
_VERIFY_HOP_FRAMES = 48
_VERIFY_SECONDS = 3.0
_SPEECH_TEXT = "The quick brown fox jumps over the lazy dog, and then it keeps on talking."
_FP16_OPS = {"Conv", "Relu", "Clip", "GlobalAveragePool", "Reshape", "Flatten", "Gemm"}

FloatArray = npt.NDArray[np.float64]


class VariantCheckError(RuntimeError):
    """A variant cannot be built, or disagrees with the original beyond its tolerance."""


@dataclass(frozen=True)
class VariantMetadata:
    """How to feed one model file and read its output. Quantisation fields are None for floats."""

    name: str
    input_name: str
    input_dtype: str  # INPUT_UINT8 or INPUT_FLOAT32; shape [batch, 1, 96, 64]
    output_name: str
    output_kind: str  # OUTPUT_UINT8_LOGITS or OUTPUT_FLOAT_LOGITS; shape [batch, 521]
    dynamic_batch: bool
    source_sha256: str
    input_scale: float | None = None
    input_zero_point: int | None = None
    output_scale: float | None = None
    output_zero_point: int | None = None
    format_version: str = VARIANT_FORMAT

    def to_props(self) -> dict[str, str]:
        """Plain strings for ONNX ``metadata_props`` (booleans as true/false)."""
        props = {}
        for key, value in asdict(self).items():
            if value is not None:
                text = str(value).lower() if isinstance(value, bool) else str(value)
                props[_PROP_PREFIX + key] = text
        return props

    @classmethod
    def from_props(cls, props: Mapping[str, str]) -> VariantMetadata:
        values: dict[str, object] = {}
        for spec in fields(cls):
            raw = props.get(_PROP_PREFIX + spec.name)
            if raw is None:
                continue
            kind = str(spec.type)
            try:
                if kind == "bool":
                    values[spec.name] = {"true": True, "false": False}[raw]
                elif kind.startswith("float"):
                    values[spec.name] = float(raw)
                elif kind.startswith("int"):
                    values[spec.name] = int(raw)
                else:
                    values[spec.name] = raw
            except (KeyError, ValueError):
                raise VariantCheckError(f"bad variant metadata {spec.name}={raw!r}") from None
        try:
            return cls(**values)  # type: ignore[arg-type]
        except TypeError as exc:
            raise VariantCheckError(f"incomplete variant metadata: {exc}") from None

    def model_input(self, patches: FloatArray) -> npt.NDArray[np.uint8] | npt.NDArray[np.float32]:
        """Float log-mel patches [n, 96, 64] -> the tensor this model takes, [n, 1, 96, 64]."""
        batch = patches[:, None, :, :]
        if self.input_dtype == INPUT_UINT8:
            if self.input_scale is None or self.input_zero_point is None:
                raise VariantCheckError(f"{self.name}: uint8 input without its scale")
            return quantize_patches(batch, self.input_scale, self.input_zero_point)
        return batch.astype(np.float32)

    def logits(self, raw: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
        """The model's output [n, classes] -> float32 logits (probability = sigmoid)."""
        if self.output_kind == OUTPUT_UINT8_LOGITS:
            if self.output_scale is None or self.output_zero_point is None:
                raise VariantCheckError(f"{self.name}: uint8 output without its scale")
            return ((raw.astype(np.float32) - self.output_zero_point) * self.output_scale).astype(
                np.float32
            )
        return raw.astype(np.float32)


@dataclass(frozen=True)
class VariantAccuracy:
    """A variant's probabilities against the original's on the same patches."""

    name: str
    windows: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    batch_max_abs_diff: float | None  # batched run vs one patch at a time; None if fixed batch


def _sha256_files(weights_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in SOURCE_FILES:
        with (weights_dir / name).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def variant_path(name: str, weights_dir: Path = WEIGHTS_DIR, out_dir: Path | None = None) -> Path:
    """Where a variant lives; ORIGINAL names the fetched model itself."""
    if name == ORIGINAL:
        return weights_dir / "model.onnx"
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; known: {(ORIGINAL, *VARIANTS)}")
    return (out_dir or weights_dir / "variants") / f"{name}.onnx"


# -- metadata of a loaded graph ------------------------------------------------------------------


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def _scalar(inits: Mapping[str, onnx.TensorProto], name: str) -> float:
    return float(numpy_helper.to_array(inits[name]).reshape(-1)[0])


def _describe(model: onnx.ModelProto, name: str, source_sha256: str) -> VariantMetadata:
    """Metadata read from the graph: quantisation of the I/O, dtype, whether batch is dynamic."""
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}  # the big ones may be external
    model_input, model_output = graph.input[0], graph.output[0]
    input_q = output_q = None
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] == model_input.name:
            input_q = (_scalar(inits, node.input[1]), int(_scalar(inits, node.input[2])))
        if node.op_type == "QuantizeLinear" and node.output[0] == model_output.name:
            output_q = (_scalar(inits, node.input[1]), int(_scalar(inits, node.input[2])))
    quantized = model_input.type.tensor_type.elem_type == TensorProto.UINT8
    if quantized and (input_q is None or output_q is None):
        raise VariantCheckError(
            "uint8 model without a DequantizeLinear input / QuantizeLinear output"
        )
    batch = model_input.type.tensor_type.shape.dim[0]
    return VariantMetadata(
        name=name,
        input_name=model_input.name,
        input_dtype=INPUT_UINT8 if quantized else INPUT_FLOAT32,
        output_name=model_output.name,
        output_kind=OUTPUT_UINT8_LOGITS if quantized else OUTPUT_FLOAT_LOGITS,
        dynamic_batch=not batch.HasField("dim_value"),
        source_sha256=source_sha256,
        input_scale=input_q[0] if input_q else None,
        input_zero_point=input_q[1] if input_q else None,
        output_scale=output_q[0] if output_q else None,
        output_zero_point=output_q[1] if output_q else None,
    )


def load_variant_metadata(path: Path) -> VariantMetadata:
    """A prepared variant's recorded metadata, or (for the fetched model) what its graph says."""
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if any(key.startswith(_PROP_PREFIX) for key in props):
        return VariantMetadata.from_props(props)
    return _describe(model, ORIGINAL, source_sha256="")


# -- graph transformations -----------------------------------------------------------------------


def _make_batch_dynamic(model: onnx.ModelProto) -> None:
    """Symbolic dim 0 on the I/O, and Reshapes that copy the batch instead of hard-coding 1."""
    graph = model.graph
    for value in (*graph.input, *graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = BATCH_DIM
    inits = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Flatten":
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if axis == 0:
                raise VariantCheckError(f"Flatten {node.name!r} with axis 0 merges the batch")
        if node.op_type != "Reshape":
            continue
        if node.input[1] not in inits:
            raise VariantCheckError(f"Reshape {node.name!r} has a computed shape; cannot check it")
        if any(a.name == "allowzero" and a.i for a in node.attribute):
            raise VariantCheckError(f"Reshape {node.name!r} uses allowzero=1")
        shape = numpy_helper.to_array(inits[node.input[1]]).copy()
        if shape[0] != 1:
            continue
        shape[0] = 0  # allowzero=0: copy the input's batch dimension
        new_name = node.input[1] + "_dynamic_batch"  # a copy: the old one may be shared
        if new_name not in inits:
            graph.initializer.append(numpy_helper.from_array(shape, new_name))
            inits[new_name] = graph.initializer[-1]
        node.input[1] = new_name
    _prune_and_infer(model)


def _prune_and_infer(model: onnx.ModelProto) -> None:
    """Drop unused initializers and stale shapes (they carry batch 1), then re-infer shapes."""
    graph = model.graph
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    graph.value_info.extend(inferred.graph.value_info)


def _rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
    for value in graph.output:
        if value.name == old:
            value.name = new


def _dequantized(
    weight: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int
) -> np.ndarray:
    """DequantizeLinear(QuantizeLinear(W)) as ONNX defines them (round half to even)."""
    shape = [1] * weight.ndim
    if scale.ndim:
        shape[axis] = -1
    s = scale.astype(np.float32).reshape(shape)
    zp = zero_point.astype(np.int32).reshape(shape)
    info = np.iinfo(zero_point.dtype)
    q = np.clip(np.rint(weight.astype(np.float32) / s) + zp, info.min, info.max)
    return ((q - zp) * s).astype(np.float32)


def _quant_range(inits: Mapping[str, np.ndarray], scale: str, zero_point: str) -> np.ndarray:
    """[low, high] that a Q/DQ pair lets through: it saturates outside the integer range."""
    zp = inits[zero_point]
    info = np.iinfo(zp.dtype)
    s, z = float(inits[scale].reshape(-1)[0]), int(zp.reshape(-1)[0])
    return np.array([(info.min - z) * s, (info.max - z) * s], dtype=np.float32)


def _to_float(model: onnx.ModelProto) -> None:
    """Fold weight Q/DQ pairs into float initializers; turn activation Q/DQ pairs into Clips.

    An activation pair rounds and saturates; the float model drops the rounding but keeps the
    saturation as a Clip to the pair's range, folded into the Relu before it where there is one
    (ORT then fuses Conv+Clip). Without the Clips, clean speech windows differ from the original
    by up to 0.92 in probability: the calibrated ranges clip a few activations per layer."""
    graph = model.graph
    inits = _initializers(model)
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    model_input, model_output = graph.input[0], graph.output[0]
    dropped: set[str] = set()  # first outputs of the nodes to remove
    clips: dict[str, onnx.NodeProto] = {}  # DQ output -> the Clip that replaces the pair
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        dropped.add(node.output[0])
        bounds = _quant_range(inits, node.input[1], node.input[2])
        if node.input[0] == model_input.name:
            source_input = FLOAT_INPUT
        else:
            source = producer.get(node.input[0])
            if source is None or source.op_type != "QuantizeLinear":
                raise VariantCheckError(f"DequantizeLinear {node.name!r} without a QuantizeLinear")
            dropped.add(source.output[0])
            source_input = source.input[0]
            if source_input in inits:
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                folded = _dequantized(
                    inits[source_input], inits[node.input[1]], inits[node.input[2]], axis
                )
                graph.initializer.append(numpy_helper.from_array(folded, node.output[0]))
                continue
            relu = producer.get(source_input)
            if relu is not None and relu.op_type == "Relu" and consumers[source_input] == 1:
                dropped.add(relu.output[0])
                source_input = relu.input[0]
                bounds[0] = max(bounds[0], 0.0)
        low, high = node.output[0] + "_clip_low", node.output[0] + "_clip_high"
        graph.initializer.append(numpy_helper.from_array(bounds[0], low))
        graph.initializer.append(numpy_helper.from_array(bounds[1], high))
        clips[node.output[0]] = helper.make_node(
            "Clip", [source_input, low, high], [node.output[0]], name=node.output[0] + "_clip"
        )
    quantize_out = producer[model_output.name]
    if quantize_out.op_type != "QuantizeLinear":
        raise VariantCheckError("the model output is not quantised")
    dropped.add(quantize_out.output[0])
    logits_node = producer[quantize_out.input[0]]
    logits_node.output[list(logits_node.output).index(quantize_out.input[0])] = FLOAT_OUTPUT
    kept = [clips.get(node.output[0], node) for node in graph.node]
    kept = [node for node in kept if node.op_type == "Clip" or node.output[0] not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    if any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node):
        raise VariantCheckError("Q/DQ nodes left after folding")
    model_input.name = FLOAT_INPUT
    model_input.type.tensor_type.elem_type = TensorProto.FLOAT
    model_output.name = FLOAT_OUTPUT
    model_output.type.tensor_type.elem_type = TensorProto.FLOAT
    _prune_and_infer(model)


def _to_float16(model: onnx.ModelProto) -> None:
    """Float16 weights and activations, float32 I/O. A hand-rolled pass rather than
    onnxconverter-common: the graph has five op types, all type-generic, so a Cast at each end
    and halved initializers are the whole job, and it spares a dependency."""
    graph = model.graph
    unknown = {node.op_type for node in graph.node} - _FP16_OPS
    if unknown:
        raise VariantCheckError(f"no float16 rule for ops {sorted(unknown)}")
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            values = numpy_helper.to_array(init)
            if np.abs(values).max(initial=0.0) > np.finfo(np.float16).max:
                raise VariantCheckError(f"initializer {init.name!r} overflows float16")
            init.CopyFrom(numpy_helper.from_array(values.astype(np.float16), init.name))
    half_in, half_out = FLOAT_INPUT + "_fp16", FLOAT_OUTPUT + "_fp16"
    _rename_input(graph, FLOAT_INPUT, half_in)
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == FLOAT_OUTPUT:
                node.output[i] = half_out
    for value in graph.output:
        value.name = FLOAT_OUTPUT
    graph.node.insert(0, helper.make_node("Cast", [FLOAT_INPUT], [half_in], to=TensorProto.FLOAT16))
    graph.node.append(helper.make_node("Cast", [half_out], [FLOAT_OUTPUT], to=TensorProto.FLOAT))
    _prune_and_infer(model)


def _build(name: str, source: onnx.ModelProto) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.CopyFrom(source)
    _make_batch_dynamic(model)
    if name in ("fp32", "fp16"):
        _to_float(model)
    if name == "fp16":
        _to_float16(model)
    model.doc_string = f"tympan YAMNet variant {name}, derived from the fetched w8a8 export"
    onnx.checker.check_model(model, full_check=True)
    return model


# -- running and checking ------------------------------------------------------------------------


def _session(path: Path, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _probabilities(
    path: Path, meta: VariantMetadata, patches: FloatArray, batch: int
) -> npt.NDArray[np.float32]:
    """Sigmoid of the logits; ``batch`` patches per run (1 for a fixed-batch model)."""
    session = _session(path)
    step = batch if meta.dynamic_batch else 1
    feed = meta.model_input(patches)
    raw = [
        session.run(None, {meta.input_name: feed[i : i + step]})[0]
        for i in range(0, len(feed), step)
    ]
    logits = meta.logits(np.concatenate(raw))
    return (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32)


def _top1_agreement(probs: np.ndarray, reference: np.ndarray) -> float:
    """Share of windows whose top class is also top for the reference. The original's logits
    are quantised in steps of ~0.76, so it often has tied first classes; any of them counts."""
    if not len(probs):
        return 1.0
    top = probs.argmax(axis=1)
    return float(np.mean(reference[np.arange(len(top)), top] == reference.max(axis=1)))


def verify_variant(
    variant: Path, original: Path, patches: FloatArray, batch: int = 16
) -> VariantAccuracy:
    """Probabilities of ``variant`` against ``original`` on the same float log-mel patches.

    Each model gets the input it expects (the original the quantised patch, a float variant the
    float patch). A dynamic-batch variant is run one patch at a time for the comparison and
    again ``batch`` patches at a time, to check that batching does not change the answer."""
    meta = load_variant_metadata(variant)
    reference = _probabilities(original, load_variant_metadata(original), patches, 1)
    single = _probabilities(variant, meta, patches, 1)
    diff = np.abs(single - reference)
    batched = None
    if meta.dynamic_batch:
        batched = float(np.abs(_probabilities(variant, meta, patches, batch) - single).max())
    return VariantAccuracy(
        name=meta.name,
        windows=len(patches),
        max_abs_diff=float(diff.max(initial=0.0)),
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        top1_agreement=_top1_agreement(single, reference),
        batch_max_abs_diff=batched,
    )


def _resample(samples: np.ndarray, rate_hz: int, target_hz: int) -> np.ndarray:
    """Band-limited resampling by FFT; fine for whole test signals (not for streaming)."""
    if rate_hz == target_hz:
        return samples
    count = round(len(samples) * target_hz / rate_hz)
    spectrum = np.fft.rfft(samples)
    keep = min(len(spectrum), count // 2 + 1)
    return np.fft.irfft(spectrum[:keep], n=count) * (count / len(samples))


def _speech(rate_hz: int) -> np.ndarray | None:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return None
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run([espeak, "-w", str(wav), _SPEECH_TEXT], check=True, capture_output=True)
        audio, source_hz = sf.read(wav, dtype="float64", always_2d=True)
    return _resample(audio.mean(axis=1), source_hz, rate_hz)


def reference_signals(seconds: float = _VERIFY_SECONDS) -> dict[str, np.ndarray]:
    """Tone, chirp, noise, silence, and espeak-ng speech when it is installed; 16 kHz mono."""
    rate_hz = FRONTEND.sample_rate_hz
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    signals = {
        "tone": 0.5 * np.sin(2 * np.pi * 440.0 * t),
        "chirp": 0.5 * np.sin(2 * np.pi * (200.0 * t + 600.0 * t**2)),
        "noise": np.random.default_rng(20240501).normal(0.0, 0.2, t.shape),
        "silence": np.zeros_like(t),
    }
    speech = _speech(rate_hz)
    if speech is not None:
        signals["speech"] = speech
    return signals


def reference_patches(hop_frames: int = _VERIFY_HOP_FRAMES) -> FloatArray:
    """All reference signals cut into float log-mel patches [n, 96, 64]."""
    return np.concatenate([patches_offline(s, hop_frames) for s in reference_signals().values()])


def _check(name: str, accuracy: VariantAccuracy) -> None:
    problems = []
    if accuracy.max_abs_diff > MAX_PROB_DIFF[name]:
        problems.append(f"max |dp| {accuracy.max_abs_diff:.4g} > {MAX_PROB_DIFF[name]}")
    if accuracy.mean_abs_diff > MAX_MEAN_PROB_DIFF[name]:
        problems.append(f"mean |dp| {accuracy.mean_abs_diff:.4g} > {MAX_MEAN_PROB_DIFF[name]}")
    if accuracy.top1_agreement < MIN_TOP1_AGREEMENT[name]:
        problems.append(f"top-1 {accuracy.top1_agreement:.3f} < {MIN_TOP1_AGREEMENT[name]}")
    batch_diff = accuracy.batch_max_abs_diff
    if batch_diff is not None and batch_diff > MAX_BATCH_PROB_DIFF[name]:
        problems.append(f"batched run differs by {batch_diff:.4g}")
    if problems:
        raise VariantCheckError(f"variant {name} disagrees with the original: {problems}")


# -- preparation ---------------------------------------------------------------------------------


def _is_current(path: Path, source_sha256: str) -> bool:
    if not path.is_file():
        return False
    try:
        meta = load_variant_metadata(path)
    except (VariantCheckError, DecodeError, OSError, ValueError):  # truncated or foreign
        return False
    return meta.source_sha256 == source_sha256 and meta.format_version == VARIANT_FORMAT


def prepare_variants(
    weights_dir: Path = WEIGHTS_DIR,
    out_dir: Path | None = None,
    names: tuple[str, ...] = VARIANTS,
    force: bool = False,
    report: Callable[[VariantAccuracy], None] | None = None,
) -> dict[str, Path]:
    """Build, check and atomically write each missing or stale variant; name -> path.

    Idempotent: a variant whose recorded source sha256 matches the current files is kept as is.
    A variant that fails its check raises VariantCheckError and nothing is written for it."""
    source_sha256 = _sha256_files(weights_dir)
    original_path = weights_dir / "model.onnx"
    paths = {name: variant_path(name, weights_dir, out_dir) for name in names}
    todo = [n for n in names if force or not _is_current(paths[n], source_sha256)]
    if not todo:
        return paths
    source = onnx.load(str(original_path))
    patches = reference_patches()
    for name in todo:
        model = _build(name, source)
        meta = _describe(model, name, source_sha256)
        onnx.helper.set_model_props(model, meta.to_props())
        target = paths[name]
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("wb") as handle:
                handle.write(model.SerializeToString())
                handle.flush()
                os.fsync(handle.fileno())
            accuracy = verify_variant(tmp, original_path, patches)
            _check(name, accuracy)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        if report is not None:
            report(accuracy)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--out-dir", type=Path, default=None, help="default: WEIGHTS/variants")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)

    def show(acc: VariantAccuracy) -> None:
        print(
            f"{acc.name}: {acc.windows} windows, max |dp| {acc.max_abs_diff:.4f}, "
            f"mean |dp| {acc.mean_abs_diff:.5f}, top-1 {acc.top1_agreement:.1%}, "
            f"batched vs single {acc.batch_max_abs_diff}"
        )

    try:
        paths = prepare_variants(
            args.weights_dir, args.out_dir, tuple(args.variants.split(",")), args.force, show
        )
    except (VariantCheckError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
