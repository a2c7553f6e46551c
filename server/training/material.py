"""What a training job trains on: a published annotation set's audio files and annotations, read
from the repositories, and the checks that say whether a detector can be trained on them.

The same reading and checks run twice: when the job is created (so a request that cannot
succeed is a 400 at once, naming what is missing) and when it runs (a file of the set may have
been deleted since; then the job fails, because the model would no longer be the one the set's
content hash describes). Every file of the set is labelled for every trained type: a file with
no annotation of a type is background for it (``protocol.annotations``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from server.datasets.annotations import AnnotationRecord, AnnotationRepository
from server.datasets.repository import AudioFileRecord, AudioFileRepository

__all__ = ["MIN_FILES", "Material", "gather"]

MIN_FILES = 2  # one to train on and one to validate on: the split is by file
_PAGE = 1000


@dataclass(frozen=True)
class Material:
    set_file_ids: tuple[str, ...]  # every file the set records, in a stable order
    files: dict[str, AudioFileRecord]  # those still in the dataset and ready
    annotations: tuple[AnnotationRecord, ...]

    def annotated_types(self) -> tuple[str, ...]:
        return tuple(sorted({a.artifact_type for a in self.annotations}))

    def ready_ids(self) -> list[str]:
        return [audio_id for audio_id in self.set_file_ids if audio_id in self.files]

    def missing_ids(self) -> list[str]:
        return [audio_id for audio_id in self.set_file_ids if audio_id not in self.files]

    def problems(self, types: Sequence[str]) -> list[str]:
        """Why a detector of ``types`` cannot be trained on this (empty: it can)."""
        found = []
        ready = len(self.ready_ids())
        if ready < MIN_FILES:
            found.append(
                f"the annotation set has {ready} ready audio file(s); training needs at least "
                f"{MIN_FILES} (one or more to train on, one or more to validate on)"
            )
        annotated = set(self.annotated_types())
        unannotated = [kind for kind in types if kind not in annotated]
        if unannotated:
            found.append(
                f"the annotation set has no annotation of {', '.join(unannotated)}: a type "
                "needs at least one annotated event to be learned (or leave it out of "
                "config.artifact_types)"
            )
        return found

    def by_file(self, types: Sequence[str]) -> dict[str, list[tuple[str, float, float]]]:
        """Each ready file's annotations of ``types`` as ``(type, start_ms, end_ms)``."""
        wanted = set(types)
        out: dict[str, list[tuple[str, float, float]]] = {i: [] for i in self.ready_ids()}
        for a in self.annotations:
            if a.artifact_type in wanted and a.audio_file_id in out:
                out[a.audio_file_id].append((a.artifact_type, float(a.start_ms), float(a.end_ms)))
        return out


async def gather(
    audio: AudioFileRepository,
    annotations: AnnotationRepository,
    team: str,
    dataset_id: str,
    set_id: str,
) -> Material:
    set_ids = tuple(sorted(await annotations.set_files(set_id)))
    records = await audio.get_many(team, dataset_id, list(set_ids)) if set_ids else {}
    ready = {i: r for i, r in records.items() if r.status == "ready"}
    found: list[AnnotationRecord] = []
    while True:
        page, total = await annotations.page(team, dataset_id, set_id, _PAGE, len(found))
        found += page
        if not page or len(found) >= total:
            break
    return Material(set_ids, ready, tuple(found))
