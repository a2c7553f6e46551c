"""The client against the real server over real HTTP: safe retries, resume, exactly-once results.

Faults are injected by a small HTTP proxy in front of the real app (lost responses, slow answers,
503s) and, for restarts, by running ``tympan serve`` as a subprocess and killing it mid-upload.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from protocol.client import (
    RetryPolicy,
    SessionFailed,
    Transport,
    TransportError,
    TympanClient,
    Window,
)
from protocol.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
)
from protocol.states import SessionState
from protocol.sync_client import SyncTympanClient
from server.app import create_app
from server.config import Settings
from tests.conftest import RAW_S16, SAMPLE_RATE_HZ, make_key, s16, tone
from tests.serverproc import ServerProcess, free_port

HALF_SECOND_BYTES = SAMPLE_RATE_HZ  # 0.5 s of s16 mono
# Many quick attempts: a restart on a loaded 2-core machine can take several seconds.
FAST_RETRY = RetryPolicy(
    max_attempts=200, initial_backoff_s=0.02, max_backoff_s=0.3, max_elapsed_s=30.0
)

ServerFactory = Callable[..., Any]


def chunked(data: bytes, size: int = HALF_SECOND_BYTES) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


def base_url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
def live_server(tmp_path: Path) -> Any:
    server = ServerProcess(tmp_path / "live")
    key = make_key(server.data_dir, "cli")
    server.start()
    try:
        server.wait_ready()
        yield server, key
    finally:
        server.kill()


@dataclass
class Fault:
    method: str
    path_suffix: str
    kind: str  # "drop": forward, then close without answering; "slow": answer late; "503"
    times: int = 1


@dataclass
class Seen:
    method: str
    path: str
    request_type: str | None
    response_type: str | None
    status: int
    fault: str | None


class FaultyProxy:
    """An HTTP proxy in front of the real server that loses, delays or refuses chosen requests."""

    def __init__(self, upstream: str, slow_s: float = 1.0) -> None:
        self.upstream = upstream
        self.url = ""  # set once the proxy listens
        self.slow_s = slow_s
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.app = web.Application(client_max_size=4 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self._handle)
        self.app.cleanup_ctx.append(self._http_context)
        self._http: ClientSession | None = None

    def inject(self, method: str, path_suffix: str, kind: str, times: int = 1) -> None:
        self.faults.append(Fault(method, path_suffix, kind, times))

    def requests(self, method: str, path_suffix: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path.endswith(path_suffix)]

    async def _http_context(self, app: web.Application) -> AsyncIterator[None]:
        async with ClientSession() as http:
            self._http = http
            yield

    def _take(self, request: web.Request) -> str | None:
        for fault in self.faults:
            if fault.method == request.method and request.path.endswith(fault.path_suffix):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault.kind
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fault = self._take(request)
        request_type = request.headers.get("Content-Type")
        if fault == "503":
            self.seen.append(Seen(request.method, request.path, request_type, None, 503, fault))
            return web.json_response(
                {"error": "injected outage", "status_code": 503},
                status=503,
                headers={"Retry-After": "0"},
            )
        headers = {
            name: request.headers[name]
            for name in ("Content-Type", "Accept", "x-api-key")
            if name in request.headers
        }
        assert self._http is not None
        async with self._http.request(
            request.method, self.upstream + request.path_qs, data=body or None, headers=headers
        ) as upstream:
            payload = await upstream.read()
            status = upstream.status
            response_type = upstream.headers.get("Content-Type")
        self.seen.append(
            Seen(request.method, request.path, request_type, response_type, status, fault)
        )
        if fault == "drop":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if fault == "slow":
            await asyncio.sleep(self.slow_s)
        return web.Response(
            body=payload,
            status=status,
            headers={"Content-Type": response_type} if response_type else None,
        )


@pytest.fixture
async def app_url(aiohttp_server: ServerFactory, settings: Settings, api_key: str) -> str:
    return base_url(await aiohttp_server(create_app(settings)))


@pytest.fixture
async def proxy(aiohttp_server: ServerFactory, app_url: str) -> FaultyProxy:
    faulty = FaultyProxy(app_url)
    faulty.url = base_url(await aiohttp_server(faulty.app))
    return faulty


async def read_all(client: TympanClient, session_id: str) -> tuple[Window, ...]:
    """Every result in one page, after the session finished: the reference to compare with."""
    status = await client.status(session_id, offset=0, count=1000)
    assert status.page.next_token is None, "session is not finished"
    return status.results


def assert_same_windows(got: list[Window], expected: list[Window]) -> None:
    assert_contiguous(got, len(expected))
    for mine, theirs in zip(got, expected, strict=True):
        assert [t.name for t in mine.tags] == [t.name for t in theirs.tags]
        for a, b in zip(mine.tags, theirs.tags, strict=True):
            assert a.probability == pytest.approx(b.probability, abs=1e-3)


def assert_contiguous(windows: list[Window], expected_count: int) -> None:
    """No duplicates, no gaps, in order: start times step by exactly one hop."""
    assert [w.start_time for w in windows] == [0.5 * i for i in range(expected_count)]


async def test_results_walk_a_growing_stream_exactly_once(app_url: str, api_key: str) -> None:
    chunks = chunked(s16(tone(440.0, 6.0, 0.3)))
    async with TympanClient(app_url, api_key, retry=FAST_RETRY) as client:
        handle = await client.create_session("stream", RAW_S16)

        async def send() -> None:
            for seq, chunk in enumerate(chunks):
                await client.upload_chunk(handle.session_id, seq, chunk)
                await asyncio.sleep(0.08)
            await client.make_readonly(handle.session_id)

        sender = asyncio.create_task(send())
        seen: list[tuple[Window, bool]] = []
        async for window in client.results(handle.session_id, page_size=3):
            seen.append((window, sender.done()))
        await sender
        windows = [window for window, _ in seen]
        assert_contiguous(windows, 12)
        assert any(not upload_done for _, upload_done in seen), "never read while it grew"
        final = await client.status(handle.session_id, offset=0, count=100)
        assert final.state is SessionState.READONLY
        assert not final.in_progress
        assert final.page.next_token is None
        assert final.results == tuple(windows)


async def test_lost_slow_and_refused_requests_are_retried_safely(
    proxy: FaultyProxy, api_key: str
) -> None:
    chunks = chunked(s16(tone(880.0, 5.0, 0.3)))
    proxy.inject("PUT", "/chunks/2", "drop")  # applied by the server, answer lost
    proxy.inject("PUT", "/chunks/4", "slow")  # applied, answered after the client gave up
    proxy.inject("PUT", "/chunks/6", "503")  # refused
    proxy.inject("GET", "/status", "drop")
    proxy.inject("GET", "/status", "503")
    proxy.inject("PATCH", "", "drop")
    client = TympanClient(
        proxy.url,
        api_key,
        timeout_s=0.5,
        status_timeout_s=20.0,
        retry=FAST_RETRY,
    )
    async with client:
        handle = await client.create_session("stream", RAW_S16)

        async def send() -> None:
            refs = await client.upload(handle.session_id, chunks)
            assert refs.chunk_sequence == len(chunks)
            await client.make_readonly(handle.session_id)

        sender = asyncio.create_task(send())
        windows = [window async for window in client.results(handle.session_id, page_size=4)]
        await sender
        assert_contiguous(windows, 10)
        assert tuple(windows) == await read_all(client, handle.session_id)
    assert [s.status for s in proxy.requests("PUT", "/chunks/2")] == [200, 200]
    assert [s.status for s in proxy.requests("PUT", "/chunks/4")] == [200, 200]
    assert [s.status for s in proxy.requests("PUT", "/chunks/6")] == [503, 200]
    assert not proxy.faults, "every fault was exercised"


async def test_upload_resumes_where_the_server_is(proxy: FaultyProxy, api_key: str) -> None:
    chunks = chunked(s16(tone(660.0, 4.0, 0.3)))
    async with TympanClient(proxy.url, api_key, retry=FAST_RETRY) as client:
        handle = await client.create_session("stream", RAW_S16)
        first = await client.upload(handle.session_id, chunks[:3])
        assert first.chunk_sequence == 3
        consumed: list[int] = []
        refs = await client.upload(handle.session_id, chunks, on_chunk=consumed.append)
        assert refs.chunk_sequence == len(chunks)
        assert len(consumed) == len(chunks)
        await client.make_readonly(handle.session_id)
        windows = [window async for window in client.results(handle.session_id)]
        assert_contiguous(windows, 8)
    sent = [s.path.rsplit("/", 1)[1] for s in proxy.seen if s.method == "PUT"]
    assert sent == ["0", "1", "2", "0", "3", "4", "5", "6", "7"]  # one 409, then resume at 3
    assert proxy.requests("PUT", "/chunks/0")[1].status == 409


async def test_upload_cannot_skip_chunks_the_server_lacks(app_url: str, api_key: str) -> None:
    async with TympanClient(app_url, api_key, retry=FAST_RETRY) as client:
        handle = await client.create_session("file", RAW_S16)
        with pytest.raises(Conflict) as caught:
            await client.upload(handle.session_id, [b"\0\0" * 100], start_seq=5)
        assert caught.value.status_code == 409
        assert "next expected is 0" in caught.value.message
        assert "cannot go back" in caught.value.message


async def test_upload_survives_a_server_restart(tmp_path: Path, speech_16k: np.ndarray) -> None:
    """SIGKILL mid-upload, restart on the same data dir and port: the client retries, the upload
    and the results walk (both in flight during the kill) complete, exactly once. Then a new
    client, as after a crash of the uploader too, resumes a file upload where the server is."""
    server = ServerProcess(tmp_path / "var")
    key = make_key(server.data_dir, "restart")
    server.start()
    server.wait_ready()
    chunks = chunked(s16(speech_16k))
    restarts: list[asyncio.Task[None]] = []

    async def restart_later() -> None:
        await asyncio.sleep(0.4)
        server.start()

    async def killing_source() -> AsyncIterator[bytes]:
        for seq, chunk in enumerate(chunks):
            if seq == len(chunks) // 2:
                server.kill()
                restarts.append(asyncio.create_task(restart_later()))
            yield chunk
            await asyncio.sleep(0.03)

    try:
        async with TympanClient(server.url, key, retry=FAST_RETRY) as client:
            reference = await client.create_session("stream", RAW_S16)
            await client.upload(reference.session_id, chunks)
            await client.make_readonly(reference.session_id)
            expected = [window async for window in client.results(reference.session_id)]

            handle = await client.create_session("stream", RAW_S16)
            sending = asyncio.Event()

            async def send() -> None:
                source = killing_source()
                refs = await client.upload(
                    handle.session_id, source, on_chunk=lambda _: sending.set()
                )
                assert refs.chunk_sequence == len(chunks)
                await client.make_readonly(handle.session_id)

            sender = asyncio.create_task(send())
            await sending.wait()
            windows = [w async for w in client.results(handle.session_id, page_size=5)]
            await sender
            await asyncio.gather(*restarts)
            assert len(restarts) == 1
            assert_same_windows(windows, expected)
            assert any("Speech" in [t.name for t in w.tags] for w in windows)

            # Now the client dies with the server: a new one sends the whole file again.
            interrupted = await client.create_session("file", RAW_S16)
            await client.upload(interrupted.session_id, chunks[: len(chunks) // 2])
        server.kill()
        server.start()
        await asyncio.to_thread(server.wait_ready)
        async with TympanClient(server.url, key, retry=FAST_RETRY) as fresh:
            refs = await fresh.upload(interrupted.session_id, chunks)
            assert refs.chunk_sequence == len(chunks)
            await fresh.make_readonly(interrupted.session_id)
            resumed = [w async for w in fresh.results(interrupted.session_id)]
        assert_same_windows(resumed, expected)
    finally:
        server.kill()


@pytest.mark.parametrize("transport", ["json", "msgpack"])
async def test_transports_give_the_same_results(
    proxy: FaultyProxy, api_key: str, transport: Transport
) -> None:
    chunks = chunked(s16(tone(500.0, 3.0, 0.3)))
    url = proxy.url
    async with TympanClient(url, api_key, transport=transport) as client:
        handle = await client.create_session("file", RAW_S16, total_size=sum(map(len, chunks)))
        await client.upload(handle.session_id, chunks)
        windows = [window async for window in client.results(handle.session_id)]
    assert_contiguous(windows, 6)
    media = f"application/{transport}"
    for seen in proxy.seen:
        if seen.method in ("POST", "PUT", "PATCH"):
            assert seen.request_type == media
        if seen.status == 200:
            assert (seen.response_type or "").startswith(media)


@pytest.mark.parametrize("transport", ["json", "msgpack"])
async def test_errors_carry_status_and_message(
    app_url: str, api_key: str, transport: Transport
) -> None:
    async with TympanClient(app_url, "not-a-key", transport=transport) as stranger:
        with pytest.raises(Unauthorized) as unauthorized:
            await stranger.create_session("stream", RAW_S16)
    assert unauthorized.value.status_code == 401
    assert unauthorized.value.message == "API key is missing, invalid or revoked"

    async with TympanClient(app_url, api_key, transport=transport) as client:
        with pytest.raises(BadRequest) as bad:
            await client.create_session("stream", "audio/x-nonsense")
        assert bad.value.status_code == 400
        assert "audio/x-nonsense" in bad.value.message

        with pytest.raises(NotFound) as missing:
            await client.status("no-such-session")
        assert missing.value.status_code == 404
        assert str(missing.value) == "session does not exist or has been deleted"

        handle = await client.create_session("stream", RAW_S16)
        with pytest.raises(Conflict) as conflict:
            await client.upload_chunk(handle.session_id, 3, b"\0\0")
        assert conflict.value.status_code == 409
        assert "the next expected is 0" in conflict.value.message

        with pytest.raises(PayloadTooLarge) as too_large:
            await client.upload_chunk(handle.session_id, 0, b"\0" * (5 * 1024 * 1024 + 2))
        assert too_large.value.status_code == 413

        await client.make_readonly(handle.session_id)
        with pytest.raises(Forbidden) as forbidden:
            await client.upload_chunk(handle.session_id, 0, b"\0\0")
        assert forbidden.value.status_code == 403
        assert "not writable" in forbidden.value.message


async def test_unreachable_server_raises_transport_error() -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.01)
    started = time.monotonic()
    async with TympanClient(f"http://127.0.0.1:{free_port()}", "key", retry=policy) as client:
        with pytest.raises(TransportError, match="after 3 attempt"):
            await client.create_session("stream", RAW_S16)
    assert time.monotonic() - started < 5.0


async def test_a_failed_session_raises_after_its_windows(app_url: str, api_key: str) -> None:
    async with TympanClient(app_url, api_key) as client:
        handle = await client.create_session("stream", "audio/wav")
        await client.upload_chunk(handle.session_id, 0, b"this is not a RIFF header at all" * 8)
        await client.make_readonly(handle.session_id)
        with pytest.raises(SessionFailed) as failed:
            async for _ in client.results(handle.session_id):
                pass
        assert failed.value.session_id == handle.session_id
        assert failed.value.error
        windows = [w async for w in client.results(handle.session_id, raise_on_error=False)]
        assert windows == []


async def test_delete_whose_answer_was_lost_can_still_succeed(
    proxy: FaultyProxy, api_key: str
) -> None:
    async with TympanClient(proxy.url, api_key, retry=FAST_RETRY) as client:
        handle = await client.create_session("stream", RAW_S16)
        proxy.inject("DELETE", handle.session_id, "drop")
        await client.delete(handle.session_id, missing_ok=True)
        with pytest.raises(NotFound):
            await client.status(handle.session_id)
        with pytest.raises(NotFound):
            await client.delete(handle.session_id)
    assert [s.status for s in proxy.requests("DELETE", handle.session_id)] == [204, 404, 404]


def test_sync_client_end_to_end(live_server: tuple[ServerProcess, str]) -> None:
    server, key = live_server
    chunks = chunked(s16(tone(300.0, 3.0, 0.3)))
    with SyncTympanClient(server.url, key, transport="msgpack") as client:
        handle = client.create_session("stream", RAW_S16)
        assert handle.window_hop_s == 0.5
        assert client.upload(handle.session_id, chunks).chunk_sequence == len(chunks)
        client.make_readonly(handle.session_id)
        windows = list(client.results(handle.session_id, page_size=2))
        assert_contiguous(windows, 6)
        first_two = client.results(handle.session_id, page_size=2)
        assert [next(first_two), next(first_two)] == windows[:2]
        first_two.close()  # closes the async walk on the client's loop
        assert client.status(handle.session_id).state is SessionState.READONLY
        left_open = client.results(handle.session_id, page_size=1)
        assert next(left_open) == windows[0]
        client.delete(handle.session_id)
        with pytest.raises(NotFound):
            client.status(handle.session_id)
    del left_open  # its walk was closed with the client; collecting it now is harmless
    gc.collect()
    with pytest.raises(RuntimeError, match="closed"):
        client.status(handle.session_id)
