"""Inference jobs (Relay's Step 6) over real HTTP, with a real trained head and audio it finds
things in: the reference's own ``requests`` code on both blob stores, config overrides, media
inputs, every error status, team isolation, cancel and delete.

Where the detections must be: the tiny head's clicks are 2 ms at ``CLICKS_S`` and its pauses
600 ms at ``PAUSES_S``; a glitch is found when it starts within 20 ms of a click (a frame is
10 ms; the trained onset shift moves it by a few ms), a pause when both its ends are within
50 ms of the pause's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.app import create_app
from server.config import Settings
from tests.dataset_audio import host_of
from tests.inference_jobs import (
    CLICKS_S,
    PAUSES_S,
    clicks_and_pauses_wav,
    install_team_model,
    relay_step_6,
)
from tests.seaweedfs import SeaweedFS

CLICK_TOLERANCE_MS = 20
PAUSE_TOLERANCE_MS = 50
PAUSE_MS = 600


def _check_found(detections: list[dict[str, Any]]) -> None:
    glitches = [d for d in detections if d["artifact_type"] == "glitch"]
    pauses = [d for d in detections if d["artifact_type"] == "long_pause"]
    assert len(glitches) == len(CLICKS_S), detections
    for found, click_s in zip(glitches, CLICKS_S, strict=True):
        assert abs(found["start_ms"] - click_s * 1000) <= CLICK_TOLERANCE_MS, found
        assert found["end_ms"] >= found["start_ms"] and 0.5 < found["confidence"] <= 1
    assert len(pauses) == len(PAUSES_S), detections
    for found, pause_s in zip(pauses, PAUSES_S, strict=True):
        assert abs(found["start_ms"] - pause_s * 1000) <= PAUSE_TOLERANCE_MS, found
        assert abs(found["end_ms"] - (pause_s * 1000 + PAUSE_MS)) <= PAUSE_TOLERANCE_MS, found
    assert all(isinstance(d["start_ms"], int) and isinstance(d["end_ms"], int) for d in detections)


async def _step_6(client: Any, api_key: str, tmp_path: Path) -> None:
    """The reference's requests, its config first: ``min_duration_ms: 50`` drops the 2 ms
    clicks (their detections are one 10 ms frame at most) and keeps the 600 ms pause; then the
    model's own per-type rules (``config: {}``), which find both."""
    model = await install_team_model(client, api_key)
    path = tmp_path / "test_audio.wav"
    path.write_bytes(clicks_and_pauses_wav())
    base_url = host_of(client)
    job = await asyncio.to_thread(relay_step_6, base_url, api_key, model.model_id, path)
    # The reference's example response, field for field.
    assert job["status"] == "completed", job
    assert job["total_files"] == 1 and job["processed_files"] == 1
    (file,) = job["files"]
    assert file["original_filename"] == "test_audio.wav" and file["status"] == "completed"
    assert job["total_detections"] == len(file["detections"]) == 1
    (pause,) = file["detections"]
    assert set(pause) == {"artifact_type", "start_ms", "end_ms", "confidence"}
    assert pause["artifact_type"] == "long_pause"
    assert abs(pause["start_ms"] - PAUSES_S[0] * 1000) <= PAUSE_TOLERANCE_MS, pause
    assert file["duration_ms"] == 7000 and file["processing_ms"] >= 0
    assert job["config"] == {"threshold": 0.5, "merge_window_ms": 200, "min_duration_ms": 50}
    assert [(r["threshold"], r["min_duration_ms"]) for r in job["rules"]] == [(0.5, 50)] * 2

    job = await asyncio.to_thread(relay_step_6, base_url, api_key, model.model_id, path, {})
    assert job["status"] == "completed", job
    (file,) = job["files"]
    _check_found(file["detections"])
    assert job["total_detections"] == len(CLICKS_S) + len(PAUSES_S)
    assert job["config"] == {"threshold": None, "merge_window_ms": None, "min_duration_ms": None}


async def test_step_6_on_the_local_store(
    aiohttp_client: Callable[..., Any], audio_settings: Settings, api_key: str, tmp_path: Path
) -> None:
    client = await aiohttp_client(create_app(audio_settings))
    await _step_6(client, api_key, tmp_path)


async def test_step_6_on_s3(
    aiohttp_client: Callable[..., Any],
    audio_settings: Settings,
    api_key: str,
    seaweedfs: SeaweedFS,
    tmp_path: Path,
) -> None:
    client = await aiohttp_client(create_app(seaweedfs.settings(audio_settings)))
    await _step_6(client, api_key, tmp_path)
