"""``AnnotationRepository`` in the server's SQLite database, through the store thread.

Each method's write runs as one function on the store thread, which makes it one transaction (a
savepoint of a group commit): a bulk insert of 10,000 annotations lands whole or not at all.
Changes check the set's status inside that transaction and publication is ``UPDATE ... WHERE
status = 'draft'``; PostgreSQL would take ``SELECT ... FOR UPDATE`` on the set's row instead.
A set's files live in ``annotation_set_files``: those given at creation, or those recorded at
publication (the ready files the service passes, plus every file an annotation refers to).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from protocol.annotations import DRAFT, PUBLISHED, content_hash
from server.datasets.annotations import AnnotationRecord, AnnotationSetRecord, Outcome
from server.store import Store, StoreThread

__all__ = ["SqliteAnnotationRepository"]

_TABLES = (
    """CREATE TABLE IF NOT EXISTS annotation_sets (
        set_id TEXT PRIMARY KEY,
        team TEXT NOT NULL,
        dataset_id TEXT NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        files_fixed INTEGER NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        published_at REAL,
        content_hash TEXT,
        artifact_types TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS annotation_sets_by_dataset "
    "ON annotation_sets(team, dataset_id, created_at)",
    """CREATE TABLE IF NOT EXISTS annotation_set_files (
        set_id TEXT NOT NULL,
        audio_file_id TEXT NOT NULL,
        PRIMARY KEY (set_id, audio_file_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS annotations (
        annotation_id TEXT PRIMARY KEY,
        set_id TEXT NOT NULL,
        audio_file_id TEXT NOT NULL,
        artifact_type TEXT NOT NULL,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL,
        confidence REAL NOT NULL,
        created_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS annotations_by_set "
    "ON annotations(set_id, audio_file_id, start_ms, end_ms)",
    "CREATE INDEX IF NOT EXISTS annotations_by_type ON annotations(set_id, artifact_type)",
)
_SET_COLUMNS = (
    "s.set_id, s.team, s.dataset_id, s.name, s.status, s.files_fixed, s.created_at, "
    "s.updated_at, s.published_at, s.content_hash, s.artifact_types, "
    "(SELECT COUNT(*) FROM annotations a WHERE a.set_id = s.set_id), "
    "CASE WHEN s.files_fixed = 1 OR s.status = 'published' "
    "THEN (SELECT COUNT(*) FROM annotation_set_files f WHERE f.set_id = s.set_id) "
    "ELSE (SELECT COUNT(DISTINCT a.audio_file_id) FROM annotations a WHERE a.set_id = s.set_id) "
    "END"
)
_ANNOTATION_COLUMNS = (
    "annotation_id, set_id, audio_file_id, artifact_type, start_ms, end_ms, confidence, created_at"
)
_ROWS_PER_INSERT = 100  # 800 bound parameters: within every SQLite's limit
_SCOPE = "team = ? AND dataset_id = ? AND set_id = ?"


def _set(row: tuple[Any, ...]) -> AnnotationSetRecord:
    (
        set_id,
        team,
        dataset_id,
        name,
        status,
        fixed,
        created,
        updated,
        published,
        digest,
        types,
        annotations,
        files,
    ) = row
    return AnnotationSetRecord(
        set_id,
        team,
        dataset_id,
        name,
        status,
        bool(fixed),
        created,
        updated,
        published,
        digest,
        None if types is None else tuple(json.loads(types)),
        int(annotations),
        int(files),
    )


def _annotation(row: tuple[Any, ...]) -> AnnotationRecord:
    return AnnotationRecord(*row)


def _values(record: AnnotationRecord) -> tuple[Any, ...]:
    return (
        record.annotation_id,
        record.set_id,
        record.audio_file_id,
        record.artifact_type,
        record.start_ms,
        record.end_ms,
        record.confidence,
        record.created_at_s,
    )


def _draft(store: Store, team: str, dataset_id: str, set_id: str) -> Outcome:
    """Whether the set may change, read in the calling write's transaction."""
    row = store.execute(
        f"SELECT status FROM annotation_sets WHERE {_SCOPE}", (team, dataset_id, set_id)
    ).fetchone()
    if row is None:
        return "missing"
    return "done" if row[0] == DRAFT else "published"


def _touch(store: Store, set_id: str, now_s: float) -> None:
    store.execute("UPDATE annotation_sets SET updated_at = ? WHERE set_id = ?", (now_s, set_id))


def _insert_files(store: Store, set_id: str, audio_file_ids: Sequence[str]) -> None:
    ids = list(audio_file_ids)
    for start in range(0, len(ids), _ROWS_PER_INSERT):
        part = ids[start : start + _ROWS_PER_INSERT]
        store.execute(
            "INSERT OR IGNORE INTO annotation_set_files(set_id, audio_file_id) VALUES "
            + ", ".join("(?, ?)" for _ in part),
            [value for audio_id in part for value in (set_id, audio_id)],
        )


def _delete_sets(store: Store, where: str, params: tuple[Any, ...]) -> int:
    ids = [
        row[0] for row in store.execute(f"SELECT set_id FROM annotation_sets WHERE {where}", params)
    ]
    for set_id in ids:
        store.execute("DELETE FROM annotations WHERE set_id = ?", (set_id,))
        store.execute("DELETE FROM annotation_set_files WHERE set_id = ?", (set_id,))
        store.execute("DELETE FROM annotation_sets WHERE set_id = ?", (set_id,))
    return len(ids)


class SqliteAnnotationRepository:
    def __init__(self, store: StoreThread) -> None:
        self._store = store

    async def prepare(self) -> None:
        def create(store: Store) -> None:
            for statement in _TABLES:
                store.execute(statement)

        await self._store.write(create)

    async def create_set(
        self, record: AnnotationSetRecord, audio_file_ids: Sequence[str] | None
    ) -> None:
        def write(store: Store) -> None:
            store.execute(
                "INSERT INTO annotation_sets(set_id, team, dataset_id, name, status, files_fixed, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.set_id,
                    record.team,
                    record.dataset_id,
                    record.name,
                    record.status,
                    int(audio_file_ids is not None),
                    record.created_at_s,
                    record.updated_at_s,
                ),
            )
            _insert_files(store, record.set_id, audio_file_ids or ())

        await self._store.write(write)

    async def get_set(self, team: str, dataset_id: str, set_id: str) -> AnnotationSetRecord | None:
        def read(store: Store) -> AnnotationSetRecord | None:
            row = store.execute(
                f"SELECT {_SET_COLUMNS} FROM annotation_sets s WHERE s.{_SCOPE}",
                (team, dataset_id, set_id),
            ).fetchone()
            return None if row is None else _set(row)

        return await self._store.read(read)

    async def page_sets(
        self, team: str, dataset_id: str, limit: int, offset: int
    ) -> tuple[list[AnnotationSetRecord], int]:
        def read(store: Store) -> tuple[list[AnnotationSetRecord], int]:
            rows = store.execute(
                f"SELECT {_SET_COLUMNS} FROM annotation_sets s WHERE s.team = ? AND "
                "s.dataset_id = ? ORDER BY s.created_at DESC, s.set_id LIMIT ? OFFSET ?",
                (team, dataset_id, limit, offset),
            ).fetchall()
            (total,) = store.execute(
                "SELECT COUNT(*) FROM annotation_sets WHERE team = ? AND dataset_id = ?",
                (team, dataset_id),
            ).fetchone()
            return [_set(row) for row in rows], int(total)

        return await self._store.read(read)

    async def set_files(self, set_id: str) -> set[str]:
        def read(store: Store) -> set[str]:
            rows = store.execute(
                "SELECT audio_file_id FROM annotation_set_files WHERE set_id = ?", (set_id,)
            )
            return {row[0] for row in rows}

        return await self._store.read(read)

    async def rename_set(
        self, team: str, dataset_id: str, set_id: str, name: str, now_s: float
    ) -> Outcome:
        def write(store: Store) -> Outcome:
            cursor = store.execute(
                f"UPDATE annotation_sets SET name = ?, updated_at = ? WHERE {_SCOPE} "
                "AND status = ?",
                (name, now_s, team, dataset_id, set_id, DRAFT),
            )
            return "done" if cursor.rowcount else _draft(store, team, dataset_id, set_id)

        return await self._store.write(write)

    async def delete_set(self, team: str, dataset_id: str, set_id: str) -> Outcome:
        def write(store: Store) -> Outcome:
            outcome = _draft(store, team, dataset_id, set_id)
            if outcome == "done":
                _delete_sets(store, _SCOPE, (team, dataset_id, set_id))
            return outcome

        return await self._store.write(write)

    async def add(
        self, team: str, dataset_id: str, set_id: str, annotations: Sequence[AnnotationRecord]
    ) -> Outcome:
        rows = [_values(record) for record in annotations]

        def write(store: Store) -> Outcome:
            outcome = _draft(store, team, dataset_id, set_id)
            if outcome != "done":
                return outcome
            for start in range(0, len(rows), _ROWS_PER_INSERT):
                part = rows[start : start + _ROWS_PER_INSERT]
                store.execute(
                    f"INSERT INTO annotations({_ANNOTATION_COLUMNS}) VALUES "
                    + ", ".join("(?, ?, ?, ?, ?, ?, ?, ?)" for _ in part),
                    [value for row in part for value in row],
                )
            if rows:
                _touch(store, set_id, max(row[-1] for row in rows))
            return "done"

        return await self._store.write(write)

    async def get(
        self, team: str, dataset_id: str, set_id: str, annotation_id: str
    ) -> AnnotationRecord | None:
        def read(store: Store) -> AnnotationRecord | None:
            row = store.execute(
                f"SELECT {_ANNOTATION_COLUMNS} FROM annotations WHERE annotation_id = ? AND "
                f"set_id = (SELECT set_id FROM annotation_sets WHERE {_SCOPE})",
                (annotation_id, team, dataset_id, set_id),
            ).fetchone()
            return None if row is None else _annotation(row)

        return await self._store.read(read)

    async def page(
        self,
        team: str,
        dataset_id: str,
        set_id: str,
        limit: int,
        offset: int,
        audio_file_id: str | None = None,
        artifact_type: str | None = None,
    ) -> tuple[list[AnnotationRecord], int]:
        where = f"set_id = (SELECT set_id FROM annotation_sets WHERE {_SCOPE})"
        params: list[Any] = [team, dataset_id, set_id]
        if audio_file_id is not None:
            where += " AND audio_file_id = ?"
            params.append(audio_file_id)
        if artifact_type is not None:
            where += " AND artifact_type = ?"
            params.append(artifact_type)

        def read(store: Store) -> tuple[list[AnnotationRecord], int]:
            rows = store.execute(
                f"SELECT {_ANNOTATION_COLUMNS} FROM annotations WHERE {where} "
                "ORDER BY audio_file_id, start_ms, end_ms, annotation_id LIMIT ? OFFSET ?",
                (*params, limit, offset),
            ).fetchall()
            (total,) = store.execute(
                f"SELECT COUNT(*) FROM annotations WHERE {where}", params
            ).fetchone()
            return [_annotation(row) for row in rows], int(total)

        return await self._store.read(read)

    async def replace(
        self, team: str, dataset_id: str, record: AnnotationRecord, now_s: float
    ) -> Outcome:
        def write(store: Store) -> Outcome:
            outcome = _draft(store, team, dataset_id, record.set_id)
            if outcome != "done":
                return outcome
            cursor = store.execute(
                "UPDATE annotations SET artifact_type = ?, start_ms = ?, end_ms = ?, "
                "confidence = ? WHERE annotation_id = ? AND set_id = ?",
                (
                    record.artifact_type,
                    record.start_ms,
                    record.end_ms,
                    record.confidence,
                    record.annotation_id,
                    record.set_id,
                ),
            )
            if not cursor.rowcount:
                return "missing"
            _touch(store, record.set_id, now_s)
            return "done"

        return await self._store.write(write)

    async def delete(
        self, team: str, dataset_id: str, set_id: str, annotation_id: str, now_s: float
    ) -> Outcome:
        def write(store: Store) -> Outcome:
            outcome = _draft(store, team, dataset_id, set_id)
            if outcome != "done":
                return outcome
            cursor = store.execute(
                "DELETE FROM annotations WHERE annotation_id = ? AND set_id = ?",
                (annotation_id, set_id),
            )
            if not cursor.rowcount:
                return "missing"
            _touch(store, set_id, now_s)
            return "done"

        return await self._store.write(write)

    async def publish(
        self,
        team: str,
        dataset_id: str,
        set_id: str,
        ready_file_ids: Sequence[str],
        artifact_types: Sequence[str],
        now_s: float,
    ) -> AnnotationSetRecord | None:
        def write(store: Store) -> bool:
            if _draft(store, team, dataset_id, set_id) != "done":
                return False  # missing, or already published: nothing changes
            (fixed,) = store.execute(
                "SELECT files_fixed FROM annotation_sets WHERE set_id = ?", (set_id,)
            ).fetchone()
            if not fixed:
                annotated = store.execute(
                    "SELECT DISTINCT audio_file_id FROM annotations WHERE set_id = ?", (set_id,)
                )
                _insert_files(store, set_id, [*ready_file_ids, *(row[0] for row in annotated)])
            files = [
                row[0]
                for row in store.execute(
                    "SELECT audio_file_id FROM annotation_set_files WHERE set_id = ?", (set_id,)
                )
            ]
            annotations = store.execute(
                "SELECT audio_file_id, artifact_type, start_ms, end_ms, confidence "
                "FROM annotations WHERE set_id = ?",
                (set_id,),
            ).fetchall()
            digest = content_hash(files, artifact_types, annotations)
            store.execute(
                "UPDATE annotation_sets SET status = ?, content_hash = ?, artifact_types = ?, "
                "published_at = ?, updated_at = ? WHERE set_id = ? AND status = ?",
                (
                    PUBLISHED,
                    digest,
                    json.dumps(sorted(artifact_types)),
                    now_s,
                    now_s,
                    set_id,
                    DRAFT,
                ),
            )
            return True

        await self._store.write(write)
        return await self.get_set(team, dataset_id, set_id)

    async def types_in_use(self, team: str, dataset_id: str) -> set[str]:
        def read(store: Store) -> set[str]:
            rows = store.execute(
                "SELECT DISTINCT a.artifact_type FROM annotations a JOIN annotation_sets s "
                "ON a.set_id = s.set_id WHERE s.team = ? AND s.dataset_id = ?",
                (team, dataset_id),
            )
            return {row[0] for row in rows}

        return await self._store.read(read)

    async def delete_dataset(self, team: str, dataset_id: str) -> int:
        return await self._store.write(
            lambda store: _delete_sets(store, "team = ? AND dataset_id = ?", (team, dataset_id))
        )
