"""The sliding-window rule (``server.audio.overlap``): every edge case it states, chunk by chunk,
checked by rebuilding the stored timeline and comparing it with the audio sent contiguously."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from server.audio import AudioFormat, parse_content_type
from server.audio.overlap import OverlapGeometry, StreamTail
from server.store import Store
from tests.conftest import sliding_chunks

RATE_HZ = 22_050
F32 = parse_content_type(f"audio/x-raw; rate={RATE_HZ}; format=f32")
S16 = parse_content_type(f"audio/x-raw; rate={RATE_HZ}; format=s16")


def geometry(fmt: AudioFormat = F32, hop_s: float = 0.5) -> OverlapGeometry:
    result = OverlapGeometry.for_stream(fmt, hop_s)
    assert result is not None
    return result


def noise(seconds: float, seed: int = 0, width: int = 4) -> bytes:
    """Microphone-like audio: no two stretches alike."""
    samples = np.random.default_rng(seed).normal(0, 0.1, round(seconds * RATE_HZ))
    if width == 2:
        return (samples * 32767).clip(-32768, 32767).astype("<i2").tobytes()
    return samples.astype("<f4").tobytes()


def sliding(audio: bytes, frame: int, chunk_s: float = 1.0, hop_s: float = 0.5) -> list[bytes]:
    """Chunks as Cochl's sample clients cut them: ``chunk_s`` of audio every ``hop_s``."""
    return sliding_chunks(audio, round(chunk_s * RATE_HZ) * frame, round(hop_s * RATE_HZ) * frame)


def contiguous(audio: bytes, size: int) -> list[bytes]:
    return [audio[i : i + size] for i in range(0, len(audio), size)]


def timeline(chunks: list[bytes], geo: OverlapGeometry) -> tuple[bytes, list[int]]:
    """What the server stores for these chunks, and each chunk's dropped overlap."""
    tail = StreamTail(geo)
    stored: list[bytes] = []
    overlaps: list[int] = []
    for chunk in chunks:
        overlap = tail.overlap_of(chunk)
        tail.append(chunk, overlap)
        stored.append(chunk[overlap:])
        overlaps.append(overlap)
    joined = b"".join(stored)
    assert tail.stored_bytes == len(joined)
    assert tail.history == joined[-geo.history_bytes :]
    return joined, overlaps


def test_geometry_of_the_sample_clients_stream() -> None:
    geo = geometry()
    assert geo.frame_bytes == 4
    assert geo.hop_bytes == 11_025 * 4
    assert geo.min_bytes == 2205 * 4 and geo.max_bytes == RATE_HZ * 4
    stereo = OverlapGeometry.for_stream(
        parse_content_type("audio/x-raw; rate=16000; format=s24be; channels=2"), 1.0
    )
    assert stereo is not None and stereo.frame_bytes == 6 and stereo.hop_bytes == 16000 * 6


@pytest.mark.parametrize("content_type", ["audio/wav", "audio/mpeg", "audio/ogg"])
def test_encoded_formats_are_never_compared(content_type: str) -> None:
    assert OverlapGeometry.for_stream(parse_content_type(content_type), 0.5) is None


@pytest.mark.parametrize(("fmt", "width"), [(F32, 4), (S16, 2)])
def test_sliding_windows_at_hop_half_second_store_the_contiguous_audio(
    fmt: AudioFormat, width: int
) -> None:
    audio = noise(7.3, width=width)
    chunks = sliding(audio, width)
    stored, overlaps = timeline(chunks, geometry(fmt))
    assert stored == audio
    assert overlaps[0] == 0 and all(o == 11_025 * width for o in overlaps[1:])


def test_hop_one_second_chunks_do_not_overlap() -> None:
    audio = noise(6.0)
    stored, overlaps = timeline(sliding(audio, 4, hop_s=1.0), geometry(hop_s=1.0))
    assert stored == audio and not any(overlaps)


def test_sliding_client_with_one_second_window_hop_setting_still_recognised() -> None:
    """window_hop 1 s but chunks every 0.5 s: the half-chunk candidate finds it."""
    audio = noise(5.0)
    stored, overlaps = timeline(sliding(audio, 4), geometry(hop_s=1.0))
    assert stored == audio and all(overlaps[1:])


@pytest.mark.parametrize("chunk_bytes", [44_100, 88_200, 4000, 17_641, 3, 1_048_576])
def test_contiguous_chunks_of_any_length_are_appended_whole(chunk_bytes: int) -> None:
    audio = noise(8.0)
    stored, overlaps = timeline(contiguous(audio, chunk_bytes), geometry())
    assert stored == audio and not any(overlaps)


def test_last_chunk_shorter_than_a_second_and_last_chunk_with_nothing_new() -> None:
    audio = noise(3.7)
    chunks = sliding(audio, 4)
    assert len(chunks[-1]) < RATE_HZ * 4  # 0.7 s starting 0.5 s after a 1 s chunk
    stored, _ = timeline(chunks, geometry())
    assert stored == audio
    # A client that sends one more chunk from the next hop: 0.2 s it already sent.
    stored, overlaps = timeline([*chunks, audio[-round(0.2 * RATE_HZ) * 4 :]], geometry())
    assert stored == audio and overlaps[-1] == round(0.2 * RATE_HZ) * 4


def test_digital_silence_is_no_evidence_so_the_contiguous_reading_wins() -> None:
    """Repeated zeros prove nothing: a contiguous stream repeats them by itself. The sliding
    client's silent half-seconds are appended twice (later start times move by the overlap);
    a contiguous client's silence is never dropped."""
    silence = bytes(RATE_HZ * 4 * 3)
    stored, overlaps = timeline(contiguous(silence, RATE_HZ * 4), geometry())
    assert stored == silence and not any(overlaps)
    stored, overlaps = timeline(sliding(silence, 4), geometry())
    assert not any(overlaps) and len(stored) == sum(map(len, sliding(silence, 4)))


def test_constant_offset_is_silence_too() -> None:
    dc = np.full(RATE_HZ * 3, 0.25, "<f4").tobytes()
    _, overlaps = timeline(sliding(dc, 4), geometry())
    assert not any(overlaps)


def test_sliding_stream_recovers_after_silence() -> None:
    """Silence then sound: once the repeated half holds sound again, it is dropped again."""
    audio = bytes(RATE_HZ * 4) + noise(4.0)
    chunks = sliding(audio, 4)
    stored, overlaps = timeline(chunks, geometry())
    assert overlaps[1] == 0 and all(overlaps[3:])
    assert stored == audio[: RATE_HZ * 4] + audio[RATE_HZ * 2 :]  # one silent half twice


def test_mostly_silent_overlap_with_some_sound_is_evidence() -> None:
    audio = bytearray(bytes(RATE_HZ * 4 * 4))
    audio[RATE_HZ * 2 + 400 : RATE_HZ * 2 + 800] = noise(0.01)[:400]  # a click at 0.5 s
    audio[RATE_HZ * 6 + 400 : RATE_HZ * 6 + 800] = noise(0.01, seed=1)[:400]
    audio[RATE_HZ * 10 + 400 : RATE_HZ * 10 + 800] = noise(0.01, seed=2)[:400]
    _, overlaps = timeline(sliding(bytes(audio), 4), geometry())
    assert overlaps[1] and overlaps[3] and overlaps[5]  # a click in the repeated half
    assert not overlaps[2] and not overlaps[4]  # silent repeated halves


def test_periodic_contiguous_audio_is_never_dropped() -> None:
    """A synthetic tone whose period divides the candidate overlap repeats by itself."""
    period = np.sin(2 * np.pi * np.arange(441) / 441).astype("<f4")  # 50 Hz, exact
    tone = np.tile(period, 50 * 6).tobytes()
    for size in (RATE_HZ * 4, RATE_HZ * 2, RATE_HZ * 4 // 4):
        stored, overlaps = timeline(contiguous(tone, size), geometry())
        assert stored == tone and not any(overlaps), size


def test_sound_repeated_exactly_once_at_a_boundary_is_the_one_blind_spot() -> None:
    """Stated, not hidden: a contiguous client whose audio repeats one overlap's worth of
    samples exactly at a chunk boundary (never seen in captured audio) loses that repeat."""
    burst = noise(0.5, seed=3)
    audio = noise(1.0, seed=4)[: RATE_HZ * 2] + burst + burst + noise(1.0, seed=5)
    chunks = [audio[: RATE_HZ * 4], audio[RATE_HZ * 4 :]]
    _, overlaps = timeline(chunks, geometry())
    assert overlaps == [0, RATE_HZ * 2]


def test_client_changing_behaviour_mid_stream() -> None:
    audio = noise(12.0)
    second = RATE_HZ * 4
    chunks = (
        sliding(audio[: 4 * second], 4)  # sliding windows
        + contiguous(audio[4 * second : 7 * second], second // 2)  # then contiguous 0.5 s
        + sliding(audio[7 * second - second // 2 :], 4)  # sliding again, from 0.5 s back
    )
    stored, overlaps = timeline(chunks, geometry())
    assert stored == audio
    switched_back = 4 * 2 - 1 + 6
    assert overlaps[switched_back] == second // 2 and not any(overlaps[7:switched_back])


def test_other_overlaps_are_not_guessed() -> None:
    """1 s chunks every 0.3 s match no candidate: read contiguously, nothing dropped."""
    audio = noise(4.0)
    chunks = sliding(audio, 4, hop_s=0.3)
    stored, overlaps = timeline(chunks, geometry())
    assert not any(overlaps) and len(stored) == sum(map(len, chunks))


def test_split_sample_keeps_the_stream_contiguous() -> None:
    """A timeline ending inside a sample cannot line up with a chunk: no comparison."""
    audio = noise(3.0)
    chunks = [audio[:5], *sliding(audio[5:], 4)]
    _, overlaps = timeline(chunks, geometry())
    assert not any(overlaps)


def test_short_overlaps_are_not_evidence() -> None:
    """0.05 s chunks cut every 0.025 s: below MIN_OVERLAP_S, read contiguously."""
    audio = noise(1.0)
    chunks = sliding(audio, 4, chunk_s=0.05, hop_s=0.025)
    _, overlaps = timeline(chunks, geometry(hop_s=0.5))
    assert not any(overlaps)


def test_state_rebuilt_from_the_store_matches_memory(tmp_path: Path) -> None:
    """After a restart the rule reads the same past: from the stored chunks, not memory."""
    geo = geometry()
    audio = noise(6.0)
    chunks = sliding(audio, 4)
    live = StreamTail(geo)
    store = Store(tmp_path / "db.sqlite3", fsync=False)
    try:
        for seq, chunk in enumerate(chunks[:-1]):
            overlap = live.overlap_of(chunk)
            store.append_chunk("s", seq, chunk[overlap:], b"\0" * 32, 0.0, False, overlap)
            live.append(chunk, overlap)
        store.prune_chunk_seqs("s", [0, 1])  # inference consumed the oldest audio
        rebuilt = StreamTail(geo, *store.stream_tail("s", geo.history_bytes))
    finally:
        store.close()
    assert rebuilt.history == live.history
    assert rebuilt.stored_bytes == live.stored_bytes
    assert rebuilt.previous_chunk_bytes == live.previous_chunk_bytes
    assert rebuilt.overlap_of(chunks[-1]) == live.overlap_of(chunks[-1]) > 0


def test_pruned_history_means_contiguous_reading(tmp_path: Path) -> None:
    geo = geometry()
    chunks = sliding(noise(3.0), 4)
    store = Store(tmp_path / "db.sqlite3", fsync=False)
    try:
        for seq, chunk in enumerate(chunks[:2]):
            store.append_chunk("s", seq, chunk, b"\0" * 32, 0.0, False)
        store.prune_chunk_seqs("s", [1])
        history, stored_bytes, last = store.stream_tail("s", geo.history_bytes)
    finally:
        store.close()
    assert history == b"" and stored_bytes == 2 * len(chunks[0]) and last == len(chunks[1])
    assert StreamTail(geo, history, stored_bytes, last).overlap_of(chunks[2]) == 0
