"""The wire types of a dataset's audio files (Relay style), declared once: the server builds its
responses from them and a client parses with them.

The flow is Relay's: ``POST /api/v1/datasets/{id}/audio/upload-url`` answers where to POST a
multipart form (``upload_url`` and its ``fields``, then the file as the last field, named
``file``); ``POST .../audio/confirm`` says the upload is done; ``GET .../audio/{audio_id}``
shows ``processing_status`` until it is ``ready`` or ``failed``.

An upload not yet confirmed shows ``processing_status: "pending"`` (Relay's vocabulary has no
other word for it) with ``upload_confirmed: false``: a client polling for ``ready`` keeps
waiting, and one that forgot to confirm can tell why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

from protocol.media import Timestamp
from protocol.wire import REQUEST, RESPONSE, reworded

__all__ = [
    "AUDIO_OFFSET_MAX",
    "AUDIO_PAGE_DEFAULT",
    "AUDIO_PAGE_MAX",
    "FILENAME_PATTERN",
    "MAX_FILENAME_CHARS",
    "AudioConfirm",
    "AudioFile",
    "AudioFilePage",
    "AudioFilesQuery",
    "AudioUploadRequest",
    "AudioUploadUrl",
    "ProcessingStatus",
]

AUDIO_PAGE_DEFAULT = 50
AUDIO_PAGE_MAX = 200
AUDIO_OFFSET_MAX = 2**31 - 1
MAX_FILENAME_CHARS = 255
# A file's own name, never a path: no '/', no '\', no control characters. (It is only shown
# back: storage keys are made from the audio id, never from the name.)
FILENAME_PATTERN = r"^[^/\\\x00-\x1f\x7f]+$"
CONTENT_TYPE_PATTERN = r"^(audio/[A-Za-z0-9.+-]+|video/(mp4|webm|ogg)|application/ogg)$"

ProcessingStatus = Literal["pending", "processing", "ready", "failed"]


@dataclass(frozen=True)
class AudioUploadRequest:
    """``POST .../audio/upload-url``: what will be uploaded. The size is the exact size of the
    file: the form only accepts that many bytes, and the confirmation checks it."""

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
    file_size: Annotated[
        int,
        Field(ge=1, strict=True, description="The file's exact size in bytes"),
        reworded("must be an integer (bytes)", out_of_range="must be at least 1 (bytes)"),
    ]


@dataclass(frozen=True)
class AudioUploadUrl:
    """Where and how to upload: ``POST upload_url`` a multipart form with ``fields`` (in order),
    then the file as the last field, named ``file``."""

    __pydantic_config__ = RESPONSE

    upload_url: str
    fields: dict[str, str]
    audio_id: str
    expires_in: Annotated[int, Field(ge=1, description="Seconds the form stays valid")]


@dataclass(frozen=True)
class AudioConfirm:
    """``POST .../audio/confirm``: the upload of ``audio_id`` is done."""

    __pydantic_config__ = REQUEST

    audio_id: Annotated[
        str,
        Field(min_length=1, max_length=64),
        reworded("must be the audio_id that upload-url answered"),
    ]


@dataclass(frozen=True)
class AudioFilesQuery:
    """``GET .../audio?limit=&offset=``."""

    __pydantic_config__ = REQUEST

    limit: Annotated[
        int,
        Field(ge=1, le=AUDIO_PAGE_MAX, description="Most files to return."),
        reworded(f"must be an integer from 1 to {AUDIO_PAGE_MAX}"),
    ] = AUDIO_PAGE_DEFAULT
    offset: Annotated[
        int,
        Field(ge=0, le=AUDIO_OFFSET_MAX, description="How many files to skip, oldest first."),
        reworded(f"must be an integer from 0 to {AUDIO_OFFSET_MAX}"),
    ] = 0


@dataclass(frozen=True)
class AudioFile:
    """One audio file of a dataset. ``duration_ms`` is of the normalised 16 kHz mono audio;
    ``sample_rate`` and ``channels`` are the upload's own, as decoded."""

    __pydantic_config__ = RESPONSE

    id: str
    dataset_id: str
    filename: str
    content_type: str
    file_size: Annotated[int, Field(ge=1)]
    processing_status: ProcessingStatus
    upload_confirmed: bool
    processing_error: str | None
    duration_ms: Annotated[int, Field(ge=0)] | None
    sample_rate: Annotated[int, Field(ge=1)] | None
    channels: Annotated[int, Field(ge=1)] | None
    created_at: Timestamp
    updated_at: Timestamp


@dataclass(frozen=True)
class AudioFilePage:
    """A page of a dataset's audio files, oldest first."""

    __pydantic_config__ = RESPONSE

    items: tuple[AudioFile, ...]
    total: Annotated[int, Field(ge=0)]
    limit: Annotated[int, Field(ge=1, le=AUDIO_PAGE_MAX)]
    offset: Annotated[int, Field(ge=0)]
