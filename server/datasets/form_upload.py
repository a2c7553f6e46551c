"""``POST /api/v1/uploads``: the S3-style form upload that tympan serves for the local store.

The form is read with aiohttp's multipart reader as it arrives: the small fields first (each
bounded), then the policy is verified before a byte of the file is read, then the ``file`` part
streams into the blob store, which publishes it only once complete. A file larger than the
policy allows is refused at the chunk that crosses the limit (S3's ``EntityTooLarge``), a
smaller one at its end (``EntityTooSmall``); either way nothing is published. Success is S3's
``204 No Content``. No API key: the signed policy is the capability, as with S3.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import MultipartReader

from protocol.errors import BadRequest, RequestTimeout
from server.appkeys import BLOBS, SETTINGS
from server.datasets.post_policy import FormPolicy, PostPolicySigner
from server.storage import BlobTooLarge

__all__ = ["FORM_UPLOAD_ROUTE", "receive_form_upload"]

FORM_UPLOAD_ROUTE = "/api/v1/uploads"
_MAX_FIELD_BYTES = 8192
_MAX_FIELDS = 32
_CHUNK_BYTES = 256 * 1024


async def receive_form_upload(request: web.Request, signer: PostPolicySigner) -> None:
    """Verify the form's policy and store its file; raises the documented errors."""
    if not request.content_type.startswith("multipart/form-data"):
        raise BadRequest("the upload must be a multipart/form-data POST (fields, then file)")
    idle_s = request.app[SETTINGS].body_read_timeout_s
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError, HttpProcessingError):
        raise BadRequest("the upload is not a valid multipart/form-data body") from None
    fields: dict[str, str] = {}
    while True:
        part = await _next_part(reader, idle_s)
        if part is None:
            raise BadRequest("the upload form has no file field (it must be the last field)")
        if not isinstance(part, BodyPartReader) or not part.name:
            raise BadRequest("the upload form has a part without a field name")
        if part.name == "file":
            break
        if len(fields) >= _MAX_FIELDS:
            raise BadRequest(f"the upload form has more than {_MAX_FIELDS} fields")
        fields[part.name] = await _field_text(part, idle_s)
    policy = signer.verify(fields, time.time())
    chunks = _file_chunks(part, policy, idle_s)
    try:
        await request.app[BLOBS].put_stream(policy.key, chunks, max_bytes=policy.max_bytes)
    except BlobTooLarge:
        raise BadRequest(
            f"EntityTooLarge: the file is larger than {policy.max_bytes} bytes, the size this "
            "form was issued for"
        ) from None


async def _next_part(reader: MultipartReader, idle_s: float) -> object | None:
    try:
        async with asyncio.timeout(idle_s):
            return await reader.next()
    except TimeoutError:
        raise RequestTimeout(f"no upload data for {idle_s:g} s") from None
    except (ValueError, AssertionError, RuntimeError, HttpProcessingError):
        # aiohttp's parser refuses a malformed part header (found by schemathesis).
        raise BadRequest("the upload is not a valid multipart/form-data body") from None


async def _field_text(part: BodyPartReader, idle_s: float) -> str:
    data = bytearray()
    while True:
        chunk = await _read_chunk(part, idle_s)
        if not chunk:
            break
        data += chunk
        if len(data) > _MAX_FIELD_BYTES:
            raise BadRequest(
                f"the upload form's field {part.name!r} is over {_MAX_FIELD_BYTES} bytes"
            )
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise BadRequest(f"the upload form's field {part.name!r} is not UTF-8") from None


async def _read_chunk(part: BodyPartReader, idle_s: float) -> bytes:
    try:
        async with asyncio.timeout(idle_s):
            return await part.read_chunk(_CHUNK_BYTES)
    except TimeoutError:
        raise RequestTimeout(f"no upload data for {idle_s:g} s") from None
    except (ValueError, AssertionError, RuntimeError, OSError, HttpProcessingError):
        # A dropped connection or a body cut short: nothing is published.
        raise BadRequest("the upload ended before its form was complete") from None


async def _file_chunks(
    part: BodyPartReader, policy: FormPolicy, idle_s: float
) -> AsyncIterator[bytes]:
    received = 0
    while chunk := await _read_chunk(part, idle_s):
        received += len(chunk)
        yield chunk
    if received < policy.min_bytes:
        # Raised inside the stream the blob store reads: it discards what it had written.
        raise BadRequest(
            f"EntityTooSmall: the file is {received} bytes; this form was issued for "
            f"{policy.min_bytes} bytes"
        )
