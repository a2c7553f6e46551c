"""The Datasets API's logic: who owns which dataset, creating, listing, changing and removing
one, with everything that hangs off it.

A team is an API key's owner: today each key is its own team, named by the key's id (as in the
Media and Jobs APIs). Another team's dataset is simply not found (404), never forbidden, so ids
cannot be probed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping

from protocol.datasets import (
    ArtifactType,
    CreateDataset,
    Dataset,
    DatasetPage,
    ListQuery,
    NewArtifactType,
    UpdateDataset,
)
from protocol.errors import Conflict, NotFound, Unauthorized
from protocol.wire import parse, parse_query
from server.auth import KeyDirectory
from server.datasets.annotations import AnnotationRepository
from server.datasets.repository import (
    ArtifactTypeRecord,
    DatasetRecord,
    DatasetRepository,
)

__all__ = ["DatasetService", "RemoveAudio", "dataset_view"]


# Removes every audio file of (team, dataset): rows, uploads and processing outputs; how many.
RemoveAudio = Callable[[str, str], Awaitable[int]]


def dataset_view(record: DatasetRecord) -> Dataset:
    return Dataset(
        record.dataset_id,
        record.name,
        record.description,
        tuple(
            ArtifactType(kind.name, kind.description, kind.color) for kind in record.artifact_types
        ),
        record.created_at_s,
        record.updated_at_s,
    )


def _records(types: Iterable[NewArtifactType]) -> tuple[ArtifactTypeRecord, ...]:
    return tuple(ArtifactTypeRecord(kind.name, kind.description, kind.color) for kind in types)


class DatasetService:
    def __init__(
        self,
        keys: KeyDirectory,
        datasets: DatasetRepository,
        annotations: AnnotationRepository,
        remove_audio: RemoveAudio,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._datasets = datasets
        self._annotations = annotations
        self._remove_audio = remove_audio
        self.clock = clock

    def team(self, key: str | None) -> str:
        if key is None:
            raise Unauthorized("an API key is required (X-API-Key, or Authorization: Bearer <key>)")
        return str(self._keys.authenticate(key).key_id)

    async def dataset(self, team: str, dataset_id: str) -> DatasetRecord:
        record = await self._datasets.get(team, dataset_id)
        if record is None:
            raise NotFound("no dataset with this id")
        return record

    async def create(self, key: str | None, body: object) -> Dataset:
        team = self.team(key)
        request = parse(CreateDataset, body)
        now_s = self.clock()
        record = DatasetRecord(
            str(uuid.uuid4()),
            team,
            request.name,
            request.description,
            _records(request.artifact_types),
            now_s,
            now_s,
        )
        await self._datasets.create(record)
        return dataset_view(record)

    async def page(self, key: str | None, query: Mapping[str, str]) -> DatasetPage:
        team = self.team(key)
        page = parse_query(ListQuery, query)
        records, total = await self._datasets.page(team, page.limit, page.offset)
        return DatasetPage(
            tuple(dataset_view(record) for record in records), total, page.limit, page.offset
        )

    async def get(self, key: str | None, dataset_id: str) -> Dataset:
        return dataset_view(await self.dataset(self.team(key), dataset_id))

    async def update(self, key: str | None, dataset_id: str, body: object) -> Dataset:
        team = self.team(key)
        record = await self.dataset(team, dataset_id)
        change = parse(UpdateDataset, body)
        types = record.artifact_types
        if change.artifact_types is not None:
            types = _records(change.artifact_types)
            removed = {kind.name for kind in record.artifact_types} - {kind.name for kind in types}
            used = sorted(removed & await self._annotations.types_in_use(team, dataset_id))
            if used:
                raise Conflict(
                    f"artifact types {used} are used by annotations of this dataset: they cannot "
                    "be removed or renamed (remove those annotations from draft sets first)"
                )
        updated = DatasetRecord(
            record.dataset_id,
            team,
            record.name if change.name is None else change.name,
            record.description if change.description is None else change.description,
            types,
            record.created_at_s,
            self.clock(),
        )
        if not await self._datasets.update(updated):
            raise NotFound("no dataset with this id")
        return dataset_view(updated)

    async def delete(self, key: str | None, dataset_id: str) -> None:
        """The dataset row first, so the dataset is gone for every caller at once; then its
        annotation sets (published ones too) and its audio files with all their blobs."""
        team = self.team(key)
        if not await self._datasets.delete(team, dataset_id):
            raise NotFound("no dataset with this id")
        await self._annotations.delete_dataset(team, dataset_id)
        await self._remove_audio(team, dataset_id)
