"""Custom detector models behind a repository: one row per model, its ONNX file in the blob store.

``ModelRepository`` is what callers hold; ``SqliteModelRepository`` keeps the rows in the
server's SQLite database through the store thread. Every row carries its team and every read is
by (team, id), so another team's model is simply not found (404 for the caller).

A model is immutable once created: the training job that produced it writes its ONNX file to
the blob store first, then inserts the row (so a row never points at a missing file), under an
id derived from the job's id, so a job run again after a crash finds its model already there
instead of making a second one. ``version`` counts the team's models of one dataset, 1, 2, ...,
assigned in the INSERT itself so two concurrent inserts cannot take the same number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from server.store import Store, StoreThread

__all__ = ["DetectorModelRecord", "ModelRepository", "SqliteModelRepository"]


@dataclass(frozen=True)
class DetectorModelRecord:
    model_id: str
    team: str
    name: str
    dataset_id: str
    annotation_set_id: str
    annotation_set_hash: str
    training_job_id: str
    artifact_types: tuple[str, ...]  # in the model's output order
    metrics: dict[str, Any]  # per artifact type, on the validation files
    blob_key: str
    size_bytes: int
    sha256: str
    created_at_s: float
    version: int = 0  # assigned by the repository on insert


class ModelRepository(Protocol):
    async def prepare(self) -> None:
        """Create the tables; idempotent."""
        ...

    async def create(self, record: DetectorModelRecord) -> DetectorModelRecord:
        """Insert the model (its ``version`` assigned here); a model with this id already there
        is returned as it is, unchanged."""
        ...

    async def get(self, team: str, model_id: str) -> DetectorModelRecord | None: ...

    async def page(
        self, team: str, limit: int, offset: int, dataset_id: str | None = None
    ) -> tuple[list[DetectorModelRecord], int]:
        """The team's models (of one dataset, if given), newest first, and how many in all."""
        ...

    async def delete(self, team: str, model_id: str) -> DetectorModelRecord | None:
        """Remove the row; the removed record (None: no such model). The caller removes the
        blob afterwards."""
        ...


_TABLE = """
CREATE TABLE IF NOT EXISTS detector_models (
    model_id TEXT PRIMARY KEY,
    team TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    dataset_id TEXT NOT NULL,
    annotation_set_id TEXT NOT NULL,
    annotation_set_hash TEXT NOT NULL,
    training_job_id TEXT NOT NULL,
    artifact_types TEXT NOT NULL,
    metrics TEXT NOT NULL,
    blob_key TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS detector_models_by_team ON detector_models(team, created_at)",
    "CREATE INDEX IF NOT EXISTS detector_models_by_dataset "
    "ON detector_models(team, dataset_id, version)",
)
_COLUMNS = (
    "model_id, team, name, version, dataset_id, annotation_set_id, annotation_set_hash, "
    "training_job_id, artifact_types, metrics, blob_key, size_bytes, sha256, created_at"
)


def _record(row: tuple[Any, ...]) -> DetectorModelRecord:
    (model_id, team, name, version, dataset_id, set_id, set_hash, job_id, types, metrics,
     blob_key, size, sha256, created) = row  # fmt: skip
    return DetectorModelRecord(
        model_id,
        team,
        name,
        dataset_id,
        set_id,
        set_hash,
        job_id,
        tuple(json.loads(types)),
        json.loads(metrics),
        blob_key,
        int(size),
        sha256,
        float(created),
        int(version),
    )


def _one(store: Store, model_id: str) -> DetectorModelRecord | None:
    row = store.execute(
        f"SELECT {_COLUMNS} FROM detector_models WHERE model_id = ?", (model_id,)
    ).fetchone()
    return None if row is None else _record(row)


class SqliteModelRepository:
    """``ModelRepository`` in the server's SQLite database."""

    def __init__(self, store: StoreThread) -> None:
        self._store = store

    async def prepare(self) -> None:
        def create(store: Store) -> None:
            store.execute(_TABLE)
            for index in _INDEXES:
                store.execute(index)

        await self._store.write(create)

    async def create(self, record: DetectorModelRecord) -> DetectorModelRecord:
        def insert(store: Store) -> DetectorModelRecord:
            store.execute(
                f"INSERT OR IGNORE INTO detector_models({_COLUMNS}) "
                "SELECT ?, ?, ?, COALESCE(MAX(version), 0) + 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? "
                "FROM detector_models WHERE team = ? AND dataset_id = ?",
                (
                    record.model_id,
                    record.team,
                    record.name,
                    record.dataset_id,
                    record.annotation_set_id,
                    record.annotation_set_hash,
                    record.training_job_id,
                    json.dumps(list(record.artifact_types)),
                    json.dumps(record.metrics, separators=(",", ":")),
                    record.blob_key,
                    record.size_bytes,
                    record.sha256,
                    record.created_at_s,
                    record.team,
                    record.dataset_id,
                ),
            )
            stored = _one(store, record.model_id)
            assert stored is not None
            return stored

        return await self._store.write(insert)

    async def get(self, team: str, model_id: str) -> DetectorModelRecord | None:
        def read(store: Store) -> DetectorModelRecord | None:
            record = _one(store, model_id)
            return record if record is not None and record.team == team else None

        return await self._store.read(read)

    async def page(
        self, team: str, limit: int, offset: int, dataset_id: str | None = None
    ) -> tuple[list[DetectorModelRecord], int]:
        where = "team = ?" + (" AND dataset_id = ?" if dataset_id is not None else "")
        args: tuple[Any, ...] = (team,) if dataset_id is None else (team, dataset_id)

        def read(store: Store) -> tuple[list[DetectorModelRecord], int]:
            rows = store.execute(
                f"SELECT {_COLUMNS} FROM detector_models WHERE {where} "
                "ORDER BY created_at DESC, model_id DESC LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
            total = store.execute(
                f"SELECT COUNT(*) FROM detector_models WHERE {where}", args
            ).fetchone()[0]
            return [_record(row) for row in rows], int(total)

        return await self._store.read(read)

    async def delete(self, team: str, model_id: str) -> DetectorModelRecord | None:
        def delete(store: Store) -> DetectorModelRecord | None:
            record = _one(store, model_id)
            if record is None or record.team != team:
                return None
            store.execute("DELETE FROM detector_models WHERE model_id = ?", (model_id,))
            return record

        return await self._store.write(delete)
