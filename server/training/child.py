"""The training job's child process: reads the files the server put in its work folder, trains
the head, exports it to ONNX, and sends the result back on a pipe.

Training runs here, never in the server's process: a thread of the server shares the GIL with
the event loop that answers live streams, and even at nice 10 that raised their latency
(``benchmarks/processing_interference.py``); a process has its own GIL, runs at nice 10, and a
crash in it fails the job, not the server. The server stops it by killing it (cancel, shutdown);
a child whose server died (SIGKILL) notices at its next cancel check and exits, since the
server's successor runs the job again.

Messages, child to server: ``("epoch", done, total)`` after each epoch, then one of
``("done", result)`` or ``("failed", message)``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["ChildRequest", "ChildResult", "main"]


@dataclass(frozen=True)
class ChildRequest:
    files: tuple[tuple[str, str, tuple[tuple[str, float, float], ...]], ...]  # id, path, events
    config: dict[str, Any]  # ``TrainingConfig.as_dict()``
    metadata: dict[str, str]  # written into the ONNX model's metadata_props
    nice: int


@dataclass(frozen=True)
class ChildResult:
    onnx: bytes
    artifact_types: tuple[str, ...]
    metrics: dict[str, dict[str, Any]]
    train_files: tuple[str, ...]
    validation_files: tuple[str, ...]


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars as Python numbers, a non-finite number as None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | bool | int) or value is None:
        return value
    number = float(value)
    return number if math.isfinite(number) else None


def main(conn: Connection, request: ChildRequest) -> None:
    parent = os.getppid()
    with contextlib.suppress(OSError):
        os.nice(request.nice)
    try:
        conn.send(("done", _train(conn, request, parent)))
    except _Orphaned:
        pass
    except ValueError as exc:  # what the data cannot give (models.heads says why)
        conn.send(("failed", f"training failed: {exc}"))
    except Exception as exc:
        traceback.print_exc()
        conn.send(("failed", f"internal error while training the model ({type(exc).__name__})"))
    finally:
        conn.close()


class _Orphaned(Exception):
    pass


def _train(conn: Connection, request: ChildRequest, parent: int) -> ChildResult:
    import soundfile

    from models.heads.config import TrainingConfig
    from models.heads.data import AnnotatedFile
    from models.heads.export import export_onnx
    from models.heads.features import WITH_SAMPLE_FEATURES
    from models.heads.training import TrainingCanceled, train_head

    rate_hz = WITH_SAMPLE_FEATURES.params.sample_rate_hz
    files = []
    for audio_id, path, events in request.files:
        try:
            samples, file_rate_hz = soundfile.read(path, dtype="float32", always_2d=True)
        except (RuntimeError, OSError) as exc:  # soundfile's errors are RuntimeErrors
            raise ValueError(
                f"the processed audio of file {audio_id} cannot be read ({exc})"
            ) from None
        if file_rate_hz != rate_hz:
            raise ValueError(f"audio file {audio_id} is at {file_rate_hz} Hz, not {rate_hz} Hz")
        files.append(AnnotatedFile.build(audio_id, events, samples=samples.mean(axis=1)))

    def epoch_done(epoch: int, epochs: int, _record: Any) -> None:
        conn.send(("epoch", epoch, epochs))

    try:
        head = train_head(
            files,
            TrainingConfig.from_mapping(request.config),
            progress=epoch_done,
            should_cancel=lambda: os.getppid() != parent,
        )
    except TrainingCanceled:
        raise _Orphaned from None
    metrics = _plain(head.metrics)
    onnx = export_onnx(head, {**request.metadata, "metrics": json.dumps(metrics)})
    return ChildResult(
        onnx,
        tuple(head.artifact_types),
        metrics,
        tuple(head.train_files),
        tuple(head.validation_files),
    )
