"""An asyncio client for the audio-session API, whose retries are safe by construction.

Why retrying is safe here: the server answers 200 to an identical re-send of the last accepted
chunk, so a chunk whose response was lost (dropped connection, timeout, server restart) is simply
sent again; a 409 means the server's sequence is elsewhere (an earlier run uploaded further), and
the status says where to resume. Status reads are idempotent and a ``next_token`` names a fixed
position, so they retry freely and ``results`` still yields every window exactly once, in order;
the event log pages the same way, so ``iter_events`` yields every log entry exactly once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import random
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar

import aiohttp

from protocol.codec import JSON, MSGPACK, DecodeBodyError, decode_body, encode_body
from protocol.errors import ApiError, Conflict, NotFound, error_from_body
from protocol.events import EventParams, EventsPage, EventState, SoundEvent
from protocol.messages import AudioType, SenseEvent, SessionRefs, SessionStatus
from protocol.wire import from_wire

__all__ = [
    "DEFAULT_URL",
    "MalformedResponse",
    "RetryPolicy",
    "SessionFailed",
    "SessionHandle",
    "Transport",
    "TransportError",
    "TympanClient",
    "Window",
    "server_root",
]

DEFAULT_URL = "http://127.0.0.1:8080"
API_BASE = "/api/v1"
API_PATH = API_BASE + "/audio_sessions"


def server_root(url: str) -> str:
    """The server's root from ``url``, which may also be the API base that Cochl clients are
    given (``http://host:port/api/v1``)."""
    root = url.rstrip("/")
    if root.endswith(API_BASE):
        root = root[: -len(API_BASE)]
    return root.rstrip("/")


DEFAULT_PAGE_SIZE = 100
DEFAULT_TIMEOUT_S = 30.0
# The server holds an empty status page for up to ~10 s while inference runs (long-poll).
LONG_POLL_MARGIN_S = 15.0
# An empty page that came back at once means nothing is running yet: do not ask faster than this.
IDLE_POLL_S = 0.25
_MAX_CONFLICTS_PER_CHUNK = 3
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_ERROR_TEXT_CHARS = 200

Transport = Literal["json", "msgpack"]
Query = Mapping[str, str] | Sequence[tuple[str, str]]
Window = SenseEvent
"""One inference window: ``start_time``, ``end_time`` (seconds) and its ``tags``."""


class TransportError(Exception):
    """The server could not be reached, or kept failing transiently until the retries ran out."""


class MalformedResponse(Exception):
    """The server answered with a body that does not follow the protocol."""


class SessionFailed(Exception):
    """The session stopped on an error (e.g. undecodable audio); the server's message is kept."""

    def __init__(self, session_id: str, error: str) -> None:
        super().__init__(f"session {session_id} failed: {error}")
        self.session_id = session_id
        self.error = error


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; gives up after ``max_attempts`` or ``max_elapsed_s``.

    The defaults ride out a server restart of several seconds.
    """

    max_attempts: int = 10
    max_elapsed_s: float = 60.0
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0

    def backoff_s(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (0-based), jittered to 50-100 %."""
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier**attempt)
        return base * (0.5 + random.random() / 2)


@dataclass(frozen=True)
class SessionHandle:
    """What creating a session returns: its id, the next chunk sequence and window geometry."""

    session_id: str
    chunk_sequence: int
    window_size_s: float
    window_hop_s: float

    @property
    def refs(self) -> SessionRefs:
        return SessionRefs(self.session_id, self.chunk_sequence)


class TympanClient:
    """``async with TympanClient(url, api_key) as client:`` then create, upload, read results.

    ``timeout_s`` bounds one ordinary request; status requests get ``status_timeout_s``, which
    must outlast the server's long-poll. Transient failures (connection errors, timeouts, 429 and
    5xx) are retried under ``retry``; other errors raise the protocol's typed ``ApiError``.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        transport: Transport = "json",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        status_timeout_s: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if transport not in ("json", "msgpack"):
            raise ValueError(f"transport must be 'json' or 'msgpack', got {transport!r}")
        self.url = server_root(url)
        self.api_key = api_key
        self.transport: Transport = transport
        self.timeout_s = timeout_s
        self.status_timeout_s = (
            timeout_s + LONG_POLL_MARGIN_S if status_timeout_s is None else status_timeout_s
        )
        self.retry = retry or RetryPolicy()
        self._http: aiohttp.ClientSession | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> TympanClient:
        self._session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    # -- operations -----------------------------------------------------------------------

    async def create_session(
        self,
        audio_type: AudioType | str,
        content_type: str,
        *,
        total_size: int | None = None,
        window_hop: str | float | None = None,
        default_sensitivity: int | None = None,
        tags_sensitivity: Mapping[str, int] | None = None,
        metadata: Mapping[str, Any] | None = None,
        file_name: str | None = None,
    ) -> SessionHandle:
        """Create a session. A retry after a lost response may leave an unused empty session
        behind; the server expires it after its inactivity period."""
        body: dict[str, Any] = {"type": AudioType(audio_type).value, "content_type": content_type}
        optional = {
            "total_size": total_size,
            "window_hop": window_hop,
            "default_sensitivity": default_sensitivity,
            "tags_sensitivity": dict(tags_sensitivity) if tags_sensitivity else None,
            "metadata": dict(metadata) if metadata else None,
            "file_name": file_name,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        answer = await self._call("POST", API_PATH + "/", body=body)
        try:
            return SessionHandle(
                session_id=str(answer["session_id"]),
                chunk_sequence=int(answer["chunk_sequence"]),
                window_size_s=float(answer["window_size"]),
                window_hop_s=float(answer["window_hop"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedResponse(f"create session answered {answer!r}") from exc

    async def upload_chunk(self, session_id: str, seq: int, data: bytes) -> SessionRefs:
        """Upload one chunk; transient failures re-send the identical bytes, which the server
        accepts once (a re-send of the last accepted chunk is answered with 200)."""
        payload: Any = data if self.transport == "msgpack" else base64.b64encode(data).decode()
        answer = await self._call(
            "PUT", f"{API_PATH}/{session_id}/chunks/{seq}", body={"data": payload}
        )
        return _refs(answer)

    async def upload(
        self,
        session_id: str,
        chunks: Iterable[bytes] | AsyncIterable[bytes],
        start_seq: int = 0,
        *,
        on_chunk: Callable[[int], None] | None = None,
    ) -> SessionRefs:
        """Upload ``chunks`` as sequences ``start_seq, start_seq + 1, ...`` and return the refs.

        On 409 the status tells where the server is: chunks it already holds are skipped (an
        interrupted upload restarted from the beginning resumes where the server stopped). The
        skipped chunks are assumed to be the same bytes. ``on_chunk(n_bytes)`` is called for
        every chunk consumed, sent or skipped (progress bars).
        """
        refs = SessionRefs(session_id, start_seq)
        seq = start_seq
        resume_at = start_seq
        async with contextlib.aclosing(_as_async(chunks)) as source:
            async for data in source:
                if seq >= resume_at:
                    refs = await self._put_resuming(session_id, seq, data)
                    resume_at = refs.chunk_sequence
                seq += 1
                if on_chunk is not None:
                    on_chunk(len(data))
        return refs

    async def make_readonly(self, session_id: str) -> None:
        """Stop accepting chunks; a file session starts its inference now. Idempotent."""
        await self._call("PATCH", f"{API_PATH}/{session_id}", body={"make_readonly": True})

    async def delete(self, session_id: str, *, missing_ok: bool = False) -> None:
        """Delete the session. A retried delete whose first answer was lost (aiohttp re-sends
        idempotent requests on a dropped keep-alive connection by itself) meets a 404;
        ``missing_ok`` treats that, and any other 404, as done."""
        try:
            await self._call("DELETE", f"{API_PATH}/{session_id}")
        except NotFound:
            if not missing_ok:
                raise

    async def status(
        self,
        session_id: str,
        *,
        offset: int | None = None,
        count: int | None = None,
        next_token: str | None = None,
        wait: bool = True,
    ) -> SessionStatus:
        """One status page. The server may hold the request while inference runs (long-poll);
        ``wait=False`` asks it not to (RFC 7240 ``Prefer: wait=0``), for a server that honours it.
        """
        params = {"offset": offset, "count": count, "next_token": next_token}
        answer = await self._call(
            "GET",
            f"{API_PATH}/{session_id}/status",
            params={key: str(value) for key, value in params.items() if value is not None},
            timeout_s=self.status_timeout_s,
            headers=None if wait else {"Prefer": "wait=0"},
        )
        return _status(answer)

    async def results(
        self,
        session_id: str,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        next_token: str | None = None,
        raise_on_error: bool = True,
    ) -> AsyncGenerator[Window, None]:
        """Every window of the session exactly once, in order, as inference produces them.

        Follows ``next_token`` and ends when the server stops issuing one: the session is
        readonly and its inference is over. With ``raise_on_error`` a session that stopped on an
        error raises ``SessionFailed`` after its windows.
        """
        loop = asyncio.get_running_loop()
        token = next_token
        while True:
            started = loop.time()
            if token is None:
                status = await self.status(session_id, offset=0, count=page_size)
            else:
                status = await self.status(session_id, next_token=token)
            for window in status.results:
                yield window
            token = status.page.next_token
            if token is None:
                if raise_on_error and status.error is not None:
                    raise SessionFailed(session_id, status.error)
                return
            idle_s = IDLE_POLL_S - (loop.time() - started)
            if not status.results and idle_s > 0:
                await asyncio.sleep(idle_s)

    async def events(
        self,
        session_id: str,
        *,
        next_token: str | None = None,
        offset: int | None = None,
        count: int | None = None,
        state: EventState | None = None,
        wait: bool = True,
        params: EventParams | None = None,
    ) -> EventsPage:
        """One page of the session's event log (``GET .../events``).

        ``state`` keeps only ``open`` or only ``closed`` entries: a finished file session read
        with ``state="closed"`` lists each event once. ``params`` override the session's event
        rule for this read. Long-polls like ``status`` unless ``wait=False``.
        """
        query: list[tuple[str, str]] = [
            (key, str(value))
            for key, value in (
                ("next_token", next_token),
                ("offset", offset),
                ("count", count),
                ("state", state),
            )
            if value is not None
        ]
        query += _event_query(params or EventParams())
        answer = await self._call(
            "GET",
            f"{API_PATH}/{session_id}/events",
            params=query,
            timeout_s=self.status_timeout_s,
            headers=None if wait else {"Prefer": "wait=0"},
        )
        try:
            return EventsPage.from_dict(answer)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise MalformedResponse(f"expected EventsPage, got {str(answer)[:200]}") from exc

    async def iter_events(
        self,
        session_id: str,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        next_token: str | None = None,
        state: EventState | None = None,
        params: EventParams | None = None,
        raise_on_error: bool = True,
    ) -> AsyncGenerator[SoundEvent, None]:
        """Every entry of the event log exactly once, in order, as the server adds them.

        Walks ``next_token`` as ``results`` does and ends when the server stops issuing one:
        the session is finished and its log read to the end. With ``raise_on_error`` a session
        that stopped on an error raises ``SessionFailed`` after its entries.
        """
        loop = asyncio.get_running_loop()
        token = next_token
        while True:
            started = loop.time()
            if token is None:
                page = await self.events(
                    session_id, offset=0, count=page_size, state=state, params=params
                )
            else:  # the token carries on with the state filter and rule it was issued for
                page = await self.events(session_id, next_token=token)
            for event in page.events:
                yield event
            token = page.next_token
            if token is None:
                if raise_on_error and page.error is not None:
                    raise SessionFailed(session_id, page.error)
                return
            idle_s = IDLE_POLL_S - (loop.time() - started)
            if not page.events and idle_s > 0:
                await asyncio.sleep(idle_s)

    # -- internals ------------------------------------------------------------------------

    async def _put_resuming(self, session_id: str, seq: int, data: bytes) -> SessionRefs:
        for _ in range(_MAX_CONFLICTS_PER_CHUNK):
            try:
                return await self.upload_chunk(session_id, seq, data)
            except Conflict as conflict:
                expected = (await self.status(session_id, offset=0, count=1, wait=False)).refs
                if expected.chunk_sequence > seq:
                    return expected
                if expected.chunk_sequence < seq:
                    raise Conflict(
                        f"{conflict.message}; the server holds chunks up to "
                        f"{expected.chunk_sequence - 1} and this upload cannot go back"
                    ) from conflict
        raise Conflict(f"chunk {seq} kept conflicting with the server's sequence")

    def _headers(self, has_body: bool) -> dict[str, str]:
        media = MSGPACK if self.transport == "msgpack" else JSON
        headers = {"Accept": media}
        if has_body:
            headers["Content-Type"] = media
        if self.api_key is not None:
            headers["x-api-key"] = self.api_key
        return headers

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Query | None = None,
        timeout_s: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send, retrying transient failures: every request here is safe to repeat (see the
        module doc; a repeated create at worst leaves an unused session behind)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry.max_elapsed_s
        payload = None if body is None else encode_body(body, self.transport == "msgpack")[0]
        attempt = 0
        while True:
            try:
                return await self._send(
                    method, path, payload, params, timeout_s or self.timeout_s, headers
                )
            except (ApiError, aiohttp.ClientError, TimeoutError) as exc:
                delay_s = _retry_after_s(exc) or self.retry.backoff_s(attempt)
                attempt += 1
                if (
                    not _is_transient(exc)
                    or attempt >= self.retry.max_attempts
                    or loop.time() + delay_s > deadline
                ):
                    if isinstance(exc, ApiError):
                        raise
                    raise TransportError(
                        f"{method} {self.url}{path} failed after {attempt} attempt(s): "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                await asyncio.sleep(delay_s)

    async def _send(
        self,
        method: str,
        path: str,
        payload: bytes | None,
        params: Query | None,
        timeout_s: float,
        headers: Mapping[str, str] | None,
    ) -> Any:
        async with self._session().request(
            method,
            self.url + path,
            # A file object, not bytes: aiohttp warns that a large bytes body blocks the loop.
            data=None if payload is None else io.BytesIO(payload),
            params=params,
            headers={**self._headers(payload is not None), **(headers or {})},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            raw = await response.read()
            content_type = response.headers.get("Content-Type")
            retry_after = response.headers.get("Retry-After")
            status = response.status
        if status >= 400:
            try:
                error_body = decode_body(raw, content_type) if raw else None
            except DecodeBodyError:
                error_body = {"error": raw[:_ERROR_TEXT_CHARS].decode(errors="replace")}
            error = error_from_body(status, error_body)
            if retry_after is not None:
                error.headers["Retry-After"] = retry_after
            raise error
        if status == 204 or not raw:
            return None
        try:
            return decode_body(raw, content_type)
        except DecodeBodyError as exc:
            raise MalformedResponse(f"{method} {path} answered {status} with {exc}") from exc


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiError):
        return exc.status_code in _RETRY_STATUSES
    return isinstance(exc, aiohttp.ClientError | TimeoutError)


def _retry_after_s(exc: BaseException) -> float | None:
    if not isinstance(exc, ApiError):
        return None
    try:
        return max(0.0, float(exc.headers.get("Retry-After", "")))
    except ValueError:
        return None


async def _as_async(
    chunks: Iterable[bytes] | AsyncIterable[bytes],
) -> AsyncGenerator[bytes, None]:
    if isinstance(chunks, AsyncIterable):
        async for chunk in chunks:
            yield chunk
    else:
        for chunk in chunks:
            yield chunk


T = TypeVar("T")


def _parsed(kind: type[T], body: Any) -> T:
    try:
        return from_wire(kind, body)
    except ValueError as exc:
        raise MalformedResponse(f"expected {kind.__name__}, got {str(body)[:200]}") from exc


def _refs(body: Any) -> SessionRefs:
    return _parsed(SessionRefs, body)


def _event_query(params: EventParams) -> list[tuple[str, str]]:
    """Rule overrides as query parameters; a per-tag value is written ``Tag:value`` (the value
    follows the last colon, so tag names may hold colons and commas)."""
    query = [
        (name, str(value))
        for name, value in (
            ("threshold", params.threshold),
            ("merge_window_ms", params.merge_window_ms),
            ("min_duration_ms", params.min_duration_ms),
            ("boundary", params.boundary),
        )
        if value is not None
    ]
    for name, per_tag in (
        ("tag_threshold", params.tag_threshold),
        ("tag_merge_window_ms", params.tag_merge_window_ms),
        ("tag_min_duration_ms", params.tag_min_duration_ms),
    ):
        query += [(name, f"{tag}:{value}") for tag, value in per_tag.items()]
    return query


def _window(item: Any) -> Window:
    return _parsed(SenseEvent, item)


def _status(body: Any) -> SessionStatus:
    return _parsed(SessionStatus, body)
