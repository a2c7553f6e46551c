"""The OpenAPI 3.0.3 paths and schemas of inference jobs (Relay's Step 6), generated from the
wire types in ``protocol.inference``.

``inference_paths()`` and ``inference_schemas()`` are the pieces the Relay document merges (the
datasets document, served at ``/api/v1/datasets/openapi.json``; the paths are relative to
``/api/v1``). The upload form itself is the ``/uploads`` operation that the dataset audio files'
part documents: one form route serves both.
"""

from __future__ import annotations

from typing import Any

from protocol.errors import GenericError
from protocol.inference import (
    CreateInferenceJob,
    InferenceConfirm,
    InferenceFile,
    InferenceJob,
    InferenceJobPage,
    InferenceJobsQuery,
    InferenceMediaFile,
    InferenceUploadRequest,
    InferenceUploadUrl,
)
from protocol.wire import query_parameters, schema_ref, schemas

__all__ = ["INFERENCE_TAG", "inference_paths", "inference_schemas"]

Schema = dict[str, Any]
JSON = "application/json"
REQUESTS = (CreateInferenceJob, InferenceUploadRequest, InferenceConfirm, InferenceMediaFile)
RESPONSES = (GenericError, InferenceJob, InferenceJobPage, InferenceFile, InferenceUploadUrl)
INFERENCE_TAG = {
    "name": "inference jobs",
    "description": "Run one of the team's custom detectors over files (Relay's Step 6).",
}

_ERRORS = {
    400: "The body or a query parameter is malformed (the message names the field).",
    401: "The API key is missing, invalid or revoked.",
    404: "No such inference job, file, model or media object for this key's team.",
    409: "The upload has not arrived or has the wrong size, the job was canceled or is full "
    "(files), has already finished (cancel), or the model's stored file cannot be used.",
    413: "The body is too large.",
    500: "Unexpected server error; the body names a request id to look for.",
}
_SECURITY: list[dict[str, list[str]]] = [{"API_Key": []}, {"Bearer": []}]
_TAGS = [INFERENCE_TAG["name"]]


def _json(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Schema]:
    error = schema_ref(GenericError)
    return {str(s): _json(_ERRORS[s], error) for s in statuses}


def _op(
    operation_id: str,
    summary: str,
    responses: dict[str, Schema],
    body: type[Any] | None = None,
    parameters: list[Schema] | None = None,
) -> Schema:
    operation: Schema = {
        "operationId": operation_id,
        "tags": _TAGS,
        "summary": summary,
        "security": _SECURITY,
        "responses": responses,
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": schema_ref(body)}},
        }
    if parameters:
        operation["parameters"] = parameters
    return operation


def inference_paths() -> dict[str, Schema]:
    """The paths, relative to ``/api/v1``."""
    job_id = {
        "name": "job_id",
        "in": "path",
        "required": True,
        "description": "The inference job's id.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 64},
    }
    job = schema_ref(InferenceJob)
    file = schema_ref(InferenceFile)
    return {
        "/inference-jobs": {
            "post": _op(
                "createInferenceJob",
                "Create a job on one of the team's models (and, optionally, its media files)",
                {"201": _json("The job.", job), **_errors(400, 401, 404, 409, 413, 500)},
                CreateInferenceJob,
            ),
            "get": _op(
                "listInferenceJobs",
                "The team's inference jobs, newest first",
                {
                    "200": _json("A page of jobs.", schema_ref(InferenceJobPage)),
                    **_errors(400, 401, 500),
                },
                parameters=query_parameters(InferenceJobsQuery),
            ),
        },
        "/inference-jobs/{job_id}": {
            "parameters": [job_id],
            "get": _op(
                "getInferenceJob",
                "The job, its files and their detections",
                {"200": _json("The job.", job), **_errors(401, 404, 500)},
            ),
            "delete": _op(
                "deleteInferenceJob",
                "Remove the job, its files and their uploads (media objects stay)",
                {"204": {"description": "Removed."}, **_errors(401, 404, 500)},
            ),
        },
        "/inference-jobs/{job_id}/cancel": {
            "parameters": [job_id],
            "post": _op(
                "cancelInferenceJob",
                "Cancel: files not yet processing are failed and not run",
                {"200": _json("The job, canceled.", job), **_errors(401, 404, 409, 500)},
            ),
        },
        "/inference-jobs/{job_id}/files/upload-url": {
            "parameters": [job_id],
            "post": _op(
                "createInferenceUploadUrl",
                "A form to upload one audio file to the job, and the file's id",
                {
                    "200": _json(
                        "POST upload_url a multipart form: upload_fields in order, then the "
                        "file as the last field, named file.",
                        schema_ref(InferenceUploadUrl),
                    ),
                    **_errors(400, 401, 404, 409, 413, 500),
                },
                InferenceUploadRequest,
            ),
        },
        "/inference-jobs/{job_id}/files/confirm": {
            "parameters": [job_id],
            "post": _op(
                "confirmInferenceUpload",
                "The upload is done: run the model on it (idempotent)",
                {
                    "200": _json("The file, pending.", file),
                    **_errors(400, 401, 404, 409, 413, 500),
                },
                InferenceConfirm,
            ),
        },
        "/inference-jobs/{job_id}/files": {
            "parameters": [job_id],
            "post": _op(
                "addInferenceMediaFile",
                "Add one of the team's media objects to the job",
                {
                    "201": _json("The file, pending.", file),
                    **_errors(400, 401, 404, 409, 413, 500),
                },
                InferenceMediaFile,
            ),
        },
    }


def inference_schemas() -> dict[str, Schema]:
    return schemas(REQUESTS, RESPONSES)
