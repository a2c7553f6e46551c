"""The store on its own: what survives a restart between two steps of a session's end."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from server.store import Store, StoreThread


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


def test_the_write_ahead_log_starts_over_under_steady_writes(tmp_path: Path) -> None:
    """Hundreds of commits a second never leave the log fully copied when a transaction
    begins, so without the writer's catch-up checkpoint SQLite never rewinds it and the file
    grows by every byte written (900 MB in 20 s with 400 live streams)."""
    db_path = tmp_path / "tympan.db"
    store = Store(db_path, fsync=False)
    key = store.add_key("k", b"h" * 32)
    store.insert_session("s", key.id, {"type": "stream"}, now=0.0)
    thread = StoreThread(store, checkpoint_interval_s=0.05)
    wal = db_path.with_name(db_path.name + "-wal")
    written = 0
    try:
        deadline = time.monotonic() + 1.5
        seq = 0
        while time.monotonic() < deadline:
            thread.call_sync(partial(_append_and_prune, seq=seq))
            written += 16_000
            seq += 1
        largest_wal = wal.stat().st_size
    finally:
        thread.close()
    assert written > 20 * 1024**2  # enough traffic for growth to show
    assert largest_wal < written / 4


def _append_and_prune(store: Store, seq: int) -> None:
    store.append_chunk("s", seq, bytes(16_000), b"\0" * 32, now=0.0, readonly=False)
    if seq >= 8:
        store.prune_chunk_seqs("s", [seq - 8])


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
