"""Jobs on media over real HTTP on loopback, against the real app and the real model: a
sound-events job on uploaded speech runs to ``succeeded`` with windows and a Speech event, team
isolation, bad inputs, cancelling, the signed webhook, and a job whose worker died runs again
after a restart, once."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from protocol.jobs import PENDING, RUNNING, SOUND_EVENTS, SUCCEEDED, SoundEventsInput
from server.app import create_app
from server.appkeys import STORE
from server.audio.encode import encode_audio, encode_wav
from server.config import Settings
from server.jobs.repository import JobRecord, SqliteJobRepository
from server.jobs.runner import MAX_ATTEMPTS
from tests.conftest import SAMPLE_RATE_HZ
from tests.test_media import bearer, presign, put_bytes

SPEECH = "meetings/speech.wav"
TEAM = "1"  # api_key is the first key made on the data dir: its id is its team


@pytest.fixture
def job_settings(media_settings: Settings) -> Settings:
    # A short lease: workers poll (jobs written past the API) and renew often.
    return media_settings.replace(
        webhook_retry_base_s=0.02, webhook_timeout_s=60.0, job_lease_s=2.0
    )


@pytest.fixture
async def jobs_client(
    aiohttp_client: Callable[..., Any], job_settings: Settings, api_key: str
) -> TestClient:
    client: TestClient = await aiohttp_client(create_app(job_settings))
    return client


@pytest.fixture
def speech_wav(speech_16k: np.ndarray) -> bytes:
    return encode_wav(speech_16k, SAMPLE_RATE_HZ)


async def upload(client: TestClient, key: str, object_key: str, data: bytes) -> None:
    await put_bytes(client, await presign(client, key, object_key), data)


async def create_job(client: TestClient, key: str, body: Any, expect: int = 200) -> Any:
    response = await client.post("/v1/sound-events", json=body, headers=bearer(key))
    answer = await response.json()
    assert response.status == expect, answer
    return answer


async def get_job(client: TestClient, key: str, job_id: str, expect: int = 200) -> Any:
    response = await client.get(f"/v1/jobs/{job_id}", headers=bearer(key))
    answer = await response.json()
    assert response.status == expect, answer
    return answer


async def finished(client: TestClient, key: str, job_id: str, seen: list[Any] | None = None) -> Any:
    async with asyncio.timeout(120):
        while True:
            job = await get_job(client, key, job_id)
            if seen is not None:
                seen.append(job)
            if job["status"] in ("succeeded", "failed", "canceled"):
                return job
            await asyncio.sleep(0.05)


async def test_speech_job_succeeds_with_windows_and_a_speech_event(
    jobs_client: TestClient, api_key: str, speech_wav: bytes, speech_16k: np.ndarray
) -> None:
    await upload(jobs_client, api_key, SPEECH, speech_wav)
    created = await create_job(jobs_client, api_key, {"url": f"media://{SPEECH}"})
    assert created["status"] == "pending" and created["jobId"]
    seen: list[Any] = []
    job = await finished(jobs_client, api_key, created["jobId"], seen)
    assert job["status"] == "succeeded", job
    assert job["progress"] == 100
    progress = [j["progress"] for j in seen]
    assert progress == sorted(progress) and all(0 <= p <= 100 for p in progress)
    assert {"jobId", "status", "createdAt", "updatedAt", "output", "outputExpiresAt"} <= set(job)
    windows = job["output"]["windows"]
    duration_s = len(speech_16k) / SAMPLE_RATE_HZ
    assert len(windows) == pytest.approx(duration_s / 0.5, abs=3)
    assert windows[0]["start_time"] == 0 and windows[1]["start_time"] == 0.5
    assert any(t["name"] == "Speech" for w in windows for t in w["tags"])
    events = job["output"]["events"]
    speech = [e for e in events if e["tag"] == "Speech"]
    assert speech, events
    assert all(0 <= e["start_time"] < e["end_time"] <= duration_s + 1 for e in events)
    listed = await (await jobs_client.get("/v1/jobs", headers=bearer(api_key))).json()
    assert [j["jobId"] for j in listed["items"]] == [created["jobId"]]


async def test_jobs_are_listed_newest_first_and_paged(
    jobs_client: TestClient, api_key: str, speech_wav: bytes
) -> None:
    await upload(jobs_client, api_key, SPEECH, speech_wav)
    ids = [
        (await create_job(jobs_client, api_key, {"url": f"media://{SPEECH}"}))["jobId"]
        for _ in range(3)
    ]
    for job_id in ids:
        await finished(jobs_client, api_key, job_id)
    page = await (await jobs_client.get("/v1/jobs?take=2", headers=bearer(api_key))).json()
    assert [j["jobId"] for j in page["items"]] == ids[::-1][:2]
    rest = await (await jobs_client.get("/v1/jobs?take=2&skip=2", headers=bearer(api_key))).json()
    assert [j["jobId"] for j in rest["items"]] == ids[:1]
    bad = await jobs_client.get("/v1/jobs?take=0", headers=bearer(api_key))
    assert bad.status == 400


async def test_another_teams_jobs_and_media_are_404(
    jobs_client: TestClient, api_key: str, other_key: str, speech_wav: bytes
) -> None:
    await upload(jobs_client, api_key, SPEECH, speech_wav)
    created = await create_job(jobs_client, api_key, {"url": f"media://{SPEECH}"})
    await get_job(jobs_client, other_key, created["jobId"], expect=404)
    cancel = await jobs_client.post(
        f"/v1/jobs/{created['jobId']}/cancel", headers=bearer(other_key)
    )
    assert cancel.status == 404
    await create_job(jobs_client, other_key, {"url": f"media://{SPEECH}"}, expect=404)
    listed = await (await jobs_client.get("/v1/jobs", headers=bearer(other_key))).json()
    assert listed["items"] == []
    await finished(jobs_client, api_key, created["jobId"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({}, "url"),
        ({"url": "s3://x.wav"}, "url"),
        ({"url": "media://a/../b"}, "object key"),
        ({"url": f"media://{SPEECH}", "webhook": "ftp://x"}, "webhook"),
        ({"url": f"media://{SPEECH}", "sensitivity": 9}, "sensitivity"),
        ({"url": f"media://{SPEECH}", "sensitivity": True}, "sensitivity"),
        ({"url": f"media://{SPEECH}", "events": {"threshold": 7}}, "threshold"),
        ({"url": f"media://{SPEECH}", "events": {"tag_threshold": {"Nope": 0.5}}}, "Nope"),
    ],
)
async def test_bad_bodies_are_400_naming_the_field(
    jobs_client: TestClient, api_key: str, body: Any, field: str
) -> None:
    answer = await create_job(jobs_client, api_key, body, expect=400)
    assert field in json.dumps(answer), answer


async def test_missing_media_is_404_and_no_key_is_401(
    jobs_client: TestClient, api_key: str
) -> None:
    await create_job(jobs_client, api_key, {"url": "media://nothing/here.wav"}, expect=404)
    response = await jobs_client.post("/v1/sound-events", json={"url": f"media://{SPEECH}"})
    assert response.status == 401
    await get_job(jobs_client, api_key, "no-such-job", expect=404)


@pytest.mark.parametrize(
    ("data", "error"),
    [(os.urandom(50_000), "not audio"), (b"", "empty")],
)
async def test_media_that_is_not_audio_fails_the_job_with_a_clear_error(
    jobs_client: TestClient, api_key: str, data: bytes, error: str
) -> None:
    await upload(jobs_client, api_key, "junk.bin", data)
    created = await create_job(jobs_client, api_key, {"url": "media://junk.bin"})
    job = await finished(jobs_client, api_key, created["jobId"])
    assert job["status"] == "failed" and error in job["error"], job
    assert "output" not in job


async def test_media_longer_than_the_limit_fails_the_job(
    aiohttp_client: Callable[..., Any], job_settings: Settings, api_key: str
) -> None:
    client = await aiohttp_client(create_app(job_settings.replace(max_session_duration_s=2.0)))
    samples = np.zeros(5 * SAMPLE_RATE_HZ, dtype=np.float32)
    await upload(client, api_key, "long.wav", encode_wav(samples, SAMPLE_RATE_HZ))
    created = await create_job(client, api_key, {"url": "media://long.wav"})
    job = await finished(client, api_key, created["jobId"])
    assert job["status"] == "failed" and "too long" in job["error"], job


def _record(job_id: str, team: str, object_key: str, status: str, **extra: Any) -> JobRecord:
    now = time.time()
    params = SoundEventsInput(object_key, extra.pop("webhook", None))
    return JobRecord(job_id, team, SOUND_EVENTS, params.to_dict(), status, 0.0, now, now, **extra)


async def test_cancel_a_running_job_and_its_worker_cannot_finish_it(
    jobs_client: TestClient, api_key: str, speech_wav: bytes
) -> None:
    await upload(jobs_client, api_key, SPEECH, speech_wav)
    created = await create_job(jobs_client, api_key, {"url": f"media://{SPEECH}"})
    done = await finished(jobs_client, api_key, created["jobId"])
    # A job held by another (live) worker, far from its lease's end:
    repository = SqliteJobRepository(jobs_client.app[STORE])
    await repository.create(_record("held", TEAM, SPEECH, PENDING))
    claimed = await _claim_exactly(repository, "held", "elsewhere")
    assert claimed
    response = await jobs_client.post("/v1/jobs/held/cancel", headers=bearer(api_key))
    assert response.status == 200
    assert (await response.json())["status"] == "canceled"
    assert not await repository.finish("held", "elsewhere", time.time(), SUCCEEDED, {}, None, None)
    assert not await repository.renew("held", "elsewhere", time.time(), 60.0, 50.0)
    assert (await get_job(jobs_client, api_key, "held"))["status"] == "canceled"
    # Cancelling a finished job changes nothing.
    again = await (
        await jobs_client.post(f"/v1/jobs/{created['jobId']}/cancel", headers=bearer(api_key))
    ).json()
    assert again["status"] == done["status"] == "succeeded"


async def _claim_exactly(repository: SqliteJobRepository, job_id: str, owner: str) -> bool:
    """Claim ``job_id`` for ``owner`` (the app's runner may claim others meanwhile)."""
    async with asyncio.timeout(60):
        while True:
            record = await repository.get(TEAM, job_id)
            assert record is not None
            if record.status == RUNNING:
                return record.lease_owner == owner
            claimed = await repository.claim(owner, time.time(), 3600.0)
            if claimed is not None and claimed.job_id == job_id:
                return True
            await asyncio.sleep(0.01)


class Receiver:
    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.failures_left = 2

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((dict(request.headers), await request.read()))
        if self.failures_left:
            self.failures_left -= 1
            return web.Response(status=503)
        return web.Response(status=204)

    def verified(self, secret: str) -> list[dict[str, Any]]:
        bodies = []
        for headers, body in self.calls:
            parts = dict(p.split("=", 1) for p in headers["Tympan-Signature"].split(","))
            expected = hmac.new(
                secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256
            ).hexdigest()
            assert hmac.compare_digest(parts["v1"], expected), "bad signature"
            payload = json.loads(body)
            assert headers["Tympan-Delivery"] == payload["jobId"]
            bodies.append(payload)
        return bodies


async def receiver_url(aiohttp_server: Callable[..., Any], receiver: Receiver) -> str:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = await aiohttp_server(app)
    return str(server.make_url("/hook"))


async def wait_for(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(60):
        while not condition():
            await asyncio.sleep(0.02)


async def test_webhook_gets_the_finished_job_signed_and_retried(
    jobs_client: TestClient,
    aiohttp_server: Callable[..., Any],
    api_key: str,
    other_key: str,
    speech_wav: bytes,
) -> None:
    receiver = Receiver()
    url = await receiver_url(aiohttp_server, receiver)
    await upload(jobs_client, api_key, SPEECH, speech_wav)
    created = await create_job(jobs_client, api_key, {"url": f"media://{SPEECH}", "webhook": url})
    job = await finished(jobs_client, api_key, created["jobId"])
    await wait_for(lambda: len(receiver.calls) == 3)  # two 503s, then accepted
    secret = (await (await jobs_client.get("/v1/webhook-secret", headers=bearer(api_key))).json())[
        "secret"
    ]
    other = (await (await jobs_client.get("/v1/webhook-secret", headers=bearer(other_key))).json())[
        "secret"
    ]
    assert secret != other
    delivered = receiver.verified(secret)
    assert [d["jobId"] for d in delivered] == [created["jobId"]] * 3
    assert delivered[-1]["status"] == "succeeded"
    assert delivered[-1]["output"] == job["output"]
    with pytest.raises(AssertionError):
        receiver.verified(other)


async def test_a_job_whose_worker_died_runs_again_after_a_restart_once(
    aiohttp_client: Callable[..., Any],
    aiohttp_server: Callable[..., Any],
    job_settings: Settings,
    api_key: str,
    speech_wav: bytes,
) -> None:
    receiver = Receiver()
    receiver.failures_left = 0
    url = await receiver_url(aiohttp_server, receiver)
    first = await aiohttp_client(create_app(job_settings))
    await upload(first, api_key, SPEECH, speech_wav)
    repository = SqliteJobRepository(first.app[STORE])
    # A worker of this process claimed it (attempt 1) and the process was killed; its lease
    # runs out while no server runs (a lease already past would let this app run it at once).
    await repository.create(
        _record(
            "orphan",
            TEAM,
            SPEECH,
            RUNNING,
            webhook=url,
            attempts=1,
            lease_owner="dead:1",
            lease_expires_at_s=time.time() + 3600,
        )
    )
    await first.close()
    await _expire_lease(job_settings)
    second = await aiohttp_client(create_app(job_settings))
    job = await finished(second, api_key, "orphan")
    assert job["status"] == "succeeded" and job["output"]["events"]
    record = await SqliteJobRepository(second.app[STORE]).get(TEAM, "orphan")
    assert record is not None and record.attempts == 2
    await wait_for(lambda: len(receiver.calls) >= 1)
    await second.close()
    third = await aiohttp_client(create_app(job_settings))  # nothing left to run or deliver
    assert (await get_job(third, api_key, "orphan"))["output"] == job["output"]
    await asyncio.sleep(0.2)
    assert len(receiver.calls) == 1


async def _expire_lease(settings: Settings) -> None:
    """What a killed worker leaves: its lease in the past (written while no server runs)."""
    import sqlite3

    db = sqlite3.connect(settings.db_path)
    try:
        db.execute(
            "UPDATE jobs SET lease_expires_at = ? WHERE job_id = 'orphan'", (time.time() - 1,)
        )
        db.commit()
    finally:
        db.close()


async def test_outputs_expire(
    aiohttp_client: Callable[..., Any], job_settings: Settings, api_key: str, speech_wav: bytes
) -> None:
    client = await aiohttp_client(create_app(job_settings.replace(job_output_retention_s=0.5)))
    await upload(client, api_key, SPEECH, speech_wav)
    created = await create_job(client, api_key, {"url": f"media://{SPEECH}"})
    job = await finished(client, api_key, created["jobId"])
    assert job["status"] == "succeeded"
    repository = SqliteJobRepository(client.app[STORE])
    async with asyncio.timeout(60):
        while (await repository.get(TEAM, created["jobId"])).output is not None:  # type: ignore[union-attr]
            await asyncio.sleep(0.1)
    expired = await get_job(client, api_key, created["jobId"])
    assert expired["status"] == "succeeded" and "output" not in expired


async def test_a_shutdown_hands_its_running_jobs_back_without_counting_the_attempt(
    jobs_client: TestClient, api_key: str, speech_wav: bytes
) -> None:
    await upload(jobs_client, api_key, SPEECH, speech_wav)
    repository = SqliteJobRepository(jobs_client.app[STORE])
    await repository.create(_record("stopping", TEAM, SPEECH, PENDING))
    assert await _claim_exactly(repository, "stopping", "stopping-worker")
    assert await repository.release("stopping-worker", time.time()) == 1
    record = await repository.get(TEAM, "stopping")
    assert record is not None and record.attempts == 0 and record.lease_owner is None
    job = await finished(jobs_client, api_key, "stopping")  # this app's runner takes it
    assert job["status"] == "succeeded"


@pytest.mark.parametrize("encoding", ["m4a", "ogg-opus", "mp3"])
async def test_compressed_media_gives_the_same_speech(
    jobs_client: TestClient, api_key: str, speech_16k: np.ndarray, encoding: str
) -> None:
    """A plain .m4a (index after the media) is read whole; streamable formats in blocks."""
    data = encode_audio(speech_16k[:, None], SAMPLE_RATE_HZ, encoding)
    await upload(jobs_client, api_key, f"speech.{encoding}", data)
    created = await create_job(jobs_client, api_key, {"url": f"media://speech.{encoding}"})
    job = await finished(jobs_client, api_key, created["jobId"])
    assert job["status"] == "succeeded", job
    assert any(e["tag"] == "Speech" for e in job["output"]["events"]), job["output"]["events"]


async def test_a_job_that_keeps_killing_its_worker_is_failed(
    jobs_client: TestClient, api_key: str, speech_wav: bytes
) -> None:
    await upload(jobs_client, api_key, SPEECH, speech_wav)
    repository = SqliteJobRepository(jobs_client.app[STORE])
    await repository.create(_record("poison", TEAM, SPEECH, PENDING, attempts=MAX_ATTEMPTS))
    job = await finished(jobs_client, api_key, "poison")
    assert job["status"] == "failed" and "stopped 3 times" in job["error"], job


async def test_a_team_may_have_at_most_so_many_unfinished_jobs(tmp_path: Any) -> None:
    """The quota is checked in the INSERT itself, so two processes cannot both pass it."""
    from server.store import Store, StoreThread

    store = StoreThread(Store(tmp_path / "tympan.db", fsync=False))
    try:
        repository = SqliteJobRepository(store)
        await repository.prepare()
        assert await repository.create(_record("a", TEAM, SPEECH, PENDING), max_unfinished=2)
        assert await repository.create(_record("b", TEAM, SPEECH, RUNNING), max_unfinished=2)
        assert not await repository.create(_record("c", TEAM, SPEECH, PENDING), max_unfinished=2)
        assert await repository.get(TEAM, "c") is None
        assert await repository.create(_record("d", "other", SPEECH, PENDING), max_unfinished=2)
        assert await repository.create(_record("e", TEAM, SPEECH, SUCCEEDED), max_unfinished=9)
        assert await repository.create(_record("f", TEAM, SPEECH, PENDING))  # no quota
    finally:
        store.close()
