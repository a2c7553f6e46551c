"""The Media API over real HTTP on loopback, against the real app: pyannoteAI's upload flow with
``requests`` (only the host changed), team isolation, signed and expiring upload URLs, the size
limit, object keys, metadata, deletion, retention and restarts."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.appkeys import MEDIA
from server.config import ConfigError, Settings
from server.media.grants import UploadGrant
from server.media.repository import MediaRecord, SqliteMediaRepository
from server.storage.local import INCOMING_DIR
from server.store import Store, StoreThread
from tests.seaweedfs import SeaweedFS

AUDIO = os.urandom(300_000)
LIMIT_BYTES = 64 * 1024


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upload_audio_file(host: str, input_path: Path, object_key: str, api_key: str) -> None:
    """pyannoteAI's media tutorial (uploadAudio.ts) in Python with requests; only the host
    differs from what a pyannoteAI client sends."""
    response = requests.post(
        f"{host}/v1/media/input",
        json={"url": f"media://{object_key}"},
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        timeout=30,
    )
    response.raise_for_status()
    presigned_url = response.json()["url"]
    with open(input_path, "rb") as file:
        uploaded = requests.put(
            presigned_url,
            data=file,
            headers={"Content-Type": "application/octet-stream"},
            timeout=30,
        )
    uploaded.raise_for_status()


def host_of(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


async def presign(client: TestClient, key: str, object_key: str) -> str:
    response = await client.post(
        "/v1/media/input", json={"url": f"media://{object_key}"}, headers=bearer(key)
    )
    body = await response.json()
    assert response.status == 201, body
    return str(body["url"])


async def put_bytes(client: TestClient, url: str, data: bytes, expect: int = 200) -> Any:
    response = await client.session.put(
        url, data=data, headers={"Content-Type": "application/octet-stream"}
    )
    body = await response.json()
    assert response.status == expect, body
    return body


async def describe(client: TestClient, key: str, object_key: str, expect: int = 200) -> Any:
    response = await client.get(f"/v1/media/{object_key}", headers={"x-api-key": key})
    body = await response.json()
    assert response.status == expect, body
    return body


def visible_files(root: Path) -> list[Path]:
    """Files under the blob root other than the store's own temporary ones."""
    return [
        path
        for path in root.rglob("*")
        if path.is_file() and INCOMING_DIR not in path.relative_to(root).parts
    ]


async def test_the_reference_upload_flow_with_requests(
    media_client: TestClient, api_key: str, tmp_path: Path
) -> None:
    audio_path = tmp_path / "audio.wav"
    audio_path.write_bytes(AUDIO)
    await asyncio.to_thread(
        upload_audio_file,
        host_of(media_client),
        audio_path,
        "meetings/2024-01-15/call.wav",
        api_key,
    )
    info = await describe(media_client, api_key, "meetings/2024-01-15/call.wav")
    assert info["url"] == "media://meetings/2024-01-15/call.wav"
    assert info["size_bytes"] == len(AUDIO)
    assert info["sha256"] == hashlib.sha256(AUDIO).hexdigest()
    assert info["expires_at"] > info["created_at"]


async def test_two_teams_share_an_object_key_and_never_see_each_other(
    media_client: TestClient, api_key: str, other_key: str
) -> None:
    mine, theirs = b"alice's recording" * 100, b"mallory's recording" * 50
    await put_bytes(media_client, await presign(media_client, api_key, "call.wav"), mine)
    await put_bytes(media_client, await presign(media_client, other_key, "call.wav"), theirs)
    assert (await describe(media_client, api_key, "call.wav"))["sha256"] == (
        hashlib.sha256(mine).hexdigest()
    )
    assert (await describe(media_client, other_key, "call.wav"))["sha256"] == (
        hashlib.sha256(theirs).hexdigest()
    )
    await put_bytes(media_client, await presign(media_client, api_key, "only-mine"), mine)
    await describe(media_client, other_key, "only-mine", expect=404)
    response = await media_client.delete("/v1/media/only-mine", headers=bearer(other_key))
    assert response.status == 404
    await describe(media_client, api_key, "only-mine")


async def test_a_changed_upload_url_is_403(media_client: TestClient, api_key: str) -> None:
    url = await presign(media_client, api_key, "x.wav")
    head, _, token = url.rpartition("/")
    payload, _, mac = token.partition(".")
    flipped = ("A" if payload[0] != "A" else "B") + payload[1:]
    for bad in (f"{head}/{flipped}.{mac}", f"{head}/{payload}.{mac[:-2]}", f"{head}/{payload}"):
        body = await put_bytes(media_client, bad, b"data", expect=403)
        assert body["status_code"] == 403 and "invalid" in body["error"]
    await describe(media_client, api_key, "x.wav", expect=404)


async def test_a_grant_for_another_team_or_key_cannot_be_made_from_one_url(
    media_client: TestClient, api_key: str
) -> None:
    """Every field is inside the signature: swapping another grant's payload in fails."""
    signer = media_client.server.app[MEDIA].signer
    url = await presign(media_client, api_key, "mine.wav")
    head, _, token = url.rpartition("/")
    forged = signer.sign(UploadGrant("999", "mine.wav", 2**40, 10)).partition(".")[0]
    await put_bytes(media_client, f"{head}/{forged}.{token.partition('.')[2]}", b"x", expect=403)


async def test_an_expired_upload_url_is_403_saying_so(
    media_client: TestClient, api_key: str
) -> None:
    signer = media_client.server.app[MEDIA].signer
    url = await presign(media_client, api_key, "late.wav")
    head = url.rpartition("/")[0]
    token = signer.sign(UploadGrant("1", "late.wav", 1_000_000, 1024))  # expired in 1970
    body = await put_bytes(media_client, f"{head}/{token}", b"data", expect=403)
    assert "expired" in body["error"]


async def test_an_upload_over_the_limit_is_413_and_leaves_nothing(
    aiohttp_client: Callable[..., Any], settings: Settings, api_key: str
) -> None:
    client = await aiohttp_client(create_app(settings.replace(media_max_bytes=LIMIT_BYTES)))
    url = await presign(client, api_key, "big.wav")
    body = await put_bytes(client, url, os.urandom(LIMIT_BYTES + 1), expect=413)
    assert body["status_code"] == 413 and str(LIMIT_BYTES) in body["error"]

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: crossed while streaming
        for _ in range(8):
            yield os.urandom(LIMIT_BYTES // 4)

    response = await client.session.put(url, data=chunked())
    assert response.status == 413, await response.text()
    await describe(client, api_key, "big.wav", expect=404)
    assert visible_files(settings.blob_root) == []
    # exactly the limit is fine
    await put_bytes(client, url, os.urandom(LIMIT_BYTES))
    assert (await describe(client, api_key, "big.wav"))["size_bytes"] == LIMIT_BYTES


async def test_an_interrupted_upload_leaves_nothing_visible(
    media_client: TestClient, media_settings: Settings, api_key: str
) -> None:
    url = urlsplit(await presign(media_client, api_key, "cut.wav"))
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(
        f"PUT {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        "Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n".encode()
        + os.urandom(40_000)
    )
    await writer.drain()
    incoming = media_settings.blob_root / INCOMING_DIR
    async with asyncio.timeout(30):  # the upload is under way: its temporary file exists
        while not incoming.is_dir() or not any(incoming.iterdir()):
            await asyncio.sleep(0.02)
    writer.transport.abort()  # the connection drops mid-body
    async with asyncio.timeout(30):  # the server notices and discards its temporary file
        while any(incoming.iterdir()):
            await asyncio.sleep(0.02)
    await describe(media_client, api_key, "cut.wav", expect=404)
    assert visible_files(media_settings.blob_root) == []
    del reader


@pytest.mark.parametrize(
    "object_key",
    [
        "",
        "a/../b",
        "../escape",
        "a//b",
        "/abs",
        "trail/",
        ".hidden",
        "sp ace",
        "back\\slash",
        "caf\u00e9",
        "x" * 961,
    ],
)
async def test_bad_object_keys_are_400_saying_what_is_allowed(
    media_client: TestClient, api_key: str, object_key: str
) -> None:
    response = await media_client.post(
        "/v1/media/input", json={"url": f"media://{object_key}"}, headers=bearer(api_key)
    )
    body = await response.json()
    assert response.status == 400, body
    assert "letters, digits" in body["error"]


async def test_malformed_media_input_bodies_are_400(media_client: TestClient, api_key: str) -> None:
    for body in ({"url": "https://example.com/a.wav"}, {"uri": "media://a"}, ["media://a"]):
        response = await media_client.post("/v1/media/input", json=body, headers=bearer(api_key))
        assert response.status == 400, await response.text()
    response = await media_client.post(
        "/v1/media/input", data=b"{not json", headers=bearer(api_key)
    )
    assert response.status == 400


async def test_test_endpoint_and_both_key_headers(media_client: TestClient, api_key: str) -> None:
    for headers in (bearer(api_key), {"x-api-key": api_key}):
        response = await media_client.get("/v1/test", headers=headers)
        assert response.status == 200
        assert await response.json() == {"message": "API key is valid", "status": "success"}
        url = (
            await (
                await media_client.post(
                    "/v1/media/input", json={"url": "media://k"}, headers=headers
                )
            ).json()
        )["url"]
        assert url.startswith(host_of(media_client) + "/v1/media/upload/")
    for headers in ({}, bearer("tmp_bogus"), {"x-api-key": "tmp_bogus"}):
        for method, path in (
            ("GET", "/v1/test"),
            ("POST", "/v1/media/input"),
            ("GET", "/v1/media/k"),
            ("DELETE", "/v1/media/k"),
        ):
            response = await media_client.request(
                method, path, json={"url": "media://k"}, headers=headers
            )
            body = await response.json()
            assert response.status == 401, (method, path, body)
            assert body["status_code"] == 401


async def test_get_and_delete(
    media_client: TestClient, media_settings: Settings, api_key: str
) -> None:
    data = b"\x00\x01" * 5000
    await put_bytes(media_client, await presign(media_client, api_key, "a/b.raw"), data)
    assert (await describe(media_client, api_key, "a/b.raw"))["size_bytes"] == len(data)
    await describe(media_client, api_key, "a/missing.raw", expect=404)
    response = await media_client.delete("/v1/media/a/b.raw", headers=bearer(api_key))
    assert response.status == 204
    await describe(media_client, api_key, "a/b.raw", expect=404)
    assert visible_files(media_settings.blob_root) == []
    response = await media_client.delete("/v1/media/a/b.raw", headers=bearer(api_key))
    assert response.status == 404
    assert (await response.json())["status_code"] == 404


async def test_uploading_again_replaces_the_object(media_client: TestClient, api_key: str) -> None:
    url = await presign(media_client, api_key, "again.wav")
    await put_bytes(media_client, url, b"first")
    await put_bytes(media_client, url, b"second version")
    info = await describe(media_client, api_key, "again.wav")
    assert info["size_bytes"] == len(b"second version")


async def test_the_sweeper_removes_expired_media(
    aiohttp_client: Callable[..., Any], settings: Settings, api_key: str
) -> None:
    client = await aiohttp_client(create_app(settings.replace(media_retention_s=60.0)))
    media = client.server.app[MEDIA]
    await put_bytes(client, await presign(client, api_key, "old.wav"), b"old bytes")
    assert await media.sweep() == 0  # not expired yet
    info = await describe(client, api_key, "old.wav")
    assert visible_files(settings.blob_root) != []
    expires_at_s = datetime.fromisoformat(info["expires_at"]).timestamp()
    assert await media.sweep(now_s=expires_at_s + 1) == 1
    await describe(client, api_key, "old.wav", expect=404)
    assert visible_files(settings.blob_root) == []
    assert await media.sweep(now_s=expires_at_s + 1) == 0


async def test_media_survive_a_restart(
    aiohttp_client: Callable[..., Any], media_settings: Settings, api_key: str
) -> None:
    first = await aiohttp_client(create_app(media_settings))
    url = await presign(first, api_key, "kept.wav")
    await put_bytes(first, url, AUDIO)
    before = await describe(first, api_key, "kept.wav")
    await first.close()
    second = await aiohttp_client(create_app(media_settings))
    assert await describe(second, api_key, "kept.wav") == before
    # the upload URL stays valid too: the signing secret is kept in the data directory
    second_url = urlsplit(url)._replace(netloc=urlsplit(str(second.make_url(""))).netloc)
    await put_bytes(second, second_url.geturl(), b"replaced")
    assert (await describe(second, api_key, "kept.wav"))["size_bytes"] == len(b"replaced")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MEDIA_URL_EXPIRY_S", "0"),
        ("MEDIA_MAX_BYTES", "0"),
        ("MEDIA_RETENTION_S", "-1"),
        ("PUBLIC_URL", "ftp://example.test"),
        ("PUBLIC_URL", "https://"),
    ],
)
def test_media_settings_are_validated(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({f"TYMPAN_{name}": value})


def test_media_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "TYMPAN_MEDIA_URL_EXPIRY_S": "60",
            "TYMPAN_MEDIA_MAX_BYTES": "1000",
            "TYMPAN_MEDIA_RETENTION_S": "0.5",
        }
    )
    assert (settings.media_url_expiry_s, settings.media_max_bytes) == (60, 1000)
    assert settings.media_retention_s == 0.5


async def test_with_s3_the_client_uploads_to_the_service_itself(
    aiohttp_client: Callable[..., Any],
    settings: Settings,
    api_key: str,
    other_key: str,
    seaweedfs: SeaweedFS,
    tmp_path: Path,
) -> None:
    """The same client code against a server keeping media in S3 (SeaweedFS checks the
    SigV4 signature): the URL points at the service, and tympan records the object when it is
    first asked about; the retention sweep removes recorded and unrecorded objects alike."""
    client = await aiohttp_client(create_app(seaweedfs.settings(settings)))
    object_key = f"s3test-{uuid.uuid4().hex}/call.wav"
    audio_path = tmp_path / "audio.wav"
    audio_path.write_bytes(AUDIO)
    url = await presign(client, api_key, object_key)
    assert url.startswith(f"{seaweedfs.endpoint_url}/")
    await asyncio.to_thread(upload_audio_file, host_of(client), audio_path, object_key, api_key)
    info = await describe(client, api_key, object_key)
    assert info["size_bytes"] == len(AUDIO) and info["sha256"] is None
    await describe(client, other_key, object_key, expect=404)

    deleted = object_key.replace("call.wav", "deleted-unasked.wav")
    await asyncio.to_thread(upload_audio_file, host_of(client), audio_path, deleted, api_key)
    response = await client.delete(f"/v1/media/{deleted}", headers=bearer(api_key))
    assert response.status == 204
    await describe(client, api_key, deleted, expect=404)

    unrecorded = object_key.replace("call.wav", "never-asked.wav")
    await asyncio.to_thread(upload_audio_file, host_of(client), audio_path, unrecorded, api_key)
    later_s = datetime.fromisoformat(info["expires_at"]).timestamp() + 3600
    assert await client.server.app[MEDIA].sweep(now_s=later_s) >= 2
    await describe(client, api_key, object_key, expect=404)
    await describe(client, api_key, unrecorded, expect=404)


async def test_upload_urls_use_the_public_url_when_set(
    aiohttp_client: Callable[..., Any], media_settings: Settings, api_key: str
) -> None:
    """Behind a reverse proxy, clients must get the proxy's address, not the one it dialled."""
    client = await aiohttp_client(
        create_app(media_settings.replace(public_url="https://media.example.test/"))
    )
    url = await presign(client, api_key, "proxied.wav")
    assert url.startswith("https://media.example.test/v1/media/upload/"), url
    # the path is the server's own: through the proxy it reaches the same route
    await put_bytes(client, str(client.make_url(urlsplit(url).path)), b"RIFF" + bytes(100))
    assert (await describe(client, api_key, "proxied.wav"))["size_bytes"] == 104


class _PausedDeletes:
    """The real blob store, with each ``delete`` held until the test lets it go: the moment a
    sweeper has marked an expired row and is about to remove its bytes."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.entered = asyncio.Event()
        self.go = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def delete(self, key: str) -> None:
        self.entered.set()
        await self.go.wait()
        await self._store.delete(key)


async def test_a_reupload_racing_the_sweeper_is_never_acknowledged_and_lost(
    aiohttp_client: Callable[..., Any], settings: Settings, api_key: str
) -> None:
    """The sweeper removes an expired object while the same key is uploaded again, the new
    bytes landing between its row mark and its delete: the upload must not answer 200 for
    bytes the sweeper then removed. It answers 503 (upload again), and the retry is kept."""
    client = await aiohttp_client(create_app(settings.replace(media_retention_s=60.0)))
    media = client.server.app[MEDIA]
    await put_bytes(client, await presign(client, api_key, "race.wav"), b"old bytes")
    info = await describe(client, api_key, "race.wav")
    later_s = datetime.fromisoformat(info["expires_at"]).timestamp() + 1
    [blob_key] = [item.key async for item in media._blobs.list_blobs("")]
    paused = _PausedDeletes(media._blobs)
    media._blobs = paused
    sweep = asyncio.create_task(media.sweep(now_s=later_s))
    await asyncio.wait_for(paused.entered.wait(), 10)  # row marked, bytes about to go
    url = await presign(client, api_key, "race.wav")
    upload = asyncio.create_task(put_bytes(client, url, b"new bytes!", expect=503))
    for _ in range(1000):  # until the new bytes are published (the upload then waits)
        stat = await paused.stat(blob_key)
        if stat is not None and stat.size_bytes == len(b"new bytes!"):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the upload never published its bytes")
    assert not upload.done()  # it waits for the sweeper's mark to go
    paused.go.set()
    assert await asyncio.wait_for(sweep, 10) == 1
    body = await asyncio.wait_for(upload, 10)
    assert body["status_code"] == 503 and "upload it again" in body["error"]
    await describe(client, api_key, "race.wav", expect=404)  # no row without bytes
    await put_bytes(client, await presign(client, api_key, "race.wav"), b"new bytes!")
    assert (await describe(client, api_key, "race.wav"))["size_bytes"] == len(b"new bytes!")


async def test_a_media_table_from_before_the_removal_mark_is_migrated(tmp_path: Path) -> None:
    store = StoreThread(Store(tmp_path / "tympan.db", fsync=False))
    try:
        await store.write(
            lambda s: s.execute(
                "CREATE TABLE media (team TEXT NOT NULL, object_key TEXT NOT NULL, "
                "size_bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, created_at REAL NOT NULL, "
                "expires_at REAL NOT NULL, PRIMARY KEY (team, object_key)) WITHOUT ROWID"
            )
        )
        repository = SqliteMediaRepository(store)
        await repository.prepare()
        record = MediaRecord("t", "k.wav", 3, "ab", 1.0, 2.0)
        assert await repository.save(record, now_s=5.0, stale_s=60.0)
        assert await repository.mark_deleting(record, now_s=5.0, stale_s=60.0)
        assert not await repository.save(record, now_s=6.0, stale_s=60.0)  # being removed
        assert await repository.save(record, now_s=70.0, stale_s=60.0)  # that sweeper died
    finally:
        store.close()
