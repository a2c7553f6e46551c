"""Helpers for the dataset audio tests: real clients of the audio routes, Relay's Step 3 as a
Relay client writes it, and small audio makers."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import requests
import soundfile as sf
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from server.appkeys import BLOBS, KEYS, STORE
from server.config import Settings
from server.datasets.repository import DatasetRecord, SqliteDatasetRepository
from server.storage.local import INCOMING_DIR

RATE_HZ = 16_000


WAIT_S = 120.0  # only ever reached when something is broken; never a speed assumption


def tone_wav(seconds: float, rate_hz: int = 44_100, channels: int = 2) -> bytes:
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    mono = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, np.repeat(mono[:, None], channels, axis=1), rate_hz, format="WAV")
    return buffer.getvalue()


def tone_wav_samples(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE_HZ)) / RATE_HZ
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[:, None]


def host_of(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


async def make_dataset(client: TestClient, key: str) -> str:
    """A dataset row of ``key``'s team, written as the datasets' own routes will write it."""
    team = str(client.app[KEYS].authenticate(key).key_id)
    dataset_id = str(uuid.uuid4())
    now_s = time.time()
    record = DatasetRecord(dataset_id, team, "TTS glitches", "", (), now_s, now_s)
    await SqliteDatasetRepository(client.app[STORE]).create(record)
    return dataset_id


def relay_step_3(
    base_url: str, api_key: str, dataset_id: str, path: Path, content_type: str
) -> dict[str, Any]:
    """Relay's Step 3 with ``requests``: only the base URL differs from what a Relay client
    sends (and the sleep is Relay's own 2 s)."""
    BASE_URL, API_KEY = base_url, api_key  # the reference's names
    response = requests.post(
        f"{BASE_URL}/api/v1/datasets/{dataset_id}/audio/upload-url",
        headers={"X-API-Key": API_KEY},
        json={
            "filename": path.name,
            "content_type": content_type,
            "file_size": path.stat().st_size,
        },
        timeout=30,
    )
    upload_info = response.json()
    with open(path, "rb") as f:
        uploaded = requests.post(
            upload_info["upload_url"], data=upload_info["fields"], files={"file": f}, timeout=60
        )
    assert uploaded.status_code == 204, uploaded.text
    confirmed = requests.post(
        f"{BASE_URL}/api/v1/datasets/{dataset_id}/audio/confirm",
        headers={"X-API-Key": API_KEY},
        json={"audio_id": upload_info["audio_id"]},
        timeout=30,
    )
    assert confirmed.status_code == 200, confirmed.text
    audio_id = upload_info["audio_id"]
    deadline = time.monotonic() + WAIT_S
    while True:
        response = requests.get(
            f"{BASE_URL}/api/v1/datasets/{dataset_id}/audio/{audio_id}",
            headers={"X-API-Key": API_KEY},
            timeout=30,
        )
        audio = response.json()
        if audio["processing_status"] == "ready":
            print("Audio processing complete")
            break
        elif audio["processing_status"] == "failed":
            print(f"Processing failed: {audio['processing_error']}")
            break
        assert time.monotonic() < deadline, audio
        time.sleep(2)
    return audio  # type: ignore[no-any-return]


def requests_post_form(info: dict[str, Any], data: bytes) -> requests.Response:
    return requests.post(
        info["upload_url"], data=info["fields"], files={"file": ("a.ogg", data)}, timeout=60
    )


class Audio:
    """The audio routes of one dataset, failing loudly on unexpected statuses."""

    def __init__(self, client: TestClient, key: str, dataset_id: str) -> None:
        self.client, self.key, self.dataset_id = client, key, dataset_id
        self.base = f"/api/v1/datasets/{dataset_id}/audio"

    async def call(self, method: str, path: str, expect: int, **kw: Any) -> Any:
        response = await self.client.request(
            method, self.base + path, headers={"X-API-Key": self.key}, **kw
        )
        body = None if response.status == 204 else await response.json()
        assert response.status == expect, body
        return body

    async def upload_url(self, data: bytes, expect: int = 200, **body: Any) -> Any:
        wanted = {"filename": "a.wav", "content_type": "audio/wav", "file_size": len(data)}
        return await self.call("POST", "/upload-url", expect, json={**wanted, **body})

    async def post_form(
        self, info: Any, data: bytes, expect: int = 204, fields: dict[str, str] | None = None
    ) -> Any:
        form = FormData()
        for name, value in (fields if fields is not None else info["fields"]).items():
            form.add_field(name, value)
        form.add_field("file", data, filename="a.wav", content_type="audio/wav")
        response = await self.client.session.post(info["upload_url"], data=form)
        body = None if response.status == 204 else await response.json()
        assert response.status == expect, body
        return body

    async def confirm(self, audio_id: str, expect: int = 200) -> Any:
        return await self.call("POST", "/confirm", expect, json={"audio_id": audio_id})

    async def get(self, audio_id: str, expect: int = 200) -> Any:
        return await self.call("GET", f"/{audio_id}", expect)

    async def upload(self, data: bytes, content_type: str = "audio/wav") -> str:
        info = await self.upload_url(data, content_type=content_type)
        await self.post_form(info, data)
        await self.confirm(info["audio_id"])
        return str(info["audio_id"])

    async def finished(self, audio_id: str) -> Any:
        async with asyncio.timeout(WAIT_S):
            while True:
                audio = await self.get(audio_id)
                if audio["processing_status"] in ("ready", "failed"):
                    return audio
                await asyncio.sleep(0.05)


def stored_files(root: Path) -> list[Path]:
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file() and INCOMING_DIR not in path.relative_to(root).parts
    )


def stored_upload_key(settings: Settings, audio_id: str) -> str:
    import sqlite3

    db = sqlite3.connect(settings.db_path)
    try:
        (key,) = db.execute(
            "SELECT blob_key FROM audio_files WHERE audio_id = ?", (audio_id,)
        ).fetchone()
        return str(key)
    finally:
        db.close()


async def read_blob(client: TestClient, key: str) -> bytes:
    async with client.app[BLOBS].open(key) as chunks:
        return b"".join([chunk async for chunk in chunks])
