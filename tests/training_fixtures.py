"""Training material for the training job tests: a dataset with ready audio files of clicks and
pauses (``tests.detector_fixtures.click_and_pause_audio``), a published annotation set marking
them, and small clients of the training and model routes.

``ready_file`` stores a file as audio processing leaves it (the 16 kHz mono WAV next to the
upload key, the row ``ready``), so these tests do not wait for processing, which has tests of
its own; everything else goes through the public routes.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import soundfile as sf
from aiohttp.test_utils import TestClient

from server.appkeys import BLOBS, KEYS, STORE
from server.datasets.audio_keys import NORMALISED_NAME, derived_key, upload_key
from server.datasets.repository import AudioFileRecord, SqliteAudioFileRepository
from tests.detector_fixtures import RATE_HZ, TYPES, click_and_pause_audio

__all__ = ["FAST_CONFIG", "WAIT_S", "Training", "material", "wav_bytes"]

WAIT_S = 120.0  # only ever reached when something is broken; never a speed assumption
FAST_CONFIG = {"epochs": 2, "validation_split": 0.34, "batch_size": 64, "seed": 7}


def wav_bytes(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, RATE_HZ, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def material(count: int, seconds: float = 4.0) -> list[tuple[np.ndarray, list[Any]]]:
    """``count`` files with two clicks and one pause each, at different places."""
    out = []
    for n in range(count):
        rng = np.random.default_rng(10 + n)
        pause_s = float(rng.uniform(1.0, seconds - 1.0))
        clicks = [c for c in (0.4, seconds - 0.4) if abs(c - pause_s - 0.3) > 0.5]
        out.append(click_and_pause_audio(seconds, clicks, [pause_s], seed=n))
    return out


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


class Training:
    """The routes of one team, failing loudly on unexpected statuses."""

    def __init__(self, client: TestClient, key: str) -> None:
        self.client, self.key = client, key

    @property
    def team(self) -> str:
        return str(self.client.app[KEYS].authenticate(self.key).key_id)

    async def call(self, method: str, path: str, expect: int, **kw: Any) -> Any:
        response = await self.client.request(
            method, "/api/v1" + path, headers={"X-API-Key": self.key}, **kw
        )
        body = None if response.status == 204 else await response.json()
        assert response.status == expect, body
        return body

    async def dataset(self, types: tuple[str, ...] = TYPES) -> str:
        body = {"name": "TTS glitches", "artifact_types": [{"name": t} for t in types]}
        return str((await self.call("POST", "/datasets", 201, json=body))["id"])

    async def ready_file(self, dataset_id: str, samples: np.ndarray) -> str:
        audio_id = str(uuid.uuid4())
        blob_key = upload_key(self.team, dataset_id, audio_id)
        data = wav_bytes(samples)
        await self.client.app[BLOBS].put_stream(
            derived_key(blob_key, NORMALISED_NAME), _chunks(data), max_bytes=len(data)
        )
        now_s = time.time()
        record = AudioFileRecord(
            audio_id, self.team, dataset_id, f"{audio_id}.wav", "audio/wav", len(data),
            blob_key, "ready", now_s, now_s, duration_ms=int(1000 * len(samples) / RATE_HZ),
            sample_rate_hz=RATE_HZ, channels=1, size_bytes=len(data),
        )  # fmt: skip
        await SqliteAudioFileRepository(self.client.app[STORE]).create(record)
        return audio_id

    async def annotation_set(
        self, dataset_id: str, files: dict[str, list[Any]], publish: bool = True
    ) -> dict[str, Any]:
        """A set of these files and their annotations ``(type, start_ms, end_ms)``."""
        sets = f"/datasets/{dataset_id}/annotation-sets"
        created = await self.call("POST", sets, 201, json={"audio_file_ids": list(files)})
        items = [
            {
                "audio_file_id": audio_id,
                "artifact_type": kind,
                "start_ms": int(start),
                "end_ms": int(np.ceil(end)),
            }
            for audio_id, marks in files.items()
            for kind, start, end in marks
        ]
        if items:
            body = {"annotations": items}
            await self.call("POST", f"{sets}/{created['id']}/annotations/bulk", 201, json=body)
        if not publish:
            return dict(created)
        return dict(await self.call("POST", f"{sets}/{created['id']}/publish", 200))

    async def published(self, count: int = 4) -> tuple[str, dict[str, Any]]:
        """A dataset of ``count`` ready files and its published set."""
        dataset_id = await self.dataset()
        files = {}
        for samples, marks in material(count):
            files[await self.ready_file(dataset_id, samples)] = marks
        return dataset_id, await self.annotation_set(dataset_id, files)

    async def create(
        self, dataset_id: str, set_id: str, config: Any = None, expect: int = 201
    ) -> Any:
        body: dict[str, Any] = {"dataset_id": dataset_id, "annotation_set_id": set_id}
        body["config"] = FAST_CONFIG if config is None else config
        return await self.call("POST", "/training-jobs", expect, json=body)

    async def job(self, job_id: str, expect: int = 200) -> Any:
        return await self.call("GET", f"/training-jobs/{job_id}", expect)

    async def finished(self, job_id: str) -> Any:
        async with asyncio.timeout(WAIT_S):
            while True:
                job = await self.job(job_id)
                if job["status"] in ("completed", "failed", "canceled"):
                    return job
                await asyncio.sleep(0.05)
