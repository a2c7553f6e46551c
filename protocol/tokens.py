"""The ``next_token`` codec: an opaque, signed cursor into one session's results.

A token names the session, the index of the next result and the page size of the request that
started the walk (the status endpoint ignores ``offset`` and ``count`` when a token is given, so the
token carries the size). It is signed with an HMAC so a
client cannot forge one (the server answers 400) and a token from one session is refused on
another. A token may carry a *scope* (version 2): what else the walk is bound to, such as the
event log's state filter and rule parameters, signed with the rest. Tokens stay valid across
restarts because the key lives in the data directory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from dataclasses import dataclass

__all__ = ["MAX_TOKEN_CHARS", "InvalidToken", "PageCursor", "TokenCodec"]

_VERSION = 1
_SCOPED_VERSION = 2  # followed by the scope's UTF-8 text
_MAC_BYTES = 16
_HEADER = struct.Struct(">BQH")  # version, next result index, page size
MAX_TOKEN_CHARS = 4096


class InvalidToken(ValueError):
    """A token that was not issued by this server for this session."""


@dataclass(frozen=True)
class PageCursor:
    session_id: str
    next_index: int
    count: int
    scope: str = ""  # what the walk reads besides the session (the event log's parameters)


class TokenCodec:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("token key must be at least 16 bytes")
        self._key = key

    def _mac(self, session_id: str, payload: bytes) -> bytes:
        message = session_id.encode() + b"\x00" + payload
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, cursor: PageCursor) -> str:
        version = _SCOPED_VERSION if cursor.scope else _VERSION
        payload = _HEADER.pack(version, cursor.next_index, cursor.count) + cursor.scope.encode()
        raw = payload + self._mac(cursor.session_id, payload)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def decode(self, token: str, session_id: str) -> PageCursor:
        """Parse a token for ``session_id``; raise InvalidToken for anything else."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("next_token is malformed")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError) as exc:
            raise InvalidToken("next_token is malformed") from exc
        if len(raw) < _HEADER.size + _MAC_BYTES:
            raise InvalidToken("next_token is malformed")
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(session_id, payload)):
            raise InvalidToken("next_token was not issued for this session")
        version, next_index, count = _HEADER.unpack(payload[: _HEADER.size])
        scope = payload[_HEADER.size :]
        if version not in (_VERSION, _SCOPED_VERSION) or (version == _VERSION) != (not scope):
            raise InvalidToken("next_token version is not supported")
        try:
            text = scope.decode()
        except UnicodeDecodeError:
            raise InvalidToken("next_token is malformed") from None
        return PageCursor(session_id, next_index, count, text)
