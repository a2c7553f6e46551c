"""The only module that imports onnxruntime: load the model once, run batches of patches.

The runner holds no per-session state; the scheduler decides what runs together and calls
``run`` from an executor thread. Quantisation parameters of the uint8 input and output are read
from the model's own initializers, so a re-export with other scales keeps working.
"""

from __future__ import annotations

import ctypes
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from models.heads.features import FeatureSpec, spec_from_name
from models.heads.metrics import EventRule
from models.yamnet.checkset import Agreement, agreement, check_patches, load_reference
from models.yamnet.embedding_meta import (
    EMBEDDING_DIMS,
    EMBEDDING_INPUT,
    EMBEDDING_OUTPUT,
    SOURCE_SHA256_PROP,
    embedding_path,
)
from models.yamnet.thresholds import load_thresholds
from models.yamnet.variant_meta import (
    CPU_CANDIDATES,
    GPU_CANDIDATES,
    OUTPUT_UINT8_LOGITS,
    VARIANTS,
    VariantMetadata,
    load_variant_metadata,
    variant_path,
)

__all__ = [
    "EmbeddingRunner",
    "HeadRunner",
    "ModelLoadError",
    "OnnxRunner",
    "QuantParams",
    "check_runner",
    "choose_providers",
    "load_embedding_runner",
    "load_head_runner",
    "load_runner",
]

log = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class ModelLoadError(RuntimeError):
    """The model cannot be loaded: missing, corrupt or not the graph we expect."""


@dataclass(frozen=True)
class QuantParams:
    scale: float
    zero_point: int


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
        self,
        model_path: Path,
        provider: str | None = None,
        intra_op_threads: int = 1,
        max_batch: int = 16,
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
        self.model_path = model_path
        self.variant_checks: dict[str, dict[str, Any]] = {}
        self._session = _open_session(model_path, options, choose_providers(provider))
        self.provider = self._session.get_providers()[0]
        try:
            self.meta: VariantMetadata = load_variant_metadata(model_path)
        except Exception as exc:  # not one of our variants, or not YAMNet at all
            raise ModelLoadError(f"{model_path} is not a usable YAMNet variant: {exc}") from exc
        self.variant = self.meta.name
        self._input_name = self.meta.input_name
        model_input = self._session.get_inputs()[0]
        self.fixed_batch = None if self.meta.dynamic_batch else model_input.shape[0]
        # Batch sizes warmed up at start. On GPUs a batch is padded up to its bucket so that
        # only these shapes ever run (TensorRT builds an engine per shape); on the CPU the
        # kernels are shape-agnostic and padding would only waste work.
        self.bucket_sizes: tuple[int, ...] = (
            _buckets(max_batch) if self.meta.dynamic_batch else (1,)
        )
        self._pad_to_bucket = self.meta.dynamic_batch and self.provider != CPU_PROVIDER
        self.input_quant = _quant(self.meta.input_scale, self.meta.input_zero_point)
        self.output_quant = _quant(self.meta.output_scale, self.meta.output_zero_point)
        # uint8 outputs take 256 values: their probabilities are looked up, one numpy call
        # per batch instead of nine (each a GIL hand-off, see prepare()).
        self._probability_of_byte: npt.NDArray[np.float32] | None = None
        if self.meta.output_kind == OUTPUT_UINT8_LOGITS:
            every_byte = np.arange(256, dtype=np.uint8)[None, :]
            self._probability_of_byte = _sigmoid(self.meta.logits(every_byte))[0]
        log.info(
            "model loaded: %s (variant %s) provider=%s dynamic_batch=%s threads=%d",
            model_path.name,
            self.variant,
            self.provider,
            self.meta.dynamic_batch,
            intra_op_threads,
        )

    def prepare(self, patches: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Float log-mel patches [n, 96, 64] -> what ``run`` takes without converting: uint8
        for a uint8-input model, float32 otherwise. The engine prepares windows as they are
        cut, so the inference thread does not: every numpy call there releases and retakes
        the GIL, and behind a busy event loop each retake waited (a model thread sharing the
        interpreter with a busy Python thread ran batches of 16 at half speed)."""
        if self.meta.input_dtype == "uint8":
            return self.meta.model_input(patches)[:, 0]
        return np.asarray(patches, dtype=np.float32)

    def run(self, patches: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """[n, 96, 64] log-mel patches (float; or uint8 already quantised for a uint8 model)
        -> [n, classes] probabilities (sigmoid of the logits)."""
        raw = self._raw(patches)
        if self._probability_of_byte is not None:
            return self._probability_of_byte[raw]
        return _sigmoid(self.meta.logits(raw))

    def logits(self, patches: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Like ``run``, but the logits, for comparing with the exact semantics."""
        return self.meta.logits(self._raw(patches))

    def _raw(self, patches: npt.NDArray[Any]) -> npt.NDArray[Any]:
        if patches.dtype == np.uint8:
            if self.meta.input_dtype != "uint8":
                raise TypeError(f"variant {self.variant} takes float log-mel patches, not uint8")
            batch: npt.NDArray[Any] = patches[:, None, :, :]
        elif patches.dtype == np.float32 and self.meta.input_dtype != "uint8":
            batch = patches[:, None, :, :]
        else:
            batch = self.meta.model_input(patches)
        if self.fixed_batch == 1:
            raw = np.concatenate(
                [
                    self._session.run(None, {self._input_name: batch[i : i + 1]})[0]
                    for i in range(len(batch))
                ]
            )
        elif self._pad_to_bucket:
            raw = self._run_padded(batch)
        else:
            raw = self._session.run(None, {self._input_name: batch})[0]
        return raw

    def _run_padded(self, batch: npt.NDArray[Any]) -> npt.NDArray[Any]:
        outputs = []
        largest = self.bucket_sizes[-1]
        for start in range(0, len(batch), largest):
            part = batch[start : start + largest]
            size = next(b for b in self.bucket_sizes if b >= len(part))
            if size > len(part):
                padding = np.zeros((size - len(part), *part.shape[1:]), dtype=part.dtype)
                part = np.concatenate([part, padding])
            outputs.append(
                self._session.run(None, {self._input_name: part})[0][: len(batch) - start]
            )
        return np.concatenate(outputs)


def _sigmoid(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32)  # overflow-free


def _buckets(max_batch: int) -> tuple[int, ...]:
    sizes = [1]
    while sizes[-1] * 2 < max_batch:
        sizes.append(sizes[-1] * 2)
    if sizes[-1] != max_batch:
        sizes.append(max_batch)
    return tuple(sizes)


# Agreement of a loaded variant with the exact semantics, per (file, its mtime, provider): the
# check runs once per process, not at every app start (the test suite starts many).
_CHECKS: dict[tuple[str, int, str], Agreement] = {}


def check_runner(runner: OnnxRunner, max_batch: int = 16) -> Agreement:
    """Run the check set through ``runner`` as the server would and compare with the exact
    semantics (``models.yamnet.checkset``). Takes ~0.4 s for w8a8-dyn on one core."""
    key = (str(runner.model_path), runner.model_path.stat().st_mtime_ns, runner.provider)
    if key not in _CHECKS:
        patches = check_patches()
        logits = np.concatenate(
            [
                runner.logits(runner.prepare(patches[i : i + max_batch]))
                for i in range(0, len(patches), max_batch)
            ]
        )
        _CHECKS[key] = agreement(logits, load_reference(), load_thresholds())
    return _CHECKS[key]


def load_runner(settings: Any, model_dir: Path) -> OnnxRunner:
    """The fastest variant that agrees with the exact semantics on this machine.

    ``auto`` tries, on CPU, w8a8-dyn (u8s8 kernels), then w8a8-u8 (u8u8 kernels, which do not
    saturate on AVX2 CPUs without VNNI), then fp32; on a GPU fp16 then fp32. Each is checked on
    the check set; one that disagrees is skipped with a warning naming what was wrong. If none
    agrees the last is served and the log says so. A variant named in the settings is served
    whatever its check says, and the check is still reported. ``runner.variant_checks`` keeps
    every verdict, for ``/readyz`` and ``/metrics``."""
    name = settings.model_variant
    if name == "auto":
        gpu = any(p != CPU_PROVIDER for p in choose_providers(settings.provider))
        candidates: tuple[str, ...] = GPU_CANDIDATES if gpu else CPU_CANDIDATES
    elif name in (*VARIANTS, "w8a8"):
        candidates = (name,)
    else:
        raise ModelLoadError(f"unknown model variant {name!r}; known: auto, w8a8, {VARIANTS}")
    checks: dict[str, dict[str, Any]] = {}
    runner = None
    for position, candidate in enumerate(candidates):
        path = variant_path(candidate, model_dir)
        if not path.is_file():
            raise ModelLoadError(
                f"model variant {candidate!r} is missing ({path}); run `make setup`"
            )
        runner = OnnxRunner(
            path, settings.provider, settings.intra_op_threads, settings.max_batch_size
        )
        verdict = check_runner(runner, settings.max_batch_size)
        checks[candidate] = {**verdict.summary(), "problems": verdict.problems}
        if verdict.ok:
            log.info(
                "model variant %s agrees with the exact semantics on %d check windows "
                "(p95 %.1f steps, top-1 %.1f%%, tag F1 %.3f)",
                candidate,
                verdict.windows,
                verdict.p95_steps,
                100 * verdict.top1,
                verdict.decision_f1,
            )
            break
        last = position == len(candidates) - 1
        log.warning(
            "model variant %s disagrees with the exact semantics on this CPU (%s); %s",
            candidate,
            "; ".join(verdict.problems),
            "serving it anyway" if last else "trying the next variant",
        )
    assert runner is not None
    runner.variant_checks = checks
    return runner


def _quant(scale: float | None, zero_point: int | None) -> QuantParams | None:
    return None if scale is None or zero_point is None else QuantParams(scale, zero_point)


_EMBEDDING_BATCH = 32


class EmbeddingRunner:
    """The set-up-prepared embedding graph (``models.yamnet.embedding``) on the CPU with one
    thread, which is the caller's: the dataset processor calls it from its own low-priority
    thread, so it never competes with the live path's sessions for their threads."""

    def __init__(self, path: Path) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = _open_session(path, options, [CPU_PROVIDER])
        outputs = [o.name for o in self._session.get_outputs()]
        if outputs != [EMBEDDING_OUTPUT] or self._session.get_inputs()[0].name != EMBEDDING_INPUT:
            raise ModelLoadError(f"{path} is not tympan's embedding graph (outputs {outputs})")
        meta = self._session.get_modelmeta().custom_metadata_map
        if SOURCE_SHA256_PROP not in meta:
            raise ModelLoadError(f"{path} was not prepared and checked by set-up")

    def run(self, patches: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Float log-mel patches [n, 96, 64] -> embeddings [n, 1024], float32."""
        batch = patches[:, None, :, :].astype(np.float32, copy=False)
        parts = [
            self._session.run(None, {EMBEDDING_INPUT: batch[i : i + _EMBEDDING_BATCH]})[0]
            for i in range(0, len(batch), _EMBEDDING_BATCH)
        ]
        if not parts:
            return np.empty((0, EMBEDDING_DIMS), dtype=np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)


def load_embedding_runner(model_dir: Path) -> EmbeddingRunner | None:
    """The embedding runner, or None (logged) when set-up has not prepared the graph: dataset
    files are then processed without embeddings rather than not at all."""
    path = embedding_path(model_dir)
    if not path.exists():
        log.warning(
            "no embedding graph at %s (python -m models.yamnet.embedding prepares it): dataset "
            "audio is processed without embeddings",
            path,
        )
        return None
    return EmbeddingRunner(path)


_HEAD_INPUT = "features"
_HEAD_OUTPUT = "probabilities"
_HEAD_CHUNK_FRAMES = 65536  # bounded memory on a long file; the context spans chunk joins


class HeadRunner:
    """A custom detector (``models.heads.export``) on the CPU with one thread: frames
    ``[frames, width]`` -> probabilities ``[frames, types]``. Everything needed to use it comes
    from the model's own metadata: its artifact types in output order, each type's
    frames-to-events rule, the feature spec it was trained on and its context reach. Heads are
    a few thousand multiply-adds per 10 ms frame, so the GPU would cost more in transfers than
    it saves; ``run`` is thread-safe."""

    def __init__(self, model_bytes: bytes) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(model_bytes, options, providers=[CPU_PROVIDER])
            meta = {
                key: _json_value(value)
                for key, value in self._session.get_modelmeta().custom_metadata_map.items()
            }
            self.artifact_types: tuple[str, ...] = tuple(meta["artifact_types"])
            self.spec: FeatureSpec = spec_from_name(meta["feature_spec"]["name"])
            self.context_frames = int(meta["context_frames"])
            hop_ms, offset_ms = float(meta["frame_hop_ms"]), float(meta["cell_offset_ms"])
            self.rules: tuple[EventRule, ...] = tuple(
                EventRule(float(t), float(m), float(d), hop_ms, offset_ms, float(on), float(off))
                for t, m, d, on, off in zip(
                    meta["thresholds"],
                    meta["merge_window_ms"],
                    meta["min_duration_ms"],
                    meta["onset_shift_ms"],
                    meta["offset_shift_ms"],
                    strict=True,
                )
            )
        except Exception as exc:  # not a tympan head, or one this server cannot read
            raise ModelLoadError(f"not a usable custom detector model: {exc}") from exc
        inputs = self._session.get_inputs()
        if [i.name for i in inputs] != [_HEAD_INPUT] or inputs[0].shape[1] != self.spec.width:
            raise ModelLoadError("not a usable custom detector model: unexpected input")

    def run(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Per-frame probabilities for one file's (or one stretch's) consecutive frames; the
        first and last ``context_frames`` see zeros (the training mean) beyond the ends."""
        frames = np.ascontiguousarray(features, dtype=np.float32)
        if frames.shape[0] <= _HEAD_CHUNK_FRAMES:
            return self._run(frames)
        reach = self.context_frames
        parts = []
        for start in range(0, frames.shape[0], _HEAD_CHUNK_FRAMES):
            stop = min(frames.shape[0], start + _HEAD_CHUNK_FRAMES)
            lo, hi = max(0, start - reach), min(frames.shape[0], stop + reach)
            out = self._run(frames[lo:hi])
            parts.append(out[start - lo : start - lo + stop - start])
        return np.concatenate(parts)

    def _run(self, frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        if frames.shape[0] == 0:
            return np.empty((0, len(self.artifact_types)), dtype=np.float32)
        out = self._session.run([_HEAD_OUTPUT], {_HEAD_INPUT: frames})[0]
        return np.asarray(out, dtype=np.float32)


def _json_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def load_head_runner(model_bytes: bytes) -> HeadRunner:
    """A custom detector's runner from its ONNX file; ``ModelLoadError`` if it is not one."""
    return HeadRunner(model_bytes)
