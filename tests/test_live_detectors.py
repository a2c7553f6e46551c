"""Custom detectors live, over real HTTP with the real YAMNet and a real trained head
(``tests.detector_fixtures``): ``model_ids`` in the create body, custom tags per window, custom
events in the session's event log and its live feed, for streams and files."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from models.heads.export import export_onnx
from models.heads.features import frame_features
from models.heads.metrics import frames_to_events
from server.app import create_app
from server.appkeys import BLOBS, DETECTOR_MODELS, KEYS
from server.config import Settings
from server.detectors.loader import store_model
from server.runner import load_head_runner
from tests.conftest import RAW_S16, Api, s16
from tests.detector_fixtures import TYPES, click_and_pause_audio, install_model, tiny_head
from tests.test_events_api import sse_messages, walk

HALF_SECOND_BYTES = 16_000  # 0.5 s of 16 kHz s16 mono
CLICKS_S = (0.83, 2.61, 5.37, 7.12)
PAUSES_S = (1.6, 4.1)
SECONDS = 9.0
# Head events: onsets within 20 ms of the annotation (the collar the head is scored with),
# offsets within 20 ms or 20 % of the duration.
COLLAR_S = 0.02


@pytest.fixture
async def app_client(
    aiohttp_client: Callable[..., Any], settings: Settings, api_key: str
) -> AsyncIterator[tuple[web.Application, TestClient]]:
    app = create_app(settings.replace(fsync=False))
    yield app, await aiohttp_client(app)


def team_of(app: web.Application, key: str) -> str:
    return str(app[KEYS].authenticate(key).key_id)


async def model_for(app: web.Application, key: str, **kw: Any) -> str:
    record = await install_model(
        app[DETECTOR_MODELS].repository, app[BLOBS], team_of(app, key), **kw
    )
    return record.model_id


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    audio, annotations = click_and_pause_audio(SECONDS, CLICKS_S, PAUSES_S, seed=11)
    return audio, annotations


def as_received(audio: np.ndarray) -> np.ndarray:
    """The samples the server decodes from the s16 bytes it is sent."""
    return np.frombuffer(s16(audio), dtype="<i2").astype(np.float32) / 32768.0


def offline_events(audio: np.ndarray) -> list[tuple[str, float, float, float]]:
    head = load_head_runner(export_onnx(tiny_head()))
    probabilities = head.run(frame_features(head.spec, samples=as_received(audio)))
    out = []
    for t, (name, rule) in enumerate(zip(head.artifact_types, head.rules, strict=True)):
        for start, end, confidence in frames_to_events(probabilities[:, t], rule):
            out.append(
                (
                    name,
                    round(float(start) / 1000, 3),
                    round(float(end) / 1000, 3),
                    round(float(confidence), 4),
                )
            )
    return sorted(out)


async def send(
    api: Api, session_id: str, data: bytes, chunk_bytes: int = HALF_SECOND_BYTES
) -> None:
    for seq, start in enumerate(range(0, len(data), chunk_bytes)):
        await api.put(session_id, seq, data[start : start + chunk_bytes])
    await api.readonly(session_id)


def check_log(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """As ``test_events_api.check_log``, except that a head's event may last 0 s (a 2 ms click's
    two frames, after the model's boundary shifts): ids 0, 1, 2, ... over both sources, each
    open at most once then closed once, a start that never moves."""
    seen: dict[int, dict[str, Any]] = {}
    for entry in log:
        previous = seen.get(entry["id"])
        assert previous is None or previous["state"] == "open" != entry["state"], log
        if previous is not None:
            assert entry["start_time"] == previous["start_time"]
            assert entry["end_time"] >= previous["end_time"]
        assert entry["start_time"] <= entry["end_time"]
        seen[entry["id"]] = entry
    assert {e["state"] for e in seen.values()} == {"closed"}
    assert sorted(seen) == list(range(len(seen)))
    return log


def custom_of(log: list[dict[str, Any]]) -> list[tuple[str, float, float, float]]:
    return sorted(
        (e["tag"], e["start_time"], e["end_time"], e["confidence"])
        for e in log
        if e["state"] == "closed" and e["tag"] in TYPES
    )


async def test_a_stream_reports_custom_tags_and_events(
    app_client: tuple[web.Application, TestClient], api_key: str, scene: Any
) -> None:
    app, client = app_client
    api = Api(client, api_key)
    model_id = await model_for(app, api_key)
    audio, annotations = scene
    created = await api.create(type="stream", content_type=RAW_S16, model_ids=[model_id])
    session_id = created["session_id"]
    await send(api, session_id, s16(audio))
    windows = await api.all_results(session_id)
    assert len(windows) == 18  # 9 s: as without models
    # Window tags: glitch exactly in the windows that hold a click (a click's frames are
    # all inside or all outside a window, up to the 25 ms of a frame at the window's edges).
    for window in windows:
        names = {t["name"] for t in window["tags"]}
        start, end = window["start_time"], window["end_time"]
        clicks = [c for c in CLICKS_S if start + 0.03 <= c <= end - 0.03]
        near = [c for c in CLICKS_S if start - 0.03 <= c <= end + 0.03]
        if clicks:
            assert "glitch" in names, (window, clicks)
        if "glitch" in names:
            assert near, window
        pause = [p for p in PAUSES_S if start <= p + 0.3 <= end]
        if "long_pause" in names:
            assert any(start - 0.05 <= p + 0.6 and p <= end + 0.05 for p in PAUSES_S), window
        if any(start + 0.05 <= p and p + 0.6 <= end - 0.05 for p in PAUSES_S):
            assert "long_pause" in names, (window, pause)
        yamnet = [t for t in window["tags"] if t["name"] not in TYPES]
        assert yamnet, "YAMNet's tags are still there"
    log = check_log(await walk(api, session_id))
    found = custom_of(log)
    assert found == offline_events(audio)  # exactly the offline frames_to_events
    for kind, start_ms, end_ms in annotations:
        matches = [e for e in found if e[0] == kind and abs(e[1] - start_ms / 1000) <= COLLAR_S]
        assert len(matches) == 1, (kind, start_ms, found)
        offset_collar = max(COLLAR_S, 0.2 * (end_ms - start_ms) / 1000)
        assert abs(matches[0][2] - end_ms / 1000) <= offset_collar, (kind, end_ms, matches)
    assert len(found) == len(annotations)
    assert any(e["tag"] not in TYPES for e in log), "YAMNet's events share the log"
    # The live feed carries the same windows and entries.
    messages = [m async for m in sse_messages(client, session_id)]
    sse_windows = [m["data"] for m in messages if m.get("event") == "window"]
    assert [w["tags"] for w in sse_windows] == [w["tags"] for w in windows]
    sse_log = [m["data"] for m in messages if m.get("event") in ("open", "closed")]
    assert custom_of(sse_log) == found
    assert messages[-1]["event"] == "end"


async def test_chunking_and_file_sessions_give_the_same_answer(
    app_client: tuple[web.Application, TestClient], api_key: str, scene: Any
) -> None:
    app, client = app_client
    api = Api(client, api_key)
    model_id = await model_for(app, api_key)
    audio, _ = scene
    data = s16(audio)
    answers = []
    for kind, chunk_bytes in (("stream", HALF_SECOND_BYTES), ("stream", 11_111), ("file", 100_001)):
        created = await api.create(type=kind, content_type=RAW_S16, model_ids=[model_id])
        await send(api, created["session_id"], data, chunk_bytes)
        windows = await api.all_results(created["session_id"])
        log = await walk(api, created["session_id"])
        answers.append((windows, custom_of(log)))
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][1]


async def test_models_are_checked_before_the_session_exists(
    app_client: tuple[web.Application, TestClient], api_key: str, other_key: str
) -> None:
    app, client = app_client
    api = Api(client, api_key)
    mine = await model_for(app, api_key)
    theirs = await model_for(app, other_key)
    body = {"type": "stream", "content_type": RAW_S16}
    payload = await api.create(404, **body, model_ids=[theirs])
    assert theirs in payload["error"]
    payload = await api.create(404, **body, model_ids=[mine, "nope"])
    assert "'nope'" in payload["error"]
    await api.create(401, key=None, **body, model_ids=[mine])
    payload = await api.create(400, **body, model_ids=[mine, mine])
    assert "twice" in payload["error"]
    second = await model_for(app, api_key)  # another version: the same types
    payload = await api.create(400, **body, model_ids=[mine, second])
    assert "'glitch'" in payload["error"]
    payload = await api.create(400, **body, model_ids=["a", "b", "c", "d", "e"])
    assert "model_ids" in payload["error"]
    # A type named like a YAMNet tag is refused.
    onnx = export_onnx(tiny_head(), extra={"artifact_types": json.dumps(["Speech", "long_pause"])})
    clash = await install_model(
        app[DETECTOR_MODELS].repository, app[BLOBS], team_of(app, api_key), model_id="clash"
    )
    await app[DETECTOR_MODELS].repository.delete(clash.team, "clash")
    app[DETECTOR_MODELS].forget("clash")
    await store_model(app[DETECTOR_MODELS].repository, app[BLOBS], clash, onnx)
    payload = await api.create(400, **body, model_ids=["clash"])
    assert "'Speech'" in payload["error"] and "YAMNet" in payload["error"]


async def test_a_model_deleted_mid_session_serves_the_session_to_its_end(
    app_client: tuple[web.Application, TestClient], api_key: str, scene: Any
) -> None:
    app, client = app_client
    api = Api(client, api_key)
    model_id = await model_for(app, api_key)
    audio, _ = scene
    data = s16(audio)
    created = await api.create(type="stream", content_type=RAW_S16, model_ids=[model_id])
    session_id = created["session_id"]
    half = len(data) // 2 // HALF_SECOND_BYTES * HALF_SECOND_BYTES
    for seq, start in enumerate(range(0, half, HALF_SECOND_BYTES)):
        await api.put(session_id, seq, data[start : start + HALF_SECOND_BYTES])
    loader = app[DETECTOR_MODELS]
    assert await loader.repository.delete(team_of(app, api_key), model_id) is not None
    loader.forget(model_id)
    for seq, start in enumerate(
        range(half, len(data), HALF_SECOND_BYTES), start=half // HALF_SECOND_BYTES
    ):
        await api.put(session_id, seq, data[start : start + HALF_SECOND_BYTES])
    await api.readonly(session_id)
    assert custom_of(await walk(api, session_id)) == offline_events(audio)
    await api.create(404, type="stream", content_type=RAW_S16, model_ids=[model_id])


async def test_a_session_without_models_is_unchanged(
    app_client: tuple[web.Application, TestClient], api_key: str, scene: Any
) -> None:
    _, client = app_client
    api = Api(client, api_key)
    audio, _ = scene
    for kind in ("stream", "file"):
        created = await api.create(type=kind, content_type=RAW_S16)
        await send(api, created["session_id"], s16(audio))
        status = await api.status(created["session_id"])
        assert "error" not in status, status
        windows = await api.all_results(created["session_id"])
        assert len(windows) == 18
        assert not any(t["name"] in TYPES for w in windows for t in w["tags"])
        assert not custom_of(await walk(api, created["session_id"]))
