"""The OpenAPI 3.0.3 paths and schemas of training jobs and models (Relay style), generated from
the wire types in ``protocol.training``.

``training_paths()`` and ``training_schemas()`` are what the datasets document merges (the paths
are relative to ``/api/v1``), as it merges the audio files' (``protocol.audio_files_openapi``).
"""

from __future__ import annotations

from typing import Any

from protocol.datasets import MAX_ID_CHARS, ListQuery
from protocol.errors import GenericError
from protocol.training import (
    CreateTrainingJob,
    DetectorModel,
    ModelPage,
    ModelsQuery,
    TrainingJob,
    TrainingJobPage,
)
from protocol.wire import query_parameters, schema_ref, schemas

__all__ = ["training_paths", "training_schemas"]

Schema = dict[str, Any]
JSON = "application/json"
REQUESTS = (CreateTrainingJob,)
RESPONSES = (GenericError, TrainingJob, TrainingJobPage, DetectorModel, ModelPage)

_ERRORS = {
    400: "The body or a query parameter is malformed, a config key is unknown or its value out "
    "of range, an artifact type is not the dataset's, or the set cannot be trained on (fewer "
    "than 2 ready files, a type without annotations); the message names what.",
    401: "The API key is missing, invalid or revoked.",
    404: "No such dataset, annotation set (in this dataset), training job or model for this "
    "key's team.",
    409: "The annotation set is a draft: publish it first.",
    413: "The body is too large.",
    429: "The key has too many unfinished jobs.",
    500: "Unexpected server error; the body names a request id to look for.",
}
_SECURITY: list[dict[str, list[str]]] = [{"API_Key": []}, {"Bearer": []}]
_JOB_TAGS = ["training jobs"]
_MODEL_TAGS = ["models"]


def _json(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Schema]:
    error = schema_ref(GenericError)
    return {str(s): _json(_ERRORS[s], error) for s in statuses}


def _id(name: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS},
    }


def _op(
    operation_id: str, tags: list[str], summary: str, responses: Schema, **extra: Any
) -> Schema:
    return {
        "operationId": operation_id,
        "tags": tags,
        "summary": summary,
        "security": _SECURITY,
        "responses": responses,
        **extra,
    }


def training_paths() -> dict[str, Schema]:
    """The paths, relative to ``/api/v1``."""
    job_id, model_id = _id("job_id"), _id("model_id")
    job = schema_ref(TrainingJob)
    return {
        "/training-jobs": {
            "post": _op(
                "createTrainingJob",
                _JOB_TAGS,
                "Train a detector on a published annotation set",
                {
                    "201": _json("The job, pending.", job),
                    **_errors(400, 401, 404, 409, 413, 429, 500),
                },
                requestBody={
                    "required": True,
                    "content": {JSON: {"schema": schema_ref(CreateTrainingJob)}},
                },
            ),
            "get": _op(
                "listTrainingJobs",
                _JOB_TAGS,
                "The team's training jobs, newest first",
                {"200": _json("A page.", schema_ref(TrainingJobPage)), **_errors(400, 401, 500)},
                parameters=query_parameters(ListQuery),
            ),
        },
        "/training-jobs/{job_id}": {
            "parameters": [job_id],
            "get": _op(
                "getTrainingJob",
                _JOB_TAGS,
                "A training job: status, progress, metrics once completed",
                {"200": _json("The job.", job), **_errors(401, 404, 500)},
            ),
        },
        "/training-jobs/{job_id}/cancel": {
            "parameters": [job_id],
            "post": _op(
                "cancelTrainingJob",
                _JOB_TAGS,
                "Cancel a job that has not finished (its training stops at once)",
                {"200": _json("The job afterwards.", job), **_errors(401, 404, 500)},
            ),
        },
        "/models": {
            "get": _op(
                "listModels",
                _MODEL_TAGS,
                "The team's models, newest first",
                {"200": _json("A page.", schema_ref(ModelPage)), **_errors(400, 401, 500)},
                parameters=query_parameters(ModelsQuery),
            ),
        },
        "/models/{model_id}": {
            "parameters": [model_id],
            "get": _op(
                "getModel",
                _MODEL_TAGS,
                "A model",
                {"200": _json("The model.", schema_ref(DetectorModel)), **_errors(401, 404, 500)},
            ),
            "delete": _op(
                "deleteModel",
                _MODEL_TAGS,
                "Remove a model and its file",
                {"204": {"description": "Removed."}, **_errors(401, 404, 500)},
            ),
        },
        "/models/{model_id}/file": {
            "parameters": [model_id],
            "get": _op(
                "downloadModel",
                _MODEL_TAGS,
                "The model's ONNX file (features in, per-frame probabilities out)",
                {
                    "200": {
                        "description": "The ONNX file; its sha256 is the model's.",
                        "content": {
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            }
                        },
                    },
                    **_errors(401, 404, 500),
                },
            ),
        },
    }


def training_schemas() -> dict[str, Schema]:
    return schemas(REQUESTS, RESPONSES)
