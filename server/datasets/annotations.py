"""Annotation sets and their annotations behind a repository: the records and the contract.

``AnnotationRepository`` is what callers hold (``SqliteAnnotationRepository`` in
``server.datasets.annotations_sqlite`` is one implementation). Each method is one transaction.
Every change to a set or its annotations checks, in its own transaction, that the set is still a
draft, and publication is a conditional change from draft: a change racing a publication either
lands before it, and is in the content hash, or is refused (``"published"``). Rows are read by
(team, dataset, set): another team's sets are simply not found.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = [
    "AnnotationRecord",
    "AnnotationRepository",
    "AnnotationSetRecord",
    "Outcome",
]

# What a change to a set came to: done, no such set (or annotation), or refused as published.
Outcome = Literal["done", "missing", "published"]


@dataclass(frozen=True)
class AnnotationSetRecord:
    set_id: str
    team: str
    dataset_id: str
    name: str
    status: Literal["draft", "published"]
    files_fixed: bool  # its audio files were given at creation
    created_at_s: float
    updated_at_s: float
    published_at_s: float | None = None
    content_hash: str | None = None
    artifact_types: tuple[str, ...] | None = None  # recorded at publication
    annotation_count: int = 0  # counted on read
    audio_file_count: int = 0  # counted on read


@dataclass(frozen=True)
class AnnotationRecord:
    annotation_id: str
    set_id: str
    audio_file_id: str
    artifact_type: str
    start_ms: int
    end_ms: int
    confidence: float
    created_at_s: float


class AnnotationRepository(Protocol):
    async def prepare(self) -> None: ...

    async def create_set(
        self, record: AnnotationSetRecord, audio_file_ids: Sequence[str] | None
    ) -> None: ...

    async def get_set(
        self, team: str, dataset_id: str, set_id: str
    ) -> AnnotationSetRecord | None: ...

    async def page_sets(
        self, team: str, dataset_id: str, limit: int, offset: int
    ) -> tuple[list[AnnotationSetRecord], int]:
        """The dataset's sets, newest first, and how many it has."""
        ...

    async def set_files(self, set_id: str) -> set[str]:
        """The files recorded for a set (given at creation, or fixed at publication)."""
        ...

    async def rename_set(
        self, team: str, dataset_id: str, set_id: str, name: str, now_s: float
    ) -> Outcome: ...

    async def delete_set(self, team: str, dataset_id: str, set_id: str) -> Outcome: ...

    async def add(
        self, team: str, dataset_id: str, set_id: str, annotations: Sequence[AnnotationRecord]
    ) -> Outcome:
        """All of ``annotations`` in one transaction, or none."""
        ...

    async def get(
        self, team: str, dataset_id: str, set_id: str, annotation_id: str
    ) -> AnnotationRecord | None: ...

    async def page(
        self,
        team: str,
        dataset_id: str,
        set_id: str,
        limit: int,
        offset: int,
        audio_file_id: str | None = None,
        artifact_type: str | None = None,
    ) -> tuple[list[AnnotationRecord], int]: ...

    async def replace(
        self, team: str, dataset_id: str, record: AnnotationRecord, now_s: float
    ) -> Outcome: ...

    async def delete(
        self, team: str, dataset_id: str, set_id: str, annotation_id: str, now_s: float
    ) -> Outcome: ...

    async def publish(
        self,
        team: str,
        dataset_id: str,
        set_id: str,
        ready_file_ids: Sequence[str],
        artifact_types: Sequence[str],
        now_s: float,
    ) -> AnnotationSetRecord | None:
        """Publish a draft (a published set comes back unchanged); None if there is none."""
        ...

    async def types_in_use(self, team: str, dataset_id: str) -> set[str]:
        """The artifact types that annotations of the dataset's sets name."""
        ...

    async def delete_dataset(self, team: str, dataset_id: str) -> int:
        """Remove every set of the dataset; how many there were."""
        ...
