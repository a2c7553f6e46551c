"""The audio files' OpenAPI document is valid, and what the server answers fits it: every
response of the flow (and its errors) is validated against the schema of its operation and
status, so a field or status added on one side only fails here."""

from __future__ import annotations

from typing import Any

from openapi_schema_validator import OAS30Validator, oas30_format_checker
from openapi_spec_validator import OpenAPIV30SpecValidator

from protocol.audio_files_openapi import audio_files_openapi_document
from tests.dataset_audio import Audio, tone_wav

DOC = audio_files_openapi_document()


def test_the_document_is_valid_openapi_30() -> None:
    OpenAPIV30SpecValidator(DOC).validate()


def _fits(path: str, method: str, status: int, body: Any) -> None:
    response = DOC["paths"][path][method]["responses"][str(status)]
    schema = response["content"]["application/json"]["schema"]
    rooted = {**schema, "components": DOC["components"]}
    OAS30Validator(rooted, format_checker=oas30_format_checker).validate(body)


async def test_every_answer_fits_its_schema(audio: Audio, other_key: str) -> None:
    base = "/datasets/{dataset_id}/audio"
    data = tone_wav(0.3)
    info = await audio.upload_url(data)
    _fits(base + "/upload-url", "post", 200, info)
    _fits(base + "/upload-url", "post", 400, await audio.upload_url(data, expect=400, file_size=0))
    _fits(base + "/{audio_id}", "get", 200, await audio.get(info["audio_id"]))
    _fits(base + "/confirm", "post", 409, await audio.confirm(info["audio_id"], expect=409))
    forged = {**info["fields"], "x-amz-signature": "0" * 64}
    _fits("/uploads", "post", 403, await audio.post_form(info, data, expect=403, fields=forged))
    await audio.post_form(info, data)
    _fits(base + "/confirm", "post", 200, await audio.confirm(info["audio_id"]))
    _fits(base + "/{audio_id}", "get", 200, await audio.finished(info["audio_id"]))
    _fits(base, "get", 200, await audio.call("GET", "", 200))
    _fits(base, "get", 400, await audio.call("GET", "?limit=1000", 400))
    _fits(
        base + "/{audio_id}",
        "get",
        404,
        await Audio(audio.client, other_key, audio.dataset_id).get(info["audio_id"], expect=404),
    )
    failed = await audio.finished(await audio.upload(b"not audio at all" * 10))
    _fits(base + "/{audio_id}", "get", 200, failed)
