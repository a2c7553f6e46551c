"""Rows as the client sees them, and a job's status, which is derived from its files' rather
than stored (so it can never disagree with them).

- ``canceled`` once canceled (files not yet processing then were failed and are not run);
- ``running`` while a file is processing, or some files are done while others wait;
- ``pending`` while nothing has started: no file is confirmed yet, or every confirmed file waits;
- ``completed`` once every confirmed file is done (completed or failed) and none waits;
- ``failed`` only when every confirmed file failed.

Files whose upload is not yet confirmed are not waited for. Adding a file to a finished job is
allowed: the job is ``running`` again until that file is done.
"""

from __future__ import annotations

from protocol.inference import (
    AppliedConfig,
    Detection,
    InferenceFile,
    InferenceJob,
    JobStatus,
    TypeRule,
)
from server.inference.repository import InferenceFileRecord, InferenceJobRecord

__all__ = ["file_view", "job_status", "job_view"]


def file_view(record: InferenceFileRecord) -> InferenceFile:
    return InferenceFile(
        record.file_id,
        record.filename,
        record.source,
        "pending" if record.status == "uploading" else record.status,
        record.status != "uploading",
        tuple(Detection(*item) for item in record.detections),
        record.error,
        record.duration_ms,
        record.processing_ms,
        record.created_at_s,
        record.updated_at_s,
    )


def job_status(job: InferenceJobRecord, files: list[InferenceFileRecord]) -> JobStatus:
    if job.canceled:
        return "canceled"
    statuses = [record.status for record in files if record.status != "uploading"]
    done = [status for status in statuses if status in ("completed", "failed")]
    if "processing" in statuses or (done and len(done) < len(statuses)):
        return "running"
    if not done:
        return "pending"
    return "failed" if all(status == "failed" for status in done) else "completed"


def job_view(job: InferenceJobRecord, files: list[InferenceFileRecord]) -> InferenceJob:
    overrides = job.overrides
    processed = [record for record in files if record.status in ("completed", "failed")]
    return InferenceJob(
        job.job_id,
        job.model_id,
        job_status(job, files),
        AppliedConfig(
            overrides.get("threshold"),
            overrides.get("merge_window_ms"),
            overrides.get("min_duration_ms"),
        ),
        tuple(TypeRule(*rule) for rule in job.rules),
        len(files),
        len(processed),
        sum(len(record.detections) for record in files if record.status == "completed"),
        tuple(file_view(record) for record in files),
        job.created_at_s,
        max([job.updated_at_s, *(record.updated_at_s for record in files)]),
    )
