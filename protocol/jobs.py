"""The Jobs API's wire types (pyannoteAI style), declared once.

``POST /v1/sound-events {"url": "media://<object-key>", "webhook"?, "events"?, "sensitivity"?}``
answers ``{"jobId", "status"}``; ``GET /v1/jobs/<jobId>`` describes the job, ``GET /v1/jobs`` lists
the team's jobs newest first (``?take=&skip=``), ``POST /v1/jobs/<jobId>/cancel`` cancels one that
has not finished. A job's ``status`` goes created -> pending -> running -> succeeded | failed |
canceled; ``output`` is there once it succeeded (until it expires), ``error`` once it failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer

from protocol.events import MAX_WEBHOOK_URL_CHARS, EventParams, http_url
from protocol.media import MEDIA_SCHEME, OBJECT_KEY_RULES, Timestamp
from protocol.messages import SenseEvent, Sensitivity
from protocol.wire import REQUEST, RESPONSE, Absent, WireType, from_wire, parse, reworded, to_wire

__all__ = [
    "CANCELED",
    "CREATED",
    "FAILED",
    "FINISHED",
    "JOB_HOP_S",
    "JOB_PAGE_DEFAULT",
    "JOB_PAGE_MAX",
    "JOB_SKIP_MAX",
    "PENDING",
    "RUNNING",
    "SOUND_EVENTS",
    "SUCCEEDED",
    "Job",
    "JobCreated",
    "JobEvent",
    "JobPage",
    "JobView",
    "JobsQuery",
    "SoundEventsInput",
    "SoundEventsOutput",
    "WebhookSecret",
]

CREATED: Final = "created"
PENDING: Final = "pending"
RUNNING: Final = "running"
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
CANCELED: Final = "canceled"
FINISHED: Final = (SUCCEEDED, FAILED, CANCELED)
SOUND_EVENTS: Final = "sound-events"
JOB_PAGE_DEFAULT: Final = 20
JOB_PAGE_MAX: Final = 100
JOB_SKIP_MAX: Final = 2**31
JOB_HOP_S: Final = 0.5  # seconds between the starts of consecutive windows of the output
JobStatus = Literal["created", "pending", "running", "succeeded", "failed", "canceled"]


def _object_key(value: Any) -> Any:
    if isinstance(value, str):
        if not value.startswith(MEDIA_SCHEME):
            raise ValueError(f"must start with {MEDIA_SCHEME}; {OBJECT_KEY_RULES}")
        return value.removeprefix(MEDIA_SCHEME)
    return value


@dataclass(frozen=True)
class SoundEventsInput:
    """``POST /v1/sound-events``: what a sound-events job analyses, and how."""

    __pydantic_config__ = REQUEST

    object_key: Annotated[
        str,
        Field(alias="url", min_length=1),
        BeforeValidator(_object_key),
        PlainSerializer(lambda key: MEDIA_SCHEME + key, return_type=str),
        Field(
            json_schema_extra={"pattern": f"^{MEDIA_SCHEME}"},
            description=f"{MEDIA_SCHEME}<object-key> of an uploaded file.",
        ),
    ]
    webhook: Annotated[
        str | None,
        Field(
            max_length=MAX_WEBHOOK_URL_CHARS,
            description="Called with the job once it succeeded, failed or was canceled.",
        ),
        AfterValidator(lambda url: url if url is None else http_url(url)),
    ] = None
    events: Annotated[
        EventParams,
        BeforeValidator(lambda value: EventParams() if value is None else value),
        Field(description="Event rules, as the session API's."),
    ] = field(default_factory=EventParams)
    sensitivity: Annotated[
        Sensitivity,
        Field(description="Detection sensitivity for every tag: -2 (fewest) to 2 (most)."),
    ] = 0

    @classmethod
    def from_body(cls, body: object) -> SoundEventsInput:
        return parse(cls, body, "the body")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = to_wire(self)
        data["events"] = self.events.to_dict() or None
        return data


@dataclass(frozen=True)
class JobsQuery:
    """``GET /v1/jobs?take=&skip=``."""

    __pydantic_config__ = REQUEST

    take: Annotated[
        int,
        Field(ge=1, le=JOB_PAGE_MAX, description="Most jobs to return."),
        reworded(f"must be an integer from 1 to {JOB_PAGE_MAX}"),
    ] = JOB_PAGE_DEFAULT
    skip: Annotated[
        int,
        Field(ge=0, le=JOB_SKIP_MAX, description="How many jobs to skip, newest first."),
        reworded(f"must be an integer from 0 to {JOB_SKIP_MAX}"),
    ] = 0


@dataclass(frozen=True)
class JobCreated:
    __pydantic_config__ = RESPONSE

    job_id: Annotated[str, Field(alias="jobId")]
    status: Literal["pending"]


@dataclass(frozen=True)
class JobEvent:
    """One sound event of a recording (Cochl's field names; seconds from its start)."""

    __pydantic_config__ = RESPONSE

    tag: str
    start_time: float
    end_time: float
    confidence: Annotated[float, Field(description="The tag's highest window probability.")]


@dataclass(frozen=True)
class SoundEventsOutput(WireType):
    """What a succeeded sound-events job found: every window and the recording's events."""

    __pydantic_config__ = RESPONSE

    windows: tuple[SenseEvent, ...]
    events: tuple[JobEvent, ...]


@dataclass(frozen=True)
class Job(WireType):
    """A job as ``GET /v1/jobs/<jobId>`` (and the webhook) shows it."""

    __pydantic_config__ = RESPONSE

    job_id: Annotated[str, Field(alias="jobId")]
    kind: Literal["sound-events"]
    status: JobStatus
    created_at_s: Annotated[Timestamp, Field(alias="createdAt")]
    updated_at_s: Annotated[Timestamp, Field(alias="updatedAt")]
    progress: Annotated[
        float, Field(ge=0, le=100, description="Percent of the media's bytes analysed.")
    ]
    output: Absent[SoundEventsOutput] = None
    error: Absent[str] = None
    output_expires_at_s: Annotated[Absent[Timestamp], Field(alias="outputExpiresAt")] = None

    @staticmethod
    def output_of(stored: dict[str, Any] | None) -> SoundEventsOutput | None:
        return None if stored is None else from_wire(SoundEventsOutput, stored)


JobView = Job


@dataclass(frozen=True)
class JobPage:
    """``GET /v1/jobs``: the team's jobs, newest first."""

    __pydantic_config__ = RESPONSE

    items: tuple[Job, ...]
    take: Annotated[int, Field(ge=1, le=JOB_PAGE_MAX)]
    skip: Annotated[int, Field(ge=0, le=JOB_SKIP_MAX)]


@dataclass(frozen=True)
class WebhookSecret:
    """The secret a team's job webhooks are signed with."""

    __pydantic_config__ = RESPONSE

    secret: str
