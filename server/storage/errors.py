"""The errors every blob store raises on purpose, whichever store it is: callers handle these.

Anything else (a failing disk, an unreachable S3 service) is unexpected and becomes a 500. Once
routes use them they map to statuses in the error middleware: 400, 404, 409, 413.
"""

from __future__ import annotations

__all__ = [
    "BlobKeyConflict",
    "BlobNotFound",
    "BlobStoreError",
    "BlobTooLarge",
    "InvalidBlobKey",
]


class BlobStoreError(Exception):
    """The base of every error a blob store raises on purpose."""


class InvalidBlobKey(BlobStoreError, ValueError):
    """A key or prefix outside the allowed alphabet or shape (see ``server.storage.keys``)."""


class BlobNotFound(BlobStoreError):
    """No object under this key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no blob under key {key!r}")
        self.key = key


class BlobTooLarge(BlobStoreError):
    """The stream went past ``max_bytes``; nothing was stored."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"blob is larger than {max_bytes} bytes")
        self.max_bytes = max_bytes


class BlobKeyConflict(BlobStoreError):
    """The key is the parent "folder" of another key, or below another key: a filesystem cannot
    hold both ``a`` and ``a/b``, so the local store refuses the second. S3 would hold both; callers
    keep the two stores interchangeable by never making one key another's prefix plus ``/``."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key {key!r} is the parent of another key, or lies below one")
        self.key = key
