"""Annotation sets' logic: drafts, bulk annotations validated whole, and publication.

A bulk request is checked in full before anything is written (every item against the dataset's
artifact types and the team's ready audio files), then written in one transaction: a batch with
one bad item adds nothing, and the 400 names the items that are wrong by index. Publication
fixes the set's files and content hash; from then on every change is a 409.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence

from protocol.annotations import (
    DRAFT,
    PUBLISHED,
    Annotation,
    AnnotationPage,
    AnnotationQuery,
    AnnotationsCreated,
    AnnotationSet,
    AnnotationSetPage,
    BulkAnnotations,
    CreateAnnotationSet,
    NewAnnotation,
    UpdateAnnotation,
    UpdateAnnotationSet,
)
from protocol.datasets import ListQuery
from protocol.errors import Conflict, NotFound
from protocol.wire import parse, parse_query
from server.datasets.annotations import (
    AnnotationRecord,
    AnnotationRepository,
    AnnotationSetRecord,
    Outcome,
)
from server.datasets.checks import check_annotation, check_set_files, refuse
from server.datasets.repository import AudioFileRecord, AudioFileRepository
from server.datasets.service import DatasetService

__all__ = ["AnnotationService", "annotation_view", "set_view"]

_PUBLISHED = (
    "the annotation set is published, so it cannot change (published sets are immutable: "
    "create a new set to change annotations)"
)
_NO_SET = "no annotation set with this id in this dataset"
_NO_ANNOTATION = "no annotation with this id in this annotation set"
_FILES_PAGE = 1000  # audio file rows read at a time when a set's files are gathered


def set_view(record: AnnotationSetRecord) -> AnnotationSet:
    return AnnotationSet(
        record.set_id,
        record.dataset_id,
        record.name,
        record.status,
        record.annotation_count,
        record.audio_file_count,
        record.created_at_s,
        record.updated_at_s,
        record.published_at_s,
        record.content_hash,
        record.artifact_types,
    )


def annotation_view(record: AnnotationRecord) -> Annotation:
    return Annotation(
        record.annotation_id,
        record.audio_file_id,
        record.artifact_type,
        record.start_ms,
        record.end_ms,
        record.confidence,
    )


def _settle(outcome: Outcome, missing: str) -> None:
    if outcome == "missing":
        raise NotFound(missing)
    if outcome == "published":
        raise Conflict(_PUBLISHED)


class AnnotationService:
    def __init__(
        self,
        datasets: DatasetService,
        audio: AudioFileRepository,
        annotations: AnnotationRepository,
    ) -> None:
        self._datasets = datasets
        self._audio = audio
        self._annotations = annotations

    async def _set(self, team: str, dataset_id: str, set_id: str) -> AnnotationSetRecord:
        await self._datasets.dataset(team, dataset_id)
        record = await self._annotations.get_set(team, dataset_id, set_id)
        if record is None:
            raise NotFound(_NO_SET)
        return record

    async def _draft(self, team: str, dataset_id: str, set_id: str) -> AnnotationSetRecord:
        record = await self._set(team, dataset_id, set_id)
        if record.status != DRAFT:
            raise Conflict(_PUBLISHED)
        return record

    async def create_set(self, key: str | None, dataset_id: str, body: object) -> AnnotationSet:
        team = self._datasets.team(key)
        await self._datasets.dataset(team, dataset_id)
        request = parse(CreateAnnotationSet, body)
        ids = request.audio_file_ids
        if ids is not None:
            check_set_files(ids, await self._audio.get_many(team, dataset_id, list(ids)))
        now_s = self._datasets.clock()
        name = request.name or time.strftime("Annotation set %Y-%m-%d %H:%M:%S", time.gmtime(now_s))
        record = AnnotationSetRecord(
            str(uuid.uuid4()),
            team,
            dataset_id,
            name,
            DRAFT,
            ids is not None,
            now_s,
            now_s,
            audio_file_count=len(ids or ()),
        )
        await self._annotations.create_set(record, ids)
        return set_view(record)

    async def page_sets(
        self, key: str | None, dataset_id: str, query: Mapping[str, str]
    ) -> AnnotationSetPage:
        team = self._datasets.team(key)
        page = parse_query(ListQuery, query)
        await self._datasets.dataset(team, dataset_id)
        records, total = await self._annotations.page_sets(
            team, dataset_id, page.limit, page.offset
        )
        return AnnotationSetPage(tuple(map(set_view, records)), total, page.limit, page.offset)

    async def get_set(self, key: str | None, dataset_id: str, set_id: str) -> AnnotationSet:
        return set_view(await self._set(self._datasets.team(key), dataset_id, set_id))

    async def rename_set(
        self, key: str | None, dataset_id: str, set_id: str, body: object
    ) -> AnnotationSet:
        team = self._datasets.team(key)
        record = await self._draft(team, dataset_id, set_id)
        change = parse(UpdateAnnotationSet, body)
        if change.name is not None:
            outcome = await self._annotations.rename_set(
                team, dataset_id, set_id, change.name, self._datasets.clock()
            )
            _settle(outcome, _NO_SET)
            record = await self._set(team, dataset_id, set_id)
        return set_view(record)

    async def delete_set(self, key: str | None, dataset_id: str, set_id: str) -> None:
        team = self._datasets.team(key)
        await self._set(team, dataset_id, set_id)
        _settle(await self._annotations.delete_set(team, dataset_id, set_id), _NO_SET)

    async def _context(
        self, team: str, dataset_id: str, record: AnnotationSetRecord, audio_ids: Sequence[str]
    ) -> tuple[set[str], dict[str, AudioFileRecord], set[str] | None]:
        """What annotations are checked against: the dataset's types, the files they name, and
        the set's own files when they were given at creation."""
        dataset = await self._datasets.dataset(team, dataset_id)
        types = {kind.name for kind in dataset.artifact_types}
        files = await self._audio.get_many(team, dataset_id, list(audio_ids))
        allowed = await self._annotations.set_files(record.set_id) if record.files_fixed else None
        return types, files, allowed

    async def add_bulk(
        self, key: str | None, dataset_id: str, set_id: str, body: object
    ) -> AnnotationsCreated:
        team = self._datasets.team(key)
        record = await self._draft(team, dataset_id, set_id)
        items = parse(BulkAnnotations, body).annotations
        types, files, allowed = await self._context(
            team, dataset_id, record, [item.audio_file_id for item in items]
        )
        problems = [
            problem
            for index, item in enumerate(items)
            for problem in check_annotation(f"annotations[{index}]", item, types, files, allowed)
        ]
        refuse(problems, "no annotation was added")
        now_s = self._datasets.clock()
        records = [
            AnnotationRecord(
                str(uuid.uuid4()),
                set_id,
                item.audio_file_id,
                item.artifact_type,
                item.start_ms,
                item.end_ms,
                item.confidence,
                now_s,
            )
            for item in items
        ]
        _settle(await self._annotations.add(team, dataset_id, set_id, records), _NO_SET)
        return AnnotationsCreated(len(records), tuple(map(annotation_view, records)))

    async def page_annotations(
        self, key: str | None, dataset_id: str, set_id: str, query: Mapping[str, str]
    ) -> AnnotationPage:
        team = self._datasets.team(key)
        page = parse_query(AnnotationQuery, query)
        await self._set(team, dataset_id, set_id)
        records, total = await self._annotations.page(
            team,
            dataset_id,
            set_id,
            page.limit,
            page.offset,
            page.audio_file_id,
            page.artifact_type,
        )
        return AnnotationPage(tuple(map(annotation_view, records)), total, page.limit, page.offset)

    async def _annotation(
        self, team: str, dataset_id: str, set_id: str, annotation_id: str
    ) -> AnnotationRecord:
        found = await self._annotations.get(team, dataset_id, set_id, annotation_id)
        if found is None:
            raise NotFound(_NO_ANNOTATION)
        return found

    async def get_annotation(
        self, key: str | None, dataset_id: str, set_id: str, annotation_id: str
    ) -> Annotation:
        team = self._datasets.team(key)
        await self._set(team, dataset_id, set_id)
        return annotation_view(await self._annotation(team, dataset_id, set_id, annotation_id))

    async def update_annotation(
        self, key: str | None, dataset_id: str, set_id: str, annotation_id: str, body: object
    ) -> Annotation:
        team = self._datasets.team(key)
        record = await self._draft(team, dataset_id, set_id)
        old = await self._annotation(team, dataset_id, set_id, annotation_id)
        change = parse(UpdateAnnotation, body)
        item = NewAnnotation(
            old.audio_file_id,
            old.artifact_type if change.artifact_type is None else change.artifact_type,
            old.start_ms if change.start_ms is None else change.start_ms,
            old.end_ms if change.end_ms is None else change.end_ms,
            old.confidence if change.confidence is None else change.confidence,
        )
        types, files, allowed = await self._context(team, dataset_id, record, [old.audio_file_id])
        refuse(check_annotation("the annotation", item, types, files, allowed), "nothing changed")
        new = AnnotationRecord(
            annotation_id,
            set_id,
            item.audio_file_id,
            item.artifact_type,
            item.start_ms,
            item.end_ms,
            item.confidence,
            old.created_at_s,
        )
        outcome = await self._annotations.replace(team, dataset_id, new, self._datasets.clock())
        _settle(outcome, _NO_ANNOTATION)
        return annotation_view(new)

    async def delete_annotation(
        self, key: str | None, dataset_id: str, set_id: str, annotation_id: str
    ) -> None:
        team = self._datasets.team(key)
        await self._set(team, dataset_id, set_id)
        outcome = await self._annotations.delete(
            team, dataset_id, set_id, annotation_id, self._datasets.clock()
        )
        _settle(outcome, _NO_ANNOTATION)  # the set was there a moment ago

    async def publish(self, key: str | None, dataset_id: str, set_id: str) -> AnnotationSet:
        """Idempotent: publishing a published set answers it unchanged, hash included."""
        team = self._datasets.team(key)
        record = await self._set(team, dataset_id, set_id)
        if record.status == PUBLISHED:
            return set_view(record)
        dataset = await self._datasets.dataset(team, dataset_id)
        ready = [] if record.files_fixed else await self._ready_files(team, dataset_id)
        published = await self._annotations.publish(
            team,
            dataset_id,
            set_id,
            ready,
            [kind.name for kind in dataset.artifact_types],
            self._datasets.clock(),
        )
        if published is None:
            raise NotFound(_NO_SET)
        return set_view(published)

    async def _ready_files(self, team: str, dataset_id: str) -> list[str]:
        ready: list[str] = []
        offset = 0
        while True:
            files, total = await self._audio.page(team, dataset_id, _FILES_PAGE, offset)
            ready += [f.audio_id for f in files if f.status == "ready"]
            offset += len(files)
            if not files or offset >= total:
                return ready
