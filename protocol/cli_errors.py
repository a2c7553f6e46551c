"""The failures the client commands report, and how each reads on one line of stderr."""

from __future__ import annotations

from protocol.client import MalformedResponse, SessionFailed, TransportError
from protocol.errors import ApiError

__all__ = ["FAILURES", "LocalAudioError", "UsageError", "describe"]


class UsageError(Exception):
    """A problem with the command line itself (exit status 2)."""


class LocalAudioError(Exception):
    """A local file that cannot be sent: empty, or not decodable here."""


FAILURES = (
    ApiError,
    TransportError,
    MalformedResponse,
    SessionFailed,
    LocalAudioError,
    OSError,
)
"""What ends one file (``analyze`` goes on with the next) or the stream, as a one-line error;
anything else is a bug and keeps its traceback."""


def describe(exc: BaseException) -> str:
    """One line, without the path (the caller names the file) or Python's ``[Errno N]``."""
    if isinstance(exc, ApiError):
        return f"{exc.message} (HTTP {exc.status_code})"
    if isinstance(exc, SessionFailed):
        return f"the server could not process the audio: {exc.error}"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return str(exc)
