"""A small real custom detector for tests that need a model without going through training.

``tiny_head`` trains a head with ``models.heads`` (the code the training jobs run) on a few
seconds of generated audio: loud clicks (``glitch``) and stretches of near-silence
(``long_pause``) in a noisy, speech-like signal. It learns enough in a few epochs to find both
in ``click_and_pause_audio``, and it is exported to ONNX exactly as a training job exports one.
``install_model`` stores it for a team as a training job would (blob, then row).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from models.heads.config import TrainingConfig
from models.heads.data import AnnotatedFile
from models.heads.export import export_onnx
from models.heads.training import TrainedHead, train_head
from server.detectors.loader import store_model
from server.detectors.repository import DetectorModelRecord, ModelRepository
from server.storage import BlobStore

__all__ = [
    "RATE_HZ",
    "TYPES",
    "click_and_pause_audio",
    "install_model",
    "tiny_head",
    "tiny_head_onnx",
]

RATE_HZ = 16_000
TYPES = ("glitch", "long_pause")
_CLICK_MS = 2.0
_PAUSE_MS = 600.0


def click_and_pause_audio(
    seconds: float, clicks_s: Sequence[float], pauses_s: Sequence[float], seed: int
) -> tuple[npt.NDArray[np.float32], list[tuple[str, float, float]]]:
    """Speech-like noise (amplitude-modulated, band-limited), with a 2 ms full-scale click at
    each of ``clicks_s`` and a 600 ms stretch at -60 dBFS at each of ``pauses_s``; the
    annotations ``(type, start_ms, end_ms)`` that say where."""
    rng = np.random.default_rng(seed)
    count = int(seconds * RATE_HZ)
    t = np.arange(count) / RATE_HZ
    noise = np.convolve(rng.standard_normal(count), np.ones(8) / 8, mode="same")
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6.28)) ** 2
    audio = 0.3 * noise * envelope
    annotations: list[tuple[str, float, float]] = []
    for start_s in pauses_s:
        a, b = int(start_s * RATE_HZ), int((start_s + _PAUSE_MS / 1000) * RATE_HZ)
        audio[a:b] = 0.001 * rng.standard_normal(b - a)
        annotations.append(("long_pause", start_s * 1000, start_s * 1000 + _PAUSE_MS))
    for start_s in clicks_s:
        a = int(start_s * RATE_HZ)
        width = int(_CLICK_MS * RATE_HZ / 1000)
        audio[a : a + width] = 0.95
        annotations.append(("glitch", start_s * 1000, start_s * 1000 + _CLICK_MS))
    return audio.astype(np.float32), annotations


def _training_files() -> list[AnnotatedFile]:
    files = []
    for n in range(8):
        rng = np.random.default_rng(100 + n)
        clicks = sorted(rng.uniform(0.3, 5.6, size=4).round(3))
        pauses = [1.2 + 2.2 * k + rng.uniform(0, 0.3) for k in range(2)]
        clicks = [c for c in clicks if all(abs(c - p - 0.3) > 0.5 for p in pauses)]
        audio, annotations = click_and_pause_audio(6.0, clicks, pauses, seed=n)
        files.append(AnnotatedFile.build(f"train-{n}.wav", annotations, samples=audio))
    return files


@functools.cache
def tiny_head() -> TrainedHead:
    """Trained once per test process (a few seconds), deterministic."""
    config = TrainingConfig(artifact_types=TYPES, epochs=6, validation_split=0.25, seed=0)
    return train_head(_training_files(), config)


@functools.cache
def tiny_head_onnx() -> bytes:
    return export_onnx(tiny_head())


async def install_model(
    repository: ModelRepository,
    blobs: BlobStore,
    team: str,
    *,
    dataset_id: str = "dataset-1",
    name: str = "tiny head",
    model_id: str | None = None,
) -> DetectorModelRecord:
    """The tiny head stored as a team's model, as a training job stores one."""
    head = tiny_head()
    record = DetectorModelRecord(
        model_id or str(uuid.uuid4()),
        team,
        name,
        dataset_id,
        "annotation-set-1",
        "0" * 64,
        "training-job-1",
        head.artifact_types,
        head.metrics,
        "",
        0,
        "",
        1_700_000_000.0,
    )
    return await store_model(repository, blobs, record, tiny_head_onnx())
