"""Faults inside a running server: the disk fills up, the model fails. The server stays up,
answers with clear errors, loses nothing it acknowledged, and recovers."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np

from server.appkeys import SERVICE
from tests.conftest import RAW_S16, Api, s16, tone


async def store_call(api: Api, fn: Any) -> Any:
    """Run ``fn`` on the server's own store connection, on its store thread."""
    return await api.client.app[SERVICE]._store.write(fn)


async def test_disk_full_fails_cleanly_and_recovers(api: Api) -> None:
    session_id = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    audio = s16(tone(440, 3.0))
    await api.put(session_id, 0, audio[:16000])
    # The database may not grow any further: SQLite reports SQLITE_FULL, as on a full disk.
    pages = await store_call(api, lambda s: s._db.execute("PRAGMA page_count").fetchone()[0])
    await store_call(api, lambda s: s._db.execute(f"PRAGMA max_page_count={pages}"))
    response = await api.client.put(
        f"/api/v1/audio_sessions/{session_id}/chunks/1",
        json={"data": base64.b64encode(b"\x01" * 400_000).decode()},
    )
    body = await response.json()
    assert response.status == 500 and body["status_code"] == 500
    assert "storage" in body["error"] and "not applied" in body["error"]
    assert "Traceback" not in body["error"]
    # the failed chunk was not acknowledged: the session still expects chunk 1
    status = await api.status(session_id, headers={"Prefer": "wait=0"})
    assert status["refs"]["chunk_sequence"] == 1
    assert (await api.client.get("/healthz")).status == 200
    # space returns: the same chunk is accepted and the stream goes on
    await store_call(api, lambda s: s._db.execute("PRAGMA max_page_count=1073741823"))
    for seq in range(1, 6):
        await api.put(session_id, seq, audio[seq * 16000 : (seq + 1) * 16000])
    await api.readonly(session_id)
    results = await api.all_results(session_id)
    assert [r["start_time"] for r in results] == [i * 0.5 for i in range(6)]
    check = await store_call(api, lambda s: s._db.execute("PRAGMA integrity_check").fetchone()[0])
    assert check == "ok"


async def test_model_failure_fails_the_sessions_not_the_server(api: Api, monkeypatch: Any) -> None:
    scheduler = api.client.app[SERVICE]._engine.scheduler
    working = scheduler._run_batch

    def broken(patches: np.ndarray) -> np.ndarray:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(scheduler, "_run_batch", broken)
    session_id = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    audio = s16(tone(440, 1.5))
    for seq in range(3):
        await api.put(session_id, seq, audio[seq * 16000 : (seq + 1) * 16000])
    for _ in range(100):
        status = await api.status(session_id, headers={"Prefer": "wait=0"})
        if "error" in status:
            break
        await asyncio.sleep(0.05)
    assert status["state"] == "readonly"
    assert status["error"].startswith("inference failed")
    assert "next_token" not in status["inference"]["page"]
    # the model comes back: the server serves new sessions as before
    monkeypatch.setattr(scheduler, "_run_batch", working)
    fresh = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    for seq in range(3):
        await api.put(fresh, seq, audio[seq * 16000 : (seq + 1) * 16000])
    await api.readonly(fresh)
    assert len(await api.all_results(fresh)) == 3  # two live windows and the padded tail
