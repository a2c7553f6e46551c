"""What the S3 store needs to know, and S3's own limits: apart from ``s3`` so that settings can
be checked without loading the S3 client library."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "ADDRESSING_STYLES",
    "DEFAULT_PART_BYTES",
    "MAX_PARTS",
    "MAX_PART_BYTES",
    "MIN_PART_BYTES",
    "S3Config",
    "is_bucket_name",
]

MIN_PART_BYTES = 5 * 1024 * 1024  # S3 refuses smaller parts (except the last)
MAX_PART_BYTES = 5 * 1024**3
MAX_PARTS = 10_000
DEFAULT_PART_BYTES = 8 * 1024 * 1024
ADDRESSING_STYLES = ("path", "virtual")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def is_bucket_name(name: str) -> bool:
    """S3's rules, less the rarer ones: 3-63 characters of a-z 0-9 . -, a letter or digit at
    each end."""
    return _BUCKET.fullmatch(name) is not None and ".." not in name


@dataclass(frozen=True)
class S3Config:
    bucket: str
    region: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    endpoint_url: str | None = None  # None: AWS's endpoint for the region
    public_endpoint_url: str | None = None  # None: the same as endpoint_url
    addressing_style: str = "path"  # "path" works everywhere; "virtual" is AWS's preference
    part_bytes: int = DEFAULT_PART_BYTES  # the upload buffer: memory per upload in flight
