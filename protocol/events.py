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

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from multidict import MultiMapping

from protocol.errors import BadRequest
from protocol.tokens import MAX_TOKEN_CHARS

__all__ = [
    "BOUNDARIES",
    "EVENT_STATES",
    "MAX_EVENT_DURATION_MS",
    "EventParams",
    "EventState",
    "EventsPage",
    "SoundEvent",
    "StreamPosition",
    "WebhookTarget",
]

EVENT_STATES = ("open", "closed")
BOUNDARIES = ("refined", "naive")
MAX_EVENT_DURATION_MS = 3_600_000
MAX_TAG_OVERRIDES = 16  # per parameter: they travel in next_token
MAX_TAG_NAME_CHARS = 200
EventState = Literal["open", "closed"]


def _threshold(value: Any, name: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise BadRequest(f"{name} must be a number between 0 and 1 (exclusive)") from None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0.0 < value < 1.0
    ):
        raise BadRequest(f"{name} must be a number between 0 and 1 (exclusive)")
    return float(value)


def _duration_ms(value: Any, name: str) -> int:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise BadRequest(f"{name} must be an integer number of milliseconds") from None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and (not math.isfinite(value) or value != int(value)))
    ):
        raise BadRequest(f"{name} must be an integer number of milliseconds")
    if not 0 <= int(value) <= MAX_EVENT_DURATION_MS:
        raise BadRequest(f"{name} must be between 0 and {MAX_EVENT_DURATION_MS} milliseconds")
    return int(value)


def _tag_map(raw: Any, name: str, parse: Callable[[Any, str], Any]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadRequest(f"{name} must be an object of tag name to value")
    _check_overrides(name, list(raw))
    return {str(tag): parse(value, f"{name}[{tag}]") for tag, value in raw.items()}


def _query_tag_map(
    values: list[str], name: str, parse: Callable[[Any, str], Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        tag, colon, value = item.rpartition(":")
        if not colon or not tag:
            raise BadRequest(f"{name} must be written tag:value (e.g. {name}=Dog:0.3)")
        out[tag] = parse(value, f"{name}[{tag}]")
    _check_overrides(name, list(out))
    return out


def _check_overrides(name: str, tags: list[Any]) -> None:
    if len(tags) > MAX_TAG_OVERRIDES:
        raise BadRequest(f"{name} may override at most {MAX_TAG_OVERRIDES} tags")
    for tag in tags:
        if len(str(tag)) > MAX_TAG_NAME_CHARS:
            raise BadRequest(f"{name}: tag names are at most {MAX_TAG_NAME_CHARS} characters")


_PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "tag_threshold": _threshold,
    "tag_merge_window_ms": _duration_ms,
    "tag_min_duration_ms": _duration_ms,
}


@dataclass(frozen=True)
class EventParams:
    """Event rule parameters; None (or empty) where not set."""

    threshold: float | None = None
    merge_window_ms: int | None = None
    min_duration_ms: int | None = None
    tag_threshold: dict[str, float] = field(default_factory=dict)
    tag_merge_window_ms: dict[str, int] = field(default_factory=dict)
    tag_min_duration_ms: dict[str, int] = field(default_factory=dict)
    boundary: str | None = None

    @classmethod
    def from_body(cls, body: Any, where: str = "events") -> EventParams:
        """The ``events`` object of a create-session body (None: nothing set)."""
        if body is None:
            return cls()
        if not isinstance(body, dict):
            raise BadRequest(f"{where} must be an object")
        return cls(
            threshold=None if body.get("threshold") is None
            else _threshold(body["threshold"], "threshold"),
            merge_window_ms=None if body.get("merge_window_ms") is None
            else _duration_ms(body["merge_window_ms"], "merge_window_ms"),
            min_duration_ms=None if body.get("min_duration_ms") is None
            else _duration_ms(body["min_duration_ms"], "min_duration_ms"),
            **{name: _tag_map(body.get(name), name, parse) for name, parse in _PARSERS.items()},
            boundary=_boundary(body.get("boundary")),
        )  # fmt: skip

    @classmethod
    def from_query(cls, query: MultiMapping[str]) -> EventParams:
        """Query parameters of ``GET .../events`` (aiohttp's ``request.query``)."""

        def one(name: str) -> str | None:
            values = query.getall(name, [])
            if len(values) > 1:
                raise BadRequest(f"{name} is given more than once")
            return values[0] if values and values[0] != "" else None

        threshold = one("threshold")
        merge = one("merge_window_ms")
        minimum = one("min_duration_ms")
        return cls(
            threshold=None if threshold is None else _threshold(threshold, "threshold"),
            merge_window_ms=None if merge is None else _duration_ms(merge, "merge_window_ms"),
            min_duration_ms=None if minimum is None else _duration_ms(minimum, "min_duration_ms"),
            **{
                name: _query_tag_map(query.getall(name, []), name, parse)
                for name, parse in _PARSERS.items()
            },
            boundary=_boundary(one("boundary")),
        )

    @property
    def is_empty(self) -> bool:
        return self == EventParams()

    def over(self, base: EventParams) -> EventParams:
        """These parameters where set, ``base``'s elsewhere (tag maps merge, these winning)."""
        return EventParams(
            threshold=base.threshold if self.threshold is None else self.threshold,
            merge_window_ms=base.merge_window_ms
            if self.merge_window_ms is None
            else self.merge_window_ms,
            min_duration_ms=base.min_duration_ms
            if self.min_duration_ms is None
            else self.min_duration_ms,
            tag_threshold={**base.tag_threshold, **self.tag_threshold},
            tag_merge_window_ms={**base.tag_merge_window_ms, **self.tag_merge_window_ms},
            tag_min_duration_ms={**base.tag_min_duration_ms, **self.tag_min_duration_ms},
            boundary=base.boundary if self.boundary is None else self.boundary,
        )

    def to_dict(self) -> dict[str, Any]:
        """What was set, as the create body spells it (stored with the session)."""
        out: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is not None and value != {}:
                out[item.name] = dict(value) if isinstance(value, dict) else value
        return out

    def canonical(self) -> str:
        """A stable text of these parameters (what a ``next_token`` is bound to)."""
        parts = []
        for name, value in sorted(self.to_dict().items()):
            if isinstance(value, dict):
                value = ",".join(f"{tag}={value[tag]!r}" for tag in sorted(value))
            parts.append(f"{name}={value!r}")
        return ";".join(parts)


def _boundary(value: Any) -> str | None:
    if value is None:
        return None
    if value not in BOUNDARIES:
        raise BadRequest("boundary must be 'refined' or 'naive'")
    return str(value)


MIN_WEBHOOK_SECRET_CHARS = 16
MAX_WEBHOOK_URL_CHARS = 2048


@dataclass(frozen=True)
class WebhookTarget:
    """Where a session's event log entries are POSTed (``webhook`` in the create body).

    Each delivery is ``{"session_id", "seq", "event": SoundEvent}`` with the header
    ``Tympan-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body under secret>``
    and ``Tympan-Delivery: <session_id>/<seq>``. Entries are delivered in log order, at least
    once (a receiver deduplicates by ``seq``); a failed delivery is retried with backoff."""

    url: str
    secret: str = field(repr=False)

    @classmethod
    def from_body(cls, body: Any) -> WebhookTarget | None:
        if body is None:
            return None
        if not isinstance(body, dict):
            raise BadRequest("webhook must be an object with url and secret")
        url, secret = body.get("url"), body.get("secret")
        if (
            not isinstance(url, str)
            or len(url) > MAX_WEBHOOK_URL_CHARS
            or not url.startswith(("http://", "https://"))
            or len(url.split("://", 1)[1].split("/", 1)[0]) == 0
        ):
            raise BadRequest(
                f"webhook.url must be an http:// or https:// URL of at most "
                f"{MAX_WEBHOOK_URL_CHARS} characters"
            )
        if not isinstance(secret, str) or len(secret) < MIN_WEBHOOK_SECRET_CHARS:
            raise BadRequest(
                f"webhook.secret must be a string of at least {MIN_WEBHOOK_SECRET_CHARS} "
                "characters (it signs each delivery)"
            )
        return cls(url, secret)

    def to_dict(self) -> dict[str, str]:
        return {"url": self.url, "secret": self.secret}


@dataclass(frozen=True)
class SoundEvent:
    """One event log entry: times in seconds from the session's start."""

    id: int
    tag: str
    start_time: float
    end_time: float
    confidence: float
    state: EventState

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tag": self.tag,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "confidence": self.confidence,
            "state": self.state,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SoundEvent:
        state = data["state"]
        if state not in EVENT_STATES:
            raise ValueError(f"unknown event state {state!r}")
        return cls(
            int(data["id"]),
            str(data["tag"]),
            float(data["start_time"]),
            float(data["end_time"]),
            float(data["confidence"]),
            state,
        )


@dataclass(frozen=True)
class EventsPage:
    """``GET /audio_sessions/{id}/events``: a page of the event log.

    ``page.total`` counts the log entries so far (of the requested ``state`` only, when one is
    given); ``next_token`` is absent once the session is finished and the log read to its end.
    ``in_progress``: more entries may still come.
    """

    session_id: str
    session_state: str
    in_progress: bool
    offset: int
    total: int
    events: tuple[SoundEvent, ...]
    next_token: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        page: dict[str, Any] = {
            "offset": self.offset,
            "count": len(self.events),
            "total": self.total,
        }
        if self.next_token is not None:
            page["next_token"] = self.next_token
        body: dict[str, Any] = {
            "session_id": self.session_id,
            "state": self.session_state,
            "in_progress": self.in_progress,
            "page": page,
            "events": [event.to_dict() for event in self.events],
        }
        if self.error is not None:
            body["error"] = self.error
        return body

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EventsPage:
        page = data["page"]
        return cls(
            str(data["session_id"]),
            str(data["state"]),
            bool(data["in_progress"]),
            int(page["offset"]),
            int(page["total"]),
            tuple(SoundEvent.from_dict(item) for item in data["events"]),
            page.get("next_token"),
            data.get("error"),
        )


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


# -- OpenAPI: declared here, next to the types, and merged into protocol.openapi ------------

_ENTRY_FIELDS = {
    "id": {"type": "integer", "minimum": 0, "description": "The event's id, from 0 per session."},
    "tag": {"type": "string", "description": "The tag (GET /tags/official lists them)."},
    "start_time": {"type": "number", "description": "Onset, seconds from the session's start."},
    "end_time": {
        "type": "number",
        "description": "Offset: final when closed, how far the event reaches so far when open.",
    },
    "confidence": {"type": "number", "description": "The tag's highest window probability."},
    "state": {"type": "string", "enum": list(EVENT_STATES)},
}


def _tag_values(kind: dict[str, Any], what: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": what,
        "additionalProperties": kind,
        "maxProperties": MAX_TAG_OVERRIDES,
    }


_MS = {"type": "integer", "minimum": 0, "maximum": MAX_EVENT_DURATION_MS}
_PROBABILITY = {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 1,
                "exclusiveMaximum": True}  # fmt: skip

EVENT_SCHEMAS: dict[str, Any] = {
    "Webhook": {
        "type": "object",
        "required": ["url", "secret"],
        "description": WebhookTarget.__doc__,
        "properties": {
            "url": {"type": "string", "maxLength": MAX_WEBHOOK_URL_CHARS, "pattern": "^https?://"},
            "secret": {"type": "string", "minLength": MIN_WEBHOOK_SECRET_CHARS},
        },
    },
    "EventParams": {
        "type": "object",
        "description": "Event rules (tympan): how windows become events; all optional.",
        "properties": {
            "threshold": {**_PROBABILITY, "description": "Probability a window must pass."},
            "merge_window_ms": {**_MS, "description": "Runs this close merge (default 500)."},
            "min_duration_ms": {**_MS, "description": "Shorter events are dropped (default 0)."},
            "tag_threshold": _tag_values(_PROBABILITY, "Threshold per tag."),
            "tag_merge_window_ms": _tag_values(_MS, "Merge window per tag."),
            "tag_min_duration_ms": _tag_values(_MS, "Minimum duration per tag."),
            "boundary": {"type": "string", "enum": list(BOUNDARIES), "default": "refined"},
        },
    },
    "SoundEvent": {
        "type": "object",
        "required": list(_ENTRY_FIELDS),
        "properties": _ENTRY_FIELDS,
        "additionalProperties": False,
        "description": "One event log entry.",
    },
    "EventsPage": {
        "type": "object",
        "required": ["session_id", "state", "in_progress", "page", "events"],
        "additionalProperties": False,
        "properties": {
            "session_id": {"type": "string"},
            "state": {"type": "string", "enum": ["writable", "readonly"]},
            "in_progress": {"type": "boolean", "description": "More entries may still come."},
            "page": {
                "type": "object",
                "required": ["offset", "count", "total"],
                "additionalProperties": False,
                "properties": {
                    "offset": {"type": "integer", "minimum": 0},
                    "count": {"type": "integer", "minimum": 0},
                    "total": {"type": "integer", "minimum": 0, "description": "Entries so far."},
                    "next_token": {
                        "type": "string",
                        "maxLength": MAX_TOKEN_CHARS,
                        "description": "Absent once the session is finished and read to its end.",
                    },
                },
            },
            "events": {"type": "array", "items": {"$ref": "#/components/schemas/SoundEvent"}},
            "error": {"type": "string", "description": "Why inference failed, when it did."},
        },
    },
}


def _query(name: str, description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": schema, **extra}


def event_paths(
    session_id: dict[str, Any],
    page_parameters: list[dict[str, Any]],
    responses: dict[str, Any],
    security: list[dict[str, Any]],
    max_token_chars: int,
) -> dict[str, Any]:
    """The events routes, in the document's own building blocks."""
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
                    _query("threshold", "Probability a window must pass.", _PROBABILITY),
                    _query("merge_window_ms", "Runs this close merge.", _MS),
                    _query("min_duration_ms", "Shorter events are dropped.", _MS),
                    _query("tag_threshold", "tag:probability", tag_values, explode=True),
                    _query("tag_merge_window_ms", "tag:milliseconds", tag_values, explode=True),
                    _query("tag_min_duration_ms", "tag:milliseconds", tag_values, explode=True),
                    _query(
                        "boundary", "Edge placement.", {"type": "string", "enum": list(BOUNDARIES)}
                    ),
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
