"""One load run: N live streams paced in real time and M file uploads against one server, on one
event loop through one shared connection pool.

Each stream has a sender (chunk k leaves at ``start + k * 0.5 s``, the next chunk only after the
previous one is acknowledged, as a real client does) and a reader that follows ``next_token`` with
long-polls and stamps every result on arrival. A window's latency runs from sending the chunk
that completes it to receiving its result. The reader polls only once acknowledged audio can have
produced a window it has not seen, so an idle stream costs no requests.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

from benchmarks.harness.audio import (
    CHUNK_SAMPLES,
    RAW_CONTENT_TYPE,
    SAMPLE_RATE_HZ,
    WAV_CONTENT_TYPE,
    ChunkBodies,
)
from benchmarks.harness.client import ApiClient, RequestFailed
from benchmarks.harness.server import ServerHandle

__all__ = [
    "FileRecord",
    "LoadConfig",
    "StreamState",
    "Tally",
    "bounded",
    "completing_chunk",
    "run_load",
    "send_stream",
    "windows_padded",
]

HOP_S = 0.5
HOP_SAMPLES = int(HOP_S * SAMPLE_RATE_HZ)
WINDOW_SAMPLES = 15_600  # 0.975 s at 16 kHz
_CONTROL_CONCURRENCY = 32
_START_MARGIN_S = 0.3
_RETRY_BACKOFF_S = 0.1
_STATUS_ERROR_PAUSE_S = 0.2
_MAX_STATUS_ERRORS = 20
_UNEXPECTED_EMPTY_PAUSE_S = 0.005
_RESULTS_PAGE = 1024

T = TypeVar("T")


def windows_complete(samples: int) -> int:
    """Windows that ``samples`` of a stream complete, without end-of-stream padding."""
    return 0 if samples < WINDOW_SAMPLES else (samples - WINDOW_SAMPLES) // HOP_SAMPLES + 1


def windows_padded(samples: int) -> int:
    """Windows of a finished session: its tail is zero-padded to one more window."""
    if samples <= 0:
        return 0
    return 1 + max(0, math.ceil((samples - WINDOW_SAMPLES) / HOP_SAMPLES))


def completing_chunk(window: int, chunk_samples: int = CHUNK_SAMPLES) -> int:
    """Index of the chunk whose arrival completes a window."""
    return math.ceil((window * HOP_SAMPLES + WINDOW_SAMPLES) / chunk_samples) - 1


@dataclass(frozen=True)
class LoadConfig:
    streams: int
    files: int
    duration_s: float
    transport: str = "json"
    file_seconds: float = 300.0
    page_count: int = 64
    max_attempts: int = 3
    request_timeout_s: float = 30.0
    drain_timeout_s: float = 90.0

    @property
    def chunks_per_stream(self) -> int:
        return max(2, round(self.duration_s / HOP_S))


@dataclass
class FileRecord:
    audio_s: float
    wall_s: float
    windows_expected: int
    windows_received: int
    chunks: int


@dataclass
class Tally:
    """Raw measurements of one run, filled in by the stream and file tasks."""

    window_latency_ms: list[float] = field(default_factory=list)
    ack_latency_ms: list[float] = field(default_factory=list)
    file_ack_latency_ms: list[float] = field(default_factory=list)
    send_lag_ms: list[float] = field(default_factory=list)
    stream_windows_expected: int = 0
    stream_windows_received: int = 0
    tail_windows: int = 0
    duplicate_windows: int = 0
    chunks_sent: int = 0
    chunks_acknowledged: int = 0
    failed_chunks: int = 0
    retries: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    status_requests: int = 0
    empty_status_pages: int = 0
    files: list[FileRecord] = field(default_factory=list)
    file_windows_expected: int = 0
    timed_out: bool = False
    wall_s: float = 0.0
    server_cpu_s: float | None = None
    harness_cpu_s: float = 0.0


class StreamState:
    """What the sender tells the reader: when each chunk left and was acknowledged (0.0: not
    yet), how many were acknowledged, when the end of the stream was acknowledged."""

    def __init__(self, chunks: int) -> None:
        self.sent_at = [0.0] * chunks
        self.acked_at = [0.0] * chunks
        self.acked = 0
        self.readonly_at = 0.0
        self.input_done = False
        self.readonly_ok = False
        self.changed = asyncio.Event()

    def bump(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def waiting_for_input(self, received: int) -> bool:
        """Every window the acknowledged audio completes is in; more needs more chunks."""
        return not self.input_done and windows_complete(self.acked * CHUNK_SAMPLES) <= received


async def bounded(awaitables: Iterable[Awaitable[T]], limit: int) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def one(awaitable: Awaitable[T]) -> T:
        async with gate:
            return await awaitable

    return list(await asyncio.gather(*(one(a) for a in awaitables)))


async def _put(
    client: ApiClient, session_id: str, seq: int, body: bytes, config: LoadConfig, tally: Tally
) -> float | None:
    """Send a chunk, retrying on failure; returns the acknowledgement latency, or None."""
    started = time.perf_counter()
    failed = False
    for attempt in range(config.max_attempts):
        if attempt:
            tally.retries += 1
            await asyncio.sleep(_RETRY_BACKOFF_S * attempt)
        try:
            status = await client.put_chunk(session_id, seq, body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            tally.errors[type(exc).__name__] += 1
            failed = True
            continue
        if status == 200:
            tally.failed_chunks += failed
            return (time.perf_counter() - started) * 1000
        tally.errors[f"HTTP {status}"] += 1
        failed = True
    tally.failed_chunks += 1
    return None


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def send_stream(
    client: ApiClient,
    session_id: str,
    state: StreamState,
    bodies: ChunkBodies,
    body_offset: int,
    start_at: float,
    config: LoadConfig,
    tally: Tally,
) -> None:
    try:
        for seq in range(len(state.sent_at)):
            target = start_at + seq * HOP_S
            await _sleep_until(target)
            sent = time.perf_counter()
            tally.send_lag_ms.append(max(0.0, sent - target) * 1000)
            state.sent_at[seq] = sent
            tally.chunks_sent += 1
            ack_ms = await _put(
                client, session_id, seq, bodies.at(body_offset + seq), config, tally
            )
            if ack_ms is None:
                return
            state.acked_at[seq] = time.perf_counter()
            tally.ack_latency_ms.append(ack_ms)
            tally.chunks_acknowledged += 1
            state.acked = seq + 1
            state.bump()
        status = await client.make_readonly(session_id)
        state.readonly_at = time.perf_counter()
        state.readonly_ok = status == 204
        if not state.readonly_ok:
            tally.errors[f"readonly HTTP {status}"] += 1
    finally:
        state.input_done = True
        state.bump()


async def _status(
    client: ApiClient, session_id: str, token: str | None, config: LoadConfig, tally: Tally
) -> Any:
    for _ in range(_MAX_STATUS_ERRORS):
        tally.status_requests += 1
        try:
            return await client.status(session_id, token, config.page_count)
        except (aiohttp.ClientError, TimeoutError, RequestFailed) as exc:
            tally.errors[f"status {type(exc).__name__}"] += 1
            await asyncio.sleep(_STATUS_ERROR_PAUSE_S)
    return None  # give up on this session: its missing windows are counted as missing


async def _read_stream(
    client: ApiClient, session_id: str, state: StreamState, config: LoadConfig, tally: Tally
) -> None:
    chunks = len(state.sent_at)
    seen: set[int] = set()
    token: str | None = None
    while True:
        changed = state.changed
        if state.waiting_for_input(len(seen)):
            await changed.wait()  # nothing can come before more audio is acknowledged
            continue
        page = await _status(client, session_id, token, config, tally)
        if page is None:
            return
        received_at = time.perf_counter()
        results = page["inference"]["results"]
        for result in results:
            window = round(result["start_time"] / HOP_S)
            if window in seen:
                tally.duplicate_windows += 1
                continue
            seen.add(window)
            tally.stream_windows_received += 1
            chunk = completing_chunk(window)
            if chunk < chunks and state.sent_at[chunk] > 0:
                tally.window_latency_ms.append((received_at - state.sent_at[chunk]) * 1000)
            else:
                tally.tail_windows += 1
        token = page["inference"]["page"].get("next_token")
        if token is None:
            return
        if results:
            continue
        tally.empty_status_pages += 1
        if state.input_done and not state.readonly_ok:
            return  # the session will never finish; what is missing is counted as missing
        if not state.waiting_for_input(len(seen)):
            await asyncio.sleep(_UNEXPECTED_EMPTY_PAUSE_S)


async def _stream(
    client: ApiClient,
    session_id: str,
    index: int,
    bodies: ChunkBodies,
    start_at: float,
    config: LoadConfig,
    tally: Tally,
) -> None:
    state = StreamState(config.chunks_per_stream)
    tally.stream_windows_expected += windows_padded(config.chunks_per_stream * CHUNK_SAMPLES)
    offset = (index * 7) % len(bodies)  # streams start at different points of the clip
    async with asyncio.TaskGroup() as group:
        group.create_task(
            send_stream(client, session_id, state, bodies, offset, start_at, config, tally)
        )
        group.create_task(_read_stream(client, session_id, state, config, tally))


async def _file(
    client: ApiClient,
    session_id: str,
    bodies: ChunkBodies,
    samples: int,
    start_at: float,
    config: LoadConfig,
    tally: Tally,
) -> None:
    await _sleep_until(start_at)
    first = time.perf_counter()
    for seq, body in enumerate(bodies.bodies):
        ack_ms = await _put(client, session_id, seq, body, config, tally)
        if ack_ms is None:
            return
        tally.file_ack_latency_ms.append(ack_ms)
    status = await client.make_readonly(session_id)
    if status != 204:
        tally.errors[f"readonly HTTP {status}"] += 1
        return
    seen: set[int] = set()
    token: str | None = None
    while True:
        page = await _status(client, session_id, token, config, tally)
        if page is None:
            return
        seen.update(round(r["start_time"] / HOP_S) for r in page["inference"]["results"])
        token = page["inference"]["page"].get("next_token")
        if token is None:
            break
    tally.files.append(
        FileRecord(
            audio_s=samples / SAMPLE_RATE_HZ,
            wall_s=time.perf_counter() - first,
            windows_expected=windows_padded(samples),
            windows_received=len(seen),
            chunks=len(bodies),
        )
    )


async def run_load(
    server: ServerHandle,
    config: LoadConfig,
    stream_bodies: ChunkBodies,
    file_bodies: ChunkBodies | None,
    file_samples: int,
) -> Tally:
    """Create the sessions, run the load, then delete them; returns the measurements."""
    tally = Tally(file_windows_expected=config.files * windows_padded(file_samples))
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=config.request_timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        client = ApiClient(http, server.url, server.api_key, config.transport)
        stream_ids = await bounded(
            (client.create("stream", RAW_CONTENT_TYPE) for _ in range(config.streams)),
            _CONTROL_CONCURRENCY,
        )
        file_ids = await bounded(
            (client.create("file", WAV_CONTENT_TYPE) for _ in range(config.files)),
            _CONTROL_CONCURRENCY,
        )
        server_cpu_before = server.cpu_seconds()
        harness_cpu_before = time.process_time()
        t0 = time.perf_counter() + _START_MARGIN_S
        budget_s = _START_MARGIN_S + HOP_S + config.duration_s + config.drain_timeout_s
        try:
            async with asyncio.timeout(budget_s), asyncio.TaskGroup() as group:
                for i, session_id in enumerate(stream_ids):
                    start_at = t0 + HOP_S * i / len(stream_ids)
                    group.create_task(
                        _stream(client, session_id, i, stream_bodies, start_at, config, tally)
                    )
                for session_id in file_ids:
                    assert file_bodies is not None
                    group.create_task(
                        _file(client, session_id, file_bodies, file_samples, t0, config, tally)
                    )
        except TimeoutError:
            tally.timed_out = True
        tally.wall_s = time.perf_counter() - t0
        tally.harness_cpu_s = time.process_time() - harness_cpu_before
        server_cpu_after = server.cpu_seconds()
        if server_cpu_before is not None and server_cpu_after is not None:
            tally.server_cpu_s = server_cpu_after - server_cpu_before
        await bounded((client.delete(s) for s in [*stream_ids, *file_ids]), _CONTROL_CONCURRENCY)
    return tally
