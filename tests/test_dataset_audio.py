"""Dataset audio files over real HTTP on loopback: Relay's Step 3 (upload URL, multipart form
POST, confirm, poll) with ``requests`` and curl against the local store and against SeaweedFS,
the form's policy checks, confirmation, processing to 16 kHz mono with log-mel features, its
failures, team isolation and deletion."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import soundfile as sf
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from models.yamnet.embedding_meta import embedding_path
from models.yamnet.spec import FRONTEND, WEIGHTS_DIR
from server.app import create_app
from server.appkeys import BLOBS, KEYS, STORE
from server.audio.encode import encode_audio
from server.config import Settings
from server.datasets.audio_keys import EMBEDDINGS_NAME, FEATURES_NAME, NORMALISED_NAME, derived_key
from server.datasets.repository import DatasetRecord, SqliteDatasetRepository
from server.runner import EmbeddingRunner
from server.storage.local import INCOMING_DIR
from tests.seaweedfs import SeaweedFS

RATE_HZ = 16_000
WAIT_S = 120.0  # only ever reached when something is broken; never a speed assumption


def tone_wav(seconds: float, rate_hz: int = 44_100, channels: int = 2) -> bytes:
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    mono = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, np.repeat(mono[:, None], channels, axis=1), rate_hz, format="WAV")
    return buffer.getvalue()


def host_of(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


async def make_dataset(client: TestClient, key: str) -> str:
    """A dataset row of ``key``'s team, written as the datasets' own routes will write it."""
    team = str(client.app[KEYS].authenticate(key).key_id)
    dataset_id = str(uuid.uuid4())
    now_s = time.time()
    record = DatasetRecord(dataset_id, team, "TTS glitches", "", (), now_s, now_s)
    await SqliteDatasetRepository(client.app[STORE]).create(record)
    return dataset_id


def relay_step_3(
    base_url: str, api_key: str, dataset_id: str, path: Path, content_type: str
) -> dict[str, Any]:
    """Relay's Step 3 with ``requests``: only the base URL differs from what a Relay client
    sends (and the sleep is Relay's own 2 s)."""
    BASE_URL, API_KEY = base_url, api_key  # the reference's names
    response = requests.post(
        f"{BASE_URL}/api/v1/datasets/{dataset_id}/audio/upload-url",
        headers={"X-API-Key": API_KEY},
        json={
            "filename": path.name,
            "content_type": content_type,
            "file_size": path.stat().st_size,
        },
        timeout=30,
    )
    upload_info = response.json()
    with open(path, "rb") as f:
        uploaded = requests.post(
            upload_info["upload_url"], data=upload_info["fields"], files={"file": f}, timeout=60
        )
    assert uploaded.status_code == 204, uploaded.text
    confirmed = requests.post(
        f"{BASE_URL}/api/v1/datasets/{dataset_id}/audio/confirm",
        headers={"X-API-Key": API_KEY},
        json={"audio_id": upload_info["audio_id"]},
        timeout=30,
    )
    assert confirmed.status_code == 200, confirmed.text
    audio_id = upload_info["audio_id"]
    deadline = time.monotonic() + WAIT_S
    while True:
        response = requests.get(
            f"{BASE_URL}/api/v1/datasets/{dataset_id}/audio/{audio_id}",
            headers={"X-API-Key": API_KEY},
            timeout=30,
        )
        audio = response.json()
        if audio["processing_status"] == "ready":
            print("Audio processing complete")
            break
        elif audio["processing_status"] == "failed":
            print(f"Processing failed: {audio['processing_error']}")
            break
        assert time.monotonic() < deadline, audio
        time.sleep(2)
    return audio  # type: ignore[no-any-return]


@pytest.fixture
def audio_settings(settings: Settings) -> Settings:
    return settings.replace(fsync=False, media_max_bytes=8 * 1024 * 1024)


@pytest.fixture
async def audio_client(
    aiohttp_client: Callable[..., Any], audio_settings: Settings, api_key: str
) -> AsyncIterator[TestClient]:
    yield await aiohttp_client(create_app(audio_settings))


class Audio:
    """The audio routes of one dataset, failing loudly on unexpected statuses."""

    def __init__(self, client: TestClient, key: str, dataset_id: str) -> None:
        self.client, self.key, self.dataset_id = client, key, dataset_id
        self.base = f"/api/v1/datasets/{dataset_id}/audio"

    async def call(self, method: str, path: str, expect: int, **kw: Any) -> Any:
        response = await self.client.request(
            method, self.base + path, headers={"X-API-Key": self.key}, **kw
        )
        body = None if response.status == 204 else await response.json()
        assert response.status == expect, body
        return body

    async def upload_url(self, data: bytes, expect: int = 200, **body: Any) -> Any:
        wanted = {"filename": "a.wav", "content_type": "audio/wav", "file_size": len(data)}
        return await self.call("POST", "/upload-url", expect, json={**wanted, **body})

    async def post_form(
        self, info: Any, data: bytes, expect: int = 204, fields: dict[str, str] | None = None
    ) -> Any:
        form = FormData()
        for name, value in (fields if fields is not None else info["fields"]).items():
            form.add_field(name, value)
        form.add_field("file", data, filename="a.wav", content_type="audio/wav")
        response = await self.client.session.post(info["upload_url"], data=form)
        body = None if response.status == 204 else await response.json()
        assert response.status == expect, body
        return body

    async def confirm(self, audio_id: str, expect: int = 200) -> Any:
        return await self.call("POST", "/confirm", expect, json={"audio_id": audio_id})

    async def get(self, audio_id: str, expect: int = 200) -> Any:
        return await self.call("GET", f"/{audio_id}", expect)

    async def upload(self, data: bytes, content_type: str = "audio/wav") -> str:
        info = await self.upload_url(data, content_type=content_type)
        await self.post_form(info, data)
        await self.confirm(info["audio_id"])
        return str(info["audio_id"])

    async def finished(self, audio_id: str) -> Any:
        async with asyncio.timeout(WAIT_S):
            while True:
                audio = await self.get(audio_id)
                if audio["processing_status"] in ("ready", "failed"):
                    return audio
                await asyncio.sleep(0.05)


@pytest.fixture
async def audio(audio_client: TestClient, api_key: str) -> Audio:
    return Audio(audio_client, api_key, await make_dataset(audio_client, api_key))


def stored_files(root: Path) -> list[Path]:
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file() and INCOMING_DIR not in path.relative_to(root).parts
    )


async def test_relay_step_3_with_requests_and_curl_on_the_local_store(
    audio: Audio, audio_settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "sample_audio.wav"
    path.write_bytes(tone_wav(1.5))
    base = host_of(audio.client)
    ready = await asyncio.to_thread(
        relay_step_3, base, audio.key, audio.dataset_id, path, "audio/wav"
    )
    assert ready["processing_status"] == "ready", ready
    assert ready["upload_confirmed"] is True and ready["processing_error"] is None
    assert (ready["duration_ms"], ready["sample_rate"], ready["channels"]) == (1500, 44100, 2)
    assert ready["file_size"] == path.stat().st_size and ready["filename"] == "sample_audio.wav"

    # The outputs: 16 kHz mono WAV of the same length, and 10 ms log-mel frames.
    upload_key = stored_upload_key(audio_settings, ready["id"])
    normalised = await read_blob(audio.client, derived_key(upload_key, NORMALISED_NAME))
    samples, rate_hz = sf.read(io.BytesIO(normalised))
    assert rate_hz == RATE_HZ and samples.ndim == 1 and len(samples) == 1500 * 16
    features = np.load(
        io.BytesIO(await read_blob(audio.client, derived_key(upload_key, FEATURES_NAME)))
    )
    assert features.dtype == np.float32 and features.shape[1] == 64
    assert abs(features.shape[0] - 150) <= 3
    # YAMNet's embeddings: a 0.96 s window every 0.48 s, the last one zero-padded.
    vectors = np.load(
        io.BytesIO(await read_blob(audio.client, derived_key(upload_key, EMBEDDINGS_NAME)))
    )
    assert vectors.dtype == np.float32 and vectors.shape == (3, 1024)
    runner = EmbeddingRunner(embedding_path(WEIGHTS_DIR))
    first = runner.run(features[None, : FRONTEND.patch_frames])
    np.testing.assert_allclose(vectors[:1], first, rtol=1e-4, atol=1e-4)

    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is required for the reference's form upload")
    info = await audio.upload_url(path.read_bytes(), filename="sample_audio.wav")
    form = [arg for name, value in info["fields"].items() for arg in ("-F", f"{name}={value}")]
    result = await asyncio.to_thread(
        subprocess.run,
        [
            curl,
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            info["upload_url"],
            *form,
            "-F",
            f"file=@{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == "204", result
    await audio.confirm(info["audio_id"])
    assert (await audio.finished(info["audio_id"]))["duration_ms"] == 1500


def stored_upload_key(settings: Settings, audio_id: str) -> str:
    import sqlite3

    db = sqlite3.connect(settings.db_path)
    try:
        (key,) = db.execute(
            "SELECT blob_key FROM audio_files WHERE audio_id = ?", (audio_id,)
        ).fetchone()
        return str(key)
    finally:
        db.close()


async def read_blob(client: TestClient, key: str) -> bytes:
    async with client.app[BLOBS].open(key) as chunks:
        return b"".join([chunk async for chunk in chunks])


async def test_relay_step_3_on_s3_posts_to_the_service_itself(
    aiohttp_client: Callable[..., Any],
    audio_settings: Settings,
    api_key: str,
    seaweedfs: SeaweedFS,
    tmp_path: Path,
) -> None:
    s3 = seaweedfs.config()
    client = await aiohttp_client(
        create_app(
            audio_settings.replace(
                blob_store="s3",
                s3_endpoint_url=s3.endpoint_url,
                s3_bucket=s3.bucket,
                s3_region=s3.region,
                s3_access_key_id=s3.access_key_id,
                s3_secret_access_key=s3.secret_access_key,
            )
        )
    )
    audio = Audio(client, api_key, await make_dataset(client, api_key))
    path = tmp_path / "sample_audio.ogg"
    path.write_bytes(encode_audio(tone_wav_samples(2.0), RATE_HZ, "ogg-opus"))
    info = await audio.upload_url(path.read_bytes(), content_type="audio/ogg")
    assert info["upload_url"].startswith(seaweedfs.endpoint_url)
    await audio.confirm(info["audio_id"], expect=409)  # nothing there yet
    whole = path.read_bytes()
    too_large = await asyncio.to_thread(requests_post_form, info, whole + bytes(1000))
    assert too_large.status_code == 400 and "EntityTooLarge" in too_large.text
    too_small = await asyncio.to_thread(requests_post_form, info, whole[:-10])
    assert too_small.status_code == 204  # S3's range starts at 0: confirm checks the size
    body = await audio.confirm(info["audio_id"], expect=409)
    assert "removed" in body["error"], body
    assert await client.app[BLOBS].stat(stored_upload_key(audio_settings, info["audio_id"])) is None
    ready = await asyncio.to_thread(
        relay_step_3, host_of(client), api_key, audio.dataset_id, path, "audio/ogg"
    )
    assert ready["processing_status"] == "ready", ready
    assert abs(ready["duration_ms"] - 2000) <= 30 and ready["channels"] == 1
    upload_key = stored_upload_key(audio_settings, ready["id"])
    assert await client.app[BLOBS].stat(derived_key(upload_key, FEATURES_NAME)) is not None
    await audio.call("DELETE", f"/{ready['id']}", 204)
    await audio.get(ready["id"], expect=404)
    assert await client.app[BLOBS].stat(upload_key) is None
    assert await client.app[BLOBS].stat(derived_key(upload_key, NORMALISED_NAME)) is None


def requests_post_form(info: dict[str, Any], data: bytes) -> requests.Response:
    return requests.post(
        info["upload_url"], data=info["fields"], files={"file": ("a.ogg", data)}, timeout=60
    )


def tone_wav_samples(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE_HZ)) / RATE_HZ
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[:, None]


def _policy(fields: dict[str, str]) -> dict[str, Any]:
    return json.loads(base64.b64decode(fields["policy"]))  # type: ignore[no-any-return]


def _with_policy(fields: dict[str, str], document: dict[str, Any]) -> dict[str, str]:
    return {**fields, "policy": base64.b64encode(json.dumps(document).encode()).decode()}


async def test_a_tampered_form_is_403_and_stores_nothing(
    audio: Audio, audio_settings: Settings
) -> None:
    data = tone_wav(0.5)
    info = await audio.upload_url(data)
    fields = info["fields"]
    assert {
        "key",
        "policy",
        "x-amz-algorithm",
        "x-amz-credential",
        "x-amz-date",
        "x-amz-signature",
        "Content-Type",
    } <= set(fields)
    document = _policy(fields)
    assert ["content-length-range", len(data), len(data)] in document["conditions"]
    longer = json.loads(json.dumps(document).replace(f", {len(data)}]", f", {10 * len(data)}]"))
    tampered = [
        {**fields, "key": fields["key"].replace("upload", "other")},
        {**fields, "Content-Type": "audio/mpeg"},
        {**fields, "x-amz-signature": "0" * 64},
        _with_policy(fields, {**document, "expiration": "2999-01-01T00:00:00.000Z"}),
        _with_policy(fields, longer),
        {**fields, "acl": "public-read"},
        {k: v for k, v in fields.items() if k != "policy"},
    ]
    for changed in tampered:
        body = await audio.post_form(info, data, expect=403, fields=changed)
        assert body["error"], body
    assert stored_files(audio_settings.data_dir / "blobs") == []
    await audio.confirm(info["audio_id"], expect=409)
    # Relay's curl sends only key, policy and signature: that is enough.
    minimal = {k: fields[k] for k in ("key", "policy", "x-amz-signature")}
    await audio.post_form(info, data, fields=minimal)


async def test_an_expired_form_is_403_saying_so(
    aiohttp_client: Callable[..., Any], audio_settings: Settings, api_key: str
) -> None:
    client = await aiohttp_client(create_app(audio_settings.replace(media_url_expiry_s=1)))
    audio = Audio(client, api_key, await make_dataset(client, api_key))
    data = tone_wav(0.2)
    info = await audio.upload_url(data)
    expires_at = _policy(info["fields"])["expiration"]
    while time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()) <= expires_at:
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.05)
    body = await audio.post_form(info, data, expect=403)
    assert "expired" in body["error"], body


async def test_a_file_larger_or_smaller_than_declared_is_400_and_leaves_nothing(
    audio: Audio, audio_settings: Settings
) -> None:
    data = tone_wav(0.5)
    info = await audio.upload_url(data)
    body = await audio.post_form(info, data + bytes(300_000), expect=400)
    assert "EntityTooLarge" in body["error"], body
    body = await audio.post_form(info, data[:-1], expect=400)
    assert "EntityTooSmall" in body["error"], body
    assert stored_files(audio_settings.data_dir / "blobs") == []
    await audio.confirm(info["audio_id"], expect=409)
    await audio.post_form(info, data)  # the same form still works for the right file
    confirmed = await audio.confirm(info["audio_id"])
    assert confirmed["upload_confirmed"] is True


async def test_bad_forms_and_bodies_are_400_with_a_json_error(audio: Audio) -> None:
    url = str(audio.client.make_url("/api/v1/uploads"))
    for kw in ({"data": b"x"}, {"json": {"a": 1}}, {"data": FormData({"key": "k"})}):
        response = await audio.client.session.post(url, **kw)
        assert response.status == 400, await response.text()
        assert (await response.json())["error"]
    for body in (
        {"filename": "", "content_type": "audio/wav", "file_size": 10},
        {"filename": "a/b.wav", "content_type": "audio/wav", "file_size": 10},
        {"filename": "a.wav", "content_type": "text/html", "file_size": 10},
        {"filename": "a.wav", "content_type": "audio/wav", "file_size": 0},
        {"filename": "a.wav", "content_type": "audio/wav", "file_size": 9 * 1024 * 1024},
        {"filename": "a.wav", "content_type": "audio/wav"},
    ):
        response = await audio.call("POST", "/upload-url", 400, json=body)
        assert response["error"]
    await audio.call("POST", "/confirm", 400, json={})
    await audio.call("GET", "?limit=0", 400)
    await audio.call("GET", "?offset=x", 400)


async def test_confirm_is_idempotent_and_a_missing_upload_is_409(audio: Audio) -> None:
    data = tone_wav(0.3)
    info = await audio.upload_url(data)
    unconfirmed = await audio.get(info["audio_id"])
    assert unconfirmed["processing_status"] == "pending"
    assert unconfirmed["upload_confirmed"] is False
    body = await audio.confirm(info["audio_id"], expect=409)
    assert "has not arrived" in body["error"]
    await audio.post_form(info, data)
    first = await audio.confirm(info["audio_id"])
    await audio.finished(info["audio_id"])
    again = await audio.confirm(info["audio_id"])
    assert again["id"] == first["id"] and again["upload_confirmed"] is True
    assert again["processing_status"] == "ready"
    await audio.confirm(str(uuid.uuid4()), expect=404)


@pytest.mark.parametrize("encoding", ["mp3", "ogg-vorbis", "flac", "m4a"])
async def test_compressed_formats_are_processed_to_the_right_duration(
    audio: Audio, encoding: str
) -> None:
    data = encode_audio(tone_wav_samples(3.0), RATE_HZ, encoding)
    audio_id = await audio.upload(data, content_type="audio/mpeg")
    ready = await audio.finished(audio_id)
    assert ready["processing_status"] == "ready", ready
    assert abs(ready["duration_ms"] - 3000) <= 60, ready  # codec padding, a frame at most


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"this is a text file, not a recording at all" * 100, "not audio"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(200), "not audio"),
        (b"\x00", "not audio"),
        (tone_wav(0.0), "empty"),
    ],
)
async def test_what_is_not_audio_or_empty_fails_with_a_clear_error(
    audio: Audio, data: bytes, error: str
) -> None:
    audio_id = await audio.upload(data)
    failed = await audio.finished(audio_id)
    assert failed["processing_status"] == "failed", failed
    assert failed["processing_error"].startswith(error), failed


async def test_audio_longer_than_the_limit_fails(
    aiohttp_client: Callable[..., Any], audio_settings: Settings, api_key: str
) -> None:
    client = await aiohttp_client(create_app(audio_settings.replace(max_session_duration_s=1.0)))
    audio = Audio(client, api_key, await make_dataset(client, api_key))
    failed = await audio.finished(await audio.upload(tone_wav(2.0)))
    assert failed["processing_error"].startswith("longer than the limit"), failed


async def test_another_team_sees_nothing(audio: Audio, other_key: str) -> None:
    audio_id = await audio.upload(tone_wav(0.3))
    mallory = Audio(audio.client, other_key, audio.dataset_id)
    await mallory.get(audio_id, expect=404)
    await mallory.call("GET", "", 404)
    await mallory.upload_url(b"xx", expect=404)
    await mallory.confirm(audio_id, expect=404)
    await mallory.call("DELETE", f"/{audio_id}", 404)
    own = Audio(audio.client, other_key, await make_dataset(audio.client, other_key))
    await own.get(audio_id, expect=404)
    await own.call("DELETE", f"/{audio_id}", 404)
    nobody = Audio(audio.client, "not-a-key", audio.dataset_id)
    await nobody.get(audio_id, expect=401)
    assert (await audio.get(audio_id))["id"] == audio_id


async def test_list_pages_and_delete_removes_row_and_blobs(
    audio: Audio, audio_settings: Settings
) -> None:
    ids = [await audio.upload(tone_wav(0.2)) for _ in range(3)]
    for audio_id in ids:
        await audio.finished(audio_id)
    page = await audio.call("GET", "?limit=2", 200)
    assert [item["id"] for item in page["items"]] == ids[:2]
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 0)
    page = await audio.call("GET", "?limit=2&offset=2", 200)
    assert [item["id"] for item in page["items"]] == ids[2:]
    assert len(stored_files(audio_settings.data_dir / "blobs")) == 12  # upload + 3 outputs
    for audio_id in ids:
        await audio.call("DELETE", f"/{audio_id}", 204)
        await audio.get(audio_id, expect=404)
    assert stored_files(audio_settings.data_dir / "blobs") == []
    assert (await audio.call("GET", "", 200))["total"] == 0


async def test_an_upload_cut_off_midway_leaves_nothing(
    audio: Audio, audio_settings: Settings
) -> None:
    data = tone_wav(2.0)
    info = await audio.upload_url(data)
    form = FormData()
    for name, value in info["fields"].items():
        form.add_field(name, value)
    form.add_field("file", data, filename="a.wav", content_type="audio/wav")
    writer = form()
    body = bytearray()

    class Sink:
        async def write(self, chunk: bytes) -> None:
            body.extend(chunk)

    await writer.write(Sink())  # type: ignore[arg-type]
    url = audio.client.make_url("/api/v1/uploads")
    _, stream = await asyncio.open_connection(url.host, url.port)
    head = (
        f"POST /api/v1/uploads HTTP/1.1\r\nHost: {url.host}\r\n"
        f"Content-Type: {writer.content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    stream.write(head.encode() + bytes(body[: len(body) // 2]))
    await stream.drain()
    await asyncio.sleep(0.2)
    stream.close()
    blobs = audio_settings.data_dir / "blobs"
    async with asyncio.timeout(WAIT_S):
        while [p for p in blobs.rglob("*") if p.is_file()]:
            await asyncio.sleep(0.05)
    await audio.confirm(info["audio_id"], expect=409)
    await audio.post_form(info, data)  # the form is still good for a whole upload
    assert (await audio.confirm(info["audio_id"]))["upload_confirmed"] is True
