"""The set-up tools' file decoder (models.yamnet.audiofile) gives the very samples a file session
gets from the server's decoder, so that the calibration sees what a session sees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.yamnet.audiofile import AudioFileError, decode_audio, decode_audio_file
from server.audio import decode_file, parse_content_type
from server.audio.encode import encode_audio, encode_wav

SECONDS = 0.7


def _signal(rate_hz: int, channels: int, amplitude: float = 0.4) -> np.ndarray:
    t = np.arange(int(rate_hz * SECONDS)) / rate_hz
    rng = np.random.default_rng(rate_hz + channels)
    columns = [
        amplitude * np.sin(2 * np.pi * (300.0 + 250.0 * c) * t) + 0.05 * rng.standard_normal(t.size)
        for c in range(channels)
    ]
    return np.stack(columns, axis=1).astype(np.float32)


WAV_CASES = [
    (rate_hz, channels, subtype)
    for rate_hz in (16000, 22050, 44100, 48000)
    for channels in (1, 2, 3)
    for subtype in ("PCM_16", "PCM_24", "PCM_U8", "FLOAT")
]


@pytest.mark.parametrize(("rate_hz", "channels", "subtype"), WAV_CASES)
def test_wav_decodes_as_the_server_decodes_it(rate_hz: int, channels: int, subtype: str) -> None:
    # Float WAV louder than full scale: the server clips it, so must the tool.
    amplitude = 1.3 if subtype == "FLOAT" else 0.4
    data = encode_wav(_signal(rate_hz, channels, amplitude), rate_hz, subtype)
    expected = decode_file(parse_content_type("audio/wav"), data)
    np.testing.assert_array_equal(decode_audio(data, "wav"), expected)


@pytest.mark.parametrize(
    ("encoding", "rate_hz", "channels"),
    [
        ("ogg-vorbis", 44100, 2),
        ("ogg-vorbis", 22050, 2),
        ("ogg-opus", 48000, 1),
        ("ogg-opus", 16000, 3),
        ("flac", 44100, 2),
    ],
)
def test_compressed_files_decode_as_the_server_decodes_them(
    encoding: str, rate_hz: int, channels: int
) -> None:
    data = encode_audio(_signal(rate_hz, channels), rate_hz, encoding)
    mime = "audio/flac" if encoding == "flac" else "audio/ogg"
    expected = decode_file(parse_content_type(mime), data)
    demuxer = "flac" if encoding == "flac" else "ogg"
    np.testing.assert_array_equal(decode_audio(data, demuxer), expected)


def test_files_are_read_by_suffix(tmp_path: Path) -> None:
    ogg = encode_audio(_signal(44100, 2), 44100, "ogg-vorbis")
    path = tmp_path / "bell.oga"  # the freedesktop sound theme's suffix
    path.write_bytes(ogg)
    expected = decode_file(parse_content_type("audio/ogg"), ogg)
    np.testing.assert_array_equal(decode_audio_file(path), expected)


def test_what_is_not_audio_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    with pytest.raises(AudioFileError):
        decode_audio_file(path)
    with pytest.raises(AudioFileError):
        decode_audio(b"OggS" + bytes(100), "ogg")
