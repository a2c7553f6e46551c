"""Rows as Relay shows them: a training job's row of the jobs table as a ``TrainingJob``, a
model's row as a ``DetectorModel``.

The jobs table says ``succeeded`` (its word for every kind); Relay's reference says
``completed``, and a job the API has not handed to a worker yet is ``pending`` either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from protocol.jobs import CANCELED, CREATED, FAILED, PENDING, RUNNING, SUCCEEDED
from protocol.training import (
    DetectorModel,
    TrainingConfigView,
    TrainingJob,
    TrainingStatus,
    TypeMetrics,
)
from server.detectors.repository import DetectorModelRecord
from server.jobs.repository import JobRecord

__all__ = ["job_view", "model_view", "type_metrics"]

_STATUS: dict[str, TrainingStatus] = {
    CREATED: "pending",
    PENDING: "pending",
    RUNNING: "running",
    SUCCEEDED: "completed",
    FAILED: "failed",
    CANCELED: "canceled",
}
_METRIC_FIELDS = tuple(TypeMetrics.__dataclass_fields__)


def type_metrics(raw: Mapping[str, Mapping[str, Any]]) -> dict[str, TypeMetrics]:
    """The training's metrics per type (``models.heads.training.evaluate``) as the wire has
    them; what the wire does not show is left out."""
    return {
        kind: TypeMetrics(**{name: values.get(name) for name in _METRIC_FIELDS})  # type: ignore[arg-type]
        for kind, values in raw.items()
    }


def job_view(record: JobRecord) -> TrainingJob:
    output = record.output if record.status == SUCCEEDED else None
    config = record.input["config"]
    return TrainingJob(
        record.job_id,
        record.input["dataset_id"],
        record.input["annotation_set_id"],
        _STATUS[record.status],
        min(100.0, max(0.0, record.progress)),
        TrainingConfigView(
            tuple(config["artifact_types"]),
            config["epochs"],
            config["validation_split"],
            config["learning_rate"],
            config["batch_size"],
            config["seed"],
        ),
        None if output is None else type_metrics(output["metrics"]),
        record.error,
        None if output is None else output["model_id"],
        record.created_at_s,
        record.updated_at_s,
        record.started_at_s,
        record.finished_at_s,
    )


def model_view(record: DetectorModelRecord) -> DetectorModel:
    return DetectorModel(
        record.model_id,
        f"{record.name} v{record.version}",
        record.version,
        record.dataset_id,
        record.annotation_set_id,
        record.annotation_set_hash,
        record.training_job_id,
        record.artifact_types,
        type_metrics(record.metrics),
        record.size_bytes,
        record.sha256,
        record.created_at_s,
    )
