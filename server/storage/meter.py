"""Counting and hashing an upload as it streams, and stopping it at the size limit."""

from __future__ import annotations

import hashlib

from server.storage.errors import BlobTooLarge

__all__ = ["UploadMeter"]


class UploadMeter:
    """Feed every chunk to ``add`` before storing it: ``BlobTooLarge`` is raised for the chunk
    that crosses ``max_bytes``, so no byte past the limit is ever written."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must not be negative, got {max_bytes}")
        self.max_bytes = max_bytes
        self.size_bytes = 0
        self._sha256 = hashlib.sha256()

    def add(self, chunk: bytes) -> None:
        if self.size_bytes + len(chunk) > self.max_bytes:
            raise BlobTooLarge(self.max_bytes)
        self.size_bytes += len(chunk)
        self._sha256.update(chunk)

    def hexdigest(self) -> str:
        return self._sha256.hexdigest()
