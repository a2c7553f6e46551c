"""The dataset audio processor's child process: work runs outside the server's process (its own
GIL), and a child that dies fails only the file in hand."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.audio import DecodeLimits
from server.datasets.audio_processing import AudioProcessor, ProcessingFailed
from server.datasets.repository import SqliteAudioFileRepository
from server.storage.local import LocalBlobStore
from server.store import Store, StoreThread


@pytest.fixture
async def processor(tmp_path: Path) -> AsyncIterator[AudioProcessor]:
    store = StoreThread(Store(tmp_path / "tympan.db", fsync=False))
    blobs = LocalBlobStore(tmp_path / "blobs", fsync=False)
    processor = AudioProcessor(
        SqliteAudioFileRepository(store),
        blobs,
        DecodeLimits(),
        tmp_path / "work",
        max_upload_bytes=1 << 20,
    )
    try:
        yield processor
    finally:
        await processor.close()
        await blobs.close()
        store.close()


async def test_processing_runs_in_another_process_at_a_lower_priority(
    processor: AudioProcessor,
) -> None:
    child_pid = await processor.in_child(os.getpid)
    assert child_pid != os.getpid()
    assert await processor.in_child(os.getppid) == os.getpid()
    assert await processor.in_child(os.nice, 0) >= os.nice(0) + 10
    assert await processor.in_child(os.getpid) == child_pid  # one child, kept


async def test_a_child_that_dies_fails_the_file_and_the_next_gets_a_new_one(
    processor: AudioProcessor,
) -> None:
    first = await processor.in_child(os.getpid)
    with pytest.raises(ProcessingFailed, match="stopped its processing process"):
        await processor.in_child(os._exit, 3)  # as a decoder crash would end it
    second = await processor.in_child(os.getpid)
    assert second not in (first, os.getpid())
