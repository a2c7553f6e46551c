"""The inference worker's child process: decoding, features, the head and events, one file at a
time, fed by the server.

It runs here, not in a thread of the server, for the reason the dataset audio processor's child
does (``server.datasets.audio_child``): a thread of the server shares the GIL with the event
loop that answers live streams; a process has its own, runs at nice 10, and a decoder that
crashes on a hostile file takes this process down, not the server.

The functions below run in the single worker of a spawned ``ProcessPoolExecutor``; calls arrive
in order. Models arrive as their ONNX bytes once (``load_model``) and stay, by sha256, for the
files after; the detector of the file in hand stays in this module between calls. A child whose
server died (SIGKILL) stops at its next call instead of working on, since the server's
successor starts the file over.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from dataclasses import replace

from server.audio import AudioFormat, DecodeLimits, StreamDecoder, decode_file
from server.audio.formats import TARGET_RATE_HZ
from server.inference.detect import StreamingDetector
from server.runner import HeadRunner, load_head_runner

__all__ = [
    "discard",
    "feed_chunk",
    "feed_file",
    "finish",
    "has_model",
    "init",
    "load_model",
    "start",
]

_MODELS_KEPT = 4
_FILE_BLOCK_SAMPLES = 15 * TARGET_RATE_HZ
RuleRow = tuple[str, float, float, float]
Detection = tuple[str, int, int, float]

_state: dict[str, object] = {}
_models: OrderedDict[str, HeadRunner] = OrderedDict()


class _File:
    def __init__(self, fmt: AudioFormat, limits: DecodeLimits, detector: StreamingDetector):
        self.fmt, self.limits, self.detector = fmt, limits, detector
        self.decoder = StreamDecoder(fmt, limits)


def init(nice: int) -> None:
    """Pool initializer: lower the priority, note the parent."""
    _state["parent"] = os.getppid()
    with contextlib.suppress(OSError):
        os.nice(nice)


def _check_parent() -> None:
    if os.getppid() != _state.get("parent"):
        os._exit(0)  # orphaned: the server that asked is gone


def has_model(sha256: str) -> bool:
    _check_parent()
    return sha256 in _models


def load_model(sha256: str, model_bytes: bytes) -> None:
    """Raises ``ModelLoadError`` for a file that is not a usable head."""
    _models[sha256] = load_head_runner(model_bytes)
    while len(_models) > _MODELS_KEPT:
        _models.popitem(last=False)


def start(sha256: str, rules: tuple[RuleRow, ...], fmt: AudioFormat, limits: DecodeLimits) -> None:
    """A new file, run by the model ``sha256`` (loaded before) with the job's ``rules``."""
    discard()
    runner = _models[sha256]
    _models.move_to_end(sha256)
    by_type = {name: (threshold, merge, minimum) for name, threshold, merge, minimum in rules}
    if set(by_type) != set(runner.artifact_types):
        raise ValueError("the job's rules do not name the model's artifact types")
    chosen = tuple(
        replace(
            rule,
            threshold=by_type[name][0],
            merge_window_ms=by_type[name][1],
            min_duration_ms=by_type[name][2],
        )
        for name, rule in zip(runner.artifact_types, runner.rules, strict=True)
    )
    _state["file"] = _File(fmt, limits, StreamingDetector(runner, chosen))


def _file() -> _File:
    _check_parent()
    current = _state.get("file")
    if not isinstance(current, _File):
        raise RuntimeError("no file is being processed in this child")
    return current


def feed_chunk(data: bytes) -> None:
    """One chunk of a streamable format (raises DecodeError, AudioLimitError)."""
    current = _file()
    current.detector.push(current.decoder.decode_chunk(data))


def feed_file(data: bytes) -> None:
    """A whole file whose index may be at its end (MP4), decoded in one call."""
    current = _file()
    samples = decode_file(current.fmt, data, current.limits)
    for first in range(0, samples.shape[0], _FILE_BLOCK_SAMPLES):
        current.detector.push(samples[first : first + _FILE_BLOCK_SAMPLES])


def finish(streamed: bool) -> tuple[int, list[Detection]]:
    """The file's sample count (16 kHz) and its detections."""
    current = _file()
    if streamed:
        current.detector.push(current.decoder.flush())
    detections = current.detector.finish()
    _state.pop("file", None)
    return current.detector.sample_count, detections


def discard() -> None:
    _state.pop("file", None)
