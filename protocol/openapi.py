"""The OpenAPI 3.0.3 document of tympan's audio-session API, as a plain dict.

It describes what the server does, not an ideal of it, so a client generated from it (e.g.
``openapi-generator -g python``) works against tympan unchanged. Operation ids, schema names and
the ``API_Key`` security scheme are Cochl.Sense v1.1.0's, so code written against Cochl's generated
client keeps its names; tympan's additions (sensitivities, window hop, ``/results``, msgpack) are
extra optional fields, extra schemas and one extra operation.

Response schemas forbid unknown properties: the test suite validates every response of a real
server against them, so a field added or renamed on one side and not the other fails there.
"""

from __future__ import annotations

from typing import Any

from protocol.events import EVENT_SCHEMAS, event_paths
from protocol.messages import MAX_METADATA_BYTES, SENSITIVITY_RANGE, WINDOW_HOPS_S
from protocol.tokens import MAX_TOKEN_CHARS as MAX_SCOPED_TOKEN_CHARS

__all__ = ["OPENAPI_VERSION", "openapi_document"]

OPENAPI_VERSION = "3.0.3"
API_VERSION = "1.1.0"
JSON = "application/json"
MSGPACK = "application/msgpack"
MAX_PAGE_COUNT = 1024
DEFAULT_PAGE_COUNT = 32
MAX_CONTENT_TYPE_CHARS = 256
MAX_TOTAL_SIZE = 2**53
MAX_OFFSET = 2**62
MAX_TOKEN_CHARS = 64
WINDOW_HOP_SPELLINGS = ("0.5s", "500ms", "0.5", "1s", "1000ms", "1", "1.0s", "1.0")

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


def _response_object(required: list[str], properties: dict[str, Schema], **extra: Any) -> Schema:
    """A response object tympan produces: nothing undocumented may appear in it."""
    return {
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": False,
        **extra,
    }


def _sensitivity(description: str, **extra: Any) -> Schema:
    low, high = SENSITIVITY_RANGE
    return _int(low, high, description=description, **extra)


def _schemas() -> dict[str, Schema]:
    events = {"type": "array", "items": _ref("SenseEvent")}
    return {
        **EVENT_SCHEMAS,
        "AudioChunk": {
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {
                    "type": "string",
                    "description": "Raw audio encoded as base64 (at most 5 MiB once decoded by default: `TYMPAN_MAX_CHUNK_BYTES`).",
                }
            },
        },
        "AudioChunkMsgpack": {
            "type": "object",
            "description": "AudioChunk as a msgpack body.",
            "required": ["data"],
            "properties": {
                "data": {
                    "type": "string",
                    "format": "binary",
                    "description": "Raw audio bytes (msgpack bin), at most 5 MiB by default.",
                }
            },
        },
        "AudioContentType": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_CONTENT_TYPE_CHARS,
            "description": (
                "Type of audio to send: audio/wav, audio/mpeg, audio/ogg, audio/flac, audio/webm, "
                "audio/aac, audio/mp4 (and their common aliases), or raw PCM as "
                "`audio/x-raw; rate=16000; format=s16le; channels=1`. Raw sample formats: "
                "s16le, s16be, s24le, s24be, s32le, s32be, u16le, u16be, u24le, u24be, u32le, "
                "u32be, f16le, f16be, f24le, f24be, f32le, f32be, f64le, f64be, s8, u8, and "
                "without a byte order (s16, s24, s32, u16, u24, u32, f16, f24, f32, f64, as "
                "Cochl's sample clients write them) read as little-endian. An unsupported or "
                "malformed content type is refused with 400 at creation."
            ),
            "example": "audio/x-raw; rate=16000; format=s16le",
        },
        "AudioMetadata": {
            "type": "object",
            "description": (
                f"Free-form metadata of the session, at most {MAX_METADATA_BYTES} bytes as JSON."
            ),
            "additionalProperties": True,
        },
        "AudioType": {
            "type": "string",
            "enum": ["stream", "file"],
            "description": "Whether the audio that will be sent is a stream or a file.",
        },
        "WindowHop": {
            "description": (
                "Seconds between the starts of consecutive windows: 0.5 (the default) or 1, as a "
                'number or as a string such as "0.5s", "500ms" or "1s".'
            ),
            "oneOf": [
                {"type": "string", "enum": list(WINDOW_HOP_SPELLINGS)},
                {"type": "number", "enum": list(WINDOW_HOPS_S)},
            ],
        },
        "CreateSession": {
            "type": "object",
            "required": ["content_type", "type"],
            "properties": {
                "content_type": _ref("AudioContentType"),
                "metadata": _ref("AudioMetadata"),
                "total_size": _int(
                    1,
                    MAX_TOTAL_SIZE,
                    description=(
                        "When at least this many bytes of audio have been uploaded the session "
                        "becomes readonly (for a file, that starts inference)."
                    ),
                ),
                "type": _ref("AudioType"),
                "default_sensitivity": _sensitivity(
                    "Detection sensitivity for every tag: -2 (fewest detections) to 2 (most).",
                    default=0,
                ),
                "tags_sensitivity": {
                    "type": "object",
                    "description": "Sensitivity per tag name, overriding default_sensitivity.",
                    "additionalProperties": _sensitivity("Sensitivity of this tag."),
                },
                "window_hop": _ref("WindowHop"),
                "events": _ref("EventParams"),
                "webhook": _ref("Webhook"),
                "file_name": {"type": "string", "description": "Name of the file, informative."},
                "file_length": {
                    "type": "number",
                    "minimum": 0,
                    "description": "Length of the file in seconds, informative.",
                },
            },
        },
        "CreateSessionResponse": _response_object(
            ["chunk_sequence", "session_id", "window_size", "window_hop"],
            {
                "chunk_sequence": _int(0, description="Sequence of the next chunk: 0."),
                "session_id": {"type": "string", "description": "Id of the new session."},
                "window_size": {
                    "type": "number",
                    "exclusiveMinimum": True,
                    "minimum": 0,
                    "description": "Length in seconds of the window each result describes.",
                },
                "window_hop": {
                    "type": "number",
                    "enum": list(WINDOW_HOPS_S),
                    "description": "Seconds between the starts of consecutive windows.",
                },
            },
            description="SessionRefs plus the window geometry of the session's results.",
        ),
        "GenericError": _response_object(
            ["error", "status_code"],
            {
                "error": {
                    "type": "string",
                    "description": "Human-readable description; do not parse it.",
                },
                "status_code": _int(400, 599, description="HTTP status code returned."),
                "request_id": {
                    "type": "string",
                    "description": "Identifies the request in the server's logs (also in X-Request-Id).",
                },
            },
        ),
        "OfficialTag": _response_object(
            ["id", "name"],
            {
                "id": {
                    "type": "string",
                    "description": "Tag id: the class's AudioSet id, `others` for Others.",
                },
                "name": {"type": "string", "description": "Tag name, as results carry it."},
            },
        ),
        "PredictRequest": {
            "type": "object",
            "required": ["data"],
            "properties": {
                "sequence": _int(
                    0,
                    2**53,
                    description="The chunk's sequence; the session's next one when absent.",
                ),
                "data": {
                    "type": "string",
                    "description": "Audio encoded as base64 (at most 5 MiB once decoded by default).",
                },
            },
        },
        "PredictRequestMsgpack": {
            "type": "object",
            "description": "PredictRequest as a msgpack body.",
            "required": ["data"],
            "properties": {
                "sequence": _int(0, 2**53),
                "data": {"type": "string", "format": "binary"},
            },
        },
        "PredictResponse": _response_object(
            ["data", "next_sequence", "windows"],
            {
                "data": {
                    "allOf": [_ref("SenseEvent")],
                    "description": (
                        "The windows the chunk completed as one event: from the first's start to "
                        "the last's end, each tag with its highest probability among them. When "
                        "the chunk completed no window: no tags, and an empty span at the start "
                        "of the next window."
                    ),
                },
                "next_sequence": _int(0, description="The sequence of the next chunk."),
                "windows": {
                    "type": "array",
                    "items": _ref("SenseEvent"),
                    "description": "The completed windows one by one (a tympan extension).",
                },
            },
        ),
        "Page": _response_object(
            ["count", "offset", "total"],
            {
                "count": _int(0, MAX_PAGE_COUNT, description="Number of results returned."),
                "next_token": {
                    "type": "string",
                    "maxLength": MAX_TOKEN_CHARS,
                    "description": (
                        "Pass it as next_token to read the following results. Absent once the "
                        "session is readonly, fully inferred and this page reaches the end."
                    ),
                },
                "offset": _int(0, description="Index of the first returned result."),
                "total": _int(0, description="Number of results available at the moment."),
            },
        ),
        "Sense": _response_object(
            ["in_progress", "page", "results"],
            {
                "in_progress": {
                    "type": "boolean",
                    "description": "True while uploaded audio is still waiting for inference.",
                },
                "page": _ref("Page"),
                "results": events,
            },
        ),
        "SenseEvent": _response_object(
            ["end_time", "start_time", "tags"],
            {
                "end_time": {
                    "type": "number",
                    "description": "End of the window in seconds: start_time + window_size.",
                },
                "start_time": {
                    "type": "number",
                    "minimum": 0,
                    "description": "Start of the window in seconds; grows by window_hop.",
                },
                "tags": {"type": "array", "items": _ref("SenseEventTag")},
            },
        ),
        "SenseEventTag": _response_object(
            ["name", "probability"],
            {
                "name": {"type": "string", "description": "Name of the recognised sound."},
                "probability": {"type": "number", "minimum": 0, "maximum": 1},
            },
        ),
        "SessionRefs": _response_object(
            ["chunk_sequence", "session_id"],
            {
                "chunk_sequence": _int(0, description="Sequence of the next chunk to upload."),
                "session_id": {"type": "string"},
            },
        ),
        "SessionResults": _response_object(
            ["state", "data", "has_more"],
            {
                "state": {
                    "type": "string",
                    "enum": ["pending", "in-progress", "done", "error"],
                    "description": "Progress of the session's inference.",
                },
                "data": events,
                "has_more": {
                    "type": "boolean",
                    "description": "False once no result beyond this page can ever appear.",
                },
                "error": {"type": "string", "description": "Why the session failed."},
            },
        ),
        "SessionStatus": _response_object(
            ["inference", "refs", "state"],
            {
                "error": {"type": "string", "description": "An error occurred in the session."},
                "inference": _ref("Sense"),
                "refs": _ref("SessionRefs"),
                "state": {"type": "string", "enum": ["writable", "readonly", "deleted"]},
            },
        ),
        "UpdateSession": {
            "type": "object",
            "properties": {
                "make_readonly": {
                    "type": "boolean",
                    "default": False,
                    "description": "True makes the session readonly; false never undoes that.",
                }
            },
        },
    }


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


def _paths() -> dict[str, Schema]:
    session_id = {"$ref": "#/components/parameters/SessionId"}
    page_parameters = [
        {
            "name": "offset",
            "in": "query",
            "description": "How many entries to skip.",
            "schema": _int(0, MAX_OFFSET, default=0),
        },
        {
            "name": "count",
            "in": "query",
            "description": "Most entries to return.",
            "schema": _int(1, MAX_PAGE_COUNT, default=DEFAULT_PAGE_COUNT),
        },
    ]
    return {
        **event_paths(
            session_id,
            page_parameters,
            _error_responses(400, 401, 404, 500),
            _KEY_OPTIONAL,
            MAX_SCOPED_TOKEN_CHARS,
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
                    {
                        "name": "offset",
                        "in": "query",
                        "description": "How many results to skip.",
                        "schema": _int(0, MAX_OFFSET, default=0),
                    },
                    {
                        "name": "count",
                        "in": "query",
                        "description": "Most results to return.",
                        "schema": _int(1, MAX_PAGE_COUNT, default=DEFAULT_PAGE_COUNT),
                    },
                    {
                        "name": "next_token",
                        "in": "query",
                        "description": (
                            "Token from a previous page; when set, offset and count are ignored."
                        ),
                        "schema": {"type": "string", "maxLength": MAX_TOKEN_CHARS},
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
                "parameters": [
                    {
                        "name": "offset",
                        "in": "query",
                        "description": "How many results to skip.",
                        "schema": _int(0, MAX_OFFSET, default=0),
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "description": "Most results to return.",
                        "schema": _int(1, MAX_PAGE_COUNT, default=DEFAULT_PAGE_COUNT),
                    },
                ],
                "responses": {
                    "200": _ok("A page of results.", _ref("SessionResults")),
                    **_error_responses(400, 401, 404, 500),
                },
            },
        },
    }


def _components() -> Schema:
    return {
        "schemas": _schemas(),
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
        "paths": _paths(),
        "components": _components(),
    }
