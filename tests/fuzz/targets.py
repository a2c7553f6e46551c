"""One fuzz target per parser: bytes in, documented errors swallowed, anything else escapes.

A target is a plain function of ``bytes``, so atheris drives it (``tests.fuzz.run``) and pytest
replays stored inputs through it without atheris. Each target names the exceptions its parser
documents; any other exception, or a broken invariant (``InvariantViolation``), is a finding.

Decoder targets read their first byte as a control byte (whole file or stream, and where the
stream is cut into chunks) so one input exercises both entry points, and they decode under
small limits so an input that expands into hours of audio stops at ``AudioLimitError`` instead
of spending the run resampling it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import traceback
import urllib.parse
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import msgpack
import numpy as np
from multidict import MultiDict

from protocol.codec import DecodeBodyError, decode_body
from protocol.errors import BadRequest
from protocol.events import EventParams, StreamPosition
from protocol.messages import CreateSession, UpdateSession, parse_chunk_data
from protocol.tokens import InvalidToken, TokenCodec
from server.audio import (
    RAW_SAMPLE_FORMATS,
    SUPPORTED_MIMES,
    AudioFormat,
    AudioLimitError,
    ContentTypeError,
    DecodeError,
    DecodeLimits,
    StreamDecoder,
    decode_file,
    parse_content_type,
)
from server.audio.formats import MAX_CHANNELS, MAX_RAW_RATE_HZ, MIN_RAW_RATE_HZ
from server.event_log import rules_for
from server.sessions import params_to_dict

__all__ = [
    "CONTAINER_MIMES",
    "FUZZ_LIMITS",
    "RAW_FORMAT_NAMES",
    "RAW_RATES_HZ",
    "TARGETS",
    "TOKEN_KEY",
    "TOKEN_SESSION_IDS",
    "InvariantViolation",
    "Target",
]

FUZZ_LIMITS = DecodeLimits(max_duration_s=120.0, max_decoded_bytes=120 * 16_000 * 4)
RAW_RATES_HZ = (16_000, 8_000, 44_100, 48_000, 22_050, 11_025, 1_000, 384_000)
RAW_FORMAT_NAMES = tuple(sorted(RAW_SAMPLE_FORMATS))
_STREAM_STEP_BYTES = 64
CONTAINER_MIMES = {
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "flac": "audio/flac",
    "webm": "audio/webm",
    "aac": "audio/aac",
    "mp4": "audio/mp4",
}
TOKEN_KEY = b"tympan-fuzz-token-key-0123456789"
TOKEN_SESSION_IDS = ("3f1c0d5e9a7b4c21b8e06f2d4a9c7e13", "", "ü", "a" * 200)
_BODY_CONTENT_TYPES = (
    None,
    "application/json",
    "application/msgpack",
    "application/x-msgpack; charset=binary",
    "APPLICATION/VND.MSGPACK",
    "text/plain",
)


class InvariantViolation(AssertionError):
    """A parser returned normally but its result breaks a documented property."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise InvariantViolation(message)


def _chunks(data: bytes, step: int) -> Iterator[bytes]:
    for start in range(0, len(data), step):
        yield data[start : start + step]


def _check_audio(audio: np.ndarray) -> None:
    _check(audio.dtype == np.float32, f"decoded audio is {audio.dtype}, not float32")
    _check(audio.ndim == 1, f"decoded audio has shape {audio.shape}, not mono")
    _check(bool(np.isfinite(audio).all()), "decoded audio contains NaN or infinity")


def _decode(fmt: AudioFormat, control: int, payload: bytes) -> None:
    """Whole file (even control byte) or a stream cut into ``64 * k`` byte chunks (odd)."""
    # Casting huge floats down to float32 warns before nan_to_num clamps them; that is the
    # decoder's documented path, not a finding.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            if control % 2 == 0:
                _check_audio(decode_file(fmt, payload, FUZZ_LIMITS))
                return
            decoder = StreamDecoder(fmt, FUZZ_LIMITS)
            step = _STREAM_STEP_BYTES * (1 + control // 2)
            for chunk in _chunks(payload, step):
                _check_audio(decoder.decode_chunk(chunk))
            _check_audio(decoder.flush())
        except (DecodeError, AudioLimitError) as error:
            _release_frames(error)


def _release_frames(error: BaseException | None) -> None:
    """Clear the frames a decode error's tracebacks hold.

    A failed compressed stream keeps its error, whose frames hold the PyAV container, whose
    reader holds the pipe that holds the error: a cycle the garbage collector cannot break,
    leaking the demuxer (see ``test_failed_container_stream_is_freed``). Breaking it here lets
    a fuzz run go on finding other bugs instead of dying of that one leak.
    """
    while error is not None:
        if error.__traceback__ is not None:
            traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__


def fuzz_raw(data: bytes) -> None:
    """Raw PCM: bytes 0-1 pick the sample format, channels and rate, byte 2 the chunking."""
    if len(data) < 3:
        return
    sample_format = RAW_FORMAT_NAMES[data[0] % len(RAW_FORMAT_NAMES)]
    channels = 1 + data[1] % MAX_CHANNELS
    rate_hz = RAW_RATES_HZ[(data[1] // MAX_CHANNELS) % len(RAW_RATES_HZ)]
    content_type = f"audio/x-raw; rate={rate_hz}; format={sample_format}; channels={channels}"
    _decode(parse_content_type(content_type), data[2], data[3:])


def fuzz_wav(data: bytes) -> None:
    """WAV files and WAV streams (headers split, repeated, or followed by bare PCM)."""
    if data:
        _decode(parse_content_type("audio/wav"), data[0], data[1:])


def _container_target(mime: str) -> Callable[[bytes], None]:
    fmt = parse_content_type(mime)

    def fuzz_container(data: bytes) -> None:
        if data:
            _decode(fmt, data[0], data[1:])

    fuzz_container.__doc__ = f"{mime} through PyAV, as a file and as a chunked stream."
    return fuzz_container


def fuzz_content_type(data: bytes) -> None:
    """``parse_content_type`` on any text a JSON body can carry (lone surrogates included)."""
    text = data.decode("utf-8", "surrogateescape")
    try:
        fmt = parse_content_type(text)
    except ContentTypeError:
        return
    _check(fmt.mime in SUPPORTED_MIMES, f"parsed an unsupported mime {fmt.mime!r}")
    if fmt.mime == "audio/x-raw":
        rate_hz = fmt.sample_rate_hz
        _check(
            rate_hz is not None and MIN_RAW_RATE_HZ <= rate_hz <= MAX_RAW_RATE_HZ,
            f"raw rate {rate_hz} out of range",
        )
        _check(1 <= fmt.channels <= MAX_CHANNELS, f"raw channels {fmt.channels} out of range")
        _check(fmt.sample_format in RAW_SAMPLE_FORMATS, f"raw format {fmt.sample_format!r}")
    StreamDecoder(fmt, FUZZ_LIMITS)  # whatever parses must also open a decoder


_CODEC = TokenCodec(TOKEN_KEY)


def fuzz_token(data: bytes) -> None:
    """``TokenCodec.decode``: byte 0 picks the session and the mode.

    Mode 0 decodes the rest as token text. Mode 1 signs the rest as a payload with the real
    key first, so the fuzzer reaches the checks behind the MAC (length, version, fields).
    """
    if not data:
        return
    session_id = TOKEN_SESSION_IDS[(data[0] >> 1) % len(TOKEN_SESSION_IDS)]
    if data[0] & 1:
        token = _signed_token(data[1:], session_id)
    else:
        token = data[1:].decode("utf-8", "surrogateescape")
    try:
        cursor = _CODEC.decode(token, session_id)
    except InvalidToken:
        return
    _check(cursor.session_id == session_id, "a token decoded for another session")
    _check(cursor.next_index >= 0 and cursor.count >= 0, f"negative cursor {cursor}")
    again = _CODEC.decode(_CODEC.encode(cursor), session_id)
    _check(again == cursor, f"cursor does not survive a round trip: {cursor} -> {again}")


def _signed_token(payload: bytes, session_id: str) -> str:
    mac = _CODEC._mac(session_id, payload)
    return base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode()


def _loads(data: bytes) -> object:
    """JSON for an even byte 0, msgpack for an odd one; ``None`` when it does not parse."""
    if not data:
        return None
    try:
        if data[0] % 2 == 0:
            return json.loads(data[1:])
        return msgpack.unpackb(data[1:], raw=False, strict_map_key=True)
    except (ValueError, RecursionError):
        return None
    except Exception:  # msgpack raises several unrelated types; decode_body has its own target
        return None


def fuzz_create_session(data: bytes) -> None:
    """``CreateSession.from_body`` (and the other body parsers) on JSON or msgpack values.

    An accepted body must also survive what the server does next: the content type is parsed,
    and the parameters are stored as JSON and read back with ``from_body`` after a restart.
    """
    body = _loads(data)
    for parse in (UpdateSession.from_body, parse_chunk_data):
        with contextlib.suppress(BadRequest):
            parse(body)
    try:
        params = CreateSession.from_body(body)
    except BadRequest:
        return
    with contextlib.suppress(ContentTypeError):
        parse_content_type(params.content_type)
    stored = json.loads(json.dumps(params_to_dict(params)))
    _check(
        CreateSession.from_body(stored) == params or _has_nan(params),
        "parameters change across a store round trip",
    )


def _has_nan(params: CreateSession) -> bool:
    """NaN never equals itself, so metadata holding one cannot compare equal after a reload."""
    return "NaN" in json.dumps(params.metadata)


_EVENT_LABELS = ("Dog", "Speech", "Child speech, kid speaking", "Silence")


def fuzz_events_query(data: bytes) -> None:
    """The events routes' inputs: ``EventParams.from_query`` on a query string,
    ``StreamPosition.parse`` on a Last-Event-ID, and the rules built from accepted parameters.

    Accepted parameters must survive being carried in a ``next_token`` (``to_dict`` then
    ``from_body``) and build rules or name what is wrong (``BadRequest``)."""
    text = data.decode("utf-8", "surrogateescape")
    with contextlib.suppress(BadRequest):
        position = StreamPosition.parse(text[:64])
        _check(StreamPosition.parse(str(position)) == position, f"{position} does not round trip")
    query = MultiDict(urllib.parse.parse_qsl(text, keep_blank_values=True))
    try:
        params = EventParams.from_query(query)
    except BadRequest:
        return
    carried = EventParams.from_body(json.loads(json.dumps(params.to_dict())))
    _check(carried == params, f"parameters change when carried in a token: {params}")
    _check(params.over(EventParams()) == params, "over() an empty base changes parameters")
    with contextlib.suppress(BadRequest):
        rules = rules_for(_EVENT_LABELS, np.full(len(_EVENT_LABELS), 0.5), params, 0.5, 0.975)
        _check(
            bool(np.all((rules.threshold > 0) & (rules.threshold < 1))), "threshold out of (0, 1)"
        )


def fuzz_decode_body(data: bytes) -> None:
    """``decode_body`` under each content type the server distinguishes."""
    if not data:
        return
    content_type = _BODY_CONTENT_TYPES[data[0] % len(_BODY_CONTENT_TYPES)]
    with contextlib.suppress(DecodeBodyError):
        decode_body(data[1:], content_type)


@dataclass(frozen=True)
class Target:
    """A fuzz target and how to run it: input size cap, per-input timeout, dictionary."""

    name: str
    function: Callable[[bytes], None]
    max_len: int
    timeout_s: int = 10
    dictionary: str | None = None


TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target("raw", fuzz_raw, 4096),
        Target("wav", fuzz_wav, 4096, dictionary="wav.dict"),
        *(
            Target(name, _container_target(mime), 16384, timeout_s=20)
            for name, mime in CONTAINER_MIMES.items()
        ),
        Target("content_type", fuzz_content_type, 512, dictionary="content_type.dict"),
        Target("token", fuzz_token, 256),
        Target("create_session", fuzz_create_session, 2048, dictionary="json.dict"),
        Target("decode_body", fuzz_decode_body, 4096, dictionary="json.dict"),
        Target("events_query", fuzz_events_query, 1024),
    )
}
