"""Inference jobs and their files behind a repository.

``InferenceRepository`` is what callers hold; ``SqliteInferenceRepository`` keeps the rows in
the server's SQLite database through the store thread. Every row carries its team and every
read is by (team, id): another team's job is simply not found (404 for the caller).

A job row holds what does not change: the model, the overrides it was created with and the
rule each artifact type runs with (fixed at creation, so a file processed later runs with the
same rule), plus whether it was canceled. Its status is not stored: it is derived from its
files' (``server.inference.views``).

Files go ``uploading -> pending -> processing -> completed | failed`` (a media file starts
``pending``). Every change is a conditional UPDATE whose changed-row count says whether it
happened, so two workers never both process a file and a worker whose file was deleted or
canceled meanwhile writes nothing; the detections are written in the same UPDATE that makes the
file ``completed``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from server.store import Store, StoreThread

__all__ = [
    "CANCELED_ERROR",
    "AddOutcome",
    "DetectionRow",
    "FileStatus",
    "InferenceFileRecord",
    "InferenceJobRecord",
    "InferenceRepository",
    "RuleRow",
    "SqliteInferenceRepository",
    "with_status",
]

FileStatus = Literal["uploading", "pending", "processing", "completed", "failed"]
AddOutcome = Literal["added", "full", "canceled", "gone"]
DetectionRow = tuple[str, int, int, float]  # artifact type, start ms, end ms, confidence
RuleRow = tuple[str, float, float, float]  # artifact type, threshold, merge window, min duration
CANCELED_ERROR = "the job was canceled before this file was processed"


@dataclass(frozen=True)
class InferenceJobRecord:
    job_id: str
    team: str
    model_id: str
    overrides: dict[str, float | None]  # threshold, merge_window_ms, min_duration_ms as given
    rules: tuple[RuleRow, ...]  # one per artifact type, in the model's output order
    canceled: bool
    created_at_s: float
    updated_at_s: float


@dataclass(frozen=True)
class InferenceFileRecord:
    file_id: str
    job_id: str
    team: str
    filename: str
    content_type: str
    declared_size_bytes: int | None  # uploads only
    blob_key: str
    source: Literal["upload", "media"]  # a media file's blob is the team's: never removed here
    status: FileStatus
    created_at_s: float
    updated_at_s: float
    error: str | None = None
    duration_ms: int | None = None
    processing_ms: int | None = None
    size_bytes: int | None = None
    attempts: int = 0  # processing attempts started (a file that keeps killing its worker fails)
    detections: tuple[DetectionRow, ...] = ()


class InferenceRepository(Protocol):
    async def prepare(self) -> None:
        """Create the tables; idempotent."""
        ...

    async def create_job(
        self, job: InferenceJobRecord, files: tuple[InferenceFileRecord, ...]
    ) -> None: ...

    async def get_job(self, team: str, job_id: str) -> InferenceJobRecord | None: ...

    async def page_jobs(
        self, team: str, limit: int, offset: int
    ) -> tuple[list[InferenceJobRecord], int]:
        """The team's jobs, newest first, and how many it has."""
        ...

    async def files_of(self, job_ids: list[str]) -> dict[str, list[InferenceFileRecord]]:
        """Each job's files, oldest first (ids of another team's jobs are the caller's
        business: pass only ids read by team)."""
        ...

    async def add_file(self, file: InferenceFileRecord, max_files: int) -> AddOutcome:
        """Insert the file unless its job is gone, canceled or already has ``max_files``."""
        ...

    async def get_file(
        self, team: str, job_id: str, file_id: str
    ) -> InferenceFileRecord | None: ...

    async def transition(
        self, file_id: str, expected: tuple[FileStatus, ...], new: InferenceFileRecord
    ) -> bool:
        """Replace the row with ``new`` if its status is one of ``expected``; whether it did."""
        ...

    async def claim(self, now_s: float) -> InferenceFileRecord | None:
        """The oldest ``pending`` file of a job not canceled, now ``processing`` with its
        attempt counted; None when none waits."""
        ...

    async def with_status(
        self, statuses: tuple[FileStatus, ...], limit: int
    ) -> list[InferenceFileRecord]:
        """Up to ``limit`` files (every team's) in these statuses, oldest update first."""
        ...

    async def cancel(self, team: str, job_id: str, now_s: float) -> bool:
        """Mark the job canceled and fail its files not yet processing; whether it was found."""
        ...

    async def delete_job(self, team: str, job_id: str) -> list[InferenceFileRecord] | None:
        """Remove the job and its files' rows; the files removed (their blobs are the caller's
        to remove), None when there was no such job."""
        ...


_JOBS = """
CREATE TABLE IF NOT EXISTS inference_jobs (
    job_id TEXT PRIMARY KEY,
    team TEXT NOT NULL,
    model_id TEXT NOT NULL,
    overrides TEXT NOT NULL,
    rules TEXT NOT NULL,
    canceled INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
)
"""
_FILES = """
CREATE TABLE IF NOT EXISTS inference_files (
    file_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    team TEXT NOT NULL,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    declared_size_bytes INTEGER,
    blob_key TEXT NOT NULL,
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    error TEXT,
    duration_ms INTEGER,
    processing_ms INTEGER,
    size_bytes INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    detections TEXT NOT NULL DEFAULT '[]'
)
"""
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS inference_jobs_by_team ON inference_jobs(team, created_at)",
    "CREATE INDEX IF NOT EXISTS inference_files_by_job ON inference_files(job_id, created_at)",
    "CREATE INDEX IF NOT EXISTS inference_files_by_status ON inference_files(status, updated_at)",
)
_JOB_COLUMNS = "job_id, team, model_id, overrides, rules, canceled, created_at, updated_at"
_FILE_COLUMNS = (
    "file_id, job_id, team, filename, content_type, declared_size_bytes, blob_key, source, "
    "status, created_at, updated_at, error, duration_ms, processing_ms, size_bytes, attempts, "
    "detections"
)
_FILE_NAMES = [name.strip() for name in _FILE_COLUMNS.split(",")]


def _job(row: tuple[Any, ...]) -> InferenceJobRecord:
    job_id, team, model_id, overrides, rules, canceled, created, updated = row
    return InferenceJobRecord(
        job_id,
        team,
        model_id,
        json.loads(overrides),
        tuple((str(n), float(t), float(m), float(d)) for n, t, m, d in json.loads(rules)),
        bool(canceled),
        float(created),
        float(updated),
    )


def _file(row: tuple[Any, ...]) -> InferenceFileRecord:
    found = tuple((str(t), int(s), int(e), float(c)) for t, s, e, c in json.loads(row[-1]))
    return replace(InferenceFileRecord(*row[:-1]), detections=found)


def _file_values(record: InferenceFileRecord) -> tuple[Any, ...]:
    return (
        record.file_id,
        record.job_id,
        record.team,
        record.filename,
        record.content_type,
        record.declared_size_bytes,
        record.blob_key,
        record.source,
        record.status,
        record.created_at_s,
        record.updated_at_s,
        record.error,
        record.duration_ms,
        record.processing_ms,
        record.size_bytes,
        record.attempts,
        json.dumps([list(item) for item in record.detections], separators=(",", ":")),
    )


def _insert_file(store: Store, record: InferenceFileRecord) -> None:
    marks = ", ".join("?" * len(_FILE_NAMES))
    store.execute(
        f"INSERT INTO inference_files({_FILE_COLUMNS}) VALUES ({marks})", _file_values(record)
    )


def _one_job(store: Store, team: str, job_id: str) -> InferenceJobRecord | None:
    row = store.execute(
        f"SELECT {_JOB_COLUMNS} FROM inference_jobs WHERE team = ? AND job_id = ?",
        (team, job_id),
    ).fetchone()
    return None if row is None else _job(row)


def _update_file(
    store: Store, file_id: str, expected: tuple[FileStatus, ...], new: InferenceFileRecord
) -> bool:
    assignments = ", ".join(f"{column} = ?" for column in _FILE_NAMES[1:])
    marks = ", ".join("?" * len(expected))
    cursor = store.execute(
        f"UPDATE inference_files SET {assignments} WHERE file_id = ? AND status IN ({marks})",
        (*_file_values(new)[1:], file_id, *expected),
    )
    return cursor.rowcount > 0


class SqliteInferenceRepository:
    """``InferenceRepository`` in the server's SQLite database."""

    def __init__(self, store: StoreThread) -> None:
        self._store = store

    async def prepare(self) -> None:
        def create(store: Store) -> None:
            store.execute(_JOBS)
            store.execute(_FILES)
            for index in _INDEXES:
                store.execute(index)

        await self._store.write(create)

    async def create_job(
        self, job: InferenceJobRecord, files: tuple[InferenceFileRecord, ...]
    ) -> None:
        def write(store: Store) -> None:
            store.execute(
                f"INSERT INTO inference_jobs({_JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.job_id,
                    job.team,
                    job.model_id,
                    json.dumps(job.overrides),
                    json.dumps([list(rule) for rule in job.rules]),
                    int(job.canceled),
                    job.created_at_s,
                    job.updated_at_s,
                ),
            )
            for record in files:
                _insert_file(store, record)

        await self._store.write(write)

    async def get_job(self, team: str, job_id: str) -> InferenceJobRecord | None:
        return await self._store.read(lambda store: _one_job(store, team, job_id))

    async def page_jobs(
        self, team: str, limit: int, offset: int
    ) -> tuple[list[InferenceJobRecord], int]:
        def read(store: Store) -> tuple[list[InferenceJobRecord], int]:
            rows = store.execute(
                f"SELECT {_JOB_COLUMNS} FROM inference_jobs WHERE team = ? "
                "ORDER BY created_at DESC, job_id DESC LIMIT ? OFFSET ?",
                (team, limit, offset),
            ).fetchall()
            (total,) = store.execute(
                "SELECT COUNT(*) FROM inference_jobs WHERE team = ?", (team,)
            ).fetchone()
            return [_job(row) for row in rows], int(total)

        return await self._store.read(read)

    async def files_of(self, job_ids: list[str]) -> dict[str, list[InferenceFileRecord]]:
        unique = sorted(set(job_ids))

        def read(store: Store) -> dict[str, list[InferenceFileRecord]]:
            found: dict[str, list[InferenceFileRecord]] = {job_id: [] for job_id in unique}
            for start in range(0, len(unique), 500):  # SQLite's bound-parameter limit
                part = unique[start : start + 500]
                marks = ", ".join("?" * len(part))
                rows = store.execute(
                    f"SELECT {_FILE_COLUMNS} FROM inference_files WHERE job_id IN ({marks}) "
                    "ORDER BY created_at, file_id",
                    part,
                ).fetchall()
                for row in rows:
                    found[row[1]].append(_file(row))
            return found

        return await self._store.read(read)

    async def add_file(self, file: InferenceFileRecord, max_files: int) -> AddOutcome:
        def write(store: Store) -> AddOutcome:
            job = _one_job(store, file.team, file.job_id)
            if job is None:
                return "gone"
            if job.canceled:
                return "canceled"
            (count,) = store.execute(
                "SELECT COUNT(*) FROM inference_files WHERE job_id = ?", (file.job_id,)
            ).fetchone()
            if count >= max_files:
                return "full"
            _insert_file(store, file)
            return "added"

        return await self._store.write(write)

    async def get_file(self, team: str, job_id: str, file_id: str) -> InferenceFileRecord | None:
        def read(store: Store) -> InferenceFileRecord | None:
            row = store.execute(
                f"SELECT {_FILE_COLUMNS} FROM inference_files "
                "WHERE team = ? AND job_id = ? AND file_id = ?",
                (team, job_id, file_id),
            ).fetchone()
            return None if row is None else _file(row)

        return await self._store.read(read)

    async def transition(
        self, file_id: str, expected: tuple[FileStatus, ...], new: InferenceFileRecord
    ) -> bool:
        if new.file_id != file_id:
            raise ValueError("a transition keeps the file's id")
        return await self._store.write(lambda store: _update_file(store, file_id, expected, new))

    async def claim(self, now_s: float) -> InferenceFileRecord | None:
        def write(store: Store) -> InferenceFileRecord | None:
            row = store.execute(
                f"SELECT {', '.join('f.' + name for name in _FILE_NAMES)} "
                "FROM inference_files f JOIN inference_jobs j ON j.job_id = f.job_id "
                "WHERE f.status = 'pending' AND j.canceled = 0 ORDER BY f.updated_at LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            record = _file(row)
            claimed = with_status(record, "processing", now_s, attempts=record.attempts + 1)
            return claimed if _update_file(store, record.file_id, ("pending",), claimed) else None

        return await self._store.write(write)

    async def with_status(
        self, statuses: tuple[FileStatus, ...], limit: int
    ) -> list[InferenceFileRecord]:
        marks = ", ".join("?" * len(statuses))

        def read(store: Store) -> list[InferenceFileRecord]:
            rows = store.execute(
                f"SELECT {_FILE_COLUMNS} FROM inference_files WHERE status IN ({marks}) "
                "ORDER BY updated_at LIMIT ?",
                (*statuses, limit),
            ).fetchall()
            return [_file(row) for row in rows]

        return await self._store.read(read)

    async def cancel(self, team: str, job_id: str, now_s: float) -> bool:
        def write(store: Store) -> bool:
            cursor = store.execute(
                "UPDATE inference_jobs SET canceled = 1, updated_at = ? "
                "WHERE team = ? AND job_id = ?",
                (now_s, team, job_id),
            )
            if cursor.rowcount == 0:
                return False
            store.execute(
                "UPDATE inference_files SET status = 'failed', error = ?, updated_at = ? "
                "WHERE job_id = ? AND status IN ('uploading', 'pending')",
                (CANCELED_ERROR, now_s, job_id),
            )
            return True

        return await self._store.write(write)

    async def delete_job(self, team: str, job_id: str) -> list[InferenceFileRecord] | None:
        def write(store: Store) -> list[InferenceFileRecord] | None:
            if _one_job(store, team, job_id) is None:
                return None
            rows = store.execute(
                f"SELECT {_FILE_COLUMNS} FROM inference_files WHERE job_id = ?", (job_id,)
            ).fetchall()
            store.execute("DELETE FROM inference_files WHERE job_id = ?", (job_id,))
            store.execute("DELETE FROM inference_jobs WHERE job_id = ?", (job_id,))
            return [_file(row) for row in rows]

        return await self._store.write(write)


def with_status(
    record: InferenceFileRecord, status: FileStatus, now_s: float, **changes: Any
) -> InferenceFileRecord:
    """``record`` moved to ``status`` at ``now_s``, with other fields changed as given."""
    return replace(record, status=status, updated_at_s=now_s, **changes)
