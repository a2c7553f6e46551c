"""The training jobs API's logic: create a job on a team's published annotation set, read, list
and cancel the team's training jobs.

Checked at creation, so that a job that cannot succeed is refused at once: the dataset and the
set are the team's (404, never 403), the set belongs to the dataset (404) and is published (409),
the config is valid (400 naming the key), its artifact types are the dataset's (400 naming the
unknown one; none given: every type the set annotates), the set has at least two ready audio
files and an annotation of every trained type (400 saying what is missing). What can change
afterwards (the dataset or a file of the set deleted) fails the job when it runs instead.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Mapping

from models.heads.config import ConfigError, TrainingConfig
from protocol.annotations import PUBLISHED
from protocol.datasets import ListQuery
from protocol.errors import BadRequest, Conflict, NotFound, TooManyRequests
from protocol.jobs import PENDING
from protocol.training import TRAINING, CreateTrainingJob, TrainingJob, TrainingJobPage
from protocol.wire import parse, parse_query
from server.datasets.annotations import AnnotationRepository
from server.datasets.repository import AudioFileRepository
from server.datasets.service import DatasetService
from server.jobs.repository import JobRecord, JobRepository
from server.training.material import gather
from server.training.views import job_view

__all__ = ["NO_JOB", "TrainingService"]

NO_JOB = "no training job with this id"
_KINDS = (TRAINING,)


class TrainingService:
    def __init__(
        self,
        datasets: DatasetService,
        audio: AudioFileRepository,
        annotations: AnnotationRepository,
        jobs: JobRepository,
        *,
        on_created: Callable[[], None],
        on_canceled: Callable[[str], None],
        max_unfinished: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._datasets = datasets
        self._audio = audio
        self._annotations = annotations
        self._jobs = jobs
        self._on_created = on_created
        self._on_canceled = on_canceled
        self._max_unfinished = max_unfinished
        self._clock = clock

    async def create(self, key: str | None, body: object) -> TrainingJob:
        team = self._datasets.team(key)
        request = parse(CreateTrainingJob, body)
        dataset = await self._datasets.dataset(team, request.dataset_id)
        found = await self._annotations.get_set(team, dataset.dataset_id, request.annotation_set_id)
        if found is None:
            raise NotFound("no annotation set with this id in this dataset")
        if found.status != PUBLISHED or found.content_hash is None:
            raise Conflict(
                "the annotation set is a draft: publish it first (POST /api/v1/datasets/"
                "<dataset_id>/annotation-sets/<annotation_set_id>/publish); training reads "
                "only published, immutable sets"
            )
        try:
            config = TrainingConfig.from_mapping(dataclasses.asdict(request.config))
        except ConfigError as exc:
            raise BadRequest(f"config: {exc}") from None
        known = [kind.name for kind in dataset.artifact_types]
        unknown = [kind for kind in config.artifact_types if kind not in known]
        if unknown:
            raise BadRequest(
                f"config.artifact_types: {', '.join(unknown)} is not an artifact type of the "
                f"dataset (its types: {', '.join(known)})"
            )
        material = await gather(
            self._audio, self._annotations, team, dataset.dataset_id, found.set_id
        )
        types = config.artifact_types or material.annotated_types()
        if not types:
            raise BadRequest("the annotation set has no annotations: there is nothing to learn")
        problems = material.problems(types)
        if problems:
            raise BadRequest("; ".join(problems))
        resolved = dataclasses.replace(config, artifact_types=tuple(types))
        now_s = self._clock()
        record = JobRecord(
            str(uuid.uuid4()),
            team,
            TRAINING,
            {
                "dataset_id": dataset.dataset_id,
                "annotation_set_id": found.set_id,
                "annotation_set_hash": found.content_hash,
                "config": resolved.as_dict(),
            },
            PENDING,
            0.0,
            now_s,
            now_s,
        )
        if not await self._jobs.create(record, max_unfinished=self._max_unfinished):
            raise TooManyRequests(
                f"this key already has {self._max_unfinished} unfinished training jobs "
                "(TYMPAN_MAX_UNFINISHED_JOBS_PER_KEY): wait for some to finish, or cancel them",
                headers={"Retry-After": "10"},
            )
        self._on_created()
        return job_view(record)

    async def get(self, key: str | None, job_id: str) -> TrainingJob:
        record = await self._jobs.get(self._datasets.team(key), job_id, _KINDS)
        if record is None:
            raise NotFound(NO_JOB)
        return job_view(record)

    async def page(self, key: str | None, query: Mapping[str, str]) -> TrainingJobPage:
        team = self._datasets.team(key)
        wanted = parse_query(ListQuery, query)
        records = await self._jobs.page(team, wanted.limit, wanted.offset, _KINDS)
        total = await self._jobs.count(team, _KINDS)
        return TrainingJobPage(
            tuple(job_view(record) for record in records), total, wanted.limit, wanted.offset
        )

    async def cancel(self, key: str | None, job_id: str) -> TrainingJob:
        """The job as it is afterwards: ``canceled``, or its terminal status if it had
        finished. A running job's training process is stopped at once."""
        record = await self._jobs.cancel(self._datasets.team(key), job_id, self._clock(), _KINDS)
        if record is None:
            raise NotFound(NO_JOB)
        self._on_canceled(job_id)
        return job_view(record)
