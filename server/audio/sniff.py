"""Recognise container formats by their magic bytes, to explain decode failures.

A session says what the audio is; when the bytes say otherwise, the user should hear both
("the data looks like FLAC although the session says audio/ogg") instead of an FFmpeg error.
"""

from __future__ import annotations

__all__ = ["CONTAINER_MIMES", "SNIFF_BYTES", "describe_head", "sniff_container"]

SNIFF_BYTES = 12
_MP4_BOX_TYPES = (b"ftyp", b"moov", b"moof", b"styp", b"mdat", b"free", b"wide")
_SYNC_BYTE = 0xFF
_MPEG_SYNC_MASK = 0xE0
_ADTS_SYNC_MASK = 0xF6
_ADTS_SYNC = 0xF0
_MPEG_LAYER_SHIFT = 1
_MPEG_LAYER_MASK = 0x3
_HEX_PREVIEW_BYTES = 8

WAV = "WAV"
OGG = "Ogg"
FLAC = "FLAC"
WEBM = "WebM/Matroska"
MP4 = "MP4/M4A"
MP3 = "MP3"
ADTS = "AAC (ADTS)"
ID3 = "ID3-tagged audio (MP3 or AAC)"

# The content type to decode each recognised container as (ID3 tags mostly front MP3).
CONTAINER_MIMES = {
    WAV: "audio/wav",
    OGG: "audio/ogg",
    FLAC: "audio/flac",
    WEBM: "audio/webm",
    MP4: "audio/mp4",
    MP3: "audio/mpeg",
    ID3: "audio/mpeg",
    ADTS: "audio/aac",
}


def sniff_container(head: bytes) -> str | None:
    """Name the container ``head`` (the first bytes of the data) belongs to, if recognisable."""
    if head[:4] in (b"RIFF", b"RF64", b"RIFX") and head[8:12] == b"WAVE":
        return WAV
    if head.startswith(b"OggS"):
        return OGG
    if head.startswith(b"fLaC"):
        return FLAC
    if head.startswith(b"\x1aE\xdf\xa3"):
        return WEBM
    if head[4:8] in _MP4_BOX_TYPES:
        return MP4
    if head.startswith(b"ID3"):
        return ID3
    if len(head) >= 2 and head[0] == _SYNC_BYTE:
        if (head[1] & _ADTS_SYNC_MASK) == _ADTS_SYNC:
            return ADTS
        layer = (head[1] >> _MPEG_LAYER_SHIFT) & _MPEG_LAYER_MASK
        if (head[1] & _MPEG_SYNC_MASK) == _MPEG_SYNC_MASK and layer:
            return MP3
    return None


def describe_head(head: bytes) -> str:
    """A short description of the data for error messages: its format or its first bytes."""
    found = sniff_container(head)
    if found is not None:
        return f"the data looks like {found}"
    if not head:
        return "no data arrived"
    preview = " ".join(f"{byte:02x}" for byte in head[:_HEX_PREVIEW_BYTES])
    return f"the data is not a recognised audio format (first bytes: {preview})"
