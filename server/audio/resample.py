"""Stateful, band-limited conversion of mono float32 audio to the 16 kHz target rate.

libswresample (through PyAV's ``AudioResampler``) low-pass filters before decimating, and one
resampler lives for the whole session so its filter history spans chunk boundaries: a stream
resampled chunk by chunk equals the same audio resampled in one go, with no clicks at the joins.
Audio already at 16 kHz never enters the resampler.
"""

from __future__ import annotations

import av
import numpy as np

from server.audio.formats import TARGET_RATE_HZ

__all__ = ["MonoResampler", "RateConverter"]

_RESAMPLER_FORMAT = "flt"
_RESAMPLER_LAYOUT = "mono"
_MAX_BLOCK_SAMPLES = 1 << 16  # bounds the resampler's intermediate buffers for huge inputs

_EMPTY = np.zeros(0, np.float32)


def _concat(blocks: list[np.ndarray]) -> np.ndarray:
    if not blocks:
        return _EMPTY.copy()
    if len(blocks) == 1:
        return blocks[0]
    return np.concatenate(blocks)


class MonoResampler:
    """One libswresample instance converting mono float32 at ``source_rate_hz`` to 16 kHz."""

    def __init__(self, source_rate_hz: int) -> None:
        self.source_rate_hz = source_rate_hz
        self._resampler = av.AudioResampler(
            format=_RESAMPLER_FORMAT, layout=_RESAMPLER_LAYOUT, rate=TARGET_RATE_HZ
        )

    def _run(self, frame: av.AudioFrame | None) -> list[np.ndarray]:
        return [out.to_ndarray().reshape(-1) for out in self._resampler.resample(frame)]

    def process(self, mono: np.ndarray) -> np.ndarray:
        """Resample the next block; output lags input by the filter delay until ``flush``."""
        blocks: list[np.ndarray] = []
        for start in range(0, len(mono), _MAX_BLOCK_SAMPLES):
            block = np.ascontiguousarray(mono[start : start + _MAX_BLOCK_SAMPLES], np.float32)
            frame = av.AudioFrame.from_ndarray(
                block.reshape(1, -1), format=_RESAMPLER_FORMAT, layout=_RESAMPLER_LAYOUT
            )
            frame.sample_rate = self.source_rate_hz
            blocks.extend(self._run(frame))
        return _concat(blocks)

    def flush(self) -> np.ndarray:
        """Drain the filter delay at end of stream."""
        return _concat(self._run(None))


class RateConverter:
    """Routes mono blocks at any source rate to 16 kHz for one session.

    The source rate may change mid-stream (chained Ogg, a WAV chunk with a new header); the old
    resampler is drained before a new one starts so no samples are lost.
    """

    def __init__(self) -> None:
        self._resampler: MonoResampler | None = None

    def push(self, mono: np.ndarray, rate_hz: int) -> np.ndarray:
        """Convert one block of mono float32 at ``rate_hz``."""
        drained = _EMPTY
        if self._resampler is not None and self._resampler.source_rate_hz != rate_hz:
            drained = self.flush()
        if rate_hz == TARGET_RATE_HZ:
            converted = mono
        else:
            if self._resampler is None:
                self._resampler = MonoResampler(rate_hz)
            converted = self._resampler.process(mono)
        return _concat([drained, converted]) if len(drained) else converted

    def flush(self) -> np.ndarray:
        """Drain and forget the current resampler, if any."""
        if self._resampler is None:
            return _EMPTY.copy()
        resampler, self._resampler = self._resampler, None
        return resampler.flush()
