"""Content-type parsing: every accepted spelling and every rejection path."""

from __future__ import annotations

import re

import pytest

from server.audio import (
    RAW_SAMPLE_FORMATS,
    SUPPORTED_MIMES,
    AudioFormat,
    ContentTypeError,
    parse_content_type,
)
from server.audio.pcm import RAW_SAMPLE_FORMAT_ALIASES

BRIEF_RAW_FORMATS = [
    f"{kind}{bits}{order}" for kind in "suf" for bits in (16, 24, 32) for order in ("le", "be")
]


@pytest.mark.parametrize(
    ("content_type", "mime"),
    [
        ("audio/wav", "audio/wav"),
        ("audio/x-wav", "audio/wav"),
        ("AUDIO/WAVE", "audio/wav"),
        ("audio/mp3", "audio/mpeg"),
        ("audio/mpeg", "audio/mpeg"),
        ("audio/ogg", "audio/ogg"),
        ("audio/ogg; codecs=opus", "audio/ogg"),
        ("audio/flac", "audio/flac"),
        ("audio/webm;codecs=opus", "audio/webm"),
        ("audio/aac", "audio/aac"),
        ("audio/mp4", "audio/mp4"),
        (" audio/x-m4a ", "audio/mp4"),
    ],
)
def test_encoded_mimes_normalise(content_type: str, mime: str) -> None:
    fmt = parse_content_type(content_type)
    assert fmt.mime == mime
    assert fmt.stateless_chunks == (mime == "audio/wav")


def test_raw_parameters_any_order_case_and_whitespace() -> None:
    fmt = parse_content_type('Audio/X-Raw ;  FORMAT = "S24BE" ;Rate=44100;channels = 2 ;')
    assert fmt == AudioFormat("audio/x-raw", 44100, "s24be", 2)
    assert fmt.stateless_chunks


def test_raw_defaults_to_mono_s16le() -> None:
    assert parse_content_type("audio/x-raw; rate=16000") == AudioFormat(
        "audio/x-raw", 16000, "s16le", 1
    )


@pytest.mark.parametrize("sample_format", BRIEF_RAW_FORMATS)
def test_every_raw_format_is_accepted(sample_format: str) -> None:
    fmt = parse_content_type(f"audio/x-raw; rate=8000; format={sample_format}")
    assert fmt.sample_format == sample_format
    assert sample_format in RAW_SAMPLE_FORMATS


@pytest.mark.parametrize(
    ("written", "canonical"),
    [(alias, name) for alias, name in RAW_SAMPLE_FORMAT_ALIASES.items()],
)
def test_formats_without_byte_order_are_little_endian(written: str, canonical: str) -> None:
    """Cochl's sample clients write ``format=f32`` (Python, Java) and ``format=s16``
    (JavaScript) and send little-endian samples."""
    fmt = parse_content_type(f"audio/x-raw; rate=22050; format={written.upper()}")
    assert fmt == AudioFormat("audio/x-raw", 22050, canonical, 1)
    assert not fmt.raw_sample_format.big_endian


@pytest.mark.parametrize("written", ["s16", "s32", "f32", "f64"])
def test_issue_named_formats_have_aliases(written: str) -> None:
    assert parse_content_type(f"audio/x-raw; rate=22050; format={written}").sample_format == (
        written + "le"
    )


def test_unknown_format_error_lists_every_name() -> None:
    with pytest.raises(ContentTypeError) as caught:
        parse_content_type("audio/x-raw; rate=16000; format=f12")
    listed = set(re.findall(r"\b[a-z0-9]+\b", str(caught.value)))
    assert {*RAW_SAMPLE_FORMATS, *RAW_SAMPLE_FORMAT_ALIASES} <= listed


@pytest.mark.parametrize(
    ("content_type", "fragment"),
    [
        ("", "unsupported content type"),
        ("text/plain", "audio/wav"),
        ("audio/xyz; rate=1", "supported:"),
        ("audio/x-raw", "needs a rate"),
        ("audio/x-raw; format=s16le", "needs a rate"),
        ("audio/x-raw; rate=abc", "not an integer"),
        ("audio/x-raw; rate=0", "out of range"),
        ("audio/x-raw; rate=999999", "out of range"),
        ("audio/x-raw; rate=16000; channels=0", "out of range"),
        ("audio/x-raw; rate=16000; channels=9", "out of range"),
        ("audio/x-raw; rate=16000; format=s12le", "unknown audio/x-raw format"),
        ("audio/x-raw; rate=16000; chanels=2", "unknown audio/x-raw parameter"),
        ("audio/x-raw; rate", "malformed parameter"),
        ("audio/x-raw; rate=8000; rate=16000", "given twice"),
        ("audio/x-raw; rate=8000; layout=non-interleaved", "interleaved"),
    ],
)
def test_bad_content_types_say_what_is_wrong(content_type: str, fragment: str) -> None:
    with pytest.raises(ContentTypeError, match=fragment):
        parse_content_type(content_type)


def test_content_type_error_is_a_value_error() -> None:
    assert issubclass(ContentTypeError, ValueError)
    assert "audio/x-raw" in SUPPORTED_MIMES
