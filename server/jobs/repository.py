"""Jobs behind a repository: one row per job, its status machine, its lease and its output.

``JobRepository`` is what callers hold; ``SqliteJobRepository`` keeps the rows in the server's
SQLite database through the store thread. Every transition is one conditional UPDATE whose
changed-row count says whether it happened, so two workers (or two processes) never both claim
a job, and a worker whose lease was taken over (or whose job was canceled) cannot finish it:
SQLite has no ``SELECT ... FOR UPDATE SKIP LOCKED``, and with one writer the conditional UPDATE
is the claim. A PostgreSQL implementation would keep the contract with ``SKIP LOCKED``.

The output is JSON in the row, written in the same UPDATE as the terminal status: a job is never
seen succeeded without its output, nor its output reported twice. Its size is bounded by the
longest media the decode limits accept (about 1 MB per hour of audio).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from protocol.jobs import CANCELED, CREATED, FAILED, PENDING, RUNNING, SUCCEEDED
from server.store import Store, StoreThread

__all__ = ["JobRecord", "JobRepository", "Kinds", "SqliteJobRepository"]

# Which kinds of job a call is about (None: every kind). The jobs of every API share the table;
# each API reads, lists and claims only its own kinds.
Kinds = tuple[str, ...] | None


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    team: str
    kind: str
    input: dict[str, Any]
    status: str
    progress: float
    created_at_s: float
    updated_at_s: float
    started_at_s: float | None = None
    finished_at_s: float | None = None
    lease_owner: str | None = None
    lease_expires_at_s: float | None = None
    attempts: int = 0
    output: dict[str, Any] | None = None
    output_expires_at_s: float | None = None
    error: str | None = None
    webhook_pending: bool = False


class JobRepository(Protocol):
    async def prepare(self) -> None:
        """Create the tables; idempotent."""
        ...

    async def create(self, record: JobRecord, *, max_unfinished: int | None = None) -> bool:
        """Insert the job; with ``max_unfinished``, only while the team has fewer unfinished
        (created, pending, running) jobs, checked in the same statement. Whether it was
        inserted."""
        ...

    async def get(self, team: str, job_id: str, kinds: Kinds = None) -> JobRecord | None:
        """The team's job (of one of ``kinds``, if given)."""
        ...

    async def page(self, team: str, take: int, skip: int, kinds: Kinds = None) -> list[JobRecord]:
        """The team's jobs (of ``kinds``, if given), newest first."""
        ...

    async def count(self, team: str, kinds: Kinds = None) -> int:
        """How many jobs ``page`` pages through."""
        ...

    async def claim(
        self, owner: str, now_s: float, lease_s: float, kinds: Kinds = None
    ) -> JobRecord | None:
        """The oldest pending job (of ``kinds``, if given: a runner takes only the kinds it
        runs), now running under ``owner``'s lease (attempts + 1)."""
        ...

    async def renew(
        self, job_id: str, owner: str, now_s: float, lease_s: float, progress: float
    ) -> bool:
        """Extend the lease and record progress; False when the job is no longer this owner's
        running job (canceled, or its lease expired and another worker took it)."""
        ...

    async def finish(
        self,
        job_id: str,
        owner: str,
        now_s: float,
        status: str,
        output: dict[str, Any] | None,
        error: str | None,
        output_expires_at_s: float | None,
    ) -> bool:
        """The terminal status and the output in one UPDATE, only if still this owner's."""
        ...

    async def cancel(
        self, team: str, job_id: str, now_s: float, kinds: Kinds = None
    ) -> JobRecord | None:
        """Cancel an unfinished job (of ``kinds``, if given); the job as it is afterwards
        (None: no such job)."""
        ...

    async def requeue_expired(self, now_s: float) -> int:
        """Running jobs whose lease expired (their worker died) go back to pending."""
        ...

    async def release(self, owner: str, now_s: float) -> int:
        """The owner's running jobs back to pending, the attempt not counted (a shutdown)."""
        ...

    async def expire_outputs(self, now_s: float) -> int:
        """Drop outputs past their expiry; how many."""
        ...

    async def webhooks_due(self, limit: int) -> list[JobRecord]:
        """Finished jobs whose webhook is not delivered yet (nor given up)."""
        ...

    async def webhook_done(self, job_id: str) -> None: ...


_TABLE = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    team TEXT NOT NULL,
    kind TEXT NOT NULL,
    input TEXT NOT NULL,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    lease_owner TEXT,
    lease_expires_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    output TEXT,
    output_expires_at REAL,
    error TEXT,
    webhook_pending INTEGER NOT NULL DEFAULT 0
)
"""
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS jobs_by_team ON jobs(team, created_at)",
    "CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs(status, created_at)",
    "CREATE INDEX IF NOT EXISTS jobs_by_output_expiry ON jobs(output_expires_at)",
)
_COLUMNS = (
    "job_id, team, kind, input, status, progress, created_at, updated_at, started_at, "
    "finished_at, lease_owner, lease_expires_at, attempts, output, output_expires_at, error, "
    "webhook_pending"
)
_UNFINISHED = (CREATED, PENDING, RUNNING)


def _record(row: tuple[Any, ...]) -> JobRecord:
    (job_id, team, kind, raw_input, status, progress, created, updated, started, finished,
     owner, lease, attempts, output, output_expires, error, webhook) = row  # fmt: skip
    return JobRecord(
        job_id,
        team,
        kind,
        json.loads(raw_input),
        status,
        float(progress),
        float(created),
        float(updated),
        started,
        finished,
        owner,
        lease,
        int(attempts),
        None if output is None else json.loads(output),
        output_expires,
        error,
        bool(webhook),
    )


def _of_kinds(kinds: Kinds) -> tuple[str, tuple[str, ...]]:
    """A ``WHERE`` term (after ``AND``) and its parameters that keep ``kinds``."""
    if kinds is None:
        return "1", ()
    return f"kind IN ({', '.join('?' * len(kinds))})", tuple(kinds)


def _mine(record: JobRecord | None, team: str, kinds: Kinds) -> JobRecord | None:
    if record is None or record.team != team:
        return None
    return record if kinds is None or record.kind in kinds else None


def _one(store: Store, job_id: str) -> JobRecord | None:
    row = store.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    return None if row is None else _record(row)


class SqliteJobRepository:
    """``JobRepository`` in the server's SQLite database."""

    def __init__(self, store: StoreThread) -> None:
        self._store = store

    async def prepare(self) -> None:
        def create(store: Store) -> None:
            store.execute(_TABLE)
            for index in _INDEXES:
                store.execute(index)

        await self._store.write(create)

    async def create(self, record: JobRecord, *, max_unfinished: int | None = None) -> bool:
        values = (
            record.job_id,
            record.team,
            record.kind,
            json.dumps(record.input),
            record.status,
            record.progress,
            record.created_at_s,
            record.updated_at_s,
            record.started_at_s,
            record.finished_at_s,
            record.lease_owner,
            record.lease_expires_at_s,
            record.attempts,
            None if record.output is None else json.dumps(record.output),
            record.output_expires_at_s,
            record.error,
            int(record.webhook_pending),
        )
        placeholders = ", ".join("?" * len(values))
        limit = 2**62 if max_unfinished is None else max_unfinished

        def write(store: Store) -> bool:
            cursor = store.execute(
                f"INSERT INTO jobs({_COLUMNS}) SELECT {placeholders} WHERE (SELECT COUNT(*) "
                "FROM jobs WHERE team = ? AND kind = ? AND status IN (?, ?, ?)) < ?",
                (*values, record.team, record.kind, CREATED, PENDING, RUNNING, limit),
            )
            return cursor.rowcount > 0

        return await self._store.write(write)

    async def get(self, team: str, job_id: str, kinds: Kinds = None) -> JobRecord | None:
        return await self._store.read(lambda store: _mine(_one(store, job_id), team, kinds))

    async def page(self, team: str, take: int, skip: int, kinds: Kinds = None) -> list[JobRecord]:
        of_kinds, params = _of_kinds(kinds)

        def read(store: Store) -> list[JobRecord]:
            rows = store.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE team = ? AND {of_kinds} "
                "ORDER BY created_at DESC, job_id DESC LIMIT ? OFFSET ?",
                (team, *params, take, skip),
            ).fetchall()
            return [_record(row) for row in rows]

        return await self._store.read(read)

    async def count(self, team: str, kinds: Kinds = None) -> int:
        of_kinds, params = _of_kinds(kinds)

        def read(store: Store) -> int:
            sql = f"SELECT COUNT(*) FROM jobs WHERE team = ? AND {of_kinds}"
            return int(store.execute(sql, (team, *params)).fetchone()[0])

        return await self._store.read(read)

    async def claim(
        self, owner: str, now_s: float, lease_s: float, kinds: Kinds = None
    ) -> JobRecord | None:
        of_kinds, params = _of_kinds(kinds)

        def claim(store: Store) -> JobRecord | None:
            while True:
                row = store.execute(
                    f"SELECT job_id FROM jobs WHERE status = ? AND {of_kinds} "
                    "ORDER BY created_at, job_id LIMIT 1",
                    (PENDING, *params),
                ).fetchone()
                if row is None:
                    return None
                cursor = store.execute(
                    "UPDATE jobs SET status = ?, lease_owner = ?, lease_expires_at = ?, "
                    "attempts = attempts + 1, started_at = COALESCE(started_at, ?), updated_at = ? "
                    "WHERE job_id = ? AND status = ?",
                    (RUNNING, owner, now_s + lease_s, now_s, now_s, row[0], PENDING),
                )
                if cursor.rowcount == 1:
                    return _one(store, row[0])

        return await self._store.write(claim)

    async def renew(
        self, job_id: str, owner: str, now_s: float, lease_s: float, progress: float
    ) -> bool:
        def renew(store: Store) -> bool:
            cursor = store.execute(
                "UPDATE jobs SET lease_expires_at = ?, progress = ?, updated_at = ? "
                "WHERE job_id = ? AND status = ? AND lease_owner = ?",
                (now_s + lease_s, progress, now_s, job_id, RUNNING, owner),
            )
            return cursor.rowcount == 1

        return await self._store.write(renew)

    async def finish(
        self,
        job_id: str,
        owner: str,
        now_s: float,
        status: str,
        output: dict[str, Any] | None,
        error: str | None,
        output_expires_at_s: float | None,
    ) -> bool:
        assert status in (SUCCEEDED, FAILED)
        encoded = None if output is None else json.dumps(output, separators=(",", ":"))

        def finish(store: Store) -> bool:
            cursor = store.execute(
                "UPDATE jobs SET status = ?, output = ?, error = ?, output_expires_at = ?, "
                "progress = CASE WHEN ? = 'succeeded' THEN 100 ELSE progress END, "
                "finished_at = ?, updated_at = ?, lease_owner = NULL, lease_expires_at = NULL, "
                "webhook_pending = json_extract(input, '$.webhook') IS NOT NULL "
                "WHERE job_id = ? AND status = ? AND lease_owner = ?",
                (status, encoded, error, output_expires_at_s, status, now_s, now_s, job_id,
                 RUNNING, owner),
            )  # fmt: skip
            return cursor.rowcount == 1

        return await self._store.write(finish)

    async def cancel(
        self, team: str, job_id: str, now_s: float, kinds: Kinds = None
    ) -> JobRecord | None:
        of_kinds, params = _of_kinds(kinds)

        def cancel(store: Store) -> JobRecord | None:
            store.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, updated_at = ?, lease_owner = NULL, "
                "lease_expires_at = NULL, "
                "webhook_pending = json_extract(input, '$.webhook') IS NOT NULL "
                f"WHERE job_id = ? AND team = ? AND status IN (?, ?, ?) AND {of_kinds}",
                (CANCELED, now_s, now_s, job_id, team, *_UNFINISHED, *params),
            )
            return _mine(_one(store, job_id), team, kinds)

        return await self._store.write(cancel)

    async def requeue_expired(self, now_s: float) -> int:
        def requeue(store: Store) -> int:
            cursor = store.execute(
                "UPDATE jobs SET status = ?, lease_owner = NULL, lease_expires_at = NULL, "
                "updated_at = ? WHERE status = ? AND lease_expires_at <= ?",
                (PENDING, now_s, RUNNING, now_s),
            )
            return cursor.rowcount

        return await self._store.write(requeue)

    async def release(self, owner: str, now_s: float) -> int:
        def release(store: Store) -> int:
            cursor = store.execute(
                "UPDATE jobs SET status = ?, lease_owner = NULL, lease_expires_at = NULL, "
                "attempts = MAX(0, attempts - 1), updated_at = ? "
                "WHERE status = ? AND lease_owner = ?",
                (PENDING, now_s, RUNNING, owner),
            )
            return cursor.rowcount

        return await self._store.write(release)

    async def expire_outputs(self, now_s: float) -> int:
        def expire(store: Store) -> int:
            cursor = store.execute(
                "UPDATE jobs SET output = NULL WHERE output IS NOT NULL AND output_expires_at <= ?",
                (now_s,),
            )
            return cursor.rowcount

        return await self._store.write(expire)

    async def webhooks_due(self, limit: int) -> list[JobRecord]:
        def read(store: Store) -> list[JobRecord]:
            rows = store.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE webhook_pending = 1 "
                "ORDER BY finished_at LIMIT ?",
                (limit,),
            ).fetchall()
            return [_record(row) for row in rows]

        return await self._store.read(read)

    async def webhook_done(self, job_id: str) -> None:
        await self._store.write(
            lambda store: store.execute(
                "UPDATE jobs SET webhook_pending = 0 WHERE job_id = ?", (job_id,)
            )
        )
