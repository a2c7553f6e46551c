"""Relay's workflow, Steps 2-4 (``shared/reference/relay-workflow.txt``), as a Relay user runs
it: the reference's request bodies and ``requests`` code with only the base URL changed, against
a real server on HTTP, on the local store (tympan serves the upload form) and on a real
S3-compatible service (the client posts the form to SeaweedFS itself).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from server.app import create_app
from server.config import Settings
from tests.dataset_audio import host_of, relay_step_3, tone_wav
from tests.seaweedfs import SeaweedFS

TIMEOUT_S = 60


def steps_2_to_4(base_url: str, api_key: str, audio_path: Path) -> dict[str, Any]:
    """Step 2 (dataset), Step 3 (upload, confirm, wait), Step 4 (annotation set, bulk
    annotations, publish), each request as the reference writes it."""
    headers = {"X-API-Key": api_key, "Content-Type": "application/json"}
    # Step 2: create a dataset
    created = requests.post(
        f"{base_url}/api/v1/datasets",
        headers=headers,
        json={
            "name": "TTS Glitch Detection",
            "description": "Detect glitches and pauses in TTS output",
            "artifact_types": [
                {"name": "glitch", "description": "Audio pop or click", "color": "#FF4444"},
                {
                    "name": "long_pause",
                    "description": "Unnatural pause > 500ms",
                    "color": "#4444FF",
                },
            ],
        },
        timeout=TIMEOUT_S,
    )
    assert created.status_code in (200, 201), created.text
    dataset = created.json()
    assert set(dataset) == {
        "id", "name", "description", "artifact_types", "created_at", "updated_at",
    }  # fmt: skip
    assert dataset["artifact_types"][1] == {
        "name": "long_pause",
        "description": "Unnatural pause > 500ms",
        "color": "#4444FF",
    }
    dataset_id = dataset["id"]
    # Step 3: upload audio files (request the form, post it, confirm, poll)
    audio = relay_step_3(base_url, api_key, dataset_id, audio_path, "audio/wav")
    assert audio["processing_status"] == "ready", audio
    audio_id = audio["id"]
    # Step 4: an annotation set (curl -X POST with the key and no body), annotations, publish
    created_set = requests.post(
        f"{base_url}/api/v1/datasets/{dataset_id}/annotation-sets",
        headers={"X-API-Key": api_key},
        timeout=TIMEOUT_S,
    )
    assert created_set.status_code in (200, 201), created_set.text
    annotation_set_id = created_set.json()["id"]
    bulk = requests.post(
        f"{base_url}/api/v1/datasets/{dataset_id}/annotation-sets/{annotation_set_id}"
        "/annotations/bulk",
        headers=headers,
        json={
            "annotations": [
                {
                    "audio_file_id": audio_id,
                    "artifact_type": "glitch",
                    "start_ms": 1200,
                    "end_ms": 1450,
                    "confidence": 1.0,
                },
                {
                    "audio_file_id": audio_id,
                    "artifact_type": "long_pause",
                    "start_ms": 3500,
                    "end_ms": 4200,
                    "confidence": 1.0,
                },
            ]
        },
        timeout=TIMEOUT_S,
    )
    assert bulk.status_code in (200, 201), bulk.text
    published = requests.post(
        f"{base_url}/api/v1/datasets/{dataset_id}/annotation-sets/{annotation_set_id}/publish",
        headers={"X-API-Key": api_key},
        timeout=TIMEOUT_S,
    )
    assert published.status_code == 200, published.text
    return {"dataset": dataset, "audio": audio, "set": published.json()}


def _speech_like_wav(tmp_path: Path) -> Path:
    path = tmp_path / "sample_audio.wav"
    path.write_bytes(tone_wav(5.0))  # 44.1 kHz stereo: processing makes it 16 kHz mono
    return path


async def _check(client: Any, api_key: str, tmp_path: Path) -> None:
    result = await asyncio.to_thread(
        steps_2_to_4, host_of(client), api_key, _speech_like_wav(tmp_path)
    )
    published = result["set"]
    assert published["status"] == "published" and published["annotation_count"] == 2
    assert published["audio_file_count"] == 1 and len(published["content_hash"]) == 64
    assert result["audio"]["duration_ms"] == 5000


async def test_steps_2_to_4_on_the_local_store(
    aiohttp_client: Callable[..., Any], audio_settings: Settings, api_key: str, tmp_path: Path
) -> None:
    client = await aiohttp_client(create_app(audio_settings))
    await _check(client, api_key, tmp_path)


async def test_steps_2_to_4_on_s3(
    aiohttp_client: Callable[..., Any],
    audio_settings: Settings,
    api_key: str,
    seaweedfs: SeaweedFS,
    tmp_path: Path,
) -> None:
    client = await aiohttp_client(create_app(seaweedfs.settings(audio_settings)))
    await _check(client, api_key, tmp_path)
