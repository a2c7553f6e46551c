"""Events over HTTP with the real model: the session's event log, paging, per-request rules,
and the live Server-Sent Events feed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from tests.conftest import RAW_S16, SAMPLE_RATE_HZ, Api, s16

HALF_SECOND = SAMPLE_RATE_HZ // 2
LEAD_S = 2.0


def scene(speech: np.ndarray) -> np.ndarray:
    """Silence, speech, a long silence, the speech's first four seconds, silence."""
    quiet = np.zeros(int(LEAD_S * SAMPLE_RATE_HZ), dtype=np.float32)
    gap = np.zeros(3 * SAMPLE_RATE_HZ, dtype=np.float32)
    return np.concatenate([quiet, speech, gap, speech[: 4 * SAMPLE_RATE_HZ], quiet])


async def events(api: Api, session_id: str, expect: int = 200, **params: Any) -> dict[str, Any]:
    headers = params.pop("headers", None)
    response = await api.client.get(
        f"/api/v1/audio_sessions/{session_id}/events", params=params, headers=headers
    )
    payload = await response.json()
    assert response.status == expect, payload
    return payload  # type: ignore[no-any-return]


async def walk(api: Api, session_id: str, **params: Any) -> list[dict[str, Any]]:
    """Follow next_token to the end of a finished session's log."""
    out: list[dict[str, Any]] = []
    page = await events(api, session_id, **params)
    while True:
        out.extend(page["events"])
        token = page["page"].get("next_token")
        if token is None:
            return out
        page = await events(api, session_id, next_token=token)


async def stream(api: Api, samples: np.ndarray, **create: Any) -> str:
    created = await api.create(type="stream", content_type=RAW_S16, **create)
    session_id = created["session_id"]
    data = s16(samples)
    for seq, start in enumerate(range(0, len(data), HALF_SECOND * 2)):
        await api.put(session_id, seq, data[start : start + HALF_SECOND * 2])
    await api.readonly(session_id)
    return session_id


def check_log(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The log's invariants; returns its closed entries."""
    seen: dict[int, str] = {}
    for entry in log:
        previous = seen.get(entry["id"])
        # an event is listed open at most once, closed exactly once, never open after closed
        assert previous in (None, "open") and (previous, entry["state"]) != ("open", "open"), log
        if previous == "open":
            opened = next(e for e in log if e["id"] == entry["id"])
            assert entry["start_time"] == opened["start_time"]
            assert entry["end_time"] >= opened["end_time"]
            assert entry["confidence"] >= opened["confidence"]
        seen[entry["id"]] = entry["state"]
        # an open entry's end is where the event is known to reach so far: at least its start
        assert entry["start_time"] < entry["end_time"] or entry["state"] == "open"
        assert entry["start_time"] <= entry["end_time"]
    assert set(seen.values()) <= {"closed"}, "every event is closed once the session is finished"
    assert sorted(seen) == list(range(len(seen))), "ids are 0, 1, 2, ..."
    return [entry for entry in log if entry["state"] == "closed"]


async def test_speech_scene_gives_speech_events_walked_exactly_once(
    api: Api, speech_16k: np.ndarray
) -> None:
    session_id = await stream(api, scene(speech_16k))
    log = await walk(api, session_id, count=1)
    closed = check_log(log)
    speech = [e for e in closed if e["tag"] == "Speech"]
    assert speech, closed
    assert abs(speech[0]["start_time"] - LEAD_S) <= 0.5, speech
    speech_end_s = LEAD_S + len(speech_16k) / SAMPLE_RATE_HZ
    assert any(abs(e["end_time"] - speech_end_s) <= 1.0 for e in speech), speech
    assert max(e["confidence"] for e in speech) > 0.5
    # the closed-only view lists the same events, in the order they closed
    assert await walk(api, session_id, state="closed", count=2) == closed
    page = await events(api, session_id, state="closed")
    assert page["page"]["total"] == len(closed)
    assert page["in_progress"] is False and page["state"] == "readonly"
    assert "next_token" not in page["page"] or len(closed) > 32


async def test_live_log_equals_the_log_derived_from_stored_windows(
    api: Api, speech_16k: np.ndarray
) -> None:
    """The engine's incremental log (chunk by chunk) and a request's own parameters (derived
    from the stored windows at once) agree when the parameters are the session's."""
    session_id = await stream(api, scene(speech_16k))
    live = await walk(api, session_id)
    derived = await walk(api, session_id, merge_window_ms=500)  # the default, spelled out
    assert live == derived
    assert live


async def test_request_parameters_change_the_events(api: Api, speech_16k: np.ndarray) -> None:
    session_id = await stream(api, scene(speech_16k))
    default = check_log(await walk(api, session_id))
    assert await walk(api, session_id, min_duration_ms=60_000) == []
    strict = check_log(await walk(api, session_id, threshold=0.999))
    assert all(e["confidence"] >= 0.999 for e in strict)

    def covered_s(log: list[dict[str, Any]]) -> float:
        return sum(e["end_time"] - e["start_time"] for e in log)

    assert covered_s(strict) < covered_s(default) / 2
    merged = check_log(await walk(api, session_id, tag_merge_window_ms="Speech:5000"))
    speech_default = [e for e in default if e["tag"] == "Speech"]
    speech_merged = [e for e in merged if e["tag"] == "Speech"]
    assert len(speech_merged) == 1 < len(speech_default), (speech_merged, speech_default)
    naive = check_log(await walk(api, session_id, boundary="naive"))
    assert all(round(e["start_time"] * 2, 6) % 1 == 0 for e in naive), "naive edges sit on hops"


async def test_session_parameters_set_the_log(api: Api, speech_16k: np.ndarray) -> None:
    session_id = await stream(api, scene(speech_16k), events={"min_duration_ms": 60_000})
    assert await walk(api, session_id) == []
    # a request's own parameters still derive events from the stored windows
    assert await walk(api, session_id, min_duration_ms=0)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"events": {"tag_threshold": {"Barking cat": 0.5}}}, "unknown tag 'Barking cat'"),
        ({"events": {"threshold": 1.5}}, "threshold must be a number between 0 and 1"),
        ({"events": {"merge_window_ms": -1}}, "merge_window_ms must be between 0"),
        ({"events": {"boundary": "fuzzy"}}, "boundary must be 'refined' or 'naive'"),
        ({"events": []}, "events must be an object"),
    ],
)
async def test_bad_session_event_parameters_are_400(
    api: Api, body: dict[str, Any], message: str
) -> None:
    payload = await api.create(expect=400, type="stream", content_type=RAW_S16, **body)
    assert message in json.dumps(payload), payload


async def test_bad_event_queries_are_400(api: Api, other_key: str) -> None:
    session_id = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    for params, message in [
        ({"state": "half"}, "state must be 'open' or 'closed'"),
        ({"threshold": "high"}, "threshold must be a number"),
        ({"min_duration_ms": "1.5"}, "min_duration_ms must be an integer"),
        ({"tag_threshold": "Dog"}, "tag_threshold must be written tag:value"),
        ({"tag_threshold": "Unicorn:0.4"}, "unknown tag 'Unicorn'"),
        ({"count": "0"}, "count must be between 1 and 1024"),
        ({"next_token": "garbage"}, "next_token is malformed"),
    ]:
        payload = await events(api, session_id, expect=400, headers={"Prefer": "wait=0"}, **params)
        assert message in payload["error"], (params, payload)
    status_token = (await api.status(session_id, headers={"Prefer": "wait=0"}))["inference"][
        "page"
    ]["next_token"]
    payload = await events(
        api, session_id, expect=400, next_token=status_token, headers={"Prefer": "wait=0"}
    )
    assert "issued for this session's status" in payload["error"]
    token = (await events(api, session_id, threshold=0.3, headers={"Prefer": "wait=0"}))["page"][
        "next_token"
    ]
    payload = await events(
        api, session_id, expect=400, next_token=token, threshold=0.4, headers={"Prefer": "wait=0"}
    )
    assert "differ from those next_token was issued for" in payload["error"]
    # the token alone carries on with its parameters
    page = await events(api, session_id, next_token=token, headers={"Prefer": "wait=0"})
    assert page["page"]["offset"] == 0
    # another team's key: the session does not exist for it
    response = await api.client.get(
        f"/api/v1/audio_sessions/{session_id}/events", headers={"x-api-key": other_key}
    )
    assert response.status == 404
    response = await api.client.get(
        f"/api/v1/audio_sessions/{session_id}/sse", headers={"x-api-key": other_key}
    )
    assert response.status == 404


async def test_live_stream_reports_an_event_open_before_it_closes(
    api: Api, speech_16k: np.ndarray
) -> None:
    created = await api.create(type="stream", content_type=RAW_S16)
    session_id = created["session_id"]
    data = s16(
        np.concatenate(
            [np.zeros(SAMPLE_RATE_HZ, dtype=np.float32), speech_16k[: 5 * SAMPLE_RATE_HZ]]
        )
    )
    for seq, start in enumerate(range(0, len(data), HALF_SECOND * 2)):
        await api.put(session_id, seq, data[start : start + HALF_SECOND * 2])
    # still writable, speech still going on: the event is open
    page = await events(api, session_id)
    while not any(e["tag"] == "Speech" for e in page["events"]):
        page = await events(api, session_id, next_token=page["page"]["next_token"])
    opened = next(e for e in page["events"] if e["tag"] == "Speech")
    assert opened["state"] == "open" and page["in_progress"] is True
    token = page["page"]["next_token"]
    await api.readonly(session_id)
    rest = await walk(api, session_id, next_token=token)
    closing = [e for e in rest if e["id"] == opened["id"]]
    assert [e["state"] for e in closing] == ["closed"]
    assert closing[0]["start_time"] == opened["start_time"]


async def test_file_session_events(api: Api, speech_16k: np.ndarray) -> None:
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    pcm = np.frombuffer(s16(scene(speech_16k)), dtype="<i2")  # the very samples streamed below
    sf.write(buffer, pcm, SAMPLE_RATE_HZ, format="WAV", subtype="PCM_16")
    wav = buffer.getvalue()
    created = await api.create(type="file", content_type="audio/wav", total_size=len(wav))
    session_id = created["session_id"]
    await api.put(session_id, 0, wav)
    closed = check_log(await walk(api, session_id))
    assert any(e["tag"] == "Speech" for e in closed)
    assert await walk(api, session_id, state="closed") == closed
    # the same audio streamed gives the same events
    streamed = await stream(api, scene(speech_16k))
    assert check_log(await walk(api, streamed)) == closed


# -- Server-Sent Events ---------------------------------------------------------------------


async def sse_messages(
    client: TestClient, session_id: str, last_event_id: str | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Parse a text/event-stream response into messages: {event, id, data} or {comment}."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    response = await client.get(f"/api/v1/audio_sessions/{session_id}/sse", headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    message: dict[str, Any] = {}
    try:
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if not line:
                if message:
                    yield message
                message = {}
            elif line.startswith(":"):
                yield {"comment": line[1:].strip()}
            else:
                name, _, value = line.partition(": ")
                message[name] = json.loads(value) if name == "data" else value
    finally:
        response.close()


async def collect(
    client: TestClient, session_id: str, last_event_id: str | None = None, stop_after: int = 10**9
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async for message in sse_messages(client, session_id, last_event_id):
        if "comment" in message or "retry" in message:
            continue
        out.append(message)
        if message["event"] == "end" or len(out) >= stop_after:
            break
    return out


async def test_sse_carries_windows_and_events_and_resumes_exactly(
    api: Api, speech_16k: np.ndarray
) -> None:
    created = await api.create(type="stream", content_type=RAW_S16)
    session_id = created["session_id"]
    reader = asyncio.create_task(collect(api.client, session_id))
    data = s16(scene(speech_16k))
    for seq, start in enumerate(range(0, len(data), HALF_SECOND * 2)):
        await api.put(session_id, seq, data[start : start + HALF_SECOND * 2])
    await api.readonly(session_id)
    messages = await asyncio.wait_for(reader, 60)
    assert messages[-1]["event"] == "end" and messages[-1]["data"] == {"state": "readonly"}
    windows = [m["data"] for m in messages if m["event"] == "window"]
    stored = await api.all_results(session_id)
    assert [w["index"] for w in windows] == list(range(len(stored)))
    assert [{k: w[k] for k in ("start_time", "end_time", "tags")} for w in windows] == stored
    log = [m["data"] for m in messages if m["event"] in ("open", "closed")]
    assert log == await walk(api, session_id)
    assert all(
        m["event"] == m["data"]["state"] for m in messages if m["event"] in ("open", "closed")
    )
    ids = [m["id"] for m in messages if "id" in m]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("."))))
    # reconnecting after any message gives exactly what followed it
    for cut in (0, len(messages) // 3, len(messages) - 2):
        resumed = await collect(api.client, session_id, messages[cut]["id"])
        assert resumed == messages[cut + 1 :], cut


@pytest.fixture
def quick_heartbeats(settings: Settings) -> Settings:
    return settings.replace(sse_heartbeat_s=0.2)


async def test_sse_heartbeats_and_end_on_delete(
    aiohttp_client: Callable[..., Any], quick_heartbeats: Settings, api_key: str
) -> None:
    client = await aiohttp_client(create_app(quick_heartbeats))
    api = Api(client, api_key)
    session_id = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    seen: list[dict[str, Any]] = []

    async def read() -> None:
        async for message in sse_messages(client, session_id):
            seen.append(message)
            if message.get("event") == "end":
                return

    reader = asyncio.create_task(read())
    while sum("comment" in m for m in seen) < 2:
        await asyncio.sleep(0.05)
    response = await client.delete(f"/api/v1/audio_sessions/{session_id}")
    assert response.status == 204
    await asyncio.wait_for(reader, 10)
    assert seen[-1]["event"] == "end" and seen[-1]["data"] == {"state": "deleted"}


async def test_sse_rejects_a_malformed_last_event_id(api: Api) -> None:
    session_id = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    response = await api.client.get(
        f"/api/v1/audio_sessions/{session_id}/sse", headers={"Last-Event-ID": "yesterday"}
    )
    assert response.status == 400
    assert "Last-Event-ID" in (await response.json())["error"]


async def test_sse_feeds_never_miss_the_end(
    aiohttp_client: Callable[..., Any], settings: Settings, api_key: str
) -> None:
    """No heartbeat would rescue a feed that missed its session's last change (the heartbeat
    is an hour here): every feed of many short streams, ended together, must see its end."""
    client = await aiohttp_client(create_app(settings.replace(sse_heartbeat_s=3600.0)))
    api = Api(client, api_key)
    sessions = [
        (await api.create(type="stream", content_type=RAW_S16))["session_id"] for _ in range(40)
    ]
    readers = [asyncio.create_task(collect(client, sid)) for sid in sessions]
    chunk = s16(np.zeros(HALF_SECOND, dtype=np.float32) + 0.01)
    for seq in range(3):
        await asyncio.gather(*(api.put(sid, seq, chunk) for sid in sessions))
    await asyncio.gather(*(api.readonly(sid) for sid in sessions))
    done = await asyncio.wait_for(asyncio.gather(*readers), 60)
    assert all(messages[-1]["event"] == "end" for messages in done)
    assert all(sum(m["event"] == "window" for m in messages) == 3 for messages in done)
