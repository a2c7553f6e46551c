"""Decoding and inference never block the event loop: every callback the loop runs is timed in
CPU seconds of the loop's own thread, and a whole file session (decode of a compressed file,
240 windows through the model) and a live stream must produce none over ``SLOW_CALLBACK_S``.

CPU time, not wall time (what asyncio's debug mode measures): on a busy machine a short callback
can wait far longer than 0.1 s for a core or for the interpreter lock without doing any work,
which says nothing about the code; work done on the loop's thread is what blocks it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import numpy as np
import pytest

from server.audio.encode import encode_audio
from tests.conftest import RAW_S16, Api, s16, tone

SLOW_CALLBACK_S = 0.1  # a blocked loop shows far more: decoding 120 s of MP3 takes ~0.2 s


@pytest.fixture
def slow_callbacks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every callback whose run took more than ``SLOW_CALLBACK_S`` of its thread's CPU."""
    slow: list[str] = []
    original = asyncio.events.Handle._run

    def timed(handle: asyncio.Handle) -> None:
        started = time.thread_time()
        try:
            original(handle)
        finally:
            spent = time.thread_time() - started
            if spent > SLOW_CALLBACK_S:
                slow.append(f"{handle!r} took {spent:.3f} s of CPU")

    monkeypatch.setattr(asyncio.events.Handle, "_run", timed)
    yield slow


async def test_the_check_sees_a_blocked_loop(slow_callbacks: list[str]) -> None:
    def spin() -> None:
        deadline = time.thread_time() + 2 * SLOW_CALLBACK_S
        while time.thread_time() < deadline:
            pass

    asyncio.get_running_loop().call_soon(spin)
    await asyncio.sleep(0.01)
    assert len(slow_callbacks) == 1, slow_callbacks


@pytest.fixture
def mp3() -> bytes:
    """Encoded before the test's loop runs: the encoding is the test's work, not the server's."""
    return encode_audio(np.stack([tone(440, 120.0), tone(660, 120.0)], axis=1), 16_000, "mp3")


async def test_no_callback_blocks_the_loop(api: Api, mp3: bytes, slow_callbacks: list[str]) -> None:
    file_id = (await api.create(type="file", content_type="audio/mpeg"))["session_id"]
    for seq, start in enumerate(range(0, len(mp3), 256 * 1024)):
        await api.put(file_id, seq, mp3[start : start + 256 * 1024])
    stream_id = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    await api.readonly(file_id)
    audio = s16(tone(300, 5.0))
    for seq in range(10):
        await api.put(stream_id, seq, audio[seq * 16000 : (seq + 1) * 16000])
    await api.readonly(stream_id)
    assert len(await api.all_results(file_id)) == 240
    assert len(await api.all_results(stream_id)) == 10
    assert not slow_callbacks, slow_callbacks
