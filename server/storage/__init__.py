"""Where uploaded bytes live: one small interface (``BlobStore``), two implementations, chosen
at start-up. See ``base`` for the contract and ``keys`` for the key alphabet."""

from server.storage.base import (
    MAX_PRESIGN_EXPIRY_S,
    BlobInfo,
    BlobStore,
    PresignedPost,
    PresignedPut,
)
from server.storage.errors import (
    BlobKeyConflict,
    BlobNotFound,
    BlobStoreError,
    BlobTooLarge,
    InvalidBlobKey,
)
from server.storage.keys import team_key, team_prefix, validate_key, validate_prefix
from server.storage.local import LocalBlobStore

__all__ = [
    "MAX_PRESIGN_EXPIRY_S",
    "BlobInfo",
    "BlobKeyConflict",
    "BlobNotFound",
    "BlobStore",
    "BlobStoreError",
    "BlobTooLarge",
    "InvalidBlobKey",
    "LocalBlobStore",
    "PresignedPost",
    "PresignedPut",
    "team_key",
    "team_prefix",
    "validate_key",
    "validate_prefix",
]
