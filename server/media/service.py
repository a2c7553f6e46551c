"""The Media API's logic: who may upload where, the upload itself, metadata, and retention.

A team is an API key's owner: today each key is its own team, named by the key's id. Every
object lives in the blob store under ``team_key(team, object_key)``, so two teams may use the
same object key and never reach each other's bytes; metadata lives in a ``MediaRepository``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterable, Callable

from protocol.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
)
from protocol.media import (
    MAX_OBJECT_KEY_CHARS,
    OBJECT_KEY_RULES,
    MediaObject,
    MediaUploadUrl,
    parse_media_input,
)
from server.auth import Caller, KeyDirectory
from server.config import Settings
from server.media.grants import UploadGrant, UploadSigner
from server.media.repository import MediaRecord, MediaRepository
from server.storage import (
    BlobKeyConflict,
    BlobStore,
    BlobTooLarge,
    InvalidBlobKey,
    team_key,
    validate_key,
)
from server.storage.keys import TEAMS_PREFIX

__all__ = ["UPLOAD_CONTENT_TYPE", "UPLOAD_ROUTE", "MediaService"]

log = logging.getLogger(__name__)

UPLOAD_ROUTE = "/v1/media/upload/"
UPLOAD_CONTENT_TYPE = "application/octet-stream"
_SWEEP_BATCH = 100
# A removal mark older than this is a sweeper that died mid-way: it may be taken over.
DELETE_STALE_S = 60.0
_SAVE_RETRY_S = 0.05


def _object_key(raw: str) -> str:
    if len(raw) > MAX_OBJECT_KEY_CHARS:
        raise BadRequest(f"object key is {len(raw)} characters; {OBJECT_KEY_RULES}")
    try:
        return validate_key(raw)
    except InvalidBlobKey:
        raise BadRequest(f"invalid object key {raw[:80]!r}: {OBJECT_KEY_RULES}") from None


class MediaService:
    def __init__(
        self,
        settings: Settings,
        keys: KeyDirectory,
        blobs: BlobStore,
        repository: MediaRepository,
        signer: UploadSigner,
        clock: Callable[[], float] = time.time,
        rate_check: Callable[[int], None] = lambda key_id: None,
    ) -> None:
        """``rate_check``: the per-key request budget the session API spends too."""
        self._settings = settings
        self._rate_check = rate_check
        self._keys = keys
        self._blobs = blobs
        self._repository = repository
        self._signer = signer
        self._clock = clock

    @property
    def signer(self) -> UploadSigner:
        return self._signer

    def authenticate(self, key: str | None) -> Caller:
        if key is None:
            raise Unauthorized("an API key is required (Authorization: Bearer <key>, or x-api-key)")
        caller = self._keys.authenticate(key)
        self._rate_check(caller.key_id)
        return caller

    def _team(self, key: str | None) -> str:
        return str(self.authenticate(key).key_id)

    async def create_input(self, key: str | None, body: object, origin: str) -> MediaUploadUrl:
        """A pre-signed PUT URL for the object: the blob store's own (S3) when it can sign
        one, else tympan's upload route with a signed grant."""
        team = self._team(key)
        object_key = _object_key(parse_media_input(body))
        expires_s = self._settings.media_url_expiry_s
        presigned = await self._blobs.presigned_put(
            team_key(team, object_key), expires_s=expires_s, content_type=UPLOAD_CONTENT_TYPE
        )
        if presigned is not None:
            return MediaUploadUrl(presigned.url)
        grant = UploadGrant(
            team,
            object_key,
            math.ceil(self._clock()) + expires_s,
            self._settings.media_max_bytes,
        )
        return MediaUploadUrl(origin + UPLOAD_ROUTE + self._signer.sign(grant))

    async def upload(
        self, token: str, content_length: int | None, chunks: AsyncIterable[bytes]
    ) -> MediaObject:
        """Stream the body into the blob store; answered once it is durable and recorded."""
        grant = self._signer.verify(token, self._clock())
        if content_length is not None and content_length > grant.max_bytes:
            raise PayloadTooLarge(self._too_large(grant))
        try:
            info = await self._blobs.put_stream(
                team_key(grant.team, grant.object_key), chunks, max_bytes=grant.max_bytes
            )
        except BlobTooLarge:
            raise PayloadTooLarge(self._too_large(grant)) from None
        except BlobKeyConflict:
            raise Conflict(
                f"object key {grant.object_key!r} is the folder of another object, or lies "
                "below one: use a key that is not another key followed by '/'"
            ) from None
        now_s = self._clock()
        record = MediaRecord(
            grant.team,
            grant.object_key,
            info.size_bytes,
            info.sha256 or "",
            now_s,
            now_s + self._settings.media_retention_s,
        )
        await self._save_after_any_removal(record)
        current = await self._blobs.stat(info.key)
        if current is None or current.created_at != info.created_at:
            # The sweeper was removing the expired object this upload replaces and took the
            # new bytes with it (or another upload replaced them): never acknowledge that.
            await self._repository.delete_if_unchanged(record)
            raise ServiceUnavailable(
                "the upload crossed the removal of the expired object it replaces; upload it again",
                headers={"Retry-After": "1"},
            )
        return _wire(record)

    async def _save_after_any_removal(self, record: MediaRecord) -> None:
        """Save the record once no sweeper is removing the row it replaces (see the
        repository's docstring); a dead sweeper's mark goes stale after ``DELETE_STALE_S``."""
        while not await self._repository.save(record, now_s=self._clock(), stale_s=DELETE_STALE_S):
            await asyncio.sleep(_SAVE_RETRY_S)

    @staticmethod
    def _too_large(grant: UploadGrant) -> str:
        return (
            f"the upload is larger than {grant.max_bytes} bytes, the most this URL allows "
            "(TYMPAN_MEDIA_MAX_BYTES)"
        )

    async def describe(self, key: str | None, raw_object_key: str) -> MediaObject:
        team = self._team(key)
        object_key = _object_key(raw_object_key)
        record = await self._repository.get(team, object_key)
        if record is None:
            record = await self._record_direct_upload(team, object_key)
        if record is None or record.expires_at_s <= self._clock():
            raise NotFound("no media under this object key")
        return _wire(record)

    async def _record_direct_upload(self, team: str, object_key: str) -> MediaRecord | None:
        """An object uploaded straight to the blob store (an S3 pre-signed URL) has no record
        until it is first asked about: record it then, or remove it if it is over the size
        limit, which S3's pre-signed PUT cannot enforce. Its digest is unknown ("")."""
        info = await self._blobs.stat(team_key(team, object_key))
        if info is None:
            return None
        if info.size_bytes > self._settings.media_max_bytes:
            await self._blobs.delete(info.key)
            return None
        created_at_s = info.created_at.timestamp()
        record = MediaRecord(
            team,
            object_key,
            info.size_bytes,
            "",
            created_at_s,
            created_at_s + self._settings.media_retention_s,
        )
        if not await self._repository.save(record, now_s=self._clock(), stale_s=DELETE_STALE_S):
            return None  # being removed by the sweeper
        return record

    async def delete(self, key: str | None, raw_object_key: str) -> None:
        team = self._team(key)
        object_key = _object_key(raw_object_key)
        blob_key = team_key(team, object_key)
        recorded = await self._repository.delete(team, object_key)
        if not recorded and await self._blobs.stat(blob_key) is None:
            raise NotFound("no media under this object key")
        await self._blobs.delete(blob_key)

    async def sweep(self, now_s: float | None = None) -> int:
        """Remove every expired object (bytes, then its record); returns how many went."""
        now_s = self._clock() if now_s is None else now_s
        removed = 0
        while batch := await self._repository.expired(now_s, _SWEEP_BATCH):
            for record in batch:
                removed += await self._remove(record, now_s)
            if len(batch) < _SWEEP_BATCH:
                break
        return removed + await self._sweep_unrecorded(now_s)

    async def _sweep_unrecorded(self, now_s: float) -> int:
        """Objects past retention that no live record covers: direct (S3) uploads never asked
        about, and bytes a crash published just before their record was written."""
        cutoff_s = now_s - self._settings.media_retention_s
        removed = 0
        async for info in self._blobs.list_blobs(TEAMS_PREFIX):
            if info.created_at.timestamp() > cutoff_s:
                continue
            team, _, object_key = info.key.removeprefix(TEAMS_PREFIX).partition("/")
            record = await self._repository.get(team, object_key)
            if record is not None:
                if record.expires_at_s <= now_s:
                    removed += await self._remove(record, now_s)
                continue
            # No row: claim the key with a marked one, so an upload finishing meanwhile waits.
            tombstone = MediaRecord(team, object_key, info.size_bytes, "", 0.0, 0.0)
            if await self._repository.claim_unrecorded(tombstone, now_s=now_s):
                current = await self._blobs.stat(info.key)
                if current is not None and current.created_at == info.created_at:
                    await self._blobs.delete(info.key)
                    removed += 1
                await self._repository.finish_deleting(tombstone)
        return removed

    async def _remove(self, record: MediaRecord, now_s: float) -> int:
        """Mark the row, remove the bytes, remove the row: an upload of the same key that
        finishes meanwhile waits for the mark to go (see the repository's docstring)."""
        if not await self._repository.mark_deleting(record, now_s=now_s, stale_s=DELETE_STALE_S):
            return 0  # replaced by a new upload, or another sweeper is on it
        await self._blobs.delete(team_key(record.team, record.object_key))
        await self._repository.finish_deleting(record)
        return 1

    async def run_sweeper(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)  # not during start-up: expiry waits in the rows
            try:
                removed = await self.sweep()
                if removed:
                    log.info("media retention: removed %d expired objects", removed)
            except Exception:
                log.exception("media retention sweep failed")


def _wire(record: MediaRecord) -> MediaObject:
    return MediaObject(
        record.object_key,
        record.size_bytes,
        record.sha256 or None,
        record.created_at_s,
        record.expires_at_s,
    )
