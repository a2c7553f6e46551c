"""The session lifecycle beyond the happy path: total_size, errors, inactivity, /results."""

from __future__ import annotations

import asyncio
import gc
import io
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import soundfile as sf
from aiohttp import web
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from server.store import Store
from tests.conftest import RAW_S16, SAMPLE_RATE_HZ, Api, s16, tone


async def test_total_size_makes_the_session_readonly(api: Api) -> None:
    audio = s16(tone(440, 2.0))
    session_id = (await api.create(type="file", content_type=RAW_S16, total_size=len(audio)))[
        "session_id"
    ]
    await api.put(session_id, 0, audio[: len(audio) // 2])
    assert (await api.status(session_id))["state"] == "writable"
    await api.put(session_id, 1, audio[len(audio) // 2 :])
    results = await api.all_results(session_id)  # no PATCH needed: inference starts by itself
    assert len(results) == 4
    assert (await api.status(session_id))["state"] == "readonly"


async def test_undecodable_file_becomes_readonly_with_an_error(api: Api) -> None:
    session_id = (await api.create(type="file", content_type="audio/wav"))["session_id"]
    await api.put(session_id, 0, b"this is not a wav file at all" * 100)
    await api.readonly(session_id)
    for _ in range(100):
        status = await api.status(session_id)
        if "error" in status:
            break
        await asyncio.sleep(0.05)
    assert status["state"] == "readonly"
    assert "wav" in status["error"].lower() or "WAV" in status["error"]
    assert "next_token" not in status["inference"]["page"]
    results = await api.client.get(f"/api/v1/audio_sessions/{session_id}/results")
    body = await results.json()
    assert body["state"] == "error" and body["error"] == status["error"]


MU_LAW_WAV = (
    b"RIFF"
    + struct.pack("<I", 40)
    + b"WAVE"
    + b"fmt "
    + struct.pack("<I", 16)
    + struct.pack("<HHIIHH", 7, 1, 8000, 8000, 1, 8)
    + b"data"
    + struct.pack("<I", 4)
    + b"\x7f" * 4
)


async def test_stream_error_keeps_earlier_results(api: Api) -> None:
    buffer = io.BytesIO()
    sf.write(buffer, tone(440, 1.5), SAMPLE_RATE_HZ, format="WAV", subtype="PCM_16")
    session_id = (await api.create(type="stream", content_type="audio/wav"))["session_id"]
    await api.put(session_id, 0, buffer.getvalue())
    await api.status(session_id, offset=1)  # long-polls until both complete windows are in
    first = await api.status(session_id)
    assert len(first["inference"]["results"]) == 2
    await api.put(session_id, 1, MU_LAW_WAV)  # a WAV the server cannot decode
    results = await api.all_results(session_id)
    status = await api.status(session_id)
    assert status["state"] == "readonly" and "not supported" in status["error"]
    assert results == first["inference"]["results"]
    response = await api.client.put(
        f"/api/v1/audio_sessions/{session_id}/chunks/2", json={"data": ""}
    )
    assert response.status == 403


async def test_inactive_sessions_are_deleted(
    aiohttp_client: Callable[..., Any], settings: Settings, api_key: str
) -> None:
    client: TestClient = await aiohttp_client(
        create_app(settings.replace(inactivity_timeout_s=0.4))
    )
    api = Api(client, api_key)
    idle = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    busy = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    chunk = s16(tone(440, 0.5))
    for seq in range(8):
        await api.put(busy, seq, chunk)
        await asyncio.sleep(0.1)
    assert (await client.get(f"/api/v1/audio_sessions/{idle}/status")).status == 404
    assert (await client.get(f"/api/v1/audio_sessions/{busy}/status")).status == 200


async def test_results_endpoint_for_newer_clients(api: Api) -> None:
    session_id = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    body = await (await api.client.get(f"/api/v1/audio_sessions/{session_id}/results")).json()
    assert body == {"state": "pending", "data": [], "has_more": True}
    audio = s16(tone(440, 2.0))
    for seq in range(4):
        await api.put(session_id, seq, audio[seq * 16000 : (seq + 1) * 16000])
    await api.readonly(session_id)
    await api.all_results(session_id)
    body = await (
        await api.client.get(f"/api/v1/audio_sessions/{session_id}/results", params={"limit": "2"})
    ).json()
    assert body["state"] == "done" and len(body["data"]) == 2 and body["has_more"] is True
    body = await (
        await api.client.get(f"/api/v1/audio_sessions/{session_id}/results", params={"offset": "2"})
    ).json()
    assert len(body["data"]) == 2 and body["has_more"] is False


async def test_status_long_poll_waits_for_the_next_window(api: Api) -> None:
    session_id = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    audio = s16(np.zeros(SAMPLE_RATE_HZ * 2, dtype=np.float32))
    await api.put(session_id, 0, audio[:16000])
    waiting = asyncio.create_task(api.status(session_id, offset=0))
    await asyncio.sleep(0.3)
    assert not waiting.done()  # a live stream with nothing to show yet: the reader waits
    await api.put(session_id, 1, audio[16000:32000])
    page = await asyncio.wait_for(waiting, 5)
    assert len(page["inference"]["results"]) == 1


async def test_consumed_stream_audio_is_deleted(api: Api, settings: Settings) -> None:
    session_id = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    audio = s16(tone(440, 10.0))
    for seq in range(20):
        await api.put(session_id, seq, audio[seq * 16000 : (seq + 1) * 16000])
    await api.status(session_id, offset=18)  # wait for the 19th window
    await asyncio.sleep(0.2)
    store = Store(settings.db_path, fsync=False)  # a second reader, as an operator would look
    try:
        assert store.kept_audio_chunks(session_id) < 20 - 8  # what the next window needs
    finally:
        store.close()
    await api.readonly(session_id)
    await api.all_results(session_id)
    # All gone soon after inference is over (the deletion runs behind the last result).
    deadline = asyncio.get_running_loop().time() + 5.0
    while True:
        store = Store(settings.db_path, fsync=False)
        try:
            kept = store.kept_audio_chunks(session_id)
        finally:
            store.close()
        if kept == 0 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    assert kept == 0


async def test_prefer_wait_0_answers_at_once(api: Api) -> None:
    session_id = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    started = asyncio.get_running_loop().time()
    page = await api.status(session_id, headers={"Prefer": "wait=0"})
    assert page["inference"]["results"] == []
    assert asyncio.get_running_loop().time() - started < 2.0  # the long-poll would take 5 s


async def test_a_waiting_reader_does_not_block_the_server(api: Api) -> None:
    """Regression: a status read on a stream that had no chunk yet spun the event loop for the
    whole long-poll, freezing every other request."""
    session_id = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    waiting = asyncio.create_task(api.status(session_id))
    await asyncio.sleep(0.1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await api.client.get("/healthz")).status == 200
    assert loop.time() - started < 1.0
    assert not waiting.done()
    waiting.cancel()


async def test_start_up_heap_is_kept_out_of_collections_while_serving(
    settings: Settings, api_key: str
) -> None:
    """A full garbage collection stalls every thread; what start-up built is frozen so that
    collections while serving walk only what was made since, and thawed at shutdown so that
    a process that starts many apps (this suite) can still collect it."""
    runner = web.AppRunner(create_app(settings), handle_signals=False)
    await runner.setup()
    try:
        assert gc.get_freeze_count() > 10_000  # modules, the model session, labels, routes
    finally:
        await runner.cleanup()
    assert gc.get_freeze_count() == 0
