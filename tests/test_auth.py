"""Object-level authorisation: a session belongs to the key that created it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from server.store import Store
from tests.conftest import RAW_S16, Api, b64, s16, tone

NO_WAIT = {"Prefer": "wait=0"}  # status reads answer at once instead of long-polling


def routes_for(session_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    base = f"/api/v1/audio_sessions/{session_id}"
    return [
        ("PUT", base + "/chunks/0", {"data": b64(s16(tone(440, 0.5)))}),
        ("GET", base + "/status", None),
        ("GET", base + "/results", None),
        ("PATCH", base, {"make_readonly": True}),
        ("DELETE", base, None),
    ]


async def test_another_key_gets_404_on_every_route(api: Api, other_key: str) -> None:
    session_id = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    for method, url, body in routes_for(session_id):
        response = await api.client.request(
            method, url, json=body, headers={"x-api-key": other_key}
        )
        assert response.status == 404, (method, url, await response.text())
        assert (await response.json())["status_code"] == 404
    # ... and the session is untouched: the owner still sees it writable at sequence 0
    status = await api.status(session_id, headers={"x-api-key": api.key, **NO_WAIT})
    assert status["state"] == "writable" and status["refs"]["chunk_sequence"] == 0


async def test_keyless_calls_use_the_session_id_as_capability(api: Api) -> None:
    session_id = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    for method, url, body in routes_for(session_id):
        response = await api.client.request(method, url, json=body, headers=NO_WAIT)
        assert response.status in (200, 204), (method, url, await response.text())


async def test_an_invalid_key_is_401_even_on_session_routes(api: Api) -> None:
    session_id = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    for method, url, body in routes_for(session_id):
        response = await api.client.request(
            method, url, json=body, headers={"x-api-key": "tmp_bogus"}
        )
        assert response.status == 401, (method, url)


async def test_revoking_a_key_locks_it_out_and_closes_its_sessions(
    api: Api, settings: Settings
) -> None:
    session_id = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    store = Store(settings.db_path, fsync=False)
    try:
        assert store.revoke_key("alice")
    finally:
        store.close()
    response = await api.client.post(
        "/api/v1/audio_sessions/",
        json={"type": "stream", "content_type": RAW_S16},
        headers={"x-api-key": api.key},
    )
    assert response.status == 401
    assert (await api.client.get(f"/api/v1/audio_sessions/{session_id}/status")).status == 404
    headers = {"x-api-key": api.key}
    assert (
        await api.client.get(f"/api/v1/audio_sessions/{session_id}/status", headers=headers)
    ).status == 401


async def test_owner_key_can_be_required_on_every_route(
    aiohttp_client: Callable[..., Any], settings: Settings, api_key: str
) -> None:
    client: TestClient = await aiohttp_client(create_app(settings.replace(require_owner_key=True)))
    api = Api(client, api_key)
    session_id = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    for method, url, body in routes_for(session_id)[:-1]:
        response = await client.request(method, url, json=body, headers=NO_WAIT)
        assert response.status == 401, (method, url)
        response = await client.request(
            method, url, json=body, headers={"x-api-key": api_key, **NO_WAIT}
        )
        assert response.status in (200, 204), (method, url, await response.text())


async def test_keys_are_stored_hashed(api: Api, settings: Settings) -> None:
    raw = settings.db_path.read_bytes()
    wal = settings.db_path.with_name(settings.db_path.name + "-wal")
    if wal.exists():
        raw += wal.read_bytes()
    assert api.key.encode() not in raw


async def test_no_keys_or_session_ids_in_logs(api: Api, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level("DEBUG")
    session_id = (await api.create(type="stream", content_type=RAW_S16))["session_id"]
    await api.client.get(
        f"/api/v1/audio_sessions/{session_id}/status", headers={"x-api-key": "tmp_wrong-key"}
    )
    await api.client.put(f"/api/v1/audio_sessions/{session_id}/chunks/5", json={"data": ""})
    await api.client.put(
        f"/api/v1/audio_sessions/{session_id}/chunks/0", json={"data": b64(b"\0" * 3)}
    )
    await api.client.delete(f"/api/v1/audio_sessions/{session_id}")
    logged = caplog.text
    assert logged  # the server did log these calls
    assert api.key not in logged and "tmp_wrong-key" not in logged
    assert session_id not in logged
