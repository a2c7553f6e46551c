"""The OpenAPI 3.0.3 paths and schemas of a dataset's audio files (Relay style) and of the local
store's form upload, generated from the wire types in ``protocol.audio_files``.

``audio_files_paths()`` and ``audio_files_schemas()`` are the pieces another document merges
(the datasets document, which the datasets' own routes grow, takes both as they are: the paths
are relative to ``/api/v1``); ``audio_files_openapi_document()`` is them as a document of their
own, for validation and for clients that want only this part.
"""

from __future__ import annotations

from typing import Any

from protocol.audio_files import (
    AudioConfirm,
    AudioFile,
    AudioFilePage,
    AudioFilesQuery,
    AudioUploadRequest,
    AudioUploadUrl,
)
from protocol.errors import GenericError
from protocol.wire import query_parameters, schema_ref, schemas

__all__ = ["audio_files_openapi_document", "audio_files_paths", "audio_files_schemas"]

Schema = dict[str, Any]
JSON = "application/json"
REQUESTS = (AudioUploadRequest, AudioConfirm)
RESPONSES = (GenericError, AudioUploadUrl, AudioFile, AudioFilePage)

_ERRORS = {
    400: "The body, a query parameter or the upload form is malformed, or the file's size is "
    "outside the form's range (EntityTooLarge / EntityTooSmall); the message says which.",
    401: "The API key is missing, invalid or revoked.",
    403: "The upload form was altered, was not issued here, or has expired.",
    404: "No such dataset or audio file for this key's team.",
    408: "The upload stalled longer than the body read timeout.",
    409: "The upload has not arrived, or its size is not the declared one (it was removed).",
    500: "Unexpected server error; the body names a request id to look for.",
}
_SECURITY: list[dict[str, list[str]]] = [{"API_Key": []}, {"Bearer": []}]


def _json(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Schema]:
    error = schema_ref(GenericError)
    return {str(s): _json(_ERRORS[s], error) for s in statuses}


def _body(kind: type[Any]) -> Schema:
    return {"required": True, "content": {JSON: {"schema": schema_ref(kind)}}}


def _path_id(name: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def audio_files_paths() -> dict[str, Schema]:
    """The paths, relative to ``/api/v1``."""
    dataset, audio = _path_id("dataset_id"), _path_id("audio_id")
    tags = ["dataset audio"]
    return {
        "/datasets/{dataset_id}/audio/upload-url": {
            "parameters": [dataset],
            "post": {
                "operationId": "createAudioUploadUrl",
                "tags": tags,
                "summary": "A form to upload one audio file, and the file's id",
                "security": _SECURITY,
                "requestBody": _body(AudioUploadRequest),
                "responses": {
                    "200": _json(
                        "POST upload_url a multipart form: fields in order, then the file "
                        "as the last field, named file.",
                        schema_ref(AudioUploadUrl),
                    ),
                    **_errors(400, 401, 404, 500),
                },
            },
        },
        "/datasets/{dataset_id}/audio/confirm": {
            "parameters": [dataset],
            "post": {
                "operationId": "confirmAudioUpload",
                "tags": tags,
                "summary": "The upload is done: process it (idempotent)",
                "security": _SECURITY,
                "requestBody": _body(AudioConfirm),
                "responses": {
                    "200": _json("The file, pending processing.", schema_ref(AudioFile)),
                    **_errors(400, 401, 404, 409, 500),
                },
            },
        },
        "/datasets/{dataset_id}/audio": {
            "parameters": [dataset],
            "get": {
                "operationId": "listAudioFiles",
                "tags": tags,
                "summary": "The dataset's audio files, oldest first",
                "security": _SECURITY,
                "parameters": query_parameters(AudioFilesQuery),
                "responses": {
                    "200": _json("A page of files.", schema_ref(AudioFilePage)),
                    **_errors(400, 401, 404, 500),
                },
            },
        },
        "/datasets/{dataset_id}/audio/{audio_id}": {
            "parameters": [dataset, audio],
            "get": {
                "operationId": "getAudioFile",
                "tags": tags,
                "summary": "One file and its processing status",
                "security": _SECURITY,
                "responses": {
                    "200": _json("The file.", schema_ref(AudioFile)),
                    **_errors(401, 404, 500),
                },
            },
            "delete": {
                "operationId": "deleteAudioFile",
                "tags": tags,
                "summary": "Remove the file, its upload and what processing derived",
                "security": _SECURITY,
                "responses": {"204": {"description": "Removed."}, **_errors(401, 404, 500)},
            },
        },
        "/uploads": {
            "post": {
                "operationId": "uploadForm",
                "tags": tags,
                "summary": "The local store's S3-style form upload (the upload_url it issues)",
                "description": "No API key: the signed policy in the fields is the capability.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["key", "policy", "x-amz-signature", "file"],
                                "properties": {
                                    "key": {"type": "string"},
                                    "policy": {"type": "string"},
                                    "x-amz-signature": {"type": "string"},
                                    "file": {"type": "string", "format": "binary"},
                                },
                                "additionalProperties": {"type": "string"},
                            }
                        }
                    },
                },
                "responses": {
                    "204": {"description": "Stored, as S3 answers."},
                    **_errors(400, 403, 408, 500),
                },
            }
        },
    }


def audio_files_schemas() -> dict[str, Schema]:
    return schemas(REQUESTS, RESPONSES)


def audio_files_openapi_document(server_url: str = "/api/v1") -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "tympan dataset audio files (Relay style)",
            "version": "1.0.0",
            "description": (
                "Request an upload form, POST the file to it (the S3 service's own with the S3 "
                "store, tympan's /uploads with the local store: the same client code), confirm, "
                "then poll processing_status until ready or failed. Every error is a JSON body."
            ),
        },
        "servers": [{"url": server_url}],
        "tags": [{"name": "dataset audio", "description": "A dataset's audio files."}],
        "paths": audio_files_paths(),
        "components": {
            "schemas": audio_files_schemas(),
            "securitySchemes": {
                "Bearer": {"type": "http", "scheme": "bearer"},
                "API_Key": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
    }
