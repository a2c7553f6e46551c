"""The shipped QDQ model's semantics computed exactly, the same on every machine.

ONNX Runtime's fused int8 kernels, and even its float kernels with graph optimisations off,
compute each layer in float32 in an order that depends on the CPU; the model has 28 quantised
layers, and a rounding that flips in one of them moves the next layer's inputs by a whole step,
so outputs of the "same" model differ between machines by several output steps (measured in
benchmarks/RESULTS.md). This module evaluates the graph as real-number arithmetic instead:

- a DequantizeLinear output is kept as its integers ``q - zero_point`` and its scale;
- a Conv or Gemm of two dequantised tensors sums integer products in float64, which is exact
  (every partial sum is an integer below 2**53, so no BLAS order or FMA changes it), then scales
  by ``x_scale * w_scale`` and adds the float bias, each one float64 rounding;
- QuantizeLinear divides, rounds half to even and saturates, as ONNX defines it.

A rounding in the final QuantizeLinear can flip only when the real value lies within about
1e-15 of a half step, so the result is the model's exact output on every CPU, and it is what
every variant is compared with (``models.yamnet.checkset``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from onnx import numpy_helper

__all__ = ["ExactModel"]

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class _Dequantized:
    """``(ints) * scale`` with ``ints`` integer-valued float64 and scale per tensor or channel."""

    ints: F64
    scale: F64  # broadcastable to ints


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _channel_shape(values: np.ndarray, axis: int, ndim: int) -> list[int]:
    shape = [1] * ndim
    if values.ndim:
        shape[axis] = -1
    return shape


class ExactModel:
    """Evaluates the fetched QDQ YAMNet graph exactly; ``run(uint8 patches) -> uint8 scores``."""

    def __init__(self, model_path: Path) -> None:
        model = onnx.load(str(model_path))
        self._graph = model.graph
        self._inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.input_name = model.graph.input[0].name
        self.output_name = model.graph.output[0].name
        ops = {node.op_type for node in self._graph.node}
        known = {
            "QuantizeLinear",
            "DequantizeLinear",
            "Conv",
            "Relu",
            "GlobalAveragePool",
            "Reshape",
            "Gemm",
        }
        if ops - known:
            raise ValueError(f"no exact rule for ops {sorted(ops - known)}")

    def run(self, input_q: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        values: dict[str, object] = {self.input_name: input_q}
        for node in self._graph.node:
            values[node.output[0]] = self._eval(node, values)
        out = values[self.output_name]
        assert isinstance(out, np.ndarray)
        return out.astype(np.uint8)

    # -- ops -------------------------------------------------------------------------------------

    def _get(self, name: str, values: dict[str, object]) -> object:
        return self._inits[name] if name in self._inits else values[name]

    def _eval(self, node: onnx.NodeProto, values: dict[str, object]) -> object:
        op = node.op_type
        args: list[Any] = [self._get(name, values) for name in node.input]
        attrs = _attrs(node)
        if op == "QuantizeLinear":
            return self._quantize(args[0], args[1], args[2], int(attrs.get("axis", 1)))
        if op == "DequantizeLinear":
            q, scale, zp = (np.asarray(a) for a in args)
            axis = int(attrs.get("axis", 1))
            shape = _channel_shape(scale, axis, q.ndim)
            ints = q.astype(np.float64) - zp.astype(np.float64).reshape(shape)
            return _Dequantized(ints, scale.astype(np.float64).reshape(shape))
        if op == "Relu":
            x = args[0]
            assert isinstance(x, np.ndarray)
            return np.maximum(x, 0.0)
        if op == "Conv":
            return self._conv(args, attrs)
        if op == "GlobalAveragePool":
            x = args[0]
            if isinstance(x, _Dequantized):  # a mean of integers: exact sum, one division
                total = x.ints.sum(axis=(2, 3), keepdims=True)
                return total * x.scale / float(x.ints.shape[2] * x.ints.shape[3])
            assert isinstance(x, np.ndarray)
            return x.mean(axis=(2, 3), keepdims=True)
        if op == "Reshape":
            x = args[0]
            new_shape = np.asarray(args[1]).copy()
            ints = x.ints if isinstance(x, _Dequantized) else np.asarray(x)
            new_shape[new_shape == 0] = np.asarray(ints.shape)[: len(new_shape)][new_shape == 0]
            new_shape[0] = ints.shape[0]  # the export fixes the batch to 1; evaluate any batch
            if isinstance(x, _Dequantized):
                if x.scale.size != 1:
                    raise ValueError("Reshape of a per-channel dequantised tensor")
                return _Dequantized(ints.reshape(new_shape), x.scale.reshape(()))
            return ints.reshape(new_shape)
        if op == "Gemm":
            return self._gemm(args, attrs)
        raise ValueError(op)

    @staticmethod
    def _quantize(x: object, scale: np.ndarray, zp: np.ndarray, axis: int) -> np.ndarray:
        if isinstance(x, _Dequantized):
            x = x.ints * x.scale
        x = np.asarray(x, dtype=np.float64)
        shape = _channel_shape(scale, axis, x.ndim)
        info = np.iinfo(zp.dtype)
        q = np.rint(x / scale.astype(np.float64).reshape(shape))  # half to even, as ONNX
        q = q + zp.astype(np.float64).reshape(shape)
        return np.clip(q, info.min, info.max).astype(zp.dtype)

    @staticmethod
    def _conv(args: list[object], attrs: dict[str, Any]) -> F64:
        x, w = args[0], args[1]
        bias = np.asarray(args[2], dtype=np.float64) if len(args) > 2 else None
        if not (isinstance(x, _Dequantized) and isinstance(w, _Dequantized)):
            raise ValueError("Conv expects dequantised input and weights")
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        sh, sw = list(attrs.get("strides", [1, 1]))
        group = int(attrs.get("group", 1))
        if list(attrs.get("dilations", [1, 1])) != [1, 1]:
            raise ValueError("dilated Conv is not expected")
        xi = np.pad(x.ints, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
        out_c, in_per_group, kh, kw = w.ints.shape
        windows = sliding_window_view(xi, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
        # windows: [n, c, oh, ow, kh, kw]
        if group == 1:
            acc = np.einsum("nchwij,ocij->nohw", windows, w.ints, optimize=True)
        elif group == out_c and in_per_group == 1:
            acc = np.einsum("nchwij,cij->nchw", windows, w.ints[:, 0], optimize=True)
        else:
            raise ValueError(f"grouped Conv with group={group} is not expected")
        w_scale = w.scale.reshape(1, -1, 1, 1)
        y = acc * (
            x.scale.reshape(1, -1, 1, 1) * w_scale if x.scale.size > 1 else x.scale * w_scale
        )
        if bias is not None:
            y = y + bias.reshape(1, -1, 1, 1)
        return y

    @staticmethod
    def _gemm(args: list[object], attrs: dict[str, Any]) -> F64:
        a, b = args[0], args[1]
        bias = np.asarray(args[2], dtype=np.float64) if len(args) > 2 else None
        if attrs.get("transA", 0) or float(attrs.get("alpha", 1.0)) != 1.0:
            raise ValueError("Gemm with transA or alpha is not expected")
        if not (isinstance(a, _Dequantized) and isinstance(b, _Dequantized)):
            raise ValueError("Gemm expects dequantised operands")
        b_ints, b_scale = b.ints, b.scale
        if attrs.get("transB", 0):
            b_ints, b_scale = b_ints.T, b_scale.T
        acc = a.ints.reshape(a.ints.shape[0], -1) @ b_ints
        y = acc * (a.scale.reshape(1, -1) * b_scale.reshape(1, -1))
        if bias is not None:
            y = y + float(attrs.get("beta", 1.0)) * bias.reshape(1, -1)
        return y
