"""The Jobs API's logic: create a job on a team's media, read, list and cancel the team's jobs,
and the restart-safe sweep of expired outputs."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from protocol.errors import NotFound, TooManyRequests
from protocol.jobs import (
    JOB_HOP_S,
    PENDING,
    SOUND_EVENTS,
    JobCreated,
    JobPage,
    JobsQuery,
    JobView,
    SoundEventsInput,
    WebhookSecret,
)
from protocol.wire import parse_query, to_wire
from server.event_log import rules_for
from server.jobs.repository import JobRecord, JobRepository
from server.jobs.webhooks import team_webhook_secret
from server.media.service import MediaService
from server.tagging import Tagger

__all__ = ["JobService", "view"]

log = logging.getLogger(__name__)

_KINDS = (SOUND_EVENTS,)  # the kinds this API shows: other APIs' jobs share the table


def view(record: JobRecord, now_s: float | None = None) -> JobView:
    now_s = time.time() if now_s is None else now_s
    output = record.output
    if record.output_expires_at_s is not None and record.output_expires_at_s <= now_s:
        output = None
    return JobView(
        record.job_id,
        record.kind,  # type: ignore[arg-type]
        record.status,  # type: ignore[arg-type]
        record.created_at_s,
        record.updated_at_s,
        record.progress,
        JobView.output_of(output),
        record.error,
        record.output_expires_at_s if output is not None else None,
    )


class JobService:
    def __init__(
        self,
        media: MediaService,
        repository: JobRepository,
        tagger: Tagger,
        window_s: float,
        webhook_key: bytes,
        on_created: Callable[[], None],
        on_canceled: Callable[[], None],
        clock: Callable[[], float] = time.time,
        max_unfinished: int | None = None,
    ) -> None:
        """``max_unfinished``: the most unfinished jobs a key may have (None: no limit)."""
        self._media = media
        self._repository = repository
        self._tagger = tagger
        self._window_s = window_s
        self._webhook_key = webhook_key
        self._on_created = on_created
        self._on_canceled = on_canceled
        self._clock = clock
        self._max_unfinished = max_unfinished

    def _team(self, key: str | None) -> str:
        return str(self._media.authenticate(key).key_id)

    async def create_sound_events(self, key: str | None, body: object) -> dict[str, Any]:
        team = self._team(key)
        params = SoundEventsInput.from_body(body)
        rules_for(  # 400 naming an unknown tag, before anything is stored
            self._tagger.labels,
            self._tagger.thresholds(params.sensitivity),
            params.events,
            JOB_HOP_S,
            self._window_s,
        )
        await self._media.describe(key, params.object_key)  # 404: not this team's media
        now_s = self._clock()
        record = JobRecord(
            str(uuid.uuid4()), team, SOUND_EVENTS, params.to_dict(), PENDING, 0.0, now_s, now_s
        )
        if not await self._repository.create(record, max_unfinished=self._max_unfinished):
            raise TooManyRequests(
                f"this key already has {self._max_unfinished} unfinished jobs "
                "(TYMPAN_MAX_UNFINISHED_JOBS_PER_KEY): wait for some to finish, or cancel them",
                headers={"Retry-After": "10"},
            )
        self._on_created()
        return to_wire(JobCreated(record.job_id, PENDING))

    async def get(self, key: str | None, job_id: str) -> dict[str, Any]:
        record = await self._repository.get(self._team(key), job_id, _KINDS)
        if record is None:
            raise NotFound("no job with this id")
        return view(record, self._clock()).to_dict()

    async def page(self, key: str | None, query: Mapping[str, str]) -> dict[str, Any]:
        team = self._team(key)
        wanted = parse_query(JobsQuery, query)
        records = await self._repository.page(team, wanted.take, wanted.skip, _KINDS)
        now_s = self._clock()
        return to_wire(
            JobPage(
                tuple(view(record, now_s) for record in records),
                take=wanted.take,
                skip=wanted.skip,
            )
        )

    async def cancel(self, key: str | None, job_id: str) -> dict[str, Any]:
        record = await self._repository.cancel(self._team(key), job_id, self._clock(), _KINDS)
        if record is None:
            raise NotFound("no job with this id")
        self._on_canceled()  # its webhook, if it has one, is due
        return view(record, self._clock()).to_dict()

    def webhook_secret(self, key: str | None) -> dict[str, str]:
        return to_wire(WebhookSecret(team_webhook_secret(self._webhook_key, self._team(key))))

    async def run_output_sweeper(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                removed = await self._repository.expire_outputs(self._clock())
                if removed:
                    log.info("job retention: removed %d expired outputs", removed)
            except Exception:
                log.exception("job output sweep failed")
