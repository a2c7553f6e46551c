"""Reading events: pages of a session's event log, and the live Server-Sent Events feed.

``GET /audio_sessions/{id}/events`` pages the log the engine writes with the session's rule
parameters; a request that sets parameters of its own gets the log those parameters give,
derived from the stored windows (``event_log.replay_log``): the same entries, in the same order,
on every request, so its ``next_token`` walk is exactly-once too (the token is bound to the
parameters and refused with others).

``GET /audio_sessions/{id}/sse`` sends, as they are stored, every window (``event: window``) and
every log entry (``event: open`` / ``event: closed``), each with the SSE ``id``
``<windows sent>.<entries sent>``; a reader that reconnects with ``Last-Event-ID`` carries on
after it. Comment lines keep idle connections alive; ``event: end`` and the end of the
response follow the session's last entry (or its deletion).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from protocol.errors import BadRequest
from protocol.events import (
    EVENT_STATES,
    EventParams,
    EventsPage,
    EventsPageInfo,
    EventState,
    SoundEvent,
    StreamPosition,
)
from protocol.messages import PageQuery, SenseEvent, Tag
from protocol.states import SessionState
from protocol.tokens import InvalidToken, PageCursor, TokenCodec
from protocol.wire import parse_query
from server.config import Settings
from server.engine import InferenceEngine
from server.event_log import (
    LogEntry,
    probabilities_from_tags,
    replay_log,
    rules_for,
    unpack_probabilities,
)
from server.service import SessionService
from server.sessions import Session
from server.store import EventLogRow, ResultRow, Store, StoreThread

__all__ = ["EventReads"]

_LIVE_PAGE = 256  # windows or entries read per trip to the store while catching up
_REPLAY_PAGE = 4096
_REPLAYS_KEPT = 8


def _wire(row: EventLogRow) -> SoundEvent:
    state: EventState = "closed" if row.state == "closed" else "open"
    return SoundEvent(row.event_id, row.tag, row.start_time, row.end_time, row.confidence, state)


def _message(event: str, data: Any, position: StreamPosition | None = None) -> bytes:
    lines = [f"event: {event}"]
    if position is not None:
        lines.append(f"id: {position}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


class EventReads:
    def __init__(
        self,
        settings: Settings,
        sessions: SessionService,
        store: StoreThread,
        engine: InferenceEngine,
        tokens: TokenCodec,
        window_seconds: float,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._store = store
        self._engine = engine
        self._tokens = tokens
        self._window_seconds = window_seconds
        self._stopping = asyncio.Event()
        self._live: dict[str, int] = {}  # session id -> live feeds reading it
        self._replays: OrderedDict[tuple[str, str, int, bool], list[LogEntry]] = OrderedDict()

    @property
    def live_readers(self) -> int:
        return sum(self._live.values())

    def stop(self) -> None:
        """Server shutdown: live feeds end at once (a reader reconnects elsewhere)."""
        self._stopping.set()
        for session_id in list(self._live):
            self._engine.notify(session_id)

    # -- pages ----------------------------------------------------------------------------

    async def page(
        self, session_id: str, key: str | None, query: Any, wait: bool = True
    ) -> EventsPage:
        session = self._sessions.authorized(session_id, key)
        state = query.get("state") or None
        if state is not None and state not in EVENT_STATES:
            raise BadRequest("state must be 'open' or 'closed'")
        overrides = EventParams.from_query(query)
        token = query.get("next_token")
        if token:
            try:
                cursor = self._tokens.decode(token, session_id)
            except InvalidToken as exc:
                raise BadRequest(str(exc)) from None
            walked = _scope_of(cursor.scope)
            if walked is None:
                raise BadRequest("next_token was issued for this session's status, not its events")
            if ("state" in query or not overrides.is_empty) and walked != (state, overrides):
                raise BadRequest(
                    "state and event parameters differ from those next_token was issued for; "
                    "send next_token alone to carry on"
                )
            state, overrides = walked
            offset, count = cursor.next_index, cursor.count
        else:
            page = parse_query(PageQuery, query)
            offset, count = page.offset, page.count
        scope = json.dumps(
            {"events": overrides.to_dict(), "state": state}, sort_keys=True, separators=(",", ":")
        )
        if overrides.is_empty:
            if wait:
                await self._wait(session, lambda: self._total(session, state) > offset)
            finished, total = session.finished, self._total(session, state)
            rows = await self._store.read(lambda s: s.read_events(session_id, offset, count, state))
            events = tuple(_wire(row) for row in rows)
        else:
            finished, entries = await self._replay(session, overrides.over(session.params.events))
            if wait and not finished and len(_of_state(entries, state)) <= offset:
                seen = session.results_count
                await self._wait(session, lambda: session.results_count > seen)
                finished, entries = await self._replay(
                    session, overrides.over(session.params.events)
                )
            selected = _of_state(entries, state)
            total = len(selected)
            events = tuple(entry.event for entry in selected[offset : offset + count])
        next_index = offset + len(events)
        exhausted = finished and next_index >= total
        return EventsPage(
            session_id=session_id,
            state=session.state.value,  # type: ignore[arg-type]
            in_progress=not finished,
            page=EventsPageInfo(
                offset=offset,
                count=len(events),
                total=max(total, next_index),
                next_token=None
                if exhausted
                else self._tokens.encode(PageCursor(session_id, next_index, count, scope)),
            ),
            events=events,
            error=session.error,
        )

    @staticmethod
    def _total(session: Session, state: str | None) -> int:
        if state == "closed":
            return session.events_closed
        if state == "open":
            return session.events_logged - session.events_closed
        return session.events_logged

    async def _wait(self, session: Session, ready: Any) -> None:
        """Long-poll until ``ready()``, the session can produce nothing more, or the wait ends."""
        deadline = time.monotonic() + self._settings.status_wait_s
        while not ready() and self._may_produce(session):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await self._engine.wait_for_change(session, remaining)

    def _may_produce(self, session: Session) -> bool:
        if session.finished or session.state is SessionState.DELETED:
            return False
        if self._engine.is_working(session):
            return True
        return session.state is SessionState.WRITABLE

    async def _replay(self, session: Session, params: EventParams) -> tuple[bool, list[LogEntry]]:
        """The log ``params`` give on the windows stored so far (finished: and its close)."""
        tagger = self._engine.tagger
        rules = rules_for(
            tagger.labels,
            tagger.thresholds(session.params.default_sensitivity, session.params.tags_sensitivity),
            params,
            session.params.window_hop_s,
            self._window_seconds,
        )
        finished, windows = session.finished, session.results_count
        session_id = session.id
        # Walking a long recording's log page by page asks for the same replay again and
        # again (a 4 h file: 28,800 windows, 0.5 s each time here); the last few are kept.
        cache_key = (session_id, params.canonical(), windows, finished)
        cached = self._replays.get(cache_key)
        if cached is not None:
            self._replays.move_to_end(cache_key)
            return finished, cached
        stored: list[tuple[int, bytes | None, list[tuple[str, float]]]] = []
        while len(stored) < windows:
            start = len(stored)
            page = await self._store.read(
                partial(
                    Store.read_probabilities,
                    session_id=session_id,
                    offset=start,
                    count=min(_REPLAY_PAGE, windows - start),
                )
            )
            if not page:
                break
            stored.extend(page)
        index, classes = self._engine.label_index, len(tagger.labels)

        def derive() -> list[LogEntry]:
            rows = (
                unpack_probabilities(blob)
                if blob is not None
                else probabilities_from_tags(tags, index, classes)
                for _, blob, tags in stored
            )
            return replay_log(rows, rules, finished and len(stored) == windows)

        entries: list[LogEntry] = await self._engine.run_blocking(derive)
        if len(stored) == windows:
            self._replays[cache_key] = entries
            while len(self._replays) > _REPLAYS_KEPT:
                self._replays.popitem(last=False)
        return finished, entries

    # -- live -----------------------------------------------------------------------------

    async def live(
        self, session_id: str, key: str | None, last_event_id: str | None
    ) -> AsyncIterator[bytes]:
        """The SSE body, message by message (authorised before the first one)."""
        session = self._sessions.authorized(session_id, key)
        position = StreamPosition.parse(last_event_id)
        return self._feed(session, position)

    async def _feed(self, session: Session, position: StreamPosition) -> AsyncIterator[bytes]:
        heartbeat_s = self._settings.sse_heartbeat_s
        session_id = session.id
        loop = asyncio.get_running_loop()
        self._live[session_id] = self._live.get(session_id, 0) + 1
        try:
            yield f"retry: {self._settings.sse_retry_ms}\n\n".encode()
            last_sent = loop.time()
            while not self._stopping.is_set():
                # Registered before the state is read: a change while reading still wakes us.
                changed = self._engine.change_event(session_id)
                if session.state is SessionState.DELETED:
                    yield _message("end", {"state": "deleted"})
                    return
                finished = session.finished
                windows, logged = session.results_count, session.events_logged
                rows: list[ResultRow] = []
                if position.windows < windows:
                    first = position.windows
                    rows = await self._sessions.read_results(
                        session_id, first, min(_LIVE_PAGE, windows - first)
                    )
                entries: list[EventLogRow] = []
                if position.events < logged:
                    entries = await self._store.read(
                        partial(
                            Store.read_events,
                            session_id=session_id,
                            offset=position.events,
                            count=min(_LIVE_PAGE, logged - position.events),
                        )
                    )
                every_entry = position.events + len(entries) >= logged
                # One order whatever the timing: each entry right after the window that made it.
                sent = False
                r = e = 0
                while True:
                    if e < len(entries) and entries[e].windows <= position.windows:
                        entry = entries[e]
                        e += 1
                        position = StreamPosition(position.windows, entry.seq + 1)
                        wire = _wire(entry)
                        yield _message(wire.state, wire.to_dict(), position)
                    elif r < len(rows) and (e < len(entries) or every_entry):
                        row = rows[r]
                        r += 1
                        position = StreamPosition(row.idx + 1, position.events)
                        window = SenseEvent(
                            row.start_time,
                            row.end_time,
                            tuple(Tag(name, p) for name, p in row.tags),
                        )
                        yield _message("window", {"index": row.idx, **window.to_dict()}, position)
                    else:
                        break
                    sent = True
                if sent:
                    last_sent = loop.time()
                    continue
                if finished and position.windows >= windows and position.events >= logged:
                    end: dict[str, Any] = {"state": session.state.value}
                    if session.error is not None:
                        end["error"] = session.error
                    yield _message("end", end, position)
                    return
                quiet_s = loop.time() - last_sent
                if quiet_s >= heartbeat_s:
                    yield b": heartbeat\n\n"
                    last_sent = loop.time()
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(heartbeat_s - quiet_s):
                        await changed.wait()
        finally:
            remaining = self._live.pop(session_id, 1) - 1
            if remaining:
                self._live[session_id] = remaining


def _scope_of(scope: str) -> tuple[str | None, EventParams] | None:
    """The state filter and parameters an events ``next_token`` was issued for (None: not an
    events token)."""
    if not scope:
        return None
    try:
        walked = json.loads(scope)
        return walked["state"], EventParams.from_body(walked["events"])
    except (ValueError, KeyError, TypeError, BadRequest):  # signed, so only an old format
        raise BadRequest("next_token is not an events token of this server version") from None


def _of_state(entries: list[LogEntry], state: str | None) -> list[LogEntry]:
    return entries if state is None else [e for e in entries if e.event.state == state]
