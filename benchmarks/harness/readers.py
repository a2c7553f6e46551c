"""One run of live streams whose results are read two ways at once: by a Server-Sent Events
feed, or by long-polling ``/status`` with ``next_token``. One reader per stream; the two kinds
are interleaved (stream i's kind follows ``sse_share``), so both see the same server, the same
load and the same moments of interference from anything else on the machine.

Senders are the latency harness's (``load.send_stream``): chunk k leaves at ``start + k * 0.5 s``,
the next only after the previous one is acknowledged. Readers know nothing of the sender: the
SSE reader holds its feed open from before the first chunk to ``event: end``; the polling reader
always has one long-poll outstanding (the server answers when the next window is stored, or
after ``status_wait_s``). Each records when each window index arrived; latencies are computed
after the run against when the completing chunk was sent and acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from benchmarks.harness.audio import CHUNK_SAMPLES, RAW_CONTENT_TYPE, ChunkBodies
from benchmarks.harness.client import ApiClient, RequestFailed
from benchmarks.harness.load import (
    HOP_S,
    LoadConfig,
    StreamState,
    Tally,
    bounded,
    completing_chunk,
    send_stream,
    windows_padded,
)
from benchmarks.harness.server import ServerHandle
from benchmarks.harness.sse import sse_messages

__all__ = ["READERS", "ReaderKind", "ReaderRun", "StreamRecord", "reader_kinds", "run_readers"]

ReaderKind = Literal["sse", "poll"]
READERS: tuple[ReaderKind, ...] = ("sse", "poll")
_CONTROL_CONCURRENCY = 32
_START_MARGIN_S = 0.3
_SSE_READ_TIMEOUT_S = 60.0  # the server sends a heartbeat every 15 s on an idle feed
_MAX_RECONNECTS = 5
_RECONNECT_PAUSE_S = 0.2
_MAX_STATUS_ERRORS = 20
_STATUS_ERROR_PAUSE_S = 0.2
_EMPTY_PAGE_PAUSE_S = 0.005


def reader_kinds(streams: int, sse_share: float) -> list[ReaderKind]:
    """Stream i reads by SSE when the running count of SSE readers steps up at i: a share of
    0.5 alternates poll, sse, poll, sse, ...; 0 and 1 give one kind only."""
    return [
        "sse" if int((i + 1) * sse_share + 1e-9) > int(i * sse_share + 1e-9) else "poll"
        for i in range(streams)
    ]


@dataclass
class StreamRecord:
    """One stream's sender state and what its reader saw."""

    kind: ReaderKind
    session_id: str
    state: StreamState
    expected: int
    received_at: dict[int, float] = field(default_factory=dict)
    duplicates: int = 0
    out_of_order: int = 0
    mislabelled: int = 0  # an SSE window whose index disagrees with its start_time
    ended: str | None = None  # SSE: the state in ``event: end``; polling: "finished"
    ended_at: float = 0.0
    highest: int = -1

    def receive(self, index: int, at: float) -> None:
        if index in self.received_at:
            self.duplicates += 1
            return
        if index < self.highest:
            self.out_of_order += 1
        self.highest = max(self.highest, index)
        self.received_at[index] = at


@dataclass
class ReaderRun:
    """A run's raw measurements: the senders' tally (chunks, acks, send lag, CPU), the
    streams, and what each reader kind counted on the side."""

    senders: Tally
    streams: list[StreamRecord]
    requests: Counter[str] = field(default_factory=Counter)  # polls, SSE connections
    heartbeats: int = 0
    log_entries: int = 0
    empty_pages: int = 0
    reconnects: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    load_average_1m: tuple[float, float] = (0.0, 0.0)  # before, after

    def end_latencies_ms(self, kind: ReaderKind) -> tuple[list[float], list[float]]:
        """From the client receiving the acknowledgement of ``make_readonly`` to the reader
        receiving the last (zero-padded) window, and to it learning that the session is over
        (SSE: ``event: end``; polling: a page without ``next_token``)."""
        tail: list[float] = []
        end: list[float] = []
        for record in self.streams:
            readonly_at = record.state.readonly_at
            if record.kind != kind or readonly_at <= 0:
                continue
            last = record.expected - 1
            if last in record.received_at:
                tail.append((record.received_at[last] - readonly_at) * 1000)
            if record.ended_at > 0:
                end.append((record.ended_at - readonly_at) * 1000)
        return tail, end

    def latencies_ms(self, kind: ReaderKind, since: Literal["ack", "send"]) -> list[float]:
        """Window latency for one reader kind, from the completing chunk's acknowledgement or
        sending. Windows completed only by the end-of-stream padding are left out."""
        out: list[float] = []
        for record in self.streams:
            if record.kind != kind:
                continue
            stamps = record.state.acked_at if since == "ack" else record.state.sent_at
            for index, at in record.received_at.items():
                chunk = completing_chunk(index)
                if chunk < len(stamps) and stamps[chunk] > 0:
                    out.append((at - stamps[chunk]) * 1000)
        return out


def _window_index(result: dict[str, Any]) -> int:
    return round(result["start_time"] / HOP_S)


async def _poll(
    client: ApiClient, record: StreamRecord, run: ReaderRun, config: LoadConfig
) -> None:
    """Long-poll ``/status`` along ``next_token`` until the session is finished."""
    token: str | None = None
    while True:
        page: Any = None
        for _ in range(_MAX_STATUS_ERRORS):
            run.requests["poll"] += 1
            try:
                page = await client.status(record.session_id, token, config.page_count)
                break
            except (aiohttp.ClientError, TimeoutError, RequestFailed) as exc:
                run.errors[f"poll {type(exc).__name__}"] += 1
                await asyncio.sleep(_STATUS_ERROR_PAUSE_S)
        if page is None:
            return  # given up: what is missing is counted as missing
        received_at = time.perf_counter()
        results = page["inference"]["results"]
        for result in results:
            record.receive(_window_index(result), received_at)
        token = page["inference"]["page"].get("next_token")
        if token is None:
            record.ended, record.ended_at = "finished", received_at
            return
        if not results:
            run.empty_pages += 1
            if record.state.input_done and not record.state.readonly_ok:
                return  # the session will never finish
            await asyncio.sleep(_EMPTY_PAGE_PAUSE_S)


async def _follow_sse(
    client: ApiClient, record: StreamRecord, run: ReaderRun, first: aiohttp.ClientResponse
) -> None:
    """Read the feed to ``event: end``, reconnecting with ``Last-Event-ID`` if it breaks."""
    response: aiohttp.ClientResponse | None = first
    last_id: str | None = None
    for attempt in range(_MAX_RECONNECTS + 1):
        try:
            if response is None:
                run.reconnects += 1
                await asyncio.sleep(_RECONNECT_PAUSE_S * attempt)
                run.requests["sse"] += 1
                response = await client.open_sse(record.session_id, last_id, _SSE_READ_TIMEOUT_S)
            async for message in sse_messages(response):
                if message.comment is not None:
                    run.heartbeats += message.comment == "heartbeat"
                    continue
                last_id = message.id or last_id
                if message.event == "window":
                    window = json.loads(message.data)
                    index = int(window["index"])
                    record.mislabelled += index != _window_index(window)
                    record.receive(index, message.received_at)
                elif message.event in ("open", "closed"):
                    run.log_entries += 1
                elif message.event == "end":
                    record.ended = str(json.loads(message.data).get("state"))
                    record.ended_at = message.received_at
                    return
            run.errors["sse ended without end"] += 1
        except (aiohttp.ClientError, TimeoutError, RequestFailed) as exc:
            run.errors[f"sse {type(exc).__name__}"] += 1
        finally:
            if response is not None:
                response.close()
            response = None


async def _stream(
    client: ApiClient,
    record: StreamRecord,
    feed: aiohttp.ClientResponse | None,
    bodies: ChunkBodies,
    body_offset: int,
    start_at: float,
    config: LoadConfig,
    run: ReaderRun,
) -> None:
    async with asyncio.TaskGroup() as group:
        group.create_task(
            send_stream(
                client,
                record.session_id,
                record.state,
                bodies,
                body_offset,
                start_at,
                config,
                run.senders,
            )
        )
        if feed is not None:
            group.create_task(_follow_sse(client, record, run, feed))
        else:
            group.create_task(_poll(client, record, run, config))


async def _open_feed(client: ApiClient, record: StreamRecord) -> aiohttp.ClientResponse | None:
    if record.kind != "sse":
        return None
    return await client.open_sse(record.session_id, None, _SSE_READ_TIMEOUT_S)


async def run_readers(
    server: ServerHandle, config: LoadConfig, bodies: ChunkBodies, sse_share: float
) -> ReaderRun:
    """Create the sessions, open every SSE feed, stream, read to the end, delete; returns the
    measurements. Opening the feeds before the clock starts keeps connection set-up out of the
    first windows' latency (a polling reader has no set-up to hide)."""
    kinds = reader_kinds(config.streams, sse_share)
    run = ReaderRun(senders=Tally(), streams=[])
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=config.request_timeout_s)
    chunks = config.chunks_per_stream
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        client = ApiClient(http, server.url, server.api_key, config.transport)
        ids = await bounded(
            [client.create("stream", RAW_CONTENT_TYPE) for _ in kinds], _CONTROL_CONCURRENCY
        )
        for kind, session_id in zip(kinds, ids, strict=True):
            run.streams.append(
                StreamRecord(
                    kind, session_id, StreamState(chunks), windows_padded(chunks * CHUNK_SAMPLES)
                )
            )
        run.requests["sse"] += kinds.count("sse")
        feeds = await bounded((_open_feed(client, r) for r in run.streams), _CONTROL_CONCURRENCY)
        tally = run.senders
        tally.stream_windows_expected = sum(r.expected for r in run.streams)
        load_before = os.getloadavg()[0]
        server_cpu_before = server.cpu_seconds()
        harness_cpu_before = time.process_time()
        t0 = time.perf_counter() + _START_MARGIN_S
        budget_s = _START_MARGIN_S + HOP_S + config.duration_s + config.drain_timeout_s
        try:
            async with asyncio.timeout(budget_s), asyncio.TaskGroup() as group:
                for i, (record, feed) in enumerate(zip(run.streams, feeds, strict=True)):
                    start_at = t0 + HOP_S * i / len(run.streams)
                    offset = (i * 7) % len(bodies)  # streams start at different points of the clip
                    group.create_task(
                        _stream(client, record, feed, bodies, offset, start_at, config, run)
                    )
        except TimeoutError:
            tally.timed_out = True
        finally:
            for feed in feeds:
                if feed is not None:
                    feed.close()
        tally.wall_s = time.perf_counter() - t0
        tally.harness_cpu_s = time.process_time() - harness_cpu_before
        server_cpu_after = server.cpu_seconds()
        if server_cpu_before is not None and server_cpu_after is not None:
            tally.server_cpu_s = server_cpu_after - server_cpu_before
        run.load_average_1m = (load_before, os.getloadavg()[0])
        tally.stream_windows_received = sum(len(r.received_at) for r in run.streams)
        await bounded([client.delete(r.session_id) for r in run.streams], _CONTROL_CONCURRENCY)
    return run
