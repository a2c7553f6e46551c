"""Durable state, in one SQLite database (WAL) under the data directory: keys, sessions, chunk
bookkeeping, the chunks' audio bytes and results.

Audio lives in the database rather than in a file per chunk because of what durability costs:
each chunk file needs its own fsync (and its directory another), measured at ~7 ms apiece here,
so hundreds of live streams could not be acknowledged in time; in the database, every chunk of a
group commit is made durable by the one WAL fsync of that commit. ``secure_delete`` zeroes the
pages of deleted audio, so audio that inference has consumed does not linger in free pages.

``Store`` is synchronous and owned by one thread. ``StoreThread`` gives the event loop an async
front over it and does *group commit*: every write queued while the previous transaction was
committing goes into the next single transaction, so hundreds of concurrent streams cost one
fsync per batch instead of one per chunk. Each write runs inside its own SAVEPOINT, so one failing
write fails alone.

Durability contract: a chunk's bytes and bookkeeping commit in one transaction, and a request is
answered only after that commit (fsynced with ``fsync`` on).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import secrets
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "EventLogRow",
    "KeyRecord",
    "ResultRow",
    "SessionRow",
    "Store",
    "StoreError",
    "StoreThread",
    "keys_marker_path",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = 3
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    key_hash BLOB NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    key_id INTEGER NOT NULL REFERENCES keys(id),
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    next_chunk_seq INTEGER NOT NULL DEFAULT 0,
    bytes_received INTEGER NOT NULL DEFAULT 0,
    last_chunk_sha256 BLOB,
    results_count INTEGER NOT NULL DEFAULT 0,
    inference_done INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    last_activity_at REAL NOT NULL,
    event_state TEXT,
    webhook_delivered INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sessions_by_key ON sessions(key_id);
CREATE TABLE IF NOT EXISTS chunks (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    size INTEGER NOT NULL,
    pruned INTEGER NOT NULL DEFAULT 0,
    overlap INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunk_audio (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    UNIQUE (session_id, seq)
);
CREATE TABLE IF NOT EXISTS results (
    session_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    start_time REAL NOT NULL,
    end_time REAL NOT NULL,
    tags TEXT NOT NULL,
    probs BLOB,
    PRIMARY KEY (session_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS event_log (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    kind_seq INTEGER NOT NULL,
    event_id INTEGER NOT NULL,
    tag TEXT NOT NULL,
    start_time REAL NOT NULL,
    end_time REAL NOT NULL,
    confidence REAL NOT NULL,
    windows INTEGER NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS event_log_by_state ON event_log(session_id, state, kind_seq);
"""


def keys_marker_path(db_path: Path) -> Path:
    """A file rewritten whenever a key is revoked: servers stat it (microseconds) on every call
    instead of querying the database, and reload revocations when it changes."""
    return db_path.with_name(db_path.name + ".keys-changed")


class StoreError(RuntimeError):
    """The store could not complete an operation (disk full, I/O error, corrupt database)."""


@dataclass(frozen=True)
class KeyRecord:
    id: int
    name: str
    created_at: float
    revoked_at: float | None


@dataclass(frozen=True)
class SessionRow:
    id: str
    key_id: int
    params: dict[str, Any]
    state: str
    error: str | None
    next_chunk_seq: int
    bytes_received: int
    last_chunk_sha256: bytes | None
    results_count: int
    inference_done: bool
    created_at: float
    last_activity_at: float
    event_state: str | None = None
    webhook_delivered: int = 0


@dataclass(frozen=True)
class ResultRow:
    idx: int
    start_time: float
    end_time: float
    tags: list[tuple[str, float]]


@dataclass(frozen=True)
class EventLogRow:
    seq: int
    state: str
    kind_seq: int
    event_id: int
    tag: str
    start_time: float
    end_time: float
    confidence: float
    windows: int  # how many windows the log had seen when this entry was made


class Store:
    """Synchronous store. Not thread-safe: one thread owns it (``StoreThread``)."""

    def __init__(self, db_path: Path, fsync: bool = True, read_only: bool = False) -> None:
        """``read_only``: a second connection for reads only (see ``StoreThread``); it expects
        the database to exist and never writes (``query_only``)."""
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.read_only = read_only
        self.keys_marker = keys_marker_path(db_path)
        self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        if read_only:
            self._db.execute("PRAGMA query_only=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            return
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL fsyncs the WAL on every commit (survives power loss); NORMAL survives a process
        # crash, which is what SIGKILL tests, at a fraction of the cost.
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA secure_delete=ON")
        # No checkpoints inside commits: one would stall every acknowledgement queued behind it
        # (the tail of live latency). The store thread's checkpointer copies the WAL back in
        # the background, without blocking the writer (PASSIVE).
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        # When the log restarts from its beginning (see StoreThread), cut the file back to this.
        self._db.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT_BYTES}")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._db.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
            (SCHEMA_VERSION,),
        )

    def _migrate(self) -> None:
        """Bring a database written by an older tympan up to ``SCHEMA_VERSION``."""
        chunk_columns = {row[1] for row in self._db.execute("PRAGMA table_info(chunks)")}
        if "overlap" not in chunk_columns:  # version 1: no sliding-window chunks yet
            self._db.execute("ALTER TABLE chunks ADD COLUMN overlap INTEGER NOT NULL DEFAULT 0")
        result_columns = {row[1] for row in self._db.execute("PRAGMA table_info(results)")}
        if "probs" not in result_columns:  # version 2: no probabilities, no event log
            self._db.execute("ALTER TABLE results ADD COLUMN probs BLOB")
        session_columns = {row[1] for row in self._db.execute("PRAGMA table_info(sessions)")}
        if "event_state" not in session_columns:
            self._db.execute("ALTER TABLE sessions ADD COLUMN event_state TEXT")
        if "webhook_delivered" not in session_columns:
            self._db.execute(
                "ALTER TABLE sessions ADD COLUMN webhook_delivered INTEGER NOT NULL DEFAULT 0"
            )

    @property
    def path(self) -> Path:
        return Path(self._db.execute("PRAGMA database_list").fetchone()[2])

    def close(self) -> None:
        if not self.read_only:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()

    # -- transactions ---------------------------------------------------------------------

    def begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def begin_read(self) -> None:
        """A read transaction (deferred: the snapshot is taken at the first read)."""
        self._db.execute("BEGIN")

    def commit(self) -> None:
        self._db.execute("COMMIT")

    def rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")

    def savepoint(self, name: str) -> None:
        self._db.execute(f"SAVEPOINT {name}")

    def release(self, name: str) -> None:
        self._db.execute(f"RELEASE {name}")

    def rollback_to(self, name: str) -> None:
        self._db.execute(f"ROLLBACK TO {name}")
        self._db.execute(f"RELEASE {name}")

    def checkpoint(self) -> tuple[int, int, int]:
        """A PASSIVE checkpoint on this connection: (busy, frames in the log, frames copied)."""
        busy, log_frames, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(busy), int(log_frames), int(copied)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """One statement for a repository module that keeps its own tables in this database
        (``server.media.repository``); it runs on the store thread like every other call."""
        return self._db.execute(sql, params)

    # -- meta -----------------------------------------------------------------------------

    def secret(self, name: str, size: int = 32) -> bytes:
        """A random secret created once and kept (e.g. the next_token signing key)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (name,)).fetchone()
        if row:
            return bytes(row[0])
        value = secrets.token_bytes(size)
        self._db.execute("INSERT INTO meta(key, value) VALUES (?, ?)", (name, value))
        return value

    # -- keys -----------------------------------------------------------------------------

    def add_key(self, name: str, key_hash: bytes) -> KeyRecord:
        now = time.time()
        try:
            cursor = self._db.execute(
                "INSERT INTO keys(name, key_hash, created_at) VALUES (?, ?, ?)",
                (name, key_hash, now),
            )
        except sqlite3.IntegrityError:
            raise StoreError(f"a key named {name!r} already exists") from None
        return KeyRecord(int(cursor.lastrowid or 0), name, now, None)

    def find_key(self, key_hash: bytes) -> tuple[KeyRecord, bytes] | None:
        row = self._db.execute(
            "SELECT id, name, created_at, revoked_at, key_hash FROM keys WHERE key_hash = ?",
            (key_hash,),
        ).fetchone()
        return (KeyRecord(*row[:4]), bytes(row[4])) if row else None

    def key_revoked(self, key_id: int) -> bool:
        row = self._db.execute("SELECT revoked_at FROM keys WHERE id = ?", (key_id,)).fetchone()
        return row is None or row[0] is not None

    def list_keys(self) -> list[KeyRecord]:
        rows = self._db.execute(
            "SELECT id, name, created_at, revoked_at FROM keys ORDER BY id"
        ).fetchall()
        return [KeyRecord(*row) for row in rows]

    def revoke_key(self, name: str) -> bool:
        cursor = self._db.execute(
            "UPDATE keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
            (time.time(), name),
        )
        if cursor.rowcount > 0:
            self.keys_marker.write_text(str(time.time_ns()))  # running servers reload at once
        return cursor.rowcount > 0

    def count_active_keys(self) -> int:
        return int(
            self._db.execute("SELECT COUNT(*) FROM keys WHERE revoked_at IS NULL").fetchone()[0]
        )

    # -- sessions -------------------------------------------------------------------------

    def insert_session(
        self, session_id: str, key_id: int, params: dict[str, Any], now: float
    ) -> None:
        self._db.execute(
            "INSERT INTO sessions(id, key_id, params, state, created_at, last_activity_at)"
            " VALUES (?, ?, ?, 'writable', ?, ?)",
            (session_id, key_id, json.dumps(params), now, now),
        )

    def load_sessions(self) -> list[SessionRow]:
        rows = self._db.execute(
            "SELECT id, key_id, params, state, error, next_chunk_seq, bytes_received,"
            " last_chunk_sha256, results_count, inference_done, created_at, last_activity_at,"
            " event_state, webhook_delivered FROM sessions WHERE state != 'deleted'"
        ).fetchall()
        return [
            SessionRow(
                r[0],
                r[1],
                json.loads(r[2]),
                r[3],
                r[4],
                r[5],
                r[6],
                None if r[7] is None else bytes(r[7]),
                r[8],
                bool(r[9]),
                r[10],
                r[11],
                r[12],
                r[13],
            )
            for r in rows
        ]

    def set_state(self, session_id: str, state: str, error: str | None = None) -> None:
        # A tombstone stays one: a late write (a failing worker racing a delete) must not
        # bring a deleted session back at the next start.
        self._db.execute(
            "UPDATE sessions SET state = ?, error = COALESCE(?, error)"
            " WHERE id = ? AND state != 'deleted'",
            (state, error, session_id),
        )

    def mark_inference_done(self, session_id: str) -> None:
        self._db.execute(
            "UPDATE sessions SET inference_done = 1 WHERE id = ? AND state != 'deleted'",
            (session_id,),
        )

    def delete_session(self, session_id: str) -> None:
        """Tombstone the session and drop its chunks, audio and results."""
        self._db.execute("UPDATE sessions SET state = 'deleted' WHERE id = ?", (session_id,))
        self._db.execute("DELETE FROM chunks WHERE session_id = ?", (session_id,))
        self._db.execute("DELETE FROM results WHERE session_id = ?", (session_id,))
        self._db.execute("DELETE FROM event_log WHERE session_id = ?", (session_id,))
        self._db.execute("DELETE FROM chunk_audio WHERE session_id = ?", (session_id,))

    # -- chunks ---------------------------------------------------------------------------

    def append_chunk(
        self,
        session_id: str,
        seq: int,
        data: bytes,
        digest: bytes,
        now: float,
        readonly: bool,
        overlap: int = 0,
    ) -> None:
        """Store the chunk's bytes and record it; the caller's transaction makes it durable.

        ``data`` is what the chunk adds to the session's audio timeline; ``overlap`` is how many
        bytes the client sent before it that repeated the timeline (a sliding-window chunk), so
        the chunk received was ``overlap + len(data)`` bytes.
        """
        self._db.execute(
            "INSERT INTO chunk_audio(session_id, seq, data) VALUES (?, ?, ?)",
            (session_id, seq, data),
        )
        self._db.execute(
            "INSERT INTO chunks(session_id, seq, size, overlap) VALUES (?, ?, ?, ?)",
            (session_id, seq, len(data), overlap),
        )
        self._db.execute(
            "UPDATE sessions SET next_chunk_seq = ?, bytes_received = bytes_received + ?,"
            " last_chunk_sha256 = ?, last_activity_at = ?,"
            " state = CASE WHEN ? THEN 'readonly' ELSE state END WHERE id = ?",
            (seq + 1, overlap + len(data), digest, now, readonly, session_id),
        )

    def stream_tail(self, session_id: str, max_bytes: int) -> tuple[bytes, int, int]:
        """The end of a stream's stored timeline, for the sliding-window rule after a restart:
        (up to ``max_bytes`` of its last kept audio, the timeline's length, the size of the
        last chunk received). The audio stops at a pruned chunk: less history, never a gap."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(size), 0) FROM chunks WHERE session_id = ?", (session_id,)
        ).fetchone()
        stored_bytes = int(row[0])
        last = self._db.execute(
            "SELECT size + overlap FROM chunks WHERE session_id = ? ORDER BY seq DESC LIMIT 1",
            (session_id,),
        ).fetchone()
        pieces: list[bytes] = []
        kept = 0
        rows = self._db.execute(
            "SELECT c.pruned, a.data FROM chunks c LEFT JOIN chunk_audio a"
            " ON a.session_id = c.session_id AND a.seq = c.seq"
            " WHERE c.session_id = ? ORDER BY c.seq DESC",
            (session_id,),
        )
        for pruned, data in rows:
            if kept >= max_bytes or pruned or data is None:
                break
            pieces.append(bytes(data))
            kept += len(data)
        history = b"".join(reversed(pieces))
        return (
            history[max(0, len(history) - max_bytes) :],
            stored_bytes,
            int(last[0]) if last else 0,
        )

    def chunk_layout(self, session_id: str) -> list[tuple[int, int, int]]:
        """(seq, byte offset in the stream, size) of every chunk whose audio is still kept."""
        rows = self._db.execute(
            "SELECT seq, size, pruned FROM chunks WHERE session_id = ? ORDER BY seq", (session_id,)
        ).fetchall()
        layout: list[tuple[int, int, int]] = []
        offset = 0
        for seq, size, pruned in rows:
            if not pruned:
                layout.append((seq, offset, size))
            offset += size
        return layout

    def prune_chunk_seqs(self, session_id: str, seqs: list[int]) -> None:
        self._db.executemany(
            "UPDATE chunks SET pruned = 1 WHERE session_id = ? AND seq = ?",
            [(session_id, seq) for seq in seqs],
        )
        self._db.executemany(
            "DELETE FROM chunk_audio WHERE session_id = ? AND seq = ?",
            [(session_id, seq) for seq in seqs],
        )

    def retained_chunks(self, session_id: str) -> list[int]:
        rows = self._db.execute(
            "SELECT seq FROM chunks WHERE session_id = ? AND pruned = 0 ORDER BY seq", (session_id,)
        ).fetchall()
        return [row[0] for row in rows]

    def read_chunk(self, session_id: str, seq: int) -> bytes:
        row = self._db.execute(
            "SELECT data FROM chunk_audio WHERE session_id = ? AND seq = ?", (session_id, seq)
        ).fetchone()
        if row is None:
            raise StoreError(f"audio of chunk {seq} is not kept")
        return bytes(row[0])

    def kept_audio_chunks(self, session_id: str) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM chunk_audio WHERE session_id = ?", (session_id,)
        ).fetchone()
        return int(row[0])

    def prune_chunks(self, session_id: str, below_seq: int) -> None:
        """Drop the audio of chunks that inference no longer needs (bookkeeping stays)."""
        self._db.execute(
            "UPDATE chunks SET pruned = 1 WHERE session_id = ? AND seq < ?", (session_id, below_seq)
        )
        self._db.execute(
            "DELETE FROM chunk_audio WHERE session_id = ? AND seq < ?", (session_id, below_seq)
        )

    def prune_finished_sessions(self) -> int:
        """Drop audio still kept for sessions whose inference is over (a crash came between
        marking one done and pruning it); returns how many chunks were dropped."""
        finished = "SELECT id FROM sessions WHERE inference_done = 1"
        self._db.execute(
            f"UPDATE chunks SET pruned = 1 WHERE pruned = 0 AND session_id IN ({finished})"
        )
        cursor = self._db.execute(f"DELETE FROM chunk_audio WHERE session_id IN ({finished})")
        return cursor.rowcount

    # -- results --------------------------------------------------------------------------

    def add_results(
        self,
        session_id: str,
        results: Sequence[ResultRow],
        probabilities: Sequence[bytes | None] | None = None,
        events: Sequence[EventLogRow] = (),
        event_state: str | None = None,
    ) -> int:
        """Store windows (with every class's probability, ``server.event_log``), the event log
        entries they add and the event tracker's state after them: one transaction, so after a
        crash the log carries on from exactly these windows."""
        blobs = probabilities if probabilities is not None else [None] * len(results)
        rows = [
            (session_id, r.idx, r.start_time, r.end_time, json.dumps(r.tags), _pack(blob))
            for r, blob in zip(results, blobs, strict=True)
        ]
        self._db.executemany(
            "INSERT OR IGNORE INTO results(session_id, idx, start_time, end_time, tags, probs)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        self.add_events(session_id, events, event_state)
        # Windows are stored in order from 0, so the count is one past the last index.
        self._db.execute(
            "UPDATE sessions SET results_count = MAX(results_count, ?) WHERE id = ?",
            (rows[-1][1] + 1 if rows else 0, session_id),
        )
        row = self._db.execute(
            "SELECT results_count FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        return int(row[0]) if row else 0

    def add_events(
        self, session_id: str, events: Sequence[EventLogRow], event_state: str | None
    ) -> None:
        self._db.executemany(
            "INSERT OR IGNORE INTO event_log(session_id, seq, state, kind_seq, event_id, tag,"
            " start_time, end_time, confidence, windows) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (session_id, e.seq, e.state, e.kind_seq, e.event_id, e.tag, e.start_time,
                 e.end_time, e.confidence, e.windows)
                for e in events
            ],
        )  # fmt: skip
        if event_state is not None:
            self._db.execute(
                "UPDATE sessions SET event_state = ? WHERE id = ? AND state != 'deleted'",
                (event_state, session_id),
            )

    def read_events(
        self, session_id: str, offset: int, count: int, state: str | None = None
    ) -> list[EventLogRow]:
        """Log entries from ``offset`` on: all of them, or (``state``) only open or closed ones,
        ``offset`` then counting entries of that state."""
        columns = "seq, state, kind_seq, event_id, tag, start_time, end_time, confidence, windows"
        if state is None:
            rows = self._db.execute(
                f"SELECT {columns} FROM event_log WHERE session_id = ? AND seq >= ?"
                " ORDER BY seq LIMIT ?",
                (session_id, offset, count),
            ).fetchall()
        else:
            rows = self._db.execute(
                f"SELECT {columns} FROM event_log WHERE session_id = ? AND state = ?"
                " AND kind_seq >= ? ORDER BY kind_seq LIMIT ?",
                (session_id, state, offset, count),
            ).fetchall()
        return [EventLogRow(*row) for row in rows]

    def set_webhook_delivered(self, session_id: str, delivered: int) -> None:
        self._db.execute(
            "UPDATE sessions SET webhook_delivered = MAX(webhook_delivered, ?) WHERE id = ?",
            (delivered, session_id),
        )

    def event_resume(
        self, session_id: str
    ) -> tuple[str | None, bytes | None, list[tuple[str, float]]]:
        """What a session's event log carries on from: the tracker's state, and the last
        stored window's probabilities and tags."""
        state = self._db.execute(
            "SELECT event_state FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        last = self._db.execute(
            "SELECT probs, tags FROM results WHERE session_id = ? ORDER BY idx DESC LIMIT 1",
            (session_id,),
        ).fetchone()
        return (
            None if state is None else state[0],
            None if last is None else _unpack(last[0]),
            [] if last is None else [tuple(t) for t in json.loads(last[1])],
        )

    def read_probabilities(
        self, session_id: str, offset: int, count: int
    ) -> list[tuple[int, bytes | None, list[tuple[str, float]]]]:
        """(index, stored probabilities or None for windows stored before them, tags)."""
        rows = self._db.execute(
            "SELECT idx, probs, tags FROM results WHERE session_id = ? AND idx >= ?"
            " ORDER BY idx LIMIT ?",
            (session_id, offset, count),
        ).fetchall()
        return [(r[0], _unpack(r[1]), [tuple(t) for t in json.loads(r[2])]) for r in rows]

    def read_results(self, session_id: str, offset: int, count: int) -> list[ResultRow]:
        rows = self._db.execute(
            "SELECT idx, start_time, end_time, tags FROM results WHERE session_id = ?"
            " AND idx >= ? ORDER BY idx LIMIT ?",
            (session_id, offset, count),
        ).fetchall()
        return [ResultRow(r[0], r[1], r[2], [tuple(t) for t in json.loads(r[3])]) for r in rows]


def _pack(blob: bytes | None) -> bytes | None:
    """Window probabilities are stored compressed: float32 for 521 classes is 2,084 bytes, and
    zlib (level 1, ~25-50 us, on the store thread, which it leaves free meanwhile) makes it ~640
    for the int8 model's outputs and ~1.4 KB for float models'."""
    return None if blob is None else zlib.compress(blob, 1)


def _unpack(blob: bytes | None) -> bytes | None:
    return None if blob is None else zlib.decompress(blob)


_Outcome = tuple[Any, BaseException | None]


class _Op:
    """One trip to the store thread: the calls the event loop queued in one iteration, which
    come back together (one thread hop and one wake-up for all of them)."""

    __slots__ = ("calls", "future")

    def __init__(self, calls: list[tuple[Callable[[Store], Any], bool]]) -> None:
        self.calls = calls  # (function, is_write)
        self.future: Future[list[_Outcome]] = Future()


_STOP = object()
_CHECKPOINT_INTERVAL_S = 1.0
_WAL_SIZE_LIMIT_BYTES = 256 * 1024 * 1024


class StoreThread:
    """Owns a Store on a dedicated thread; writes queued together commit together.

    On the event loop side, calls made during one loop iteration travel as one ``_Op``; on the
    thread side, every write of every queued op goes into one transaction (group commit).

    With a ``reader`` (a read-only connection to the same database), reads run on a thread of
    their own: WAL lets them proceed while the writer commits, so a reader never waits behind
    a group commit's fsync or a long deletion. A read sees every write acknowledged before it
    was made (acknowledgement follows the commit).
    """

    def __init__(
        self,
        store: Store,
        max_group: int = 512,
        reader: Store | None = None,
        checkpoint_interval_s: float = _CHECKPOINT_INTERVAL_S,
    ) -> None:
        self._store = store
        self._stop_checkpoints = threading.Event()
        self._catch_up_checkpoint = threading.Event()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._max_group = max_group
        self._pending: list[tuple[Callable[[Store], Any], bool, asyncio.Future[Any]]] = []
        self._thread = threading.Thread(target=self._run, name="tympan-store", daemon=True)
        self._thread.start()
        self._reader = reader
        self._read_queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._read_thread: threading.Thread | None = None
        if reader is not None:
            self._read_thread = threading.Thread(
                target=self._run_reads, args=(reader,), name="tympan-store-read", daemon=True
            )
            self._read_thread.start()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop,
            args=(store.path, checkpoint_interval_s),
            name="tympan-checkpoint",
            daemon=True,
        )
        self._checkpointer.start()
        self.commits = 0
        self.writes = 0

    def _checkpoint_loop(self, db_path: Path, interval_s: float) -> None:
        """Copy the WAL back into the database every second on a connection of its own; a
        PASSIVE checkpoint never waits for (nor blocks) the writer.

        That alone never lets the log start over under steady writes: SQLite rewinds the WAL
        only when a write transaction begins with every frame already copied, and a writer
        committing hundreds of times a second always appends more while a checkpoint runs.
        The log then grew without bound (900 MB in 20 s with 400 streams, and a stall of
        100-200 ms every few seconds). So after each background checkpoint the writer
        thread, between two transactions, copies the frames appended meanwhile (0.6 ms in a
        tight loop; 10-20 ms once a second at 400 streams, most of it the database fsync);
        its next transaction then rewinds the log, and ``journal_size_limit`` cuts the file
        back after a burst.
        """
        connection = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        try:
            while not self._stop_checkpoints.wait(interval_s):
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    log.warning("background checkpoint failed: %s", exc)
                else:
                    self._catch_up_checkpoint.set()
        finally:
            connection.close()

    async def read(self, fn: Callable[[Store], T]) -> T:
        return await self._submit(fn, write=False)

    async def write(self, fn: Callable[[Store], T]) -> T:
        return await self._submit(fn, write=True)

    def call_sync(self, fn: Callable[[Store], T], write: bool = True) -> T:
        op = _Op([(fn, write)])
        self._queue_for(write).put(op)
        value, error = op.future.result()[0]
        if error is not None:
            raise error
        return value

    async def _submit(self, fn: Callable[[Store], T], write: bool) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((fn, write, future))
        return await future

    def _queue_for(self, write: bool) -> queue.SimpleQueue[Any]:
        return self._queue if write or self._reader is None else self._read_queue

    def _flush(self) -> None:
        # A call whose caller was cancelled before it left is dropped: it was never acknowledged.
        pending = [item for item in self._pending if not item[2].done()]
        self._pending = []
        if not pending:
            return
        if self._reader is None:
            self._send(pending, self._queue)
            return
        writes = [item for item in pending if item[1]]
        reads = [item for item in pending if not item[1]]
        if writes:
            self._send(writes, self._queue)
        if reads:
            self._send(reads, self._read_queue)

    def _send(
        self,
        pending: list[tuple[Callable[[Store], Any], bool, asyncio.Future[Any]]],
        target: queue.SimpleQueue[Any],
    ) -> None:
        op = _Op([(fn, write) for fn, write, _ in pending])
        futures = [future for _, _, future in pending]

        def deliver(done: asyncio.Future[list[_Outcome]]) -> None:
            outcomes = done.result()
            for future, (value, error) in zip(futures, outcomes, strict=True):
                if future.done():
                    continue
                if error is None:
                    future.set_result(value)
                else:
                    future.set_exception(error)

        asyncio.wrap_future(op.future).add_done_callback(deliver)
        target.put(op)

    def close(self) -> None:
        self._stop_checkpoints.set()
        self._checkpointer.join()
        if self._read_thread is not None:
            self._read_queue.put(_STOP)
            self._read_thread.join()
        self._queue.put(_STOP)
        self._thread.join()

    def _run_reads(self, reader: Store) -> None:
        try:
            while (op := self._read_queue.get()) is not _STOP:
                op.future.set_result([self._read(fn, reader) for fn, _ in op.calls])
        finally:
            reader.close()

    def _read(self, fn: Callable[[Store], Any], reader: Store) -> _Outcome:
        """One read call in one read transaction: its statements see one snapshot, as they did
        when reads ran between the writer's transactions."""
        try:
            reader.begin_read()
        except sqlite3.Error as exc:
            return None, exc
        try:
            return self._call(fn, reader)
        finally:
            reader.rollback()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            group = [self._queue.get()]
            while len(group) < self._max_group:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if _STOP in group:
                stopping = True
                group = [op for op in group if op is not _STOP]
            self._run_group(group)
            if self._catch_up_checkpoint.is_set():
                self._catch_up_checkpoint.clear()
                try:
                    self._store.checkpoint()
                except sqlite3.Error as exc:
                    log.warning("checkpoint on the writer failed: %s", exc)
        self._store.close()

    def _run_group(self, group: list[_Op]) -> None:
        outcomes: dict[tuple[int, int], _Outcome] = {}
        writes: list[tuple[int, int, Callable[[Store], Any]]] = []
        for o, op in enumerate(group):
            for c, (fn, write) in enumerate(op.calls):
                if write:
                    writes.append((o, c, fn))
                else:
                    outcomes[(o, c)] = self._call(fn)
        if writes:
            self._run_writes(writes, outcomes)
        for o, op in enumerate(group):
            op.future.set_result([outcomes[(o, c)] for c in range(len(op.calls))])

    def _run_writes(
        self,
        writes: list[tuple[int, int, Callable[[Store], Any]]],
        outcomes: dict[tuple[int, int], _Outcome],
    ) -> None:
        done: dict[tuple[int, int], _Outcome] = {}
        try:
            self._store.begin()
            # One savepoint name for all: each is released before the next, and one fixed
            # statement text stays in sqlite3's statement cache.
            name = "w"
            for o, c, fn in writes:
                self._store.savepoint(name)
                try:
                    value = fn(self._store)
                except Exception as exc:
                    self._store.rollback_to(name)
                    done[(o, c)] = (None, exc)
                else:
                    self._store.release(name)
                    done[(o, c)] = (value, None)
            self._store.commit()
            self.commits += 1
            self.writes += len(writes)
        except Exception as exc:  # the commit itself failed (disk full, I/O error)
            self._store.rollback()
            log.error("store commit failed: %s", exc)
            error = StoreError(f"storage failed: {exc}")
            done = {(o, c): (None, error) for o, c, _ in writes}
        outcomes.update(done)

    def _call(self, fn: Callable[[Store], Any], store: Store | None = None) -> _Outcome:
        try:
            return fn(store or self._store), None
        except Exception as exc:
            return None, exc
