"""Training jobs and models over real HTTP: what creation refuses, a real training run on small
generated audio that makes one model, progress and cancellation of a run in its child process,
reproducible metrics, team isolation, download and removal of models, and the jobs table's
rules (attempts, one model per job) seen from the training side."""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import onnxruntime as ort
import pytest

from models.heads.export import read_metadata
from protocol.jobs import PENDING
from protocol.training import TRAINING
from server.app import create_app
from server.appkeys import BLOBS, DETECTOR_MODELS, STORE
from server.config import Settings
from server.jobs.repository import JobRecord, SqliteJobRepository
from server.training.handler import model_id_of
from tests.detector_fixtures import install_model
from tests.training_fixtures import FAST_CONFIG, WAIT_S, Training

pytestmark = pytest.mark.timeout(300)

LEASE_S = 0.6  # progress reaches the row with each renewal, every third of this
METRIC_KEYS = {"precision", "recall", "f1", "collar_ms", "frame_auprc", "threshold"}
LONG_CONFIG = {**FAST_CONFIG, "epochs": 1000}  # far longer than any test waits


@pytest.fixture
def training_settings(audio_settings: Settings) -> Settings:
    return audio_settings.replace(job_lease_s=LEASE_S)


@pytest.fixture
async def training(
    aiohttp_client: Callable[..., Any], training_settings: Settings, api_key: str
) -> Training:
    return Training(await aiohttp_client(create_app(training_settings)), api_key)


def _training_children() -> list[multiprocessing.Process]:
    return [p for p in multiprocessing.active_children() if p.name == "tympan-training"]


async def _until(check: Callable[[], Any]) -> Any:
    async with asyncio.timeout(WAIT_S):
        while not (found := await check()):
            await asyncio.sleep(0.02)
    return found


async def test_a_completed_job_has_made_one_model_with_metrics_per_type(
    training: Training,
) -> None:
    dataset_id, published = await training.published()
    job = await training.create(dataset_id, published["id"])
    assert job["status"] == "pending" and job["progress_percent"] == 0
    assert job["metrics"] is None and job["model_id"] is None
    assert job["config"] == {
        **FAST_CONFIG,
        "artifact_types": ["glitch", "long_pause"],  # none given: what the set annotates
        "learning_rate": 0.001,
    }
    done = await training.finished(job["id"])
    assert done["status"] == "completed", done
    assert done["progress_percent"] == 100 and done["error_message"] is None
    assert done["started_at"] is not None and done["completed_at"] is not None
    assert set(done["metrics"]) == {"glitch", "long_pause"}
    for scores in done["metrics"].values():
        assert set(scores) >= METRIC_KEYS and scores["collar_ms"] == 20.0
        assert 0 <= scores["f1"] <= 1 and 0 < scores["threshold"] < 1
    models = await training.call("GET", "/models", 200)
    assert models["total"] == 1
    (model,) = models["items"]
    assert model == await training.call("GET", f"/models/{done['model_id']}", 200)
    assert model["id"] == done["model_id"] and model["training_job_id"] == job["id"]
    assert model["annotation_set_hash"] == published["content_hash"]
    assert model["annotation_set_id"] == published["id"] and model["dataset_id"] == dataset_id
    assert model["version"] == 1 and model["name"] == "TTS glitches v1"
    assert model["artifact_types"] == ["glitch", "long_pause"]
    assert model["metrics"] == done["metrics"]
    page = await training.call("GET", "/training-jobs", 200)
    assert page["total"] == 1 and page["items"] == [done]
    by_dataset = await training.call("GET", f"/models?dataset_id={dataset_id}", 200)
    assert by_dataset["total"] == 1
    assert (await training.call("GET", f"/models?dataset_id={uuid.uuid4()}", 200))["total"] == 0


async def test_the_model_file_downloads_as_stored_and_runs_elsewhere(training: Training) -> None:
    dataset_id, published = await training.published()
    done = await training.finished((await training.create(dataset_id, published["id"]))["id"])
    model = await training.call("GET", f"/models/{done['model_id']}", 200)
    response = await training.client.get(
        f"/api/v1/models/{model['id']}/file", headers={"X-API-Key": training.key}
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/octet-stream"
    data = await response.read()
    assert len(data) == model["size_bytes"]
    assert hashlib.sha256(data).hexdigest() == model["sha256"]
    metadata = read_metadata(data)
    assert metadata["artifact_types"] == ["glitch", "long_pause"]
    assert metadata["model_id"] == model["id"]
    assert metadata["annotation_set_hash"] == published["content_hash"]
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    assert session.get_outputs()[0].name == "probabilities"


async def test_deleting_a_model_removes_its_row_and_file_but_a_dataset_keeps_none(
    training: Training,
) -> None:
    dataset_id, published = await training.published()
    done = await training.finished((await training.create(dataset_id, published["id"]))["id"])
    model_id = done["model_id"]
    record = await training.client.app[DETECTOR_MODELS].repository.get(training.team, model_id)
    assert record is not None
    # Deleting the dataset keeps its models: they are self-contained.
    await training.call("DELETE", f"/datasets/{dataset_id}", 204)
    assert (await training.call("GET", f"/models/{model_id}", 200))["dataset_id"] == dataset_id
    await training.call("DELETE", f"/models/{model_id}", 204)
    await training.call("GET", f"/models/{model_id}", 404)
    await training.call("GET", f"/models/{model_id}/file", 404)
    await training.call("DELETE", f"/models/{model_id}", 404)
    assert await training.client.app[BLOBS].stat(record.blob_key) is None
    assert (await training.call("GET", "/models", 200))["total"] == 0
    # The job still says what it made.
    assert (await training.job(done["id"]))["model_id"] == model_id


async def test_creation_refuses_what_cannot_train(training: Training, other_key: str) -> None:
    dataset_id, published = await training.published(count=3)
    set_id = published["id"]
    message = await training.create(dataset_id, set_id, {"epochs": 3, "epoch": 2}, 400)
    assert "epoch" in message["error"] and "unknown" in message["error"]
    for key, value in (
        ("epochs", 0),
        ("epochs", "20"),
        ("validation_split", 1.0),
        ("learning_rate", 0),
        ("batch_size", 1.5),
        ("seed", -1),
        ("artifact_types", ["glitch", "glitch"]),
    ):
        refused = await training.create(dataset_id, set_id, {key: value}, 400)
        assert f"config.{key}" in refused["error"], (key, refused)
    refused = await training.create(dataset_id, set_id, {"artifact_types": ["hiss"]}, 400)
    assert "hiss" in refused["error"] and "not an artifact type" in refused["error"]
    # 404: no such dataset, a set of another dataset, another team's dataset
    await training.create(str(uuid.uuid4()), set_id, expect=404)
    other_dataset = await training.dataset()
    await training.create(other_dataset, set_id, expect=404)
    mallory = Training(training.client, other_key)
    assert "dataset" in (await mallory.create(dataset_id, set_id, expect=404))["error"]
    # 409: a draft
    draft_files = {await training.ready_file(other_dataset, _silence()): []}
    draft = await training.annotation_set(other_dataset, draft_files, publish=False)
    conflict = await training.create(other_dataset, draft["id"], expect=409)
    assert "publish" in conflict["error"]
    # 400: too few files; a type without an annotation
    lone = {await training.ready_file(other_dataset, _silence()): [("glitch", 100, 102)]}
    one = await training.annotation_set(other_dataset, lone)
    assert "at least 2" in (await training.create(other_dataset, one["id"], expect=400))["error"]
    files = {await training.ready_file(other_dataset, _silence()): [("glitch", 100, 102)]}
    files[await training.ready_file(other_dataset, _silence())] = []
    unannotated = await training.annotation_set(other_dataset, files)
    wanted = {"artifact_types": ["glitch", "long_pause"]}
    refused = await training.create(other_dataset, unannotated["id"], wanted, 400)
    assert "no annotation of long_pause" in refused["error"]
    assert (await training.call("GET", "/training-jobs", 200))["total"] == 0


def _silence() -> Any:
    import numpy as np

    return np.zeros(16_000, dtype=np.float32)


async def test_progress_shows_while_the_child_trains_and_cancel_stops_it(
    training: Training,
) -> None:
    dataset_id, published = await training.published()
    job = await training.create(dataset_id, published["id"], LONG_CONFIG)

    async def training_under_way() -> Any:
        seen = await training.job(job["id"])
        return seen if seen["status"] == "running" and seen["progress_percent"] > 5 else None

    running = await _until(training_under_way)
    assert running["progress_percent"] < 100 and running["metrics"] is None
    # The mechanism that keeps the event loop free: training is another process, at nice 10,
    # and the server answers while it works.
    (child,) = _training_children()
    assert child.pid is not None and child.pid != os.getpid()
    own_nice = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(19, own_nice + 10)
    await training.call("GET", f"/datasets/{dataset_id}", 200)
    assert (await training.job(job["id"]))["status"] == "running"
    later = await _until(lambda: _progressed(training, job["id"], running["progress_percent"]))
    assert later["status"] == "running"

    canceled = await training.call("POST", f"/training-jobs/{job['id']}/cancel", 200)
    assert canceled["status"] == "canceled"

    async def child_gone() -> bool:
        return not _training_children()

    await _until(child_gone)
    await asyncio.sleep(3 * LEASE_S)  # a renewal or a finish would land in this time
    final = await training.job(job["id"])
    assert final["status"] == "canceled" and final["model_id"] is None
    assert (await training.call("GET", "/models", 200))["total"] == 0
    again = await training.call("POST", f"/training-jobs/{job['id']}/cancel", 200)
    assert again["status"] == "canceled"


async def _progressed(training: Training, job_id: str, past: float) -> Any:
    seen = await training.job(job_id)
    return seen if seen["progress_percent"] > past else None


async def test_a_killed_training_process_fails_the_job_clearly(training: Training) -> None:
    dataset_id, published = await training.published()
    job = await training.create(dataset_id, published["id"], LONG_CONFIG)

    async def child_started() -> Any:
        return _training_children()

    (child,) = await _until(child_started)
    assert child.pid is not None
    os.kill(child.pid, 9)
    failed = await training.finished(job["id"])
    assert failed["status"] == "failed"
    assert "training process stopped unexpectedly" in failed["error_message"]


async def test_the_same_seed_gives_the_same_metrics(training: Training) -> None:
    dataset_id, published = await training.published()
    first = await training.create(dataset_id, published["id"])
    second = await training.create(dataset_id, published["id"])
    a, b = await training.finished(first["id"]), await training.finished(second["id"])
    assert a["status"] == b["status"] == "completed"
    assert a["metrics"] == b["metrics"] and a["model_id"] != b["model_id"]
    versions = {m["version"] for m in (await training.call("GET", "/models", 200))["items"]}
    assert versions == {1, 2}


async def test_another_team_sees_none_of_it(training: Training, other_key: str) -> None:
    dataset_id, published = await training.published()
    done = await training.finished((await training.create(dataset_id, published["id"]))["id"])
    mallory = Training(training.client, other_key)
    await mallory.job(done["id"], expect=404)
    await mallory.call("POST", f"/training-jobs/{done['id']}/cancel", 404)
    assert (await mallory.call("GET", "/training-jobs", 200))["total"] == 0
    assert (await mallory.call("GET", "/models", 200))["total"] == 0
    for method, path in (
        ("GET", f"/models/{done['model_id']}"),
        ("GET", f"/models/{done['model_id']}/file"),
        ("DELETE", f"/models/{done['model_id']}"),
    ):
        await mallory.call(method, path, 404)
    await training.call("GET", f"/models/{done['model_id']}", 200)
    # The Jobs API (/v1/jobs) shows only its own kind of job.
    headers = {"X-API-Key": training.key}
    listed = await (await training.client.get("/v1/jobs", headers=headers)).json()
    assert listed["items"] == []
    response = await training.client.get(f"/v1/jobs/{done['id']}", headers=headers)
    assert response.status == 404


async def _queue_directly(training: Training, dataset_id: str, published: Any, **kw: Any) -> str:
    """A training job row as the API writes one (``attempts`` as a crashed server left it)."""
    now_s = time.time()
    config = {**FAST_CONFIG, "artifact_types": ["glitch", "long_pause"], "learning_rate": 0.001}
    spec = {
        "dataset_id": dataset_id,
        "annotation_set_id": published["id"],
        "annotation_set_hash": published["content_hash"],
        "config": config,
    }
    job_id = kw.pop("job_id", str(uuid.uuid4()))
    record = JobRecord(job_id, training.team, TRAINING, spec, PENDING, 0.0, now_s, now_s, **kw)
    assert await SqliteJobRepository(training.client.app[STORE]).create(record)
    return job_id


async def test_a_job_that_keeps_stopping_its_server_fails_after_three_attempts(
    training: Training,
) -> None:
    dataset_id, published = await training.published()
    job_id = await _queue_directly(training, dataset_id, published, attempts=3)
    failed = await training.finished(job_id)
    assert failed["status"] == "failed"
    assert failed["error_message"] == "the server stopped 3 times while running this job"


async def test_a_job_whose_model_was_stored_before_a_crash_only_finishes(
    training: Training,
) -> None:
    dataset_id, published = await training.published()
    job_id = str(uuid.uuid4())
    loader = training.client.app[DETECTOR_MODELS]
    stored = await install_model(
        loader.repository,
        training.client.app[BLOBS],
        training.team,
        dataset_id=dataset_id,
        model_id=model_id_of(job_id),
    )
    await _queue_directly(training, dataset_id, published, job_id=job_id, attempts=1)
    done = await training.finished(job_id)
    assert done["status"] == "completed" and done["model_id"] == stored.model_id
    assert (await training.call("GET", "/models", 200))["total"] == 1
