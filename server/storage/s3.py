"""Blobs in any S3-compatible service (AWS S3, SeaweedFS, MinIO, Ceph RGW, R2...), by aiobotocore.

Uploads stream through one part-sized buffer: an object that fits in one part is one
``PutObject``; a larger one is a multipart upload, which S3 itself keeps invisible until
``CompleteMultipartUpload`` and which is aborted when the stream fails, is cancelled or passes
its limit. (Should the abort itself fail, the parts stay invisible and unlisted; a bucket
lifecycle rule, AbortIncompleteMultipartUpload, reclaims them.)

Pre-signed URLs point at the S3 service itself: clients upload there, not through tympan. When
the service is reached by another address from outside than from the server (a private
endpoint behind a public proxy), ``public_endpoint_url`` is the one signed into those URLs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from server.storage.base import BlobInfo, PresignedPost, PresignedPut, check_presign_args
from server.storage.errors import BlobNotFound, InvalidBlobKey
from server.storage.keys import validate_key, validate_prefix
from server.storage.meter import UploadMeter
from server.storage.s3_config import (
    ADDRESSING_STYLES,
    MAX_PART_BYTES,
    MAX_PARTS,
    MIN_PART_BYTES,
    S3Config,
)

__all__ = ["S3BlobStore"]

log = logging.getLogger(__name__)

_READ_CHUNK_BYTES = 1024 * 1024
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}


class S3BlobStore:
    """``BlobStore`` over one bucket. The client is made on first use (no I/O at start-up)."""

    def __init__(self, config: S3Config) -> None:
        if not MIN_PART_BYTES <= config.part_bytes <= MAX_PART_BYTES:
            raise ValueError(
                f"part_bytes must be {MIN_PART_BYTES}..{MAX_PART_BYTES}, got {config.part_bytes}"
            )
        if config.addressing_style not in ADDRESSING_STYLES:
            raise ValueError(f"addressing_style must be one of {ADDRESSING_STYLES}")
        self.config = config
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._signer: Any = None  # the client for pre-signing: may name another endpoint
        self._lock = asyncio.Lock()
        self._closed = False

    async def _clients(self) -> tuple[Any, Any]:
        if self._closed:
            raise RuntimeError("the S3 blob store is closed")
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    config = self.config
                    client = await self._stack.enter_async_context(
                        self._create(config.endpoint_url)
                    )
                    public = config.public_endpoint_url
                    self._signer = (
                        client
                        if public in (None, config.endpoint_url)
                        else await self._stack.enter_async_context(self._create(public))
                    )
                    self._client = client
        return self._client, self._signer

    def _create(self, endpoint_url: str | None) -> Any:
        config = self.config
        return get_session().create_client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=config.region,
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key,
            config=AioConfig(
                signature_version="s3v4",
                s3={"addressing_style": config.addressing_style},
                # Since botocore 1.36 every upload carries a CRC checksum by default, which
                # several S3-compatible services refuse; ask for checksums only where required.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                retries={"mode": "standard", "max_attempts": 3},
            ),
        )

    # -- writing

    async def put_stream(
        self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int
    ) -> BlobInfo:
        validate_key(key)
        meter = UploadMeter(max_bytes)
        client, _ = await self._clients()
        # Parts (and so the buffer) grow for a limit that would need over 10,000 of them:
        # 80 GB at 8 MiB parts; a 1 TiB limit means 105 MiB parts.
        part_bytes = max(self.config.part_bytes, -(-max_bytes // MAX_PARTS))
        upload = _MultipartUpload(client, self.config.bucket, key)
        buffer = bytearray()
        try:
            async for chunk in chunks:
                meter.add(chunk)
                buffer += chunk
                while len(buffer) >= part_bytes:
                    with memoryview(buffer) as view:
                        part = bytes(view[:part_bytes])
                    del buffer[:part_bytes]
                    await upload.add_part(part)
            if upload.started:
                if buffer:
                    await upload.add_part(bytes(buffer))
                await upload.complete()
            else:
                await client.put_object(Bucket=self.config.bucket, Key=key, Body=bytes(buffer))
        except BaseException:
            if upload.started:
                await asyncio.shield(upload.abort())
            raise
        head = await client.head_object(Bucket=self.config.bucket, Key=key)
        return BlobInfo(key, meter.size_bytes, _utc(head["LastModified"]), meter.hexdigest())

    async def delete(self, key: str) -> None:
        validate_key(key)
        client, _ = await self._clients()
        await client.delete_object(Bucket=self.config.bucket, Key=key)

    # -- reading

    @asynccontextmanager
    async def open(
        self, key: str, *, offset_bytes: int = 0, length_bytes: int | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        validate_key(key)
        if offset_bytes < 0:
            raise ValueError(f"offset_bytes must not be negative, got {offset_bytes}")
        if length_bytes is not None and length_bytes < 0:
            raise ValueError(f"length_bytes must not be negative, got {length_bytes}")
        client, _ = await self._clients()
        if length_bytes == 0:  # no Range header can ask for nothing
            if await self.stat(key) is None:
                raise BlobNotFound(key)
            yield _no_chunks()
            return
        params = {"Bucket": self.config.bucket, "Key": key}
        if offset_bytes or length_bytes is not None:
            last = "" if length_bytes is None else str(offset_bytes + length_bytes - 1)
            params["Range"] = f"bytes={offset_bytes}-{last}"
        try:
            response = await client.get_object(**params)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND_CODES:
                raise BlobNotFound(key) from None
            if _code(exc) != "InvalidRange":
                raise
            response = None  # the range starts at or past the end: nothing to read
        if response is None:
            yield _no_chunks()
            return
        async with response["Body"] as body:
            yield body.iter_chunks(_READ_CHUNK_BYTES)

    async def stat(self, key: str) -> BlobInfo | None:
        validate_key(key)
        client, _ = await self._clients()
        try:
            head = await client.head_object(Bucket=self.config.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND_CODES:
                return None
            raise
        return BlobInfo(key, head["ContentLength"], _utc(head["LastModified"]))

    async def list_blobs(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        validate_prefix(prefix)
        client, _ = await self._clients()
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.config.bucket, Prefix=prefix
        )
        async for page in pages:
            for item in page.get("Contents", ()):
                try:  # objects put by other means may have keys tympan would refuse
                    key = validate_key(item["Key"])
                except InvalidBlobKey:
                    continue
                yield BlobInfo(key, item["Size"], _utc(item["LastModified"]))

    # -- pre-signing

    async def presigned_put(
        self, key: str, *, expires_s: int, content_type: str
    ) -> PresignedPut | None:
        validate_key(key)
        check_presign_args(expires_s, content_type=content_type)
        _, signer = await self._clients()
        expires_at = _expiry(expires_s)
        url = await signer.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.config.bucket, "Key": key, "ContentType": content_type},
            ExpiresIn=expires_s,
        )
        return PresignedPut(url, {"Content-Type": content_type}, expires_at)

    async def presigned_post(
        self, key: str, *, expires_s: int, max_bytes: int, content_type: str | None = None
    ) -> PresignedPost | None:
        validate_key(key)
        check_presign_args(expires_s, max_bytes, content_type)
        fields: dict[str, str] = {}
        conditions: list[Any] = [["content-length-range", 0, max_bytes]]
        if content_type is not None:
            fields["Content-Type"] = content_type
            conditions.append({"Content-Type": content_type})
        _, signer = await self._clients()
        expires_at = _expiry(expires_s)
        post = await signer.generate_presigned_post(
            Bucket=self.config.bucket,
            Key=key,
            Fields=fields,
            Conditions=conditions,
            ExpiresIn=expires_s,
        )
        return PresignedPost(post["url"], dict(post["fields"]), expires_at)

    async def close(self) -> None:
        self._closed = True
        await self._stack.aclose()


class _MultipartUpload:
    """One multipart upload, started with its first part."""

    def __init__(self, client: Any, bucket: str, key: str) -> None:
        self._client = client
        self._target = {"Bucket": bucket, "Key": key}
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    @property
    def started(self) -> bool:
        return self._upload_id is not None

    async def add_part(self, data: bytes) -> None:
        if self._upload_id is None:
            created = await self._client.create_multipart_upload(**self._target)
            self._upload_id = created["UploadId"]
        number = len(self._parts) + 1
        response = await self._client.upload_part(
            **self._target, UploadId=self._upload_id, PartNumber=number, Body=data
        )
        self._parts.append({"ETag": response["ETag"], "PartNumber": number})

    async def complete(self) -> None:
        await self._client.complete_multipart_upload(
            **self._target, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
        )

    async def abort(self) -> None:
        try:
            await self._client.abort_multipart_upload(**self._target, UploadId=self._upload_id)
        except Exception:
            log.warning(
                "could not abort multipart upload %s of %r; its parts stay invisible until a "
                "lifecycle rule removes them",
                self._upload_id,
                self._target["Key"],
                exc_info=True,
            )


async def _no_chunks() -> AsyncIterator[bytes]:
    empty: tuple[bytes, ...] = ()
    for chunk in empty:
        yield chunk


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _expiry(expires_s: int) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=expires_s)
