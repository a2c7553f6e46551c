"""The models API's logic: the team's trained detectors, listed, described, downloaded, deleted.

A model is made only by a completed training job (``server.training.handler``); here it is read
and removed. Removal takes the row first (the model is gone for every caller at once, and the
loader drops its cached runner), then the ONNX file; a crash between the two leaves a file no
row names, never a row without its file. Deleting a dataset keeps its models: each is
self-contained (its file, its artifact types, its metrics) and inference needs nothing else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from protocol.errors import NotFound
from protocol.training import DetectorModel, ModelPage, ModelsQuery
from protocol.wire import parse_query
from server.datasets.service import DatasetService
from server.detectors.loader import MODEL_NOT_FOUND, ModelLoader
from server.detectors.repository import DetectorModelRecord
from server.storage import BlobNotFound, BlobStore
from server.training.views import model_view

__all__ = ["ModelService"]


class ModelService:
    def __init__(self, datasets: DatasetService, loader: ModelLoader, blobs: BlobStore) -> None:
        self._datasets = datasets  # who the key's team is
        self._loader = loader
        self._blobs = blobs

    async def _record(self, key: str | None, model_id: str) -> DetectorModelRecord:
        record = await self._loader.repository.get(self._datasets.team(key), model_id)
        if record is None:
            raise NotFound(MODEL_NOT_FOUND)
        return record

    async def page(self, key: str | None, query: Mapping[str, str]) -> ModelPage:
        team = self._datasets.team(key)
        wanted = parse_query(ModelsQuery, query)
        records, total = await self._loader.repository.page(
            team, wanted.limit, wanted.offset, wanted.dataset_id
        )
        return ModelPage(tuple(map(model_view, records)), total, wanted.limit, wanted.offset)

    async def get(self, key: str | None, model_id: str) -> DetectorModel:
        return model_view(await self._record(key, model_id))

    @asynccontextmanager
    async def file(
        self, key: str | None, model_id: str
    ) -> AsyncIterator[tuple[DetectorModelRecord, AsyncIterator[bytes]]]:
        """The model and its ONNX file's chunks (404 for no such model, or a file gone)."""
        record = await self._record(key, model_id)
        try:
            async with self._blobs.open(record.blob_key) as chunks:
                yield record, chunks
        except BlobNotFound:
            raise NotFound("the model's file is missing from storage") from None

    async def delete(self, key: str | None, model_id: str) -> None:
        removed = await self._loader.repository.delete(self._datasets.team(key), model_id)
        if removed is None:
            raise NotFound(MODEL_NOT_FOUND)
        self._loader.forget(model_id)
        await self._blobs.delete(removed.blob_key)
