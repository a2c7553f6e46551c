"""HTTP handlers of a dataset's audio files and of the local store's form upload: parse, call
``AudioFileService``, shape. The service lives under its own ``AppKey`` here, so the datasets'
own routes (another module) and these grow apart without touching each other."""

from __future__ import annotations

from aiohttp import web

from protocol.wire import to_wire
from server.appkeys import SETTINGS
from server.auth import presented_key
from server.datasets.audio_service import AudioFileService
from server.datasets.form_upload import FORM_UPLOAD_ROUTE, receive_form_upload
from server.errors import json_response
from server.handlers import read_small_body

__all__ = ["AUDIO_FILES", "audio_routes"]

AUDIO_FILES: web.AppKey[AudioFileService] = web.AppKey("audio_files")

audio_routes = web.RouteTableDef()
_AUDIO = "/api/v1/datasets/{dataset_id}/audio"


def _origin(request: web.Request) -> str:
    public_url = request.app[SETTINGS].public_url
    return public_url.rstrip("/") if public_url else str(request.url.origin())


@audio_routes.post(_AUDIO + "/upload-url")
async def upload_url(request: web.Request) -> web.Response:
    answer = await request.app[AUDIO_FILES].upload_url(
        presented_key(request.headers),
        request.match_info["dataset_id"],
        await read_small_body(request),
        _origin(request),
    )
    return json_response(request, to_wire(answer))


@audio_routes.post(_AUDIO + "/confirm")
async def confirm(request: web.Request) -> web.Response:
    audio = await request.app[AUDIO_FILES].confirm(
        presented_key(request.headers),
        request.match_info["dataset_id"],
        await read_small_body(request),
    )
    return json_response(request, to_wire(audio))


@audio_routes.get(_AUDIO)
async def list_audio(request: web.Request) -> web.Response:
    page = await request.app[AUDIO_FILES].page(
        presented_key(request.headers),
        request.match_info["dataset_id"],
        request.query,
    )
    return json_response(request, to_wire(page))


@audio_routes.get(_AUDIO + "/{audio_id}")
async def get_audio(request: web.Request) -> web.Response:
    audio = await request.app[AUDIO_FILES].get(
        presented_key(request.headers),
        request.match_info["dataset_id"],
        request.match_info["audio_id"],
    )
    return json_response(request, to_wire(audio))


@audio_routes.delete(_AUDIO + "/{audio_id}")
async def delete_audio(request: web.Request) -> web.Response:
    await request.app[AUDIO_FILES].delete(
        presented_key(request.headers),
        request.match_info["dataset_id"],
        request.match_info["audio_id"],
    )
    return web.Response(status=204)


@audio_routes.post(FORM_UPLOAD_ROUTE)
async def form_upload(request: web.Request) -> web.Response:
    """S3's answer to a form upload: 204, no body."""
    await receive_form_upload(request, request.app[AUDIO_FILES].signer)
    return web.Response(status=204)
