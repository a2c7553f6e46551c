"""The Media API's wire types (pyannoteAI style), declared once: the server builds its responses
from them and a client parses with them.

``POST /v1/media/input {"url": "media://<object-key>"}`` answers ``{"url": <pre-signed PUT URL>}``;
the client ``PUT``s the raw bytes there. ``GET /v1/media/<object-key>`` describes an uploaded
object, ``DELETE`` removes it. ``GET /v1/test`` says whether an API key works.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from protocol.errors import BadRequest

__all__ = [
    "KEY_IS_VALID",
    "MAX_OBJECT_KEY_CHARS",
    "MEDIA_SCHEME",
    "OBJECT_KEY_RULES",
    "MediaObject",
    "MediaUploadUrl",
    "parse_media_input",
]

MEDIA_SCHEME = "media://"
# Leaves room for the team's prefix within a storage key's 1,024 characters.
MAX_OBJECT_KEY_CHARS = 960
OBJECT_KEY_RULES = (
    f"an object key is 1-{MAX_OBJECT_KEY_CHARS} characters: '/'-separated parts of letters, "
    "digits, '.', '_' and '-', each part 1-255 characters and not starting with '.' (so no "
    "'..' and no empty part), e.g. media://meetings/2024-01-15/call.wav"
)
# pyannoteAI's answer to GET /v1/test for a working key.
KEY_IS_VALID: dict[str, str] = {"message": "API key is valid", "status": "success"}


def parse_media_input(body: object) -> str:
    """The object key of a ``{"url": "media://<object-key>"}`` body (its shape only: the key's
    alphabet is checked where it is stored)."""
    if not isinstance(body, dict) or not isinstance(body.get("url"), str):
        raise BadRequest('the body must be a JSON object {"url": "media://<object-key>"}')
    url: str = body["url"]
    if not url.startswith(MEDIA_SCHEME):
        raise BadRequest(f"url must start with {MEDIA_SCHEME}; {OBJECT_KEY_RULES}")
    return url.removeprefix(MEDIA_SCHEME)


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class MediaUploadUrl:
    """Where to ``PUT`` the bytes, with ``Content-Type: application/octet-stream``."""

    url: str

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url}


@dataclass(frozen=True)
class MediaObject:
    """An uploaded object, as ``GET /v1/media/<object-key>`` describes it."""

    object_key: str
    size_bytes: int
    sha256: str | None  # None for an object uploaded straight to S3
    created_at_s: float
    expires_at_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": MEDIA_SCHEME + self.object_key,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "created_at": _iso(self.created_at_s),
            "expires_at": _iso(self.expires_at_s),
        }
