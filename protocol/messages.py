"""Typed request and response messages of the audio-session API, and their validation.

Validation raises ``BadRequest`` with a message that names the field; it never asserts. Fields a
message does not know are ignored, because generated clients send extra ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, StrictBool, WithJsonSchema

from protocol.errors import BadRequest
from protocol.events import EventParams, Webhook, not_boolean
from protocol.states import SessionState
from protocol.wire import REQUEST, RESPONSE, Absent, Named, WireType, parse, reworded, to_wire

__all__ = [
    "DEFAULT_PAGE_COUNT",
    "MAX_CONTENT_TYPE_CHARS",
    "MAX_METADATA_BYTES",
    "MAX_OFFSET",
    "MAX_PAGE_COUNT",
    "MAX_SESSION_MODELS",
    "MAX_STATUS_TOKEN_CHARS",
    "MAX_TOTAL_SIZE",
    "SENSITIVITY_RANGE",
    "WINDOW_HOPS_S",
    "WINDOW_HOP_SPELLINGS",
    "AudioChunk",
    "AudioChunkMsgpack",
    "AudioType",
    "CreateSession",
    "CreateSessionResponse",
    "OfficialTag",
    "Page",
    "PageQuery",
    "PredictRequest",
    "PredictRequestMsgpack",
    "PredictResponse",
    "ResultsQuery",
    "Sense",
    "SenseEvent",
    "SenseEventTag",
    "SessionRefs",
    "SessionResults",
    "SessionStatus",
    "Tag",
    "UpdateSession",
    "parse_chunk_data",
    "parse_window_hop",
]

MAX_METADATA_BYTES = 16 * 1024
MAX_CONTENT_TYPE_CHARS = 256
MAX_TOTAL_SIZE = 2**53
MAX_SEQUENCE = 2**53
MAX_SESSION_MODELS = 4  # custom detector models one session may report
MAX_MODEL_ID_CHARS = 128
MAX_OFFSET = 2**62
MAX_PAGE_COUNT = 1024
MAX_STATUS_TOKEN_CHARS = 64  # a status next_token; events tokens carry more (protocol.tokens)
DEFAULT_PAGE_COUNT = 32
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
WINDOW_HOP_SPELLINGS = tuple(_HOP_SPELLINGS)


class AudioType(StrEnum):
    """Whether the audio that will be sent is a stream or a file."""

    STREAM = "stream"
    FILE = "file"


def parse_window_hop(value: Any) -> float:
    """0.5 or 1.0 seconds, written as a number or as Cochl clients spell it ("0.5s", "500ms", "1s")."""
    if isinstance(value, bool):
        raise BadRequest("window_hop must be 0.5 or 1 second")
    if isinstance(value, int | float) and value in WINDOW_HOPS_S:
        return float(value)
    if isinstance(value, str) and value.strip().lower() in _HOP_SPELLINGS:
        return _HOP_SPELLINGS[value.strip().lower()]
    raise BadRequest('window_hop must be 0.5 or 1 second ("0.5s", "500ms" or "1s")')


def _window_hop(value: Any) -> float:
    if value is None:
        return WINDOW_HOPS_S[0]
    try:
        return parse_window_hop(value)
    except BadRequest:
        raise ValueError('must be 0.5 or 1 second ("0.5s", "500ms" or "1s")') from None


def _plain_json(value: dict[str, Any]) -> dict[str, Any]:
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise ValueError("must be plain JSON (no bytes, NaN or infinity)") from None
    if len(text) > MAX_METADATA_BYTES:
        raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes of JSON")
    return value


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _null_is(default: Any) -> BeforeValidator:
    return BeforeValidator(lambda value: default() if value is None else value)


def _whole(value: Any) -> Any:
    """A whole float (1.0) is the integer it spells; true, false and text are not integers."""
    if isinstance(value, bool | str):
        raise ValueError("must be an integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Sensitivity = Annotated[
    int,
    Field(ge=SENSITIVITY_RANGE[0], le=SENSITIVITY_RANGE[1]),
    reworded(f"must be an integer from {SENSITIVITY_RANGE[0]} to {SENSITIVITY_RANGE[1]}"),
    BeforeValidator(_whole),
]
AudioContentType = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_CONTENT_TYPE_CHARS,
        description=(
            "Type of audio to send: audio/wav, audio/mpeg, audio/ogg, audio/flac, audio/webm, "
            "audio/aac, audio/mp4 (and their common aliases), or raw PCM as "
            "`audio/x-raw; rate=16000; format=s16le; channels=1`. Raw sample formats: "
            "s16le, s16be, s24le, s24be, s32le, s32be, u16le, u16be, u24le, u24be, u32le, "
            "u32be, f16le, f16be, f24le, f24be, f32le, f32be, f64le, f64be, s8, u8, and "
            "without a byte order (s16, s24, s32, u16, u24, u32, f16, f24, f32, f64, as "
            "Cochl's sample clients write them) read as little-endian. An unsupported or "
            "malformed content type is refused with 400 at creation."
        ),
        examples=["audio/x-raw; rate=16000; format=s16le"],
    ),
    BeforeValidator(_strip),
    Named("AudioContentType"),
]
AudioMetadata = Annotated[
    dict[str, Any],
    AfterValidator(_plain_json),
    _null_is(dict),
    Field(
        description=f"Free-form metadata of the session, at most {MAX_METADATA_BYTES} bytes as JSON."
    ),
    Named("AudioMetadata"),
]
WindowHop = Annotated[
    float,
    BeforeValidator(_window_hop),
    # What it accepts, not the float it becomes.
    WithJsonSchema(
        {
            "description": (
                "Seconds between the starts of consecutive windows: 0.5 (the default) or 1, as "
                'a number or as a string such as "0.5s", "500ms" or "1s".'
            ),
            "oneOf": [
                {"type": "string", "enum": list(WINDOW_HOP_SPELLINGS)},
                {"type": "number", "enum": list(WINDOW_HOPS_S)},
            ],
        },
        mode="validation",
    ),
    Named("WindowHop"),
]


@dataclass(frozen=True)
class CreateSession:
    """``POST /audio_sessions/``: the session's parameters, immutable once created."""

    __pydantic_config__ = REQUEST

    type: AudioType
    content_type: AudioContentType
    metadata: AudioMetadata = field(default_factory=dict)
    total_size: Annotated[
        int | None,
        Field(
            ge=1,
            le=MAX_TOTAL_SIZE,
            description=(
                "When at least this many bytes of audio have been uploaded the session becomes "
                "readonly (for a file, that starts inference)."
            ),
        ),
        BeforeValidator(lambda v: v if v is None else _whole(v)),
    ] = None
    default_sensitivity: Annotated[
        Sensitivity,
        _null_is(int),
        Field(
            description="Detection sensitivity for every tag: -2 (fewest detections) to 2 (most)."
        ),
    ] = 0
    tags_sensitivity: Annotated[
        dict[str, Sensitivity],
        _null_is(dict),
        Field(description="Sensitivity per tag name, overriding default_sensitivity."),
    ] = field(default_factory=dict)
    window_hop_s: Annotated[WindowHop, Field(alias="window_hop")] = WINDOW_HOPS_S[0]
    file_name: Annotated[str | None, Field(description="Name of the file, informative.")] = None
    file_length_s: Annotated[
        float | None,
        Field(
            alias="file_length",
            ge=0,
            allow_inf_nan=False,
            description="Length of the file in seconds, informative.",
        ),
        BeforeValidator(lambda v: v if v is None else not_boolean(v)),
    ] = None
    events: Annotated[EventParams, _null_is(EventParams)] = field(default_factory=EventParams)
    webhook: Webhook | None = None
    model_ids: Annotated[
        tuple[Annotated[str, Field(min_length=1, max_length=MAX_MODEL_ID_CHARS)], ...],
        Field(max_length=MAX_SESSION_MODELS),  # before the validator: maxItems in the schema
        _null_is(tuple),
        Field(
            description=(
                "Custom detector models (ids from the models API, of the API key's team) whose "
                "artifact types are reported next to YAMNet's tags, per window and as events. "
                "Each model's types must be distinct from YAMNet's tags and from the other "
                "models' types."
            ),
        ),
    ] = ()

    @classmethod
    def from_body(cls, body: Any) -> CreateSession:
        return parse(cls, body, "request body")

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a create body spells them (what the store keeps)."""
        data: dict[str, Any] = to_wire(self)
        if self.webhook is not None:
            data["webhook"] = self.webhook.to_dict()
        return data


@dataclass(frozen=True)
class UpdateSession:
    __pydantic_config__ = REQUEST

    make_readonly: Annotated[
        StrictBool,
        Field(description="True makes the session readonly; false never undoes that."),
    ] = False

    @classmethod
    def from_body(cls, body: Any) -> UpdateSession:
        return parse(cls, body, "request body")


@dataclass(frozen=True)
class AudioChunk:
    __pydantic_config__ = REQUEST

    data: Annotated[
        str,
        Field(
            description="Raw audio encoded as base64 (at most 5 MiB once decoded by default: "
            "`TYMPAN_MAX_CHUNK_BYTES`).",
        ),
    ]


@dataclass(frozen=True)
class AudioChunkMsgpack:
    """AudioChunk as a msgpack body."""

    __pydantic_config__ = REQUEST

    data: Annotated[
        bytes, Field(description="Raw audio bytes (msgpack bin), at most 5 MiB by default.")
    ]


def parse_chunk_data(body: Any) -> bytes | str:
    """The ``data`` of an AudioChunk: base64 text (JSON) or raw bytes (msgpack)."""
    if isinstance(body, dict) and isinstance(body.get("data"), bytes):
        return parse(AudioChunkMsgpack, body, "request body").data
    if not isinstance(body, dict) or body.get("data") is None:
        raise BadRequest("data is required: the audio chunk as base64 text")
    return parse(AudioChunk, body, "request body").data


Sequence = Annotated[
    int | None,
    Field(
        ge=0,
        le=MAX_SEQUENCE,
        description="The chunk's sequence; the session's next one when absent.",
    ),
    BeforeValidator(lambda v: v if v is None else _whole(v)),
]


@dataclass(frozen=True)
class PredictRequest:
    """``POST /audio_sessions/{id}/predict`` (cochl-sense-api 1.7): one stream chunk, inferred
    synchronously. Without ``sequence`` the chunk is the session's next one."""

    __pydantic_config__ = REQUEST

    data: Annotated[
        str, Field(description="Audio encoded as base64 (at most 5 MiB once decoded by default).")
    ]
    sequence: Sequence = None

    @classmethod
    def from_body(cls, body: Any) -> PredictRequest | PredictRequestMsgpack:
        if isinstance(body, dict) and isinstance(body.get("data"), bytes):
            return parse(PredictRequestMsgpack, body, "request body")
        if not isinstance(body, dict) or body.get("data") is None:
            raise BadRequest("data is required: the audio chunk as base64 text")
        return parse(cls, body, "request body")


@dataclass(frozen=True)
class PredictRequestMsgpack:
    """PredictRequest as a msgpack body."""

    __pydantic_config__ = REQUEST

    data: bytes
    sequence: Sequence = None


# -- query parameters -------------------------------------------------------------------------

Offset = Annotated[
    int,
    Field(ge=0, le=MAX_OFFSET, description="How many entries to skip."),
    reworded("must be an integer", f"must be between 0 and {MAX_OFFSET}"),
]
PageCount = Annotated[
    int,
    Field(ge=1, le=MAX_PAGE_COUNT, description="Most entries to return."),
    reworded("must be an integer", f"must be between 1 and {MAX_PAGE_COUNT}"),
]


@dataclass(frozen=True)
class PageQuery:
    """``?offset=&count=`` of the status and events pages (ignored when ``next_token`` is
    given: the token carries both)."""

    __pydantic_config__ = REQUEST

    offset: Offset = 0
    count: PageCount = DEFAULT_PAGE_COUNT


@dataclass(frozen=True)
class ResultsQuery:
    """``?offset=&limit=`` of ``GET .../results``."""

    __pydantic_config__ = REQUEST

    offset: Offset = 0
    limit: PageCount = DEFAULT_PAGE_COUNT


# -- responses --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionRefs(WireType):
    __pydantic_config__ = RESPONSE

    session_id: str
    chunk_sequence: Annotated[int, Field(ge=0, description="Sequence of the next chunk to upload.")]


@dataclass(frozen=True)
class CreateSessionResponse:
    """SessionRefs plus the window geometry of the session's results."""

    __pydantic_config__ = RESPONSE

    session_id: Annotated[str, Field(description="Id of the new session.")]
    chunk_sequence: Annotated[int, Field(ge=0, description="Sequence of the next chunk: 0.")]
    window_size: Annotated[
        float, Field(gt=0, description="Length in seconds of the window each result describes.")
    ]
    window_hop: Annotated[
        float,
        Field(
            description="Seconds between the starts of consecutive windows.",
            json_schema_extra={"enum": list(WINDOW_HOPS_S)},
        ),
    ]


@dataclass(frozen=True)
class SenseEventTag:
    __pydantic_config__ = RESPONSE

    name: Annotated[str, Field(description="Name of the recognised sound.")]
    probability: Annotated[float, Field(ge=0, le=1)]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "probability": self.probability}


Tag = SenseEventTag


@dataclass(frozen=True)
class SenseEvent(WireType):
    __pydantic_config__ = RESPONSE

    start_time: Annotated[
        float, Field(ge=0, description="Start of the window in seconds; grows by window_hop.")
    ]
    end_time: Annotated[
        float, Field(description="End of the window in seconds: start_time + window_size.")
    ]
    tags: tuple[SenseEventTag, ...]


@dataclass(frozen=True)
class Page(WireType):
    __pydantic_config__ = RESPONSE

    offset: Annotated[int, Field(ge=0, description="Index of the first returned result.")]
    count: Annotated[int, Field(ge=0, le=MAX_PAGE_COUNT, description="Number of results returned.")]
    total: Annotated[int, Field(ge=0, description="Number of results available at the moment.")]
    next_token: Absent[
        Annotated[
            str,
            Field(
                max_length=MAX_STATUS_TOKEN_CHARS,
                description=(
                    "Pass it as next_token to read the following results. Absent once the session "
                    "is readonly, fully inferred and this page reaches the end."
                ),
            ),
        ]
    ] = None


@dataclass(frozen=True)
class Sense:
    __pydantic_config__ = RESPONSE

    in_progress: Annotated[
        bool, Field(description="True while uploaded audio is still waiting for inference.")
    ]
    page: Page
    results: tuple[SenseEvent, ...]


@dataclass(frozen=True)
class SessionStatus(WireType):
    __pydantic_config__ = RESPONSE

    state: SessionState
    refs: SessionRefs
    inference: Sense
    error: Absent[Annotated[str, Field(description="An error occurred in the session.")]] = None

    @property
    def in_progress(self) -> bool:
        return self.inference.in_progress

    @property
    def page(self) -> Page:
        return self.inference.page

    @property
    def results(self) -> tuple[SenseEvent, ...]:
        return self.inference.results


@dataclass(frozen=True)
class SessionResults:
    """``GET /audio_sessions/{id}/results``: a page of results with the inference state."""

    __pydantic_config__ = RESPONSE

    state: Annotated[
        Literal["pending", "in-progress", "done", "error"],
        Field(description="Progress of the session's inference."),
    ]
    data: tuple[SenseEvent, ...]
    has_more: Annotated[
        bool, Field(description="False once no result beyond this page can ever appear.")
    ]
    error: Absent[Annotated[str, Field(description="Why the session failed.")]] = None


@dataclass(frozen=True)
class PredictResponse(WireType):
    """What a predicted chunk completed: ``data`` spans those windows (per tag, its highest
    probability among them; an empty span at the next window's start when the chunk completed
    none), ``windows`` lists them one by one (a tympan extension), and ``next_sequence`` is the
    sequence the next chunk must carry."""

    __pydantic_config__ = RESPONSE

    data: Annotated[
        SenseEvent,
        Field(
            description=(
                "The windows the chunk completed as one event: from the first's start to the "
                "last's end, each tag with its highest probability among them. When the chunk "
                "completed no window: no tags, and an empty span at the start of the next window."
            )
        ),
    ]
    next_sequence: Annotated[int, Field(ge=0, description="The sequence of the next chunk.")]
    windows: Annotated[
        tuple[SenseEvent, ...],
        Field(description="The completed windows one by one (a tympan extension)."),
    ]


@dataclass(frozen=True)
class OfficialTag:
    __pydantic_config__ = RESPONSE

    id: Annotated[str, Field(description="Tag id: the class's AudioSet id, `others` for Others.")]
    name: Annotated[str, Field(description="Tag name, as results carry it.")]
