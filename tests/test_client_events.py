"""The client's reading of the event log: ``events`` (one page) and ``iter_events`` (the walk).

What goes on the wire (query parameters, the long-poll preference) is checked against a small
recording endpoint; what comes back, against the real server with the real model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from multidict import MultiDict

from protocol.client import MalformedResponse, SessionFailed, Transport, TympanClient
from protocol.events import EventParams, EventsPage, EventsPageInfo, SoundEvent
from protocol.sync_client import SyncTympanClient
from server.app import create_app
from server.config import Settings
from tests.conftest import RAW_S16, SAMPLE_RATE_HZ, s16

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
        "S",
        "readonly",
        True,
        EventsPageInfo(0, 1, 1, "T1"),
        (SoundEvent(0, "Dog", 0.0, 1.0, 0.9, "closed"),),
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
    assert log.queries[0]["threshold"] == "0.5"
    assert [len(q) for q in log.queries[1:]] == [1, 1], "the token alone carries the rule on"


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


# -- against the real server -----------------------------------------------------------------

GAP_S = 3.0
HOP_S = 0.5


def two_utterances(speech: np.ndarray) -> bytes:
    """Silence, speech, a gap, the speech's first four seconds, silence: Speech events at
    least twice (espeak's own pauses may part more), which a merge window longer than the gap
    joins into one."""
    quiet = np.zeros(SAMPLE_RATE_HZ, dtype=np.float32)
    gap = np.zeros(int(GAP_S * SAMPLE_RATE_HZ), dtype=np.float32)
    return s16(np.concatenate([quiet, speech, gap, speech[: 4 * SAMPLE_RATE_HZ], quiet]))


@pytest.fixture
async def finished_stream(
    aiohttp_server: ServerFactory, settings: Settings, api_key: str, speech_16k: np.ndarray
) -> tuple[str, str, str]:
    """A stream of the two utterances, sent and made readonly: (url, key, session id)."""
    url = await serve_app(aiohttp_server, settings)
    data = two_utterances(speech_16k)
    chunks = [data[i : i + SAMPLE_RATE_HZ] for i in range(0, len(data), SAMPLE_RATE_HZ)]
    async with TympanClient(url, api_key) as client:
        handle = await client.create_session("stream", RAW_S16)
        await client.upload(handle.session_id, chunks)
        await client.make_readonly(handle.session_id)
    return url, api_key, handle.session_id


async def serve_app(aiohttp_server: ServerFactory, settings: Settings) -> str:
    server = await aiohttp_server(create_app(settings))
    return str(server.make_url("")).rstrip("/")


def speech_events(events: list[SoundEvent]) -> list[SoundEvent]:
    return [event for event in events if event.tag == "Speech"]


@pytest.mark.parametrize("transport", ["json", "msgpack"])
async def test_iter_events_reads_each_entry_of_a_real_log_once(
    finished_stream: tuple[str, str, str], transport: Transport
) -> None:
    url, key, session_id = finished_stream
    async with TympanClient(url, key, transport=transport) as client:
        log = [event async for event in client.iter_events(session_id, page_size=3)]
        closed = [e async for e in client.iter_events(session_id, state="closed", page_size=2)]
        page = await client.events(session_id, state="closed", count=1000, wait=False)
    assert closed == [event for event in log if event.state == "closed"]
    assert [event.id for event in closed] == list(range(len(closed))), "each event closes once"
    assert list(page.events) == closed
    assert page.next_token is None and not page.in_progress and page.total == len(closed)
    assert len(speech_events(closed)) >= 2, closed
    for entry in log:
        if entry.state == "open":
            final = closed[entry.id]
            assert (final.tag, final.start_time) == (entry.tag, entry.start_time)
            assert final.end_time >= entry.end_time


async def test_rule_overrides_apply_to_the_whole_walk(
    finished_stream: tuple[str, str, str],
) -> None:
    url, key, session_id = finished_stream
    async with TympanClient(url, key) as client:
        merged = [
            event
            async for event in client.iter_events(
                session_id,
                state="closed",
                page_size=1,  # a token per entry: the rule must ride along with it
                params=EventParams(tag_merge_window_ms={"Speech": int(2 * GAP_S * 1000)}),
            )
        ]
        naive = [
            event
            async for event in client.iter_events(
                session_id, state="closed", params=EventParams(boundary="naive")
            )
        ]
    assert len(speech_events(merged)) == 1
    for event in naive:
        assert event.start_time / HOP_S == pytest.approx(round(event.start_time / HOP_S))


async def test_the_log_grows_while_a_stream_is_live(
    aiohttp_server: ServerFactory, settings: Settings, api_key: str, speech_16k: np.ndarray
) -> None:
    url = await serve_app(aiohttp_server, settings)
    data = two_utterances(speech_16k)
    chunks = [data[i : i + SAMPLE_RATE_HZ] for i in range(0, len(data), SAMPLE_RATE_HZ)]
    async with TympanClient(url, api_key) as client:
        handle = await client.create_session("stream", RAW_S16)

        async def send() -> None:
            await client.upload(handle.session_id, chunks)
            await client.make_readonly(handle.session_id)

        sender = asyncio.create_task(send())
        log = [event async for event in client.iter_events(handle.session_id, page_size=2)]
        await sender
    closed = [event for event in log if event.state == "closed"]
    assert [event.id for event in closed] == list(range(len(closed)))
    assert len(speech_events(closed)) >= 2


async def test_sync_client_mirrors_the_event_reads(
    finished_stream: tuple[str, str, str],
) -> None:
    url, key, session_id = finished_stream

    def read() -> tuple[list[SoundEvent], EventsPage, SoundEvent]:
        # In a thread: the server runs on this test's loop, which must keep running.
        with SyncTympanClient(url, key) as client:
            closed = list(client.iter_events(session_id, state="closed"))
            page = client.events(session_id, state="closed", count=1, wait=False)
            walk = client.iter_events(session_id, state="closed", page_size=1)
            first = next(walk)
            walk.close()
        return closed, page, first

    closed, page, first = await asyncio.to_thread(read)
    assert closed[0] == page.events[0] == first
    assert page.total == len(closed) and page.next_token is not None
