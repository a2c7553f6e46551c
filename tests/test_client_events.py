"""The client's reading of the event log: ``events`` (one page) and ``iter_events`` (the walk).

What goes on the wire (query parameters, the long-poll preference) is checked against a small
recording endpoint; what comes back, against the real server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from multidict import MultiDict

from protocol.client import MalformedResponse, SessionFailed, TympanClient
from protocol.events import EventParams, EventsPage, SoundEvent

ServerFactory = Callable[..., Any]


def entry(id: int, state: str = "closed", tag: str = "Dog") -> dict[str, Any]:
    return {
        "id": id,
        "tag": tag,
        "start_time": 0.5 * id,
        "end_time": 0.5 * id + 1.0,
        "confidence": 0.9,
        "state": state,
    }


class EventLog:
    """``GET .../events`` answering a fixed script of pages, recording every request."""

    def __init__(self, pages: list[dict[str, Any]]) -> None:
        self.pages = pages
        self.queries: list[MultiDict[str]] = []
        self.prefer: list[str | None] = []
        self.app = web.Application()
        self.app.router.add_get("/api/v1/audio_sessions/{session_id}/events", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        self.queries.append(MultiDict(request.query))
        self.prefer.append(request.headers.get("Prefer"))
        return web.json_response(self.pages[len(self.queries) - 1])


def page(
    events: list[dict[str, Any]], offset: int, token: str | None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "session_id": "S",
        "state": "readonly",
        "in_progress": token is not None,
        "page": {"offset": offset, "count": len(events), "total": offset + len(events)},
        "events": events,
        **extra,
    }
    if token is not None:
        body["page"]["next_token"] = token
    return body


async def serve(aiohttp_server: ServerFactory, log: EventLog) -> str:
    server = await aiohttp_server(log.app)
    return str(server.make_url("")).rstrip("/")


async def test_events_sends_filters_and_rule_overrides_as_query_parameters(
    aiohttp_server: ServerFactory,
) -> None:
    log = EventLog([page([entry(0)], 0, "T1")] * 2)
    url = await serve(aiohttp_server, log)
    params = EventParams(
        threshold=0.4,
        merge_window_ms=250,
        min_duration_ms=100,
        tag_threshold={"Dog": 0.3, "Speech: whispered": 0.6},
        tag_merge_window_ms={"Dog": 1000},
        tag_min_duration_ms={"Dog": 50},
        boundary="naive",
    )
    async with TympanClient(url, "key") as client:
        got = await client.events("S", offset=0, count=10, state="closed", params=params)
        await client.events("S", next_token="T1", wait=False)
    assert got == EventsPage(
        "S", "readonly", True, 0, 1, (SoundEvent(0, "Dog", 0.0, 1.0, 0.9, "closed"),), "T1"
    )
    first, second = log.queries
    assert sorted(first.items()) == sorted(
        [
            ("offset", "0"),
            ("count", "10"),
            ("state", "closed"),
            ("threshold", "0.4"),
            ("merge_window_ms", "250"),
            ("min_duration_ms", "100"),
            ("boundary", "naive"),
            ("tag_threshold", "Dog:0.3"),
            ("tag_threshold", "Speech: whispered:0.6"),
            ("tag_merge_window_ms", "Dog:1000"),
            ("tag_min_duration_ms", "Dog:50"),
        ]
    )
    assert list(second.items()) == [("next_token", "T1")]
    assert log.prefer == [None, "wait=0"]


async def test_iter_events_follows_next_token_until_it_is_absent(
    aiohttp_server: ServerFactory,
) -> None:
    log = EventLog(
        [
            page([entry(0, "open"), entry(1)], 0, "T1"),
            page([], 2, "T2"),  # nothing new yet: the walk goes on
            page([entry(0)], 2, None),
        ]
    )
    url = await serve(aiohttp_server, log)
    params = EventParams(threshold=0.5)
    async with TympanClient(url, "key") as client:
        entries = [e async for e in client.iter_events("S", page_size=2, params=params)]
    assert [(e.id, e.state) for e in entries] == [(0, "open"), (1, "closed"), (0, "closed")]
    assert [q.get("next_token") for q in log.queries] == [None, "T1", "T2"]
    assert log.queries[0]["count"] == "2"
    assert all(q["threshold"] == "0.5" for q in log.queries), "the rule holds for the whole walk"


async def test_a_failed_session_raises_after_its_entries(aiohttp_server: ServerFactory) -> None:
    log = EventLog([page([entry(0)], 0, None, error="cannot decode the audio")] * 2)
    url = await serve(aiohttp_server, log)
    async with TympanClient(url, "key") as client:
        seen: list[SoundEvent] = []
        with pytest.raises(SessionFailed, match="cannot decode"):
            async for event in client.iter_events("S", state="closed"):
                seen.append(event)
        assert [e.id for e in seen] == [0]
        assert [e.id async for e in client.iter_events("S", raise_on_error=False)] == [0]


async def test_a_malformed_page_is_reported_as_such(aiohttp_server: ServerFactory) -> None:
    log = EventLog([{"session_id": "S", "events": [entry(0, state="half-open")]}])
    url = await serve(aiohttp_server, log)
    async with TympanClient(url, "key") as client:
        with pytest.raises(MalformedResponse, match="EventsPage"):
            await client.events("S")
