"""The session state machine, pure: no HTTP, no storage, no clock of its own.

``Session`` holds what the protocol needs to decide a request (state, next chunk sequence, bytes
received, digest of the last chunk) and answers with a decision; callers persist the decision
and only then apply it, so memory never runs ahead of the disk.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from protocol.errors import Conflict, Forbidden, PayloadTooLarge
from protocol.messages import AudioType, CreateSession
from protocol.states import SessionState, transition
from server.audio.overlap import StreamTail

if TYPE_CHECKING:
    from server.detectors.live import DetectorModel

__all__ = ["ChunkDecision", "Session", "chunk_digest", "params_from_dict", "params_to_dict"]


class ChunkDecision(Enum):
    ACCEPT = "accept"
    RETRY_OF_LAST = "retry_of_last"  # identical bytes re-sent after a lost response


def chunk_digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def params_to_dict(params: CreateSession) -> dict[str, Any]:
    return params.to_dict()


def params_from_dict(data: dict[str, Any]) -> CreateSession:
    return CreateSession.from_body(data)


@dataclass
class Session:
    id: str
    key_id: int
    params: CreateSession
    state: SessionState = SessionState.WRITABLE
    error: str | None = None
    next_chunk_seq: int = 0
    bytes_received: int = 0
    last_chunk_sha256: bytes | None = None
    results_count: int = 0
    inference_done: bool = False
    created_at: float = 0.0
    last_activity_at: float = 0.0
    pending_chunks: int = field(default=0)
    # Event log entries stored so far: all of them, and the closed ones.
    events_logged: int = 0
    events_closed: int = 0
    webhook_delivered: int = 0  # log entries delivered to the session's webhook
    # Raw streams only: the end of the stored timeline, for recognising sliding-window chunks.
    tail: StreamTail | None = field(default=None, repr=False)
    # The custom detectors it reports (``model_ids``), loaded when it was created or recovered;
    # it keeps them until it ends, even if a model is deleted meanwhile. ``detector_error``: a
    # recovered session's model could not be loaded, so its inference cannot carry on.
    detectors: tuple[DetectorModel, ...] = field(default=(), repr=False)
    detector_error: str | None = None

    @property
    def is_stream(self) -> bool:
        return self.params.type is AudioType.STREAM

    @property
    def finished(self) -> bool:
        """No result will ever be added: readonly and inference over (or failed)."""
        return self.state is not SessionState.WRITABLE and self.inference_done

    def check_chunk(
        self, seq: int, data: bytes, max_chunk_bytes: int, digest: bytes | None = None
    ) -> ChunkDecision:
        """Decide an upload: accept it, recognise a retry, or raise the protocol's error.
        ``digest`` is the chunk's sha256 when the caller already has it."""
        if seq == self.next_chunk_seq - 1 and self.last_chunk_sha256 == (
            digest or chunk_digest(data)
        ):
            return ChunkDecision.RETRY_OF_LAST
        if self.state is not SessionState.WRITABLE:
            raise Forbidden(f"session is {self.state.value}, not writable")
        if seq != self.next_chunk_seq:
            raise Conflict(
                f"chunk_sequence {seq} is invalid: the next expected is {self.next_chunk_seq}"
            )
        if len(data) > max_chunk_bytes:
            raise PayloadTooLarge(
                f"audio chunk is {len(data)} bytes; the maximum is {max_chunk_bytes} "
                "(TYMPAN_MAX_CHUNK_BYTES)"
            )
        return ChunkDecision.ACCEPT

    def reaches_total_size(self, chunk_bytes: int) -> bool:
        total = self.params.total_size
        return total is not None and self.bytes_received + chunk_bytes >= total

    def apply_chunk(self, data: bytes, now: float, digest: bytes | None = None) -> None:
        self.bytes_received += len(data)
        self.next_chunk_seq += 1
        self.last_chunk_sha256 = digest or chunk_digest(data)
        self.last_activity_at = now
        if self.reaches_total_size(0):
            self.state = transition(self.state, SessionState.READONLY)

    def make_readonly(self, error: str | None = None) -> bool:
        """Returns True when this call changed the state."""
        changed = self.state is SessionState.WRITABLE
        self.state = transition(self.state, SessionState.READONLY)
        if error is not None and self.error is None:
            self.error = error
        return changed

    def delete(self) -> None:
        self.state = transition(self.state, SessionState.DELETED)
