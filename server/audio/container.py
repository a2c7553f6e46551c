"""Compressed formats through PyAV: picking the demuxer, frames to mono, whole-file decode.

Every compressed format (MP3, Ogg Vorbis/Opus, FLAC, WebM, ADTS AAC, MP4) goes through an FFmpeg
demuxer, which also applies what a bare codec cannot know: encoder delay and padding (MP3 LAME
tags, Opus pre-skip), ID3 tags and codec headers. The demuxer is chosen from the session's
content type after checking the magic bytes, so a mismatch is reported in words, and no PyAV
exception escapes: each is wrapped in a ``DecodeError`` naming the format that was expected.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import av
import numpy as np

from server.audio import sniff
from server.audio.errors import DecodeError
from server.audio.formats import (
    MAX_CHANNELS,
    MIME_AAC,
    MIME_FLAC,
    MIME_MP3,
    MIME_MP4,
    MIME_OGG,
    MIME_WEBM,
)
from server.audio.limits import DecodeBudget
from server.audio.pcm import average_channels
from server.audio.resample import RateConverter

__all__ = [
    "PYAV_ERRORS",
    "FrameSink",
    "choose_demuxer",
    "decode_container_file",
    "frame_to_mono",
    "iter_frames",
]

PYAV_ERRORS: tuple[type[Exception], ...] = (
    av.FFmpegError,
    ValueError,
    RuntimeError,
    EOFError,
    OSError,
    IndexError,
)
_INT16_SCALE = 1.0 / (1 << 15)
_INT32_SCALE = 1.0 / (1 << 31)
_INT64_SCALE = 1.0 / (1 << 63)
_UINT8_OFFSET = 128
_UINT8_SCALE = 1.0 / 128
_BATCH_SAMPLES = 8192
_EMPTY = np.zeros(0, np.float32)
_EMPTY.flags.writeable = False

_DEMUXERS: dict[str, dict[str | None, str]] = {
    MIME_OGG: {sniff.OGG: "ogg"},
    MIME_FLAC: {sniff.FLAC: "flac", sniff.ID3: "flac"},
    MIME_WEBM: {sniff.WEBM: "matroska"},
    MIME_MP3: {sniff.MP3: "mp3", sniff.ID3: "mp3", None: "mp3"},
    MIME_AAC: {sniff.ADTS: "aac", sniff.MP4: "mp4", sniff.ID3: "aac"},
    MIME_MP4: {sniff.ADTS: "aac", sniff.MP4: "mp4", sniff.ID3: "aac"},
}
_EXPECTED: dict[str, str] = {
    MIME_OGG: "Ogg",
    MIME_FLAC: "FLAC",
    MIME_WEBM: "WebM",
    MIME_MP3: "MP3",
    MIME_AAC: "AAC (ADTS or MP4)",
    MIME_MP4: "MP4/M4A or ADTS AAC",
}


def choose_demuxer(mime: str, head: bytes) -> str:
    """Pick the FFmpeg demuxer for ``mime`` given the data's first bytes; explain a mismatch."""
    found = sniff.sniff_container(head)
    demuxer = _DEMUXERS[mime].get(found)
    if demuxer is None:
        raise DecodeError(
            f"{sniff.describe_head(head)}, but the session says {mime}: "
            f"expected {_EXPECTED[mime]} data"
        )
    return demuxer


def _to_float32(samples: np.ndarray) -> np.ndarray:
    if samples.dtype == np.int16:
        return np.multiply(samples, _INT16_SCALE, dtype=np.float32)
    if samples.dtype == np.int32:
        return np.multiply(samples, _INT32_SCALE, dtype=np.float32)
    if samples.dtype == np.int64:
        return np.multiply(samples, _INT64_SCALE, dtype=np.float32)
    if samples.dtype == np.uint8:
        centred = samples.astype(np.int16) - _UINT8_OFFSET
        return np.multiply(centred, _UINT8_SCALE, dtype=np.float32)
    return samples.astype(np.float32, copy=False)


def frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """Average a decoded frame's channels into mono float32 (an average, never a clipped sum)."""
    channels = frame.layout.nb_channels
    planes = len(frame.planes)
    # A corrupt stream can yield a frame whose layout disagrees with its planes; converting it
    # reads out of bounds in native code (found by fuzzing: a 29-channel ADTS frame crashed the
    # process). Such a frame is refused before any conversion.
    if (
        channels < 1
        or channels > MAX_CHANNELS
        or planes != (channels if frame.format.is_planar else 1)
    ):
        raise DecodeError(
            f"a decoded frame is inconsistent ({channels} channels in {planes} planes): corrupt data?"
        )
    samples = _to_float32(frame.to_ndarray())
    if frame.format.is_planar:
        if channels == 1:
            return samples.reshape(-1)
        return samples.mean(axis=0, dtype=np.float32)
    return average_channels(samples.reshape(-1), channels)


class FrameSink:
    """Charges the budget per decoded frame, mixes it to mono and resamples it to 16 kHz.

    Decoded frames are small (1152 samples for MP3, 960 for Opus) and each resampler call has
    a fixed cost, so mono frames are batched up to ``_BATCH_SAMPLES`` before resampling;
    ``drain`` converts a partial batch whenever the caller is about to wait for more input.
    """

    def __init__(self, budget: DecodeBudget) -> None:
        self._budget = budget
        self._converter = RateConverter()
        self._pending: list[np.ndarray] = []
        self._pending_samples = 0
        self._pending_rate_hz = 0

    def push(self, frame: av.AudioFrame) -> np.ndarray:
        """Take one decoded frame; raises ``AudioLimitError`` before converting past a limit."""
        self._budget.charge(frame.samples, frame.sample_rate)
        drained = self.drain() if frame.sample_rate != self._pending_rate_hz else _EMPTY
        self._pending.append(frame_to_mono(frame))
        self._pending_samples += frame.samples
        self._pending_rate_hz = frame.sample_rate
        if self._pending_samples < _BATCH_SAMPLES:
            return drained
        converted = self.drain()
        return np.concatenate([drained, converted]) if len(drained) else converted

    def drain(self) -> np.ndarray:
        """Convert the batched frames now."""
        if not self._pending:
            return _EMPTY
        mono = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        self._pending, self._pending_samples = [], 0
        return self._converter.push(mono, self._pending_rate_hz)

    def flush(self) -> np.ndarray:
        """Convert what is batched and drain the resampler at end of stream."""
        drained = self.drain()
        tail = self._converter.flush()
        return np.concatenate([drained, tail]) if len(drained) else tail


def iter_frames(container: Any, mime: str) -> Iterator[av.AudioFrame]:
    """Decode the first audio stream of an open container, flushing the decoder at the end."""
    stream = next((s for s in container.streams if s.type == "audio"), None)
    if stream is None:
        raise DecodeError(f"the {mime} data contains no audio stream")
    for packet in container.demux(stream):
        yield from packet.decode()


# Tags (titles, comments) are not audio: a file whose tags are not valid UTF-8 still decodes.
METADATA_ERRORS = "replace"


def _reason(error: Exception) -> str:
    if isinstance(error, EOFError):
        return "the data ends in the middle of a page or frame: truncated?"
    strerror = getattr(error, "strerror", None)
    return str(strerror) if strerror else str(error)


def run_decode(
    open_container: Callable[[], Any],
    mime: str,
    head: bytes,
    sink: FrameSink,
    emit: Callable[[np.ndarray], None],
) -> None:
    """Open, decode and drain one container, wrapping PyAV errors in ``DecodeError``."""
    try:
        with open_container() as container:
            for frame in iter_frames(container, mime):
                emit(sink.push(frame))
    except PYAV_ERRORS as error:
        raise DecodeError(
            f"cannot decode the data as {_EXPECTED[mime]} for {mime} ({_reason(error)}); "
            f"{sniff.describe_head(head)}"
        ) from error
    emit(sink.flush())


def decode_container_file(mime: str, data: bytes, budget: DecodeBudget) -> np.ndarray:
    """Decode a whole compressed file held in memory; no bytes at all decode to no audio."""
    if not data:
        return np.zeros(0, np.float32)
    demuxer = choose_demuxer(mime, data[: sniff.SNIFF_BYTES])
    blocks: list[np.ndarray] = []
    sink = FrameSink(budget)
    head = data[: sniff.SNIFF_BYTES]
    run_decode(
        lambda: av.open(io.BytesIO(data), format=demuxer, metadata_errors=METADATA_ERRORS),
        mime,
        head,
        sink,
        blocks.append,
    )
    decoded = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    if not len(decoded) and data:
        raise DecodeError(f"no audio could be decoded from the {mime} data")
    return decoded
