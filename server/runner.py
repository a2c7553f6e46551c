"""The only module that imports onnxruntime: load the model once, run batches of patches.

The runner holds no per-session state; the scheduler decides what runs together and calls
``run`` from an executor thread. Quantisation parameters of the uint8 input and output are read
from the model's own initializers, so a re-export with other scales keeps working.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import numpy_helper

__all__ = ["ModelLoadError", "OnnxRunner", "QuantParams", "choose_providers"]

log = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class ModelLoadError(RuntimeError):
    """The model cannot be loaded: missing, corrupt or not the graph we expect."""


@dataclass(frozen=True)
class QuantParams:
    scale: float
    zero_point: int


def _read_quant_params(
    model_path: Path, input_name: str, output_name: str
) -> tuple[QuantParams, QuantParams]:
    model = onnx.load(str(model_path), load_external_data=False)
    inits = {init.name: init for init in model.graph.initializer}

    def value(name: str) -> float:
        if name not in inits:
            raise ModelLoadError(f"quantisation parameter {name!r} is not an initializer")
        return float(numpy_helper.to_array(inits[name]).reshape(-1)[0])

    input_q = output_q = None
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] == input_name:
            input_q = QuantParams(value(node.input[1]), int(value(node.input[2])))
        if node.op_type == "QuantizeLinear" and node.output[0] == output_name:
            output_q = QuantParams(value(node.input[1]), int(value(node.input[2])))
    if input_q is None or output_q is None:
        raise ModelLoadError("model does not have a quantised uint8 input and output")
    return input_q, output_q


def _gpu_driver_present() -> bool:
    """The GPU providers are compiled into onnxruntime-gpu even on machines without a GPU;
    trying them there only produces load errors, so look for the NVIDIA driver first."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def choose_providers(requested: str | None) -> list[str]:
    """Candidates in order of preference (TensorRT, CUDA, CPU), or exactly the one requested."""
    available = ort.get_available_providers()
    if requested:
        name = (
            requested
            if requested.endswith("ExecutionProvider")
            else requested + "ExecutionProvider"
        )
        matches = [p for p in available if p.lower() == name.lower()]
        if not matches:
            raise ModelLoadError(f"execution provider {requested!r} is not available: {available}")
        return [matches[0]]
    gpu = _gpu_driver_present()
    return [p for p in PROVIDER_PREFERENCE if p in available and (gpu or p == CPU_PROVIDER)]


def _open_session(
    model_path: Path, options: ort.SessionOptions, candidates: list[str]
) -> ort.InferenceSession:
    """The first candidate that really initialises; CPU is the last resort unless one was forced."""
    errors: list[str] = []
    for provider in candidates:
        chain = [provider] if provider == CPU_PROVIDER else [provider, CPU_PROVIDER]
        try:
            session = ort.InferenceSession(str(model_path), options, providers=chain)
        except Exception as exc:  # ORT raises its own Fail/RuntimeError types
            errors.append(f"{provider}: {exc}")
            continue
        if session.get_providers()[0] == provider:
            return session
        errors.append(f"{provider}: did not initialise (missing CUDA/TensorRT libraries?)")
    raise ModelLoadError(f"cannot load model {model_path}: " + "; ".join(errors))


class OnnxRunner:
    """One ONNX Runtime session over the YAMNet model; ``run`` is thread-safe (ORT sessions are)."""

    def __init__(
        self, model_path: Path, provider: str | None = None, intra_op_threads: int = 1
    ) -> None:
        if not model_path.is_file():
            raise ModelLoadError(f"model file {model_path} is missing; run `make setup`")
        options = ort.SessionOptions()
        # Deliberate on small machines: one intra-op thread per run, the event loop and the
        # decoder get the other core; parallelism comes from batching, not from op threads.
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self._session = _open_session(model_path, options, choose_providers(provider))
        self.provider = self._session.get_providers()[0]
        model_input = self._session.get_inputs()[0]
        model_output = self._session.get_outputs()[0]
        self._input_name = model_input.name
        self.fixed_batch = model_input.shape[0] if isinstance(model_input.shape[0], int) else None
        self.input_quant, self.output_quant = _read_quant_params(
            model_path, model_input.name, model_output.name
        )
        log.info(
            "model loaded: %s provider=%s fixed_batch=%s threads=%d",
            model_path.name,
            self.provider,
            self.fixed_batch,
            intra_op_threads,
        )

    def run(self, patches: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """[n, 96, 64] uint8 patches -> [n, classes] probabilities (sigmoid of the logits)."""
        batch = patches[:, None, :, :]
        if self.fixed_batch == 1:
            raw = np.concatenate(
                [
                    self._session.run(None, {self._input_name: batch[i : i + 1]})[0]
                    for i in range(len(batch))
                ]
            )
        else:
            raw = self._session.run(None, {self._input_name: batch})[0]
        logits = (raw.astype(np.float32) - self.output_quant.zero_point) * self.output_quant.scale
        return (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32)  # overflow-free sigmoid
