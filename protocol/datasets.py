"""The Datasets API's wire types (Relay style), declared once: the server validates requests and
builds responses with them, the OpenAPI document is generated from them.

``POST /api/v1/datasets {"name", "description"?, "artifact_types": [{"name", "description"?,
"color"?}]}`` answers the dataset (201); ``GET /api/v1/datasets`` pages the team's datasets newest
first (``?limit=&offset=``); ``GET/PATCH/DELETE /api/v1/datasets/<id>`` read, change and remove
one. An artifact type is what a detector will be trained to find (``glitch``, ``long_pause``);
annotations name it, so a type that annotations use cannot be renamed or removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BeforeValidator, Field

from protocol.media import Timestamp
from protocol.wire import REQUEST, RESPONSE, reworded

__all__ = [
    "ARTIFACT_NAME_PATTERN",
    "COLOR_PATTERN",
    "DEFAULT_COLOR",
    "MAX_ARTIFACT_TYPES",
    "MAX_DATASET_DESCRIPTION_CHARS",
    "MAX_DATASET_NAME_CHARS",
    "MAX_ID_CHARS",
    "PAGE_LIMIT_DEFAULT",
    "PAGE_LIMIT_MAX",
    "PAGE_OFFSET_MAX",
    "ArtifactType",
    "CreateDataset",
    "Dataset",
    "DatasetPage",
    "ListQuery",
    "NewArtifactType",
    "UpdateDataset",
]

# Every list of this API pages with ?limit=&offset= within these bounds.
PAGE_LIMIT_DEFAULT: Final = 50
PAGE_LIMIT_MAX: Final = 1000
PAGE_OFFSET_MAX: Final = 2**31
MAX_ID_CHARS: Final = 64  # ids are UUIDs; a longer one is never found
MAX_DATASET_NAME_CHARS: Final = 200
MAX_DATASET_DESCRIPTION_CHARS: Final = 2000
MAX_ARTIFACT_TYPE_DESCRIPTION_CHARS: Final = 500
MAX_ARTIFACT_TYPES: Final = 100
ARTIFACT_NAME_PATTERN: Final = "^[A-Za-z0-9_-]{1,64}$"
COLOR_PATTERN: Final = "^#[0-9A-Fa-f]{6}$"
DEFAULT_COLOR: Final = "#808080"

ArtifactName = Annotated[
    str,
    Field(pattern=ARTIFACT_NAME_PATTERN, description="Letters, digits, '_' and '-'; 1-64."),
    reworded("must be 1-64 letters, digits, '_' or '-' (e.g. long_pause)"),
]
Color = Annotated[
    str,
    Field(pattern=COLOR_PATTERN, description="Shown in annotation tools: #RRGGBB."),
    reworded("must be a colour #RRGGBB (e.g. #FF4444)"),
]
DatasetName = Annotated[
    str,
    Field(min_length=1, max_length=MAX_DATASET_NAME_CHARS),
    reworded(f"must be a string of 1-{MAX_DATASET_NAME_CHARS} characters"),
]
DatasetDescription = Annotated[
    str,
    Field(max_length=MAX_DATASET_DESCRIPTION_CHARS),
    reworded(f"must be a string of at most {MAX_DATASET_DESCRIPTION_CHARS} characters"),
]
TypeDescription = Annotated[
    str,
    Field(max_length=MAX_ARTIFACT_TYPE_DESCRIPTION_CHARS),
    reworded(f"must be a string of at most {MAX_ARTIFACT_TYPE_DESCRIPTION_CHARS} characters"),
]


@dataclass(frozen=True)
class NewArtifactType:
    """An artifact type as a request declares it."""

    __pydantic_config__ = REQUEST

    name: ArtifactName
    description: TypeDescription = ""
    color: Color = DEFAULT_COLOR


def _unique_names(types: tuple[NewArtifactType, ...]) -> tuple[NewArtifactType, ...]:
    first: dict[str, int] = {}
    for index, kind in enumerate(types):
        if kind.name in first:
            raise ValueError(
                f"has the name {kind.name!r} twice (items {first[kind.name]} and {index}): "
                "names are unique within a dataset"
            )
        first[kind.name] = index
    return types


def _not_empty(value: Any) -> Any:
    if isinstance(value, list | tuple) and not value:
        raise ValueError("must list at least one artifact type")
    return value


ArtifactTypes = Annotated[
    tuple[NewArtifactType, ...],
    Field(
        min_length=1,
        max_length=MAX_ARTIFACT_TYPES,
        description="What annotations mark; names unique within the dataset.",
    ),
    AfterValidator(_unique_names),
    BeforeValidator(_not_empty),
]


@dataclass(frozen=True)
class CreateDataset:
    """``POST /api/v1/datasets``."""

    __pydantic_config__ = REQUEST

    name: DatasetName
    artifact_types: ArtifactTypes
    description: DatasetDescription = ""


@dataclass(frozen=True)
class UpdateDataset:
    """``PATCH /api/v1/datasets/<id>``: what is given changes. ``artifact_types`` replaces the
    whole list: types may be added and described anew, but one that annotations use cannot be
    removed or renamed (409)."""

    __pydantic_config__ = REQUEST

    name: DatasetName | None = None
    description: DatasetDescription | None = None
    artifact_types: ArtifactTypes | None = None


@dataclass(frozen=True)
class ArtifactType:
    __pydantic_config__ = RESPONSE

    name: ArtifactName
    description: str
    color: Color


@dataclass(frozen=True)
class Dataset:
    """A dataset, as Relay's reference shows it."""

    __pydantic_config__ = RESPONSE

    id: str
    name: str
    description: str
    artifact_types: tuple[ArtifactType, ...]
    created_at_s: Annotated[Timestamp, Field(alias="created_at")]
    updated_at_s: Annotated[Timestamp, Field(alias="updated_at")]


PageLimit = Annotated[
    int,
    Field(ge=1, le=PAGE_LIMIT_MAX),
    reworded(f"must be an integer from 1 to {PAGE_LIMIT_MAX}"),
]
PageOffset = Annotated[
    int,
    Field(ge=0, le=PAGE_OFFSET_MAX),
    reworded(f"must be an integer from 0 to {PAGE_OFFSET_MAX}"),
]


@dataclass(frozen=True)
class ListQuery:
    """``?limit=&offset=`` of every list of this API (read with ``protocol.wire.parse_query``;
    the OpenAPI parameters come from ``query_parameters``)."""

    __pydantic_config__ = REQUEST

    limit: Annotated[PageLimit, Field(description="Most items to return.")] = PAGE_LIMIT_DEFAULT
    offset: Annotated[PageOffset, Field(description="How many items to skip.")] = 0


@dataclass(frozen=True)
class DatasetPage:
    """``GET /api/v1/datasets``: the team's datasets, newest first."""

    __pydantic_config__ = RESPONSE

    items: tuple[Dataset, ...]
    total: Annotated[int, Field(ge=0, description="How many datasets the team has.")]
    limit: Annotated[int, Field(ge=1, le=PAGE_LIMIT_MAX)]
    offset: Annotated[int, Field(ge=0, le=PAGE_OFFSET_MAX)]
