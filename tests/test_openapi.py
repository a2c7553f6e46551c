"""The OpenAPI document against the real server.

Every request below is built from the document (operation id -> path template) and every response
is validated against the document's schema for that operation and status, so a field or status that
drifts on either side fails here.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from openapi_spec_validator import OpenAPIV30SpecValidator

from protocol.datasets_openapi import datasets_openapi_document
from protocol.media_openapi import media_openapi_document
from protocol.messages import DEFAULT_PAGE_COUNT, MAX_PAGE_COUNT, parse_window_hop
from protocol.openapi import openapi_document
from server.app import create_app
from server.appkeys import EVENTS, SERVICE
from server.audio import RAW_SAMPLE_FORMATS, formats
from server.audio.pcm import RAW_SAMPLE_FORMAT_ALIASES
from server.config import Settings
from tests.conftest import RAW_S16, b64, s16, tone

BASE = "/api/v1"
DOC = openapi_document(BASE)
MiB = 1024 * 1024
RAW_SECOND = s16(tone(440.0, 1.0))
COCHL_SCHEMAS = {
    "AudioChunk",
    "AudioContentType",
    "AudioMetadata",
    "AudioType",
    "CreateSession",
    "GenericError",
    "Page",
    "Sense",
    "SenseEvent",
    "SenseEventTag",
    "SessionRefs",
    "SessionStatus",
    "UpdateSession",
}
COCHL_OPERATIONS = {"createSession", "deleteSession", "updateSession", "uploadChunk", "readStatus"}


def _operations() -> dict[str, tuple[str, str, dict[str, Any]]]:
    found = {}
    for path, item in DOC["paths"].items():
        for method, operation in item.items():
            if method != "parameters":
                found[operation["operationId"]] = (method, path, operation)
    return found


OPERATIONS = _operations()


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = DOC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def validate_against(schema: dict[str, Any], body: Any) -> None:
    """Validate ``body`` against one schema of the document, its ``$ref``s resolved in DOC."""
    rooted = {**schema, "components": DOC["components"]}
    OAS30Validator(rooted, format_checker=oas30_format_checker).validate(body)


def schema_of(operation_id: str, status: int, media: str = "application/json") -> dict[str, Any]:
    _, _, operation = OPERATIONS[operation_id]
    response = _resolve(operation["responses"][str(status)])
    return response["content"][media]["schema"]


class Contract:
    """Calls operations by id over real HTTP and checks each response against the document."""

    def __init__(self, client: TestClient, key: str) -> None:
        self.client = client
        self.key = key
        self.seen: set[tuple[str, int]] = set()

    async def call(
        self,
        operation_id: str,
        expect: int,
        *,
        key: str | None = "owner",
        path: str | None = None,
        body: Any = None,
        raw: bytes | None = None,
        as_msgpack: bool = False,
        accept_msgpack: bool = False,
        params: dict[str, Any] | None = None,
        **path_params: Any,
    ) -> Any:
        method, template, operation = OPERATIONS[operation_id]
        url = BASE + (path if path is not None else template.format(**path_params))
        headers = {}
        if key is not None:
            headers["x-api-key"] = self.key if key == "owner" else key
        if accept_msgpack:
            headers["Accept"] = "application/msgpack"
        if as_msgpack:
            headers["Content-Type"] = "application/msgpack"
        elif body is not None:
            headers["Content-Type"] = "application/json"
        data = raw
        if body is not None:
            data = msgpack.packb(body) if as_msgpack else json.dumps(body).encode()
        response = await self.client.request(
            method.upper(),
            url,
            data=None if data is None else io.BytesIO(data),  # no warning for large bodies
            headers=headers,
            params=params,
        )
        payload = await response.read()
        assert response.status == expect, (operation_id, response.status, payload[:300])
        self.seen.add((operation_id, expect))
        return self._check(operation_id, operation, response, payload)

    def _check(
        self, operation_id: str, operation: dict[str, Any], response: ClientResponse, payload: bytes
    ) -> Any:
        documented = operation["responses"].get(str(response.status))
        assert documented is not None, f"{operation_id} answered undocumented {response.status}"
        documented = _resolve(documented)
        for header in documented.get("headers", {}):
            assert response.headers.get(header), f"{operation_id}: header {header} missing"
        if "content" not in documented:
            assert payload == b"", f"{operation_id} {response.status} must have no body"
            return None
        media = response.content_type
        assert media in documented["content"], f"{operation_id}: undocumented media type {media}"
        body = msgpack.unpackb(payload) if media == "application/msgpack" else json.loads(payload)
        validate_against(documented["content"][media]["schema"], body)
        return body


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Short long-polls: these tests check shapes, not waiting."""
    return Settings.from_env({}, data_dir=tmp_path / "var", status_wait_s=0.5)


@pytest.fixture
def contract(client: TestClient, api_key: str) -> Contract:
    return Contract(client, api_key)


async def new_session(contract: Contract, **extra: Any) -> str:
    body = {"type": "stream", "content_type": RAW_S16, **extra}
    created = await contract.call("createSession", 200, body=body)
    return str(created["session_id"])


# -- the document itself ----------------------------------------------------------------------


def test_document_is_valid_openapi_30() -> None:
    assert DOC["openapi"] == "3.0.3"
    OpenAPIV30SpecValidator(DOC).validate()
    for schema in DOC["components"]["schemas"].values():
        OAS30Validator.check_schema({**schema, "components": DOC["components"]})


def test_document_keeps_cochl_names() -> None:
    assert set(DOC["components"]["schemas"]) >= COCHL_SCHEMAS
    assert set(OPERATIONS) == COCHL_OPERATIONS | {
        "readResults",
        "predict",
        "getOfficialTags",
        "readEvents",
        "followSession",
    }
    scheme = DOC["components"]["securitySchemes"]["API_Key"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "x-api-key")
    assert OPERATIONS["createSession"][:2] == ("post", "/audio_sessions/")
    assert OPERATIONS["createSession"][2]["security"] == [{"API_Key": []}]
    for operation_id in COCHL_OPERATIONS - {"createSession"} | {"readResults"}:
        assert OPERATIONS[operation_id][2]["security"] == [{"API_Key": []}, {}], operation_id


def test_document_is_plain_json_and_takes_its_base_url() -> None:
    doc = openapi_document("http://example.test:8080/api/v1")
    assert json.loads(json.dumps(doc)) == doc
    assert doc["servers"] == [{"url": "http://example.test:8080/api/v1"}]
    assert not any(path.startswith("/api") for path in doc["paths"])
    assert "/healthz" in doc["info"]["description"]
    assert "/readyz" in doc["info"]["description"]


def test_protocol_module_imports_no_server_code() -> None:
    probe = (
        "import sys, protocol.openapi; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('server', 'numpy', 'aiohttp')); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", probe], check=True)


def test_document_limits_match_the_server() -> None:
    status_params = {p["name"]: p["schema"] for p in OPERATIONS["readStatus"][2]["parameters"]}
    assert status_params["count"]["maximum"] == MAX_PAGE_COUNT
    assert status_params["count"]["default"] == DEFAULT_PAGE_COUNT
    results_params = {p["name"]: p["schema"] for p in OPERATIONS["readResults"][2]["parameters"]}
    assert results_params["limit"]["maximum"] == MAX_PAGE_COUNT
    assert Settings().max_chunk_bytes == 5 * MiB
    hop = DOC["components"]["schemas"]["WindowHop"]["oneOf"]
    for spelling in hop[0]["enum"] + hop[1]["enum"]:
        assert parse_window_hop(spelling) in (0.5, 1.0)
    content_types = DOC["components"]["schemas"]["AudioContentType"]["description"]
    canonical = {value for name, value in vars(formats).items() if name.startswith("MIME_")}
    assert all(mime in content_types for mime in canonical), canonical
    raw_names = [*RAW_SAMPLE_FORMATS, *RAW_SAMPLE_FORMAT_ALIASES]
    assert all(re.search(rf"\b{name}\b", content_types) for name in raw_names), raw_names


@pytest.mark.parametrize(
    ("schema", "body"),
    [
        ("SessionRefs", {"session_id": "s", "chunk_sequence": 0, "extra": 1}),
        ("SessionRefs", {"session_id": "s"}),
        ("CreateSessionResponse", {"session_id": "s", "chunk_sequence": 0}),
        ("GenericError", {"error": "x", "status_code": "400"}),
        ("Page", {"offset": 0, "count": 0}),
        ("SessionStatus", {"state": "gone", "refs": {}, "inference": {}}),
        ("SenseEventTag", {"name": "Speech", "probability": 1.5}),
        ("SessionResults", {"state": "done", "data": [], "has_more": "no"}),
    ],
)
def test_schemas_reject_drifted_bodies(schema: str, body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        validate_against({"$ref": f"#/components/schemas/{schema}"}, body)


# -- every operation and status against the real server ---------------------------------------


async def test_create_session(contract: Contract, other_key: str) -> None:
    await new_session(contract)
    full = {
        "type": "file",
        "content_type": "audio/wav",
        "metadata": {"device": "mic-1"},
        "total_size": 1000,
        "default_sensitivity": -2,
        "tags_sensitivity": {"Speech": 2, "Dog": -1},
        "window_hop": "1s",
        "file_name": "a.wav",
        "file_length": 12.5,
    }
    created = await contract.call("createSession", 200, body=full)
    assert created["window_hop"] == 1.0
    await contract.call("createSession", 200, body={**full, "window_hop": 0.5}, as_msgpack=True)
    await contract.call("createSession", 200, body=full, path="/audio_sessions")
    await contract.call("createSession", 200, body=full, key=other_key, accept_msgpack=True)

    await contract.call("createSession", 400, raw=b"{not json")
    await contract.call("createSession", 400, body={"type": "radio", "content_type": RAW_S16})
    await contract.call("createSession", 400, body={"type": "stream", "content_type": "text/x"})
    await contract.call("createSession", 400, body={**full, "window_hop": "2s"})
    await contract.call("createSession", 400, body={**full, "default_sensitivity": 3})
    await contract.call("createSession", 400, body=[1, 2], accept_msgpack=True)
    await contract.call("createSession", 401, body=full, key=None)
    await contract.call("createSession", 401, body=full, key="not-a-key")
    await contract.call("createSession", 413, body={**full, "padding": "x" * (2 * MiB)})


async def test_upload_chunk(contract: Contract, other_key: str) -> None:
    sid = await new_session(contract)
    chunk = RAW_SECOND[:16000]
    refs = await contract.call(
        "uploadChunk", 200, body={"data": b64(chunk)}, session_id=sid, chunk_sequence=0
    )
    assert refs == {"session_id": sid, "chunk_sequence": 1}
    await contract.call(
        "uploadChunk",
        200,
        body={"data": RAW_SECOND[16000:]},
        as_msgpack=True,
        accept_msgpack=True,
        key=None,
        session_id=sid,
        chunk_sequence=1,
    )
    again = {"data": RAW_SECOND[16000:]}
    await contract.call(
        "uploadChunk", 200, body=again, as_msgpack=True, session_id=sid, chunk_sequence=1
    )

    def put(expect: int, seq: Any = 2, **kw: Any) -> Any:
        kw.setdefault("body", {"data": b64(chunk)})
        return contract.call(
            "uploadChunk", expect, session_id=kw.pop("sid", sid), chunk_sequence=seq, **kw
        )

    await put(400, body={"data": "***not base64***"})
    await put(400, body={"audio": b64(chunk)})
    await put(400, body=None, raw=b"{")
    await put(400, body=None, raw=b"\xc1", as_msgpack=True, accept_msgpack=True)
    await put(400, seq="two")
    await put(401, key="not-a-key")
    await put(404, sid="no-such-session")
    await put(404, key=other_key)
    await put(409, seq=5)
    await put(413, body={"data": b64(b"\0" * (5 * MiB + 3))})
    await put(413, body={"data": b"\0" * (5 * MiB + 1)}, as_msgpack=True)
    await put(413, body={"data": "A" * (8 * MiB)})
    await contract.call("updateSession", 204, body={"make_readonly": True}, session_id=sid)
    await put(403)


async def test_update_session(contract: Contract, other_key: str) -> None:
    sid = await new_session(contract)
    await contract.call("updateSession", 204, body={"make_readonly": False}, session_id=sid)
    await contract.call("updateSession", 400, body={"make_readonly": "yes"}, session_id=sid)
    await contract.call("updateSession", 400, raw=b"nope", session_id=sid)
    await contract.call("updateSession", 401, body={}, key="not-a-key", session_id=sid)
    await contract.call("updateSession", 404, body={}, key=other_key, session_id=sid)
    await contract.call("updateSession", 404, body={}, session_id="no-such-session")
    await contract.call("updateSession", 413, body={"pad": "x" * (2 * MiB)}, session_id=sid)
    await contract.call(
        "updateSession",
        204,
        body={"make_readonly": True},
        as_msgpack=True,
        key=None,
        session_id=sid,
    )
    status = await contract.call("readStatus", 200, session_id=sid)
    assert status["state"] == "readonly"


async def test_delete_session(contract: Contract, other_key: str) -> None:
    sid = await new_session(contract)
    await contract.call("deleteSession", 401, key="not-a-key", session_id=sid)
    await contract.call("deleteSession", 404, key=other_key, session_id=sid)
    await contract.call("deleteSession", 204, session_id=sid)
    await contract.call("deleteSession", 404, session_id=sid)
    await contract.call("readStatus", 404, session_id=sid)
    await contract.call("readResults", 404, session_id=sid)
    await contract.call("deleteSession", 204, key=None, session_id=await new_session(contract))


async def test_read_status_and_results_of_a_stream(contract: Contract, other_key: str) -> None:
    sid = await new_session(contract)
    fresh = await contract.call("readStatus", 200, session_id=sid, key=None)
    assert fresh["inference"]["results"] == []
    assert "next_token" in fresh["inference"]["page"]
    pending = await contract.call("readResults", 200, session_id=sid)
    assert pending["state"] == "pending"

    await contract.call(
        "uploadChunk", 200, body={"data": b64(RAW_SECOND * 2)}, session_id=sid, chunk_sequence=0
    )
    await contract.call("updateSession", 204, body={"make_readonly": True}, session_id=sid)
    walked = []
    page = await contract.call("readStatus", 200, session_id=sid, params={"count": 2})
    while True:
        walked.extend(page["inference"]["results"])
        token = page["inference"]["page"].get("next_token")
        if token is None:
            break
        page = await contract.call(
            "readStatus", 200, session_id=sid, params={"next_token": token}, accept_msgpack=True
        )
    assert len(walked) == 4
    assert walked[0]["tags"], walked[0]
    done = await contract.call("readResults", 200, session_id=sid, params={"limit": 1})
    assert done["state"] == "done" and done["data"] == walked[:1] and done["has_more"], done
    end = await contract.call("readResults", 200, session_id=sid, params={"offset": 4})
    assert end == {"state": "done", "data": [], "has_more": False}

    for params in ({"next_token": "bogus"}, {"offset": -1}, {"count": 0}, {"count": 1025}):
        await contract.call("readStatus", 400, session_id=sid, params=params)
    for params in ({"limit": 0}, {"offset": "x"}):
        await contract.call("readResults", 400, session_id=sid, params=params)
    other = await new_session(contract)
    foreign = {"next_token": fresh["inference"]["page"]["next_token"]}
    await contract.call("readStatus", 400, session_id=other, params=foreign)
    for operation_id in ("readStatus", "readResults"):
        await contract.call(operation_id, 401, key="not-a-key", session_id=sid)
        await contract.call(operation_id, 404, key=other_key, session_id=sid)
        await contract.call(operation_id, 404, session_id="no-such-session")


async def test_status_and_results_of_a_failed_session(contract: Contract) -> None:
    sid = await new_session(contract, content_type="audio/wav")
    garbage = {"data": b64(b"this is not a RIFF/WAVE header at all" * 64)}
    await contract.call("uploadChunk", 200, body=garbage, session_id=sid, chunk_sequence=0)
    for _ in range(200):
        results = await contract.call("readResults", 200, session_id=sid)
        if results["state"] == "error":
            break
    assert results["state"] == "error" and results["error"], results
    status = await contract.call("readStatus", 200, session_id=sid)
    assert status["state"] == "readonly" and status["error"], status
    await contract.call("uploadChunk", 403, body=garbage, session_id=sid, chunk_sequence=1)


@pytest.mark.parametrize("operation_id", sorted(OPERATIONS))
async def test_unexpected_errors_are_generic_500s(
    contract: Contract, client: TestClient, monkeypatch: pytest.MonkeyPatch, operation_id: str
) -> None:
    sid = await new_session(contract)

    async def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    service = client.app[SERVICE]
    for name in ("create", "put_chunk", "update", "delete", "status", "results", "predict"):
        monkeypatch.setattr(service, name, boom)
    monkeypatch.setattr(service, "official_tags", lambda key: 1 / 0)
    for name in ("page", "live"):
        monkeypatch.setattr(client.app[EVENTS], name, boom)
    body: dict[str, str] | None = None
    if "requestBody" in OPERATIONS[operation_id][2]:
        chunk = operation_id in ("uploadChunk", "predict")
        body = {"data": b64(b"\0\0")} if chunk else {"type": "stream"}
    error = await contract.call(operation_id, 500, body=body, session_id=sid, chunk_sequence=0)
    assert "secret" not in error["error"]


async def test_events_pages_and_errors(contract: Contract, other_key: str) -> None:
    sid = await new_session(contract)
    page = await contract.call("readEvents", 200, session_id=sid, params={"state": "closed"})
    assert page["events"] == [] and page["in_progress"] is True
    token = {"next_token": page["page"]["next_token"]}
    await contract.call("readEvents", 200, session_id=sid, params=token)
    await contract.call("readStatus", 400, session_id=sid, params=token)
    for params in ({"state": "x"}, {"threshold": "2"}, {"tag_threshold": "Nope:0.5"}):
        await contract.call("readEvents", 400, session_id=sid, params=params)
    for operation_id in ("readEvents", "followSession"):
        await contract.call(operation_id, 401, key="not-a-key", session_id=sid)
        await contract.call(operation_id, 404, key=other_key, session_id=sid)
        await contract.call(operation_id, 404, session_id="no-such-session")
    await contract.call("followSession", 400, session_id=sid, params={"last_event_id": "-1.2"})


async def test_owner_key_can_be_required(
    aiohttp_client: Callable[..., Any], settings: Settings, api_key: str
) -> None:
    strict = Contract(
        await aiohttp_client(create_app(settings.replace(require_owner_key=True))), api_key
    )
    sid = await new_session(strict)
    await strict.call("readStatus", 401, key=None, session_id=sid)
    await strict.call("readStatus", 200, session_id=sid)


async def test_served_document_is_this_document(client: TestClient) -> None:
    response = await client.get(f"{BASE}/openapi.json")
    if response.status == 404:
        pytest.skip("GET /api/v1/openapi.json is not wired yet")
    assert response.status == 200
    assert await response.json() == openapi_document()


def test_media_document_is_valid_openapi_30() -> None:
    """The /v1 API's own document (GET /v1/openapi.json)."""
    document = media_openapi_document()
    OpenAPIV30SpecValidator(document).validate()
    assert json.loads(json.dumps(document)) == document
    operations = {
        op["operationId"]
        for item in document["paths"].values()
        for method, op in item.items()
        if method != "parameters"
    }
    assert operations == {
        "testKey",
        "createMediaInput",
        "uploadMedia",
        "getMedia",
        "deleteMedia",
        "createSoundEventsJob",
        "listJobs",
        "getJob",
        "cancelJob",
        "getWebhookSecret",
    }


def test_datasets_document_is_valid_openapi_30() -> None:
    """The Datasets API's own document (GET /api/v1/datasets/openapi.json), with the
    datasets' audio files, training jobs and models."""
    document = datasets_openapi_document()
    OpenAPIV30SpecValidator(document).validate()
    assert json.loads(json.dumps(document)) == document
    operations = {
        op["operationId"]
        for item in document["paths"].values()
        for method, op in item.items()
        if method != "parameters"
    }
    assert operations == {
        "createDataset",
        "listDatasets",
        "getDataset",
        "updateDataset",
        "deleteDataset",
        "createAnnotationSet",
        "listAnnotationSets",
        "getAnnotationSet",
        "updateAnnotationSet",
        "deleteAnnotationSet",
        "publishAnnotationSet",
        "addAnnotations",
        "listAnnotations",
        "getAnnotation",
        "updateAnnotation",
        "deleteAnnotation",
        "createAudioUploadUrl",
        "uploadForm",
        "confirmAudioUpload",
        "listAudioFiles",
        "getAudioFile",
        "deleteAudioFile",
        "createTrainingJob",
        "listTrainingJobs",
        "getTrainingJob",
        "cancelTrainingJob",
        "listModels",
        "getModel",
        "deleteModel",
        "downloadModel",
        "createInferenceJob",
        "listInferenceJobs",
        "getInferenceJob",
        "deleteInferenceJob",
        "cancelInferenceJob",
        "createInferenceUploadUrl",
        "confirmInferenceUpload",
        "addInferenceMediaFile",
    }
    assert "Negative evidence" in document["info"]["description"]


async def test_served_datasets_document_is_this_document(client: TestClient) -> None:
    response = await client.get(f"{BASE}/datasets/openapi.json")
    assert response.status == 200
    assert await response.json() == json.loads(json.dumps(datasets_openapi_document()))
