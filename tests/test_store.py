"""The store on its own: what survives a restart between two steps of a session's end."""

from __future__ import annotations

from pathlib import Path

from server.store import Store


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
