"""The datasets' and audio files' SQLite repositories: team scoping and conditional transitions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.datasets.repository import (
    ArtifactTypeRecord,
    AudioFileRecord,
    DatasetRecord,
    SqliteAudioFileRepository,
    SqliteDatasetRepository,
    with_status,
)
from server.store import Store, StoreThread


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StoreThread]:
    thread = StoreThread(Store(tmp_path / "tympan.db", fsync=False))
    try:
        yield thread
    finally:
        thread.close()


def _dataset(dataset_id: str, team: str, created_at_s: float) -> DatasetRecord:
    glitch = ArtifactTypeRecord("glitch", "Audio pop or click", "#FF4444")
    return DatasetRecord(dataset_id, team, "TTS", "d", (glitch,), created_at_s, created_at_s)


def _audio(audio_id: str, team: str = "t1", dataset_id: str = "d1") -> AudioFileRecord:
    return AudioFileRecord(
        audio_id, team, dataset_id, "a.wav", "audio/wav", 100, f"{team}/x/{audio_id}",
        "uploading", 1.0, 1.0,
    )  # fmt: skip


async def test_datasets_are_scoped_by_team_and_paged_newest_first(store: StoreThread) -> None:
    repository = SqliteDatasetRepository(store)
    await repository.prepare()
    await repository.prepare()  # idempotent
    for index in range(3):
        await repository.create(_dataset(f"d{index}", "t1", float(index)))
    await repository.create(_dataset("other", "t2", 9.0))
    assert await repository.get("t2", "d0") is None
    got = await repository.get("t1", "d0")
    assert got == _dataset("d0", "t1", 0.0)
    page, total = await repository.page("t1", 2, 0)
    assert [d.dataset_id for d in page] == ["d2", "d1"] and total == 3
    renamed = DatasetRecord("d0", "t1", "new", "", got.artifact_types, 0.0, 5.0)
    assert await repository.update(renamed)
    assert not await repository.update(DatasetRecord("d0", "t2", "x", "", (), 0.0, 5.0))
    assert (await repository.get("t1", "d0")) == renamed
    assert not await repository.delete("t2", "d0")
    assert await repository.delete("t1", "d0")
    assert await repository.get("t1", "d0") is None


async def test_audio_transitions_happen_once(store: StoreThread) -> None:
    repository = SqliteAudioFileRepository(store)
    await repository.prepare()
    files = [_audio(f"a{index:04d}") for index in range(1200)]
    for record in files:
        await repository.create(record)
    await repository.create(_audio("b", team="t2"))
    many = await repository.get_many("t1", "d1", [r.audio_id for r in files] + ["b", "nope"])
    assert len(many) == 1200  # more ids than one statement may bind, and never another team's
    assert await repository.get("t2", "d1", "a0000") is None
    first = files[0]
    pending = with_status(first, "pending", 2.0, size_bytes=100)
    assert await repository.transition(first.audio_id, ("uploading",), pending)
    assert not await repository.transition(first.audio_id, ("uploading",), pending)
    claimed = with_status(pending, "processing", 3.0, attempts=1)
    assert await repository.transition(first.audio_id, ("pending",), claimed)
    assert await repository.with_status(("processing",), 10) == [claimed]
    page, total = await repository.page("t1", "d1", 2, 0)
    assert [r.audio_id for r in page] == ["a0000", "a0001"] and total == 1200
    removed = await repository.delete_dataset("t1", "d1")
    assert len(removed) == 1200 and await repository.get("t1", "d1", "a0001") is None
    assert await repository.get("t2", "d1", "b") is not None
