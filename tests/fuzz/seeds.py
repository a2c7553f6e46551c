"""Starting corpora: small, valid inputs for every target, made by the real encoders.

A coverage-guided fuzzer mutates what it is given, so each decoder target starts from real
LAME, libopus, Vorbis, FLAC and AAC output (``server.audio.encode``) and soundfile WAVs, prefixed
with the control byte that the target reads (0: whole file, odd: a chunked stream). The seeds
are rebuilt on every run rather than checked in; they are deterministic.
"""

from __future__ import annotations

import json
import struct

import msgpack
import numpy as np

from protocol.tokens import PageCursor, TokenCodec
from server.audio.encode import encode_audio, encode_pcm, encode_wav
from tests.fuzz.targets import RAW_FORMAT_NAMES, RAW_RATES_HZ, TOKEN_KEY, TOKEN_SESSION_IDS

__all__ = ["seed_inputs"]

_FILE = b"\x00"
_STREAM_64 = b"\x01"
_STREAM_256 = b"\x07"
_TOKEN_HEADER = struct.Struct(">BQH")

_CONTAINER_ENCODINGS = {
    "mp3": ("mp3",),
    "ogg": ("ogg-vorbis", "ogg-opus"),
    "flac": ("flac",),
    "webm": ("webm-opus",),
    "aac": ("aac-adts",),
    "mp4": ("m4a", "m4a-fragmented", "aac-adts"),
}
_CONTENT_TYPES = (
    "audio/x-raw; rate=16000; format=s16le; channels=1",
    'AUDIO/X-RAW;RATE="44100"; Format=F32LE ;channels=2;layout=interleaved',
    "audio/x-raw; rate=8000; format=u8",
    "audio/wav",
    "audio/x-wav; codecs=1",
    "audio/mpeg",
    "audio/opus",
    "audio/mp4",
    " audio/flac ; ",
)
_BODIES: tuple[object, ...] = (
    {"type": "stream", "content_type": "audio/x-raw; rate=16000; format=s16le"},
    {
        "type": "file",
        "content_type": "audio/wav",
        "metadata": {"device": "mic-1", "gain": [1, 2.5, None]},
        "total_size": 48000,
        "default_sensitivity": -2,
        "tags_sensitivity": {"Speech": 1, "Dog": -1},
        "window_hop": "1s",
        "file_name": "clip.wav",
        "file_length": 3.5,
    },
    {"type": "stream", "content_type": "audio/ogg", "window_hop": 0.5, "total_size": 1.0},
    {"type": "file", "content_type": "audio/flac", "metadata": {"id": b"\x00\x01"}},
    {"type": "stream", "content_type": "audio/webm", "total_size": 1e3, "file_length": 2e-3},
    {"make_readonly": True},
    {"data": "AAAA"},
    [1, 2],
)


def _tone(seconds: float, rate_hz: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    mono = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    return np.repeat(mono[:, None], channels, axis=1).astype(np.float32)


def _raw_seeds() -> list[bytes]:
    seeds = []
    for format_index, name in enumerate(("s16le", "f32le", "s24be", "u8", "f64be", "f24le")):
        for channels in (1, 2):
            rate_index = 0 if format_index % 2 == 0 else RAW_RATES_HZ.index(44_100)
            control = bytes([RAW_FORMAT_NAMES.index(name), 8 * rate_index + channels - 1, 3])
            seeds.append(control + encode_pcm(_tone(0.01, 16_000, channels), name))
    return seeds


def _wav_seeds() -> list[bytes]:
    mono = _tone(0.02, 8_000)
    wavs = [
        encode_wav(mono, 8_000, "PCM_16"),
        encode_wav(_tone(0.01, 16_000, 2), 16_000, "PCM_24"),
        encode_wav(mono, 8_000, "PCM_U8"),
        encode_wav(mono, 8_000, "PCM_32"),
        encode_wav(mono, 8_000, "FLOAT"),
        encode_wav(mono, 8_000, "DOUBLE"),
        encode_wav(_tone(0.01, 16_000, 3), 16_000, "PCM_16"),  # WAVE_FORMAT_EXTENSIBLE
    ]
    streaming = bytearray(wavs[0])
    streaming[4:8] = b"\xff\xff\xff\xff"
    streaming[40:44] = b"\x00\x00\x00\x00"
    seeds = [_FILE + wav for wav in wavs]
    seeds += [_STREAM_64 + wavs[0] + wavs[1], _STREAM_256 + bytes(streaming) + b"\x01\x02" * 64]
    seeds.append(_STREAM_64 + wavs[0] + b"LIST\x04\x00\x00\x00INFO" + b"\x10\x00" * 32)
    return seeds


def _container_seeds(target: str) -> list[bytes]:
    seeds = []
    for encoding in _CONTAINER_ENCODINGS[target]:
        for seconds, rate_hz, channels in ((0.15, 8_000, 1), (0.05, 44_100, 2)):
            encoded = encode_audio(_tone(seconds, rate_hz, channels), rate_hz, encoding)
            seeds += [_FILE + encoded, _STREAM_64 + encoded]
    return seeds


_EVENT_QUERIES = (
    "threshold=0.3&merge_window_ms=500&min_duration_ms=0",
    "tag_threshold=Dog:0.3&tag_threshold=Child speech, kid speaking:0.2&boundary=naive",
    "tag_merge_window_ms=Speech:5000&tag_min_duration_ms=Dog:100&state=closed",
    "12.3",
    "threshold=1e-300&merge_window_ms=3600000",
)


def _token_seeds() -> list[bytes]:
    codec = TokenCodec(TOKEN_KEY)
    seeds = []
    for index, session_id in enumerate(TOKEN_SESSION_IDS):
        for cursor_index, count in ((0, 32), (1024, 1), (2**40, 1024)):
            cursor = PageCursor(session_id, cursor_index, count)
            seeds.append(bytes([index << 1]) + codec.encode(cursor).encode())
            seeds.append(bytes([index << 1 | 1]) + _TOKEN_HEADER.pack(1, cursor_index, count))
    return seeds


def _body_seeds() -> list[bytes]:
    seeds = []
    for body in _BODIES:
        if _json_safe(body):
            seeds.append(b"\x00" + json.dumps(body).encode())
        seeds.append(b"\x01" + msgpack.packb(body, use_bin_type=True))
    return seeds


def _json_safe(body: object) -> bool:
    try:
        json.dumps(body)
    except TypeError:
        return False
    return True


def _decode_body_seeds() -> list[bytes]:
    seeds = []
    for body in _BODIES[:2]:
        seeds += [b"\x01" + json.dumps(body).encode(), b"\x02" + msgpack.packb(body)]
    seeds.append(b"\x02" + msgpack.packb({"data": b"\x00\x01"}, use_bin_type=True))
    seeds.append(b"\x01" + b"[" * 40 + b"]" * 40)
    return seeds


def seed_inputs(target: str) -> list[bytes]:
    """The starting corpus of ``target`` (see ``tests.fuzz.targets.TARGETS``)."""
    if target == "raw":
        return _raw_seeds()
    if target == "wav":
        return _wav_seeds()
    if target in _CONTAINER_ENCODINGS:
        return _container_seeds(target)
    if target == "content_type":
        return [text.encode() for text in _CONTENT_TYPES]
    if target == "token":
        return _token_seeds()
    if target == "create_session":
        return _body_seeds()
    if target == "decode_body":
        return _decode_body_seeds()
    if target == "events_query":
        return [text.encode() for text in _EVENT_QUERIES]
    raise KeyError(f"no seeds for fuzz target {target!r}")
