"""The Jobs API's wire types (pyannoteAI style), declared once.

``POST /v1/sound-events {"url": "media://<object-key>", "webhook"?, "events"?, "sensitivity"?}``
answers ``{"jobId", "status"}``; ``GET /v1/jobs/<jobId>`` describes the job, ``GET /v1/jobs`` lists
the team's jobs newest first (``?take=&skip=``), ``POST /v1/jobs/<jobId>/cancel`` cancels one that
has not finished. A job's ``status`` goes created -> pending -> running -> succeeded | failed |
canceled; ``output`` is there once it succeeded (until it expires), ``error`` once it failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from protocol.errors import BadRequest
from protocol.events import MAX_WEBHOOK_URL_CHARS, EventParams
from protocol.media import MEDIA_SCHEME, OBJECT_KEY_RULES
from protocol.messages import SENSITIVITY_RANGE

__all__ = [
    "CANCELED",
    "CREATED",
    "FAILED",
    "FINISHED",
    "JOB_HOP_S",
    "JOB_PAGE_MAX",
    "PENDING",
    "RUNNING",
    "SOUND_EVENTS",
    "SUCCEEDED",
    "JobView",
    "SoundEventsInput",
]

CREATED: Final = "created"
PENDING: Final = "pending"
RUNNING: Final = "running"
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
CANCELED: Final = "canceled"
FINISHED: Final = (SUCCEEDED, FAILED, CANCELED)
SOUND_EVENTS: Final = "sound-events"
JOB_PAGE_MAX: Final = 100
JOB_HOP_S: Final = 0.5  # seconds between the starts of consecutive windows of the output


@dataclass(frozen=True)
class SoundEventsInput:
    """What a sound-events job analyses, and how."""

    object_key: str
    webhook: str | None = None
    events: EventParams = field(default_factory=EventParams)
    sensitivity: int = 0

    @classmethod
    def from_body(cls, body: object) -> SoundEventsInput:
        if not isinstance(body, dict):
            raise BadRequest('the body must be a JSON object {"url": "media://<object-key>", ...}')
        url = body.get("url")
        if not isinstance(url, str) or not url.startswith(MEDIA_SCHEME):
            raise BadRequest(
                f"url must be a string starting with {MEDIA_SCHEME}; {OBJECT_KEY_RULES}"
            )
        webhook = body.get("webhook")
        if webhook is not None and (
            not isinstance(webhook, str)
            or len(webhook) > MAX_WEBHOOK_URL_CHARS
            or not webhook.startswith(("http://", "https://"))
            or not webhook.split("://", 1)[1].split("/", 1)[0]
        ):
            raise BadRequest(
                f"webhook must be an http:// or https:// URL of at most {MAX_WEBHOOK_URL_CHARS} "
                "characters"
            )
        sensitivity = body.get("sensitivity", 0)
        low, high = SENSITIVITY_RANGE
        if (
            isinstance(sensitivity, bool)
            or not isinstance(sensitivity, int)
            or not (low <= sensitivity <= high)
        ):
            raise BadRequest(f"sensitivity must be an integer from {low} to {high}")
        return cls(
            url.removeprefix(MEDIA_SCHEME),
            webhook,
            EventParams.from_body(body.get("events")),
            sensitivity,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": MEDIA_SCHEME + self.object_key,
            "webhook": self.webhook,
            "events": self.events.to_dict() or None,
            "sensitivity": self.sensitivity,
        }


def _iso(epoch_s: float | None) -> str | None:
    if epoch_s is None:
        return None
    return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class JobView:
    """A job as ``GET /v1/jobs/<jobId>`` (and the webhook) shows it."""

    job_id: str
    kind: str
    status: str
    created_at_s: float
    updated_at_s: float
    progress: float  # 0-100, percent of the media's bytes analysed
    output: dict[str, Any] | None = None
    error: str | None = None
    output_expires_at_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "jobId": self.job_id,
            "kind": self.kind,
            "status": self.status,
            "createdAt": _iso(self.created_at_s),
            "updatedAt": _iso(self.updated_at_s),
            "progress": self.progress,
        }
        if self.output is not None:
            data["output"] = self.output
            data["outputExpiresAt"] = _iso(self.output_expires_at_s)
        if self.error is not None:
            data["error"] = self.error
        return data
