"""Decode limits and the running budget that enforces them while decoding.

A few kilobytes of compressed audio can expand into gigabytes of samples, so the budget is
charged before samples are materialised at 16 kHz (raw PCM and WAV) or per decoded codec frame
(compressed formats), and raises as soon as a limit is crossed, not after decoding finished.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.audio.errors import AudioLimitError
from server.audio.formats import TARGET_RATE_HZ

__all__ = ["OUTPUT_BYTES_PER_SAMPLE", "DecodeBudget", "DecodeLimits"]

OUTPUT_BYTES_PER_SAMPLE: int = 4  # float32
_SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class DecodeLimits:
    """Per-session caps on decoded audio; decoded bytes count float32 at 16 kHz mono."""

    max_duration_s: float = 4 * _SECONDS_PER_HOUR
    max_decoded_bytes: int = 2 * 1024**3


class DecodeBudget:
    """Running total of decoded audio for one session, checked on every charge."""

    def __init__(self, limits: DecodeLimits) -> None:
        self._limits = limits
        self._decoded_s = 0.0

    @property
    def decoded_s(self) -> float:
        """Seconds of audio decoded so far (at the source rate, before resampling)."""
        return self._decoded_s

    def charge(self, n_frames: int, rate_hz: int) -> None:
        """Account for ``n_frames`` sample frames at ``rate_hz``; raise once over a limit."""
        decoded_s = self._decoded_s + n_frames / rate_hz
        if decoded_s > self._limits.max_duration_s:
            raise AudioLimitError(
                f"decoded audio exceeds the session limit of {self._limits.max_duration_s:g} s"
            )
        decoded_bytes = decoded_s * TARGET_RATE_HZ * OUTPUT_BYTES_PER_SAMPLE
        if decoded_bytes > self._limits.max_decoded_bytes:
            raise AudioLimitError(
                "decoded audio exceeds the session limit of "
                f"{self._limits.max_decoded_bytes} bytes (float32 at {TARGET_RATE_HZ} Hz mono)"
            )
        self._decoded_s = decoded_s
