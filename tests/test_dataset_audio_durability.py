"""Dataset audio processing across process deaths: a file being processed when the server is
SIGKILLed is finished after the restart, once; a file that keeps killing its worker fails."""

from __future__ import annotations

import asyncio
import io
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from server.app import create_app
from server.config import Settings
from server.datasets.audio_processing import MAX_ATTEMPTS
from tests.conftest import make_key
from tests.dataset_audio import Audio, make_dataset, tone_wav
from tests.serverproc import ServerProcess

pytestmark = pytest.mark.timeout(300)

LONG_S = 600.0  # long enough that its processing is seen under way by a 10 ms poll


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "var", env={"TYMPAN_LOG_LEVEL": "WARNING"})
    process.data_dir.mkdir(parents=True)
    yield process
    process.kill()


def _db(data_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(data_dir / "tympan.sqlite3", timeout=10)


def _insert_dataset(data_dir: Path, key_name: str) -> str:
    db = _db(data_dir)
    try:
        (team,) = db.execute("SELECT id FROM keys WHERE name = ?", (key_name,)).fetchone()
        dataset_id = str(uuid.uuid4())
        db.execute(
            "INSERT INTO datasets(dataset_id, team, name, description, artifact_types, "
            "created_at, updated_at) VALUES (?, ?, 'd', '', '[]', ?, ?)",
            (dataset_id, str(team), time.time(), time.time()),
        )
        db.commit()
        return dataset_id
    finally:
        db.close()


def _row(data_dir: Path, audio_id: str) -> tuple[str, int]:
    db = _db(data_dir)
    try:
        status, attempts = db.execute(
            "SELECT status, attempts FROM audio_files WHERE audio_id = ?", (audio_id,)
        ).fetchone()
        return str(status), int(attempts)
    finally:
        db.close()


async def test_sigkill_mid_processing_finishes_the_file_once_after_restart(
    server: ServerProcess,
) -> None:
    key = make_key(server.data_dir, "crash")
    server.start(wait=True)
    dataset_id = _insert_dataset(server.data_dir, "crash")
    t = np.arange(int(LONG_S * 16_000)) / 16_000
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16_000, format="WAV")
    data = buffer.getvalue()
    base = f"{server.url}/api/v1/datasets/{dataset_id}/audio"
    headers = {"X-API-Key": key}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        wanted = {"filename": "long.wav", "content_type": "audio/wav", "file_size": len(data)}
        async with http.post(base + "/upload-url", json=wanted, headers=headers) as response:
            info = await response.json()
            assert response.status == 200, info
        form = aiohttp.FormData()
        for name, value in info["fields"].items():
            form.add_field(name, value)
        form.add_field("file", io.BytesIO(data), filename="long.wav", content_type="audio/wav")
        async with http.post(info["upload_url"], data=form) as response:
            assert response.status == 204, await response.text()
        audio_id = info["audio_id"]
        async with http.post(base + "/confirm", json={"audio_id": audio_id}, headers=headers):
            pass
        async with asyncio.timeout(60):
            while (status := _row(server.data_dir, audio_id)[0]) != "processing":
                assert status == "pending", status  # one read: it may move between two
                await asyncio.sleep(0.01)
    server.signal(9)
    assert _row(server.data_dir, audio_id) == ("processing", 1)

    server.start(wait=True)
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(240):
            while True:
                async with http.get(f"{base}/{audio_id}", headers=headers) as response:
                    audio = await response.json()
                if audio["processing_status"] in ("ready", "failed"):
                    break
                await asyncio.sleep(0.1)
    assert audio["processing_status"] == "ready", audio
    assert audio["duration_ms"] == LONG_S * 1000
    assert _row(server.data_dir, audio_id) == ("ready", 2)  # claimed once more, not twice
    leftovers = [p for p in (server.data_dir / "audio-processing").rglob("*") if p.is_file()]
    assert leftovers == []


async def test_a_file_that_keeps_killing_its_worker_is_failed(
    aiohttp_client: Callable[..., Any], settings: Settings, api_key: str
) -> None:
    """Rows as killed servers leave them (written while no server runs): one interrupted once
    is processed again, one that stopped the server ``MAX_ATTEMPTS`` times is failed."""
    settings = settings.replace(fsync=False)
    first = await aiohttp_client(create_app(settings))
    audio = Audio(first, api_key, await make_dataset(first, api_key))
    done = await audio.finished(await audio.upload(tone_wav(0.5)))
    await first.close()
    db = _db(settings.data_dir)
    try:
        cursor = db.execute("SELECT * FROM audio_files WHERE audio_id = ?", (done["id"],))
        row = cursor.fetchone()
        columns = [d[0] for d in cursor.description]
        for audio_id, attempts in (("interrupted", 1), ("poison", MAX_ATTEMPTS)):
            values = dict(zip(columns, row, strict=True))
            values.update(
                audio_id=audio_id, status="processing", attempts=attempts, duration_ms=None
            )
            marks = ", ".join("?" * len(values))
            db.execute(
                f"INSERT INTO audio_files({', '.join(values)}) VALUES ({marks})",
                tuple(values.values()),
            )
        db.commit()
    finally:
        db.close()
    second = await aiohttp_client(create_app(settings))
    audio = Audio(second, api_key, audio.dataset_id)
    interrupted = await audio.finished("interrupted")
    assert interrupted["processing_status"] == "ready", interrupted
    assert interrupted["duration_ms"] == 500
    poison = await audio.finished("poison")
    assert poison["processing_status"] == "failed"
    assert f"stopped {MAX_ATTEMPTS} times" in poison["processing_error"], poison
    assert _row(settings.data_dir, "interrupted") == ("ready", 2)
