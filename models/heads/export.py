"""A trained head as an ONNX model: frames in, per-frame probabilities out.

The graph is the numpy forward written in ONNX operators: ``(x - mean) * (1 / std)`` on
``features [frames, width]`` (time axis dynamic), one ``Conv`` per context branch (kernel
``2r + 1``, its dilation, zero padding of ``r * dilation`` on either side: exactly the numpy
context rows), their sum, ``Relu`` and a 1x1 ``Conv`` for an MLP, ``Sigmoid``, and
``probabilities [frames, types]``. It needs no custom operator, so the server's ONNX Runtime
runs it like YAMNet.

What a reader needs to use the model travels with it in ``metadata_props``: the artifact types
in output order, each type's threshold, merge window, minimum duration and boundary corrections, the frame hop and
cell offset, the context reach, the feature spec, the architecture and the validation metrics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.heads.network import HeadWeights
from models.heads.training import TrainedHead

__all__ = ["INPUT_NAME", "OPSET", "OUTPUT_NAME", "export_onnx", "metadata", "read_metadata"]

INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"
OPSET = 17


def _conv_weight(rows: np.ndarray, kernel: int, width: int) -> np.ndarray:
    """Rows ordered (tap, feature) -> ONNX Conv weight [out, feature, tap]."""
    return np.ascontiguousarray(rows.reshape(kernel, width, -1).transpose(2, 1, 0))


def _graph(weights: HeadWeights) -> onnx.GraphProto:
    arch = weights.architecture
    width = weights.width
    inits = [
        numpy_helper.from_array(weights.mean.astype(np.float32), "mean"),
        numpy_helper.from_array((1.0 / weights.std).astype(np.float32), "inv_std"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0"),
    ]
    nodes = [
        helper.make_node("Sub", [INPUT_NAME, "mean"], ["centred"]),
        helper.make_node("Mul", ["centred", "inv_std"], ["z"]),
        helper.make_node("Transpose", ["z"], ["z_t"], perm=[1, 0]),
        helper.make_node("Unsqueeze", ["z_t", "axis0"], ["z_nct"]),
    ]
    row = 0
    branch_outputs = []
    for b, (kernel, dilation) in enumerate(arch.branches()):
        rows = weights.w1[row : row + kernel * width]
        row += kernel * width
        inits.append(numpy_helper.from_array(_conv_weight(rows, kernel, width), f"w1_{b}"))
        inputs = ["z_nct", f"w1_{b}"]
        if b == 0:
            inits.append(numpy_helper.from_array(weights.b1.astype(np.float32), "b1"))
            inputs.append("b1")
        pad = (kernel - 1) // 2 * dilation
        nodes.append(
            helper.make_node(
                "Conv",
                inputs,
                [f"branch_{b}"],
                kernel_shape=[kernel],
                dilations=[dilation],
                pads=[pad, pad],
            )
        )
        branch_outputs.append(f"branch_{b}")
    nodes.append(helper.make_node("Sum", branch_outputs, ["pre"]))
    last = "pre"
    if weights.w2 is not None and weights.b2 is not None:
        w2 = np.ascontiguousarray(weights.w2.T[:, :, None])
        inits += [numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(weights.b2, "b2")]
        nodes += [
            helper.make_node("Relu", ["pre"], ["hidden"]),
            helper.make_node("Conv", ["hidden", "w2", "b2"], ["logits"], kernel_shape=[1]),
        ]
        last = "logits"
    nodes += [
        helper.make_node("Sigmoid", [last], ["p_nct"]),
        helper.make_node("Squeeze", ["p_nct", "axis0"], ["p_ct"]),
        helper.make_node("Transpose", ["p_ct"], [OUTPUT_NAME], perm=[1, 0]),
    ]
    types = weights.type_count
    return helper.make_graph(
        nodes,
        "tympan_head",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["frames", width])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["frames", types])],
        inits,
    )


def metadata(head: TrainedHead) -> dict[str, str]:
    """The model's ``metadata_props``: JSON values, so that any reader parses them alike."""
    spec = head.spec
    arch = head.weights.architecture
    return {
        "artifact_types": json.dumps(list(head.artifact_types)),
        "thresholds": json.dumps([r.threshold for r in head.rules]),
        "merge_window_ms": json.dumps([r.merge_window_ms for r in head.rules]),
        "min_duration_ms": json.dumps([r.min_duration_ms for r in head.rules]),
        "onset_shift_ms": json.dumps([r.onset_shift_ms for r in head.rules]),
        "offset_shift_ms": json.dumps([r.offset_shift_ms for r in head.rules]),
        "frame_hop_ms": json.dumps(spec.hop_ms),
        "cell_offset_ms": json.dumps(spec.cell_offset_ms),
        "context_frames": json.dumps(arch.reach_frames),
        "context_offsets": json.dumps(arch.offsets().tolist()),
        "architecture": arch.name,
        "feature_spec": json.dumps(
            {
                "name": spec.name,
                "layout": spec.describe(),
                "width": spec.width,
                "sample_rate_hz": spec.params.sample_rate_hz,
                "window_samples": spec.params.stft_window_samples,
                "hop_samples": spec.params.stft_hop_samples,
            }
        ),
        "metrics": json.dumps(head.metrics),
    }


def export_onnx(head: TrainedHead, extra: Mapping[str, str] | None = None) -> bytes:
    """The serialised, checked ONNX model of a trained head."""
    model = helper.make_model(
        _graph(head.weights),
        producer_name="tympan",
        opset_imports=[helper.make_opsetid("", OPSET)],
        doc_string="tympan custom head: frames [frames, width] -> probabilities [frames, types]",
    )
    model.ir_version = 8  # what the pinned ONNX Runtime reads, whatever onnx writes by default
    props = {**metadata(head), **(extra or {})}
    helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def read_metadata(model_bytes: bytes) -> dict[str, Any]:
    """The metadata of an exported head, JSON values decoded."""
    model = onnx.load_from_string(model_bytes)
    out: dict[str, Any] = {}
    for prop in model.metadata_props:
        try:
            out[prop.key] = json.loads(prop.value)
        except json.JSONDecodeError:
            out[prop.key] = prop.value
    return out
