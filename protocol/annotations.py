"""The annotation sets' wire types (Relay style), declared once, and the content hash a published
set carries.

An annotation set groups annotations of one dataset: each marks where one artifact type occurs in
one ready audio file, ``[start_ms, end_ms)``. A set is a ``draft`` while it is edited and becomes
``published`` (immutable, for training) with ``POST .../publish``.

Negative evidence: a published set also records its audio files and artifact types. A file of
the set with no annotation of a type is *background* for that type: a detector trained on the
set learns that the type does not occur anywhere in that file. So a set's files must be fully
annotated for every type of the dataset, or left out of the set (``audio_file_ids`` at creation).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from protocol.datasets import MAX_ID_CHARS, PAGE_LIMIT_MAX, PAGE_OFFSET_MAX, ListQuery
from protocol.events import not_boolean
from protocol.media import Timestamp
from protocol.wire import REQUEST, RESPONSE, Absent, reworded

__all__ = [
    "CONTENT_HASH_VERSION",
    "DRAFT",
    "MAX_ANNOTATION_MS",
    "MAX_BULK_ANNOTATIONS",
    "MAX_BULK_BODY_BYTES",
    "MAX_SET_AUDIO_FILES",
    "MAX_SET_NAME_CHARS",
    "PUBLISHED",
    "Annotation",
    "AnnotationPage",
    "AnnotationQuery",
    "AnnotationSet",
    "AnnotationSetPage",
    "AnnotationsCreated",
    "BulkAnnotations",
    "CreateAnnotationSet",
    "NewAnnotation",
    "UpdateAnnotation",
    "UpdateAnnotationSet",
    "content_hash",
]

DRAFT: Final = "draft"
PUBLISHED: Final = "published"
SetStatus = Literal["draft", "published"]
MAX_BULK_ANNOTATIONS: Final = 10_000
# Room for MAX_BULK_ANNOTATIONS pretty-printed annotations with UUIDs (about 200 bytes each).
MAX_BULK_BODY_BYTES: Final = 4 * 1024 * 1024
MAX_SET_AUDIO_FILES: Final = 10_000
MAX_SET_NAME_CHARS: Final = 200
MAX_ANNOTATION_MS: Final = 2**40  # far beyond any recording; keeps every value a 64-bit integer
CONTENT_HASH_VERSION: Final = "tympan-annotation-set-v1"

AudioFileId = Annotated[
    str,
    Field(min_length=1, max_length=MAX_ID_CHARS),
    reworded(f"must be an audio file id (a string of 1-{MAX_ID_CHARS} characters)"),
]
ArtifactTypeName = Annotated[
    str,
    Field(min_length=1, max_length=MAX_ID_CHARS),
    reworded(f"must be an artifact type's name (1-{MAX_ID_CHARS} characters)"),
]
Milliseconds = Annotated[
    int,
    Field(ge=0, le=MAX_ANNOTATION_MS),
    reworded(
        "must be an integer number of milliseconds",
        f"must be between 0 and {MAX_ANNOTATION_MS} milliseconds",
    ),
    BeforeValidator(not_boolean),
]
Confidence = Annotated[
    float,
    Field(ge=0.0, le=1.0, allow_inf_nan=False),
    reworded("must be a number from 0 to 1"),
    BeforeValidator(not_boolean),
]
SetName = Annotated[
    str,
    Field(min_length=1, max_length=MAX_SET_NAME_CHARS),
    reworded(f"must be a string of 1-{MAX_SET_NAME_CHARS} characters"),
]


def _unique_ids(ids: tuple[str, ...] | None) -> tuple[str, ...] | None:
    seen: set[str] = set()
    for audio_id in ids or ():
        if audio_id in seen:
            raise ValueError(f"lists {audio_id!r} twice")
        seen.add(audio_id)
    return ids


@dataclass(frozen=True)
class CreateAnnotationSet:
    """``POST /api/v1/datasets/<id>/annotation-sets``; the body is optional. Without
    ``audio_file_ids`` the set's files are decided at publication: every ready file of the
    dataset then, plus every file an annotation refers to."""

    __pydantic_config__ = REQUEST

    name: SetName | None = None
    audio_file_ids: Annotated[
        tuple[AudioFileId, ...] | None,
        Field(min_length=1, max_length=MAX_SET_AUDIO_FILES),
        AfterValidator(_unique_ids),
        Field(description="The set's files, each ready; annotations may only refer to these."),
    ] = None


@dataclass(frozen=True)
class UpdateAnnotationSet:
    """``PATCH .../annotation-sets/<id>``: a draft's name."""

    __pydantic_config__ = REQUEST

    name: SetName | None = None


@dataclass(frozen=True)
class AnnotationSet:
    """An annotation set. Once published it is immutable and records its audio files: a file
    of the set with no annotation of an artifact type is background (negative evidence) for
    that type."""

    __pydantic_config__ = RESPONSE

    id: str
    dataset_id: str
    name: str
    status: SetStatus
    annotation_count: Annotated[int, Field(ge=0)]
    audio_file_count: Annotated[
        int,
        Field(
            ge=0,
            description="Once published, the set's files (each is background for every type it "
            "has no annotation of). In a draft: the files given at creation, else the files "
            "its annotations refer to so far.",
        ),
    ]
    created_at_s: Annotated[Timestamp, Field(alias="created_at")]
    updated_at_s: Annotated[Timestamp, Field(alias="updated_at")]
    published_at_s: Annotated[Timestamp | None, Field(alias="published_at")]
    content_hash: Annotated[
        Absent[str],
        Field(
            pattern="^[0-9a-f]{64}$",
            description="Once published: sha256 of the set's canonical content (its files, "
            "artifact types and annotations, sorted).",
        ),
    ] = None
    artifact_types: Annotated[
        Absent[tuple[str, ...]],
        Field(description="Once published: the types the set's negative evidence covers."),
    ] = None


@dataclass(frozen=True)
class NewAnnotation:
    """One annotation: ``artifact_type`` occurs in ``[start_ms, end_ms)`` of the audio file."""

    __pydantic_config__ = REQUEST

    audio_file_id: AudioFileId
    artifact_type: ArtifactTypeName
    start_ms: Milliseconds
    end_ms: Milliseconds
    confidence: Confidence = 1.0


def _at_most_bulk(value: Any) -> Any:
    """Counted before any item is validated, so an oversized batch costs nothing more."""
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError("must hold at least one annotation")
        if len(value) > MAX_BULK_ANNOTATIONS:
            raise ValueError(
                f"holds {len(value)} annotations; at most {MAX_BULK_ANNOTATIONS} per request"
            )
    return value


@dataclass(frozen=True)
class BulkAnnotations:
    """``POST .../annotations/bulk``: all are added, or none (the 400 names the first items
    that are wrong, by index)."""

    __pydantic_config__ = REQUEST

    annotations: Annotated[
        tuple[NewAnnotation, ...],
        Field(min_length=1, max_length=MAX_BULK_ANNOTATIONS),
        BeforeValidator(_at_most_bulk),
    ]


@dataclass(frozen=True)
class UpdateAnnotation:
    """``PATCH .../annotations/<id>`` of a draft set: what is given changes."""

    __pydantic_config__ = REQUEST

    artifact_type: ArtifactTypeName | None = None
    start_ms: Milliseconds | None = None
    end_ms: Milliseconds | None = None
    confidence: Confidence | None = None


@dataclass(frozen=True)
class Annotation:
    __pydantic_config__ = RESPONSE

    id: str
    audio_file_id: str
    artifact_type: str
    start_ms: Annotated[int, Field(ge=0)]
    end_ms: Annotated[int, Field(ge=1)]
    confidence: Annotated[float, Field(ge=0, le=1)]


@dataclass(frozen=True)
class AnnotationsCreated:
    """What ``POST .../annotations/bulk`` added, in the order sent."""

    __pydantic_config__ = RESPONSE

    created: Annotated[int, Field(ge=1, le=MAX_BULK_ANNOTATIONS)]
    annotations: tuple[Annotation, ...]


@dataclass(frozen=True)
class AnnotationQuery(ListQuery):
    """``?limit=&offset=&audio_file_id=&artifact_type=`` of the annotation list."""

    audio_file_id: Annotated[str | None, Field(description="Only this audio file's.")] = None
    artifact_type: Annotated[str | None, Field(description="Only this type's.")] = None


@dataclass(frozen=True)
class AnnotationSetPage:
    __pydantic_config__ = RESPONSE

    items: tuple[AnnotationSet, ...]
    total: Annotated[int, Field(ge=0)]
    limit: Annotated[int, Field(ge=1, le=PAGE_LIMIT_MAX)]
    offset: Annotated[int, Field(ge=0, le=PAGE_OFFSET_MAX)]


@dataclass(frozen=True)
class AnnotationPage:
    """Annotations ordered by audio file, start, end and id."""

    __pydantic_config__ = RESPONSE

    items: tuple[Annotation, ...]
    total: Annotated[int, Field(ge=0)]
    limit: Annotated[int, Field(ge=1, le=PAGE_LIMIT_MAX)]
    offset: Annotated[int, Field(ge=0, le=PAGE_OFFSET_MAX)]


def content_hash(
    audio_file_ids: Iterable[str],
    artifact_types: Iterable[str],
    annotations: Iterable[tuple[str, str, int, int, float]],
) -> str:
    """sha256 (hex) of a published set's content, which anyone holding it can recompute: the
    UTF-8 of ``CONTENT_HASH_VERSION``, a newline, then compact JSON with sorted keys of
    ``{"annotations": [[audio_file_id, artifact_type, start_ms, end_ms, confidence], ...],
    "artifact_types": [...], "audio_file_ids": [...]}``, every list sorted. Annotation ids and
    times are left out: the same content always gives the same hash."""
    canonical = {
        "annotations": sorted(
            [audio_id, kind, int(start), int(end), float(confidence)]
            for audio_id, kind, start, end, confidence in annotations
        ),
        "artifact_types": sorted(artifact_types),
        "audio_file_ids": sorted(audio_file_ids),
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{CONTENT_HASH_VERSION}\n{text}".encode()).hexdigest()
