"""The wire types of inference jobs (Relay's Step 6), declared once: the server validates requests
and builds responses with them, the OpenAPI document is generated from them.

``POST /api/v1/inference-jobs {"model_id", "config"?, "files"?}`` creates a job that runs one of
the team's custom detectors over files; files come through the same upload form as dataset audio
(``.../files/upload-url``, POST the form, ``.../files/confirm``) or from the team's media
(``{"url": "media://<object-key>"}``). ``GET /api/v1/inference-jobs/{id}`` shows each file's
detections once it is ``completed``.

``config`` overrides the model's own frames-to-events rule: a value left out keeps each artifact
type's own value, chosen on the validation files in training; a value given applies to every
type. The job shows the rule each type runs with in ``rules``.

A file not yet confirmed shows ``status: "pending"`` with ``upload_confirmed: false``, as dataset
audio does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Final, Literal

from pydantic import BeforeValidator, Field

from protocol.audio_files import CONTENT_TYPE_PATTERN, FILENAME_PATTERN, MAX_FILENAME_CHARS
from protocol.media import MEDIA_SCHEME, OBJECT_KEY_RULES, Timestamp
from protocol.wire import REQUEST, RESPONSE, reworded

__all__ = [
    "INFERENCE_PAGE_DEFAULT",
    "INFERENCE_PAGE_MAX",
    "INFERENCE_SKIP_MAX",
    "MAX_JOB_FILES",
    "MAX_RULE_MS",
    "AppliedConfig",
    "CreateInferenceJob",
    "Detection",
    "FileStatus",
    "InferenceConfig",
    "InferenceConfirm",
    "InferenceFile",
    "InferenceJob",
    "InferenceJobPage",
    "InferenceJobsQuery",
    "InferenceMediaFile",
    "InferenceUploadRequest",
    "InferenceUploadUrl",
    "JobStatus",
    "TypeRule",
]

MAX_JOB_FILES: Final = 100  # a job's files come back inline in GET: keep the answer bounded
MAX_RULE_MS: Final = 60_000.0
INFERENCE_PAGE_DEFAULT: Final = 20
INFERENCE_PAGE_MAX: Final = 100
INFERENCE_SKIP_MAX: Final = 2**31 - 1
MAX_MODEL_ID_CHARS: Final = 64

JobStatus = Literal["pending", "running", "completed", "failed", "canceled"]
FileStatus = Literal["pending", "processing", "completed", "failed"]
_Milliseconds = Annotated[float, Field(ge=0, le=MAX_RULE_MS)]


def _number(value: object) -> object:
    """A JSON number or null: pydantic's lax mode would read ``true`` as 1 and ``"50"`` as 50,
    which the schema does not allow."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError("not a number")
    return value


@dataclass(frozen=True)
class InferenceConfig:
    """Overrides of the model's frames-to-events rule, for every artifact type at once."""

    __pydantic_config__ = REQUEST

    threshold: Annotated[
        Annotated[float, Field(gt=0, lt=1)] | None,
        BeforeValidator(_number),
        Field(description="A frame passes when its probability is above this."),
        reworded("must be a number strictly between 0 and 1"),
    ] = None
    merge_window_ms: Annotated[
        _Milliseconds | None,
        BeforeValidator(_number),
        Field(description="Detections of a type this close merge into one."),
        reworded(f"must be a number of milliseconds from 0 to {MAX_RULE_MS:g}"),
    ] = None
    min_duration_ms: Annotated[
        _Milliseconds | None,
        BeforeValidator(_number),
        Field(description="Detections shorter than this are dropped."),
        reworded(f"must be a number of milliseconds from 0 to {MAX_RULE_MS:g}"),
    ] = None


def _object_key(value: object) -> object:
    if isinstance(value, str):
        if not value.startswith(MEDIA_SCHEME):
            raise ValueError(f"must start with {MEDIA_SCHEME}; {OBJECT_KEY_RULES}")
        return value.removeprefix(MEDIA_SCHEME)
    return value


@dataclass(frozen=True)
class InferenceMediaFile:
    """A file of the team's media, ``{"url": "media://<object-key>"}`` (at creation, or
    ``POST .../files`` later)."""

    __pydantic_config__ = REQUEST

    object_key: Annotated[
        str,
        Field(alias="url", min_length=1, max_length=1100),
        BeforeValidator(_object_key),
        Field(
            json_schema_extra={"pattern": f"^{MEDIA_SCHEME}"},
            description=f"{MEDIA_SCHEME}<object-key> of an uploaded media object.",
        ),
    ]


def _config(value: object) -> object:
    return InferenceConfig() if value is None else value


@dataclass(frozen=True)
class CreateInferenceJob:
    """``POST /api/v1/inference-jobs``."""

    __pydantic_config__ = REQUEST

    model_id: Annotated[
        str,
        Field(min_length=1, max_length=MAX_MODEL_ID_CHARS, description="One of the team's models."),
        reworded(f"must be a model id (a string of 1-{MAX_MODEL_ID_CHARS} characters)"),
    ]
    config: Annotated[InferenceConfig, BeforeValidator(_config)] = field(
        default_factory=InferenceConfig
    )
    files: Annotated[
        tuple[InferenceMediaFile, ...],
        Field(max_length=MAX_JOB_FILES, description="Media files to run on, besides uploads."),
    ] = ()


@dataclass(frozen=True)
class InferenceUploadRequest:
    """``POST .../files/upload-url``: what will be uploaded; ``file_size_bytes`` is exact (the
    form accepts only that many bytes and the confirmation checks it)."""

    __pydantic_config__ = REQUEST

    filename: Annotated[
        str,
        Field(min_length=1, max_length=MAX_FILENAME_CHARS, pattern=FILENAME_PATTERN),
        reworded(
            f"must be a file name of 1-{MAX_FILENAME_CHARS} characters, without '/', '\\' or "
            "control characters"
        ),
    ]
    content_type: Annotated[
        str,
        Field(
            max_length=100,
            pattern=CONTENT_TYPE_PATTERN,
            description="An audio media type, e.g. audio/wav, audio/mpeg, audio/ogg, audio/flac",
        ),
        reworded("must be an audio media type, e.g. audio/wav, audio/mpeg, audio/ogg, audio/flac"),
    ]
    file_size_bytes: Annotated[
        int,
        Field(ge=1, strict=True, description="The file's exact size in bytes"),
        reworded("must be an integer (bytes)", out_of_range="must be at least 1 (bytes)"),
    ]


@dataclass(frozen=True)
class InferenceUploadUrl:
    """``POST upload_url`` a multipart form with ``upload_fields`` (in order), then the file as
    the last field, named ``file``; then confirm ``file_id``."""

    __pydantic_config__ = RESPONSE

    upload_url: str
    upload_fields: dict[str, str]
    file_id: str
    expires_in: Annotated[int, Field(ge=1, description="Seconds the form stays valid")]


@dataclass(frozen=True)
class InferenceConfirm:
    """``POST .../files/confirm``: the upload of ``file_id`` is done."""

    __pydantic_config__ = REQUEST

    file_id: Annotated[
        str,
        Field(min_length=1, max_length=64),
        reworded("must be the file_id that upload-url answered"),
    ]


@dataclass(frozen=True)
class InferenceJobsQuery:
    """``GET /api/v1/inference-jobs?limit=&offset=``."""

    __pydantic_config__ = REQUEST

    limit: Annotated[
        int,
        Field(ge=1, le=INFERENCE_PAGE_MAX, description="Most jobs to return."),
        reworded(f"must be an integer from 1 to {INFERENCE_PAGE_MAX}"),
    ] = INFERENCE_PAGE_DEFAULT
    offset: Annotated[
        int,
        Field(ge=0, le=INFERENCE_SKIP_MAX, description="How many jobs to skip, newest first."),
        reworded(f"must be an integer from 0 to {INFERENCE_SKIP_MAX}"),
    ] = 0


@dataclass(frozen=True)
class Detection:
    """One detected event: ``[start_ms, end_ms)`` from the start of the file."""

    __pydantic_config__ = RESPONSE

    artifact_type: str
    start_ms: Annotated[int, Field(ge=0)]
    end_ms: Annotated[int, Field(ge=0)]
    confidence: Annotated[float, Field(ge=0, le=1)]


@dataclass(frozen=True)
class TypeRule:
    """The frames-to-events rule one artifact type runs with in this job."""

    __pydantic_config__ = RESPONSE

    artifact_type: str
    threshold: Annotated[float, Field(ge=0, le=1)]
    merge_window_ms: Annotated[float, Field(ge=0)]
    min_duration_ms: Annotated[float, Field(ge=0)]


@dataclass(frozen=True)
class AppliedConfig:
    """The overrides the job was created with (null: each type's own value, see ``rules``)."""

    __pydantic_config__ = RESPONSE

    threshold: float | None
    merge_window_ms: float | None
    min_duration_ms: float | None


@dataclass(frozen=True)
class InferenceFile:
    """One file of a job. ``duration_ms`` is of the decoded audio; ``processing_ms`` the wall
    time the server spent on it (decoding, features, model, events)."""

    __pydantic_config__ = RESPONSE

    id: str
    original_filename: str
    source: Literal["upload", "media"]
    status: FileStatus
    upload_confirmed: bool
    detections: tuple[Detection, ...]
    error_message: str | None
    duration_ms: Annotated[int, Field(ge=0)] | None
    processing_ms: Annotated[int, Field(ge=0)] | None
    created_at: Timestamp
    updated_at: Timestamp


@dataclass(frozen=True)
class InferenceJob:
    """A job and its files. ``total_files`` counts every file (confirmed or not);
    ``processed_files`` those completed or failed; ``total_detections`` the completed files'
    detections."""

    __pydantic_config__ = RESPONSE

    id: str
    model_id: str
    status: JobStatus
    config: AppliedConfig
    rules: tuple[TypeRule, ...]
    total_files: Annotated[int, Field(ge=0)]
    processed_files: Annotated[int, Field(ge=0)]
    total_detections: Annotated[int, Field(ge=0)]
    files: tuple[InferenceFile, ...]
    created_at: Timestamp
    updated_at: Timestamp


@dataclass(frozen=True)
class InferenceJobPage:
    """A page of the team's jobs, newest first."""

    __pydantic_config__ = RESPONSE

    items: tuple[InferenceJob, ...]
    total: Annotated[int, Field(ge=0)]
    limit: Annotated[int, Field(ge=1, le=INFERENCE_PAGE_MAX)]
    offset: Annotated[int, Field(ge=0)]
