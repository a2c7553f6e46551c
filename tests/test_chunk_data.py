"""Chunk bodies as JSON clients send them: base64 text, plain or line-wrapped."""

from __future__ import annotations

import base64

import pytest

from protocol.errors import BadRequest, PayloadTooLarge
from server.service import decode_chunk_data

ONE_MIB = 1024 * 1024


def test_plain_and_line_wrapped_base64_decode_to_the_same_bytes() -> None:
    audio = bytes(range(256)) * 40
    plain = base64.b64encode(audio).decode()
    wrapped = base64.encodebytes(audio).decode()  # 76-character lines, as MIME writes it
    assert "\n" in wrapped
    assert decode_chunk_data(plain, ONE_MIB) == audio
    assert decode_chunk_data(wrapped, ONE_MIB) == audio
    assert decode_chunk_data(" " + plain[:8] + "\t\r\n" + plain[8:], ONE_MIB) == audio


@pytest.mark.parametrize("text", ["%%%not base64", "QUJDRA=", "QUJDRA==QQ==", "QUJD!A==", "ÄÖÜ="])
def test_text_that_is_not_base64_is_a_bad_request(text: str) -> None:
    with pytest.raises(BadRequest, match="not valid base64"):
        decode_chunk_data(text, ONE_MIB)


def test_the_size_limit_applies_to_the_decoded_audio() -> None:
    exactly = base64.b64encode(bytes(ONE_MIB)).decode()
    assert len(decode_chunk_data(exactly, ONE_MIB)) == ONE_MIB
    # line breaks do not count against the limit
    assert len(decode_chunk_data(base64.encodebytes(bytes(ONE_MIB)).decode(), ONE_MIB)) == ONE_MIB
    with pytest.raises(PayloadTooLarge):
        decode_chunk_data(base64.b64encode(bytes(ONE_MIB + 3)).decode(), ONE_MIB)
    with pytest.raises(PayloadTooLarge):
        decode_chunk_data(bytes(ONE_MIB + 1), ONE_MIB)  # msgpack: raw bytes
