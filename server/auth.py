"""Who is calling: API key lookup, owner checks.

Key lookups run on the event loop over their own read-only SQLite connection: a primary-key or
unique-index lookup takes microseconds and WAL readers never wait for the writer, so revocation
by ``tympan keys revoke`` (another process) is seen by the very next request.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from protocol.errors import Unauthorized
from server.keys import hash_key, keys_match
from server.store import keys_marker_path

__all__ = ["Caller", "KeyDirectory", "presented_key"]


@dataclass(frozen=True)
class Caller:
    key_id: int
    key_name: str


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key from ``x-api-key`` or ``Authorization: Bearer``; None when neither is sent."""
    get = headers.get
    key = get("x-api-key")
    if key:
        return str(key).strip()
    authorization = get("Authorization") or ""
    scheme, _, token = str(authorization).partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


_MAX_REMEMBERED_KEYS = 10_000


class KeyDirectory:
    def __init__(self, db_path: Path) -> None:
        self._db = sqlite3.connect(
            f"file:{db_path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA busy_timeout=2000")
        self._marker = keys_marker_path(db_path)
        self._marker_stamp: tuple[int, int] | None = None
        self._revoked: frozenset[int] = frozenset()
        self._known: frozenset[int] = frozenset()
        self._callers: dict[bytes, Caller] = {}

    def close(self) -> None:
        self._db.close()

    def authenticate(self, key: str) -> Caller:
        """Raise Unauthorized unless ``key`` is a known, unrevoked key.

        Successful lookups are remembered by the key's hash until the revocation marker
        changes, so clients that send their key on every call cost no query per call."""
        key_hash = hash_key(key)
        self._refresh()
        cached = self._callers.get(key_hash)
        if cached is not None:
            return cached
        row = self._db.execute(
            "SELECT id, name, key_hash, revoked_at FROM keys WHERE key_hash = ?", (key_hash,)
        ).fetchone()
        if row is None or not keys_match(bytes(row[2]), key) or row[3] is not None:
            raise Unauthorized("API key is missing, invalid or revoked")
        caller = Caller(int(row[0]), str(row[1]))
        if len(self._callers) < _MAX_REMEMBERED_KEYS:
            self._callers[key_hash] = caller
        return caller

    def is_revoked(self, key_id: int) -> bool:
        """Whether ``key_id`` is revoked (or unknown), as of this very call."""
        self._refresh()
        if key_id not in self._known:  # created since the last reload
            self._marker_stamp = None
            self._refresh()
        return key_id in self._revoked or key_id not in self._known

    def _refresh(self) -> None:
        try:
            info = self._marker.stat()
            stamp = (info.st_mtime_ns, info.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        if stamp == self._marker_stamp:
            return
        self._callers.clear()  # a key may have been revoked: authenticate afresh
        rows = self._db.execute("SELECT id, revoked_at FROM keys").fetchall()
        self._known = frozenset(row[0] for row in rows)
        self._revoked = frozenset(row[0] for row in rows if row[1] is not None)
        self._marker_stamp = stamp
