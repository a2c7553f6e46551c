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


MAX_DEPTH = 32


def _depth_within(value: Any, limit: int) -> bool:
    """Iterative nesting check, so a hostile body cannot exhaust the stack here either."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return True


def decode_body(raw: bytes, content_type: str | None, max_depth: int = MAX_DEPTH) -> Any:
    """Parse a request body; anything malformed, or nested deeper than ``max_depth``, raises
    DecodeBodyError (the parsers' own recursion limits included)."""
    if _is_msgpack(content_type):
        try:
            value = msgpack.unpackb(raw, raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated types
            raise DecodeBodyError("request body is not valid msgpack") from exc
    else:
        try:
            value = json.loads(raw)
        except RecursionError:
            raise DecodeBodyError(
                f"request body is nested deeper than {max_depth} levels"
            ) from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise DecodeBodyError("request body is not valid JSON") from exc
    if not _depth_within(value, max_depth):
        raise DecodeBodyError(f"request body is nested deeper than {max_depth} levels")
    return value


def encode_body(value: Any, as_msgpack: bool) -> tuple[bytes, str]:
    if as_msgpack:
        return msgpack.packb(value, use_bin_type=True), MSGPACK
    return json.dumps(value, separators=(",", ":")).encode(), JSON
