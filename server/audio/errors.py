"""Typed errors of the audio layer.

The server maps them to HTTP statuses in one place: ``ContentTypeError`` is a client mistake found
at session creation (400), ``DecodeError`` is audio that cannot be decoded, and ``AudioLimitError``
is audio that decodes but is larger than a session may hold. Messages are written for the user
who sent the audio, so they say what was expected and what was found.
"""

from __future__ import annotations

__all__ = ["AudioLimitError", "ContentTypeError", "DecodeError"]


class ContentTypeError(ValueError):
    """The content type is unsupported or malformed."""


class DecodeError(Exception):
    """The audio data cannot be decoded as the announced format."""


class AudioLimitError(DecodeError):
    """The decoded audio exceeds the session's duration or decoded-size limit."""
