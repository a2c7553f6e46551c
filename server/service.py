"""Session operations, as the handlers call them: authorise, decide with the pure state machine,
persist, then apply and tell the engine. No HTTP here: inputs are plain values, errors are the
protocol's typed errors.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import pybase64

from protocol.errors import (
    BadRequest,
    InternalError,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
)
from protocol.messages import (
    AudioType,
    CreateSession,
    CreateSessionResponse,
    OfficialTag,
    Page,
    PageQuery,
    PredictRequest,
    PredictResponse,
    ResultsQuery,
    Sense,
    SenseEvent,
    SessionRefs,
    SessionResults,
    SessionStatus,
    Tag,
    UpdateSession,
)
from protocol.states import SessionState
from protocol.tokens import InvalidToken, PageCursor, TokenCodec
from protocol.wire import parse_query, to_wire
from server.audio import ContentTypeError, parse_content_type
from server.audio.overlap import OverlapGeometry, StreamTail
from server.auth import Caller, KeyDirectory
from server.config import Settings
from server.detectors.loader import ModelLoader
from server.detectors.session_models import load_session_models
from server.engine import InferenceEngine
from server.event_log import rules_for
from server.keys import new_session_id
from server.limits import RateLimiter
from server.metrics import Metrics
from server.sessions import ChunkDecision, Session, chunk_digest, params_from_dict, params_to_dict
from server.store import ResultRow, Store, StoreThread
from server.tagging import OTHERS
from server.webhooks import WebhookDispatcher

__all__ = ["SessionService"]

log = logging.getLogger(__name__)

_WHITESPACE = str.maketrans("", "", " \t\r\n")


@dataclass(frozen=True)
class CreatedSession:
    refs: SessionRefs
    window_size_s: float
    window_hop_s: float

    def to_dict(self) -> dict[str, Any]:
        return to_wire(
            CreateSessionResponse(
                self.refs.session_id,
                self.refs.chunk_sequence,
                self.window_size_s,
                self.window_hop_s,
            )
        )


def decode_chunk_data(data: bytes | str, max_bytes: int) -> bytes:
    """Base64 text (JSON transport) or raw bytes (msgpack); 413 before decoding an oversize one."""
    if isinstance(data, bytes):
        if len(data) > max_bytes:
            raise PayloadTooLarge(
                f"audio chunk is {len(data)} bytes; the maximum is {max_bytes} "
                "(TYMPAN_MAX_CHUNK_BYTES)"
            )
        return data
    limit = 4 * -(-max_bytes // 3)
    if len(data) <= limit:
        # The common case, plain base64, decodes in one call; only a failure pays for removing
        # whitespace (line-wrapped base64) and a second try. pybase64 decodes a 0.5 s chunk in
        # ~1.3 us where the standard library took ~48 us, on the event loop, for every chunk.
        try:
            return pybase64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            pass
    text = data.translate(_WHITESPACE)
    if len(text) > limit:
        raise PayloadTooLarge(
            f"audio chunk is larger than {max_bytes} bytes (TYMPAN_MAX_CHUNK_BYTES)"
        )
    try:
        return pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("data is not valid base64") from None


def _span_event(windows: tuple[SenseEvent, ...], start_s: float) -> SenseEvent:
    """One event covering consecutive windows: per tag its highest probability, highest first;
    ``Others`` only when no window had a tag. No windows: an empty span at ``start_s``."""
    if not windows:
        return SenseEvent(start_s, start_s, ())
    best: dict[str, float] = {}
    for event in windows:
        for tag in event.tags:
            best[tag.name] = max(best.get(tag.name, 0.0), tag.probability)
    if len(best) > 1:
        best.pop(OTHERS, None)
    tags = sorted(best.items(), key=lambda item: -item[1])
    return SenseEvent(
        windows[0].start_time, windows[-1].end_time, tuple(Tag(n, p) for n, p in tags)
    )


def _overlap_geometry(params: CreateSession) -> OverlapGeometry | None:
    """Parse the content type (``ContentTypeError`` when bad); the sliding-window geometry of
    a raw stream, None for files and other formats (their chunks are always contiguous)."""
    fmt = parse_content_type(params.content_type)
    if params.type is not AudioType.STREAM:
        return None
    return OverlapGeometry.for_stream(fmt, params.window_hop_s)


class SessionService:
    def __init__(
        self,
        settings: Settings,
        store: StoreThread,
        keys: KeyDirectory,
        engine: InferenceEngine,
        tokens: TokenCodec,
        window_seconds: float,
        metrics: Metrics | None = None,
        official_tags: tuple[OfficialTag, ...] = (),
    ) -> None:
        """``official_tags``: what ``GET /tags/official`` lists (``tagging.official_tags``)."""
        self._official_tags = official_tags
        self._settings = settings
        self._store = store
        self._keys = keys
        self._engine = engine
        self._tokens = tokens
        self._window_seconds = window_seconds
        self._sessions: dict[str, Session] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._open_by_key: dict[int, int] = {}
        self._limiter = RateLimiter(settings.rate_limit_per_key, settings.rate_limit_burst)
        self._metrics = metrics or Metrics()
        # Set once the app has built it: sessions with a webhook are handed to it.
        self.webhooks: WebhookDispatcher | None = None
        # Set by the app: the custom detector models sessions may name (``model_ids``).
        self.detector_models: ModelLoader | None = None

    # -- start-up -------------------------------------------------------------------------

    async def load(self) -> int:
        """Bring sessions back from the store and resume their inference."""
        rows = await self._store.read(lambda s: s.load_sessions())
        if self._settings.audio_retention == "consumed":
            await self._store.write(Store.prune_finished_sessions)
        for row in rows:
            session = Session(
                id=row.id,
                key_id=row.key_id,
                params=params_from_dict(row.params),
                state=SessionState(row.state),
                error=row.error,
                next_chunk_seq=row.next_chunk_seq,
                bytes_received=row.bytes_received,
                last_chunk_sha256=row.last_chunk_sha256,
                results_count=row.results_count,
                inference_done=row.inference_done,
                created_at=row.created_at,
                last_activity_at=row.last_activity_at,
            )
            if row.event_state is not None:
                counts = json.loads(row.event_state)
                session.events_logged = int(counts["logged"])
                session.events_closed = int(counts["closed"])
            session.webhook_delivered = row.webhook_delivered
            if session.state is SessionState.WRITABLE:
                session.tail = await self._stored_tail(session)
            if session.params.model_ids and not session.inference_done:
                await self._recover_models(session)
            self._sessions[session.id] = session
            self._open_by_key[session.key_id] = self._open_by_key.get(session.key_id, 0) + 1
            if not session.inference_done:
                layout = await self._store.read(partial(Store.chunk_layout, session_id=row.id))
                self._engine.recover(session, layout)
        return len(rows)

    async def _recover_models(self, session: Session) -> None:
        """A recovered session's models, loaded again; one that is gone (deleted while the
        server was down, or its file lost) fails the session, with the reason."""
        try:
            session.detectors = await self._session_models(
                str(session.key_id), session.params.model_ids
            )
        except (NotFound, InternalError, BadRequest) as exc:
            session.detector_error = f"{exc.message} (after a restart)"

    async def _session_models(self, team: str, model_ids: tuple[str, ...]) -> Any:
        reserved = (*self._engine.tagger.labels, OTHERS)
        return await load_session_models(self.detector_models, team, model_ids, reserved)

    async def _stored_tail(self, session: Session) -> StreamTail | None:
        """Rebuild a raw stream's sliding-window state from its stored chunks."""
        geometry = _overlap_geometry(session.params)
        if geometry is None:
            return None
        session_id = session.id
        history, stored_bytes, last_chunk_bytes = await self._store.read(
            lambda s: s.stream_tail(session_id, geometry.history_bytes)
        )
        return StreamTail(geometry, history, stored_bytes, last_chunk_bytes)

    def all_sessions(self) -> list[Session]:
        return list(self._sessions.values())

    @property
    def open_sessions(self) -> dict[str, int]:
        counts = {state.value: 0 for state in (SessionState.WRITABLE, SessionState.READONLY)}
        for session in self._sessions.values():
            counts[session.state.value] += 1
        return counts

    # -- access ---------------------------------------------------------------------------

    def official_tags(self, key: str | None) -> list[OfficialTag]:
        """The tags results may carry. No key needed (Cochl's SDK sends none); a key that is
        sent must be valid, and the call counts against its request rate."""
        if key is not None:
            self.rate_check(self._keys.authenticate(key).key_id)
        return list(self._official_tags)

    def authorized(self, session_id: str, key: str | None) -> Session:
        """The session, for a caller allowed to read it (404 otherwise, as for every call)."""
        return self._session(session_id, key)

    def _caller(self, key: str | None) -> Caller | None:
        return None if key is None else self._keys.authenticate(key)

    def _session(self, session_id: str, key: str | None) -> Session:
        caller = self._caller(key)
        session = self._sessions.get(session_id)
        if session is None or session.state is SessionState.DELETED:
            raise NotFound("session does not exist or has been deleted")
        if caller is None:
            if self._settings.require_owner_key:
                raise Unauthorized("this server requires the session owner's API key on every call")
            if self._keys.is_revoked(session.key_id):
                raise NotFound("session does not exist or has been deleted")
        elif caller.key_id != session.key_id:
            raise NotFound("session does not exist or has been deleted")
        self.rate_check(session.key_id)
        return session

    def rate_check(self, key_id: int) -> None:
        """429 when the key has spent its request budget (shared by every API the key calls)."""
        try:
            self._limiter.check(key_id)
        except TooManyRequests:
            self._metrics.rejected.labels("rate").inc()
            raise

    def _forget(self, session: Session) -> None:
        """Drop a deleted session from memory."""
        self._sessions.pop(session.id, None)
        self._locks.pop(session.id, None)
        remaining = self._open_by_key.get(session.key_id, 1) - 1
        if remaining > 0:
            self._open_by_key[session.key_id] = remaining
        else:
            self._open_by_key.pop(session.key_id, None)

    def _lock(self, session_id: str) -> asyncio.Lock:
        return self._locks.setdefault(session_id, asyncio.Lock())

    # -- operations -----------------------------------------------------------------------

    async def create(self, key: str | None, body: Any) -> CreatedSession:
        if key is None:
            raise Unauthorized("an API key is required to create a session (x-api-key header)")
        caller = self._keys.authenticate(key)
        self.rate_check(caller.key_id)
        params = CreateSession.from_body(body)
        if self._open_by_key.get(caller.key_id, 0) >= self._settings.max_sessions_per_key:
            self._metrics.rejected.labels("sessions_per_key").inc()
            raise TooManyRequests(
                f"this API key already has {self._settings.max_sessions_per_key} open sessions; "
                "delete finished ones first"
            )
        lag_s = self._engine.stream_lag_s()
        if lag_s > self._settings.overload_lag_s:
            self._metrics.rejected.labels("overload").inc()
            raise TooManyRequests(
                f"server is overloaded (live inference is {lag_s:.1f} s behind); retry later",
                headers={"Retry-After": str(max(1, round(lag_s)))},
            )
        try:
            geometry = _overlap_geometry(params)
        except ContentTypeError as exc:
            raise BadRequest(str(exc)) from None
        tagger = self._engine.tagger
        rules_for(  # names an unknown tag in the event parameters (400) before anything is stored
            tagger.labels,
            tagger.thresholds(params.default_sensitivity, params.tags_sensitivity),
            params.events,
            params.window_hop_s,
            self._window_seconds,
        )
        detectors = await self._session_models(str(caller.key_id), params.model_ids)
        session_id = new_session_id()
        now = time.time()
        stored = params_to_dict(params)
        await self._store.write(lambda s: s.insert_session(session_id, caller.key_id, stored, now))
        session = Session(session_id, caller.key_id, params, created_at=now, last_activity_at=now)
        session.detectors = detectors
        session.tail = None if geometry is None else StreamTail(geometry)
        self._sessions[session_id] = session
        self._open_by_key[caller.key_id] = self._open_by_key.get(caller.key_id, 0) + 1
        if self.webhooks is not None:
            self.webhooks.watch(session)
        log.info(
            "session %s created: %s %s", session_id[:8], params.type.value, params.content_type
        )
        return CreatedSession(SessionRefs(session_id, 0), self._window_seconds, params.window_hop_s)

    async def put_chunk(
        self, session_id: str, seq_text: str, key: str | None, data: bytes | str
    ) -> SessionRefs:
        session = self._session(session_id, key)
        try:
            seq = int(seq_text)
        except ValueError:
            raise BadRequest("chunk_sequence must be an integer") from None
        return await self._append(
            session, seq, decode_chunk_data(data, self._settings.max_chunk_bytes)
        )

    async def predict(self, session_id: str, key: str | None, body: Any) -> PredictResponse:
        """Cochl's synchronous predict: append one chunk to a stream session, exactly as an
        upload with that sequence would, and answer with the windows it completes."""
        session = self._session(session_id, key)
        request = PredictRequest.from_body(body)
        if not session.is_stream:
            raise BadRequest(
                "predict works on stream sessions only; upload a file session's chunks with "
                "PUT /audio_sessions/{session_id}/chunks/{chunk_sequence}"
            )
        seq = session.next_chunk_seq if request.sequence is None else request.sequence
        audio = decode_chunk_data(request.data, self._settings.max_chunk_bytes)
        refs = await self._append(session, seq, audio)
        span = await self._engine.windows_of_chunk(session, seq)
        if span is None:
            if session.state is SessionState.DELETED:
                raise NotFound("session does not exist or has been deleted")
            if session.error is not None:
                raise BadRequest(f"the chunk was not inferred: {session.error}")
            span = (session.results_count, session.results_count)
        first, end = span
        rows = await self._read_results(session_id, first, end - first) if end > first else []
        windows = tuple(self._event(row) for row in rows)
        hop_s = session.params.window_hop_s
        return PredictResponse(
            _span_event(windows, round(first * hop_s, 3)), refs.chunk_sequence, windows
        )

    async def _append(self, session: Session, seq: int, audio: bytes) -> SessionRefs:
        """Store one chunk in sequence and hand it to the engine (409 out of sequence)."""
        session_id = session.id
        digest = chunk_digest(audio)
        async with self._lock(session_id):
            decision = session.check_chunk(seq, audio, self._settings.max_chunk_bytes, digest)
            if decision is ChunkDecision.RETRY_OF_LAST:
                return SessionRefs(session.id, session.next_chunk_seq)
            if session.bytes_received + len(audio) > self._settings.max_session_bytes:
                raise PayloadTooLarge(
                    f"session has reached its maximum total size of {self._settings.max_session_bytes} bytes"
                )
            now = time.time()
            readonly = session.reaches_total_size(len(audio))
            overlap = 0 if session.tail is None else session.tail.overlap_of(audio)
            added = audio[overlap:] if overlap else audio
            await self._store.write(
                lambda s: s.append_chunk(session_id, seq, added, digest, now, readonly, overlap)
            )
            session.apply_chunk(audio, now, digest)
            if session.tail is not None:
                session.tail.append(audio, overlap)
        self._metrics.chunks.labels(session.params.type.value).inc()
        self._metrics.chunk_bytes.inc(len(audio))
        if overlap:
            self._metrics.chunk_overlap_bytes.inc(overlap)
        self._engine.chunk_accepted(session, seq, added)
        return SessionRefs(session.id, session.next_chunk_seq)

    async def update(self, session_id: str, key: str | None, body: Any) -> None:
        session = self._session(session_id, key)
        update = UpdateSession.from_body(body)
        if not update.make_readonly:
            return
        async with self._lock(session_id):
            if session.state is SessionState.WRITABLE:
                await self._store.write(lambda s: s.set_state(session_id, "readonly"))
                session.make_readonly()
                self._engine.readonly(session)

    async def delete(self, session_id: str, key: str | None) -> None:
        session = self._session(session_id, key)
        async with self._lock(session_id):
            await self._store.write(lambda s: s.delete_session(session_id))
            session.delete()
        self._forget(session)
        self._engine.deleted(session)
        log.info("session %s deleted", session_id[:8])

    async def status(
        self, session_id: str, key: str | None, query: Mapping[str, str], wait: bool = True
    ) -> SessionStatus:
        session = self._session(session_id, key)
        token = query.get("next_token")
        if token:
            try:
                cursor = self._tokens.decode(token, session_id)
            except InvalidToken as exc:
                raise BadRequest(str(exc)) from None
            if cursor.scope:
                raise BadRequest("next_token was issued for this session's events, not its status")
            offset, count = cursor.next_index, cursor.count
        else:
            page = parse_query(PageQuery, query)
            offset, count = page.offset, page.count
        if wait:
            await self._wait_for_results(session, offset)
        rows = await self._read_results(session_id, offset, count)
        return self._status(session, offset, count, rows)

    async def results(
        self, session_id: str, key: str | None, query: Mapping[str, str]
    ) -> dict[str, Any]:
        """Newer Cochl clients' ``/results``: a flat page with a coarse inference state."""
        session = self._session(session_id, key)
        wanted = parse_query(ResultsQuery, query)
        offset, limit = wanted.offset, wanted.limit
        rows = await self._read_results(session_id, offset, limit)
        if session.error is not None:
            state = "error"
        elif session.finished:
            state = "done"
        elif session.results_count or session.pending_chunks:
            state = "in-progress"
        else:
            state = "pending"
        return to_wire(
            SessionResults(
                state=state,  # type: ignore[arg-type]
                data=tuple(self._event(row) for row in rows),
                has_more=(offset + len(rows) < session.results_count) or not session.finished,
                error=session.error,
            )
        )

    async def expire_inactive(self, now: float | None = None) -> int:
        """Delete sessions that received no chunk for the inactivity period."""
        now = time.time() if now is None else now
        cutoff = now - self._settings.inactivity_timeout_s
        stale = [
            s
            for s in self._sessions.values()
            if s.last_activity_at < cutoff and not self._engine.is_working(s)
        ]
        for session in stale:
            async with self._lock(session.id):
                session_id = session.id
                await self._store.write(partial(Store.delete_session, session_id=session_id))
                session.delete()
            self._forget(session)
            self._engine.deleted(session)
            log.info("session %s expired after inactivity", session.id[:8])
        return len(stale)

    # -- internals ------------------------------------------------------------------------

    async def _wait_for_results(self, session: Session, offset: int) -> None:
        """Long-poll: when the page would be empty but a result may still come (inference is
        running, or a live stream is still writable), wait for one, up to ``status_wait_s``."""
        deadline = time.monotonic() + self._settings.status_wait_s
        while session.results_count <= offset and self._may_produce(session):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await self._engine.wait_for_change(session, remaining)

    def _may_produce(self, session: Session) -> bool:
        if session.finished:
            return False
        if self._engine.is_working(session):
            return True
        return session.is_stream and session.state is SessionState.WRITABLE

    async def read_results(self, session_id: str, offset: int, count: int) -> list[ResultRow]:
        """Stored windows ``[offset, offset + count)``: from memory when recent, else the store."""
        return await self._read_results(session_id, offset, count)

    async def _read_results(self, session_id: str, offset: int, count: int) -> list[ResultRow]:
        recent = self._engine.recent_results(session_id, offset, count)
        if recent is not None and (
            len(recent) == count or offset + len(recent) >= self._stored(session_id)
        ):
            return recent
        return await self._read_stored_results(session_id, offset, count)

    def _stored(self, session_id: str) -> int:
        session = self._sessions.get(session_id)
        return session.results_count if session else 0

    async def _read_stored_results(
        self, session_id: str, offset: int, count: int
    ) -> list[ResultRow]:
        def read(store: Store) -> list[ResultRow]:
            return store.read_results(session_id, offset, count)

        return await self._store.read(read)

    def _event(self, row: ResultRow) -> SenseEvent:
        return SenseEvent(row.start_time, row.end_time, tuple(Tag(n, p) for n, p in row.tags))

    def _status(
        self, session: Session, offset: int, count: int, rows: list[ResultRow]
    ) -> SessionStatus:
        next_index = offset + len(rows)
        total = max(session.results_count, next_index)
        exhausted = session.finished and next_index >= total
        token = (
            None if exhausted else self._tokens.encode(PageCursor(session.id, next_index, count))
        )
        return SessionStatus(
            state=session.state,
            refs=SessionRefs(session.id, session.next_chunk_seq),
            inference=Sense(
                in_progress=not session.inference_done
                and (session.pending_chunks > 0 or session.state is not SessionState.WRITABLE),
                page=Page(offset=offset, count=len(rows), total=total, next_token=token),
                results=tuple(self._event(row) for row in rows),
            ),
            error=session.error,
        )
