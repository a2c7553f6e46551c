"""A blocking facade over ``TympanClient`` for scripts and notebooks.

The async client runs on a private event loop in a daemon thread, so this works from any thread,
including one that already runs an event loop of its own; each call blocks until its coroutine
finishes on that loop.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterable
from types import TracebackType
from typing import Any, TypeVar

from protocol.client import DEFAULT_URL, SessionHandle, Transport, TympanClient, Window
from protocol.events import EventsPage, SoundEvent
from protocol.messages import AudioType, SessionRefs, SessionStatus

__all__ = ["SyncTympanClient"]

T = TypeVar("T")


class SyncTympanClient:
    """``with SyncTympanClient(url, api_key) as client:``; same methods as ``TympanClient``."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        transport: Transport = "json",
        **options: Any,
    ) -> None:
        self._client = TympanClient(url, api_key, transport=transport, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tympan-client-loop", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> SyncTympanClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._client.close())
        self._run(self._loop.shutdown_asyncgens())  # results walks left open
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _run(self, awaitable: Awaitable[T]) -> T:
        if self._loop.is_closed():
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            raise RuntimeError("the client is closed")

        async def run() -> T:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    def create_session(
        self, audio_type: AudioType | str, content_type: str, **options: Any
    ) -> SessionHandle:
        return self._run(self._client.create_session(audio_type, content_type, **options))

    def upload_chunk(self, session_id: str, seq: int, data: bytes) -> SessionRefs:
        return self._run(self._client.upload_chunk(session_id, seq, data))

    def upload(
        self,
        session_id: str,
        chunks: Iterable[bytes],
        start_seq: int = 0,
        *,
        on_chunk: Callable[[int], None] | None = None,
    ) -> SessionRefs:
        """``chunks`` is consumed on the client's loop thread."""
        return self._run(self._client.upload(session_id, chunks, start_seq, on_chunk=on_chunk))

    def make_readonly(self, session_id: str) -> None:
        self._run(self._client.make_readonly(session_id))

    def delete(self, session_id: str, *, missing_ok: bool = False) -> None:
        self._run(self._client.delete(session_id, missing_ok=missing_ok))

    def status(self, session_id: str, **page: Any) -> SessionStatus:
        return self._run(self._client.status(session_id, **page))

    def results(self, session_id: str, **options: Any) -> Generator[Window, None, None]:
        """A generator over ``TympanClient.results``; closing it stops the walk."""
        return self._walk(self._client.results(session_id, **options))

    def events(self, session_id: str, **page: Any) -> EventsPage:
        return self._run(self._client.events(session_id, **page))

    def iter_events(self, session_id: str, **options: Any) -> Generator[SoundEvent, None, None]:
        """A generator over ``TympanClient.iter_events``; closing it stops the walk."""
        return self._walk(self._client.iter_events(session_id, **options))

    def _walk(self, items: AsyncGenerator[T, None]) -> Generator[T, None, None]:
        try:
            while (item := self._run(anext(items, None))) is not None:
                yield item
        finally:
            if not self._loop.is_closed():
                self._run(items.aclose())
