"""Raw PCM sessions: every sample format, split frames, averaging, resampling and limits."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.audio import (
    RAW_SAMPLE_FORMATS,
    TARGET_RATE_HZ,
    AudioLimitError,
    DecodeError,
    DecodeLimits,
    StreamDecoder,
    decode_file,
    parse_content_type,
)
from server.audio import resample as resample_module
from server.audio.encode import encode_pcm

TONE_HZ = 1000.0
# Quantisation error bound per format, in full-scale units.
TOLERANCE = {1: 1 / 100, 2: 1 / 20000, 3: 1e-6, 4: 1e-6, 8: 1e-7}
F16_TOLERANCE = 1e-3
F24_TOLERANCE = 2**-14


def tone(rate_hz: int, seconds: float, channels: int = 1, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate_hz * seconds)) / rate_hz
    mono = amplitude * np.sin(2 * np.pi * TONE_HZ * t)
    return np.repeat(mono[:, None], channels, axis=1).astype(np.float32)


def raw(rate_hz: int, sample_format: str = "s16le", channels: int = 1):  # type: ignore[no-untyped-def]
    return parse_content_type(
        f"audio/x-raw; rate={rate_hz}; format={sample_format}; channels={channels}"
    )


def peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * TARGET_RATE_HZ / len(samples))


def stream_decode(fmt, chunks: list[bytes]) -> np.ndarray:  # type: ignore[no-untyped-def]
    decoder = StreamDecoder(fmt)
    return np.concatenate([*(decoder.decode_chunk(c) for c in chunks), decoder.flush()])


@pytest.mark.parametrize("sample_format", sorted(RAW_SAMPLE_FORMATS))
@pytest.mark.parametrize("channels", [1, 2])
def test_every_format_round_trips_a_known_signal(sample_format: str, channels: int) -> None:
    rng = np.random.default_rng(7)
    signal = rng.uniform(-0.9, 0.9, size=(4000, channels)).astype(np.float32)
    decoded = decode_file(raw(16000, sample_format, channels), encode_pcm(signal, sample_format))
    width = RAW_SAMPLE_FORMATS[sample_format].bytes_per_sample
    if sample_format.startswith("f16"):
        tolerance = F16_TOLERANCE
    elif sample_format.startswith("f24"):
        tolerance = F24_TOLERANCE
    else:
        tolerance = TOLERANCE[width]
    assert decoded.dtype == np.float32
    assert decoded.shape == (4000,)
    np.testing.assert_allclose(decoded, signal.mean(axis=1), atol=tolerance)


@pytest.mark.parametrize(
    ("sample_format", "payload", "expected"),
    [
        ("s16le", b"\x00\x80", -1.0),
        ("s16be", b"\x40\x00", 0.5),
        ("u16le", b"\x00\x80", 0.0),
        ("u16be", b"\x00\x00", -1.0),
        ("s24le", b"\x00\x00\xc0", -0.5),
        ("s24be", b"\x40\x00\x00", 0.5),
        ("u24be", b"\xc0\x00\x00", 0.5),
        ("s32be", b"\x80\x00\x00\x00", -1.0),
        ("u32le", b"\x00\x00\x00\x40", -0.5),
        ("f24le", b"\x00\x00\x3f", 0.5),  # float32 0x3F000000 without its low byte
        ("f24be", b"\xbf\x40\x00", -0.75),  # float32 0xBF400000 without its low byte
        ("f16be", b"\x38\x00", 0.5),
        ("f32le", b"\x00\x00\x80\xbf", -1.0),
    ],
)
def test_known_bytes_decode_to_known_values(
    sample_format: str, payload: bytes, expected: float
) -> None:
    decoded = decode_file(raw(16000, sample_format), payload)
    assert decoded.tolist() == [expected]


def test_16k_mono_s16le_is_exact_and_skips_the_resampler(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise AssertionError("16 kHz audio must not be resampled")

    monkeypatch.setattr(resample_module.MonoResampler, "__init__", refuse)
    ints = np.random.default_rng(1).integers(-32768, 32767, 16000, dtype=np.int16)
    fmt = raw(16000)
    expected = ints.astype(np.float32) / 32768
    np.testing.assert_array_equal(decode_file(fmt, ints.tobytes()), expected)
    data = ints.tobytes()
    streamed = stream_decode(fmt, [data[:1001], data[1001:20001], data[20001:]])
    np.testing.assert_array_equal(streamed, expected)


def test_split_at_every_byte_offset_matches_unsplit() -> None:
    signal = np.random.default_rng(3).uniform(-1, 1, (60, 3)).astype(np.float32)
    for sample_format in ("s24be", "u16le", "f32be"):
        fmt = raw(16000, sample_format, channels=3)
        data = encode_pcm(signal, sample_format)
        whole = decode_file(fmt, data)
        for offset in range(len(data) + 1):
            split = stream_decode(fmt, [data[:offset], data[offset:]])
            np.testing.assert_array_equal(split, whole)


@settings(max_examples=40, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=4 * 2205 * 2), max_size=12),
    sample_format=st.sampled_from(["s16le", "s24le", "f32le", "u32be"]),
)
def test_random_chunking_through_the_resampler_matches_unsplit(
    cuts: list[int], sample_format: str
) -> None:
    signal = tone(22050, 0.1, channels=2)
    data = encode_pcm(signal, sample_format)
    fmt = raw(22050, sample_format, channels=2)
    bounds = [0, *sorted(c for c in cuts if c <= len(data)), len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    np.testing.assert_allclose(stream_decode(fmt, chunks), decode_file(fmt, data), atol=1e-6)


@pytest.mark.parametrize("rate_hz", [8000, 16000, 22050, 44100, 48000])
def test_resampled_tone_keeps_its_pitch_and_duration(rate_hz: int) -> None:
    decoded = decode_file(raw(rate_hz), encode_pcm(tone(rate_hz, 1.0), "s16le"))
    assert abs(len(decoded) - TARGET_RATE_HZ) <= 1
    assert abs(peak_hz(decoded) - TONE_HZ) < 2
    steady = decoded[1000:-1000]
    assert 0.47 < np.abs(steady).max() < 0.53


def test_chunked_resampling_has_no_seams() -> None:
    fmt = raw(44100)
    data = encode_pcm(tone(44100, 1.0), "s16le")
    chunks = [data[i : i + 882] for i in range(0, len(data), 882)]  # 10 ms chunks
    np.testing.assert_allclose(stream_decode(fmt, chunks), decode_file(fmt, data), atol=1e-6)


@pytest.mark.parametrize("channels", [2, 6, 8])
def test_channels_are_averaged_not_summed(channels: int) -> None:
    loud = tone(16000, 0.1, channels=channels, amplitude=0.9)
    decoded = decode_file(raw(16000, "f32le", channels), encode_pcm(loud, "f32le"))
    np.testing.assert_allclose(decoded, loud[:, 0], atol=1e-6)
    one_side = loud.copy()
    one_side[:, 1:] = 0
    decoded = decode_file(raw(16000, "f32le", channels), encode_pcm(one_side, "f32le"))
    np.testing.assert_allclose(decoded, loud[:, 0] / channels, atol=1e-6)


def test_non_finite_floats_are_sanitised() -> None:
    values = np.array([np.nan, np.inf, -np.inf, 0.25], "<f4")
    decoded = decode_file(raw(16000, "f32le"), values.tobytes())
    assert decoded.tolist() == [0.0, 1.0, -1.0, 0.25]


def test_trailing_partial_frame_is_an_error() -> None:
    with pytest.raises(DecodeError, match=r"incomplete 6-byte sample frame.*format=s24le"):
        decode_file(raw(16000, "s24le", 2), b"\x00" * 13)
    decoder = StreamDecoder(raw(16000))
    assert decoder.decode_chunk(b"\x01").size == 0
    with pytest.raises(DecodeError, match="incomplete"):
        decoder.flush()


def test_empty_input_is_empty_audio() -> None:
    assert decode_file(raw(16000), b"").shape == (0,)
    decoder = StreamDecoder(raw(8000))
    assert decoder.decode_chunk(b"").shape == (0,)
    assert decoder.flush().shape == (0,)


def test_duration_limit_raises_during_the_stream_and_sticks() -> None:
    decoder = StreamDecoder(raw(16000), DecodeLimits(max_duration_s=1.0))
    half = bytes(16000)  # 0.5 s of s16le
    decoder.decode_chunk(half)
    decoder.decode_chunk(half)
    with pytest.raises(AudioLimitError, match="1 s"):
        decoder.decode_chunk(b"\x00\x00")
    with pytest.raises(DecodeError, match="already failed"):
        decoder.decode_chunk(half)


def test_decoded_bytes_limit_counts_float32_at_16k() -> None:
    limits = DecodeLimits(max_decoded_bytes=TARGET_RATE_HZ * 4)  # one second
    decode_file(raw(8000), bytes(8000 * 2), limits)
    with pytest.raises(AudioLimitError, match="bytes"):
        decode_file(raw(8000), bytes(8000 * 2 + 2), limits)


def test_flush_twice_is_refused() -> None:
    decoder = StreamDecoder(raw(16000))
    decoder.flush()
    with pytest.raises(DecodeError, match="already flushed"):
        decoder.decode_chunk(b"\x00\x00")
