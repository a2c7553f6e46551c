"""What the server needs at run time to feed a prepared YAMNet variant and read its output.

Light on purpose: onnx (to read a file's metadata without its weights) and numpy, nothing of
the set-up code in ``variants`` (graph surgery, checks), which the server never imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, numpy_helper

from models.yamnet.frontend import quantize_patches
from models.yamnet.spec import WEIGHTS_DIR

__all__ = [
    "CPU_CANDIDATES",
    "GPU_CANDIDATES",
    "INPUT_FLOAT32",
    "INPUT_UINT8",
    "ORIGINAL",
    "OUTPUT_FLOAT_LOGITS",
    "OUTPUT_UINT8_LOGITS",
    "VARIANTS",
    "VariantCheckError",
    "VariantMetadata",
    "load_variant_metadata",
    "variant_path",
]

ORIGINAL = "w8a8"
# w8a8-dyn: the fetched int8 graph with a dynamic batch (u8s8 kernels: fastest, exact where the
# CPU has VNNI, saturating on AVX2 without it); w8a8-u8: the same graph with its int8 weights
# stored as uint8 around zero point 128, the same values, run on u8u8 kernels that widen to 16
# bits and never saturate; fp32 and fp16: weights folded, activations in float.
VARIANTS = ("w8a8-dyn", "w8a8-u8", "fp32", "fp16")
# Tried in this order at start-up, the first that agrees with the exact semantics is served.
CPU_CANDIDATES = ("w8a8-dyn", "w8a8-u8", "fp32")
GPU_CANDIDATES = ("fp16", "fp32")
VARIANT_FORMAT = "2"  # bump when a transformation changes, so prepared files are rebuilt
_PROP_PREFIX = "tympan."

INPUT_UINT8 = "uint8"  # quantize_patches(patches, input_scale, input_zero_point)
INPUT_FLOAT32 = "float32"  # the float log-mel patch as is
OUTPUT_UINT8_LOGITS = "uint8-logits"  # (q - output_zero_point) * output_scale = logits
OUTPUT_FLOAT_LOGITS = "float-logits"

FloatArray = npt.NDArray[np.float64]


class VariantCheckError(RuntimeError):
    """A variant cannot be built or read."""


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


def variant_path(name: str, weights_dir: Path = WEIGHTS_DIR, out_dir: Path | None = None) -> Path:
    """Where a variant lives; ORIGINAL names the fetched model itself."""
    if name == ORIGINAL:
        return weights_dir / "model.onnx"
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; known: {(ORIGINAL, *VARIANTS)}")
    return (out_dir or weights_dir / "variants") / f"{name}.onnx"


def _scalar(inits: Mapping[str, onnx.TensorProto], name: str) -> float:
    return float(numpy_helper.to_array(inits[name]).reshape(-1)[0])


def describe(model: onnx.ModelProto, name: str, source_sha256: str) -> VariantMetadata:
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
    return describe(model, ORIGINAL, source_sha256="")
