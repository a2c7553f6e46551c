"""The Media API's wire types (pyannoteAI style), declared once: the server builds its responses
from them and a client parses with them.

``POST /v1/media/input {"url": "media://<object-key>"}`` answers ``{"url": <pre-signed PUT URL>}``;
the client ``PUT``s the raw bytes there. ``GET /v1/media/<object-key>`` describes an uploaded
object, ``DELETE`` removes it. ``GET /v1/test`` says whether an API key works.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import Field, PlainSerializer, WithJsonSchema

from protocol.errors import BadRequest
from protocol.wire import REQUEST, RESPONSE, parse

__all__ = [
    "KEY_IS_VALID",
    "MAX_OBJECT_KEY_CHARS",
    "MEDIA_SCHEME",
    "OBJECT_KEY_PATTERN",
    "OBJECT_KEY_RULES",
    "KeyCheck",
    "MediaInput",
    "MediaObject",
    "MediaUploadUrl",
    "Timestamp",
    "parse_media_input",
]

MEDIA_SCHEME = "media://"
# Leaves room for the team's prefix within a storage key's 1,024 characters.
MAX_OBJECT_KEY_CHARS = 960
OBJECT_KEY_PATTERN = "^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$"
OBJECT_KEY_RULES = (
    f"an object key is 1-{MAX_OBJECT_KEY_CHARS} characters: '/'-separated parts of letters, "
    "digits, '.', '_' and '-', each part 1-255 characters and not starting with '.' (so no "
    "'..' and no empty part), e.g. media://meetings/2024-01-15/call.wav"
)


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat(timespec="milliseconds")


# Seconds since the epoch in the server, an ISO 8601 date-time on the wire.
Timestamp = Annotated[
    float,
    PlainSerializer(_iso, return_type=str),
    Field(json_schema_extra={"format": "date-time"}),
]


def _media_url(value: str) -> str:
    if not value.startswith(MEDIA_SCHEME):
        raise ValueError(f"must start with {MEDIA_SCHEME}; {OBJECT_KEY_RULES}")
    return value


MediaUrl = Annotated[
    str,
    Field(
        pattern=f"^{MEDIA_SCHEME}",
        description=f"{MEDIA_SCHEME}<object-key>, e.g. {MEDIA_SCHEME}meetings/2024-01-15/call.wav",
    ),
]


@dataclass(frozen=True)
class MediaInput:
    """``POST /v1/media/input``: the object key to upload under."""

    __pydantic_config__ = REQUEST

    url: MediaUrl


def parse_media_input(body: object) -> str:
    """The object key of a ``{"url": "media://<object-key>"}`` body (its shape only: the key's
    alphabet is checked where it is stored)."""
    if not isinstance(body, dict) or not isinstance(body.get("url"), str):
        raise BadRequest('the body must be a JSON object {"url": "media://<object-key>"}')
    url: str = parse(MediaInput, body).url
    if not url.startswith(MEDIA_SCHEME):
        raise BadRequest(f"url must start with {MEDIA_SCHEME}; {OBJECT_KEY_RULES}")
    return url.removeprefix(MEDIA_SCHEME)


@dataclass(frozen=True)
class KeyCheck:
    """pyannoteAI's answer to ``GET /v1/test`` for a working key."""

    __pydantic_config__ = RESPONSE

    message: Literal["API key is valid"]
    status: Literal["success"]


KEY_IS_VALID = KeyCheck("API key is valid", "success")


@dataclass(frozen=True)
class MediaUploadUrl:
    """Where to ``PUT`` the bytes, with ``Content-Type: application/octet-stream``."""

    __pydantic_config__ = RESPONSE

    url: Annotated[
        str,
        Field(
            description="Where to PUT the bytes (application/octet-stream), with no key: a "
            "signed URL (tympan's own, or the S3 service's)."
        ),
    ]


@dataclass(frozen=True)
class MediaObject:
    """An uploaded object, as ``GET /v1/media/<object-key>`` describes it."""

    __pydantic_config__ = RESPONSE

    object_key: Annotated[
        str,
        Field(alias="url"),
        PlainSerializer(lambda key: MEDIA_SCHEME + key, return_type=str),
        WithJsonSchema({"type": "string", "pattern": f"^{MEDIA_SCHEME}"}, mode="serialization"),
    ]
    size_bytes: Annotated[int, Field(ge=0)]
    sha256: Annotated[
        str | None,
        Field(
            pattern="^[0-9a-f]{64}$",
            description="Null for an object uploaded straight to S3.",
        ),
    ]
    created_at_s: Annotated[Timestamp, Field(alias="created_at")]
    expires_at_s: Annotated[Timestamp, Field(alias="expires_at")]
