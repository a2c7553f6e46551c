"""Where uploaded bytes live: one small interface (``BlobStore``), two implementations, chosen
at start-up. See ``base`` for the contract and ``keys`` for the key alphabet.

``S3BlobStore`` is in ``server.storage.s3``, not imported here: it loads botocore, which a
server keeping its blobs on local disk never needs.
"""

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
from server.storage.s3_config import S3Config

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
    "S3Config",
    "team_key",
    "team_prefix",
    "validate_key",
    "validate_prefix",
]
