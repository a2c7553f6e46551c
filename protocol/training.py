"""Training jobs and the models they make (Relay style, Step 5), declared once.

``POST /api/v1/training-jobs {"dataset_id", "annotation_set_id", "config"?}`` queues a job that
trains a custom detector on a published annotation set (201, the job); ``GET
/api/v1/training-jobs/<id>`` shows its ``status`` (``pending -> running -> completed | failed |
canceled``), ``progress_percent``, the ``metrics`` per artifact type once completed and the
``model_id`` of the model it made; ``GET /api/v1/training-jobs`` pages the team's jobs newest
first; ``POST /api/v1/training-jobs/<id>/cancel`` cancels one that has not finished.

A completed job has made a model: ``GET /api/v1/models`` (``?dataset_id=`` to keep one
dataset's), ``GET /api/v1/models/<id>``, ``GET /api/v1/models/<id>/file`` (the ONNX file),
``DELETE /api/v1/models/<id>``.

Metrics are measured on the validation files (the split is by audio file, never by frame): a
detected event matches an annotated one when their onsets are within ``collar_ms`` and their
offsets within ``offset_collar``; ``frame_auprc`` is the area under the precision-recall curve of
the per-frame probabilities; ``threshold`` is the probability chosen for the type (highest event
F1 on the validation files).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import BeforeValidator, ConfigDict, Field

from protocol.datasets import (
    ARTIFACT_NAME_PATTERN,
    MAX_ID_CHARS,
    PAGE_LIMIT_DEFAULT,
    PAGE_LIMIT_MAX,
    PAGE_OFFSET_MAX,
    PageLimit,
    PageOffset,
)
from protocol.media import Timestamp
from protocol.wire import REQUEST, RESPONSE, reworded

__all__ = [
    "CONFIG_KEYS",
    "MAX_EPOCHS",
    "MAX_TRAINED_TYPES",
    "TRAINING",
    "CreateTrainingJob",
    "DetectorModel",
    "ModelPage",
    "ModelsQuery",
    "TrainingConfigRequest",
    "TrainingConfigView",
    "TrainingJob",
    "TrainingJobPage",
    "TrainingStatus",
    "TypeMetrics",
]

TRAINING: Final = "training"  # the kind of a training job's row in the jobs table
MAX_EPOCHS: Final = 1000
MAX_BATCH_SIZE: Final = 65536
MAX_TRAINED_TYPES: Final = 64
MAX_SEED: Final = 2**32 - 1
TrainingStatus = Literal["pending", "running", "completed", "failed", "canceled"]

ArtifactName = Annotated[
    str,
    Field(pattern=ARTIFACT_NAME_PATTERN),
    reworded("must be 1-64 letters, digits, '_' or '-' (e.g. long_pause)"),
]
Id = Annotated[
    str,
    Field(min_length=1, max_length=MAX_ID_CHARS),
    reworded(f"must be an id (a string of 1-{MAX_ID_CHARS} characters)"),
]


def _unique(names: Any) -> Any:
    if isinstance(names, list | tuple) and len(set(map(str, names))) != len(names):
        raise ValueError(f"must not name a type twice, got {list(names)!r}")
    return names


@dataclass(frozen=True)
class TrainingConfigRequest:
    """The reference's training ``config``; every key is optional (its default is shown)."""

    __pydantic_config__ = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)

    artifact_types: Annotated[
        tuple[ArtifactName, ...],
        Field(
            max_length=MAX_TRAINED_TYPES,
            description="The types to detect, each a type of the dataset; empty: every type "
            "the annotation set annotates.",
        ),
        BeforeValidator(_unique),
    ] = ()
    epochs: Annotated[
        int,
        Field(strict=True, ge=1, le=MAX_EPOCHS),
        reworded(f"must be an integer from 1 to {MAX_EPOCHS}"),
    ] = 20
    validation_split: Annotated[
        float,
        Field(
            strict=True,
            gt=0,
            lt=1,
            allow_inf_nan=False,
            description="The fraction of the set's audio files kept for validation "
            "(at least one file on each side).",
        ),
        reworded("must be a number greater than 0 and less than 1"),
    ] = 0.2
    learning_rate: Annotated[
        float,
        Field(strict=True, gt=0, le=1, allow_inf_nan=False),
        reworded("must be a number greater than 0 and at most 1"),
    ] = 0.001
    batch_size: Annotated[
        int,
        Field(strict=True, ge=1, le=MAX_BATCH_SIZE),
        reworded(f"must be an integer from 1 to {MAX_BATCH_SIZE}"),
    ] = 32
    seed: Annotated[
        int,
        Field(
            strict=True,
            ge=0,
            le=MAX_SEED,
            description="Everything random in training comes from it: a seed gives the same "
            "model and metrics.",
        ),
        reworded(f"must be an integer from 0 to {MAX_SEED}"),
    ] = 0


CONFIG_KEYS: Final = tuple(TrainingConfigRequest.__dataclass_fields__)


def _known_keys(value: Any) -> Any:
    """An unknown key is refused by name (a typo would otherwise train with a default)."""
    if isinstance(value, dict):
        unknown = sorted(str(key) for key in value if key not in CONFIG_KEYS)
        if unknown:
            raise ValueError(
                f"has unknown key(s): {', '.join(unknown)} (known: {', '.join(CONFIG_KEYS)})"
            )
    return value


@dataclass(frozen=True)
class CreateTrainingJob:
    """``POST /api/v1/training-jobs``."""

    __pydantic_config__ = REQUEST

    dataset_id: Id
    annotation_set_id: Annotated[
        Id, Field(description="A published annotation set of the dataset.")
    ]
    config: Annotated[TrainingConfigRequest, BeforeValidator(_known_keys)] = TrainingConfigRequest()


@dataclass(frozen=True)
class TrainingConfigView:
    """The job's configuration, defaults filled in and the artifact types resolved."""

    __pydantic_config__ = RESPONSE

    artifact_types: tuple[str, ...]
    epochs: int
    validation_split: float
    learning_rate: float
    batch_size: int
    seed: int


@dataclass(frozen=True)
class TypeMetrics:
    """One artifact type's scores on the validation files."""

    __pydantic_config__ = RESPONSE

    precision: Annotated[float, Field(description="Matched detections / detections.")]
    recall: Annotated[float, Field(description="Matched annotations / annotations.")]
    f1: float
    collar_ms: Annotated[float, Field(description="Onsets match within this many ms.")]
    offset_collar: Annotated[str, Field(description="Offsets match within this.")]
    frame_auprc: Annotated[
        float | None,
        Field(description="Area under the frames' precision-recall curve (null: no positive)."),
    ]
    threshold: Annotated[float, Field(description="The probability a frame must reach.")]
    events: Annotated[int, Field(description="Annotated events in the validation files.")]
    detections: Annotated[int, Field(description="Events the model detected there.")]
    median_onset_error_ms: float | None
    min_duration_ms: float
    merge_window_ms: float
    onset_shift_ms: float
    offset_shift_ms: float


Metrics = dict[str, TypeMetrics]


@dataclass(frozen=True)
class TrainingJob:
    """A training job, as Relay's reference polls it."""

    __pydantic_config__ = RESPONSE

    id: str
    dataset_id: str
    annotation_set_id: str
    status: TrainingStatus
    progress_percent: Annotated[float, Field(ge=0, le=100)]
    config: TrainingConfigView
    metrics: Annotated[Metrics | None, Field(description="Per artifact type, once completed.")]
    error_message: Annotated[str | None, Field(description="Why it failed, once failed.")]
    model_id: Annotated[str | None, Field(description="The model it made, once completed.")]
    created_at_s: Annotated[Timestamp, Field(alias="created_at")]
    updated_at_s: Annotated[Timestamp, Field(alias="updated_at")]
    started_at_s: Annotated[Timestamp | None, Field(alias="started_at")]
    completed_at_s: Annotated[
        Timestamp | None,
        Field(alias="completed_at", description="When it finished (completed, failed or not)."),
    ]


@dataclass(frozen=True)
class TrainingJobPage:
    """``GET /api/v1/training-jobs``: the team's training jobs, newest first."""

    __pydantic_config__ = RESPONSE

    items: tuple[TrainingJob, ...]
    total: Annotated[int, Field(ge=0)]
    limit: Annotated[int, Field(ge=1, le=PAGE_LIMIT_MAX)]
    offset: Annotated[int, Field(ge=0, le=PAGE_OFFSET_MAX)]


@dataclass(frozen=True)
class DetectorModel:
    """A trained custom detector: an ONNX file in the blob store and this description."""

    __pydantic_config__ = RESPONSE

    id: str
    name: Annotated[str, Field(description="The dataset's name and the version.")]
    version: Annotated[int, Field(ge=1, description="1, 2, ... among the dataset's models.")]
    dataset_id: str
    annotation_set_id: str
    annotation_set_hash: Annotated[str, Field(description="The set's content_hash.")]
    training_job_id: str
    artifact_types: Annotated[tuple[str, ...], Field(description="In the model's output order.")]
    metrics: Metrics
    size_bytes: Annotated[int, Field(ge=0)]
    sha256: str
    created_at_s: Annotated[Timestamp, Field(alias="created_at")]


@dataclass(frozen=True)
class ModelPage:
    """``GET /api/v1/models``: the team's models, newest first."""

    __pydantic_config__ = RESPONSE

    items: tuple[DetectorModel, ...]
    total: Annotated[int, Field(ge=0)]
    limit: Annotated[int, Field(ge=1, le=PAGE_LIMIT_MAX)]
    offset: Annotated[int, Field(ge=0, le=PAGE_OFFSET_MAX)]


@dataclass(frozen=True)
class ModelsQuery:
    """``?limit=&offset=&dataset_id=`` of ``GET /api/v1/models``."""

    __pydantic_config__ = REQUEST

    limit: Annotated[PageLimit, Field(description="Most items to return.")] = PAGE_LIMIT_DEFAULT
    offset: Annotated[PageOffset, Field(description="How many items to skip.")] = 0
    dataset_id: Annotated[Id | None, Field(description="Only this dataset's models.")] = None
