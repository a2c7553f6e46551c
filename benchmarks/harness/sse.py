"""A text/event-stream reader for the benchmark: messages as the WHATWG rules cut them, each
stamped when its closing blank line arrives (the moment a browser's EventSource would fire)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

__all__ = ["SseMessage", "sse_messages"]


@dataclass(frozen=True)
class SseMessage:
    """One dispatched message (``event`` defaults to "message"), or one comment line
    (``comment`` set, the rest empty); ``received_at`` is ``time.perf_counter()``."""

    received_at: float
    event: str = ""
    data: str = ""
    id: str | None = None
    retry_ms: int | None = None
    comment: str | None = None


async def sse_messages(response: aiohttp.ClientResponse) -> AsyncIterator[SseMessage]:
    """Parse ``response``'s body until it ends. A message with no data is not dispatched
    (as the standard says); ``retry:`` alone yields a message with only ``retry_ms``."""
    event, data, last_id, retry_ms = "", list[str](), None, None
    async for raw in response.content:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield SseMessage(
                    time.perf_counter(), event or "message", "\n".join(data), last_id, retry_ms
                )
            elif retry_ms is not None:
                yield SseMessage(time.perf_counter(), retry_ms=retry_ms)
            event, data, retry_ms = "", [], None
            continue
        if line.startswith(":"):
            yield SseMessage(time.perf_counter(), comment=line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            last_id = value
        elif name == "retry" and value.isdigit():
            retry_ms = int(value)
