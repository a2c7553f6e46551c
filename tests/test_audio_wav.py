"""WAV files and WAV streams: subtypes, rates, channels, per-chunk headers, continuation."""

from __future__ import annotations

import itertools
import struct

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
from server.audio.encode import encode_audio, encode_pcm, encode_wav

WAV = parse_content_type("audio/wav")
SUBTYPE_TOLERANCE = {
    "PCM_U8": 1 / 100,
    "PCM_16": 1 / 20000,
    "PCM_24": 1e-6,
    "PCM_32": 1e-6,
    "FLOAT": 1e-7,
    "DOUBLE": 1e-7,
}


def noise(frames: int, channels: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.8, 0.8, (frames, channels)).astype(np.float32)


def stream_decode(chunks: list[bytes]) -> np.ndarray:
    decoder = StreamDecoder(WAV)
    return np.concatenate([*(decoder.decode_chunk(c) for c in chunks), decoder.flush()])


@pytest.mark.parametrize("subtype", sorted(SUBTYPE_TOLERANCE))
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_subtypes_and_channels_at_16k(subtype: str, channels: int) -> None:
    signal = noise(1600, channels)
    decoded = decode_file(WAV, encode_wav(signal, 16000, subtype))
    np.testing.assert_allclose(decoded, signal.mean(axis=1), atol=SUBTYPE_TOLERANCE[subtype] * 1.01)


@pytest.mark.parametrize("rate_hz", [8000, 22050, 44100, 48000, 96000])
def test_rates_are_resampled_to_16k(rate_hz: int) -> None:
    t = np.arange(rate_hz) / rate_hz
    signal = (0.5 * np.sin(2 * np.pi * 1000 * t))[:, None].astype(np.float32)
    decoded = decode_file(WAV, encode_wav(signal, rate_hz, "PCM_24"))
    assert abs(len(decoded) - TARGET_RATE_HZ) <= 1
    spectrum = np.abs(np.fft.rfft(decoded))
    assert abs(np.argmax(spectrum) * TARGET_RATE_HZ / len(decoded) - 1000) < 2


def test_stream_of_chunks_each_with_its_own_header() -> None:
    signal = noise(8000, 2)
    pieces = [signal[i : i + 1000] for i in range(0, 8000, 1000)]
    chunks = [encode_wav(piece, 16000) for piece in pieces]
    whole = decode_file(WAV, encode_wav(signal, 16000))
    np.testing.assert_array_equal(stream_decode(chunks), whole)


def test_headerless_continuation_uses_the_first_header() -> None:
    signal = noise(4000, 2)
    first = encode_wav(signal[:1000], 44100, "PCM_24")
    rest = encode_pcm(signal[1000:], "s24le")
    expected = decode_file(WAV, encode_wav(signal, 44100, "PCM_24"))
    streamed = stream_decode([first, rest[:7], rest[7:3001], rest[3001:]])
    np.testing.assert_allclose(streamed, expected, atol=1e-6)


def streaming_header(rate_hz: int, channels: int, data_bytes: int) -> bytes:
    """A header like mic clients write before they know the length."""
    fmt = struct.pack("<HHIIHH", 1, channels, rate_hz, rate_hz * 2 * channels, 2 * channels, 16)
    return (
        b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"data" + struct.pack("<I", data_bytes)
    )  # fmt: skip


@pytest.mark.parametrize("placeholder", [0, 0xFFFFFFFF])
def test_placeholder_data_size_streams_to_the_end(placeholder: int) -> None:
    signal = noise(3000, 1)
    pcm = encode_pcm(signal, "s16le")
    streamed = stream_decode([streaming_header(16000, 1, placeholder) + pcm[:999], pcm[999:]])
    np.testing.assert_allclose(streamed, signal[:, 0], atol=1 / 20000)


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=9000), max_size=10))
def test_file_cut_into_arbitrary_chunks_matches_the_file(cuts: list[int]) -> None:
    signal = noise(2205, 2, seed=5)
    data = encode_wav(signal, 22050, "PCM_16")
    data = data + b"LIST" + struct.pack("<I", 4) + b"INFO"  # a trailing metadata chunk
    bounds = [0, *sorted(c for c in cuts if c <= len(data)), len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    np.testing.assert_allclose(stream_decode(chunks), decode_file(WAV, data), atol=1e-6)


def test_file_ignores_trailing_chunks_and_extra_bytes() -> None:
    signal = noise(1000, 1)
    data = encode_wav(signal, 16000) + b"id3 " + struct.pack("<I", 3) + b"abc\x00"
    np.testing.assert_allclose(decode_file(WAV, data), signal[:, 0], atol=1 / 20000)


def test_truncated_data_decodes_the_whole_frames_present() -> None:
    signal = noise(1000, 2)
    data = encode_wav(signal, 16000, "PCM_24")
    decoded = decode_file(WAV, data[:-5])  # drops the last, partial frame
    np.testing.assert_allclose(decoded, signal.mean(axis=1)[:-1], atol=1e-6)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "header is incomplete"),
        (b"RIFF", "header is incomplete"),
        (b"RIFX" + bytes(40), "big-endian RIFX"),
        (b"not a wav file at all", "not a recognised audio format.*expected data starting"),
    ],
)
def test_bad_or_truncated_headers(data: bytes, fragment: str) -> None:
    with pytest.raises(DecodeError, match=fragment):
        decode_file(WAV, data)


def test_wrong_container_is_named() -> None:
    ogg = encode_audio(noise(1600, 1), 16000, "ogg-opus")
    with pytest.raises(DecodeError, match=r"looks like Ogg.*audio/wav"):
        decode_file(WAV, ogg)
    decoder = StreamDecoder(WAV)
    with pytest.raises(DecodeError, match="looks like Ogg"):
        decoder.decode_chunk(ogg)


def test_unsupported_encoding_is_named() -> None:
    data = encode_wav(noise(100, 1), 8000, "ULAW")
    with pytest.raises(DecodeError, match="tag 0x0007"):
        decode_file(WAV, data)


def test_data_before_fmt_is_rejected() -> None:
    data = b"RIFF" + struct.pack("<I", 20) + b"WAVE" + b"data" + struct.pack("<I", 2) + b"\x00\x00"
    with pytest.raises(DecodeError, match="before its fmt"):
        decode_file(WAV, data)


def test_limits_apply_to_wav() -> None:
    data = encode_wav(noise(48000, 1), 48000)
    with pytest.raises(AudioLimitError):
        decode_file(WAV, data, DecodeLimits(max_duration_s=0.5))
    decoder = StreamDecoder(WAV, DecodeLimits(max_duration_s=0.5))
    decoder.decode_chunk(data[:20000])
    with pytest.raises(AudioLimitError):
        decoder.decode_chunk(data[20000:])


def test_empty_stream_and_file_are_empty_audio() -> None:
    assert decode_file(WAV, b"").shape == (0,)
    assert StreamDecoder(WAV).flush().shape == (0,)
