"""The Datasets API's logic: who owns which dataset, creating, listing, changing and removing
one, with everything that hangs off it.

A team is an API key's owner: today each key is its own team, named by the key's id (as in the
Media and Jobs APIs). Another team's dataset is simply not found (404), never forbidden, so ids
cannot be probed.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping

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
    AudioFileRecord,
    AudioFileRepository,
    DatasetRecord,
    DatasetRepository,
)
from server.storage import BlobStore

__all__ = ["DatasetService", "dataset_view", "remove_audio_blobs"]

log = logging.getLogger(__name__)


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


async def remove_audio_blobs(blobs: BlobStore, records: Iterable[AudioFileRecord]) -> int:
    """Remove the uploads of audio file rows already deleted; how many were removed. A blob
    that cannot be removed now is logged, not raised: its row is gone, so the caller's answer
    stands, and the blob store's own retention is the backstop."""
    removed = 0
    for record in records:
        try:
            await blobs.delete(record.blob_key)
        except Exception:
            log.exception("could not remove the upload of audio file %s", record.audio_id)
        else:
            removed += 1
    return removed


class DatasetService:
    def __init__(
        self,
        keys: KeyDirectory,
        datasets: DatasetRepository,
        audio: AudioFileRepository,
        annotations: AnnotationRepository,
        blobs: BlobStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._datasets = datasets
        self._audio = audio
        self._annotations = annotations
        self._blobs = blobs
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
        annotation sets (published ones too), its audio file rows and their uploads."""
        team = self.team(key)
        if not await self._datasets.delete(team, dataset_id):
            raise NotFound("no dataset with this id")
        await self._annotations.delete_dataset(team, dataset_id)
        await remove_audio_blobs(self._blobs, await self._audio.delete_dataset(team, dataset_id))
