"""The dataset audio processor's child process: one ``Normaliser`` at a time, fed by the server.

Processing runs here, not in a thread of the server, because a thread of the server shares the
GIL with the event loop that answers live streams: at nice 10 it stayed off the CPU the streams
needed but not off the GIL (``benchmarks/processing_interference.py`` measured live latency
p50 1.2x while a file was processed). A process has its own GIL, runs at nice 10, and a decoder
that crashes on a hostile file takes this process down, not the server.

The functions below run in the single worker of a ``ProcessPoolExecutor`` (spawned, so no
state of the server is inherited); calls arrive in order and the normaliser in hand stays in
this module between them. A child whose server died (SIGKILL) exits within half a second
(``server.childproc``), and at its next call in any case, since the server's successor starts
the file over.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from server.audio import AudioFormat, DecodeLimits
from server.childproc import exit_with_parent
from server.datasets.audio_normalise import Embed, Normalised, Normaliser

__all__ = ["discard", "feed_chunk", "feed_file", "finish", "init", "start"]

_state: dict[str, object] = {}


def init(model_dir: str | None, nice: int) -> None:
    """Pool initializer: end with the server, lower the priority, load the embedding graph."""
    _state["parent"] = os.getppid()
    exit_with_parent()
    with contextlib.suppress(OSError):
        os.nice(nice)
    embed: Embed | None = None
    if model_dir is not None:
        from server.runner import load_embedding_runner  # onnxruntime: in the child only

        runner = load_embedding_runner(Path(model_dir))
        embed = None if runner is None else runner.run
    _state["embed"] = embed


def _normaliser() -> Normaliser:
    if os.getppid() != _state.get("parent"):
        os._exit(0)  # orphaned: the server that asked is gone
    normaliser = _state.get("normaliser")
    if not isinstance(normaliser, Normaliser):
        raise RuntimeError("no file is being processed in this child")
    return normaliser


def start(fmt: AudioFormat, limits: DecodeLimits, work_dir: str) -> None:
    discard()
    embed = _state.get("embed")
    _state["normaliser"] = Normaliser(fmt, limits, Path(work_dir), embed)  # type: ignore[arg-type]


def feed_chunk(data: bytes) -> None:
    _normaliser().feed_chunk(data)


def feed_file(data: bytes) -> None:
    _normaliser().feed_file(data)


def finish(streamed: bool) -> Normalised:
    return _normaliser().finish(streamed)


def discard() -> None:
    normaliser = _state.pop("normaliser", None)
    if isinstance(normaliser, Normaliser):
        normaliser.discard()
