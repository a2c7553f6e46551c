"""Raw PCM (``audio/x-raw``) sessions: whole frames out, split frames carried over."""

from __future__ import annotations

import numpy as np

from server.audio.errors import DecodeError
from server.audio.formats import AudioFormat
from server.audio.limits import DecodeBudget
from server.audio.pcm import PcmCarry, pcm_to_mono
from server.audio.resample import RateConverter

__all__ = ["RawPcmDecoder"]


class RawPcmDecoder:
    """Converts raw interleaved PCM to mono float32 at 16 kHz, chunk by chunk.

    16 kHz input never touches the resampler. Unlike WAV, raw PCM has no header to vouch for
    its format, so bytes left over at the end (not a whole sample frame) are an error: they
    usually mean the content type names the wrong sample format or channel count.
    """

    def __init__(self, fmt: AudioFormat, budget: DecodeBudget) -> None:
        if fmt.sample_rate_hz is None:
            raise DecodeError("audio/x-raw needs a sample rate")
        self._sample_rate_hz = fmt.sample_rate_hz
        self._sample_format = fmt.raw_sample_format
        self._channels = fmt.channels
        self._budget = budget
        self._carry = PcmCarry(self._sample_format.bytes_per_sample * fmt.channels)
        self._converter = RateConverter()

    def decode(self, data: bytes) -> np.ndarray:
        """Decode the whole frames available after this chunk."""
        whole = self._carry.take(data)
        self._budget.charge(len(whole) // self._carry.frame_bytes, self._sample_rate_hz)
        mono = pcm_to_mono(whole, self._sample_format, self._channels)
        return self._converter.push(mono, self._sample_rate_hz)

    def finish(self) -> np.ndarray:
        """End of stream: refuse a trailing partial frame, drain the resampler."""
        if self._carry.pending_bytes:
            raise DecodeError(
                f"the audio ends with {self._carry.pending_bytes} byte(s) of an incomplete "
                f"{self._carry.frame_bytes}-byte sample frame; check that format="
                f"{self._sample_format} and channels={self._channels} match the data"
            )
        return self._converter.flush()
