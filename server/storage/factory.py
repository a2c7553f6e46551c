"""The one place that turns settings into a blob store, at start-up."""

from __future__ import annotations

from server.config import Settings
from server.storage.base import BlobStore
from server.storage.local import LocalBlobStore
from server.storage.s3_config import S3Config

__all__ = ["make_blob_store", "s3_config"]


def make_blob_store(settings: Settings) -> BlobStore:
    """``TYMPAN_BLOB_STORE``'s store. Nothing is opened or contacted yet: the local store makes
    its folders on the first write, the S3 store its client on the first request."""
    if settings.blob_store == "s3":
        from server.storage.s3 import S3BlobStore  # botocore is loaded only when chosen

        return S3BlobStore(s3_config(settings))
    return LocalBlobStore(settings.blob_root, fsync=settings.fsync)


def s3_config(settings: Settings) -> S3Config:
    """The S3 settings; ``Settings.validate`` has checked them for a server that uses S3."""
    if not (settings.s3_bucket and settings.s3_access_key_id and settings.s3_secret_access_key):
        raise ValueError("TYMPAN_S3_BUCKET and the S3 credentials are not set")
    return S3Config(
        bucket=settings.s3_bucket,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=settings.s3_secret_access_key,
        endpoint_url=settings.s3_endpoint_url,
        public_endpoint_url=settings.s3_public_endpoint_url,
        addressing_style=settings.s3_addressing_style,
        part_bytes=settings.s3_part_bytes,
    )
