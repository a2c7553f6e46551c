"""Decoding and inference never block the event loop: asyncio's debug mode reports every
callback that runs longer than ``slow_callback_duration``; a whole file session (decode of a
compressed file, 240 windows through the model) and a live stream must produce none."""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from server.audio.encode import encode_audio
from tests.conftest import RAW_S16, Api, s16, tone

SLOW_CALLBACK_S = 0.1  # a blocked loop shows far more: decoding 120 s of MP3 takes ~0.2 s


async def test_no_callback_blocks_the_loop(api: Api, caplog) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_CALLBACK_S
    caplog.set_level(logging.WARNING, logger="asyncio")
    try:
        mp3 = encode_audio(np.stack([tone(440, 120.0), tone(660, 120.0)], axis=1), 16_000, "mp3")
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
    finally:
        loop.set_debug(False)
    slow = [
        r.getMessage() for r in caplog.records if r.name == "asyncio" and "took" in r.getMessage()
    ]
    assert not slow, slow
