"""The store on its own: what survives a restart between two steps of a session's end."""

from __future__ import annotations

import sqlite3
import struct
import time
from functools import partial
from pathlib import Path

from server.store import SCHEMA_VERSION, EventLogRow, ResultRow, Store, StoreThread


def _session_with_audio(store: Store, session_id: str, key_id: int, chunks: int) -> None:
    store.insert_session(session_id, key_id, {"type": "file"}, now=0.0)
    for seq in range(chunks):
        store.append_chunk(session_id, seq, bytes(1000), b"\0" * 32, now=0.0, readonly=False)


def test_audio_of_finished_sessions_is_pruned_at_start_up(tmp_path: Path) -> None:
    """Inference is marked done before the audio is deleted; a crash in between must not
    leave the audio on disk for ever: the next start deletes it, and only it."""
    store = Store(tmp_path / "tympan.db", fsync=False)
    try:
        key = store.add_key("k", b"h" * 32)
        _session_with_audio(store, "finished", key.id, 3)
        _session_with_audio(store, "running", key.id, 2)
        store.mark_inference_done("finished")

        assert store.prune_finished_sessions() == 3

        assert store.kept_audio_chunks("finished") == 0
        assert store.retained_chunks("finished") == []
        assert store.kept_audio_chunks("running") == 2  # still needed by its inference
        assert store.chunk_layout("running") == [(0, 0, 1000), (1, 1000, 1000)]
    finally:
        store.close()


_CHUNK_BYTES = 16_000
_CHUNKS_PER_WRITE = 4
_KEPT_CHUNKS = 8
_WRITES = 48
_CHECKPOINT_TIMEOUT_S = 10.0


def test_the_write_ahead_log_starts_over_under_steady_writes(tmp_path: Path) -> None:
    """Under steady writes a background checkpoint always runs while the writer is busy, so
    it never leaves the log fully copied when a transaction begins; SQLite rewinds the WAL only
    then, so without the writer's catch-up checkpoint the file grows by every byte written
    (900 MB in 20 s with 400 live streams).

    Independent of the machine's speed: a fixed number of writes, each holding its transaction
    open until the background checkpointer has copied every frame committed before it (steady
    writes at their most adversarial: every background checkpoint overlaps a write, and new
    frames follow it). Only the writer's catch-up checkpoint can then copy those frames, so
    that a later transaction begins with the log fully copied and starts it over. Restarts are
    read from the WAL header's checkpoint sequence number, progress from the WAL index."""
    db_path = tmp_path / "tympan.db"
    store = Store(db_path, fsync=False)
    key = store.add_key("k", b"h" * 32)
    store.insert_session("s", key.id, {"type": "stream"}, now=0.0)
    thread = StoreThread(store, checkpoint_interval_s=0.02)
    wal = db_path.with_name(db_path.name + "-wal")
    try:
        first_sequence = _wal_checkpoint_sequence(wal)
        for write in range(_WRITES):
            first_seq = write * _CHUNKS_PER_WRITE
            thread.call_sync(partial(_write_behind_a_checkpoint, first_seq=first_seq))
        restarts = _wal_checkpoint_sequence(wal) - first_sequence
        largest_wal = wal.stat().st_size  # the file is never cut below journal_size_limit
    finally:
        thread.close()
    # With the catch-up the log starts over about every other write (a write that waited for
    # the background checkpoint is copied by the catch-up, the next one finds the log copied
    # and restarts it); without it, never.
    assert restarts >= _WRITES // 4
    written = _WRITES * _CHUNKS_PER_WRITE * _CHUNK_BYTES
    assert largest_wal < written / 4  # a few writes' frames (~330 kB of 3 MB), not all of them


def _write_behind_a_checkpoint(store: Store, first_seq: int) -> None:
    """Append chunks (dropping old ones, as a live stream does), then keep the transaction
    open until every frame committed before it has been copied back by a checkpoint."""
    for seq in range(first_seq, first_seq + _CHUNKS_PER_WRITE):
        store.append_chunk("s", seq, bytes(_CHUNK_BYTES), b"\0" * 32, now=0.0, readonly=False)
        if seq >= _KEPT_CHUNKS:
            store.prune_chunk_seqs("s", [seq - _KEPT_CHUNKS])
    deadline = time.monotonic() + _CHECKPOINT_TIMEOUT_S
    while True:
        frames, copied = _wal_index(store.path)
        if copied >= frames:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"no checkpoint copied the log in {_CHECKPOINT_TIMEOUT_S} s")
        time.sleep(0.0005)
    time.sleep(0.001)  # let the checkpointer thread raise its flag before this commit


def _wal_index(db_path: Path) -> tuple[int, int]:
    """(frames in the log, frames copied back into the database): ``mxFrame`` and
    ``nBackfill`` of the WAL index, the -shm file in native byte order
    (https://www.sqlite.org/walformat.html)."""
    with db_path.with_name(db_path.name + "-shm").open("rb") as handle:
        head = handle.read(100)
    (frames,) = struct.unpack_from("=I", head, 16)
    (copied,) = struct.unpack_from("=I", head, 96)
    return frames, copied


def _wal_checkpoint_sequence(wal: Path) -> int:
    """The WAL header's checkpoint sequence number (big-endian at offset 12): SQLite adds one
    each time the log starts over from its beginning."""
    with wal.open("rb") as handle:
        head = handle.read(16)
    return int(struct.unpack_from(">I", head, 12)[0])


def test_a_late_write_does_not_bring_a_deleted_session_back(tmp_path: Path) -> None:
    """A worker failing at the moment its session is deleted may write after the delete;
    the tombstone must stay, or the session would come back at the next start."""
    store = Store(tmp_path / "tympan.db", fsync=False)
    try:
        key = store.add_key("k", b"h" * 32)
        _session_with_audio(store, "gone", key.id, 2)
        store.delete_session("gone")
        store.set_state("gone", "readonly", "inference failed: audio of chunk 1 is not kept")
        store.mark_inference_done("gone")
        assert [row.id for row in store.load_sessions()] == []
    finally:
        store.close()


def test_version_1_database_gains_the_overlap_column(tmp_path: Path) -> None:
    """A database from before sliding-window chunks opens, keeps its chunks (overlap 0) and
    records overlaps from then on."""
    path = tmp_path / "tympan.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE chunks (session_id TEXT NOT NULL, seq INTEGER NOT NULL,"
        " size INTEGER NOT NULL, pruned INTEGER NOT NULL DEFAULT 0,"
        " PRIMARY KEY (session_id, seq)) WITHOUT ROWID;"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', 1);"
        "INSERT INTO chunks(session_id, seq, size) VALUES ('s', 0, 8);"
    )
    old.close()
    store = Store(path, fsync=False)
    try:
        store.append_chunk("s", 1, bytes(4), b"\0" * 32, now=0.0, readonly=False, overlap=4)
        assert store.stream_tail("s", 100) == (bytes(4), 12, 8)
    finally:
        store.close()
    check = sqlite3.connect(path)
    try:
        assert check.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
            SCHEMA_VERSION,
        )
        assert check.execute("SELECT seq, overlap FROM chunks ORDER BY seq").fetchall() == [
            (0, 0),
            (1, 4),
        ]
    finally:
        check.close()


def test_version_2_database_gains_probabilities_and_the_event_log(tmp_path: Path) -> None:
    """Windows stored before probabilities were read back without them (None); the event log
    and the tracker's state are stored from then on."""
    path = tmp_path / "tympan.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE sessions (id TEXT PRIMARY KEY, key_id INTEGER NOT NULL, params TEXT NOT NULL,"
        " state TEXT NOT NULL, error TEXT, next_chunk_seq INTEGER NOT NULL DEFAULT 0,"
        " bytes_received INTEGER NOT NULL DEFAULT 0, last_chunk_sha256 BLOB,"
        " results_count INTEGER NOT NULL DEFAULT 0, inference_done INTEGER NOT NULL DEFAULT 0,"
        " created_at REAL NOT NULL, last_activity_at REAL NOT NULL);"
        "CREATE TABLE results (session_id TEXT NOT NULL, idx INTEGER NOT NULL,"
        " start_time REAL NOT NULL, end_time REAL NOT NULL, tags TEXT NOT NULL,"
        " PRIMARY KEY (session_id, idx)) WITHOUT ROWID;"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', 2);"
        "INSERT INTO sessions(id, key_id, params, state, results_count, created_at,"
        " last_activity_at) VALUES ('s', 1, '{}', 'writable', 1, 0, 0);"
        "INSERT INTO results VALUES ('s', 0, 0.0, 0.975, '[[\"Dog\", 0.9]]');"
    )
    old.close()
    store = Store(path, fsync=False)
    try:
        assert store.load_sessions()[0].event_state is None
        store.add_results(
            "s",
            [ResultRow(1, 0.5, 1.475, [("Dog", 0.8)])],
            probabilities=[b"\x01\x02"],
            events=[EventLogRow(0, "open", 0, 0, "Dog", 0.0, 1.0, 0.9, 2)],
            event_state='{"logged": 1, "closed": 0}',
        )
        assert store.read_probabilities("s", 0, 10) == [
            (0, None, [("Dog", 0.9)]),
            (1, b"\x01\x02", [("Dog", 0.8)]),
        ]
        assert store.read_events("s", 0, 10) == [
            EventLogRow(0, "open", 0, 0, "Dog", 0.0, 1.0, 0.9, 2)
        ]
        assert store.read_events("s", 0, 10, "closed") == []
        assert store.load_sessions()[0].event_state == '{"logged": 1, "closed": 0}'
        store.delete_session("s")
        assert store.read_events("s", 0, 10) == []
    finally:
        store.close()
