"""Raw PCM sample formats and their vectorised conversion to mono float32.

Every conversion is a ``np.frombuffer`` view plus one or two array operations: no Python loop
runs per sample. Integer PCM is scaled by its full scale (s16 / 32768), unsigned PCM is first
made signed by flipping its top bit, and channels are averaged, so the output keeps the
[-1, 1] scale of the input whatever the channel count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from server.audio.errors import DecodeError

__all__ = [
    "RAW_SAMPLE_FORMATS",
    "RAW_SAMPLE_FORMAT_ALIASES",
    "PcmCarry",
    "SampleFormat",
    "average_channels",
    "pcm_to_mono",
]

_BITS_PER_BYTE = 8
_PACKED_24_BIT_BYTES = 3
_WIDE_BYTES = 4
_FLOAT_POS_LIMIT = 1.0
_FLOAT_NEG_LIMIT = -1.0

SampleKind = Literal["s", "u", "f"]


@dataclass(frozen=True)
class SampleFormat:
    """One PCM sample encoding: signed/unsigned int or float, its width and byte order.

    ``f24`` has no standard; tympan reads it as the upper three bytes of an IEEE-754 float32
    (sign, exponent and the top 15 mantissa bits) with the missing low mantissa byte taken
    as zero. ``f24le`` is therefore bytes 1..3 of a little-endian float32 and ``f24be`` bytes
    0..2 of a big-endian one; the truncation costs at most 2**-15 relative precision.
    """

    name: str
    kind: SampleKind
    bytes_per_sample: int
    big_endian: bool

    def __str__(self) -> str:
        return self.name


def _build_formats() -> dict[str, SampleFormat]:
    formats: dict[str, SampleFormat] = {}
    for kind in ("s", "u", "f"):
        for bits in (16, 24, 32):
            for order in ("le", "be"):
                name = f"{kind}{bits}{order}"
                formats[name] = SampleFormat(name, kind, bits // _BITS_PER_BYTE, order == "be")
    for order in ("le", "be"):
        formats[f"f64{order}"] = SampleFormat(f"f64{order}", "f", 8, order == "be")
    formats["s8"] = SampleFormat("s8", "s", 1, False)
    formats["u8"] = SampleFormat("u8", "u", 1, False)
    return formats


RAW_SAMPLE_FORMATS: dict[str, SampleFormat] = _build_formats()

# Cochl's sample clients name formats without a byte order (``format=f32`` in Python and Java,
# ``format=s16`` in JavaScript) and send little-endian samples, the native order of the machines
# they run on; every multi-byte format is accepted that way and read as its ``le`` twin.
RAW_SAMPLE_FORMAT_ALIASES: dict[str, str] = {
    name[:-2]: name for name in RAW_SAMPLE_FORMATS if name.endswith("le")
}


def _widen_24_bit(data: bytes | memoryview, big_endian: bool) -> np.ndarray:
    """Place packed 3-byte samples in the upper bytes of 4-byte words (low byte zero)."""
    packed = np.frombuffer(data, np.uint8).reshape(-1, _PACKED_24_BIT_BYTES)
    wide = np.zeros((packed.shape[0], _WIDE_BYTES), np.uint8)
    if big_endian:
        wide[:, :_PACKED_24_BIT_BYTES] = packed
    else:
        wide[:, 1:] = packed
    return wide.reshape(-1)


def _samples_to_float32(data: bytes | memoryview, fmt: SampleFormat) -> np.ndarray:
    """Decode interleaved samples of ``fmt`` to float32 in [-1, 1] scale."""
    width = fmt.bytes_per_sample
    buffer: bytes | memoryview | np.ndarray = data
    if width == _PACKED_24_BIT_BYTES:
        buffer = _widen_24_bit(data, fmt.big_endian)
        width = _WIDE_BYTES
    order = ">" if fmt.big_endian else "<"
    if fmt.kind == "f":
        values = np.frombuffer(buffer, f"{order}f{width}").astype(np.float32)
        values = np.nan_to_num(values, copy=False, posinf=_FLOAT_POS_LIMIT, neginf=_FLOAT_NEG_LIMIT)
        # Full scale is [-1, 1]; louder values would overflow when channels are summed.
        return np.clip(values, -1.0, 1.0, out=values)
    full_scale = 1.0 / (1 << (_BITS_PER_BYTE * width - 1))
    if fmt.kind == "s":
        ints = np.frombuffer(buffer, f"{order}i{width}")
    else:
        sign_bit = np.array(1 << (_BITS_PER_BYTE * width - 1), dtype=f"u{width}")
        ints = np.bitwise_xor(np.frombuffer(buffer, f"{order}u{width}"), sign_bit).view(f"i{width}")
    return np.multiply(ints, full_scale, dtype=np.float32)


def average_channels(interleaved: np.ndarray, channels: int) -> np.ndarray:
    """Average interleaved channels; summing column views avoids a slow short-axis mean."""
    if channels == 1:
        return interleaved
    frames = interleaved.reshape(-1, channels)
    mono = frames[:, 0].copy()
    for channel in range(1, channels):
        mono += frames[:, channel]
    mono *= np.float32(1.0 / channels)
    return mono


def pcm_to_mono(data: bytes | memoryview, fmt: SampleFormat, channels: int) -> np.ndarray:
    """Convert whole interleaved frames of ``fmt`` to mono float32 at the same rate."""
    frame_bytes = fmt.bytes_per_sample * channels
    if len(data) % frame_bytes:
        raise DecodeError(
            f"{len(data)} bytes of {fmt} audio with {channels} channel(s) is not a whole number "
            f"of {frame_bytes}-byte sample frames"
        )
    return average_channels(_samples_to_float32(data, fmt), channels)


class PcmCarry:
    """Cuts a byte stream into whole sample frames, carrying a split frame to the next chunk.

    Clients cut streams wherever their buffers end, so a chunk may end inside a sample or inside
    a multi-channel frame; the remainder is kept (always fewer than ``frame_bytes`` bytes) and
    prefixed to the next chunk.
    """

    def __init__(self, frame_bytes: int) -> None:
        self.frame_bytes = frame_bytes
        self._pending = b""

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete frame held back from the previous chunk."""
        return len(self._pending)

    def take(self, data: bytes | memoryview) -> bytes | memoryview:
        """Return the whole frames available after appending ``data``; keep the rest."""
        if self._pending:
            data = self._pending + bytes(data)
        whole = len(data) - len(data) % self.frame_bytes
        self._pending = bytes(data[whole:])
        return data[:whole]
