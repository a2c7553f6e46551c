"""The OpenAPI 3.0.3 document of tympan's pyannoteAI-style API (``/v1``): the key check, the
Media API and the Jobs API. Served at ``GET /v1/openapi.json``; the session API has its own document at
``/api/v1/openapi.json``.

The component schemas are generated from the wire types (``protocol.media``, ``protocol.jobs``;
see ``protocol.wire``). Response schemas forbid unknown properties, so the suite's schema-driven
tests fail when a field is added on one side only.
"""

from __future__ import annotations

from typing import Any

from protocol.errors import GenericError
from protocol.jobs import (
    Job,
    JobCreated,
    JobPage,
    JobsQuery,
    SoundEventsInput,
    WebhookSecret,
)
from protocol.media import (
    MAX_OBJECT_KEY_CHARS,
    OBJECT_KEY_PATTERN,
    KeyCheck,
    MediaInput,
    MediaObject,
    MediaUploadUrl,
)
from protocol.wire import query_parameters, schemas

__all__ = ["media_openapi_document"]

Schema = dict[str, Any]
JSON = "application/json"

_ERRORS = {
    400: "The body or the object key is malformed; the message says what is allowed.",
    401: "The API key is missing, invalid or revoked.",
    403: "The upload URL was altered, was not issued here, or has expired.",
    404: "No media under this object key (or no job with this id) for this key's team.",
    408: "The upload stalled longer than the body read timeout.",
    409: "The object key clashes with another of the team's (a key and a folder of it).",
    413: "The upload is larger than the limit signed into its URL (1 GiB by default).",
    500: "Unexpected server error; the body names a request id to look for.",
    429: "The key has spent its request budget (shared with the session API); see Retry-After.",
    503: "The upload crossed the removal of the expired object it replaces: upload it again.",
}
_OBJECT_KEY = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_OBJECT_KEY_CHARS,
    "pattern": OBJECT_KEY_PATTERN,
}


def _json(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Schema]:
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses}


_BEARER: list[dict[str, list[str]]] = [{"Bearer": []}, {"API_Key": []}]


REQUESTS = (MediaInput, SoundEventsInput)
RESPONSES = (
    GenericError,
    KeyCheck,
    MediaUploadUrl,
    MediaObject,
    JobCreated,
    Job,
    JobPage,
    WebhookSecret,
)


def _ref(kind: type[Any]) -> Schema:
    return {"$ref": f"#/components/schemas/{kind.__name__}"}


def _paths() -> dict[str, Schema]:
    object_key = {
        "name": "object_key",
        "in": "path",
        "required": True,
        "description": "The object key given at upload (without media://).",
        "schema": _OBJECT_KEY,
    }
    job_id = {"name": "jobId", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/sound-events": {
            "post": {
                "operationId": "createSoundEventsJob",
                "tags": ["jobs"],
                "summary": "Analyse an uploaded file: windows and sound events",
                "security": _BEARER,
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref(SoundEventsInput)}},
                },
                "responses": {
                    "200": _json("The job.", _ref(JobCreated)),
                    **_errors(400, 401, 404, 413, 500),
                },
            }
        },
        "/jobs": {
            "get": {
                "operationId": "listJobs",
                "tags": ["jobs"],
                "summary": "The team's jobs, newest first",
                "security": _BEARER,
                "parameters": query_parameters(JobsQuery),
                "responses": {
                    "200": _json("A page of jobs.", _ref(JobPage)),
                    **_errors(400, 401, 500),
                },
            }
        },
        "/jobs/{jobId}": {
            "parameters": [job_id],
            "get": {
                "operationId": "getJob",
                "tags": ["jobs"],
                "summary": "A job: status, progress, output once succeeded",
                "security": _BEARER,
                "responses": {
                    "200": _json("The job.", _ref(Job)),
                    **_errors(401, 404, 500),
                },
            },
        },
        "/jobs/{jobId}/cancel": {
            "parameters": [job_id],
            "post": {
                "operationId": "cancelJob",
                "tags": ["jobs"],
                "summary": "Cancel a job that has not finished",
                "security": _BEARER,
                "responses": {
                    "200": _json("The job after.", _ref(Job)),
                    **_errors(401, 404, 500),
                },
            },
        },
        "/webhook-secret": {
            "get": {
                "operationId": "getWebhookSecret",
                "tags": ["jobs"],
                "summary": "The secret the team's job webhooks are signed with",
                "security": _BEARER,
                "responses": {
                    "200": _json("The secret.", _ref(WebhookSecret)),
                    **_errors(401, 500),
                },
            }
        },
        "/test": {
            "get": {
                "operationId": "testKey",
                "tags": ["auth"],
                "summary": "Check that an API key works",
                "security": _BEARER,
                "responses": {
                    "200": _json("The key is valid.", _ref(KeyCheck)),
                    **_errors(401, 500),
                },
            }
        },
        "/media/input": {
            "post": {
                "operationId": "createMediaInput",
                "tags": ["media"],
                "summary": "Get a pre-signed URL to upload a file under an object key",
                "security": _BEARER,
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref(MediaInput)}},
                },
                "responses": {
                    "201": _json("The upload URL.", _ref(MediaUploadUrl)),
                    **_errors(400, 401, 413, 500),
                },
            }
        },
        "/media/upload/{token}": {
            "put": {
                "operationId": "uploadMedia",
                "tags": ["media"],
                "summary": "Upload the bytes to a URL from createMediaInput (no API key)",
                "security": [{}],
                "parameters": [
                    {
                        "name": "token",
                        "in": "path",
                        "required": True,
                        "description": "The signed grant: base64url payload, a dot, base64url MAC.",
                        "schema": {
                            "type": "string",
                            "maxLength": 4096,
                            "pattern": "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$",
                        },
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        }
                    },
                },
                "responses": {
                    "200": _json("Stored and durable.", _ref(MediaObject)),
                    **_errors(400, 403, 408, 409, 413, 500, 503),
                },
            }
        },
        "/media/{object_key}": {
            "parameters": [object_key],
            "get": {
                "operationId": "getMedia",
                "tags": ["media"],
                "summary": "Describe an uploaded file",
                "security": _BEARER,
                "responses": {
                    "200": _json("The file.", _ref(MediaObject)),
                    **_errors(400, 401, 404, 500),
                },
            },
            "delete": {
                "operationId": "deleteMedia",
                "tags": ["media"],
                "summary": "Remove an uploaded file before it expires",
                "security": _BEARER,
                "responses": {
                    "204": {"description": "Removed."},
                    **_errors(400, 401, 404, 500),
                },
            },
        },
    }


def _with_rate_limits(paths: dict[str, Schema]) -> dict[str, Schema]:
    """Every route called with a key may answer 429."""
    for item in paths.values():
        for operation in item.values():
            if isinstance(operation, dict) and operation.get("security") is _BEARER:
                operation["responses"].update(_errors(429))
    return paths


def media_openapi_document(server_url: str = "/v1") -> dict[str, Any]:
    """The document, for a server whose pyannoteAI-style API lives at ``server_url``."""
    error = _ref(GenericError)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "tympan media API (pyannoteAI style)",
            "version": "1.0.0",
            "description": (
                "Temporary per-team media storage behind pre-signed URLs: `POST /media/input` "
                "gives an upload URL for `media://<object-key>`, the client PUTs the bytes "
                "there with no key, and the file is removed 48 h after upload (configurable). "
                "Every error is a JSON body."
            ),
        },
        "servers": [{"url": server_url}],
        "tags": [
            {"name": "auth", "description": "API keys."},
            {"name": "media", "description": "Temporary media storage."},
            {"name": "jobs", "description": "Jobs on uploaded media."},
        ],
        "paths": _with_rate_limits(_paths()),
        "components": {
            "schemas": schemas(REQUESTS, RESPONSES),
            "responses": {
                f"E{status}": _json(description, error) for status, description in _ERRORS.items()
            },
            "securitySchemes": {
                "Bearer": {"type": "http", "scheme": "bearer"},
                "API_Key": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
    }
