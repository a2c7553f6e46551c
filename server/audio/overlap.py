"""Sliding-window stream chunks: recognise the head of a chunk that repeats stored audio.

Cochl's sample clients (since their 2024 update) send each stream chunk as 1 s of audio that
starts one window hop (0.5 s by default) after the previous chunk, so each chunk repeats the
previous one's second half; the REST reference's clients send contiguous chunks. A session's
audio timeline must be the same either way, with no flag from the client, so every raw stream
chunk is checked here and its repeated head, if any, is not appended.

The rule, for a raw PCM chunk of ``n`` bytes after a stored timeline ending in bytes ``T``:

1. Candidate overlaps ``L`` are the client geometries we know: half the chunk (1 s chunks
   every 0.5 s), the previous chunk's length minus the session's window hop, and this chunk's
   length minus the hop. A candidate counts when it is whole sample frames, at least
   ``MIN_OVERLAP_S``, at most ``MAX_OVERLAP_S``, no longer than the chunk and no longer than
   the stored tail, and when the stored timeline ends on a frame boundary (a client that cuts
   samples in two streams contiguously). Only the previous-chunk candidate can equal the whole
   chunk: a sliding client's last chunk may hold nothing new.
2. A candidate matches when the chunk's first ``L`` bytes are byte-identical to the last ``L``
   stored bytes. Exactly one candidate must match; two matches mean self-similar audio.
3. The match is evidence only when the repeated audio is informative: not constant (digital
   silence, a DC offset: any stream repeats those by itself), and not periodic at lag ``L``,
   either at the end of the stored audio or within the chunk (a synthetic tone whose period
   divides ``L`` repeats by itself too).

Otherwise the chunk is contiguous and appended whole: when in doubt, nothing is dropped. The
cost of that preference is that a sliding-window client's repeated digital silence (or
repeated periodic synthetic audio) is appended twice, which shifts its later start times by
the overlap; a contiguous client never loses audio. Each chunk is judged on its own, so a
client may change its behaviour mid-stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.audio.formats import MIME_RAW, AudioFormat

__all__ = ["MAX_OVERLAP_S", "MIN_OVERLAP_S", "OverlapGeometry", "StreamTail", "find_overlap"]

MIN_OVERLAP_S = 0.1
MAX_OVERLAP_S = 1.0
# The periodicity check looks one overlap further back than the overlap itself.
_HISTORY_OVERLAPS = 2


@dataclass(frozen=True)
class OverlapGeometry:
    """A raw stream's byte sizes for the rule: sample frame, window hop, overlap bounds."""

    frame_bytes: int
    hop_bytes: int
    min_bytes: int
    max_bytes: int

    @property
    def history_bytes(self) -> int:
        """How much of the stored timeline's end the rule reads."""
        return _HISTORY_OVERLAPS * self.max_bytes

    @classmethod
    def for_stream(cls, fmt: AudioFormat, window_hop_s: float) -> OverlapGeometry | None:
        """The geometry of a raw PCM stream; None for formats whose chunks are not samples."""
        if fmt.mime != MIME_RAW or fmt.sample_rate_hz is None:
            return None
        frame = fmt.raw_sample_format.bytes_per_sample * fmt.channels
        rate = fmt.sample_rate_hz
        return cls(
            frame_bytes=frame,
            hop_bytes=round(window_hop_s * rate) * frame,
            min_bytes=max(1, round(MIN_OVERLAP_S * rate)) * frame,
            max_bytes=round(MAX_OVERLAP_S * rate) * frame,
        )


def _constant(data: bytes, frame_bytes: int) -> bool:
    """Every sample frame equals the previous one."""
    return data[frame_bytes:] == data[:-frame_bytes]


def _periodic_at_end(history: bytes | bytearray, lag: int, min_bytes: int) -> bool:
    """The stored audio's last bytes already repeat at ``lag`` (checked over up to ``lag``)."""
    span = min(lag, len(history) - lag)
    end = len(history)
    return span >= min_bytes and history[end - lag - span : end - lag] == history[end - span :]


def _periodic_within(chunk: bytes, lag: int, min_bytes: int) -> bool:
    """The chunk's audio after the overlap repeats the overlap's start."""
    span = min(lag, len(chunk) - lag)
    return span >= min_bytes and chunk[lag : lag + span] == chunk[:span]


def find_overlap(
    history: bytes | bytearray,
    stored_bytes: int,
    previous_chunk_bytes: int,
    chunk: bytes,
    geometry: OverlapGeometry,
) -> int:
    """How many leading bytes of ``chunk`` repeat the stored timeline (0: contiguous).

    ``history`` is the end of the stored timeline (at most ``geometry.history_bytes``; shorter
    after a restart that found less), ``stored_bytes`` the timeline's whole length and
    ``previous_chunk_bytes`` the size of the last chunk received, repeat included.
    """
    frame = geometry.frame_bytes
    if stored_bytes % frame or not history:
        return 0
    half = len(chunk) // 2
    candidates = {
        half if half % frame == 0 else 0,
        previous_chunk_bytes - geometry.hop_bytes,
        len(chunk) - geometry.hop_bytes,
    }
    matches = [
        size
        for size in candidates
        if geometry.min_bytes <= size <= geometry.max_bytes
        and size % frame == 0
        and size <= len(chunk)
        and size <= len(history)
        and history[len(history) - size :] == chunk[:size]
    ]
    if len(matches) != 1:
        return 0
    size = matches[0]
    if _constant(chunk[:size], frame):
        return 0
    if _periodic_at_end(history, size, geometry.min_bytes):
        return 0
    if _periodic_within(chunk, size, geometry.min_bytes):
        return 0
    return size


class StreamTail:
    """What the rule needs of a raw stream's past, kept with the session.

    Everything here is derived from stored data (the chunks' stored bytes and sizes), so a
    restart rebuilds the same state from the database (``Store.stream_tail``).
    """

    def __init__(
        self,
        geometry: OverlapGeometry,
        history: bytes = b"",
        stored_bytes: int = 0,
        previous_chunk_bytes: int = 0,
    ) -> None:
        self.geometry = geometry
        self._history = bytearray(history[len(history) - geometry.history_bytes :])
        self.stored_bytes = stored_bytes
        self.previous_chunk_bytes = previous_chunk_bytes

    @property
    def history(self) -> bytes:
        return bytes(self._history)

    def overlap_of(self, chunk: bytes) -> int:
        """Leading bytes of ``chunk`` to drop as a repeat; changes nothing."""
        return find_overlap(
            self._history, self.stored_bytes, self.previous_chunk_bytes, chunk, self.geometry
        )

    def append(self, chunk: bytes, overlap: int) -> None:
        """Record a chunk once it is stored (its bytes from ``overlap`` on were appended)."""
        self._history += memoryview(chunk)[overlap:]
        excess = len(self._history) - self.geometry.history_bytes
        if excess > 0:
            del self._history[:excess]
        self.stored_bytes += len(chunk) - overlap
        self.previous_chunk_bytes = len(chunk)
