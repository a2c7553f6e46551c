"""``ModelLoader``: a team's model id -> its record and a ready ``HeadRunner``, cached.

Inference jobs and live sessions ask for models by id; the ONNX file is read from the blob
store once, checked against the sha256 recorded at creation (a file changed or cut in storage is
refused, not served), and its ONNX Runtime session kept for the next caller. The cache holds the
most recently used ``capacity`` models; a deleted model is dropped from it at once.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from protocol.errors import NotFound
from server.detectors.keys import model_key
from server.detectors.repository import DetectorModelRecord, ModelRepository
from server.runner import HeadRunner, ModelLoadError, load_head_runner
from server.storage import BlobNotFound, BlobStore

__all__ = ["MODEL_NOT_FOUND", "LoadedModel", "ModelLoader", "ModelUnusable", "store_model"]

MODEL_NOT_FOUND = "no model with this id"
_CACHED_MODELS = 32


class ModelUnusable(Exception):
    """The model's row is there but its file is missing or not what was stored."""


@dataclass(frozen=True)
class LoadedModel:
    record: DetectorModelRecord
    runner: HeadRunner


class ModelLoader:
    def __init__(
        self, repository: ModelRepository, blobs: BlobStore, capacity: int = _CACHED_MODELS
    ) -> None:
        self._repository = repository
        self._blobs = blobs
        self._capacity = capacity
        self._cache: OrderedDict[str, LoadedModel] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def repository(self) -> ModelRepository:
        return self._repository

    async def load(self, team: str, model_id: str) -> LoadedModel:
        """``NotFound`` for no such model of this team; ``ModelUnusable`` for a broken file."""
        record = await self._repository.get(team, model_id)
        if record is None:
            raise NotFound(MODEL_NOT_FOUND)
        cached = self._cache.get(model_id)
        if cached is not None:
            self._cache.move_to_end(model_id)
            return cached
        lock = self._locks.setdefault(model_id, asyncio.Lock())
        async with lock:
            cached = self._cache.get(model_id)
            if cached is None:
                cached = LoadedModel(record, await self._read(record))
                self._cache[model_id] = cached
                while len(self._cache) > self._capacity:
                    self._cache.popitem(last=False)
        self._locks.pop(model_id, None)
        return cached

    def forget(self, model_id: str) -> None:
        """The model was deleted: its runner is not handed out again."""
        self._cache.pop(model_id, None)

    async def _read(self, record: DetectorModelRecord) -> HeadRunner:
        parts: list[bytes] = []
        try:
            async with self._blobs.open(record.blob_key) as chunks:
                async for chunk in chunks:
                    parts.append(chunk)
        except BlobNotFound:
            raise ModelUnusable("the model's file is missing from storage") from None
        data = b"".join(parts)
        if len(data) != record.size_bytes or hashlib.sha256(data).hexdigest() != record.sha256:
            raise ModelUnusable("the model's file in storage is not the one that was stored")
        try:
            return await asyncio.to_thread(load_head_runner, data)
        except ModelLoadError as exc:
            raise ModelUnusable(str(exc)) from None


async def store_model(
    repository: ModelRepository, blobs: BlobStore, record: DetectorModelRecord, onnx: bytes
) -> DetectorModelRecord:
    """The ONNX file first, then the row that points at it (a row never names a missing file);
    ``record``'s blob key, size and sha256 are set here. An id already stored is answered with
    the stored model (a training job run again after a crash)."""
    existing = await repository.get(record.team, record.model_id)
    if existing is not None:
        return existing

    async def body() -> AsyncIterator[bytes]:
        yield onnx

    key = model_key(record.team, record.model_id)
    await blobs.put_stream(key, body(), max_bytes=len(onnx))
    complete = replace(
        record, blob_key=key, size_bytes=len(onnx), sha256=hashlib.sha256(onnx).hexdigest()
    )
    return await repository.create(complete)
