"""Wire types of sound events: the rule parameters a session or a request sets, one event as a
reader sees it, a page of the event log, and the Server-Sent Events position.

An *event* is one tag over one stretch of time. Per session the server keeps an *event log*: an
entry ``open`` when an event is first reported on a live stream (its ``end_time`` so far), an
entry ``closed`` when its final edges are known. An event whose final edges are known the moment
it is first reported gets only its ``closed`` entry. Entries are numbered from 0 and never change,
so the log pages with the same exactly-once ``next_token`` as results.

Rule parameters (``EventParams``), all optional, set on the session (``events`` in the create
body) or per request (query parameters, which override the session's):

- ``threshold``: probability in (0, 1) above which a window passes, for every tag; without it,
  each tag's calibrated threshold at the session's sensitivity.
- ``merge_window_ms``: runs of one tag separated by at most this merge into one event.
- ``min_duration_ms``: shorter events are dropped.
- ``tag_threshold``, ``tag_merge_window_ms``, ``tag_min_duration_ms``: per-tag overrides; in a
  JSON body an object of tag name to value, in a query ``tag_threshold=Dog:0.3`` (repeatable;
  the value follows the last colon, as tag names may hold commas).
- ``boundary``: ``refined`` (default; edges placed between window hops from the overlap of
  windows) or ``naive`` (window edges).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, Literal

from multidict import MultiMapping
from pydantic import AfterValidator, BeforeValidator, Field

from protocol.errors import BadRequest
from protocol.tokens import MAX_TOKEN_CHARS
from protocol.wire import REQUEST, RESPONSE, Absent, WireType, from_wire, parse, reworded, to_wire

__all__ = [
    "BOUNDARIES",
    "EVENT_STATES",
    "MAX_EVENT_DURATION_MS",
    "EventParams",
    "EventState",
    "EventsPage",
    "EventsPageInfo",
    "SoundEvent",
    "StreamPosition",
    "WebhookTarget",
]

EVENT_STATES = ("open", "closed")
BOUNDARIES = ("refined", "naive")
MAX_EVENT_DURATION_MS = 3_600_000
MAX_TAG_OVERRIDES = 16  # per parameter: they travel in next_token
MAX_TAG_NAME_CHARS = 200
MIN_WEBHOOK_SECRET_CHARS = 16
MAX_WEBHOOK_URL_CHARS = 2048
EventState = Literal["open", "closed"]
Boundary = Literal["refined", "naive"]


def not_boolean(value: Any) -> Any:
    """JSON's true and false are not numbers (pydantic's lax mode would read them as 1 and 0)."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


def http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")) or not value.split("://", 1)[1].split("/")[0]:
        raise ValueError(
            f"must be an http:// or https:// URL of at most {MAX_WEBHOOK_URL_CHARS} characters"
        )
    return value


def _tag_names(value: dict[str, Any]) -> dict[str, Any]:
    for tag in value:
        if len(tag) > MAX_TAG_NAME_CHARS:
            raise ValueError(f"has a tag name longer than {MAX_TAG_NAME_CHARS} characters")
    return value


def _none_is_empty(value: Any) -> Any:
    return {} if value is None else value


Probability = Annotated[
    float,
    Field(gt=0.0, lt=1.0, allow_inf_nan=False),
    reworded("must be a number between 0 and 1 (exclusive)"),
    BeforeValidator(not_boolean),
]
DurationMs = Annotated[
    int,
    Field(ge=0, le=MAX_EVENT_DURATION_MS),
    reworded(
        "must be an integer number of milliseconds",
        f"must be between 0 and {MAX_EVENT_DURATION_MS} milliseconds",
    ),
    BeforeValidator(not_boolean),
]


def _per_tag(what: str) -> Any:
    return Field(
        max_length=MAX_TAG_OVERRIDES,
        description=f"{what} per tag name (at most {MAX_TAG_OVERRIDES} tags).",
    )


TagThresholds = Annotated[
    dict[str, Probability],
    _per_tag("Threshold"),
    AfterValidator(_tag_names),
    BeforeValidator(_none_is_empty),
]
TagDurationsMs = Annotated[
    dict[str, DurationMs],
    _per_tag("Milliseconds"),
    AfterValidator(_tag_names),
    BeforeValidator(_none_is_empty),
]


@dataclass(frozen=True)
class EventParams:
    """Event rules (tympan): how windows become events; all optional."""

    __pydantic_config__ = REQUEST

    threshold: Annotated[
        Probability | None, Field(description="Probability a window must pass.")
    ] = None
    merge_window_ms: Annotated[
        DurationMs | None, Field(description="Runs of a tag this close merge (default 500).")
    ] = None
    min_duration_ms: Annotated[
        DurationMs | None, Field(description="Shorter events are dropped (default 0).")
    ] = None
    tag_threshold: TagThresholds = field(default_factory=dict)
    tag_merge_window_ms: TagDurationsMs = field(default_factory=dict)
    tag_min_duration_ms: TagDurationsMs = field(default_factory=dict)
    boundary: Annotated[
        Boundary | None,
        Field(
            description="Edges between window hops from the windows' overlap (refined, the default) or at window edges (naive)."
        ),
    ] = None

    @classmethod
    def from_body(cls, body: Any, where: str = "events") -> EventParams:
        """The ``events`` object of a create-session body (None: nothing set)."""
        if body is None:
            return cls()
        return parse(cls, body, where)

    @classmethod
    def from_query(cls, query: MultiMapping[str]) -> EventParams:
        """Query parameters of ``GET .../events`` (aiohttp's ``request.query``): one value each,
        and the per-tag ones repeated as ``tag:value``."""
        body: dict[str, Any] = {}
        for item in fields(cls):
            values = [value for value in query.getall(item.name, []) if value != ""]
            if not values:
                continue
            if not item.name.startswith("tag_"):
                if len(values) > 1:
                    raise BadRequest(f"{item.name} is given more than once")
                body[item.name] = values[0]
                continue
            per_tag: dict[str, str] = {}
            for value in values:
                tag, colon, text = value.rpartition(":")
                if not colon or not tag:
                    raise BadRequest(
                        f"{item.name} must be written tag:value (e.g. {item.name}=Dog:0.3)"
                    )
                per_tag[tag] = text
            body[item.name] = per_tag
        return parse(cls, body, "the query")

    @property
    def is_empty(self) -> bool:
        return self == EventParams()

    def over(self, base: EventParams) -> EventParams:
        """These parameters where set, ``base``'s elsewhere (tag maps merge, these winning)."""
        merged: dict[str, Any] = {}
        for item in fields(self):
            mine, theirs = getattr(self, item.name), getattr(base, item.name)
            if isinstance(mine, dict):
                merged[item.name] = {**theirs, **mine}
            else:
                merged[item.name] = theirs if mine is None else mine
        return EventParams(**merged)

    def to_dict(self) -> dict[str, Any]:
        """What was set, as the create body spells it (stored with the session)."""
        return {
            name: value
            for name, value in to_wire(self).items()
            if value is not None and value != {}
        }

    def canonical(self) -> str:
        """A stable text of these parameters (what a ``next_token`` is bound to)."""
        parts = []
        for name, value in sorted(self.to_dict().items()):
            if isinstance(value, dict):
                value = ",".join(f"{tag}={value[tag]!r}" for tag in sorted(value))
            parts.append(f"{name}={value!r}")
        return ";".join(parts)


@dataclass(frozen=True)
class Webhook:
    """Where a session's event log entries are POSTed (``webhook`` in the create body).

    Each delivery is ``{"session_id", "seq", "event": SoundEvent}`` with the header
    ``Tympan-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body under secret>``
    and ``Tympan-Delivery: <session_id>/<seq>``. Entries are delivered in log order, at least
    once (a receiver deduplicates by ``seq``); a failed delivery is retried with backoff."""

    __pydantic_config__ = REQUEST

    url: Annotated[
        str,
        Field(max_length=MAX_WEBHOOK_URL_CHARS, pattern="^https?://"),
        AfterValidator(http_url),
        reworded(
            f"must be an http:// or https:// URL of at most {MAX_WEBHOOK_URL_CHARS} characters"
        ),
    ]
    secret: Annotated[
        str,
        Field(
            min_length=MIN_WEBHOOK_SECRET_CHARS,
            description="Signs each delivery: a string of at least 16 characters.",
        ),
        reworded(
            f"must be a string of at least {MIN_WEBHOOK_SECRET_CHARS} characters (it signs each "
            "delivery)"
        ),
    ] = field(repr=False)

    @classmethod
    def from_body(cls, body: Any) -> Webhook | None:
        if body is None:
            return None
        return parse(cls, body, "webhook")

    def to_dict(self) -> dict[str, str]:
        return {"url": self.url, "secret": self.secret}


WebhookTarget = Webhook


@dataclass(frozen=True)
class SoundEvent(WireType):
    """One event log entry: times in seconds from the session's start."""

    __pydantic_config__ = RESPONSE

    id: Annotated[int, Field(ge=0, description="The event's id, from 0 per session.")]
    tag: Annotated[
        str,
        Field(
            description="The tag (GET /tags/official lists them), or a custom artifact type "
            "of one of the session's model_ids."
        ),
    ]
    start_time: Annotated[float, Field(description="Onset, seconds from the session's start.")]
    end_time: Annotated[
        float,
        Field(description="Offset: final when closed, how far the event reaches so far when open."),
    ]
    confidence: Annotated[
        float,
        Field(
            description="The tag's highest window probability (a custom type's: its highest "
            "10 ms frame probability)."
        ),
    ]
    state: EventState

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SoundEvent:
        return from_wire(cls, data)


@dataclass(frozen=True)
class EventsPageInfo:
    """Where a page of the event log sits in it."""

    __pydantic_config__ = RESPONSE

    offset: Annotated[int, Field(ge=0)]
    count: Annotated[int, Field(ge=0)]
    total: Annotated[int, Field(ge=0, description="Entries so far.")]
    next_token: Absent[
        Annotated[
            str,
            Field(
                max_length=MAX_TOKEN_CHARS,
                description="Absent once the session is finished and read to its end.",
            ),
        ]
    ] = None


@dataclass(frozen=True)
class EventsPage(WireType):
    """``GET /audio_sessions/{id}/events``: a page of the event log.

    ``page.total`` counts the log entries so far (of the requested ``state`` only, when one is
    given); ``next_token`` is absent once the session is finished and the log read to its end.
    ``in_progress``: more entries may still come.
    """

    __pydantic_config__ = RESPONSE

    session_id: str
    state: Literal["writable", "readonly"]
    in_progress: Annotated[bool, Field(description="More entries may still come.")]
    page: EventsPageInfo
    events: tuple[SoundEvent, ...]
    error: Absent[Annotated[str, Field(description="Why inference failed, when it did.")]] = None

    @property
    def offset(self) -> int:
        return self.page.offset

    @property
    def total(self) -> int:
        return self.page.total

    @property
    def next_token(self) -> str | None:
        return self.page.next_token

    @property
    def session_state(self) -> str:
        return self.state

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EventsPage:
        return from_wire(cls, data)


@dataclass(frozen=True)
class StreamPosition:
    """Where a Server-Sent Events reader is: windows sent and event log entries sent. Written
    as the SSE ``id`` ``"<windows>.<events>"``; a reader that reconnects with ``Last-Event-ID``
    gets everything after it, nothing twice."""

    windows: int = 0
    events: int = 0

    def __str__(self) -> str:
        return f"{self.windows}.{self.events}"

    @classmethod
    def parse(cls, text: str | None) -> StreamPosition:
        if text is None or not text.strip():
            return cls()
        windows, dot, events = text.strip().partition(".")
        try:
            position = cls(int(windows), int(events) if dot else 0)
        except ValueError:
            raise BadRequest("Last-Event-ID must be <windows>.<events> (e.g. 12.3)") from None
        if position.windows < 0 or position.events < 0 or position.windows > 2**53:
            raise BadRequest("Last-Event-ID must not be negative")
        return position


# -- OpenAPI paths; the schemas come from the types above --------------------------------------


def _plain(schema: dict[str, Any]) -> dict[str, Any]:
    """A body field's schema as a query parameter's: never null, no description."""
    return {k: v for k, v in schema.items() if k not in ("nullable", "description")}


def _query(name: str, description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": schema, **extra}


def event_paths(
    session_id: dict[str, Any],
    page_parameters: list[dict[str, Any]],
    responses: dict[str, Any],
    security: list[dict[str, Any]],
    max_token_chars: int,
    params_schema: dict[str, Any],
) -> dict[str, Any]:
    """The events routes, in the document's own building blocks; ``params_schema`` is the
    generated schema of ``EventParams``, whose fields are also query parameters."""
    rules = params_schema["properties"]
    tag_values = {
        "type": "array",
        "maxItems": MAX_TAG_OVERRIDES,
        "items": {"type": "string", "pattern": "^.+:[^:]+$", "maxLength": MAX_TAG_NAME_CHARS + 32},
    }
    return {
        "/audio_sessions/{session_id}/events": {
            "parameters": [session_id],
            "get": {
                "operationId": "readEvents",
                "tags": ["audio_session"],
                "summary": "Read a page of the session's event log (tympan)",
                "description": __doc__,
                "security": security,
                "parameters": [
                    *page_parameters,
                    _query(
                        "next_token",
                        "Token from a previous page: carries on with its state and parameters.",
                        {"type": "string", "maxLength": max_token_chars},
                    ),
                    _query(
                        "state",
                        "Only open or only closed entries.",
                        {"type": "string", "enum": list(EVENT_STATES)},
                    ),
                    *(
                        _query(name, schema.get("description", name), _plain(schema))
                        for name, schema in rules.items()
                        if not name.startswith("tag_")
                    ),
                    _query("tag_threshold", "tag:probability", tag_values, explode=True),
                    _query("tag_merge_window_ms", "tag:milliseconds", tag_values, explode=True),
                    _query("tag_min_duration_ms", "tag:milliseconds", tag_values, explode=True),
                ],
                "responses": {
                    "200": {
                        "description": "A page of the event log.",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/EventsPage"}
                            }
                        },
                    },
                    **responses,
                },
            },
        },
        "/audio_sessions/{session_id}/sse": {
            "parameters": [session_id],
            "get": {
                "operationId": "followSession",
                "tags": ["audio_session"],
                "summary": "Follow windows and events live: Server-Sent Events (tympan)",
                "description": (
                    "text/event-stream: `event: window` (a SenseEvent plus `index`), `event: "
                    "open` and `event: closed` (a SoundEvent), `event: end` (`state`, `error`) "
                    "before the stream closes; comment lines as heartbeats. Each message's `id` "
                    "is `<windows>.<entries>` sent so far; reconnect with `Last-Event-ID` (or "
                    "`?last_event_id=`) to carry on after it, nothing lost or repeated."
                ),
                "security": security,
                "parameters": [
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "schema": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"},
                    },
                    _query(
                        "last_event_id",
                        "As the Last-Event-ID header.",
                        {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"},
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "The live feed.",
                        "content": {
                            "text/event-stream": {
                                "schema": {
                                    "type": "object",
                                    "description": "One message; data is JSON text.",
                                    "required": ["event", "data"],
                                    "properties": {
                                        "event": {
                                            "type": "string",
                                            "enum": ["window", *EVENT_STATES, "end"],
                                        },
                                        "id": {"type": "string", "pattern": "^[0-9]+\\.[0-9]+$"},
                                        "data": {"type": "string"},
                                        "retry": {"type": "string"},
                                    },
                                }
                            }
                        },
                    },
                    **responses,
                },
            },
        },
    }
