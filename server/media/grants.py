"""Upload grants: the capability inside a pre-signed upload URL served by tympan itself.

A grant names the team, the object key, when it expires and the most bytes it allows; the token
is the grant's JSON (base64url) and an HMAC-SHA256 over it with the server's persisted secret, so
changing any part of the URL makes it worthless. The signature is checked before the expiry, so
a client that edits the expiry is told the URL is invalid, not that it expired.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass

from protocol.errors import Forbidden

__all__ = ["MAX_GRANT_CHARS", "UploadGrant", "UploadSigner"]

_VERSION = 1
_CONTEXT = b"tympan media upload\x00"  # this secret signs nothing else with the same layout
MAX_GRANT_CHARS = 4096


@dataclass(frozen=True)
class UploadGrant:
    team: str
    object_key: str
    expires_at_s: int  # epoch seconds
    max_bytes: int


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class UploadSigner:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the upload signing secret must be at least 16 bytes")
        self._secret = secret

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, _CONTEXT + payload.encode(), hashlib.sha256).digest())

    def sign(self, grant: UploadGrant) -> str:
        fields = [_VERSION, grant.team, grant.object_key, grant.expires_at_s, grant.max_bytes]
        payload = _b64(json.dumps(fields, separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}"

    def verify(self, token: str, now_s: float) -> UploadGrant:
        """The grant in ``token``; ``Forbidden`` when it was not signed here or has expired."""
        invalid = Forbidden("this upload URL is invalid: it was altered or not issued here")
        payload, dot, mac = token.partition(".")
        if not dot or len(token) > MAX_GRANT_CHARS:
            raise invalid
        if not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            raise invalid
        try:
            version, team, key, expires_at_s, max_bytes = json.loads(_unb64(payload))
        except (ValueError, TypeError, binascii.Error):
            raise invalid from None
        if version != _VERSION:
            raise invalid
        if now_s >= expires_at_s:
            raise Forbidden("this upload URL has expired; ask POST /v1/media/input for a new one")
        return UploadGrant(str(team), str(key), int(expires_at_s), int(max_bytes))
