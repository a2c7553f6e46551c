"""The OpenAPI 3.0.3 document of tympan's audio-session API, as a plain dict.

It describes what the server does, not an ideal of it, so a client generated from it (e.g.
``openapi-generator -g python``) works against tympan unchanged. Operation ids, schema names and
the ``API_Key`` security scheme are Cochl.Sense v1.1.0's, so code written against Cochl's generated
client keeps its names; tympan's additions (sensitivities, window hop, ``/results``, msgpack) are
extra optional fields, extra schemas and one extra operation.

The component schemas are generated from the wire types (``protocol.messages``,
``protocol.events``; see ``protocol.wire``); the paths are written here. Response schemas forbid
unknown properties: the test suite validates every response of a real server against them, so
a field added or renamed on one side and not the other fails there.
"""

from __future__ import annotations

from typing import Any

from protocol.errors import GenericError
from protocol.events import EventParams, EventsPage, event_paths
from protocol.messages import (
    MAX_STATUS_TOKEN_CHARS,
    AudioChunk,
    AudioChunkMsgpack,
    CreateSession,
    CreateSessionResponse,
    OfficialTag,
    PageQuery,
    PredictRequest,
    PredictRequestMsgpack,
    PredictResponse,
    ResultsQuery,
    SessionRefs,
    SessionResults,
    SessionStatus,
    UpdateSession,
)
from protocol.tokens import MAX_TOKEN_CHARS as MAX_SCOPED_TOKEN_CHARS
from protocol.wire import query_parameters, schemas

__all__ = ["OPENAPI_VERSION", "openapi_document"]

OPENAPI_VERSION = "3.0.3"
API_VERSION = "1.1.0"
JSON = "application/json"
MSGPACK = "application/msgpack"

Schema = dict[str, Any]

_DESCRIPTION = f"""\
Self-hosted sound-event detection, wire-compatible with the Cochl.Sense audio-session API \
v{API_VERSION}. An audio session is one audio source (a stream or a file) that is uploaded in \
numbered chunks of at most 5 MiB (`TYMPAN_MAX_CHUNK_BYTES`) and tagged window by window.

Lifetime: `writable -> readonly -> deleted`. A session becomes readonly by a PATCH, when \
`total_size` bytes have been uploaded, or when its audio cannot be decoded (the status then carries \
`error`); it is deleted by a DELETE or after an hour without chunks. Streams are inferred as chunks \
arrive, files once the session is readonly.

Authentication: creating a session requires a valid `x-api-key` (`Authorization: Bearer KEY` is \
accepted too). The other session routes work without a key: the unguessable session id is the \
capability. A key that is sent must be valid (otherwise 401) and must be the key that created the \
session (otherwise 404, as for a session that does not exist). A server started with \
`require_owner_key` answers 401 to session routes called without a key.

Encodings: request and response bodies are JSON by default. A request body sent as \
`Content-Type: application/msgpack` (also `application/x-msgpack`, `application/vnd.msgpack`) is \
read as msgpack, where a chunk's `data` is raw bytes instead of base64; `Accept: \
application/msgpack` makes every response body, errors included, msgpack.

Errors: every error, including an unknown route (404), a known route with the wrong method (405, \
with `Allow`) and a body over the size limit (413), is a `GenericError` body. Every response carries \
`X-Request-Id` (echoed when the request sends one).

The create route is `/audio_sessions/` with a trailing slash, as in Cochl; `/audio_sessions` is \
accepted too. Outside this document's base URL the server also answers `GET /healthz` (liveness) \
and `GET /readyz` (200 once the model is loaded and warmed up, 503 before)."""


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _bodies(schema: Schema, msgpack_schema: Schema | None = None) -> Schema:
    """The same body in both encodings the server speaks."""
    return {
        JSON: {"schema": schema},
        MSGPACK: {"schema": msgpack_schema or schema},
    }


def _int(low: int, high: int | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": "integer", "minimum": low}
    if high is not None:
        schema["maximum"] = high
    if high is None or high > 2**31 - 1:
        schema["format"] = "int64"
    return {**schema, **extra}


REQUESTS = (
    CreateSession,
    UpdateSession,
    AudioChunk,
    AudioChunkMsgpack,
    PredictRequest,
    PredictRequestMsgpack,
    EventParams,
)
RESPONSES = (
    CreateSessionResponse,
    SessionRefs,
    SessionStatus,
    SessionResults,
    PredictResponse,
    OfficialTag,
    GenericError,
    EventsPage,
)


def _schemas() -> dict[str, Schema]:
    """Generated from the wire types; names as Cochl's document has them."""
    return schemas(REQUESTS, RESPONSES)


_ERRORS = {
    400: ("BadRequest", "The parameter is missing or not formatted properly."),
    401: ("Unauthorized", "The API key is missing (where required), invalid or revoked."),
    403: ("Forbidden", "The session is not writable anymore."),
    404: ("NotFound", "The session does not exist, has been deleted or belongs to another key."),
    409: ("Conflict", "The chunk sequence is not the next one expected."),
    413: (
        "PayloadTooLarge",
        "The audio chunk is larger than the server's limit (5 MiB by default), or the "
        "request body is too large; the message names the limit.",
    ),
    500: ("InternalError", "Unexpected server error; the body names a request id to look for."),
}


def _request_id_header() -> Schema:
    return {"$ref": "#/components/headers/X-Request-Id"}


def _error_responses(*statuses: int) -> dict[str, Schema]:
    return {
        str(status): {"$ref": f"#/components/responses/{_ERRORS[status][0]}"} for status in statuses
    }


def _ok(description: str, schema: Schema | None = None) -> Schema:
    response: Schema = {
        "description": description,
        "headers": {"X-Request-Id": _request_id_header()},
    }
    if schema is not None:
        response["content"] = _bodies(schema)
    return response


_KEY_OPTIONAL: list[dict[str, list[str]]] = [{"API_Key": []}, {}]


def _paths(components: dict[str, Schema]) -> dict[str, Schema]:
    session_id = {"$ref": "#/components/parameters/SessionId"}
    page_parameters = query_parameters(PageQuery)
    return {
        **event_paths(
            session_id,
            page_parameters,
            _error_responses(400, 401, 404, 500),
            _KEY_OPTIONAL,
            MAX_SCOPED_TOKEN_CHARS,
            components["EventParams"],
        ),
        "/audio_sessions/": {
            "post": {
                "operationId": "createSession",
                "tags": ["audio_session"],
                "summary": "Create a session",
                "description": (
                    "Create a session; an API key is required. Its parameters are immutable. "
                    "The route also answers without the trailing slash."
                ),
                "security": [{"API_Key": []}],
                "requestBody": {"required": True, "content": _bodies(_ref("CreateSession"))},
                "responses": {
                    "200": _ok("The session was created.", _ref("CreateSessionResponse")),
                    **_error_responses(400, 401, 413, 500),
                },
            }
        },
        "/audio_sessions/{session_id}": {
            "parameters": [session_id],
            "patch": {
                "operationId": "updateSession",
                "tags": ["audio_session"],
                "summary": "Update a session",
                "security": _KEY_OPTIONAL,
                "requestBody": {"required": True, "content": _bodies(_ref("UpdateSession"))},
                "responses": {
                    "204": _ok("The session was updated."),
                    **_error_responses(400, 401, 404, 413, 500),
                },
            },
            "delete": {
                "operationId": "deleteSession",
                "tags": ["audio_session"],
                "summary": "Delete a session",
                "description": "The session becomes deleted; every later call on it answers 404.",
                "security": _KEY_OPTIONAL,
                "responses": {
                    "204": _ok("The session was deleted."),
                    **_error_responses(401, 404, 500),
                },
            },
        },
        "/audio_sessions/{session_id}/chunks/{chunk_sequence}": {
            "parameters": [session_id],
            "put": {
                "operationId": "uploadChunk",
                "tags": ["audio_session"],
                "summary": "Upload an audio chunk",
                "description": (
                    "Chunks are numbered from 0, one more on each upload. Re-sending the last "
                    "accepted chunk with the same bytes (a retry after a lost response) answers "
                    "200 again without storing it twice."
                ),
                "security": _KEY_OPTIONAL,
                "parameters": [
                    {
                        "name": "chunk_sequence",
                        "in": "path",
                        "required": True,
                        "description": "Counter starting at 0 and growing by one per chunk.",
                        "schema": _int(0),
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": _bodies(_ref("AudioChunk"), _ref("AudioChunkMsgpack")),
                },
                "responses": {
                    "200": _ok("The chunk was uploaded.", _ref("SessionRefs")),
                    **_error_responses(400, 401, 403, 404, 409, 413, 500),
                },
            },
        },
        "/audio_sessions/{session_id}/predict": {
            "parameters": [session_id],
            "post": {
                "operationId": "predict",
                "tags": ["audio_session"],
                "summary": "Infer one chunk of a stream synchronously",
                "description": (
                    "Appends the chunk to a stream session exactly as an upload with that "
                    "sequence would (the same sequence counter, 409 when out of order; without "
                    "`sequence`, the next one), waits until the model has seen it and answers "
                    "with the windows it completed. They are also the session's results. A file "
                    "session answers 400: its chunks are uploaded, and inferred once complete."
                ),
                "security": _KEY_OPTIONAL,
                "requestBody": {
                    "required": True,
                    "content": _bodies(_ref("PredictRequest"), _ref("PredictRequestMsgpack")),
                },
                "responses": {
                    "200": _ok("The windows the chunk completed.", _ref("PredictResponse")),
                    **_error_responses(400, 401, 403, 404, 409, 413, 500),
                },
            },
        },
        "/tags/official": {
            "get": {
                "operationId": "getOfficialTags",
                "tags": ["tags"],
                "summary": "List the tags this server's model can report",
                "security": _KEY_OPTIONAL,
                "responses": {
                    "200": _ok(
                        "Every tag a result may carry.",
                        {"type": "array", "items": _ref("OfficialTag")},
                    ),
                    **_error_responses(401, 500),
                },
            },
        },
        "/audio_sessions/{session_id}/status": {
            "parameters": [session_id],
            "get": {
                "operationId": "readStatus",
                "tags": ["audio_session"],
                "summary": "Read the session status and a page of results",
                "description": (
                    "While inference is running and the requested page would be empty, the "
                    "server waits for a result (10 s at most by default) before answering "
                    "with what it has; clients should poll again."
                ),
                "security": _KEY_OPTIONAL,
                "parameters": [
                    *page_parameters,
                    {
                        "name": "next_token",
                        "in": "query",
                        "description": (
                            "Token from a previous page; when set, offset and count are ignored."
                        ),
                        "schema": {"type": "string", "maxLength": MAX_STATUS_TOKEN_CHARS},
                    },
                ],
                "responses": {
                    "200": _ok("The session status.", _ref("SessionStatus")),
                    **_error_responses(400, 401, 404, 500),
                },
            },
        },
        "/audio_sessions/{session_id}/results": {
            "parameters": [session_id],
            "get": {
                "operationId": "readResults",
                "tags": ["audio_session"],
                "summary": "Read a page of results with the inference state",
                "description": "Answers at once, never waits for results.",
                "security": _KEY_OPTIONAL,
                "parameters": query_parameters(ResultsQuery),
                "responses": {
                    "200": _ok("A page of results.", _ref("SessionResults")),
                    **_error_responses(400, 401, 404, 500),
                },
            },
        },
    }


def _components(component_schemas: dict[str, Schema]) -> Schema:
    return {
        "schemas": component_schemas,
        "parameters": {
            "SessionId": {
                "name": "session_id",
                "in": "path",
                "required": True,
                "description": "Unique identifier of an audio session.",
                "schema": {"type": "string"},
            }
        },
        "headers": {
            "X-Request-Id": {
                "description": "Id of the request in the server's log.",
                "schema": {"type": "string"},
            }
        },
        "responses": {
            name: {
                "description": description,
                "headers": {"X-Request-Id": _request_id_header()},
                "content": _bodies(_ref("GenericError")),
            }
            for name, description in _ERRORS.values()
        },
        "securitySchemes": {
            "API_Key": {
                "type": "apiKey",
                "in": "header",
                "name": "x-api-key",
                "description": (
                    "Required to create a session. Optional on the session routes; when sent it "
                    "must be valid (401) and the session owner's (404)."
                ),
            }
        },
    }


def openapi_document(server_url: str = "/api/v1") -> dict[str, Any]:
    """The OpenAPI 3.0.3 document, for a server whose API lives at ``server_url``."""
    component_schemas = _schemas()
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "tympan audio-session API",
            "version": API_VERSION,
            "description": _DESCRIPTION,
        },
        "servers": [{"url": server_url}],
        "tags": [
            {"name": "audio_session", "description": "Audio sessions and their results."},
            {"name": "tags", "description": "The tags results may carry."},
        ],
        "paths": _paths(component_schemas),
        "components": _components(component_schemas),
    }
