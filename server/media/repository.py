"""Media metadata behind a repository: who uploaded what, its size and digest, when it expires.

``MediaRepository`` is what callers hold; ``SqliteMediaRepository`` keeps the rows in the
server's SQLite database, through the store thread (group commit, one writer). A PostgreSQL
implementation would keep the same contract: ``save`` is a conditional upsert keyed by (team,
object key), ``mark_deleting`` and ``finish_deleting`` conditional updates, so two processes
sweeping at once remove each row once. Expiry lives in the rows, so the sweeper picks up where it
left off after a restart.

Removing an expired object is three steps, so that a new upload of the same key racing the
sweeper is never acknowledged and then lost: the sweeper marks the row (``deleting_since``),
deletes the bytes, then deletes the row. ``save`` does not replace a marked row, so a new upload
waits until the sweeper is done and only then looks at its bytes: present, it is acknowledged;
removed by the sweeper, it is refused (503, upload again). A mark older than ``stale_s`` is a
sweeper that died; ``save`` and the next sweep may take the row over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from server.store import Store, StoreThread

__all__ = ["MediaRecord", "MediaRepository", "SqliteMediaRepository"]


@dataclass(frozen=True)
class MediaRecord:
    team: str
    object_key: str
    size_bytes: int
    sha256: str
    created_at_s: float  # epoch seconds
    expires_at_s: float


class MediaRepository(Protocol):
    async def prepare(self) -> None:
        """Create what the repository needs (tables); idempotent."""
        ...

    async def save(self, record: MediaRecord, *, now_s: float, stale_s: float) -> bool:
        """Insert, or replace the record with the same team and object key unless the sweeper
        is removing it (marked less than ``stale_s`` ago); whether it was saved."""
        ...

    async def mark_deleting(self, record: MediaRecord, *, now_s: float, stale_s: float) -> bool:
        """Mark the row for removal if it is still the one given and nobody else (alive) is
        removing it; whether it was marked."""
        ...

    async def finish_deleting(self, record: MediaRecord) -> bool:
        """Remove the marked row (its bytes are gone); whether it was still there."""
        ...

    async def claim_unrecorded(self, record: MediaRecord, *, now_s: float) -> bool:
        """Insert ``record`` already marked for removal, for bytes that have no row; whether
        it was inserted (not when a row exists: an upload recorded them meanwhile)."""
        ...

    async def get(self, team: str, object_key: str) -> MediaRecord | None: ...

    async def delete(self, team: str, object_key: str) -> bool:
        """Remove the record; whether there was one."""
        ...

    async def expired(self, now_s: float, limit: int) -> list[MediaRecord]:
        """Up to ``limit`` records whose expiry is at or before ``now_s``, oldest expiry first."""
        ...

    async def delete_if_unchanged(self, record: MediaRecord) -> bool:
        """Remove the record only if it is still the one given (not replaced by a newer
        upload meanwhile); whether it was removed."""
        ...


_TABLE = """
CREATE TABLE IF NOT EXISTS media (
    team TEXT NOT NULL,
    object_key TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    deleting_since REAL,
    PRIMARY KEY (team, object_key)
) WITHOUT ROWID
"""
_INDEX = "CREATE INDEX IF NOT EXISTS media_by_expiry ON media(expires_at)"
_COLUMNS = "team, object_key, size_bytes, sha256, created_at, expires_at"


def _record(row: tuple[object, ...]) -> MediaRecord:
    team, key, size, digest, created, expires = row
    return MediaRecord(str(team), str(key), int(size), str(digest), float(created), float(expires))  # type: ignore[call-overload, arg-type]


def _values(record: MediaRecord) -> tuple[object, ...]:
    """The record in ``_COLUMNS`` order."""
    return (
        record.team,
        record.object_key,
        record.size_bytes,
        record.sha256,
        record.created_at_s,
        record.expires_at_s,
    )


class SqliteMediaRepository:
    """``MediaRepository`` in the server's SQLite database."""

    def __init__(self, store: StoreThread) -> None:
        self._store = store

    async def prepare(self) -> None:
        def create(store: Store) -> None:
            store.execute(_TABLE)
            store.execute(_INDEX)
            columns = {row[1] for row in store.execute("PRAGMA table_info(media)").fetchall()}
            if "deleting_since" not in columns:  # a database from before the mark
                store.execute("ALTER TABLE media ADD COLUMN deleting_since REAL")

        await self._store.write(create)

    async def save(self, record: MediaRecord, *, now_s: float, stale_s: float) -> bool:
        values = (*_values(record), now_s - stale_s)

        def write(store: Store) -> bool:
            cursor = store.execute(
                f"INSERT INTO media({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(team, object_key) DO UPDATE SET size_bytes = excluded.size_bytes, "
                "sha256 = excluded.sha256, created_at = excluded.created_at, "
                "expires_at = excluded.expires_at, deleting_since = NULL "
                "WHERE deleting_since IS NULL OR deleting_since < ?",
                values,
            )
            return cursor.rowcount > 0

        return await self._store.write(write)

    async def mark_deleting(self, record: MediaRecord, *, now_s: float, stale_s: float) -> bool:
        def write(store: Store) -> bool:
            cursor = store.execute(
                "UPDATE media SET deleting_since = ? WHERE team = ? AND object_key = ? "
                "AND created_at = ? AND sha256 = ? "
                "AND (deleting_since IS NULL OR deleting_since < ?)",
                (
                    now_s,
                    record.team,
                    record.object_key,
                    record.created_at_s,
                    record.sha256,
                    now_s - stale_s,
                ),
            )
            return cursor.rowcount > 0

        return await self._store.write(write)

    async def claim_unrecorded(self, record: MediaRecord, *, now_s: float) -> bool:
        values = (*_values(record), now_s)

        def write(store: Store) -> bool:
            cursor = store.execute(
                f"INSERT INTO media({_COLUMNS}, deleting_since) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(team, object_key) DO NOTHING",
                values,
            )
            return cursor.rowcount > 0

        return await self._store.write(write)

    async def finish_deleting(self, record: MediaRecord) -> bool:
        return await self._delete_exactly(record, "AND deleting_since IS NOT NULL")

    async def get(self, team: str, object_key: str) -> MediaRecord | None:
        def read(store: Store) -> MediaRecord | None:
            row = store.execute(
                f"SELECT {_COLUMNS} FROM media WHERE team = ? AND object_key = ?",
                (team, object_key),
            ).fetchone()
            return None if row is None else _record(row)

        return await self._store.read(read)

    async def delete(self, team: str, object_key: str) -> bool:
        def remove(store: Store) -> bool:
            cursor = store.execute(
                "DELETE FROM media WHERE team = ? AND object_key = ?", (team, object_key)
            )
            return cursor.rowcount > 0

        return await self._store.write(remove)

    async def expired(self, now_s: float, limit: int) -> list[MediaRecord]:
        def read(store: Store) -> list[MediaRecord]:
            rows = store.execute(
                f"SELECT {_COLUMNS} FROM media WHERE expires_at <= ? ORDER BY expires_at LIMIT ?",
                (now_s, limit),
            ).fetchall()
            return [_record(row) for row in rows]

        return await self._store.read(read)

    async def delete_if_unchanged(self, record: MediaRecord) -> bool:
        return await self._delete_exactly(record, "")

    async def _delete_exactly(self, record: MediaRecord, condition: str) -> bool:
        """Delete the row if it is still ``record`` (same upload), under ``condition`` too."""

        def remove(store: Store) -> bool:
            cursor = store.execute(
                "DELETE FROM media WHERE team = ? AND object_key = ? AND created_at = ? "
                f"AND sha256 = ? {condition}",
                (record.team, record.object_key, record.created_at_s, record.sha256),
            )
            return cursor.rowcount > 0

        return await self._store.write(remove)
