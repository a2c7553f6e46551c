"""Custom detector models: the repository's rows, the stored ONNX file, the runner built from it."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from models.heads.features import frame_features
from models.heads.metrics import frames_to_events
from protocol.errors import NotFound
from server import runner as runner_module
from server.detectors.loader import ModelLoader, ModelUnusable
from server.detectors.repository import SqliteModelRepository
from server.runner import ModelLoadError, load_head_runner
from server.storage import LocalBlobStore
from server.store import Store, StoreThread
from tests.detector_fixtures import (
    TYPES,
    click_and_pause_audio,
    install_model,
    tiny_head,
    tiny_head_onnx,
)


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[tuple[SqliteModelRepository, LocalBlobStore]]:
    store = StoreThread(Store(tmp_path / "tympan.db", fsync=False))
    blobs = LocalBlobStore(tmp_path / "blobs", fsync=False)
    repository = SqliteModelRepository(store)
    await repository.prepare()
    try:
        yield repository, blobs
    finally:
        await blobs.close()
        store.close()


async def test_models_are_versioned_per_dataset_and_stored_once(
    parts: tuple[SqliteModelRepository, LocalBlobStore],
) -> None:
    repository, blobs = parts
    first = await install_model(repository, blobs, "1", model_id="m1")
    second = await install_model(repository, blobs, "1", model_id="m2")
    other_dataset = await install_model(repository, blobs, "1", model_id="m3", dataset_id="d2")
    assert (first.version, second.version, other_dataset.version) == (1, 2, 1)
    again = await install_model(repository, blobs, "1", model_id="m1", name="renamed")
    assert again == first  # an id already stored is answered as it is
    assert first.sha256 == hashlib.sha256(tiny_head_onnx()).hexdigest()
    assert first.size_bytes == len(tiny_head_onnx())
    assert first.artifact_types == TYPES
    records, total = await repository.page("1", 10, 0)
    assert total == 3 and {r.model_id for r in records} == {"m1", "m2", "m3"}
    records, total = await repository.page("1", 10, 0, dataset_id="d2")
    assert (total, [r.model_id for r in records]) == (1, ["m3"])


async def test_another_teams_model_is_not_found(
    parts: tuple[SqliteModelRepository, LocalBlobStore],
) -> None:
    repository, blobs = parts
    await install_model(repository, blobs, "1", model_id="m1")
    assert await repository.get("2", "m1") is None
    assert await repository.delete("2", "m1") is None
    assert await repository.page("2", 10, 0) == ([], 0)
    loader = ModelLoader(repository, blobs)
    with pytest.raises(NotFound):
        await loader.load("2", "m1")
    assert (await loader.load("1", "m1")).record.model_id == "m1"
    removed = await repository.delete("1", "m1")
    assert removed is not None and await repository.get("1", "m1") is None


async def test_loader_caches_and_refuses_a_changed_file(
    parts: tuple[SqliteModelRepository, LocalBlobStore],
) -> None:
    repository, blobs = parts
    record = await install_model(repository, blobs, "1", model_id="m1")
    loader = ModelLoader(repository, blobs)
    first = await loader.load("1", "m1")
    assert (await loader.load("1", "m1")) is first
    loader.forget("m1")

    async def tampered() -> AsyncIterator[bytes]:
        yield tiny_head_onnx()[:-1] + b"\x00"

    await blobs.put_stream(record.blob_key, tampered(), max_bytes=record.size_bytes)
    with pytest.raises(ModelUnusable, match="not the one that was stored"):
        await loader.load("1", "m1")
    await blobs.delete(record.blob_key)
    with pytest.raises(ModelUnusable, match="missing"):
        await loader.load("1", "m1")


def test_head_runner_reads_its_metadata_and_matches_numpy() -> None:
    head = tiny_head()
    runner = load_head_runner(tiny_head_onnx())
    assert runner.artifact_types == TYPES
    assert runner.spec == head.spec
    assert runner.rules == head.rules
    assert runner.context_frames == head.weights.architecture.reach_frames
    audio, _ = click_and_pause_audio(5.0, [1.0, 3.3], [2.0], seed=7)
    features = frame_features(runner.spec, samples=audio)
    np.testing.assert_allclose(runner.run(features), head.predict(features), atol=1e-5)


def test_head_runner_chunks_a_long_input_without_seams(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = load_head_runner(tiny_head_onnx())
    audio, _ = click_and_pause_audio(4.0, [0.5, 1.9], [2.5], seed=3)
    features = frame_features(runner.spec, samples=audio)
    whole = runner.run(features)
    monkeypatch.setattr(runner_module, "_HEAD_CHUNK_FRAMES", 37)
    np.testing.assert_allclose(runner.run(features), whole, atol=1e-6)  # ORT blocks by length


def test_the_tiny_head_finds_its_clicks_and_pauses() -> None:
    """The fixture is a real detector: other tests may rely on it finding what it was taught."""
    runner = load_head_runner(tiny_head_onnx())
    audio, annotations = click_and_pause_audio(8.0, [0.7, 2.9, 6.4], [4.0], seed=42)
    probabilities = runner.run(frame_features(runner.spec, samples=audio))
    for column, kind in enumerate(TYPES):
        wanted = [(s, e) for k, s, e in annotations if k == kind]
        found = [
            (s, e) for s, e, _ in frames_to_events(probabilities[:, column], runner.rules[column])
        ]
        assert len(found) == len(wanted), (kind, found, wanted)
        for (start, _), (want_start, _) in zip(sorted(found), sorted(wanted), strict=True):
            assert abs(start - want_start) < 60.0, (kind, found, wanted)


def test_a_file_that_is_not_a_head_is_refused() -> None:
    with pytest.raises(ModelLoadError):
        load_head_runner(b"not an onnx file")
