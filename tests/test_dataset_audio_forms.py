"""The local store's S3-style form upload: every field is checked against the signed policy,
the size range is enforced as the file streams, an expired form says so, and nothing is
published after any failure."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import FormData

from server.app import create_app
from server.config import Settings
from tests.dataset_audio import (
    WAIT_S,
    Audio,
    make_dataset,
    stored_files,
    tone_wav,
)


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
    # Field names are read case-insensitively, as S3 reads them.
    shouting = {**fields, "CONTENT-TYPE": fields["Content-Type"]}
    del shouting["Content-Type"]
    await audio.post_form(info, data, expect=403, fields={**shouting, "CONTENT-TYPE": "audio/ogg"})
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
    # A part header aiohttp's parser refuses (bytes that are not a header value): found by
    # schemathesis as a 500.
    raw = b'--b\r\nContent-Disposition: form-data; name="\xc3\xac\x1f\x0e"\r\n\r\nv\r\n--b--\r\n'
    response = await audio.client.session.post(
        url, data=raw, headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert response.status == 400, await response.text()
    assert "multipart" in (await response.json())["error"]
    for body in (
        {"filename": "", "content_type": "audio/wav", "file_size": 10},
        {"filename": "a/b.wav", "content_type": "audio/wav", "file_size": 10},
        {"filename": "a.wav", "content_type": "text/html", "file_size": 10},
        {"filename": "a.wav", "content_type": "audio/wav", "file_size": 0},
        {"filename": "a.wav", "content_type": "audio/wav", "file_size": 9 * 1024 * 1024},
        {"filename": "a.wav", "content_type": "audio/wav"},
        {"filename": "a.wav", "content_type": "audio/wav", "file_size": True},
        {"filename": "a.wav", "content_type": "audio/wav", "file_size": "10"},
    ):
        response = await audio.call("POST", "/upload-url", 400, json=body)
        assert response["error"].startswith(("filename", "content_type", "file_size")), response
    await audio.call("POST", "/confirm", 400, json={})
    await audio.call("GET", "?limit=0", 400)
    await audio.call("GET", "?offset=x", 400)


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
