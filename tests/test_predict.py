"""``POST /audio_sessions/{id}/predict`` (cochl-sense-api 1.7) and ``GET /tags/official``."""

from __future__ import annotations

from typing import Any

import numpy as np
from aiohttp.test_utils import TestClient

from tests.conftest import RAW_S16, Api, b64, s16, tone

SR = 16_000


async def predict(
    client: TestClient, session_id: str, data: bytes, expect: int = 200, **body: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/audio_sessions/{session_id}/predict", json={"data": b64(data), **body}
    )
    payload = await response.json()
    assert response.status == expect, payload
    return payload  # type: ignore[no-any-return]


def pieces(audio: bytes, size: int) -> list[bytes]:
    return [audio[i : i + size] for i in range(0, len(audio), size)]


async def test_predict_answers_the_windows_each_chunk_completes(
    api: Api, speech_16k: np.ndarray
) -> None:
    audio = s16(np.concatenate([speech_16k, speech_16k]))[: 6 * SR * 2]
    predicted = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    uploaded = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    windows: list[dict[str, Any]] = []
    for seq, chunk in enumerate(pieces(audio, SR * 2)):  # 1 s chunks
        body = await predict(api.client, predicted, chunk, sequence=seq)
        assert body["next_sequence"] == seq + 1
        data = body["data"]
        assert set(data) == {"tags", "start_time", "end_time"}
        if body["windows"]:
            assert data["start_time"] == body["windows"][0]["start_time"]
            assert data["end_time"] == body["windows"][-1]["end_time"]
            names = {tag["name"] for event in body["windows"] for tag in event["tags"]}
            assert {tag["name"] for tag in data["tags"]} <= names
            probabilities = [tag["probability"] for tag in data["tags"]]
            assert probabilities == sorted(probabilities, reverse=True)
        else:
            assert data == {
                "tags": [],
                "start_time": data["start_time"],
                "end_time": data["start_time"],
            }
        windows.extend(body["windows"])
        await api.put(uploaded, seq, chunk)
    # after 6 s: windows start every 0.5 s and need 0.96 s, so 11 are complete
    assert [w["start_time"] for w in windows] == [i * 0.5 for i in range(11)]
    await api.readonly(uploaded)
    assert windows == (await api.all_results(uploaded))[: len(windows)]
    # predicted windows are results of the session like any other
    assert (await api.status(predicted, count=100))["inference"]["results"] == windows


async def test_predict_follows_the_chunk_sequence(api: Api) -> None:
    session_id = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    second = s16(tone(440, 1.0))
    assert (await predict(api.client, session_id, second))["next_sequence"] == 1  # no sequence
    await predict(api.client, session_id, second, expect=409, sequence=5)
    await api.put(session_id, 1, s16(tone(440, 1.0, 0.3)))  # PUT and predict share sequences
    await predict(api.client, session_id, second, expect=409, sequence=1)
    assert (await predict(api.client, session_id, second, sequence=2))["next_sequence"] == 3
    # the same last chunk again (a retry after a lost response) answers the same windows
    again = await predict(api.client, session_id, second, sequence=2)
    assert again["next_sequence"] == 3 and again["windows"]


async def test_a_large_chunk_gives_the_windows_of_small_ones(
    api: Api, speech_16k: np.ndarray
) -> None:
    audio = s16(np.tile(speech_16k, 3))[: 20 * SR * 2]  # 640 kB: fed in 256 KiB slices
    whole = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    small = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    body = await predict(api.client, whole, audio, sequence=0)
    assert len(body["windows"]) == 39
    windows: list[dict[str, Any]] = []
    for seq, chunk in enumerate(pieces(audio, 6_400)):
        windows.extend((await predict(api.client, small, chunk, sequence=seq))["windows"])
    assert windows == body["windows"]


async def test_predict_errors(api: Api, client: TestClient, other_key: str) -> None:
    stream = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    file = (await api.create(type="file", content_type=RAW_S16))["session_id"]
    chunk = s16(tone(440, 0.5))
    url = f"/api/v1/audio_sessions/{stream}/predict"
    message = (await predict(client, file, chunk, expect=400))["error"]
    assert "stream sessions only" in message
    await predict(client, "no-such-session", chunk, expect=404)
    for bad in ({}, {"data": 5}, {"data": "***"}, {"data": b64(chunk), "sequence": "one"}):
        response = await client.post(url, json=bad)
        assert response.status == 400, await response.text()
    await predict(client, stream, chunk, expect=400, sequence=-1)
    response = await client.post(url, json={"data": b64(chunk)}, headers={"x-api-key": other_key})
    assert response.status == 404
    response = await client.post(url, data=b"\0" * 10, headers={"Content-Type": "text/plain"})
    assert response.status in (400, 415) and "error" in await response.json()
    await api.readonly(stream)
    await predict(client, stream, chunk, expect=403)


async def test_official_tags_list_what_the_model_reports(client: TestClient, api_key: str) -> None:
    response = await client.get("/api/v1/tags/official")  # Cochl's SDK sends no key here
    assert response.status == 200
    tags = await response.json()
    assert all(set(tag) == {"id", "name"} for tag in tags)
    names = [tag["name"] for tag in tags]
    assert "Speech" in names and "Silence" not in names and names[-1] == "Others"
    assert len(names) == len(set(names)) == 521
    assert {"id": "/m/09x0r", "name": "Speech"} in tags
    response = await client.get("/api/v1/tags/official", headers={"x-api-key": api_key})
    assert response.status == 200 and await response.json() == tags
    response = await client.get("/api/v1/tags/official", headers={"x-api-key": "wrong"})
    assert response.status == 401
