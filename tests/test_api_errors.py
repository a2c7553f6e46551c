"""Every malformed request gets its documented status and a GenericError body; never a 500."""

from __future__ import annotations

import base64
import io
import json

import msgpack
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import RAW_S16, Api, s16, tone

MIB = 1024 * 1024
CHUNK_LIMIT = 5 * MIB  # the default TYMPAN_MAX_CHUNK_BYTES: Cochl's SDK sends 5,000,000 bytes


async def error_of(response, status: int) -> str:  # type: ignore[no-untyped-def]
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body) == {"error", "status_code", "request_id"}
    assert body["request_id"] == response.headers["X-Request-Id"]
    assert body["status_code"] == status
    assert isinstance(body["error"], str) and body["error"]
    return str(body["error"])


@pytest.fixture
async def stream_id(api: Api) -> str:
    return str((await api.create(type="stream", content_type=RAW_S16))["session_id"])


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"content_type": RAW_S16}, "type"),
        ({"type": "podcast", "content_type": RAW_S16}, "type"),
        ({"type": "stream"}, "content_type"),
        ({"type": "stream", "content_type": 7}, "content_type"),
        ({"type": "stream", "content_type": "audio/x-unknown"}, "content"),
        ({"type": "stream", "content_type": "audio/x-raw; format=s16le"}, "rate"),
        ({"type": "stream", "content_type": RAW_S16, "total_size": -1}, "total_size"),
        (
            {"type": "stream", "content_type": RAW_S16, "default_sensitivity": 3},
            "default_sensitivity",
        ),
        ({"type": "stream", "content_type": RAW_S16, "tags_sensitivity": {"Speech": -5}}, "Speech"),
        ({"type": "stream", "content_type": RAW_S16, "window_hop": "2s"}, "window_hop"),
        ({"type": "stream", "content_type": RAW_S16, "metadata": "x"}, "metadata"),
        ([1, 2], "object"),
    ],
)
async def test_create_rejects_bad_bodies(
    client: TestClient, api_key: str, body: object, fragment: str
) -> None:
    response = await client.post(
        "/api/v1/audio_sessions/", json=body, headers={"x-api-key": api_key}
    )
    assert fragment in await error_of(response, 400)


async def test_create_ignores_unknown_fields_and_accepts_no_trailing_slash(
    client: TestClient, api_key: str
) -> None:
    body = {
        "type": "file",
        "content_type": "audio/wav",
        "future_field": {"x": 1},
        "metadata": {"a": 1},
    }
    response = await client.post(
        "/api/v1/audio_sessions", json=body, headers={"x-api-key": api_key}
    )
    assert response.status == 200, await response.text()


async def test_invalid_json_is_400(client: TestClient, api_key: str) -> None:
    response = await client.post(
        "/api/v1/audio_sessions/",
        data=b"{not json",
        headers={"x-api-key": api_key, "Content-Type": "application/json"},
    )
    assert "JSON" in await error_of(response, 400)


async def test_create_needs_a_valid_key(client: TestClient) -> None:
    body = {"type": "stream", "content_type": RAW_S16}
    await error_of(await client.post("/api/v1/audio_sessions/", json=body), 401)
    await error_of(
        await client.post("/api/v1/audio_sessions/", json=body, headers={"x-api-key": "nope"}), 401
    )
    bearer = {"Authorization": "Bearer tmp_wrong"}
    await error_of(await client.post("/api/v1/audio_sessions/", json=body, headers=bearer), 401)


async def test_bearer_key_is_accepted(client: TestClient, api_key: str) -> None:
    body = {"type": "stream", "content_type": RAW_S16}
    response = await client.post(
        "/api/v1/audio_sessions/", json=body, headers={"Authorization": f"Bearer {api_key}"}
    )
    assert response.status == 200


async def test_wrong_sequence_is_409(api: Api, stream_id: str) -> None:
    chunk = s16(tone(440, 0.5))
    for seq in (1, -1):
        response = await api.client.put(
            f"/api/v1/audio_sessions/{stream_id}/chunks/{seq}",
            json={"data": base64.b64encode(chunk).decode()},
        )
        await error_of(response, 409)
    await api.put(stream_id, 0, chunk)
    response = await api.client.put(
        f"/api/v1/audio_sessions/{stream_id}/chunks/0",
        json={"data": base64.b64encode(s16(tone(300, 0.5))).decode()},
    )
    assert "next expected is 1" in await error_of(response, 409)


async def test_retry_of_last_chunk_is_idempotent(api: Api, stream_id: str) -> None:
    chunk = s16(tone(440, 0.5))
    assert (await api.put(stream_id, 0, chunk))["chunk_sequence"] == 1
    assert (await api.put(stream_id, 0, chunk))["chunk_sequence"] == 1  # lost response, re-sent
    assert (await api.put(stream_id, 1, chunk))["chunk_sequence"] == 2


def big_body(size: int) -> io.BytesIO:
    return io.BytesIO(json.dumps({"data": base64.b64encode(b"\x00" * size).decode()}).encode())


async def test_chunk_size_limit_is_exactly_five_mib(api: Api) -> None:
    session_id = (await api.create(type="file", content_type=RAW_S16))["session_id"]
    url = f"/api/v1/audio_sessions/{session_id}/chunks/"
    headers = {"Content-Type": "application/json"}
    response = await api.client.put(url + "0", data=big_body(CHUNK_LIMIT), headers=headers)
    assert response.status == 200, await response.text()  # the base64 of exactly 5 MiB fits
    message = await error_of(
        await api.client.put(url + "1", data=big_body(CHUNK_LIMIT + 3), headers=headers), 413
    )
    assert str(CHUNK_LIMIT) in message and "TYMPAN_MAX_CHUNK_BYTES" in message
    # a body far over the limit is refused before it is read, and still names the limit
    message = await error_of(
        await api.client.put(url + "1", data=big_body(2 * CHUNK_LIMIT), headers=headers), 413
    )
    assert str(CHUNK_LIMIT) in message and "TYMPAN_MAX_CHUNK_BYTES" in message


async def test_line_wrapped_base64_of_a_full_chunk_fits(api: Api) -> None:
    session_id = (await api.create(type="file", content_type=RAW_S16))["session_id"]
    wrapped = base64.encodebytes(b"\x01" * CHUNK_LIMIT).decode()  # a line break every 76
    response = await api.client.put(
        f"/api/v1/audio_sessions/{session_id}/chunks/0",
        data=io.BytesIO(json.dumps({"data": wrapped}).encode()),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 200, await response.text()


async def test_bad_chunk_bodies_are_400(api: Api, stream_id: str) -> None:
    url = f"/api/v1/audio_sessions/{stream_id}/chunks/0"
    await error_of(await api.client.put(url, json={"data": "%%%not base64"}), 400)
    await error_of(await api.client.put(url, json={}), 400)
    await error_of(await api.client.put(url, json={"data": 12}), 400)
    await error_of(await api.client.put(url, json=["data"]), 400)
    await error_of(
        await api.client.put(f"/api/v1/audio_sessions/{stream_id}/chunks/abc", json={"data": ""}),
        400,
    )


async def test_readonly_session_refuses_chunks_with_403(api: Api, stream_id: str) -> None:
    await api.put(stream_id, 0, s16(tone(440, 0.5)))
    await api.readonly(stream_id)
    response = await api.client.put(
        f"/api/v1/audio_sessions/{stream_id}/chunks/1",
        json={"data": base64.b64encode(b"\0\0").decode()},
    )
    await error_of(response, 403)
    await api.client.patch(f"/api/v1/audio_sessions/{stream_id}", json={"make_readonly": False})
    assert (await api.status(stream_id))["state"] == "readonly"


async def test_patch_validates_its_body(api: Api, stream_id: str) -> None:
    response = await api.client.patch(
        f"/api/v1/audio_sessions/{stream_id}", json={"make_readonly": "yes"}
    )
    await error_of(response, 400)


async def test_unknown_and_deleted_sessions_are_404(api: Api, stream_id: str) -> None:
    base = "/api/v1/audio_sessions/does-not-exist"
    await error_of(await api.client.get(base + "/status"), 404)
    await error_of(await api.client.put(base + "/chunks/0", json={"data": ""}), 404)
    await error_of(await api.client.patch(base, json={"make_readonly": True}), 404)
    await error_of(await api.client.delete(base), 404)
    response = await api.client.delete(f"/api/v1/audio_sessions/{stream_id}")
    assert response.status == 204
    for call in (
        api.client.get(f"/api/v1/audio_sessions/{stream_id}/status"),
        api.client.put(f"/api/v1/audio_sessions/{stream_id}/chunks/0", json={"data": ""}),
        api.client.patch(f"/api/v1/audio_sessions/{stream_id}", json={"make_readonly": True}),
        api.client.delete(f"/api/v1/audio_sessions/{stream_id}"),
    ):
        await error_of(await call, 404)


async def test_status_query_validation(api: Api, stream_id: str) -> None:
    url = f"/api/v1/audio_sessions/{stream_id}/status"
    await error_of(await api.client.get(url, params={"count": "0"}), 400)
    await error_of(await api.client.get(url, params={"count": "1025"}), 400)
    await error_of(await api.client.get(url, params={"offset": "-1"}), 400)
    await error_of(await api.client.get(url, params={"offset": "x"}), 400)
    await error_of(await api.client.get(url, params={"next_token": "forged"}), 400)


async def test_token_from_another_session_is_400(api: Api, stream_id: str) -> None:
    other = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    token = (await api.status(other, headers={"Prefer": "wait=0"}))["inference"]["page"][
        "next_token"
    ]
    response = await api.client.get(
        f"/api/v1/audio_sessions/{stream_id}/status", params={"next_token": token}
    )
    await error_of(response, 400)


async def test_unknown_routes_and_methods_are_json(client: TestClient) -> None:
    await error_of(await client.get("/api/v1/nothing-here"), 404)
    await error_of(await client.get("/api/v1/audio_sessions/"), 405)


async def test_msgpack_transport(api: Api) -> None:
    created = await api.client.post(
        "/api/v1/audio_sessions/",
        data=msgpack.packb({"type": "stream", "content_type": RAW_S16}),
        headers={
            "x-api-key": api.key,
            "Content-Type": "application/msgpack",
            "Accept": "application/msgpack",
        },
    )
    assert created.headers["Content-Type"].startswith("application/msgpack")
    assert created.status == 200, msgpack.unpackb(await created.read())
    session_id = msgpack.unpackb(await created.read())["session_id"]
    audio = s16(tone(440, 1.5))
    for seq in range(3):
        response = await api.client.put(
            f"/api/v1/audio_sessions/{session_id}/chunks/{seq}",
            data=msgpack.packb({"data": audio[seq * 16000 : (seq + 1) * 16000]}, use_bin_type=True),
            headers={"Content-Type": "application/msgpack", "Accept": "application/msgpack"},
        )
        assert msgpack.unpackb(await response.read()) == {
            "session_id": session_id,
            "chunk_sequence": seq + 1,
        }
    bad = await api.client.put(
        f"/api/v1/audio_sessions/{session_id}/chunks/3",
        data=b"\xc1",
        headers={"Content-Type": "application/msgpack"},
    )
    await error_of(bad, 400)
    status = await api.client.get(
        f"/api/v1/audio_sessions/{session_id}/status",
        params={"offset": "1"},  # long-polls until the second window is in
        headers={"Accept": "application/msgpack"},
    )
    assert msgpack.unpackb(await status.read())["inference"]["page"]["total"] == 2
