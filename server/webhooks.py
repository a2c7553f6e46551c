"""Webhooks: a session's event log entries, POSTed to the URL it gave, signed, in order.

One delivery task per session with a webhook, apart from inference: it waits for new log
entries (as readers do), POSTs each (``protocol.events.WebhookTarget`` describes the request and
its signature) and records how far it got in the store, so a restart carries on from there.
Delivery is at least once: an entry whose POST succeeded just before a crash is sent again, with
the same ``seq`` for the receiver to deduplicate.

A failing receiver (an error status, a refused connection, a timeout) gets the same entry again
after ``webhook_retry_base_s * 2^n`` seconds (at most five minutes), ``webhook_max_attempts``
times in all; then the entry is given up (logged and counted) and the next one follows. Nothing
here is awaited by inference or by any request: a slow receiver only delays its own deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from functools import partial

import aiohttp

from protocol.events import WebhookTarget
from protocol.states import SessionState
from server.config import Settings
from server.engine import InferenceEngine
from server.metrics import Metrics
from server.sessions import Session
from server.store import EventLogRow, Store, StoreError, StoreThread

__all__ = ["WebhookDispatcher", "signature"]

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 300.0
_PAGE = 64
_IDLE_WAIT_S = 60.0


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Tympan-Signature`` header value for one delivery."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


class WebhookDispatcher:
    def __init__(
        self, settings: Settings, store: StoreThread, engine: InferenceEngine, metrics: Metrics
    ) -> None:
        self._settings = settings
        self._store = store
        self._engine = engine
        self._metrics = metrics
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._http: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(settings.webhook_concurrency)

    def watch(self, session: Session) -> None:
        """Deliver this session's entries (a no-op without a webhook or when already watched)."""
        if session.params.webhook is None or session.id in self._tasks:
            return
        if session.finished and session.webhook_delivered >= session.events_logged:
            return
        task = asyncio.create_task(self._run(session), name=f"webhook-{session.id[:8]}")
        self._tasks[session.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(session.id, None))

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            await self._http.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._settings.webhook_timeout_s),
                connector=aiohttp.TCPConnector(limit=self._settings.webhook_concurrency),
            )
        return self._http

    async def _run(self, session: Session) -> None:
        target = session.params.webhook
        assert target is not None
        try:
            while session.state is not SessionState.DELETED:
                if session.webhook_delivered < session.events_logged:
                    entries = await self._store.read(
                        partial(
                            Store.read_events,
                            session_id=session.id,
                            offset=session.webhook_delivered,
                            count=_PAGE,
                        )
                    )
                    for entry in entries:
                        if session.state is SessionState.DELETED:
                            return
                        await self._deliver(session, target, entry)
                        await self._store.write(
                            partial(
                                Store.set_webhook_delivered,
                                session_id=session.id,
                                delivered=entry.seq + 1,
                            )
                        )
                        session.webhook_delivered = entry.seq + 1
                    continue
                if session.finished:
                    return
                await self._engine.wait_for_change(session, _IDLE_WAIT_S)
        except StoreError as exc:
            log.warning("webhook of session %s stopped: %s", session.id[:8], exc)

    async def _deliver(self, session: Session, target: WebhookTarget, entry: EventLogRow) -> None:
        body = json.dumps(
            {
                "session_id": session.id,
                "seq": entry.seq,
                "event": {
                    "id": entry.event_id,
                    "tag": entry.tag,
                    "start_time": entry.start_time,
                    "end_time": entry.end_time,
                    "confidence": entry.confidence,
                    "state": entry.state,
                },
            },
            separators=(",", ":"),
        ).encode()
        attempts = self._settings.webhook_max_attempts
        for attempt in range(attempts):
            timestamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                "Tympan-Signature": signature(target.secret, timestamp, body),
                "Tympan-Delivery": f"{session.id}/{entry.seq}",
                "User-Agent": "tympan-webhook",
            }
            problem: str
            try:
                async with (
                    self._slots,
                    self._client().post(target.url, data=body, headers=headers) as response,
                ):
                    if 200 <= response.status < 300:
                        self._metrics.webhook_deliveries.labels("delivered").inc()
                        return
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problem = type(exc).__name__
            self._metrics.webhook_deliveries.labels("retried").inc()
            if attempt + 1 < attempts:
                delay_s = min(_MAX_BACKOFF_S, self._settings.webhook_retry_base_s * 2**attempt)
                await asyncio.sleep(delay_s)
        self._metrics.webhook_deliveries.labels("given_up").inc()
        log.warning(
            "webhook of session %s: entry %d given up after %d tries (last: %s)",
            session.id[:8],
            entry.seq,
            attempts,
            problem,
        )
