"""The OpenAPI 3.0.3 document of tympan's Datasets API (Relay style): datasets, their artifact
types, annotation sets and annotations, audio files, training jobs and models. Served at ``GET /api/v1/datasets/openapi.json``, a
document of its own beside the session API's (``/api/v1/openapi.json``) and the /v1 API's.

The component schemas are generated from the wire types (``protocol.datasets``,
``protocol.annotations``; see ``protocol.wire``), so the document, the validation and the
responses cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from protocol.annotations import (
    MAX_BULK_ANNOTATIONS,
    Annotation,
    AnnotationPage,
    AnnotationQuery,
    AnnotationsCreated,
    AnnotationSet,
    AnnotationSetPage,
    BulkAnnotations,
    CreateAnnotationSet,
    UpdateAnnotation,
    UpdateAnnotationSet,
)
from protocol.audio_files_openapi import audio_files_paths, audio_files_schemas
from protocol.datasets import (
    MAX_ID_CHARS,
    CreateDataset,
    Dataset,
    DatasetPage,
    ListQuery,
    UpdateDataset,
)
from protocol.errors import GenericError
from protocol.inference_openapi import INFERENCE_TAG, inference_paths, inference_schemas
from protocol.training_openapi import training_paths, training_schemas
from protocol.wire import query_parameters, schema_ref, schemas

__all__ = ["datasets_openapi_document"]

Schema = dict[str, Any]
JSON = "application/json"

_ERRORS = {
    400: "The body or a query parameter is malformed, or an annotation does not fit the dataset "
    "(the message names the item by index and says why).",
    401: "The API key is missing, invalid or revoked.",
    404: "No dataset, annotation set or annotation with this id for this key's team.",
    409: "The annotation set is published (immutable), or an artifact type is in use.",
    413: "The body is too large.",
    500: "Unexpected server error; the body names a request id to look for.",
}
_SECURITY: list[dict[str, list[str]]] = [{"API_Key": []}, {"Bearer": []}]
REQUESTS = (
    CreateDataset,
    UpdateDataset,
    CreateAnnotationSet,
    UpdateAnnotationSet,
    BulkAnnotations,
    UpdateAnnotation,
)
RESPONSES = (
    GenericError,
    Dataset,
    DatasetPage,
    AnnotationSet,
    AnnotationSetPage,
    Annotation,
    AnnotationPage,
    AnnotationQuery,
    AnnotationsCreated,
)


def _json(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Schema]:
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses}


def _id(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS},
    }


def _op(
    operation_id: str,
    summary: str,
    responses: dict[str, Schema],
    body: type[Any] | None = None,
    body_required: bool = True,
    parameters: list[Schema] | None = None,
) -> Schema:
    operation: Schema = {
        "operationId": operation_id,
        "tags": ["datasets"],
        "summary": summary,
        "security": _SECURITY,
        "responses": responses,
    }
    if body is not None:
        operation["requestBody"] = {
            "required": body_required,
            "content": {JSON: {"schema": schema_ref(body)}},
        }
    if parameters:
        operation["parameters"] = parameters
    return operation


_REMOVED = {"204": {"description": "Removed."}}


def _paths() -> dict[str, Schema]:
    dataset_id = _id("dataset_id", "The dataset's id.")
    set_id = _id("set_id", "The annotation set's id.")
    annotation_id = _id("annotation_id", "The annotation's id.")
    sets = "/datasets/{dataset_id}/annotation-sets"
    one_set = sets + "/{set_id}"
    return {
        "/datasets": {
            "post": _op(
                "createDataset",
                "Create a dataset and its artifact types",
                {"201": _json("The dataset.", schema_ref(Dataset)), **_errors(400, 401, 413, 500)},
                CreateDataset,
            ),
            "get": _op(
                "listDatasets",
                "The team's datasets, newest first",
                {"200": _json("A page.", schema_ref(DatasetPage)), **_errors(400, 401, 500)},
                parameters=query_parameters(ListQuery),
            ),
        },
        "/datasets/{dataset_id}": {
            "parameters": [dataset_id],
            "get": _op(
                "getDataset",
                "A dataset",
                {"200": _json("The dataset.", schema_ref(Dataset)), **_errors(401, 404, 500)},
            ),
            "patch": _op(
                "updateDataset",
                "Rename, describe, or change the artifact types of a dataset",
                {
                    "200": _json("The dataset after.", schema_ref(Dataset)),
                    **_errors(400, 401, 404, 409, 413, 500),
                },
                UpdateDataset,
            ),
            "delete": _op(
                "deleteDataset",
                "Remove a dataset with its audio files and annotation sets",
                {**_REMOVED, **_errors(401, 404, 500)},
            ),
        },
        sets: {
            "parameters": [dataset_id],
            "post": _op(
                "createAnnotationSet",
                "Create a draft annotation set (the body is optional)",
                {
                    "201": _json("The set.", schema_ref(AnnotationSet)),
                    **_errors(400, 401, 404, 413, 500),
                },
                CreateAnnotationSet,
                body_required=False,
            ),
            "get": _op(
                "listAnnotationSets",
                "The dataset's annotation sets, newest first",
                {
                    "200": _json("A page.", schema_ref(AnnotationSetPage)),
                    **_errors(400, 401, 404, 500),
                },
                parameters=query_parameters(ListQuery),
            ),
        },
        one_set: {
            "parameters": [dataset_id, set_id],
            "get": _op(
                "getAnnotationSet",
                "An annotation set",
                {"200": _json("The set.", schema_ref(AnnotationSet)), **_errors(401, 404, 500)},
            ),
            "patch": _op(
                "updateAnnotationSet",
                "Rename a draft annotation set",
                {
                    "200": _json("The set after.", schema_ref(AnnotationSet)),
                    **_errors(400, 401, 404, 409, 413, 500),
                },
                UpdateAnnotationSet,
            ),
            "delete": _op(
                "deleteAnnotationSet",
                "Remove a draft annotation set",
                {**_REMOVED, **_errors(401, 404, 409, 500)},
            ),
        },
        one_set + "/publish": {
            "parameters": [dataset_id, set_id],
            "post": _op(
                "publishAnnotationSet",
                "Publish the set: its files and content hash are fixed, it is immutable",
                {
                    "200": _json("The published set.", schema_ref(AnnotationSet)),
                    **_errors(401, 404, 500),
                },
            ),
        },
        one_set + "/annotations/bulk": {
            "parameters": [dataset_id, set_id],
            "post": _op(
                "addAnnotations",
                f"Add 1-{MAX_BULK_ANNOTATIONS} annotations to a draft set: all or none",
                {
                    "201": _json("What was added.", schema_ref(AnnotationsCreated)),
                    **_errors(400, 401, 404, 409, 413, 500),
                },
                BulkAnnotations,
            ),
        },
        one_set + "/annotations": {
            "parameters": [dataset_id, set_id],
            "get": _op(
                "listAnnotations",
                "The set's annotations, by audio file and start",
                {
                    "200": _json("A page.", schema_ref(AnnotationPage)),
                    **_errors(400, 401, 404, 500),
                },
                parameters=query_parameters(AnnotationQuery),
            ),
        },
        one_set + "/annotations/{annotation_id}": {
            "parameters": [dataset_id, set_id, annotation_id],
            "get": _op(
                "getAnnotation",
                "An annotation",
                {"200": _json("It.", schema_ref(Annotation)), **_errors(401, 404, 500)},
            ),
            "patch": _op(
                "updateAnnotation",
                "Change an annotation of a draft set",
                {
                    "200": _json("It after.", schema_ref(Annotation)),
                    **_errors(400, 401, 404, 409, 413, 500),
                },
                UpdateAnnotation,
            ),
            "delete": _op(
                "deleteAnnotation",
                "Remove an annotation from a draft set",
                {**_REMOVED, **_errors(401, 404, 409, 500)},
            ),
        },
    }


_DESCRIPTION = (
    "Datasets for custom detectors, Relay style. A dataset declares its artifact types; "
    "annotation sets mark where each type occurs in the dataset's ready audio files "
    "(`[start_ms, end_ms)`). A set is a draft until published; a published set is immutable "
    "and carries a `content_hash`.\n\n"
    "**Negative evidence.** A published set records its audio files (those given at "
    "creation, or every ready file of the dataset at publication plus every file an "
    "annotation refers to) and the dataset's artifact types then. A file of the set with no "
    "annotation of a type is *background* for that type: training reads it as proof that the "
    "type does not occur in that file. Annotate every type throughout each file of a set, or "
    "leave the file out of the set.\n\n"
    "Every error is a JSON GenericError body."
)


def _merged(own: dict[str, Schema], audio: dict[str, Schema]) -> dict[str, Schema]:
    """The audio files' schemas beside the datasets' (a name both use must be the same type)."""
    for name in own.keys() & audio.keys():
        if own[name] != audio[name]:
            raise ValueError(f"schema {name} differs between the datasets and audio documents")
    return {**own, **audio}


def datasets_openapi_document(server_url: str = "/api/v1") -> dict[str, Any]:
    """The document, for a server whose Datasets API lives at ``server_url``: datasets,
    annotation sets, (from ``protocol.audio_files_openapi``) the datasets' audio files, (from
    ``protocol.training_openapi``) training jobs and models and (from
    ``protocol.inference_openapi``) inference jobs."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "tympan datasets API (Relay style)",
            "version": "1.0.0",
            "description": _DESCRIPTION,
        },
        "servers": [{"url": server_url}],
        "tags": [
            {"name": "datasets", "description": "Datasets and annotation sets."},
            {"name": "dataset audio", "description": "A dataset's audio files."},
            {"name": "training jobs", "description": "Training a detector on a published set."},
            {"name": "models", "description": "The detectors training jobs made."},
            INFERENCE_TAG,
        ],
        "paths": {**_paths(), **audio_files_paths(), **training_paths(), **inference_paths()},
        "components": {
            "schemas": _merged(
                _merged(
                    _merged(schemas(REQUESTS, RESPONSES), audio_files_schemas()),
                    training_schemas(),
                ),
                inference_schemas(),
            ),
            "responses": {
                f"E{status}": _json(description, schema_ref(GenericError))
                for status, description in _ERRORS.items()
            },
            "securitySchemes": {
                "API_Key": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "Bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }
