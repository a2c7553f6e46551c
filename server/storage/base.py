"""The blob store interface: what the server may ask of any place that keeps uploaded bytes.

Two implementations, chosen at start-up by ``make_blob_store``: ``LocalBlobStore`` (files under
the data directory, the default) and ``S3BlobStore`` (any S3-compatible service). Callers hold a
``BlobStore`` and never know which; the contract tests run the same checks against both.

The contract, for every store:

- Keys follow ``server.storage.keys``; a bad key raises ``InvalidBlobKey`` before any I/O.
- ``put_stream`` consumes an async stream without holding it whole (memory stays bounded by a
  store-specific buffer) and publishes atomically: readers see the previous object or the new
  one, never a part. If the stream raises, is cancelled, or passes ``max_bytes`` (which raises
  ``BlobTooLarge`` as soon as it is crossed, without reading further), nothing new is visible
  and the previous object, if any, is untouched.
- ``stat`` and ``list_blobs`` report what is published; they do not hash, so their ``sha256``
  is ``None``: the digest comes from ``put_stream``, for the caller to record.
- ``delete`` of a missing key is not an error.
- Pre-signed uploads: a store that can let clients upload to it directly returns where and how
  (S3: a SigV4 URL pointing at the S3 service itself); a store that cannot returns ``None``, and
  the server then issues its own signed URL to its own upload route.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

__all__ = [
    "MAX_PRESIGN_EXPIRY_S",
    "BlobInfo",
    "BlobStore",
    "PresignedPost",
    "PresignedPut",
    "check_presign_args",
]

# SigV4 pre-signed requests may live at most seven days.
MAX_PRESIGN_EXPIRY_S = 7 * 24 * 3600


def check_presign_args(
    expires_s: int, max_bytes: int | None = None, content_type: str | None = None
) -> None:
    """The same argument errors from every store, whether it can pre-sign or not."""
    if not 1 <= expires_s <= MAX_PRESIGN_EXPIRY_S:
        raise ValueError(f"expires_s must be 1..{MAX_PRESIGN_EXPIRY_S}, got {expires_s}")
    if max_bytes is not None and max_bytes < 0:
        raise ValueError(f"max_bytes must not be negative, got {max_bytes}")
    if content_type is not None and not (
        content_type and content_type.isascii() and content_type.isprintable()
    ):
        raise ValueError(f"content_type must be printable ASCII, got {content_type!r}")


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size_bytes: int
    created_at: datetime  # timezone-aware, UTC; when the object was published
    sha256: str | None = None  # hex digest; known to put_stream only


@dataclass(frozen=True)
class PresignedPut:
    """A client uploads the body with ``PUT url``, sending exactly ``headers`` (they are part
    of the signature). No size bound travels with it: S3 can only sign an exact length, so the
    caller checks ``stat`` after the client reports the upload and deletes an oversize one."""

    url: str
    headers: Mapping[str, str]
    expires_at: datetime


@dataclass(frozen=True)
class PresignedPost:
    """A client uploads with a ``multipart/form-data`` POST to ``url``: ``fields`` first, in
    order, then the file as the last field, named ``file``. The signed policy bounds the size;
    the service refuses a larger body before storing anything."""

    url: str
    fields: Mapping[str, str]
    expires_at: datetime


class BlobStore(Protocol):
    async def put_stream(
        self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int
    ) -> BlobInfo:
        """Store the stream under ``key``, replacing any object there; see the module docstring."""
        ...

    def open(
        self, key: str, *, offset_bytes: int = 0, length_bytes: int | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """``async with store.open(key) as chunks: async for chunk in chunks: ...``

        Raises ``BlobNotFound`` on entering when there is no such object. Yields the bytes from
        ``offset_bytes``, at most ``length_bytes`` of them (all when ``None``); past the end there
        is simply nothing. Leaving the block releases the file or connection."""
        ...

    async def stat(self, key: str) -> BlobInfo | None:
        """The published object's size and time, or ``None`` when there is none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error."""
        ...

    def list_blobs(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Every published object whose key starts with ``prefix``, each once. The order is
        the store's: the local store and AWS list in byte order of the keys, but some
        S3-compatible services (SeaweedFS) list folder by folder, so callers that need an
        order sort."""
        ...

    async def presigned_put(
        self, key: str, *, expires_s: int, content_type: str
    ) -> PresignedPut | None:
        """Where a client may ``PUT`` the object itself for ``expires_s`` seconds, or ``None``."""
        ...

    async def presigned_post(
        self, key: str, *, expires_s: int, max_bytes: int, content_type: str | None = None
    ) -> PresignedPost | None:
        """An S3 POST policy for the object (size bounded by ``max_bytes``), or ``None``."""
        ...

    async def close(self) -> None:
        """Release threads and connections; the store is unusable afterwards."""
        ...
