"""The inference pieces alone: blocks and chunking do not change a detector's answer, config
overrides apply to every type's rule, and the repository's claim skips canceled jobs."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from models.heads.features import frame_features
from server.inference import detect
from server.inference.detect import StreamingDetector, effective_rules
from server.inference.repository import (
    CANCELED_ERROR,
    InferenceFileRecord,
    InferenceJobRecord,
    SqliteInferenceRepository,
)
from server.runner import HeadRunner, load_head_runner
from server.store import Store, StoreThread
from tests.detector_fixtures import click_and_pause_audio, tiny_head_onnx


@pytest.fixture(scope="module")
def runner() -> HeadRunner:
    return load_head_runner(tiny_head_onnx())


@pytest.mark.parametrize("block_frames", [37, 300, detect.BLOCK_FRAMES])
def test_blocks_and_chunks_do_not_change_the_probabilities(
    runner: HeadRunner, block_frames: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    audio, _ = click_and_pause_audio(30.0, [1.2, 7.3, 20.0], [3.5, 12.0], seed=5)
    whole = runner.run(frame_features(runner.spec, samples=audio))
    monkeypatch.setattr(detect, "BLOCK_FRAMES", block_frames)
    rng = np.random.default_rng(block_frames)
    detector = StreamingDetector(runner, runner.rules)
    at = 0
    while at < audio.size:
        size = int(rng.integers(1, 30_000))
        detector.push(audio[at : at + size])
        at += size
    found = detector.finish()
    np.testing.assert_allclose(np.concatenate(detector._probabilities), whole, atol=1e-6)
    assert detector.sample_count == audio.size
    assert [name for name, *_ in found].count("glitch") == 3
    assert [name for name, *_ in found].count("long_pause") == 2


def test_short_and_empty_input(runner: HeadRunner) -> None:
    detector = StreamingDetector(runner, runner.rules)
    detector.push(np.zeros(100, dtype=np.float32))  # shorter than one frame's window
    assert detector.finish() == [] and detector.sample_count == 100
    assert StreamingDetector(runner, runner.rules).finish() == []


def test_overrides_apply_to_every_type_and_absent_ones_keep_each_types_own(
    runner: HeadRunner,
) -> None:
    rules = effective_rules(runner.rules, None, 200.0, None)
    assert [r.merge_window_ms for r in rules] == [200.0, 200.0]
    assert [r.threshold for r in rules] == [r.threshold for r in runner.rules]
    assert [r.onset_shift_ms for r in rules] == [r.onset_shift_ms for r in runner.rules]
    assert effective_rules(runner.rules, None, None, None) == runner.rules


async def test_claim_takes_each_file_once_and_skips_canceled_jobs(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    store = StoreThread(Store(db, fsync=False))
    try:
        repository = SqliteInferenceRepository(store)
        await repository.prepare()
        now = time.time()
        for job_id in ("live", "canceled"):
            job = InferenceJobRecord(job_id, "t", "m", {}, (), False, now, now)
            file = InferenceFileRecord(
                f"{job_id}-file", job_id, "t", "a.wav", "audio/wav", 1, "k", "upload",
                "pending", now, now,
            )  # fmt: skip
            await repository.create_job(job, (file,))
        assert await repository.cancel("t", "canceled", now)
        assert not await repository.cancel("other-team", "live", now)
        claimed = await repository.claim(now)
        assert claimed is not None and claimed.file_id == "live-file" and claimed.attempts == 1
        assert await repository.claim(now) is None
        gone = await repository.get_file("t", "canceled", "canceled-file")
        assert gone is not None and gone.status == "failed" and gone.error == CANCELED_ERROR
        assert await repository.get_job("other-team", "live") is None
    finally:
        store.close()
