"""Model variants prepared at set-up from the fetched QDQ export (a set-up tool: the server
imports ``variant_meta`` only).

The fetched ``model.onnx`` is a w8a8 QDQ graph whose batch dimension (and the Reshape before the
classifier) is fixed to 1, so the runner must loop one patch at a time. From it we derive:

- ``w8a8-dyn``: the same quantized graph with a symbolic batch; same uint8 input and output.
- ``w8a8-u8``: ``w8a8-dyn`` with every int8 weight zero point moved to uint8 (+128). Quantising
  to uint8 around 128 gives the same integers shifted by 128, so the model's semantics are
  unchanged; ONNX Runtime then runs u8u8 kernels, which on x86 CPUs without VNNI do not
  saturate their 16-bit pair sums as the u8s8 kernels of ``w8a8-dyn`` do.
- ``fp32``: weights folded to their dequantized values ``DQ(Q(W))`` and every activation Q/DQ
  pair replaced by a Clip to the range it let through, so activations flow in float without
  rounding but saturate where the calibrated model saturates. The input is the float log-mel
  patch itself and the output is the float logits.
- ``fp16``: ``fp32`` with float16 weights and activations but float32 input and output.

Set-up builds every variant and reports how each agrees with the exact semantics on the check
set (``models.yamnet.checkset``) on this machine; a variant that disagrees here is not a set-up
failure: the server tries the variants in order at start-up and serves the first that agrees.
Each variant is a self-contained ``variants/NAME.onnx`` written atomically; its
``metadata_props`` say how to feed it and record the sha256 of the source files, so preparing
again is a no-op until the source (or ``VARIANT_FORMAT``) changes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper

from models.yamnet.checkset import Agreement, agreement, check_patches, load_reference
from models.yamnet.spec import WEIGHTS_DIR
from models.yamnet.thresholds import load_thresholds
from models.yamnet.variant_meta import (
    ORIGINAL,
    VARIANT_FORMAT,
    VARIANTS,
    VariantCheckError,
    VariantMetadata,
    describe,
    load_variant_metadata,
    variant_path,
)

__all__ = [
    "ORIGINAL",
    "VARIANTS",
    "VariantCheckError",
    "VariantMetadata",
    "VariantReport",
    "check_variant",
    "load_variant_metadata",
    "prepare_variants",
    "variant_logits",
    "variant_path",
]

SOURCE_FILES = ("model.onnx", "model.data")
BATCH_DIM = "batch"
FLOAT_INPUT = "log_mel"
FLOAT_OUTPUT = "logits"
FloatArray = npt.NDArray[np.float64]
_FP16_OPS = {"Conv", "Relu", "Clip", "GlobalAveragePool", "Reshape", "Flatten", "Gemm"}


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def _sha256_files(weights_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in SOURCE_FILES:
        with (weights_dir / name).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


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


def _to_unsigned_weights(model: onnx.ModelProto) -> None:
    """int8 weight zero points -> uint8 (+128). Q(W) then yields the same integers plus 128 and
    DQ subtracts the same 128 back, so every dequantised weight is unchanged."""
    graph = model.graph
    weight_inputs = {init.name for init in graph.initializer if init.data_type == TensorProto.FLOAT}
    zero_points = {
        node.input[2]
        for node in graph.node
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2
    }
    activation_zps = {
        node.input[2]
        for node in graph.node
        if node.op_type == "QuantizeLinear" and node.input[0] not in weight_inputs
    }
    changed = 0
    for init in graph.initializer:
        if init.name in zero_points and init.data_type == TensorProto.INT8:
            if init.name in activation_zps:
                raise VariantCheckError(f"int8 activation zero point {init.name!r}")
            shifted = numpy_helper.to_array(init).astype(np.int16) + 128
            init.CopyFrom(numpy_helper.from_array(shifted.astype(np.uint8), init.name))
            changed += 1
    if not changed:
        raise VariantCheckError("no int8 weight zero point to convert")
    _prune_and_infer(model)


def _build(name: str, source: onnx.ModelProto) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.CopyFrom(source)
    _make_batch_dynamic(model)
    if name == "w8a8-u8":
        _to_unsigned_weights(model)
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


def variant_logits(
    path: Path, patches: FloatArray, batch: int = 16, threads: int = 1
) -> npt.NDArray[np.float32]:
    """Float logits [n, classes] of one variant on this CPU; ``batch`` patches per run (1 for a
    fixed-batch model)."""
    meta = load_variant_metadata(path)
    session = _session(path, threads)
    step = batch if meta.dynamic_batch else 1
    feed = meta.model_input(patches)
    raw = [
        session.run(None, {meta.input_name: feed[i : i + step]})[0]
        for i in range(0, len(feed), step)
    ]
    return meta.logits(np.concatenate(raw))


@dataclass(frozen=True)
class VariantReport:
    """A variant's agreement with the exact semantics on this machine, and its batch check."""

    name: str
    agreement: Agreement
    batch_max_abs_logit_diff: float | None  # batched vs one at a time; None if fixed batch


def check_variant(path: Path, patches: FloatArray | None = None) -> VariantReport:
    meta = load_variant_metadata(path)
    patches = check_patches() if patches is None else patches
    batched = variant_logits(path, patches, 16)
    single_diff = None
    if meta.dynamic_batch:
        head = patches[:32]
        single = np.concatenate(
            [variant_logits(path, head[i : i + 1], 1) for i in range(len(head))]
        )
        single_diff = float(np.abs(single - batched[: len(head)]).max())
    return VariantReport(
        meta.name, agreement(batched, load_reference(), load_thresholds()), single_diff
    )


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
    report: Callable[[VariantReport], None] | None = None,
) -> dict[str, Path]:
    """Build, check and atomically write each missing or stale variant; name -> path.

    Idempotent: a variant whose recorded source sha256 matches the current files is kept as is.
    ``report`` gets each new variant's agreement with the exact semantics on this machine."""
    source_sha256 = _sha256_files(weights_dir)
    original_path = weights_dir / "model.onnx"
    paths = {name: variant_path(name, weights_dir, out_dir) for name in names}
    todo = [n for n in names if force or not _is_current(paths[n], source_sha256)]
    if not todo:
        return paths
    source = onnx.load(str(original_path))
    for name in todo:
        model = _build(name, source)
        meta = describe(model, name, source_sha256)
        onnx.helper.set_model_props(model, meta.to_props())
        target = paths[name]
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("wb") as handle:
                handle.write(model.SerializeToString())
                handle.flush()
                os.fsync(handle.fileno())
            _session(tmp)  # it loads: a structural error fails set-up, a wrong CPU does not
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        if report is not None:
            report(check_variant(target))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--out-dir", type=Path, default=None, help="default: WEIGHTS/variants")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    parser.add_argument(
        "--check", action="store_true", help="report every variant's agreement on this CPU"
    )
    args = parser.parse_args(argv)

    def show(report: VariantReport) -> None:
        a = report.agreement
        verdict = "agrees" if a.ok else "DISAGREES on this CPU (" + "; ".join(a.problems) + ")"
        print(
            f"{report.name}: {verdict} with the exact semantics on {a.windows} windows: "
            f"within one step {a.within_one_step:.1%}, p95 {a.p95_steps:.1f} steps, "
            f"top-1 {a.top1:.1%}, tag F1 {a.decision_f1:.3f}, mean |dp| {a.mean_abs_prob_diff:.5f}"
        )

    try:
        paths = prepare_variants(
            args.weights_dir, args.out_dir, tuple(args.variants.split(",")), args.force, show
        )
    except (VariantCheckError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        if args.check:
            show(check_variant(path))
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
