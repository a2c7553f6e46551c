"""Session lifecycle: ``writable -> readonly -> deleted``, as one explicit transition table."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["SessionState", "TransitionError", "can_transition", "transition"]


class SessionState(StrEnum):
    WRITABLE = "writable"
    READONLY = "readonly"
    DELETED = "deleted"


_ALLOWED: dict[SessionState, frozenset[SessionState]] = {
    SessionState.WRITABLE: frozenset({SessionState.READONLY, SessionState.DELETED}),
    SessionState.READONLY: frozenset({SessionState.DELETED}),
    SessionState.DELETED: frozenset(),
}


class TransitionError(ValueError):
    """A transition the lifecycle does not allow."""


def can_transition(current: SessionState, target: SessionState) -> bool:
    return target in _ALLOWED[current]


def transition(current: SessionState, target: SessionState) -> SessionState:
    """Return ``target`` if allowed; staying in the same state is allowed and a no-op."""
    if current == target or can_transition(current, target):
        return target
    raise TransitionError(f"a {current.value} session cannot become {target.value}")
