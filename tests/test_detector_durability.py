"""SIGKILL mid-stream with custom detectors: after the restart the stream carries on with the
same windows and the same event log (ids included), every entry read exactly once."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from server.auth import KeyDirectory
from server.config import Settings
from server.detectors.repository import SqliteModelRepository
from server.storage import LocalBlobStore
from server.store import Store, StoreThread
from tests.conftest import RAW_S16, make_key, s16
from tests.detector_fixtures import TYPES, click_and_pause_audio, install_model
from tests.serverproc import ServerProcess
from tests.test_durability import HALF_SECOND_BYTES, call, make_readonly, put_chunk, read_all

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path / "var", env={"TYMPAN_FSYNC": "true", "TYMPAN_LOG_LEVEL": "WARNING"}
    )
    process.data_dir.mkdir(parents=True)
    yield process
    process.kill()


async def install(data_dir: Path, key: str) -> str:
    """The tiny head stored for the key's team, as a training job would, before the server
    starts (same database and blob directory)."""
    settings = Settings.from_env({}, data_dir=data_dir)
    keys = KeyDirectory(settings.db_path)
    team = str(keys.authenticate(key).key_id)
    keys.close()
    store = StoreThread(Store(settings.db_path, fsync=False))
    blobs = LocalBlobStore(settings.blob_root, fsync=False)
    try:
        repository = SqliteModelRepository(store)
        await repository.prepare()
        return (await install_model(repository, blobs, team)).model_id
    finally:
        await blobs.close()
        store.close()


async def read_log(
    http: aiohttp.ClientSession, url: str, session_id: str, token: str | None, wait_for: int = 0
) -> tuple[list[dict[str, Any]], str | None]:
    """Entries from ``token`` (the start when None) until the page that ends the log, or, on a
    live session, until at least ``wait_for`` entries were read; and the token to go on."""
    entries: list[dict[str, Any]] = []
    query = {"next_token": token} if token else {}
    while True:
        status, page = await call(
            http, "GET", f"{url}/api/v1/audio_sessions/{session_id}/events", params=query
        )
        assert status == 200, page
        entries.extend(page["events"])
        token = page["page"].get("next_token")
        if token is None or (wait_for and len(entries) >= wait_for):
            return entries, token
        query = {"next_token": token}


async def run_stream(
    http: aiohttp.ClientSession, url: str, key: str, model_id: str, chunks: list[bytes]
) -> str:
    status, created = await call(
        http,
        "POST",
        f"{url}/api/v1/audio_sessions/",
        json={"type": "stream", "content_type": RAW_S16, "model_ids": [model_id]},
        headers={"x-api-key": key},
    )
    assert status == 200, created
    return str(created["session_id"])


async def test_sigkill_mid_stream_with_a_model_resumes_exactly_once(server: ServerProcess) -> None:
    key = make_key(server.data_dir, "detectors")
    model_id = await install(server.data_dir, key)
    audio, _ = click_and_pause_audio(9.0, (0.83, 2.61, 5.37, 7.12), (1.6, 4.1), seed=11)
    data = s16(audio)
    chunks = [data[i : i + HALF_SECOND_BYTES] for i in range(0, len(data), HALF_SECOND_BYTES)]
    cut = 9  # 4.5 s: the second pause (4.1-4.7 s) is under way
    server.start(wait=True)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        session_id = await run_stream(http, server.url, key, model_id, chunks)
        for seq in range(cut):
            status, body = await put_chunk(http, server.url, session_id, seq, chunks[seq])
            assert status == 200, body
        before, token = await read_log(http, server.url, session_id, None, wait_for=3)
        assert any(e["tag"] in TYPES for e in before), before
        await asyncio.sleep(0.3)  # let the last chunks' windows be stored, or not: either is fine
        server.signal(signal.SIGKILL)

    server.start(wait=True)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for seq in range(cut, len(chunks)):
            status, body = await put_chunk(http, server.url, session_id, seq, chunks[seq])
            assert status == 200, body
        await make_readonly(http, server.url, session_id)
        after, _ = await read_log(http, server.url, session_id, token)
        windows, _ = await read_all(http, server.url, session_id)
        whole, _ = await read_log(http, server.url, session_id, None)
        # The same audio on the restarted server, without a crash in between.
        reference_id = await run_stream(http, server.url, key, model_id, chunks)
        for seq, chunk in enumerate(chunks):
            status, body = await put_chunk(http, server.url, reference_id, seq, chunk)
            assert status == 200, body
        await make_readonly(http, server.url, reference_id)
        reference_windows, _ = await read_all(http, server.url, reference_id)
        reference_log, _ = await read_log(http, server.url, reference_id, None)
    assert windows == reference_windows
    assert len(windows) == 18
    assert whole == reference_log
    assert before + after == whole, "each entry read once, across the crash"
    custom = [e for e in whole if e["tag"] in TYPES and e["state"] == "closed"]
    assert sorted(e["tag"] for e in custom) == ["glitch"] * 4 + ["long_pause"] * 2
    keys = [(e["id"], e["state"]) for e in whole]
    assert len(keys) == len(set(keys))
    assert not np.isnan([e["confidence"] for e in whole]).any()


async def delete_model(data_dir: Path, key: str, model_id: str) -> None:
    settings = Settings.from_env({}, data_dir=data_dir)
    keys = KeyDirectory(settings.db_path)
    team = str(keys.authenticate(key).key_id)
    keys.close()
    store = StoreThread(Store(settings.db_path, fsync=False))
    try:
        assert await SqliteModelRepository(store).delete(team, model_id) is not None
    finally:
        store.close()


async def test_a_session_whose_model_is_gone_after_a_restart_fails_saying_so(
    server: ServerProcess,
) -> None:
    key = make_key(server.data_dir, "detectors")
    model_id = await install(server.data_dir, key)
    audio, _ = click_and_pause_audio(3.0, (0.83,), (), seed=1)
    data = s16(audio)
    server.start(wait=True)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        session_id = await run_stream(http, server.url, key, model_id, [])
        status, body = await put_chunk(http, server.url, session_id, 0, data[:HALF_SECOND_BYTES])
        assert status == 200, body
        server.signal(signal.SIGKILL)
    await delete_model(server.data_dir, key, model_id)
    server.start(wait=True)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        status, page = await call(
            http, "GET", f"{server.url}/api/v1/audio_sessions/{session_id}/status"
        )
        assert status == 200, page
        assert page["state"] == "readonly", page
        assert model_id in page["error"] and "after a restart" in page["error"], page
