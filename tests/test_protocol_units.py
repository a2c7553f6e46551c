"""Pure parts of the contract: the next_token codec, the state machine, chunk decisions."""

from __future__ import annotations

import pytest

from protocol.errors import Conflict, Forbidden, PayloadTooLarge
from protocol.messages import AudioType, CreateSession
from protocol.states import SessionState, TransitionError, transition
from protocol.tokens import InvalidToken, PageCursor, TokenCodec
from server.sessions import ChunkDecision, Session

KEY = b"k" * 32


def test_token_round_trip_and_opacity() -> None:
    codec = TokenCodec(KEY)
    token = codec.encode(PageCursor("sess-a", 41, 32))
    assert "41" not in token and "sess" not in token
    assert codec.decode(token, "sess-a") == PageCursor("sess-a", 41, 32)


@pytest.mark.parametrize("token", ["", "x", "A" * 65, "!!!!", "AQAAAAAAAAApACA"])
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidToken):
        TokenCodec(KEY).decode(token, "sess-a")


def test_tokens_are_bound_to_their_session_and_key() -> None:
    token = TokenCodec(KEY).encode(PageCursor("sess-a", 3, 10))
    with pytest.raises(InvalidToken):
        TokenCodec(KEY).decode(token, "sess-b")
    with pytest.raises(InvalidToken):
        TokenCodec(b"other-key-other-key!").decode(token, "sess-a")
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(InvalidToken):
        TokenCodec(KEY).decode(tampered, "sess-a")


def test_lifecycle_transitions() -> None:
    assert transition(SessionState.WRITABLE, SessionState.READONLY) is SessionState.READONLY
    assert transition(SessionState.READONLY, SessionState.READONLY) is SessionState.READONLY
    assert transition(SessionState.READONLY, SessionState.DELETED) is SessionState.DELETED
    with pytest.raises(TransitionError):
        transition(SessionState.READONLY, SessionState.WRITABLE)
    with pytest.raises(TransitionError):
        transition(SessionState.DELETED, SessionState.READONLY)


def session(**params: object) -> Session:
    body = {"type": "stream", "content_type": "audio/wav", **params}
    return Session("s", 1, CreateSession.from_body(body))


def test_chunk_decisions() -> None:
    s = session()
    assert s.check_chunk(0, b"ab", 10) is ChunkDecision.ACCEPT
    s.apply_chunk(b"ab", 1.0)
    assert s.check_chunk(0, b"ab", 10) is ChunkDecision.RETRY_OF_LAST
    with pytest.raises(Conflict):
        s.check_chunk(0, b"different", 10)
    with pytest.raises(Conflict):
        s.check_chunk(2, b"ab", 10)
    with pytest.raises(PayloadTooLarge):
        s.check_chunk(1, b"x" * 11, 10)
    s.make_readonly()
    with pytest.raises(Forbidden):
        s.check_chunk(1, b"ab", 10)
    assert s.check_chunk(0, b"ab", 10) is ChunkDecision.RETRY_OF_LAST  # still safe after readonly


def test_total_size_turns_readonly_and_errors_stick() -> None:
    s = session(total_size=4)
    assert s.params.type is AudioType.STREAM
    s.apply_chunk(b"ab", 1.0)
    assert s.state is SessionState.WRITABLE
    assert s.reaches_total_size(2)
    s.apply_chunk(b"cd", 2.0)
    assert s.state is SessionState.READONLY
    assert not s.make_readonly(error="first")  # already readonly: no state change
    assert s.error == "first"
    s.make_readonly(error="second")
    assert s.error == "first"
