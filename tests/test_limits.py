"""Limits against hostile or runaway clients, each with its status and a JSON error; metrics."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import numpy as np
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.appkeys import SERVICE
from server.config import Settings
from tests.conftest import RAW_S16, Api, s16, tone


async def make_api(
    aiohttp_client: Callable[..., Any], settings: Settings, key: str, **changes: Any
) -> Api:
    client: TestClient = await aiohttp_client(create_app(settings.replace(**changes)))
    return Api(client, key)


async def test_per_key_rate_limit_answers_429_with_retry_after(
    aiohttp_client, settings, api_key, other_key
) -> None:  # type: ignore[no-untyped-def]
    api = await make_api(
        aiohttp_client, settings, api_key, rate_limit_per_key=2.0, rate_limit_burst=3.0
    )
    session_id = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    statuses = []
    for _ in range(4):
        response = await api.client.get(
            f"/api/v1/audio_sessions/{session_id}/status", headers={"Prefer": "wait=0"}
        )
        statuses.append(response.status)
    assert statuses[-1] == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert (await response.json())["status_code"] == 429
    # another key has its own budget
    other = Api(api.client, other_key)
    await other.create(type="stream", content_type=RAW_S16)


async def test_open_sessions_per_key_are_capped(aiohttp_client, settings, api_key) -> None:  # type: ignore[no-untyped-def]
    api = await make_api(aiohttp_client, settings, api_key, max_sessions_per_key=2)
    first = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    await api.create(type="stream", content_type=RAW_S16)
    refused = await api.create(expect=429, type="stream", content_type=RAW_S16)
    assert "open sessions" in refused["error"]
    assert (await api.client.delete(f"/api/v1/audio_sessions/{first}")).status == 204
    await api.create(type="stream", content_type=RAW_S16)  # room again


async def test_json_size_and_depth_limits(client: TestClient, api_key: str) -> None:
    headers = {"x-api-key": api_key, "Content-Type": "application/json"}
    deep = (
        b'{"type": "stream", "content_type": "audio/wav", "metadata": '
        + b'{"a": ' * 40
        + b"1"
        + b"}" * 41
    )
    response = await client.post("/api/v1/audio_sessions/", data=deep, headers=headers)
    assert response.status == 400 and "nested" in (await response.json())["error"]
    very_deep = b"[" * 200_000 + b"]" * 200_000
    response = await client.post("/api/v1/audio_sessions/", data=very_deep, headers=headers)
    assert response.status in (400, 413)
    big = (
        b'{"type": "stream", "content_type": "audio/wav", "metadata": {"a": "'
        + b"x" * 100_000
        + b'"}}'
    )
    response = await client.post("/api/v1/audio_sessions/", data=big, headers=headers)
    assert response.status == 413 and (await response.json())["status_code"] == 413


async def test_slow_body_gets_408(aiohttp_client, settings, api_key) -> None:  # type: ignore[no-untyped-def]
    api = await make_api(aiohttp_client, settings, api_key, body_read_timeout_s=0.5)
    session_id = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    reader, writer = await asyncio.open_connection(api.client.host, api.client.port)
    body = b'{"data": "AAAA"}'
    writer.write(
        f"PUT /api/v1/audio_sessions/{session_id}/chunks/0 HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[:3]
    )
    await writer.drain()
    response = await asyncio.wait_for(reader.read(4096), 5)  # one byte never comes: 408
    writer.close()
    assert response.startswith(b"HTTP/1.1 408"), response
    assert b'"status_code":408' in response


async def test_session_total_size_limit(aiohttp_client, settings, api_key) -> None:  # type: ignore[no-untyped-def]
    api = await make_api(aiohttp_client, settings, api_key, max_session_bytes=40_000)
    session_id = (await api.create(type="file", content_type=RAW_S16))["session_id"]
    await api.put(session_id, 0, b"\0" * 30_000)
    refused = await api.put(session_id, 1, b"\0" * 20_000, expect=413)
    assert "maximum total size" in refused["error"]


async def test_overload_sheds_new_sessions(api: Api, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    engine = api.client.app[SERVICE]._engine
    monkeypatch.setattr(engine, "stream_lag_s", lambda: 7.2)  # live inference 7 s behind
    refused = await api.create(expect=429, type="stream", content_type=RAW_S16)
    assert "overloaded" in refused["error"]
    response = await api.client.post(
        "/api/v1/audio_sessions/",
        json={"type": "stream", "content_type": RAW_S16},
        headers={"x-api-key": api.key},
    )
    assert response.headers["Retry-After"] == "7"


async def test_cors_is_off_by_default_and_configurable(
    client, aiohttp_client, settings, api_key
) -> None:  # type: ignore[no-untyped-def]
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "PUT"}
    response = await client.options("/api/v1/audio_sessions/", headers=preflight)
    assert "Access-Control-Allow-Origin" not in response.headers
    api = await make_api(aiohttp_client, settings, api_key, cors_origins="https://app.example")
    response = await api.client.options("/api/v1/audio_sessions/", headers=preflight)
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    denied = await api.client.options(
        "/api/v1/audio_sessions/", headers={**preflight, "Origin": "https://evil.example"}
    )
    assert denied.status == 403
    ok = await api.client.get("/healthz", headers={"Origin": "https://app.example"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://app.example"
    # a streamed response (the live feed) sends its headers before its handler returns
    session_id = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    await api.readonly(session_id)
    feed = await api.client.get(
        f"/api/v1/audio_sessions/{session_id}/sse", headers={"Origin": "https://app.example"}
    )
    assert feed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "event: end" in await feed.text()
    other = await api.client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


async def test_silence_gate_skips_the_model_for_quiet_windows(
    aiohttp_client, settings, api_key
) -> None:  # type: ignore[no-untyped-def]
    api = await make_api(aiohttp_client, settings, api_key, silence_gate_dbfs=-60.0)
    session_id = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    audio = np.concatenate([np.zeros(32000, np.float32) + 1e-5, tone(440, 2.0, 0.5)])
    data = s16(audio)
    for seq in range(8):
        await api.put(session_id, seq, data[seq * 16000 : (seq + 1) * 16000])
    await api.readonly(session_id)
    results = await api.all_results(session_id)
    assert [t["name"] for t in results[0]["tags"]] == ["Others"]
    assert "Others" not in [t["name"] for t in results[-2]["tags"]]
    exposition = await (await api.client.get("/metrics")).text()
    silent = [
        line for line in exposition.splitlines() if line.startswith("tympan_windows_silent_total")
    ]
    assert silent == ["tympan_windows_silent_total 3.0"], silent


async def test_metrics_exposition(api: Api) -> None:
    session_id = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    data = s16(tone(440, 1.5))
    for seq in range(3):
        await api.put(session_id, seq, data[seq * 16000 : (seq + 1) * 16000])
    await api.status(session_id, offset=1)
    response = await api.client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    assert 'tympan_chunks_received_total{type="stream"} 3.0' in text
    assert "tympan_windows_inferred_total 2.0" in text
    assert "tympan_batch_executions_total" in text
    assert 'tympan_sessions_open{state="writable"} 1.0' in text
    assert 'route="/api/v1/audio_sessions/{session_id}/chunks/{seq}"' in text
    assert "tympan_queue_seconds_bucket" in text and "tympan_compute_seconds_bucket" in text
    assert 'tympan_model_info{provider="CPUExecutionProvider"' in text
    served = re.search(r'tympan_model_info\{provider="[^"]+",variant="yamnet-([^"]+)"\}', text)
    assert served is not None
    assert f'tympan_model_variant_check{{measure="ok",variant="{served[1]}"}} 1.0' in text
    assert 'tympan_model_variant_check{measure="top1"' in text
    ready = await api.client.get("/readyz")
    checks = (await ready.json())["variant_checks"]
    assert checks[served[1]]["ok"] is True and checks[served[1]]["windows"] >= 700
    assert session_id not in text


async def test_the_media_and_jobs_routes_spend_the_same_per_key_budget(
    aiohttp_client, settings, api_key, other_key
) -> None:  # type: ignore[no-untyped-def]
    api = await make_api(
        aiohttp_client, settings, api_key, rate_limit_per_key=0.001, rate_limit_burst=3.0
    )
    headers = {"x-api-key": api_key}
    statuses = [(await api.client.get("/v1/test", headers=headers)).status for _ in range(2)]
    statuses.append((await api.client.get("/v1/jobs", headers=headers)).status)
    refused = await api.client.post("/v1/media/input", headers=headers, json={"url": "media://a"})
    assert statuses == [200, 200, 200] and refused.status == 429, statuses
    assert int(refused.headers["Retry-After"]) >= 1
    assert (await refused.json())["status_code"] == 429
    other = await api.client.get("/v1/test", headers={"x-api-key": other_key})
    assert other.status == 200  # another key has its own budget
