"""HTTP handlers of the Datasets API (Relay style, under ``/api/v1/datasets``): parse, call the
services, shape. Creation answers 201 with the resource; removal 204; every error is a
GenericError body (see ``protocol.datasets_openapi`` for the statuses)."""

from __future__ import annotations

from aiohttp import web

from protocol.annotations import MAX_BULK_BODY_BYTES
from protocol.datasets_openapi import datasets_openapi_document
from protocol.wire import to_wire
from server.appkeys import ANNOTATIONS, DATASETS
from server.auth import presented_key
from server.errors import json_response
from server.handlers import read_large_body, read_small_body

__all__ = ["dataset_routes"]

dataset_routes = web.RouteTableDef()
DATASETS_PATH = "/api/v1/datasets"
DATASET = DATASETS_PATH + "/{dataset_id}"
SETS = DATASET + "/annotation-sets"
SET = SETS + "/{set_id}"
ANNOTATION = SET + "/annotations/{annotation_id}"


def _set_ids(request: web.Request) -> tuple[str, str]:
    return request.match_info["dataset_id"], request.match_info["set_id"]


def _annotation_ids(request: web.Request) -> tuple[str, str, str]:
    return (*_set_ids(request), request.match_info["annotation_id"])


async def _optional_body(request: web.Request) -> object:
    """Relay's reference creates an annotation set with no body and no Content-Type."""
    if not request.body_exists:
        return {}
    return await read_small_body(request)


# Before {dataset_id}, which would otherwise take "openapi.json" for an id.
@dataset_routes.get(DATASETS_PATH + "/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(request, datasets_openapi_document())


@dataset_routes.post(DATASETS_PATH)
async def create_dataset(request: web.Request) -> web.Response:
    dataset = await request.app[DATASETS].create(
        presented_key(request.headers), await read_small_body(request)
    )
    return json_response(request, to_wire(dataset), status=201)


@dataset_routes.get(DATASETS_PATH)
async def list_datasets(request: web.Request) -> web.Response:
    page = await request.app[DATASETS].page(presented_key(request.headers), request.query)
    return json_response(request, to_wire(page))


@dataset_routes.get(DATASET)
async def get_dataset(request: web.Request) -> web.Response:
    dataset = await request.app[DATASETS].get(
        presented_key(request.headers), request.match_info["dataset_id"]
    )
    return json_response(request, to_wire(dataset))


@dataset_routes.patch(DATASET)
async def update_dataset(request: web.Request) -> web.Response:
    key = presented_key(request.headers)
    dataset = await request.app[DATASETS].update(
        key, request.match_info["dataset_id"], await read_small_body(request)
    )
    return json_response(request, to_wire(dataset))


@dataset_routes.delete(DATASET)
async def delete_dataset(request: web.Request) -> web.Response:
    await request.app[DATASETS].delete(
        presented_key(request.headers), request.match_info["dataset_id"]
    )
    return web.Response(status=204)


@dataset_routes.post(SETS)
async def create_set(request: web.Request) -> web.Response:
    key = presented_key(request.headers)
    created = await request.app[ANNOTATIONS].create_set(
        key, request.match_info["dataset_id"], await _optional_body(request)
    )
    return json_response(request, to_wire(created), status=201)


@dataset_routes.get(SETS)
async def list_sets(request: web.Request) -> web.Response:
    page = await request.app[ANNOTATIONS].page_sets(
        presented_key(request.headers), request.match_info["dataset_id"], request.query
    )
    return json_response(request, to_wire(page))


@dataset_routes.get(SET)
async def get_set(request: web.Request) -> web.Response:
    found = await request.app[ANNOTATIONS].get_set(
        presented_key(request.headers), *_set_ids(request)
    )
    return json_response(request, to_wire(found))


@dataset_routes.patch(SET)
async def rename_set(request: web.Request) -> web.Response:
    key = presented_key(request.headers)
    renamed = await request.app[ANNOTATIONS].rename_set(
        key, *_set_ids(request), await read_small_body(request)
    )
    return json_response(request, to_wire(renamed))


@dataset_routes.delete(SET)
async def delete_set(request: web.Request) -> web.Response:
    await request.app[ANNOTATIONS].delete_set(presented_key(request.headers), *_set_ids(request))
    return web.Response(status=204)


@dataset_routes.post(SET + "/publish")
async def publish_set(request: web.Request) -> web.Response:
    published = await request.app[ANNOTATIONS].publish(
        presented_key(request.headers), *_set_ids(request)
    )
    return json_response(request, to_wire(published))


@dataset_routes.post(SET + "/annotations/bulk")
async def add_annotations(request: web.Request) -> web.Response:
    key = presented_key(request.headers)
    request.app[DATASETS].team(key)  # 401 before a large body is read
    body = await read_large_body(request, MAX_BULK_BODY_BYTES)
    created = await request.app[ANNOTATIONS].add_bulk(key, *_set_ids(request), body)
    return json_response(request, to_wire(created), status=201)


@dataset_routes.get(SET + "/annotations")
async def list_annotations(request: web.Request) -> web.Response:
    page = await request.app[ANNOTATIONS].page_annotations(
        presented_key(request.headers), *_set_ids(request), request.query
    )
    return json_response(request, to_wire(page))


@dataset_routes.get(ANNOTATION)
async def get_annotation(request: web.Request) -> web.Response:
    found = await request.app[ANNOTATIONS].get_annotation(
        presented_key(request.headers), *_annotation_ids(request)
    )
    return json_response(request, to_wire(found))


@dataset_routes.patch(ANNOTATION)
async def update_annotation(request: web.Request) -> web.Response:
    key = presented_key(request.headers)
    ids = _annotation_ids(request)
    updated = await request.app[ANNOTATIONS].update_annotation(
        key, *ids, await read_small_body(request)
    )
    return json_response(request, to_wire(updated))


@dataset_routes.delete(ANNOTATION)
async def delete_annotation(request: web.Request) -> web.Response:
    await request.app[ANNOTATIONS].delete_annotation(
        presented_key(request.headers), *_annotation_ids(request)
    )
    return web.Response(status=204)
