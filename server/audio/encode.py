"""Encode test signals into every supported format, for tests, benchmarks and demo clients.

Fixtures made by the real encoders (LAME, libopus, FFmpeg's Vorbis/FLAC/AAC) exercise the real
demuxers and codec quirks (encoder delay, pre-skip, page and frame boundaries), which checked-in
byte strings or hand-built headers would not.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import cast

import av
import numpy as np
import soundfile as sf

from server.audio.formats import (
    MIME_AAC,
    MIME_FLAC,
    MIME_MP3,
    MIME_MP4,
    MIME_OGG,
    MIME_WEBM,
)
from server.audio.pcm import RAW_SAMPLE_FORMATS

__all__ = ["ENCODINGS", "Encoding", "encode_audio", "encode_pcm", "encode_wav"]

_OPUS_RATES_HZ = (8000, 12000, 16000, 24000, 48000)
_OPUS_FALLBACK_RATE_HZ = 48000
_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
_EXPERIMENTAL = "-2"
_BITS_PER_BYTE = 8
_F24_DROPPED_BYTE = 1


@dataclass(frozen=True)
class Encoding:
    """How to produce one compressed format with PyAV."""

    mime: str
    container: str
    codec: str
    sample_format: str
    max_channels: int
    container_options: tuple[tuple[str, str], ...] = ()
    min_channels: int = 1  # FFmpeg's own Vorbis encoder writes stereo only

    def codec_rate_hz(self, rate_hz: int) -> int:
        """The rate the codec runs at; Opus accepts only a few and is fed 48 kHz otherwise."""
        if self.codec == "libopus" and rate_hz not in _OPUS_RATES_HZ:
            return _OPUS_FALLBACK_RATE_HZ
        return rate_hz


ENCODINGS: dict[str, Encoding] = {
    "mp3": Encoding(MIME_MP3, "mp3", "libmp3lame", "fltp", 2),
    "ogg-vorbis": Encoding(MIME_OGG, "ogg", "vorbis", "fltp", 2, min_channels=2),
    "ogg-opus": Encoding(MIME_OGG, "ogg", "libopus", "flt", 8),
    "flac": Encoding(MIME_FLAC, "flac", "flac", "s16", 8),
    "webm-opus": Encoding(MIME_WEBM, "webm", "libopus", "flt", 8),
    "aac-adts": Encoding(MIME_AAC, "adts", "aac", "fltp", 8),
    "m4a": Encoding(MIME_MP4, "ipod", "aac", "fltp", 8),
    "m4a-fragmented": Encoding(
        MIME_MP4, "mp4", "aac", "fltp", 8, (("movflags", "frag_keyframe+empty_moov"),)
    ),
}


def encode_audio(samples: np.ndarray, rate_hz: int, encoding: str) -> bytes:
    """Encode float32 ``samples`` shaped (frames, channels) at ``rate_hz`` as ``encoding``."""
    spec = ENCODINGS[encoding]
    if samples.shape[1] < spec.min_channels:
        samples = np.repeat(samples, spec.min_channels, axis=1)
    channels = samples.shape[1]
    if channels > spec.max_channels:
        raise ValueError(f"{encoding} encodes at most {spec.max_channels} channels")
    layout = _LAYOUTS[channels]
    codec_rate_hz = spec.codec_rate_hz(rate_hz)
    buffer = io.BytesIO()
    with av.open(
        buffer, "w", format=spec.container, options=dict(spec.container_options)
    ) as container:
        stream = cast(
            av.AudioStream, container.add_stream(spec.codec, rate=codec_rate_hz, layout=layout)
        )
        if spec.codec == "vorbis":
            stream.codec_context.options = {"strict": _EXPERIMENTAL}
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples.T, np.float32), format="fltp", layout=layout
        )
        frame.sample_rate = rate_hz
        frame.pts = 0
        resampler = av.AudioResampler(
            format=spec.sample_format,
            layout=layout,
            rate=codec_rate_hz,
            frame_size=stream.codec_context.frame_size or None,
        )
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            container.mux(stream.encode(chunk))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def encode_wav(samples: np.ndarray, rate_hz: int, subtype: str = "PCM_16") -> bytes:
    """Write a WAV with soundfile; ``subtype`` is a soundfile subtype such as ``PCM_24``."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate_hz, format="WAV", subtype=subtype)
    return buffer.getvalue()


def encode_pcm(samples: np.ndarray, sample_format: str) -> bytes:
    """Interleave float ``samples`` (frames, channels) as raw PCM of ``sample_format``.

    The inverse of tympan's raw decoding, ``f24`` included: a float32 with its low mantissa
    byte dropped.
    """
    fmt = RAW_SAMPLE_FORMATS[sample_format]
    order = ">" if fmt.big_endian else "<"
    flat = np.asarray(samples, np.float64).reshape(-1)
    width = fmt.bytes_per_sample
    if fmt.kind == "f":
        if width == 3:
            wide = flat.astype(f"{order}f4").view(np.uint8).reshape(-1, 4)
            kept = wide[:, :3] if fmt.big_endian else wide[:, _F24_DROPPED_BYTE:]
            return np.ascontiguousarray(kept).tobytes()
        return flat.astype(f"{order}f{width}").tobytes()
    bits = width * _BITS_PER_BYTE
    full_scale = float(1 << (bits - 1))
    ints = np.clip(np.round(flat * full_scale), -full_scale, full_scale - 1).astype(np.int64)
    if fmt.kind == "u":
        ints = ints + (1 << (bits - 1))
    if width == 3:
        wide = ints.astype("<i4" if not fmt.big_endian else ">i4").view(np.uint8).reshape(-1, 4)
        kept = wide[:, 1:] if fmt.big_endian else wide[:, :3]
        return np.ascontiguousarray(kept).tobytes()
    kind = "u" if fmt.kind == "u" else "i"
    return ints.astype(f"{order}{kind}{width}").tobytes()
