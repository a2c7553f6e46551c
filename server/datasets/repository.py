"""Datasets and their audio files behind repositories (custom detectors, Relay style).

``DatasetRepository`` and ``AudioFileRepository`` are what callers hold; the SQLite classes keep
the rows in the server's database through the store thread. Every row carries its team, and
every read is by (team, id): another team's rows are simply not found (404 for the caller).
A PostgreSQL implementation would keep the contract: status changes are conditional UPDATEs
whose changed-row count says whether they happened, so two workers never both process a file.

Audio files go ``uploading -> pending -> processing -> ready | failed``: ``uploading`` until the
client confirms the upload, ``pending`` until a worker claims it, ``processing`` while decoded
and featurised (a worker that dies leaves it to be claimed again after a restart).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from server.store import Store, StoreThread

__all__ = [
    "AUDIO_STATUSES",
    "ArtifactTypeRecord",
    "AudioFileRecord",
    "AudioFileRepository",
    "AudioStatus",
    "DatasetRecord",
    "DatasetRepository",
    "SqliteAudioFileRepository",
    "SqliteDatasetRepository",
]

AudioStatus = Literal["uploading", "pending", "processing", "ready", "failed"]
AUDIO_STATUSES: tuple[AudioStatus, ...] = ("uploading", "pending", "processing", "ready", "failed")


@dataclass(frozen=True)
class ArtifactTypeRecord:
    name: str
    description: str
    color: str  # "#RRGGBB"


@dataclass(frozen=True)
class DatasetRecord:
    dataset_id: str
    team: str
    name: str
    description: str
    artifact_types: tuple[ArtifactTypeRecord, ...]
    created_at_s: float
    updated_at_s: float


@dataclass(frozen=True)
class AudioFileRecord:
    audio_id: str
    team: str
    dataset_id: str
    filename: str
    content_type: str
    declared_size_bytes: int
    blob_key: str  # where the client's upload lands (team-prefixed storage key)
    status: AudioStatus
    created_at_s: float
    updated_at_s: float
    error: str | None = None  # why processing failed, for the client
    duration_ms: int | None = None  # once ready: of the normalised 16 kHz mono audio
    sample_rate_hz: int | None = None  # of the upload, as decoded
    channels: int | None = None  # of the upload, as decoded
    size_bytes: int | None = None  # of the upload, once confirmed
    attempts: int = 0  # processing attempts started (a file that keeps killing its worker fails)


class DatasetRepository(Protocol):
    async def prepare(self) -> None:
        """Create the tables; idempotent."""
        ...

    async def create(self, record: DatasetRecord) -> None: ...

    async def get(self, team: str, dataset_id: str) -> DatasetRecord | None: ...

    async def page(self, team: str, limit: int, offset: int) -> tuple[list[DatasetRecord], int]:
        """The team's datasets, newest first, and how many the team has."""
        ...

    async def update(self, record: DatasetRecord) -> bool:
        """Replace the team's dataset with this one (same id); whether it existed."""
        ...

    async def delete(self, team: str, dataset_id: str) -> bool:
        """Remove the dataset row (its audio files are the caller's to remove); whether it
        existed."""
        ...


class AudioFileRepository(Protocol):
    async def prepare(self) -> None: ...

    async def create(self, record: AudioFileRecord) -> None: ...

    async def get(self, team: str, dataset_id: str, audio_id: str) -> AudioFileRecord | None: ...

    async def get_many(
        self, team: str, dataset_id: str, audio_ids: list[str]
    ) -> dict[str, AudioFileRecord]:
        """The dataset's files among ``audio_ids`` (missing ones are left out)."""
        ...

    async def page(
        self, team: str, dataset_id: str, limit: int, offset: int
    ) -> tuple[list[AudioFileRecord], int]:
        """The dataset's files, oldest first, and how many it has."""
        ...

    async def transition(
        self, audio_id: str, expected: tuple[AudioStatus, ...], new: AudioFileRecord
    ) -> bool:
        """Replace the row with ``new`` if its status is one of ``expected``; whether it did."""
        ...

    async def with_status(
        self, statuses: tuple[AudioStatus, ...], limit: int
    ) -> list[AudioFileRecord]:
        """Up to ``limit`` files (every team's) in these statuses, oldest update first."""
        ...

    async def delete(self, team: str, dataset_id: str, audio_id: str) -> bool: ...

    async def delete_dataset(self, team: str, dataset_id: str) -> list[AudioFileRecord]:
        """Remove every file row of the dataset; the rows removed (their blobs are the
        caller's to remove)."""
        ...


_DATASETS = """
CREATE TABLE IF NOT EXISTS datasets (
    dataset_id TEXT PRIMARY KEY,
    team TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    artifact_types TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
)
"""
_DATASETS_INDEX = "CREATE INDEX IF NOT EXISTS datasets_by_team ON datasets(team, created_at)"
_DATASET_COLUMNS = "dataset_id, team, name, description, artifact_types, created_at, updated_at"

_AUDIO = """
CREATE TABLE IF NOT EXISTS audio_files (
    audio_id TEXT PRIMARY KEY,
    team TEXT NOT NULL,
    dataset_id TEXT NOT NULL,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    declared_size_bytes INTEGER NOT NULL,
    blob_key TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    error TEXT,
    duration_ms INTEGER,
    sample_rate_hz INTEGER,
    channels INTEGER,
    size_bytes INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0
)
"""
_AUDIO_INDEXES = (
    "CREATE INDEX IF NOT EXISTS audio_by_dataset ON audio_files(team, dataset_id, created_at)",
    "CREATE INDEX IF NOT EXISTS audio_by_status ON audio_files(status, updated_at)",
)
_AUDIO_COLUMNS = (
    "audio_id, team, dataset_id, filename, content_type, declared_size_bytes, blob_key, status, "
    "created_at, updated_at, error, duration_ms, sample_rate_hz, channels, size_bytes, attempts"
)


def _dataset(row: tuple[Any, ...]) -> DatasetRecord:
    dataset_id, team, name, description, types, created, updated = row
    return DatasetRecord(
        dataset_id,
        team,
        name,
        description,
        tuple(ArtifactTypeRecord(**item) for item in json.loads(types)),
        created,
        updated,
    )


def _dataset_values(record: DatasetRecord) -> tuple[Any, ...]:
    types = json.dumps([t.__dict__ for t in record.artifact_types], separators=(",", ":"))
    return (
        record.dataset_id,
        record.team,
        record.name,
        record.description,
        types,
        record.created_at_s,
        record.updated_at_s,
    )


class SqliteDatasetRepository:
    def __init__(self, store: StoreThread) -> None:
        self._store = store

    async def prepare(self) -> None:
        def create(store: Store) -> None:
            store.execute(_DATASETS)
            store.execute(_DATASETS_INDEX)

        await self._store.write(create)

    async def create(self, record: DatasetRecord) -> None:
        values = _dataset_values(record)
        await self._store.write(
            lambda store: store.execute(
                f"INSERT INTO datasets({_DATASET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", values
            )
        )

    async def get(self, team: str, dataset_id: str) -> DatasetRecord | None:
        def read(store: Store) -> DatasetRecord | None:
            row = store.execute(
                f"SELECT {_DATASET_COLUMNS} FROM datasets WHERE team = ? AND dataset_id = ?",
                (team, dataset_id),
            ).fetchone()
            return None if row is None else _dataset(row)

        return await self._store.read(read)

    async def page(self, team: str, limit: int, offset: int) -> tuple[list[DatasetRecord], int]:
        def read(store: Store) -> tuple[list[DatasetRecord], int]:
            rows = store.execute(
                f"SELECT {_DATASET_COLUMNS} FROM datasets WHERE team = ? "
                "ORDER BY created_at DESC, dataset_id LIMIT ? OFFSET ?",
                (team, limit, offset),
            ).fetchall()
            (total,) = store.execute(
                "SELECT COUNT(*) FROM datasets WHERE team = ?", (team,)
            ).fetchone()
            return [_dataset(row) for row in rows], int(total)

        return await self._store.read(read)

    async def update(self, record: DatasetRecord) -> bool:
        _, team, name, description, types, _, updated = _dataset_values(record)

        def write(store: Store) -> bool:
            cursor = store.execute(
                "UPDATE datasets SET name = ?, description = ?, artifact_types = ?, "
                "updated_at = ? WHERE team = ? AND dataset_id = ?",
                (name, description, types, updated, team, record.dataset_id),
            )
            return cursor.rowcount > 0

        return await self._store.write(write)

    async def delete(self, team: str, dataset_id: str) -> bool:
        def write(store: Store) -> bool:
            cursor = store.execute(
                "DELETE FROM datasets WHERE team = ? AND dataset_id = ?", (team, dataset_id)
            )
            return cursor.rowcount > 0

        return await self._store.write(write)


def _audio(row: tuple[Any, ...]) -> AudioFileRecord:
    return AudioFileRecord(*row)


def _audio_values(record: AudioFileRecord) -> tuple[Any, ...]:
    return (
        record.audio_id,
        record.team,
        record.dataset_id,
        record.filename,
        record.content_type,
        record.declared_size_bytes,
        record.blob_key,
        record.status,
        record.created_at_s,
        record.updated_at_s,
        record.error,
        record.duration_ms,
        record.sample_rate_hz,
        record.channels,
        record.size_bytes,
        record.attempts,
    )


class SqliteAudioFileRepository:
    def __init__(self, store: StoreThread) -> None:
        self._store = store

    async def prepare(self) -> None:
        def create(store: Store) -> None:
            store.execute(_AUDIO)
            for index in _AUDIO_INDEXES:
                store.execute(index)

        await self._store.write(create)

    async def create(self, record: AudioFileRecord) -> None:
        values = _audio_values(record)
        marks = ", ".join("?" * len(values))
        await self._store.write(
            lambda store: store.execute(
                f"INSERT INTO audio_files({_AUDIO_COLUMNS}) VALUES ({marks})", values
            )
        )

    async def get(self, team: str, dataset_id: str, audio_id: str) -> AudioFileRecord | None:
        def read(store: Store) -> AudioFileRecord | None:
            row = store.execute(
                f"SELECT {_AUDIO_COLUMNS} FROM audio_files "
                "WHERE team = ? AND dataset_id = ? AND audio_id = ?",
                (team, dataset_id, audio_id),
            ).fetchone()
            return None if row is None else _audio(row)

        return await self._store.read(read)

    async def get_many(
        self, team: str, dataset_id: str, audio_ids: list[str]
    ) -> dict[str, AudioFileRecord]:
        unique = sorted(set(audio_ids))

        def read(store: Store) -> dict[str, AudioFileRecord]:
            found: dict[str, AudioFileRecord] = {}
            for start in range(0, len(unique), 500):  # SQLite's bound-parameter limit
                part = unique[start : start + 500]
                marks = ", ".join("?" * len(part))
                rows = store.execute(
                    f"SELECT {_AUDIO_COLUMNS} FROM audio_files WHERE team = ? AND "
                    f"dataset_id = ? AND audio_id IN ({marks})",
                    (team, dataset_id, *part),
                ).fetchall()
                found.update((row[0], _audio(row)) for row in rows)
            return found

        return await self._store.read(read)

    async def page(
        self, team: str, dataset_id: str, limit: int, offset: int
    ) -> tuple[list[AudioFileRecord], int]:
        def read(store: Store) -> tuple[list[AudioFileRecord], int]:
            rows = store.execute(
                f"SELECT {_AUDIO_COLUMNS} FROM audio_files WHERE team = ? AND dataset_id = ? "
                "ORDER BY created_at, audio_id LIMIT ? OFFSET ?",
                (team, dataset_id, limit, offset),
            ).fetchall()
            (total,) = store.execute(
                "SELECT COUNT(*) FROM audio_files WHERE team = ? AND dataset_id = ?",
                (team, dataset_id),
            ).fetchone()
            return [_audio(row) for row in rows], int(total)

        return await self._store.read(read)

    async def transition(
        self, audio_id: str, expected: tuple[AudioStatus, ...], new: AudioFileRecord
    ) -> bool:
        if new.audio_id != audio_id:
            raise ValueError("a transition keeps the file's id")
        columns = [c.strip() for c in _AUDIO_COLUMNS.split(",")][1:]
        values = _audio_values(new)[1:]
        assignments = ", ".join(f"{column} = ?" for column in columns)
        marks = ", ".join("?" * len(expected))

        def write(store: Store) -> bool:
            cursor = store.execute(
                f"UPDATE audio_files SET {assignments} WHERE audio_id = ? AND status IN ({marks})",
                (*values, audio_id, *expected),
            )
            return cursor.rowcount > 0

        return await self._store.write(write)

    async def with_status(
        self, statuses: tuple[AudioStatus, ...], limit: int
    ) -> list[AudioFileRecord]:
        marks = ", ".join("?" * len(statuses))

        def read(store: Store) -> list[AudioFileRecord]:
            rows = store.execute(
                f"SELECT {_AUDIO_COLUMNS} FROM audio_files WHERE status IN ({marks}) "
                "ORDER BY updated_at LIMIT ?",
                (*statuses, limit),
            ).fetchall()
            return [_audio(row) for row in rows]

        return await self._store.read(read)

    async def delete(self, team: str, dataset_id: str, audio_id: str) -> bool:
        def write(store: Store) -> bool:
            cursor = store.execute(
                "DELETE FROM audio_files WHERE team = ? AND dataset_id = ? AND audio_id = ?",
                (team, dataset_id, audio_id),
            )
            return cursor.rowcount > 0

        return await self._store.write(write)

    async def delete_dataset(self, team: str, dataset_id: str) -> list[AudioFileRecord]:
        def write(store: Store) -> list[AudioFileRecord]:
            rows = store.execute(
                f"SELECT {_AUDIO_COLUMNS} FROM audio_files WHERE team = ? AND dataset_id = ?",
                (team, dataset_id),
            ).fetchall()
            store.execute(
                "DELETE FROM audio_files WHERE team = ? AND dataset_id = ?", (team, dataset_id)
            )
            return [_audio(row) for row in rows]

        return await self._store.write(write)


def with_status(
    record: AudioFileRecord, status: AudioStatus, now_s: float, **changes: Any
) -> AudioFileRecord:
    """``record`` moved to ``status`` at ``now_s``, with other fields changed as given."""
    return replace(record, status=status, updated_at_s=now_s, **changes)
