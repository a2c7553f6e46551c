"""Helpers for the inference job tests: Relay's Step 6 as a Relay client writes it, a small
client of the routes, a model installed for a key's team, and audio the tiny head detects."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any

import requests
import soundfile as sf
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from server.appkeys import BLOBS, DETECTOR_MODELS, KEYS
from server.detectors.repository import DetectorModelRecord
from tests.detector_fixtures import RATE_HZ, click_and_pause_audio, install_model
from tests.test_datasets import check_documented

__all__ = [
    "CLICKS_S",
    "PAUSES_S",
    "Inference",
    "clicks_and_pauses_wav",
    "install_team_model",
    "relay_step_6",
    "team_of",
]

WAIT_S = 120.0  # only ever reached when something is broken; never a speed assumption
CLICKS_S = (1.2, 5.3)
PAUSES_S = (3.5,)


def clicks_and_pauses_wav(
    seconds: float = 7.0,
    clicks_s: tuple[float, ...] = CLICKS_S,
    pauses_s: tuple[float, ...] = PAUSES_S,
    fmt: str = "WAV",
) -> bytes:
    audio, _ = click_and_pause_audio(seconds, clicks_s, pauses_s, seed=11)
    buffer = io.BytesIO()
    sf.write(buffer, audio, RATE_HZ, format=fmt)
    return buffer.getvalue()


def team_of(client: TestClient, key: str) -> str:
    return str(client.app[KEYS].authenticate(key).key_id)


async def install_team_model(client: TestClient, key: str) -> DetectorModelRecord:
    """The tiny head as a model of ``key``'s team, as a training job stores one."""
    loader = client.app[DETECTOR_MODELS]
    return await install_model(loader.repository, client.app[BLOBS], team_of(client, key))


def relay_step_6(
    base_url: str, api_key: str, model_id: str, path: Path, config: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Relay's Step 6 with ``requests``: only the base URL, the file and the model differ from
    the reference (and the wait: the reference polls once; a client polls until done)."""
    BASE_URL, API_KEY = base_url, api_key  # the reference's names
    created = requests.post(
        f"{BASE_URL}/api/v1/inference-jobs",
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
        json={
            "model_id": model_id,
            "config": config
            if config is not None
            else {"threshold": 0.5, "merge_window_ms": 200, "min_duration_ms": 50},
        },
        timeout=30,
    )
    assert created.status_code in (200, 201), created.text
    inference_job_id = created.json()["id"]
    # Get upload URL
    response = requests.post(
        f"{BASE_URL}/api/v1/inference-jobs/{inference_job_id}/files/upload-url",
        headers={"X-API-Key": API_KEY},
        json={
            "filename": path.name,
            "content_type": "audio/wav",
            "file_size_bytes": path.stat().st_size,
        },
        timeout=30,
    )
    upload_info = response.json()
    # Upload file
    with open(path, "rb") as f:
        uploaded = requests.post(
            upload_info["upload_url"], data=upload_info["upload_fields"], files={"file": f}
        )
    assert uploaded.status_code == 204, uploaded.text
    # Confirm upload
    confirmed = requests.post(
        f"{BASE_URL}/api/v1/inference-jobs/{inference_job_id}/files/confirm",
        headers={"X-API-Key": API_KEY},
        json={"file_id": upload_info["file_id"]},
    )
    assert confirmed.status_code == 200, confirmed.text
    deadline = time.monotonic() + WAIT_S
    while True:
        job = requests.get(
            f"{BASE_URL}/api/v1/inference-jobs/{inference_job_id}",
            headers={"X-API-Key": API_KEY},
            timeout=30,
        ).json()
        if job["status"] in ("completed", "failed"):
            return job  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


class Inference:
    """The inference routes for one key, failing loudly on unexpected statuses."""

    def __init__(self, client: TestClient, key: str) -> None:
        self.client, self.key = client, key
        self.base = "/api/v1/inference-jobs"

    async def call(self, method: str, path: str, expect: int, **kw: Any) -> Any:
        response = await self.client.request(
            method, self.base + path, headers={"X-API-Key": self.key}, **kw
        )
        body = None if response.status == 204 else await response.json()
        assert response.status == expect, body
        check_documented(method, "/inference-jobs" + path.partition("?")[0], response.status, body)
        return body

    async def create(self, model_id: str, expect: int = 201, **body: Any) -> Any:
        return await self.call("POST", "", expect, json={"model_id": model_id, **body})

    async def get(self, job_id: str, expect: int = 200) -> Any:
        return await self.call("GET", f"/{job_id}", expect)

    async def upload(self, job_id: str, data: bytes, filename: str = "a.wav") -> str:
        """upload-url, the form, confirm: the file's id."""
        info = await self.call(
            "POST",
            f"/{job_id}/files/upload-url",
            200,
            json={"filename": filename, "content_type": "audio/wav", "file_size_bytes": len(data)},
        )
        await self.post_form(info, data)
        await self.call("POST", f"/{job_id}/files/confirm", 200, json={"file_id": info["file_id"]})
        return str(info["file_id"])

    async def post_form(self, info: Any, data: bytes, expect: int = 204) -> None:
        form = FormData()
        for name, value in info["upload_fields"].items():
            form.add_field(name, value)
        form.add_field("file", data, filename="a.wav", content_type="audio/wav")
        response = await self.client.session.post(info["upload_url"], data=form)
        assert response.status == expect, await response.text()

    async def wait(self, job_id: str, statuses: tuple[str, ...] = ("completed", "failed")) -> Any:
        deadline = time.monotonic() + WAIT_S
        while True:
            job = await self.get(job_id)
            if job["status"] in statuses:
                return job
            assert time.monotonic() < deadline, job
            await asyncio.sleep(0.05)
