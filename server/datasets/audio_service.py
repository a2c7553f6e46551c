"""A dataset's audio files: upload forms, confirmation, reads and deletion.

The team is the API key's owner (``str(key_id)``), as for media and jobs; a dataset or file of
another team is 404, never 403, so ids cannot be probed. The bytes go straight to the blob
store: to the S3 service itself when the store can sign a POST policy, else to tympan's own
form route (``form_upload``), which checks a policy of the same shape.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping

from protocol.audio_files import (
    AudioConfirm,
    AudioFile,
    AudioFilePage,
    AudioFilesQuery,
    AudioUploadRequest,
    AudioUploadUrl,
)
from protocol.errors import BadRequest, Conflict, NotFound, Unauthorized
from protocol.wire import parse, parse_query
from server.auth import KeyDirectory
from server.config import Settings
from server.datasets.audio_keys import all_keys, upload_key
from server.datasets.form_upload import FORM_UPLOAD_ROUTE
from server.datasets.post_policy import FormPolicy, PostPolicySigner
from server.datasets.repository import (
    AudioFileRecord,
    AudioFileRepository,
    DatasetRepository,
    with_status,
)
from server.storage import BlobStore
from server.storage.keys import is_key_segment

__all__ = ["AudioFileService", "audio_view"]

_NOT_FOUND = "no audio file with this id in this dataset"


def audio_view(record: AudioFileRecord) -> AudioFile:
    """A record as the client sees it: an upload not yet confirmed is ``pending`` with
    ``upload_confirmed: false`` (see ``protocol.audio_files``)."""
    confirmed = record.status != "uploading"
    return AudioFile(
        record.audio_id,
        record.dataset_id,
        record.filename,
        record.content_type,
        record.declared_size_bytes,
        "pending" if record.status == "uploading" else record.status,
        confirmed,
        record.error,
        record.duration_ms,
        record.sample_rate_hz,
        record.channels,
        record.created_at_s,
        record.updated_at_s,
    )


class AudioFileService:
    def __init__(
        self,
        settings: Settings,
        keys: KeyDirectory,
        blobs: BlobStore,
        datasets: DatasetRepository,
        audio: AudioFileRepository,
        signer: PostPolicySigner,
        on_confirmed: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
        rate_check: Callable[[int], None] = lambda key_id: None,
    ) -> None:
        """``rate_check``: the per-key request budget the session API spends too."""
        self._settings = settings
        self._keys = keys
        self._blobs = blobs
        self._datasets = datasets
        self._audio = audio
        self._signer = signer
        self._on_confirmed = on_confirmed
        self._clock = clock
        self._rate_check = rate_check

    @property
    def signer(self) -> PostPolicySigner:
        return self._signer

    def _team(self, key: str | None) -> str:
        if key is None:
            raise Unauthorized("an API key is required (X-API-Key, or Authorization: Bearer)")
        caller = self._keys.authenticate(key)
        self._rate_check(caller.key_id)
        return str(caller.key_id)

    async def _dataset(self, key: str | None, dataset_id: str) -> str:
        """The caller's team, once the dataset is known to be the team's."""
        team = self._team(key)
        if not is_key_segment(dataset_id) or await self._datasets.get(team, dataset_id) is None:
            raise NotFound("no dataset with this id")
        return team

    async def _record(self, key: str | None, dataset_id: str, audio_id: str) -> AudioFileRecord:
        team = await self._dataset(key, dataset_id)
        record = await self._audio.get(team, dataset_id, audio_id)
        if record is None:
            raise NotFound(_NOT_FOUND)
        return record

    async def upload_url(
        self, key: str | None, dataset_id: str, body: object, origin: str
    ) -> AudioUploadUrl:
        """A form to upload exactly ``file_size`` bytes, and the file's ``uploading`` row."""
        team = await self._dataset(key, dataset_id)
        wanted = parse(AudioUploadRequest, body)
        limit = self._settings.media_max_bytes
        if wanted.file_size > limit:
            raise BadRequest(
                f"file_size is {wanted.file_size} bytes; at most {limit} (TYMPAN_MEDIA_MAX_BYTES)"
            )
        audio_id = str(uuid.uuid4())
        blob_key = upload_key(team, dataset_id, audio_id)
        expires_s = self._settings.media_url_expiry_s
        now_s = self._clock()
        presigned = await self._blobs.presigned_post(
            blob_key,
            expires_s=expires_s,
            max_bytes=wanted.file_size,
            content_type=wanted.content_type,
        )
        if presigned is not None:
            url, fields = presigned.url, dict(presigned.fields)
        else:
            policy = FormPolicy(
                blob_key,
                wanted.file_size,
                wanted.file_size,
                wanted.content_type,
                math.ceil(now_s) + expires_s,
            )
            url, fields = origin + FORM_UPLOAD_ROUTE, self._signer.sign(policy, int(now_s))
        record = AudioFileRecord(
            audio_id,
            team,
            dataset_id,
            wanted.filename,
            wanted.content_type,
            wanted.file_size,
            blob_key,
            "uploading",
            now_s,
            now_s,
        )
        await self._audio.create(record)
        return AudioUploadUrl(url, fields, audio_id, expires_s)

    async def confirm(self, key: str | None, dataset_id: str, body: object) -> AudioFile:
        """``uploading -> pending`` once the object is there with the declared size. Confirming
        a file already confirmed answers the same view again."""
        audio_id = parse(AudioConfirm, body).audio_id
        record = await self._record(key, dataset_id, audio_id)
        if record.status != "uploading":
            return audio_view(record)
        info = await self._blobs.stat(record.blob_key)
        if info is None:
            raise Conflict(
                "the upload has not arrived: POST the file to the upload_url with its fields "
                "first, then confirm"
            )
        if info.size_bytes != record.declared_size_bytes:
            await self._blobs.delete(record.blob_key)
            raise Conflict(
                f"the upload is {info.size_bytes} bytes but file_size was "
                f"{record.declared_size_bytes}; it was removed: upload the file again"
            )
        confirmed = with_status(record, "pending", self._clock(), size_bytes=info.size_bytes)
        if await self._audio.transition(audio_id, ("uploading",), confirmed):
            self._on_confirmed()
            return audio_view(confirmed)
        return audio_view(await self._record(key, dataset_id, audio_id))  # confirmed meanwhile

    async def get(self, key: str | None, dataset_id: str, audio_id: str) -> AudioFile:
        return audio_view(await self._record(key, dataset_id, audio_id))

    async def page(
        self, key: str | None, dataset_id: str, query: Mapping[str, str]
    ) -> AudioFilePage:
        wanted = parse_query(AudioFilesQuery, query)
        limit, offset = wanted.limit, wanted.offset
        team = await self._dataset(key, dataset_id)
        records, total = await self._audio.page(team, dataset_id, limit, offset)
        return AudioFilePage(tuple(audio_view(r) for r in records), total, limit, offset)

    async def delete(self, key: str | None, dataset_id: str, audio_id: str) -> None:
        """The row first (a worker processing it then finds it gone and removes what it
        wrote), then every blob of the file."""
        record = await self._record(key, dataset_id, audio_id)
        if not await self._audio.delete(record.team, dataset_id, audio_id):
            raise NotFound(_NOT_FOUND)
        for blob_key in all_keys(record.blob_key):
            await self._blobs.delete(blob_key)

    async def remove_dataset(self, team: str, dataset_id: str) -> int:
        """Every file of the dataset, rows then blobs; how many files went. For the dataset's
        own deletion (its routes authenticate; this only removes)."""
        removed = await self._audio.delete_dataset(team, dataset_id)
        for record in removed:
            for blob_key in all_keys(record.blob_key):
                await self._blobs.delete(blob_key)
        return len(removed)
