"""Blob keys: one alphabet for every store, so a key valid here is valid on S3 and safe as a path.

A key is 1 to 1,024 characters: segments joined by ``/``, each segment 1 to 255 characters
of ``A-Z a-z 0-9 . _ -`` that does not start with ``.``. So no ``..`` or ``.`` segment, no
absolute path, no empty segment (``a//b``, a leading or trailing ``/``), no NUL, backslash,
space or non-ASCII character: a key joined under the local store's root can never leave it,
and hidden names (``.tmp``) stay free for the store's own use. Keys are case-sensitive; on a
case-insensitive filesystem the local store would mix ``A`` and ``a``, so callers should
generate lowercase keys.

Every team's objects live under ``teams/<team_id>/``: ``team_key`` builds such keys, so no
caller assembles a team's path by hand.
"""

from __future__ import annotations

import re

from server.storage.errors import InvalidBlobKey

__all__ = [
    "MAX_KEY_CHARS",
    "MAX_SEGMENT_CHARS",
    "TEAMS_PREFIX",
    "is_key_segment",
    "team_key",
    "team_prefix",
    "validate_key",
    "validate_prefix",
]

MAX_KEY_CHARS = 1024  # S3's limit, in UTF-8 bytes; the alphabet is ASCII
MAX_SEGMENT_CHARS = 255  # the usual filesystem limit on one name
_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}")
_TEAMS = "teams"
TEAMS_PREFIX = _TEAMS + "/"  # every team's objects: list it to walk them all


def validate_key(key: str) -> str:
    """``key`` itself if it is a valid key; ``InvalidBlobKey`` saying why otherwise."""
    if not isinstance(key, str) or not key:
        raise InvalidBlobKey("a blob key must be a non-empty string")
    if len(key) > MAX_KEY_CHARS:
        raise InvalidBlobKey(f"a blob key is at most {MAX_KEY_CHARS} characters, got {len(key)}")
    for segment in key.split("/"):
        if not _SEGMENT.fullmatch(segment):
            raise InvalidBlobKey(
                f"blob key {key!r}: each '/'-separated part must be 1-{MAX_SEGMENT_CHARS} "
                "characters of A-Z a-z 0-9 . _ - and must not start with '.'"
            )
    return key


def is_key_segment(name: str) -> bool:
    """Whether ``name`` may be one ``/``-separated part of a key."""
    return _SEGMENT.fullmatch(name) is not None


def validate_prefix(prefix: str) -> str:
    """A listing prefix: empty, or whole segments each followed by ``/``, then optionally the
    start of a segment (``teams/t1/``, ``teams/t1/med``)."""
    if not isinstance(prefix, str):
        raise InvalidBlobKey("a blob prefix must be a string")
    if prefix == "":
        return prefix
    if len(prefix) > MAX_KEY_CHARS:
        raise InvalidBlobKey(f"a blob prefix is at most {MAX_KEY_CHARS} characters")
    *whole, last = prefix.split("/")
    if last:
        whole.append(last)
    for segment in whole:
        if not _SEGMENT.fullmatch(segment):
            raise InvalidBlobKey(
                f"blob prefix {prefix!r}: each '/'-separated part must be 1-{MAX_SEGMENT_CHARS} "
                "characters of A-Z a-z 0-9 . _ - and must not start with '.'"
            )
    return prefix


def team_prefix(team_id: str) -> str:
    """``teams/<team_id>/``: the prefix under which all of one team's objects live."""
    if not isinstance(team_id, str) or "/" in team_id or not _SEGMENT.fullmatch(team_id):
        raise InvalidBlobKey(f"team id {team_id!r} is not a single key segment")
    return f"{_TEAMS}/{team_id}/"


def team_key(team_id: str, name: str) -> str:
    """The key of ``name`` (itself a valid key, ``/`` allowed) in ``team_id``'s namespace."""
    validate_key(name)
    return validate_key(team_prefix(team_id) + name)
