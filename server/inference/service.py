"""Inference jobs' logic (Relay's Step 6): create a job on one of the team's models, add files
(upload forms as for dataset audio, or the team's media), read, list, cancel and delete.

The team is the API key's owner (``str(key_id)``), as for media, jobs and datasets; another
team's job or model is 404, never 403. Uploads go straight to the blob store: to the S3 service
itself when the store can sign a POST policy, else to tympan's own form route, with the same
signer as dataset audio (``server.datasets.form_upload``: one form route for both). A media
file is read where the Media API keeps it; its blob stays the team's (deleting the job leaves
it), and one removed before its turn fails that file.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping

from protocol.errors import BadRequest, Conflict, NotFound, Unauthorized
from protocol.inference import (
    MAX_JOB_FILES,
    CreateInferenceJob,
    InferenceConfirm,
    InferenceFile,
    InferenceJob,
    InferenceJobPage,
    InferenceJobsQuery,
    InferenceMediaFile,
    InferenceUploadRequest,
    InferenceUploadUrl,
)
from protocol.wire import parse, parse_query
from server.auth import KeyDirectory
from server.config import Settings
from server.datasets.form_upload import FORM_UPLOAD_ROUTE
from server.datasets.post_policy import FormPolicy, PostPolicySigner
from server.detectors.loader import ModelLoader, ModelUnusable
from server.inference.detect import effective_rules
from server.inference.repository import (
    InferenceFileRecord,
    InferenceJobRecord,
    InferenceRepository,
    with_status,
)
from server.inference.views import file_view, job_view
from server.media.service import MediaService
from server.storage import BlobStore, team_key
from server.storage.keys import is_key_segment

__all__ = ["InferenceService"]

_NO_JOB = "no inference job with this id"
_NO_FILE = "no file with this id in this inference job"
_MEDIA_CONTENT_TYPE = "application/octet-stream"  # a media object's type is not recorded


def upload_key(team: str, job_id: str, file_id: str) -> str:
    return team_key(team, f"inference/{job_id}/{file_id}/upload")


class InferenceService:
    def __init__(
        self,
        settings: Settings,
        keys: KeyDirectory,
        blobs: BlobStore,
        repository: InferenceRepository,
        models: ModelLoader,
        media: MediaService,
        signer: PostPolicySigner,
        on_waiting: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
        rate_check: Callable[[int], None] = lambda key_id: None,
    ) -> None:
        """``on_waiting``: a file is ready to be processed (the worker's wake-up)."""
        self._settings = settings
        self._keys = keys
        self._blobs = blobs
        self._repository = repository
        self._models = models
        self._media = media
        self._signer = signer
        self._on_waiting = on_waiting
        self._clock = clock
        self._rate_check = rate_check

    def _team(self, key: str | None) -> str:
        if key is None:
            raise Unauthorized("an API key is required (X-API-Key, or Authorization: Bearer)")
        caller = self._keys.authenticate(key)
        self._rate_check(caller.key_id)
        return str(caller.key_id)

    async def _job(self, key: str | None, job_id: str) -> InferenceJobRecord:
        team = self._team(key)
        job = await self._repository.get_job(team, job_id) if is_key_segment(job_id) else None
        if job is None:
            raise NotFound(_NO_JOB)
        return job

    async def _view(self, job: InferenceJobRecord) -> InferenceJob:
        files = await self._repository.files_of([job.job_id])
        return job_view(job, files[job.job_id])

    async def _media_file(
        self, key: str | None, team: str, job_id: str, wanted: InferenceMediaFile, where: str
    ) -> InferenceFileRecord:
        """A ``pending`` row for the team's media object; 404 when it has no such object."""
        try:
            await self._media.describe(key, wanted.object_key)
        except BadRequest as exc:
            raise BadRequest(f"{where}: {exc}") from None
        except NotFound:
            raise NotFound(f"{where}: no media under this object key for this team") from None
        now_s = self._clock()
        return InferenceFileRecord(
            str(uuid.uuid4()),
            job_id,
            team,
            wanted.object_key.rsplit("/", 1)[-1],
            _MEDIA_CONTENT_TYPE,
            None,
            team_key(team, wanted.object_key),
            "media",
            "pending",
            now_s,
            now_s,
        )

    async def create(self, key: str | None, body: object) -> InferenceJob:
        team = self._team(key)
        wanted = parse(CreateInferenceJob, body)
        try:
            model = await self._models.load(team, wanted.model_id)
        except ModelUnusable as exc:
            raise Conflict(f"the model cannot be used: {exc}") from None
        config = wanted.config
        rules = effective_rules(
            model.runner.rules, config.threshold, config.merge_window_ms, config.min_duration_ms
        )
        job_id = str(uuid.uuid4())
        files = tuple(
            [
                await self._media_file(key, team, job_id, item, f"files[{index}].url")
                for index, item in enumerate(wanted.files)
            ]
        )
        now_s = self._clock()
        job = InferenceJobRecord(
            job_id,
            team,
            wanted.model_id,
            {
                "threshold": config.threshold,
                "merge_window_ms": config.merge_window_ms,
                "min_duration_ms": config.min_duration_ms,
            },
            tuple(
                (name, rule.threshold, rule.merge_window_ms, rule.min_duration_ms)
                for name, rule in zip(model.runner.artifact_types, rules, strict=True)
            ),
            False,
            now_s,
            now_s,
        )
        await self._repository.create_job(job, files)
        if files:
            self._on_waiting()
        return job_view(job, list(files))

    async def _add(self, record: InferenceFileRecord) -> None:
        outcome = await self._repository.add_file(record, MAX_JOB_FILES)
        if outcome == "gone":
            raise NotFound(_NO_JOB)
        if outcome == "canceled":
            raise Conflict("the job was canceled: create a new job for more files")
        if outcome == "full":
            raise Conflict(f"the job has {MAX_JOB_FILES} files, the most one job may have")

    async def upload_url(
        self, key: str | None, job_id: str, body: object, origin: str
    ) -> InferenceUploadUrl:
        """A form to upload exactly ``file_size_bytes`` bytes, and the file's row."""
        job = await self._job(key, job_id)
        wanted = parse(InferenceUploadRequest, body)
        limit = self._settings.media_max_bytes
        if wanted.file_size_bytes > limit:
            raise BadRequest(
                f"file_size_bytes is {wanted.file_size_bytes}; at most {limit} "
                "(TYMPAN_MEDIA_MAX_BYTES)"
            )
        file_id = str(uuid.uuid4())
        blob_key = upload_key(job.team, job_id, file_id)
        expires_s = self._settings.media_url_expiry_s
        now_s = self._clock()
        size = wanted.file_size_bytes
        presigned = await self._blobs.presigned_post(
            blob_key, expires_s=expires_s, max_bytes=size, content_type=wanted.content_type
        )
        if presigned is not None:
            url, fields = presigned.url, dict(presigned.fields)
        else:
            expiry = math.ceil(now_s) + expires_s
            policy = FormPolicy(blob_key, size, size, wanted.content_type, expiry)
            url, fields = origin + FORM_UPLOAD_ROUTE, self._signer.sign(policy, int(now_s))
        record = InferenceFileRecord(
            file_id,
            job_id,
            job.team,
            wanted.filename,
            wanted.content_type,
            size,
            blob_key,
            "upload",
            "uploading",
            now_s,
            now_s,
        )
        await self._add(record)
        return InferenceUploadUrl(url, fields, file_id, expires_s)

    async def confirm(self, key: str | None, job_id: str, body: object) -> InferenceFile:
        """``uploading -> pending`` once the object is there with the declared size; a file
        confirmed already answers the same view again."""
        file_id = parse(InferenceConfirm, body).file_id
        job = await self._job(key, job_id)
        record = await self._repository.get_file(job.team, job_id, file_id)
        if record is None:
            raise NotFound(_NO_FILE)
        if record.status != "uploading":
            if job.canceled and record.source == "upload" and record.size_bytes is None:
                raise Conflict("the job was canceled: create a new job for more files")
            return file_view(record)
        info = await self._blobs.stat(record.blob_key)
        if info is None:
            raise Conflict(
                "the upload has not arrived: POST the file to the upload_url with its "
                "upload_fields first, then confirm"
            )
        if info.size_bytes != record.declared_size_bytes:
            await self._blobs.delete(record.blob_key)
            raise Conflict(
                f"the upload is {info.size_bytes} bytes but file_size_bytes was "
                f"{record.declared_size_bytes}; it was removed: upload the file again"
            )
        confirmed = with_status(record, "pending", self._clock(), size_bytes=info.size_bytes)
        if await self._repository.transition(file_id, ("uploading",), confirmed):
            self._on_waiting()
            return file_view(confirmed)
        return await self._file_again(job, file_id)

    async def _file_again(self, job: InferenceJobRecord, file_id: str) -> InferenceFile:
        """The file as it is now (changed meanwhile: confirmed, canceled or deleted)."""
        record = await self._repository.get_file(job.team, job.job_id, file_id)
        if record is None:
            raise NotFound(_NO_FILE)
        return file_view(record)

    async def add_media(self, key: str | None, job_id: str, body: object) -> InferenceFile:
        job = await self._job(key, job_id)
        wanted = parse(InferenceMediaFile, body)
        record = await self._media_file(key, job.team, job_id, wanted, "url")
        await self._add(record)
        self._on_waiting()
        return file_view(record)

    async def get(self, key: str | None, job_id: str) -> InferenceJob:
        return await self._view(await self._job(key, job_id))

    async def page(self, key: str | None, query: Mapping[str, str]) -> InferenceJobPage:
        wanted = parse_query(InferenceJobsQuery, query)
        team = self._team(key)
        jobs, total = await self._repository.page_jobs(team, wanted.limit, wanted.offset)
        files = await self._repository.files_of([job.job_id for job in jobs])
        items = tuple(job_view(job, files[job.job_id]) for job in jobs)
        return InferenceJobPage(items, total, wanted.limit, wanted.offset)

    async def cancel(self, key: str | None, job_id: str) -> InferenceJob:
        """Files not yet processing are failed and not run; the one in hand finishes. A job
        already canceled answers as it is; a finished one is 409."""
        job = await self._job(key, job_id)
        view = await self._view(job)
        if view.status == "canceled":
            return view
        if view.status in ("completed", "failed"):
            raise Conflict(f"the job has already {view.status}: nothing is left to cancel")
        if not await self._repository.cancel(job.team, job_id, self._clock()):
            raise NotFound(_NO_JOB)
        return await self.get(key, job_id)

    async def delete(self, key: str | None, job_id: str) -> None:
        """The rows first (a worker on one of its files then writes nothing), then the blobs
        of its uploads; media objects stay the team's."""
        job = await self._job(key, job_id)
        removed = await self._repository.delete_job(job.team, job_id)
        if removed is None:
            raise NotFound(_NO_JOB)
        for record in removed:
            if record.source == "upload":
                await self._blobs.delete(record.blob_key)
