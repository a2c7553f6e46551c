"""Compressed formats through PyAV: real encoder output, file and stream decoding, errors."""

from __future__ import annotations

import functools
import gc
import itertools
import math
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.audio import (
    TARGET_RATE_HZ,
    AudioLimitError,
    DecodeError,
    DecodeLimits,
    StreamDecoder,
    decode_file,
    parse_content_type,
)
from server.audio import container as container_module
from server.audio.encode import ENCODINGS, encode_audio

TONE_HZ = 1000.0
AMPLITUDE = 0.5
STREAM_CHUNK_S = 0.5
# One codec frame, in seconds at the codec rate; ADTS and fragmented MP4 cannot carry the
# encoder delay, so they may add a second frame of priming.
FRAME_SAMPLES = {
    "mp3": 1152,
    "ogg-vorbis": 2048,
    "flac": 1,
    "aac-adts": 2 * 1024,
    "m4a": 1024,
    "m4a-fragmented": 2 * 1024,
}
OPUS_FRAME_S = 0.02


def tolerance_samples(encoding: str, rate_hz: int) -> int:
    """One codec frame expressed in 16 kHz output samples, plus resampler rounding."""
    if "opus" in encoding:
        return math.ceil(OPUS_FRAME_S * TARGET_RATE_HZ) + 2
    return math.ceil(FRAME_SAMPLES[encoding] * TARGET_RATE_HZ / rate_hz) + 2


def signal(rate_hz: int, seconds: float, channels: int) -> np.ndarray:
    t = np.arange(round(rate_hz * seconds)) / rate_hz
    mono = AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)
    return np.repeat(mono[:, None], channels, axis=1).astype(np.float32)


@functools.cache
def encoded(encoding: str, rate_hz: int, channels: int, seconds: float = 1.0) -> bytes:
    return encode_audio(signal(rate_hz, seconds, channels), rate_hz, encoding)


def fmt_of(encoding: str):  # type: ignore[no-untyped-def]
    return parse_content_type(ENCODINGS[encoding].mime)


def peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * TARGET_RATE_HZ / len(samples))


def stream(encoding: str, data: bytes, chunk_bytes: list[int] | int) -> np.ndarray:
    if isinstance(chunk_bytes, int):
        bounds = [*range(0, len(data), chunk_bytes), len(data)]
    else:
        bounds = [0, *sorted(c for c in chunk_bytes if c <= len(data)), len(data)]
    decoder = StreamDecoder(fmt_of(encoding))
    blocks = [decoder.decode_chunk(data[a:b]) for a, b in itertools.pairwise(bounds)]
    return np.concatenate([*blocks, decoder.flush()])


CASES = [
    ("mp3", 8000, 1),
    ("mp3", 22050, 2),
    ("mp3", 44100, 1),
    ("mp3", 48000, 2),
    ("ogg-vorbis", 8000, 2),
    ("ogg-vorbis", 44100, 2),
    ("ogg-opus", 8000, 1),
    ("ogg-opus", 22050, 2),
    ("ogg-opus", 48000, 6),
    ("flac", 8000, 1),
    ("flac", 22050, 6),
    ("flac", 44100, 2),
    ("flac", 48000, 1),
    ("webm-opus", 16000, 1),
    ("webm-opus", 48000, 2),
    ("webm-opus", 44100, 6),
    ("aac-adts", 8000, 1),
    ("aac-adts", 22050, 2),
    ("aac-adts", 44100, 6),
    ("m4a", 16000, 1),
    ("m4a", 48000, 2),
    ("m4a-fragmented", 44100, 1),
]


@pytest.mark.parametrize(("encoding", "rate_hz", "channels"), CASES)
def test_file_decode_keeps_duration_pitch_and_level(
    encoding: str, rate_hz: int, channels: int
) -> None:
    decoded = decode_file(fmt_of(encoding), encoded(encoding, rate_hz, channels))
    assert decoded.dtype == np.float32
    assert decoded.ndim == 1
    assert abs(len(decoded) - TARGET_RATE_HZ) <= tolerance_samples(encoding, rate_hz)
    assert abs(peak_hz(decoded) - TONE_HZ) < 3
    steady = decoded[2000:14000]
    rms = float(np.sqrt(np.mean(steady**2)))
    expected = AMPLITUDE / math.sqrt(2)
    if channels == 6:
        # AAC low-passes the LFE channel, so a 1 kHz tone averages over five of six channels.
        expected *= 5 / 6 if encoding.startswith(("aac", "m4a")) else 1
    assert abs(rms - expected) < 0.05


STREAMABLE_CASES = [case for case in CASES if case[0] != "m4a"]  # moov at the end


@pytest.mark.parametrize(("encoding", "rate_hz", "channels"), STREAMABLE_CASES)
def test_stream_of_half_second_chunks_matches_the_file(
    encoding: str, rate_hz: int, channels: int
) -> None:
    data = encoded(encoding, rate_hz, channels)
    whole = decode_file(fmt_of(encoding), data)
    streamed = stream(encoding, data, max(1, int(len(data) * STREAM_CHUNK_S)))
    tolerance = tolerance_samples(encoding, rate_hz)
    assert abs(len(streamed) - len(whole)) <= tolerance
    common = min(len(streamed), len(whole)) - tolerance
    np.testing.assert_allclose(streamed[:common], whole[:common], atol=1e-4)


@settings(max_examples=8, deadline=None)
@given(
    encoding=st.sampled_from(["mp3", "ogg-opus", "webm-opus", "aac-adts", "flac", "ogg-vorbis"]),
    cuts=st.lists(st.integers(min_value=0, max_value=40000), max_size=25),
)
def test_arbitrary_byte_cuts_match_the_file(encoding: str, cuts: list[int]) -> None:
    rate_hz, channels = (44100, 2)
    data = encoded(encoding, rate_hz, channels)
    whole = decode_file(fmt_of(encoding), data)
    streamed = stream(encoding, data, cuts)
    tolerance = tolerance_samples(encoding, rate_hz)
    assert abs(len(streamed) - len(whole)) <= tolerance
    common = min(len(streamed), len(whole)) - tolerance
    np.testing.assert_allclose(streamed[:common], whole[:common], atol=1e-4)


def test_small_chunks_return_audio_before_the_stream_ends() -> None:
    data = encoded("mp3", 44100, 1, seconds=2.0)
    decoder = StreamDecoder(fmt_of("mp3"))
    produced = [len(decoder.decode_chunk(data[i : i + 500])) for i in range(0, len(data), 500)]
    half = len(produced) // 2
    assert sum(produced[:half]) > 0.8 * TARGET_RATE_HZ
    decoder.flush()


def test_channels_are_averaged_through_a_codec() -> None:
    both = signal(16000, 0.5, 2) * 1.8  # 0.9 peak in each channel
    one = both.copy()
    one[:, 1] = 0
    six = np.zeros((8000, 6), np.float32)
    six[:, 0] = both[:, 0]
    flac = parse_content_type("audio/flac")
    peak_both = np.abs(decode_file(flac, encode_audio(both, 16000, "flac"))).max()
    peak_one = np.abs(decode_file(flac, encode_audio(one, 16000, "flac"))).max()
    peak_six = np.abs(decode_file(flac, encode_audio(six, 16000, "flac"))).max()
    assert peak_both == pytest.approx(0.9, abs=1e-3)
    assert peak_one == pytest.approx(0.45, abs=1e-3)
    assert peak_six == pytest.approx(0.15, abs=1e-3)


@pytest.mark.parametrize(
    ("session", "encoding", "found"),
    [
        ("audio/ogg", "flac", "FLAC"),
        ("audio/flac", "ogg-opus", "Ogg"),
        ("audio/webm", "mp3", "ID3"),
        ("audio/mpeg", "webm-opus", "WebM"),
        ("audio/aac", "ogg-vorbis", "Ogg"),
        ("audio/mp4", "flac", "FLAC"),
    ],
)
def test_wrong_container_names_both_formats(session: str, encoding: str, found: str) -> None:
    data = encoded(encoding, 16000 if "vorbis" not in encoding else 22050, 2)
    with pytest.raises(DecodeError, match=rf"looks like {found}.*session says {session}"):
        decode_file(parse_content_type(session), data)
    decoder = StreamDecoder(parse_content_type(session))
    with pytest.raises(DecodeError, match=f"looks like {found}"):
        decoder.decode_chunk(data)
    with pytest.raises(DecodeError, match="already failed"):
        decoder.decode_chunk(data)


GARBAGE = bytes(range(7, 250)) * 40


@pytest.mark.parametrize("mime", ["audio/mpeg", "audio/ogg", "audio/flac", "audio/webm"])
def test_garbage_is_a_decode_error(mime: str) -> None:
    fmt = parse_content_type(mime)
    with pytest.raises(DecodeError, match=mime.replace("/", ".")):
        decode_file(fmt, GARBAGE)
    decoder = StreamDecoder(fmt)
    with pytest.raises(DecodeError):
        decoder.decode_chunk(GARBAGE)
        decoder.flush()


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_truncated_header_is_a_decode_error(encoding: str) -> None:
    data = encoded(encoding, 16000 if "vorbis" not in encoding else 22050, 2)[:40]
    with pytest.raises(DecodeError):
        decode_file(fmt_of(encoding), data)
    decoder = StreamDecoder(fmt_of(encoding))
    with pytest.raises(DecodeError):
        decoder.decode_chunk(data)
        decoder.flush()


def test_truncated_ogg_says_so() -> None:
    data = encoded("ogg-opus", 48000, 1)
    with pytest.raises(DecodeError, match="truncated"):
        decode_file(fmt_of("ogg-opus"), data[: len(data) // 2])


def test_unfragmented_mp4_stream_explains_itself() -> None:
    data = encoded("m4a", 16000, 1)
    with pytest.raises(DecodeError, match="must be fragmented"):
        stream("m4a", data, 4000)


def test_short_stream_without_audio_is_an_error_but_empty_is_not() -> None:
    assert StreamDecoder(fmt_of("ogg-opus")).flush().shape == (0,)
    assert decode_file(fmt_of("mp3"), b"").shape == (0,)
    decoder = StreamDecoder(fmt_of("ogg-opus"))
    assert decoder.decode_chunk(b"Ogg").shape == (0,)
    with pytest.raises(DecodeError):
        decoder.flush()


def test_limit_stops_a_tiny_file_expanding(monkeypatch: pytest.MonkeyPatch) -> None:
    silence = np.zeros((48000 * 30, 1), np.float32)
    data = encode_audio(silence, 48000, "flac")
    assert len(data) < 50_000
    pushed_s: list[float] = []
    original = container_module.FrameSink.push

    def counting(self: container_module.FrameSink, frame):  # type: ignore[no-untyped-def]
        pushed_s.append(frame.samples / frame.sample_rate)
        return original(self, frame)

    monkeypatch.setattr(container_module.FrameSink, "push", counting)
    limits = DecodeLimits(max_duration_s=2.0)
    with pytest.raises(AudioLimitError, match="2 s"):
        decode_file(fmt_of("flac"), data, limits)
    assert sum(pushed_s) < 2.0 + 0.2
    pushed_s.clear()
    decoder = StreamDecoder(fmt_of("flac"), limits)
    with pytest.raises(AudioLimitError):
        decoder.decode_chunk(data)
    assert sum(pushed_s) < 2.0 + 0.2


def demux_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("tympan-demux")]


def wait_for_no_demux_threads() -> None:
    deadline = time.monotonic() + 5
    while demux_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not demux_threads()


def test_threads_end_on_flush_error_and_abandonment() -> None:
    data = encoded("ogg-opus", 48000, 1)
    decoder = StreamDecoder(fmt_of("ogg-opus"))
    decoder.decode_chunk(data[:3000])
    decoder.decode_chunk(data[3000:])
    decoder.flush()
    wait_for_no_demux_threads()
    failed = StreamDecoder(fmt_of("ogg-opus"))
    failed.decode_chunk(data[:3000])
    with pytest.raises(DecodeError, match="truncated"):
        failed.flush()
    wait_for_no_demux_threads()
    abandoned = StreamDecoder(fmt_of("ogg-opus"))
    abandoned.decode_chunk(data[:3000])
    assert demux_threads()
    del abandoned
    gc.collect()
    wait_for_no_demux_threads()
