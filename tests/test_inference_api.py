"""Inference jobs' API beyond Step 6: config overrides, media inputs, each error status, team
isolation, cancel and delete; real HTTP, the tiny trained head, audio it finds things in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.appkeys import BLOBS, DETECTOR_MODELS
from server.config import Settings
from tests.inference_jobs import (
    CLICKS_S,
    Inference,
    clicks_and_pauses_wav,
    install_team_model,
    team_of,
)
from tests.test_inference_jobs import _check_found
from tests.test_media import bearer, presign, put_bytes


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Any], audio_settings: Settings, api_key: str
) -> TestClient:
    return await aiohttp_client(create_app(audio_settings))  # type: ignore[no-any-return]


@pytest.fixture
async def model_id(client: TestClient, api_key: str) -> str:
    return (await install_team_model(client, api_key)).model_id


async def _detections(api: Inference, model_id: str, **config: Any) -> list[dict[str, Any]]:
    job = await api.create(model_id, config=config)
    await api.upload(job["id"], clicks_and_pauses_wav())
    done = await api.wait(job["id"])
    assert done["status"] == "completed", done
    return done["files"][0]["detections"]  # type: ignore[no-any-return]


async def test_config_overrides_change_the_detections(
    client: TestClient, api_key: str, model_id: str
) -> None:
    api = Inference(client, api_key)
    _check_found(await _detections(api, model_id))
    # The two clicks, 4.1 s apart, merge into one glitch from the first to the second.
    merged = await _detections(api, model_id, merge_window_ms=5000)
    (glitch,) = [d for d in merged if d["artifact_type"] == "glitch"]
    assert abs(glitch["start_ms"] - CLICKS_S[0] * 1000) <= 20
    assert abs(glitch["end_ms"] - CLICKS_S[1] * 1000) <= 20
    # A 600 ms pause is shorter than 700 ms: dropped; the clicks are too.
    assert await _detections(api, model_id, min_duration_ms=700) == []
    # A lower threshold passes at least the frames a higher one does.
    low = await _detections(api, model_id, threshold=0.05)
    high = await _detections(api, model_id, threshold=0.9)

    def covered(found: list[dict[str, Any]]) -> int:
        return sum(d["end_ms"] - d["start_ms"] for d in found)

    assert covered(low) >= covered(high) and len(high) <= 3


async def test_media_inputs_at_creation_and_later(
    client: TestClient, api_key: str, model_id: str
) -> None:
    api = Inference(client, api_key)
    await put_bytes(client, await presign(client, api_key, "calls/a.wav"), clicks_and_pauses_wav())
    flac = clicks_and_pauses_wav(fmt="FLAC")
    await put_bytes(client, await presign(client, api_key, "calls/b.flac"), flac)
    job = await api.create(model_id, files=[{"url": "media://calls/a.wav"}])
    assert job["total_files"] == 1 and job["files"][0]["upload_confirmed"] is True
    added = await api.call("POST", f"/{job['id']}/files", 201, json={"url": "media://calls/b.flac"})
    assert added["original_filename"] == "b.flac" and added["source"] == "media"
    done = await api.wait(job["id"])
    assert done["status"] == "completed" and done["processed_files"] == 2, done
    for file in done["files"]:
        _check_found(file["detections"])
    # Deleting the job leaves the team's media where it was.
    await api.call("DELETE", f"/{job['id']}", 204)
    response = await client.get("/v1/media/calls/a.wav", headers=bearer(api_key))
    assert response.status == 200, await response.text()


async def test_unknown_model_media_and_malformed_bodies(
    client: TestClient, api_key: str, model_id: str
) -> None:
    api = Inference(client, api_key)
    missing = await api.create("no-such-model", expect=404)
    assert "model" in missing["error"]
    gone = await api.create(model_id, expect=404, files=[{"url": "media://nothing/here.wav"}])
    assert "files[0].url" in gone["error"]
    for body, field in (
        ({"config": {"threshold": 1.5}}, "config.threshold"),
        ({"config": {"threshold": 0}}, "config.threshold"),
        ({"config": {"merge_window_ms": -1}}, "config.merge_window_ms"),
        ({"config": {"min_duration_ms": "50"}}, "config.min_duration_ms"),
        ({"config": {"min_duration_ms": True}}, "config.min_duration_ms"),
        ({"config": {"merge_window_ms": 1e9}}, "config.merge_window_ms"),
        ({"config": []}, "config"),
        ({"files": [{"url": "https://example.com/a.wav"}]}, "files[0].url"),
        ({"files": [{"url": "media://../a.wav"}]}, "files[0].url"),
        ({"model_id": 7}, "model_id"),
        ({"model_id": ""}, "model_id"),
    ):
        answer = await api.call("POST", "", 400, json={"model_id": model_id, **body})
        assert field in answer["error"], (body, answer)
    answer = await api.call("POST", "", 400, json={"config": {}})
    assert "model_id is required" in answer["error"]
    response = await client.post(
        "/api/v1/inference-jobs", data=b"{not json", headers={"X-API-Key": api_key}
    )
    assert response.status == 400
    job = await api.create(model_id)
    path = f"/{job['id']}/files/upload-url"
    good = {"filename": "a.wav", "content_type": "audio/wav", "file_size_bytes": 10}
    for change, field in (
        ({"filename": "../a.wav"}, "filename"),
        ({"content_type": "text/plain"}, "content_type"),
        ({"file_size_bytes": 0}, "file_size_bytes"),
        ({"file_size_bytes": "10"}, "file_size_bytes"),
        ({"file_size_bytes": 10**12}, "file_size_bytes"),
    ):
        answer = await api.call("POST", path, 400, json={**good, **change})
        assert field in answer["error"], (change, answer)
    confirm = f"/{job['id']}/files/confirm"
    assert "file_id" in (await api.call("POST", confirm, 400, json={}))["error"]
    await api.call("POST", confirm, 404, json={"file_id": "nope"})
    info = await api.call("POST", path, 200, json=good)
    early = await api.call("POST", confirm, 409, json={"file_id": info["file_id"]})
    assert "not arrived" in early["error"]
    await api.call("GET", "/no-such-job", 404)
    await api.call("GET", "?limit=0", 400)
    response = await client.get("/api/v1/inference-jobs")
    assert response.status == 401


async def test_another_team_sees_nothing(
    client: TestClient, api_key: str, other_key: str, model_id: str
) -> None:
    api, other = Inference(client, api_key), Inference(client, other_key)
    await put_bytes(client, await presign(client, api_key, "mine.wav"), clicks_and_pauses_wav())
    job = await api.create(model_id)
    job_id = job["id"]
    info = await api.call(
        "POST",
        f"/{job_id}/files/upload-url",
        200,
        json={"filename": "a.wav", "content_type": "audio/wav", "file_size_bytes": 10},
    )
    await other.create(model_id, expect=404)  # the model is not theirs
    other_model = (await install_team_model(client, other_key)).model_id
    denied = await other.create(other_model, expect=404, files=[{"url": "media://mine.wav"}])
    assert "files[0].url" in denied["error"]
    for method, path, body in (
        ("GET", f"/{job_id}", None),
        ("POST", f"/{job_id}/cancel", None),
        ("POST", f"/{job_id}/files/confirm", {"file_id": info["file_id"]}),
        ("POST", f"/{job_id}/files", {"url": "media://mine.wav"}),
        ("DELETE", f"/{job_id}", None),
    ):
        await other.call(method, path, 404, json=body)
    assert (await other.call("GET", "", 200))["total"] == 0
    page = await api.call("GET", "", 200)
    assert page["total"] == 1 and page["items"][0]["id"] == job_id


async def test_cancel_fails_waiting_files_and_refuses_more(
    client: TestClient, api_key: str, model_id: str
) -> None:
    api = Inference(client, api_key)
    job = await api.create(model_id)
    assert job["status"] == "pending" and job["total_files"] == 0
    data = clicks_and_pauses_wav()
    info = await api.call(
        "POST",
        f"/{job['id']}/files/upload-url",
        200,
        json={"filename": "late.wav", "content_type": "audio/wav", "file_size_bytes": len(data)},
    )
    canceled = await api.call("POST", f"/{job['id']}/cancel", 200)
    assert canceled["status"] == "canceled"
    (file,) = canceled["files"]
    assert file["status"] == "failed" and "canceled" in file["error_message"]
    assert (await api.call("POST", f"/{job['id']}/cancel", 200))["status"] == "canceled"
    await api.post_form(info, data)
    await api.call("POST", f"/{job['id']}/files/confirm", 409, json={"file_id": info["file_id"]})
    await api.call(
        "POST",
        f"/{job['id']}/files/upload-url",
        409,
        json=dict(filename="b.wav", content_type="audio/wav", file_size_bytes=len(data)),
    )
    # A finished job has nothing to cancel; adding a file makes it run again.
    done_job = await api.create(model_id)
    await api.upload(done_job["id"], data)
    assert (await api.wait(done_job["id"]))["status"] == "completed"
    await api.call("POST", f"/{done_job['id']}/cancel", 409)
    await api.upload(done_job["id"], data)
    again = await api.wait(done_job["id"])
    assert again["status"] == "completed" and again["processed_files"] == 2


async def test_delete_removes_the_job_rows_and_uploads(
    client: TestClient, api_key: str, model_id: str
) -> None:
    api = Inference(client, api_key)
    job = await api.create(model_id)
    file_id = await api.upload(job["id"], clicks_and_pauses_wav())
    await api.wait(job["id"])
    blob_key = f"teams/{team_of(client, api_key)}/inference/{job['id']}/{file_id}/upload"
    assert await client.app[BLOBS].stat(blob_key) is not None
    await api.call("DELETE", f"/{job['id']}", 204)
    await api.call("GET", f"/{job['id']}", 404)
    await api.call("DELETE", f"/{job['id']}", 404)
    assert await client.app[BLOBS].stat(blob_key) is None


async def test_a_model_deleted_before_a_file_runs_fails_that_file(
    client: TestClient, api_key: str, model_id: str
) -> None:
    api = Inference(client, api_key)
    job = await api.create(model_id)
    loader = client.app[DETECTOR_MODELS]
    removed = await loader.repository.delete(team_of(client, api_key), model_id)
    assert removed is not None
    loader.forget(model_id)
    await api.upload(job["id"], clicks_and_pauses_wav())
    done = await api.wait(job["id"])
    assert done["status"] == "failed", done
    assert "model was deleted" in done["files"][0]["error_message"]


async def test_a_file_that_is_not_audio_fails_with_a_reason(
    client: TestClient, api_key: str, model_id: str
) -> None:
    api = Inference(client, api_key)
    job = await api.create(model_id)
    await api.upload(job["id"], b"this is not audio at all, only text" * 10)
    await api.upload(job["id"], clicks_and_pauses_wav())
    done = await api.wait(job["id"])
    assert done["status"] == "completed" and done["processed_files"] == 2  # not every one failed
    bad, good = done["files"]
    assert bad["status"] == "failed" and "not audio" in bad["error_message"]
    assert bad["detections"] == [] and good["status"] == "completed"
