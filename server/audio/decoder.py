"""The decoding entry points: ``StreamDecoder`` for stream sessions, ``decode_file`` for files.

Both pick a backend from the parsed content type (raw PCM, WAV, or a PyAV demuxer for the
compressed formats) and return float32 mono audio at 16 kHz. They are blocking: the server runs
them in an executor thread, never on the event loop.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from server.audio.container import decode_container_file
from server.audio.container_stream import ContainerStreamDecoder
from server.audio.errors import DecodeError
from server.audio.formats import MIME_RAW, MIME_WAV, AudioFormat
from server.audio.limits import DecodeBudget, DecodeLimits
from server.audio.raw import RawPcmDecoder
from server.audio.wav import WavDecoder

__all__ = ["StreamDecoder", "decode_file"]

_DEFAULT_LIMITS = DecodeLimits()


class _Backend(Protocol):
    def decode(self, data: bytes) -> np.ndarray: ...

    def finish(self) -> np.ndarray: ...


def _backend(fmt: AudioFormat, budget: DecodeBudget, *, single_file: bool) -> _Backend:
    if fmt.mime == MIME_RAW:
        return RawPcmDecoder(fmt, budget)
    if fmt.mime == MIME_WAV:
        return WavDecoder(budget, single_file=single_file)
    return ContainerStreamDecoder(fmt.mime, budget)


class StreamDecoder:
    """Per-session, stateful decoder; created once per stream session and kept on it.

    Chunks may cut samples, frames and pages anywhere; state carried between chunks (split
    frames, codec and resampler history) lives here. After a ``DecodeError`` the decoder stays
    failed and raises the same error again, so a broken stream cannot resume mid-garbage.
    """

    def __init__(self, fmt: AudioFormat, limits: DecodeLimits = _DEFAULT_LIMITS) -> None:
        self.format = fmt
        self._backend = _backend(fmt, DecodeBudget(limits), single_file=False)
        self._failure: DecodeError | None = None
        self._flushed = False

    def _guard(self) -> None:
        if self._failure is not None:
            raise DecodeError(f"the stream already failed: {self._failure}")
        if self._flushed:
            raise DecodeError("the stream was already flushed; no more audio is accepted")

    def decode_chunk(self, data: bytes) -> np.ndarray:
        """Decode one chunk to float32 mono 16 kHz (possibly empty)."""
        self._guard()
        try:
            return self._backend.decode(data)
        except DecodeError as error:
            self._failure = error
            raise

    def flush(self) -> np.ndarray:
        """End of stream: drain codec and resampler state and return the tail."""
        self._guard()
        self._flushed = True
        try:
            return self._backend.finish()
        except DecodeError as error:
            self._failure = error
            raise


def decode_file(
    fmt: AudioFormat, data: bytes, limits: DecodeLimits = _DEFAULT_LIMITS
) -> np.ndarray:
    """Decode a whole file session's audio to float32 mono 16 kHz."""
    budget = DecodeBudget(limits)
    if fmt.mime not in (MIME_RAW, MIME_WAV):
        return decode_container_file(fmt.mime, data, budget)
    backend = _backend(fmt, budget, single_file=True)
    head = backend.decode(data)
    tail = backend.finish()
    return np.concatenate([head, tail]) if len(tail) else head
