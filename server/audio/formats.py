"""Content types tympan accepts, parsed into an ``AudioFormat``.

Parsing happens once, at session creation, so a bad content type is a 400 there rather than a
decode failure on the first chunk. Parameters are case-insensitive, may come in any order and
tolerate whitespace and quotes, because clients build these strings by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.audio.errors import ContentTypeError
from server.audio.pcm import RAW_SAMPLE_FORMAT_ALIASES, RAW_SAMPLE_FORMATS, SampleFormat

__all__ = [
    "MAX_CHANNELS",
    "MAX_RAW_RATE_HZ",
    "MIME_AAC",
    "MIME_FLAC",
    "MIME_MP3",
    "MIME_MP4",
    "MIME_OGG",
    "MIME_RAW",
    "MIME_WAV",
    "MIME_WEBM",
    "MIN_RAW_RATE_HZ",
    "SUPPORTED_MIMES",
    "TARGET_RATE_HZ",
    "AudioFormat",
    "parse_content_type",
]

TARGET_RATE_HZ: int = 16000
MIN_RAW_RATE_HZ = 1000
MAX_RAW_RATE_HZ = 384000
MAX_CHANNELS = 8
DEFAULT_RAW_SAMPLE_FORMAT = "s16le"

MIME_RAW = "audio/x-raw"
MIME_WAV = "audio/wav"
MIME_MP3 = "audio/mpeg"
MIME_OGG = "audio/ogg"
MIME_FLAC = "audio/flac"
MIME_WEBM = "audio/webm"
MIME_AAC = "audio/aac"
MIME_MP4 = "audio/mp4"

_MIME_ALIASES: dict[str, str] = {
    MIME_RAW: MIME_RAW,
    MIME_WAV: MIME_WAV,
    "audio/x-wav": MIME_WAV,
    "audio/wave": MIME_WAV,
    "audio/vnd.wave": MIME_WAV,
    MIME_MP3: MIME_MP3,
    "audio/mp3": MIME_MP3,
    "audio/x-mp3": MIME_MP3,
    "audio/mpeg3": MIME_MP3,
    MIME_OGG: MIME_OGG,
    "audio/opus": MIME_OGG,
    MIME_FLAC: MIME_FLAC,
    "audio/x-flac": MIME_FLAC,
    MIME_WEBM: MIME_WEBM,
    MIME_AAC: MIME_AAC,
    "audio/x-aac": MIME_AAC,
    MIME_MP4: MIME_MP4,
    "audio/m4a": MIME_MP4,
    "audio/x-m4a": MIME_MP4,
}

SUPPORTED_MIMES: tuple[str, ...] = tuple(sorted(_MIME_ALIASES))

_RAW_PARAMS = ("rate", "format", "channels", "layout")
_INTERLEAVED = "interleaved"


@dataclass(frozen=True)
class AudioFormat:
    """A parsed content type.

    ``sample_rate_hz``, ``sample_format`` and ``channels`` describe raw PCM only; every other
    format carries its rate and channel count in its own headers. ``sample_format`` is the
    canonical name: ``f32`` (no byte order, as Cochl's sample clients write it) becomes ``f32le``.
    """

    mime: str
    sample_rate_hz: int | None = None
    sample_format: str | None = None
    channels: int = 1

    @property
    def stateless_chunks(self) -> bool:
        """True when each stream chunk decodes independently of the previous ones."""
        return self.mime in (MIME_RAW, MIME_WAV)

    @property
    def raw_sample_format(self) -> SampleFormat:
        """The raw PCM sample encoding; only meaningful for ``audio/x-raw``."""
        if self.sample_format is None:
            raise ContentTypeError(f"{self.mime} has no raw sample format")
        return RAW_SAMPLE_FORMATS[self.sample_format]


def _split_params(content_type: str, parts: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in parts:
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        value = value.strip().strip('"').strip().lower()
        if not sep or not key or not value:
            raise ContentTypeError(
                f"malformed parameter {part.strip()!r} in content type {content_type!r}; "
                "expected key=value"
            )
        if key in params:
            raise ContentTypeError(f"parameter {key!r} given twice in {content_type!r}")
        params[key] = value
    return params


def _parse_int(name: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ContentTypeError(f"{name}={value!r} is not an integer") from None
    if not low <= number <= high:
        raise ContentTypeError(f"{name}={number} is out of range; expected {low}..{high}")
    return number


def _parse_raw(params: dict[str, str]) -> AudioFormat:
    unknown = sorted(set(params) - set(_RAW_PARAMS))
    if unknown:
        raise ContentTypeError(
            f"unknown audio/x-raw parameter(s) {', '.join(unknown)}; "
            f"known: {', '.join(_RAW_PARAMS)}"
        )
    if "rate" not in params:
        raise ContentTypeError("audio/x-raw needs a rate parameter, e.g. audio/x-raw; rate=16000")
    rate_hz = _parse_int("rate", params["rate"], MIN_RAW_RATE_HZ, MAX_RAW_RATE_HZ)
    channels = _parse_int("channels", params.get("channels", "1"), 1, MAX_CHANNELS)
    sample_format = params.get("format", DEFAULT_RAW_SAMPLE_FORMAT)
    sample_format = RAW_SAMPLE_FORMAT_ALIASES.get(sample_format, sample_format)
    if sample_format not in RAW_SAMPLE_FORMATS:
        raise ContentTypeError(
            f"unknown audio/x-raw format {sample_format!r}; "
            f"supported: {', '.join(RAW_SAMPLE_FORMATS)}; "
            f"and, read as little-endian, {', '.join(RAW_SAMPLE_FORMAT_ALIASES)}"
        )
    if params.get("layout", _INTERLEAVED) != _INTERLEAVED:
        raise ContentTypeError("audio/x-raw supports only layout=interleaved")
    return AudioFormat(MIME_RAW, rate_hz, sample_format, channels)


def parse_content_type(content_type: str) -> AudioFormat:
    """Parse a Content-Type header value; raise ``ContentTypeError`` saying what is wrong."""
    mime, *parts = content_type.split(";")
    mime = mime.strip().lower()
    canonical = _MIME_ALIASES.get(mime)
    if canonical is None:
        raise ContentTypeError(
            f"unsupported content type {mime or content_type!r}; "
            f"supported: {', '.join(SUPPORTED_MIMES)}"
        )
    params = _split_params(content_type, parts)
    if canonical == MIME_RAW:
        return _parse_raw(params)
    return AudioFormat(canonical)
