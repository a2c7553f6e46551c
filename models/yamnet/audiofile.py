"""Sound files to the model's input (float32 mono at 16 kHz), for set-up and maintenance tools.

The calibration (``models.yamnet.calibrate``) and the benchmarks that reuse its data set read
real recordings (WAV, Ogg Vorbis/Opus, FLAC...) from disk. This module decodes them with PyAV
(FFmpeg) and converts them the same way the server converts a file session, so that a tool sees
the very samples a session would:

- integer samples are scaled by their full scale (s16 / 32768, 24-bit as the top of a 32-bit
  word, u8 centred on 128), float PCM is clipped to [-1, 1] with NaN as 0 (as the server's WAV
  reader does);
- channels are averaged (a mean, never a clipped sum): interleaved channels by summing column
  views then scaling, planar ones with a float32 mean;
- every run of audio at one source rate goes through one band-limited libswresample instance
  (mono float32 to 16 kHz), drained at the end or when the rate changes; audio already at
  16 kHz is used as is.

``tests/test_audiofile.py`` checks the result is bit-identical to the server's ``decode_file``
for WAV and Ogg files. Nothing here belongs to the run time: the server has its own streaming
decoders and never imports this module.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from models.yamnet.spec import FRONTEND

__all__ = ["AudioFileError", "decode_audio", "decode_audio_file"]

Samples = npt.NDArray[np.float32]

_DEMUXERS = {".wav": "wav", ".ogg": "ogg", ".oga": "ogg", ".opus": "ogg", ".flac": "flac"}
_RESAMPLER_FORMAT = "flt"
_RESAMPLER_LAYOUT = "mono"
_MAX_BLOCK_SAMPLES = 1 << 16  # bounds the resampler's intermediate buffers for long files
_FULL_SCALE = {np.dtype(np.int16): 2.0**-15, np.dtype(np.int32): 2.0**-31}
_INT64_SCALE = 2.0**-63
_UINT8_OFFSET = 128
_UINT8_SCALE = 1.0 / 128
_PYAV_ERRORS: tuple[type[Exception], ...] = (
    av.FFmpegError,
    ValueError,
    RuntimeError,
    EOFError,
    OSError,
    IndexError,
)


class AudioFileError(Exception):
    """The file cannot be decoded as audio."""


def _to_float32(samples: npt.NDArray[Any], float_pcm: bool) -> Samples:
    if samples.dtype in _FULL_SCALE:
        return np.multiply(samples, _FULL_SCALE[samples.dtype], dtype=np.float32)
    if samples.dtype == np.int64:
        return np.multiply(samples, _INT64_SCALE, dtype=np.float32)
    if samples.dtype == np.uint8:
        centred = samples.astype(np.int16) - _UINT8_OFFSET
        return np.multiply(centred, _UINT8_SCALE, dtype=np.float32)
    values = samples.astype(np.float32)
    if float_pcm:  # float WAV: full scale is [-1, 1]; codecs' own float output is kept as is
        values = np.nan_to_num(values, copy=False, posinf=1.0, neginf=-1.0)
        np.clip(values, -1.0, 1.0, out=values)
    return values


def _frame_to_mono(frame: av.AudioFrame, float_pcm: bool) -> Samples:
    channels = frame.layout.nb_channels
    planes = len(frame.planes)
    # A corrupt stream can yield a frame whose layout disagrees with its planes; converting it
    # would read out of bounds in native code (the server refuses such frames too).
    if channels < 1 or planes != (channels if frame.format.is_planar else 1):
        raise AudioFileError(
            f"a decoded frame is inconsistent ({channels} channels in {planes} planes)"
        )
    samples = _to_float32(frame.to_ndarray(), float_pcm)
    if frame.format.is_planar:
        return samples.reshape(-1) if channels == 1 else samples.mean(axis=0, dtype=np.float32)
    interleaved = samples.reshape(-1)
    if channels == 1:
        return interleaved
    columns = interleaved.reshape(-1, channels)
    mono = columns[:, 0].copy()
    for channel in range(1, channels):
        mono += columns[:, channel]
    mono *= np.float32(1.0 / channels)
    return mono


def _flt(frames: list[av.AudioFrame]) -> list[Samples]:
    return [np.asarray(frame.to_ndarray(), dtype=np.float32).reshape(-1) for frame in frames]


def _resample(mono: Samples, rate_hz: int, target_hz: int) -> Samples:
    """One libswresample instance over a whole run at ``rate_hz``, drained at its end."""
    if rate_hz == target_hz:
        return mono
    resampler = av.AudioResampler(
        format=_RESAMPLER_FORMAT, layout=_RESAMPLER_LAYOUT, rate=target_hz
    )
    blocks: list[Samples] = []
    for start in range(0, len(mono), _MAX_BLOCK_SAMPLES):
        block = np.ascontiguousarray(mono[start : start + _MAX_BLOCK_SAMPLES], np.float32)
        frame = av.AudioFrame.from_ndarray(
            block.reshape(1, -1), format=_RESAMPLER_FORMAT, layout=_RESAMPLER_LAYOUT
        )
        frame.sample_rate = rate_hz
        blocks.extend(_flt(resampler.resample(frame)))
    blocks.extend(_flt(resampler.resample(None)))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def _runs(container: Any) -> Iterator[tuple[Samples, int]]:
    """Mono audio of the first audio stream, one array per run of frames at one rate."""
    stream = next((s for s in container.streams if s.type == "audio"), None)
    if stream is None:
        raise AudioFileError("no audio stream")
    float_pcm = stream.codec_context.name.startswith("pcm_f")
    pending: list[Samples] = []
    rate_hz = 0
    for packet in container.demux(stream):
        for frame in packet.decode():
            if pending and frame.sample_rate != rate_hz:
                yield np.concatenate(pending), rate_hz
                pending = []
            rate_hz = frame.sample_rate
            pending.append(_frame_to_mono(frame, float_pcm))
    if pending:
        yield np.concatenate(pending), rate_hz


def decode_audio(
    source: Path | bytes, demuxer: str | None = None, target_hz: int = FRONTEND.sample_rate_hz
) -> Samples:
    """Decode a whole file (a path, or its bytes with ``demuxer`` named) to float32 mono at
    ``target_hz``; raise ``AudioFileError`` when it cannot be decoded or holds no audio."""
    opened = str(source) if isinstance(source, Path) else io.BytesIO(source)
    try:
        with av.open(opened, format=demuxer, metadata_errors="replace") as container:
            runs = [_resample(mono, rate_hz, target_hz) for mono, rate_hz in _runs(container)]
    except _PYAV_ERRORS as error:
        raise AudioFileError(f"cannot decode: {error}") from error
    if not runs:  # the server returns nothing for an empty WAV; no tool wants an empty clip
        raise AudioFileError("no audio could be decoded")
    return runs[0] if len(runs) == 1 else np.concatenate(runs)


def decode_audio_file(path: Path, target_hz: int = FRONTEND.sample_rate_hz) -> Samples:
    """``decode_audio`` of a file on disk, its demuxer chosen by the file's suffix (probed
    by FFmpeg for other suffixes)."""
    return decode_audio(path, _DEMUXERS.get(path.suffix.lower()), target_hz)
