"""Wire encodings: JSON by default, msgpack when the client asks for it.

msgpack bodies carry chunk ``data`` as raw bytes, so a client saves the base64 step and a third
of the bytes.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack

__all__ = ["JSON", "MSGPACK", "DecodeBodyError", "decode_body", "encode_body", "wants_msgpack"]

JSON = "application/json"
MSGPACK = "application/msgpack"
_MSGPACK_ALIASES = (MSGPACK, "application/x-msgpack", "application/vnd.msgpack")


class DecodeBodyError(ValueError):
    """The body is not valid in the encoding its content type announces."""


def _is_msgpack(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return media in _MSGPACK_ALIASES


def wants_msgpack(accept: str | None) -> bool:
    return any(_is_msgpack(part) for part in (accept or "").split(","))


def decode_body(raw: bytes, content_type: str | None) -> Any:
    if _is_msgpack(content_type):
        try:
            return msgpack.unpackb(raw, raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated types
            raise DecodeBodyError("request body is not valid msgpack") from exc
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeBodyError("request body is not valid JSON") from exc


def encode_body(value: Any, as_msgpack: bool) -> tuple[bytes, str]:
    if as_msgpack:
        return msgpack.packb(value, use_bin_type=True), MSGPACK
    return json.dumps(value, separators=(",", ":")).encode(), JSON
