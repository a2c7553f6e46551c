"""Decoder regressions found outside the format tests."""

from __future__ import annotations

import numpy as np

from server.audio import StreamDecoder, decode_file, parse_content_type
from server.audio.encode import encode_audio


def _ogg_crc(page: bytes) -> int:
    """Ogg's page checksum (CRC-32, polynomial 0x04C11DB7, no reflection)."""
    crc = 0
    for byte in page:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def _reseal_page(data: bytearray, offset_inside: int) -> None:
    start = data.rfind(b"OggS", 0, offset_inside)
    segments = data[start + 26]
    length = 27 + segments + sum(data[start + 27 : start + 27 + segments])
    data[start + 22 : start + 26] = b"\0\0\0\0"
    data[start + 22 : start + 26] = _ogg_crc(bytes(data[start : start + length])).to_bytes(
        4, "little"
    )


def test_tags_that_are_not_utf8_do_not_stop_decoding() -> None:
    """Found in Debian's ktuberling sounds: Ogg comments in a legacy 8-bit encoding."""
    t = np.arange(16_000) / 16_000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)], axis=1) * 0.3
    data = bytearray(encode_audio(stereo.astype(np.float32), 16_000, "ogg-vorbis"))
    tag = data.find(b"encoder=") + len(b"encoder=")  # a user comment in the comment header
    assert tag > 8
    data[tag : tag + 4] = b"\xff\xfe\xe9\xe8"
    _reseal_page(data, tag)
    fmt = parse_content_type("audio/ogg")
    assert abs(len(decode_file(fmt, bytes(data))) - 16_000) < 2_000
    decoder = StreamDecoder(fmt)
    assert abs(len(decoder.decode_chunk(bytes(data))) + len(decoder.flush()) - 16_000) < 2_000
