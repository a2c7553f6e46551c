"""``JobWebhooks``: when a job with a ``webhook`` finishes, its JSON (as ``GET /v1/jobs/<jobId>``
shows it) is POSTed there, signed, retried with backoff, apart from everything else.

The row says a delivery is due (``webhook_pending``, set in the same UPDATE as the terminal
status), so a restart delivers what the previous process did not; delivery is at least once, the
``Tympan-Delivery`` header (the job id) lets a receiver deduplicate.

Signature: ``Tympan-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`` as for
session webhooks (``server.webhooks.signature``), under the team's job webhook secret, which
``GET /v1/webhook-secret`` gives the team (HMAC-SHA256 of the team under a server key kept in the
database, so it survives restarts and differs per team).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from server.config import Settings
from server.jobs.repository import JobRecord, JobRepository
from server.webhooks import signature

__all__ = ["JobWebhooks", "team_webhook_secret"]

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 300.0
_BATCH = 50
_POLL_S = 30.0


def team_webhook_secret(server_key: bytes, team: str) -> str:
    return hmac.new(server_key, f"job-webhook:{team}".encode(), hashlib.sha256).hexdigest()


class JobWebhooks:
    def __init__(
        self,
        settings: Settings,
        repository: JobRepository,
        server_key: bytes,
        view: Callable[[JobRecord], dict[str, Any]],
    ) -> None:
        self._settings = settings
        self._repository = repository
        self._key = server_key
        self._view = view
        self._wake = asyncio.Event()
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="job-webhooks")

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        tasks = [t for t in (self._loop_task, *self._in_flight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            await self._http.close()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                for job in await self._repository.webhooks_due(_BATCH):
                    if job.job_id not in self._in_flight:
                        self._start_delivery(job)
            except Exception:
                log.exception("job webhooks: reading due deliveries failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_POLL_S):
                    await self._wake.wait()

    def _start_delivery(self, job: JobRecord) -> None:
        job_id = job.job_id
        task = asyncio.create_task(self._deliver(job), name=f"job-webhook-{job_id[:8]}")
        self._in_flight[job_id] = task

        def forget(_: asyncio.Task[None]) -> None:
            self._in_flight.pop(job_id, None)

        task.add_done_callback(forget)

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._settings.webhook_timeout_s)
            )
        return self._http

    async def _deliver(self, job: JobRecord) -> None:
        url = job.input.get("webhook")
        body = json.dumps(self._view(job), separators=(",", ":")).encode()
        secret = team_webhook_secret(self._key, job.team)
        attempts = self._settings.webhook_max_attempts
        problem = ""
        for attempt in range(attempts):
            timestamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                "Tympan-Signature": signature(secret, timestamp, body),
                "Tympan-Delivery": job.job_id,
                "User-Agent": "tympan-webhook",
            }
            try:
                async with self._client().post(str(url), data=body, headers=headers) as response:
                    if 200 <= response.status < 300:
                        await self._repository.webhook_done(job.job_id)
                        return
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problem = type(exc).__name__
            if attempt + 1 < attempts:
                await asyncio.sleep(
                    min(_MAX_BACKOFF_S, self._settings.webhook_retry_base_s * 2**attempt)
                )
        log.warning(
            "job webhook of %s given up after %d tries (last: %s)", job.job_id, attempts, problem
        )
        await self._repository.webhook_done(job.job_id)
