"""Real processes, real signals: nothing acknowledged is lost across SIGKILL or SIGTERM."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np
import pytest

from tests.conftest import RAW_S16, SAMPLE_RATE_HZ, make_key, s16, tone
from tests.serverproc import ServerProcess

pytestmark = pytest.mark.timeout(180)
HALF_SECOND_BYTES = SAMPLE_RATE_HZ  # 0.5 s of s16 mono


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path / "var", env={"TYMPAN_FSYNC": "true", "TYMPAN_LOG_LEVEL": "WARNING"}
    )
    process.data_dir.mkdir(parents=True)
    yield process
    process.kill()


async def call(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, url, **kw) as response:
        body = await response.json() if response.status != 204 else None
        return response.status, body


async def put_chunk(
    http: aiohttp.ClientSession, url: str, session_id: str, seq: int, chunk: bytes
) -> tuple[int, Any]:
    return await call(
        http,
        "PUT",
        f"{url}/api/v1/audio_sessions/{session_id}/chunks/{seq}",
        json={"data": base64.b64encode(chunk).decode()},
    )


async def make_readonly(http: aiohttp.ClientSession, url: str, session_id: str) -> None:
    status, body = await call(
        http, "PATCH", f"{url}/api/v1/audio_sessions/{session_id}", json={"make_readonly": True}
    )
    assert status == 204, body


async def upload_forever(
    http: aiohttp.ClientSession, url: str, session_id: str, chunks: list[bytes], acked: list[int]
) -> None:
    """Upload until the server dies; record each acknowledged sequence number."""
    for seq, chunk in enumerate(chunks):
        try:
            status, body = await call(
                http,
                "PUT",
                f"{url}/api/v1/audio_sessions/{session_id}/chunks/{seq}",
                json={"data": base64.b64encode(chunk).decode()},
            )
        except (TimeoutError, aiohttp.ClientError):
            return
        assert status == 200, body
        acked.append(seq)
        await asyncio.sleep(0.03)  # keep uploads in flight when the kill comes


async def read_all(
    http: aiohttp.ClientSession, url: str, session_id: str, token: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """Follow next_token to the end; returns the results and the last token (None when finished)."""
    results: list[dict[str, Any]] = []
    params = {"next_token": token} if token else {"count": "50"}
    while True:
        status, page = await call(
            http, "GET", f"{url}/api/v1/audio_sessions/{session_id}/status", params=params
        )
        assert status == 200, page
        results.extend(page["inference"]["results"])
        token = page["inference"]["page"].get("next_token")
        if token is None:
            return results, None
        params = {"next_token": token}


def expected_windows(seconds: float) -> int:
    return 1 + max(0, int(np.ceil((seconds * SAMPLE_RATE_HZ - 15600) / 8000)))


async def test_sigkill_mid_upload_loses_nothing(server: ServerProcess) -> None:
    key = make_key(server.data_dir, "crash")
    server.start(wait=True)
    audio = s16(tone(523.0, 12.0, 0.3))
    chunks = [audio[i : i + HALF_SECOND_BYTES] for i in range(0, len(audio), HALF_SECOND_BYTES)]
    headers = {"x-api-key": key}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        sessions = []
        for kind in ["stream"] * 20 + ["file"] * 5:  # many sessions uploading at once
            status, created = await call(
                http,
                "POST",
                f"{server.url}/api/v1/audio_sessions/",
                json={"type": kind, "content_type": RAW_S16},
                headers=headers,
            )
            assert status == 200
            sessions.append((kind, created["session_id"], []))
        # a file session made readonly before the crash must finish its inference after it
        done_file = sessions[-1][1]
        for seq, chunk in enumerate(chunks):
            await call(
                http,
                "PUT",
                f"{server.url}/api/v1/audio_sessions/{done_file}/chunks/{seq}",
                json={"data": base64.b64encode(chunk).decode()},
            )
        await call(
            http,
            "PATCH",
            f"{server.url}/api/v1/audio_sessions/{done_file}",
            json={"make_readonly": True},
        )
        uploads = [
            asyncio.create_task(upload_forever(http, server.url, sid, chunks, acked))
            for _, sid, acked in sessions[:-1]
        ]
        await asyncio.sleep(0.6)
        first_stream = sessions[0][1]
        before, token_before = [], None
        status, page = await call(
            http,
            "GET",
            f"{server.url}/api/v1/audio_sessions/{first_stream}/status",
            params={"count": "3"},
        )
        before, token_before = page["inference"]["results"], page["inference"]["page"]["next_token"]
        server.signal(signal.SIGKILL)
        await asyncio.gather(*uploads)
    assert all(acked for _, _, acked in sessions[:-1]), "the kill came before any upload"
    assert all(len(acked) < len(chunks) for _, _, acked in sessions[:-1]), "the kill came too late"

    server.start(wait=True)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        for kind, session_id, acked in sessions[:-1]:
            status, page = await call(
                http, "GET", f"{server.url}/api/v1/audio_sessions/{session_id}/status"
            )
            assert status == 200
            next_seq = page["refs"]["chunk_sequence"]
            # every acknowledged chunk survived; at most the in-flight one also committed
            assert next_seq in (len(acked), len(acked) + 1), (kind, next_seq, len(acked))
            for seq in range(next_seq, len(chunks)):
                status, body = await put_chunk(http, server.url, session_id, seq, chunks[seq])
                assert status == 200, body
            await make_readonly(http, server.url, session_id)
        want = expected_windows(12.0)
        everyone = []
        for kind, session_id, _ in sessions:
            results, _ = await read_all(http, server.url, session_id)
            starts = [r["start_time"] for r in results]
            assert starts == [i * 0.5 for i in range(want)], (kind, starts)
            everyone.append(results)
        # streams that were killed, had their consumed audio pruned and were replayed give the
        # same windows as the file session that never saw the crash mid-stream
        assert all(results == everyone[-1] for results in everyone)
        # paging that started before the crash resumes without duplicates or gaps
        rest, _ = await read_all(http, server.url, first_stream, token_before)
        assert [r["start_time"] for r in before + rest] == [i * 0.5 for i in range(want)]


async def test_sigterm_is_graceful_and_loses_nothing(server: ServerProcess) -> None:
    key = make_key(server.data_dir, "term")
    server.start(wait=True)
    audio = s16(tone(800.0, 4.0, 0.3))
    chunks = [audio[i : i + HALF_SECOND_BYTES] for i in range(0, len(audio), HALF_SECOND_BYTES)]
    async with aiohttp.ClientSession() as http:
        status, created = await call(
            http,
            "POST",
            f"{server.url}/api/v1/audio_sessions/",
            json={"type": "stream", "content_type": RAW_S16},
            headers={"x-api-key": key},
        )
        session_id = created["session_id"]
        for seq in range(4):
            status, _ = await call(
                http,
                "PUT",
                f"{server.url}/api/v1/audio_sessions/{session_id}/chunks/{seq}",
                json={"data": base64.b64encode(chunks[seq]).decode()},
            )
            assert status == 200
    assert server.signal(signal.SIGTERM) == 0
    server.start(wait=True)
    async with aiohttp.ClientSession() as http:
        status, page = await call(
            http, "GET", f"{server.url}/api/v1/audio_sessions/{session_id}/status"
        )
        assert page["refs"]["chunk_sequence"] == 4 and page["state"] == "writable"
        for seq in range(4, len(chunks)):
            status, _ = await call(
                http,
                "PUT",
                f"{server.url}/api/v1/audio_sessions/{session_id}/chunks/{seq}",
                json={"data": base64.b64encode(chunks[seq]).decode()},
            )
            assert status == 200
        await call(
            http,
            "PATCH",
            f"{server.url}/api/v1/audio_sessions/{session_id}",
            json={"make_readonly": True},
        )
        results, _ = await read_all(http, server.url, session_id)
    assert [r["start_time"] for r in results] == [i * 0.5 for i in range(expected_windows(4.0))]


async def read_log(
    http: aiohttp.ClientSession, url: str, session_id: str, **params: str
) -> list[dict[str, Any]]:
    """A finished session's whole event log, following next_token."""
    entries: list[dict[str, Any]] = []
    query: dict[str, str] = {"count": "7", **params}
    while True:
        status, page = await call(
            http, "GET", f"{url}/api/v1/audio_sessions/{session_id}/events", params=query
        )
        assert status == 200, page
        entries.extend(page["events"])
        token = page["page"].get("next_token")
        if token is None:
            return entries
        query = {"next_token": token}


async def test_sigkill_mid_event_keeps_the_event_log(
    server: ServerProcess, speech_16k: np.ndarray
) -> None:
    """A kill while an event is open: after the restart the tracker carries on from the
    stored windows, so the event keeps its id, nothing is logged twice, and the log is the one
    the stored windows give (the same as if no crash had happened)."""
    key = make_key(server.data_dir, "events")
    server.start(wait=True)
    lead = np.zeros(SAMPLE_RATE_HZ, dtype=np.float32)
    audio = s16(np.concatenate([lead, speech_16k, lead, lead]))
    chunks = [audio[i : i + HALF_SECOND_BYTES] for i in range(0, len(audio), HALF_SECOND_BYTES)]
    headers = {"x-api-key": key}
    cut = 8  # one second of quiet, then three of speech: the Speech event is open
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        status, created = await call(
            http,
            "POST",
            f"{server.url}/api/v1/audio_sessions/",
            json={"type": "stream", "content_type": RAW_S16},
            headers=headers,
        )
        session_id = created["session_id"]
        for seq in range(cut):
            status, body = await put_chunk(http, server.url, session_id, seq, chunks[seq])
            assert status == 200, body
        status, page = await call(
            http, "GET", f"{server.url}/api/v1/audio_sessions/{session_id}/events"
        )
        while not page["events"]:  # long-polls until the stored windows open the event
            status, page = await call(
                http,
                "GET",
                f"{server.url}/api/v1/audio_sessions/{session_id}/events",
                params={"next_token": page["page"]["next_token"]},
            )
        assert [(e["tag"], e["state"]) for e in page["events"]] == [("Speech", "open")]
        opened = page["events"][0]
        server.signal(signal.SIGKILL)

    server.start(wait=True)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        for seq in range(cut, len(chunks)):
            status, body = await put_chunk(http, server.url, session_id, seq, chunks[seq])
            assert status == 200, body
        await make_readonly(http, server.url, session_id)
        log = await read_log(http, server.url, session_id)
        derived = await read_log(http, server.url, session_id, merge_window_ms="500")
    assert log == derived
    assert log[0] == opened
    keys = [(e["id"], e["state"]) for e in log]
    assert len(keys) == len(set(keys)), log
    closing = [e for e in log if e["id"] == opened["id"] and e["state"] == "closed"]
    assert len(closing) == 1 and closing[0]["start_time"] == opened["start_time"]


@pytest.fixture
def media_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """Uploads may stall 1 s at most, so a crash's leftovers are stale a second later."""
    process = ServerProcess(
        tmp_path / "var",
        env={"TYMPAN_LOG_LEVEL": "WARNING", "TYMPAN_BODY_READ_TIMEOUT_S": "1"},
    )
    process.data_dir.mkdir(parents=True)
    yield process
    process.kill()


async def test_sigkill_keeps_acknowledged_media_and_drops_half_uploads(
    media_server: ServerProcess,
) -> None:
    """An upload answered 200 survives SIGKILL whole (its sha256 still matches); an upload
    cut by the kill is not visible after the restart, and its temporary bytes are removed
    (once older than the body read timeout: no live upload stalls that long)."""
    server = media_server
    key = make_key(server.data_dir, "media")
    headers = {"Authorization": f"Bearer {key}"}
    done = os.urandom(300_000)
    server.start(wait=True)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        urls = {}
        for name in ("done.bin", "cut.bin"):
            status, body = await call(
                http,
                "POST",
                f"{server.url}/v1/media/input",
                json={"url": f"media://kill/{name}"},
                headers=headers,
            )
            assert status == 201, body
            urls[name] = body["url"]
        status, body = await call(http, "PUT", urls["done.bin"], data=done)
        assert status == 200 and body["sha256"] == hashlib.sha256(done).hexdigest(), body
        target = urlsplit(urls["cut.bin"])
        reader, writer = await asyncio.open_connection(target.hostname, target.port)
        writer.write(
            f"PUT {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: 5000000\r\n\r\n".encode()
            + os.urandom(1_000_000)
        )
        await writer.drain()
        incoming = server.data_dir / "blobs" / ".incoming"
        async with asyncio.timeout(30):  # the cut upload is being written when the kill comes
            while not incoming.is_dir() or not any(incoming.iterdir()):
                await asyncio.sleep(0.02)
        server.signal(signal.SIGKILL)
        writer.transport.abort()
        del reader

    await asyncio.sleep(1.5)  # the temporary file is now older than any live upload's stall
    server.start(wait=True)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        status, body = await call(
            http, "GET", f"{server.url}/v1/media/kill/done.bin", headers=headers
        )
        assert status == 200 and body["size_bytes"] == len(done), body
        assert body["sha256"] == hashlib.sha256(done).hexdigest()
        status, body = await call(
            http, "GET", f"{server.url}/v1/media/kill/cut.bin", headers=headers
        )
        assert status == 404, body
    stored = [p for p in (server.data_dir / "blobs").rglob("*") if p.is_file()]
    assert [p.read_bytes() == done for p in stored if ".incoming" not in p.parts] == [True]
    assert not any(".incoming" in p.parts for p in stored), "the half upload's bytes remain"
