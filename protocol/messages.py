"""Typed request and response messages of the audio-session API, and their validation.

Validation raises ``BadRequest`` with a message that names the field; it never asserts. Fields a
message does not know are ignored, because generated clients send extra ones.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from protocol.errors import BadRequest
from protocol.events import EventParams, WebhookTarget
from protocol.states import SessionState

__all__ = [
    "MAX_METADATA_BYTES",
    "SENSITIVITY_RANGE",
    "WINDOW_HOPS_S",
    "AudioType",
    "CreateSession",
    "Page",
    "PredictRequest",
    "PredictResponse",
    "SenseEvent",
    "SessionRefs",
    "SessionStatus",
    "Tag",
    "UpdateSession",
    "parse_chunk_data",
    "parse_window_hop",
]

MAX_METADATA_BYTES = 16 * 1024
MAX_CONTENT_TYPE_CHARS = 256
SENSITIVITY_RANGE = (-2, 2)
WINDOW_HOPS_S = (0.5, 1.0)
_HOP_SPELLINGS = {
    "0.5s": 0.5,
    "500ms": 0.5,
    "0.5": 0.5,
    "1s": 1.0,
    "1000ms": 1.0,
    "1": 1.0,
    "1.0s": 1.0,
    "1.0": 1.0,
}


class AudioType(StrEnum):
    STREAM = "stream"
    FILE = "file"


def _require_object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return body


def _optional_int(body: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
        or value != int(value)
    ):
        raise BadRequest(f"{key} must be an integer")
    if not low <= int(value) <= high:
        raise BadRequest(f"{key} must be between {low} and {high}")
    return int(value)


def parse_window_hop(value: Any) -> float:
    """0.5 or 1.0 seconds, written as a number or as Cochl clients spell it ("0.5s", "500ms", "1s")."""
    if isinstance(value, bool):
        raise BadRequest("window_hop must be 0.5 or 1 second")
    if isinstance(value, int | float) and value in WINDOW_HOPS_S:
        return float(value)
    if isinstance(value, str) and value.strip().lower() in _HOP_SPELLINGS:
        return _HOP_SPELLINGS[value.strip().lower()]
    raise BadRequest('window_hop must be 0.5 or 1 second ("0.5s", "500ms" or "1s")')


@dataclass(frozen=True)
class CreateSession:
    type: AudioType
    content_type: str
    metadata: dict[str, Any] = field(default_factory=dict)
    total_size: int | None = None
    default_sensitivity: int = 0
    tags_sensitivity: dict[str, int] = field(default_factory=dict)
    window_hop_s: float = 0.5
    file_name: str | None = None
    file_length_s: float | None = None
    events: EventParams = field(default_factory=EventParams)
    webhook: WebhookTarget | None = None

    @classmethod
    def from_body(cls, body: Any) -> CreateSession:
        data = _require_object(body, "request body")
        kind = data.get("type")
        if kind is None:
            raise BadRequest("type is required (stream or file)")
        try:
            audio_type = AudioType(kind)
        except ValueError:
            raise BadRequest("type must be 'stream' or 'file'") from None
        content_type = data.get("content_type")
        if not isinstance(content_type, str) or not content_type.strip():
            raise BadRequest("content_type is required and must be a string")
        if len(content_type) > MAX_CONTENT_TYPE_CHARS:
            raise BadRequest(f"content_type is longer than {MAX_CONTENT_TYPE_CHARS} characters")
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise BadRequest("metadata must be an object")
        try:
            metadata_json = json.dumps(metadata, allow_nan=False)
        except (TypeError, ValueError):
            raise BadRequest("metadata must be plain JSON (no bytes, NaN or infinity)") from None
        if len(metadata_json) > MAX_METADATA_BYTES:
            raise BadRequest(f"metadata must be at most {MAX_METADATA_BYTES} bytes of JSON")
        total_size = _optional_int(data, "total_size", 1, 2**53)
        low, high = SENSITIVITY_RANGE
        default_sensitivity = _optional_int(data, "default_sensitivity", low, high) or 0
        tags = data.get("tags_sensitivity") or {}
        if not isinstance(tags, dict):
            raise BadRequest("tags_sensitivity must be an object of tag name to integer")
        tags_sensitivity = {
            str(name): int(_optional_int(tags, name, low, high) or 0) for name in tags
        }
        hop = data.get("window_hop")
        file_name = data.get("file_name")
        if file_name is not None and not isinstance(file_name, str):
            raise BadRequest("file_name must be a string")
        file_length = data.get("file_length")
        if file_length is not None and (
            isinstance(file_length, bool)
            or not isinstance(file_length, int | float)
            or not math.isfinite(file_length)
            or file_length < 0
        ):
            raise BadRequest("file_length must be a non-negative number of seconds")
        return cls(
            type=audio_type,
            content_type=content_type.strip(),
            metadata=metadata,
            total_size=total_size,
            default_sensitivity=default_sensitivity,
            tags_sensitivity=tags_sensitivity,
            window_hop_s=0.5 if hop is None else parse_window_hop(hop),
            file_name=file_name,
            file_length_s=None if file_length is None else float(file_length),
            events=EventParams.from_body(data.get("events")),
            webhook=WebhookTarget.from_body(data.get("webhook")),
        )


@dataclass(frozen=True)
class UpdateSession:
    make_readonly: bool = False

    @classmethod
    def from_body(cls, body: Any) -> UpdateSession:
        data = _require_object(body, "request body")
        value = data.get("make_readonly", False)
        if not isinstance(value, bool):
            raise BadRequest("make_readonly must be a boolean")
        return cls(make_readonly=value)


def parse_chunk_data(body: Any) -> bytes | str:
    """The ``data`` of an AudioChunk: base64 text (JSON) or raw bytes (msgpack)."""
    data = _require_object(body, "request body").get("data")
    if isinstance(data, bytes | str):
        return data
    raise BadRequest("data is required: the audio chunk as base64 text")


@dataclass(frozen=True)
class PredictRequest:
    """``POST /audio_sessions/{id}/predict`` (cochl-sense-api 1.7): one stream chunk, inferred
    synchronously. Without ``sequence`` the chunk is the session's next one."""

    data: bytes | str
    sequence: int | None = None

    @classmethod
    def from_body(cls, body: Any) -> PredictRequest:
        obj = _require_object(body, "request body")
        return cls(parse_chunk_data(obj), _optional_int(obj, "sequence", 0, 2**53))


@dataclass(frozen=True)
class SessionRefs:
    session_id: str
    chunk_sequence: int

    def to_dict(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "chunk_sequence": self.chunk_sequence}


@dataclass(frozen=True)
class Tag:
    name: str
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "probability": self.probability}


@dataclass(frozen=True)
class SenseEvent:
    start_time: float
    end_time: float
    tags: tuple[Tag, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_time": self.start_time,
            "end_time": self.end_time,
            "tags": [tag.to_dict() for tag in self.tags],
        }


@dataclass(frozen=True)
class Page:
    offset: int
    count: int
    total: int
    next_token: str | None = None

    def to_dict(self) -> dict[str, Any]:
        page: dict[str, Any] = {"offset": self.offset, "count": self.count, "total": self.total}
        if self.next_token is not None:
            page["next_token"] = self.next_token
        return page


@dataclass(frozen=True)
class SessionStatus:
    state: SessionState
    refs: SessionRefs
    in_progress: bool
    page: Page
    results: tuple[SenseEvent, ...]
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "state": self.state.value,
            "refs": self.refs.to_dict(),
            "inference": {
                "in_progress": self.in_progress,
                "page": self.page.to_dict(),
                "results": [event.to_dict() for event in self.results],
            },
        }
        if self.error is not None:
            status["error"] = self.error
        return status


@dataclass(frozen=True)
class PredictResponse:
    """What a predicted chunk completed: ``data`` spans those windows (per tag, its highest
    probability among them; an empty span at the next window's start when the chunk completed
    none), ``windows`` lists them one by one (a tympan extension), and ``next_sequence`` is the
    sequence the next chunk must carry."""

    data: SenseEvent
    next_sequence: int
    windows: tuple[SenseEvent, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data.to_dict(),
            "next_sequence": self.next_sequence,
            "windows": [event.to_dict() for event in self.windows],
        }
