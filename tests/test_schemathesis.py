"""Property-based API testing: schemathesis generates requests from the served OpenAPI document.

The real app runs over real HTTP on loopback, in a thread with its own event loop, because
schemathesis calls it synchronously (requests). The schema is the one the server serves at
``/api/v1/openapi.json``. Every generated request carries a valid API key, and every operation
on ``{session_id}`` gets a session created for it just before (the document has no links), so
PATCH, PUT, DELETE and GET reach a live session instead of stopping at 404. Each response must
not be a 5xx and must match the document: status code, content type and body schema.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import requests
import schemathesis
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, reject, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from protocol.datasets_openapi import datasets_openapi_document
from protocol.media_openapi import media_openapi_document
from protocol.openapi import openapi_document
from server.app import create_app
from server.appkeys import BLOBS, DETECTOR_MODELS, KEYS
from server.config import Settings
from server.serve import MAX_REQUEST_LINE_BYTES
from tests.conftest import make_key
from tests.detector_fixtures import install_model

# TYMPAN_SCHEMATHESIS_EXAMPLES raises the count for a longer, manual run.
MAX_EXAMPLES = int(os.environ.get("TYMPAN_SCHEMATHESIS_EXAMPLES", "30"))
STATUS_WAIT_S = 0.2  # bounds the status long-poll so the whole module stays under a minute
HTTP_TIMEOUT_S = 10.0
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
SESSION_BODIES = (
    {"type": "stream", "content_type": "audio/x-raw; rate=16000; format=s16le"},
    {"type": "file", "content_type": "audio/wav"},
)


@schemathesis.serializer("application/msgpack")
def _msgpack_body(ctx: Any, value: Any) -> bytes:
    try:
        return msgpack.packb(value, use_bin_type=True)
    except (OverflowError, TypeError, ValueError):
        reject()  # msgpack cannot carry it (an int over 64 bits): not a request a client can send


@schemathesis.deserializer("application/msgpack")
def _msgpack_response(ctx: Any, response: Any) -> Any:
    return msgpack.unpackb(response.content, raw=False)


class _ServerThread:
    """The app on a TestServer, served by an event loop that runs in a background thread."""

    def __init__(self, app_settings: Settings) -> None:
        self._settings = app_settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: TestServer | None = None

    def start(self) -> str:
        self._thread.start()
        self._server = self._run(self._start())
        return str(self._server.make_url("/api/v1"))

    async def _start(self) -> TestServer:
        server = TestServer(create_app(self._settings))
        await server.start_server(max_line_size=MAX_REQUEST_LINE_BYTES)  # as tympan serve
        return server

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=60)

    def install_model(self, key: str) -> str:
        """The tiny trained head as a model of ``key``'s team; its id."""
        assert self._server is not None
        app = self._server.app
        team = str(app[KEYS].authenticate(key).key_id)
        model = install_model(app[DETECTOR_MODELS].repository, app[BLOBS], team)
        return str(self._run(model).model_id)

    def stop(self) -> None:
        if self._server is not None:
            self._run(self._server.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


_SERVERS: dict[str, _ServerThread] = {}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, API key) of a real server for the whole module."""
    data_dir: Path = tmp_path_factory.mktemp("schemathesis") / "var"
    app_settings = Settings.from_env({}, data_dir=data_dir, status_wait_s=STATUS_WAIT_S)
    key = make_key(data_dir, "schemathesis")
    server = _ServerThread(app_settings)
    base_url = server.start()
    _SERVERS[base_url] = server
    try:
        yield base_url, key
    finally:
        server.stop()


@pytest.fixture(scope="module")
def served_schema(live: tuple[str, str]) -> Any:
    """The document as the server serves it; the tests generate from this one."""
    base_url, _ = live
    response = requests.get(f"{base_url}/openapi.json", timeout=HTTP_TIMEOUT_S)
    response.raise_for_status()
    document = response.json()
    assert document == json.loads(json.dumps(openapi_document()))
    return schemathesis.openapi.from_dict(document)


def _new_session(base_url: str, key: str, index: int) -> str:
    body = SESSION_BODIES[index % len(SESSION_BODIES)]
    response = requests.post(
        f"{base_url}/audio_sessions/", json=body, headers={"x-api-key": key}, timeout=HTTP_TIMEOUT_S
    )
    response.raise_for_status()
    return str(response.json()["session_id"])


def _delete_session(base_url: str, key: str, session_id: str | None) -> None:
    """Keep the key under its open-session cap however many examples run."""
    if session_id is not None:
        requests.delete(
            f"{base_url}/audio_sessions/{session_id}",
            headers={"x-api-key": key},
            timeout=HTTP_TIMEOUT_S,
        )


def _operations() -> list[tuple[str, str, GenerationMode]]:
    """Every operation, with valid and with invalid requests.

    DELETE has nothing to make invalid (its one input, the session id, is replaced by a real
    one), so it runs with valid requests only.
    """
    return [
        (method.upper(), path, mode)
        for path, item in openapi_document()["paths"].items()
        for method in item
        if method != "parameters"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if not (method == "delete" and mode is GenerationMode.NEGATIVE)
        # nothing to make invalid in a call without parameters or body (GET /tags/official)
        if not (mode is GenerationMode.NEGATIVE and not _has_inputs(item, method))
    ]


def _has_inputs(item: dict[str, Any], method: str) -> bool:
    operation = item[method]
    return bool(item.get("parameters") or operation.get("parameters") or "requestBody" in operation)


@pytest.mark.parametrize(("method", "path", "mode"), _operations())
def test_api_conforms_to_its_document(
    served_schema: Any, live: tuple[str, str], method: str, path: str, mode: GenerationMode
) -> None:
    base_url, key = live
    operation = served_schema[path][method]
    created = itertools.count()

    @given(case=operation.as_strategy(generation_mode=mode))
    @EXAMPLES
    def check(case: Any) -> None:
        session_id = None
        if "session_id" in (case.path_parameters or {}):
            session_id = _new_session(base_url, key, next(created))
            case.path_parameters["session_id"] = session_id
            if case.path_parameters.get("chunk_sequence", 1) in (0, 2, 4):
                case.path_parameters["chunk_sequence"] = 0  # the fresh session's next chunk
            if path.endswith("/sse"):  # a live feed lasts as long as its session: end it first
                requests.patch(
                    f"{base_url}/audio_sessions/{session_id}",
                    json={"make_readonly": True},
                    headers={"x-api-key": key},
                    timeout=HTTP_TIMEOUT_S,
                )
        try:
            response = case.call_and_validate(
                base_url=base_url, headers={"x-api-key": key}, checks=CHECKS, timeout=HTTP_TIMEOUT_S
            )
        finally:
            _delete_session(base_url, key, session_id)
        if method == "POST" and path == "/audio_sessions/" and response.status_code == 200:
            _delete_session(base_url, key, response.json()["session_id"])

    check()


# -- the pyannoteAI-style API (/v1): its own document ---------------------------------------


@pytest.fixture(scope="module")
def media_schema(live: tuple[str, str]) -> Any:
    base_url, _ = live
    response = requests.get(_media_base(base_url) + "/openapi.json", timeout=HTTP_TIMEOUT_S)
    response.raise_for_status()
    document = response.json()
    assert document == json.loads(json.dumps(media_openapi_document()))
    return schemathesis.openapi.from_dict(document)


def _media_base(base_url: str) -> str:
    return base_url.removesuffix("/api/v1") + "/v1"


def _media_operations() -> list[tuple[str, str, GenerationMode]]:
    return [
        (method.upper(), path, mode)
        for path, item in media_openapi_document()["paths"].items()
        for method in item
        if method != "parameters"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if not (mode is GenerationMode.NEGATIVE and not _has_inputs(item, method))
    ]


@pytest.mark.parametrize(("method", "path", "mode"), _media_operations())
def test_media_api_conforms_to_its_document(
    media_schema: Any, live: tuple[str, str], method: str, path: str, mode: GenerationMode
) -> None:
    base_url, key = live
    operation = media_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @EXAMPLES
    def check(case: Any) -> None:
        case.call_and_validate(
            base_url=_media_base(base_url),
            headers={"Authorization": f"Bearer {key}"},
            checks=CHECKS,
            timeout=HTTP_TIMEOUT_S,
        )

    check()


# -- the Datasets API (/api/v1/datasets): its own document ------------------------------------


@pytest.fixture(scope="module")
def datasets_schema(live: tuple[str, str]) -> Any:
    base_url, _ = live
    response = requests.get(f"{base_url}/datasets/openapi.json", timeout=HTTP_TIMEOUT_S)
    response.raise_for_status()
    document = response.json()
    assert document == json.loads(json.dumps(datasets_openapi_document()))
    return schemathesis.openapi.from_dict(document)


def _new_dataset(base_url: str, key: str) -> str:
    response = requests.post(
        f"{base_url}/datasets",
        json={"name": "fuzz", "artifact_types": [{"name": "glitch", "color": "#FF4444"}]},
        headers={"x-api-key": key},
        timeout=HTTP_TIMEOUT_S,
    )
    response.raise_for_status()
    return str(response.json()["id"])


def _new_set(base_url: str, key: str, dataset_id: str) -> str:
    response = requests.post(
        f"{base_url}/datasets/{dataset_id}/annotation-sets",
        headers={"x-api-key": key},
        timeout=HTTP_TIMEOUT_S,
    )
    response.raise_for_status()
    return str(response.json()["id"])


@pytest.fixture(scope="module")
def inference_model(live: tuple[str, str]) -> str:
    """A model of the key's team, so that generated inference jobs can be real ones."""
    base_url, key = live
    return _SERVERS[base_url].install_model(key)


def _new_inference_job(base_url: str, key: str, model_id: str) -> str:
    response = requests.post(
        f"{base_url}/inference-jobs",
        json={"model_id": model_id},
        headers={"x-api-key": key},
        timeout=HTTP_TIMEOUT_S,
    )
    response.raise_for_status()
    return str(response.json()["id"])


def _datasets_operations() -> list[tuple[str, str, GenerationMode]]:
    """As for the session API: DELETE's only inputs are ids, replaced by real ones."""
    return [
        (method.upper(), path, mode)
        for path, item in datasets_openapi_document()["paths"].items()
        for method in item
        if method != "parameters"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if not (method == "delete" and mode is GenerationMode.NEGATIVE)
        if not (mode is GenerationMode.NEGATIVE and not _has_inputs(item, method))
    ]


@pytest.mark.parametrize(("method", "path", "mode"), _datasets_operations())
def test_datasets_api_conforms_to_its_document(
    datasets_schema: Any,
    live: tuple[str, str],
    inference_model: str,
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    """Operations on ``{dataset_id}`` and ``{set_id}`` get a fresh dataset and draft set, and
    those on ``{job_id}`` a fresh inference job on a real model, so they reach real ones
    instead of stopping at 404 (an annotation id stays generated)."""
    base_url, key = live
    operation = datasets_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @EXAMPLES
    def check(case: Any) -> None:
        params = case.path_parameters or {}
        dataset_id = None
        if "dataset_id" in params:
            dataset_id = _new_dataset(base_url, key)
            params["dataset_id"] = dataset_id
            if "set_id" in params:
                params["set_id"] = _new_set(base_url, key, dataset_id)
        if "job_id" in params:
            params["job_id"] = _new_inference_job(base_url, key, inference_model)
        try:
            case.call_and_validate(
                base_url=base_url, headers={"x-api-key": key}, checks=CHECKS, timeout=HTTP_TIMEOUT_S
            )
        finally:
            if dataset_id is not None:
                requests.delete(
                    f"{base_url}/datasets/{dataset_id}",
                    headers={"x-api-key": key},
                    timeout=HTTP_TIMEOUT_S,
                )

    check()
