"""Inference jobs across process deaths: a file being processed when the server is SIGKILLed
is run again after the restart and completed once, with its detections; a file that keeps
killing its worker fails after ``MAX_ATTEMPTS``."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import soundfile as sf

from server.app import create_app
from server.config import Settings
from server.inference.worker import MAX_ATTEMPTS
from tests.conftest import make_key
from tests.detector_fixtures import RATE_HZ, click_and_pause_audio
from tests.inference_jobs import Inference, clicks_and_pauses_wav, install_team_model
from tests.serverproc import ServerProcess

pytestmark = pytest.mark.timeout(300)

LONG_S = 600.0  # a few seconds of processing: seen under way by a 10 ms poll
CLICKS_S = (30.0, 299.5, 590.0)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "var", env={"TYMPAN_LOG_LEVEL": "WARNING"})
    process.data_dir.mkdir(parents=True)
    yield process
    process.kill()


def _row(data_dir: Path, file_id: str) -> tuple[str, int]:
    db = sqlite3.connect(data_dir / "tympan.sqlite3", timeout=10)
    try:
        status, attempts = db.execute(
            "SELECT status, attempts FROM inference_files WHERE file_id = ?", (file_id,)
        ).fetchone()
        return str(status), int(attempts)
    finally:
        db.close()


async def test_sigkill_mid_file_completes_it_once_after_restart(
    aiohttp_client: Callable[..., Any], server: ServerProcess
) -> None:
    key = make_key(server.data_dir, "crash")
    # The model, stored as a training job stores one, by the app on the same data dir.
    installer = await aiohttp_client(
        create_app(Settings.from_env({}, data_dir=server.data_dir, fsync=False))
    )
    model = await install_team_model(installer, key)
    await installer.close()
    server.start(wait=True)
    audio, _ = click_and_pause_audio(LONG_S, CLICKS_S, (), seed=3)
    buffer = io.BytesIO()
    sf.write(buffer, audio, RATE_HZ, format="WAV")
    data = buffer.getvalue()
    base, headers = f"{server.url}/api/v1/inference-jobs", {"X-API-Key": key}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        async with http.post(base, json={"model_id": model.model_id}, headers=headers) as created:
            job = await created.json()
            assert created.status == 201, job
        wanted = {"filename": "long.wav", "content_type": "audio/wav", "file_size_bytes": len(data)}
        url = f"{base}/{job['id']}/files/upload-url"
        async with http.post(url, json=wanted, headers=headers) as response:
            info = await response.json()
        form = aiohttp.FormData()
        for name, value in info["upload_fields"].items():
            form.add_field(name, value)
        form.add_field("file", io.BytesIO(data), filename="long.wav", content_type="audio/wav")
        async with http.post(info["upload_url"], data=form) as response:
            assert response.status == 204, await response.text()
        file_id = info["file_id"]
        url = f"{base}/{job['id']}/files/confirm"
        async with http.post(url, json={"file_id": file_id}, headers=headers) as response:
            assert response.status == 200, await response.text()
        async with asyncio.timeout(60):
            while (status := _row(server.data_dir, file_id)[0]) != "processing":
                assert status == "pending", status  # one read: it may move between two
                await asyncio.sleep(0.01)
    server.signal(9)
    assert _row(server.data_dir, file_id) == ("processing", 1)

    server.start(wait=True)
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(240):
            while True:
                async with http.get(f"{base}/{job['id']}", headers=headers) as response:
                    job = await response.json()
                if job["status"] in ("completed", "failed"):
                    break
                await asyncio.sleep(0.1)
    assert job["status"] == "completed", job
    (file,) = job["files"]
    assert file["duration_ms"] == LONG_S * 1000
    glitches = [d["start_ms"] for d in file["detections"] if d["artifact_type"] == "glitch"]
    assert len(glitches) == len(CLICKS_S), file["detections"]  # once each, not twice
    for start_ms, click_s in zip(glitches, CLICKS_S, strict=True):
        assert abs(start_ms - click_s * 1000) <= 20
    assert _row(server.data_dir, file_id) == ("completed", 2)  # claimed once more, not twice


async def test_a_file_that_keeps_killing_its_worker_is_failed(
    aiohttp_client: Callable[..., Any], settings: Settings, api_key: str
) -> None:
    """Rows as killed servers leave them (written while no server runs): one interrupted once
    is processed again, one that stopped the server ``MAX_ATTEMPTS`` times is failed."""
    settings = settings.replace(fsync=False)
    first = await aiohttp_client(create_app(settings))
    api = Inference(first, api_key)
    job = await api.create((await install_team_model(first, api_key)).model_id)
    file_id = await api.upload(job["id"], clicks_and_pauses_wav())
    await api.wait(job["id"])
    await first.close()
    db = sqlite3.connect(settings.data_dir / "tympan.sqlite3")
    try:
        cursor = db.execute("SELECT * FROM inference_files WHERE file_id = ?", (file_id,))
        row = cursor.fetchone()
        columns = [d[0] for d in cursor.description]
        for new_id, attempts in (("interrupted", 1), ("poison", MAX_ATTEMPTS)):
            values = dict(zip(columns, row, strict=True))
            values.update(file_id=new_id, status="processing", attempts=attempts, detections="[]")
            marks = ", ".join("?" * len(values))
            db.execute(
                f"INSERT INTO inference_files({', '.join(values)}) VALUES ({marks})",
                tuple(values.values()),
            )
        db.commit()
    finally:
        db.close()
    second = await aiohttp_client(create_app(settings))
    done = await Inference(second, api_key).wait(job["id"])
    files = {file["id"]: file for file in done["files"]}
    assert files["interrupted"]["status"] == "completed"
    assert files["interrupted"]["detections"] == files[file_id]["detections"] != []
    assert files["poison"]["status"] == "failed"
    assert f"stopped {MAX_ATTEMPTS} times" in files["poison"]["error_message"]
    assert _row(settings.data_dir, "interrupted") == ("completed", 2)
