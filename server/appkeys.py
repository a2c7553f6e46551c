"""Typed application keys for the objects that handlers and background tasks share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from server.config import Settings
from server.metrics import Metrics

if TYPE_CHECKING:
    from server.auth import KeyDirectory
    from server.datasets.annotation_service import AnnotationService
    from server.datasets.service import DatasetService
    from server.detectors.loader import ModelLoader
    from server.engine import InferenceEngine
    from server.event_reads import EventReads
    from server.jobs.service import JobService
    from server.media.service import MediaService
    from server.service import SessionService
    from server.storage import BlobStore
    from server.store import StoreThread

__all__ = [
    "ANNOTATIONS",
    "BLOBS",
    "DATASETS",
    "DETECTOR_MODELS",
    "ENGINE",
    "ENGINE_STATE",
    "EVENTS",
    "JOBS",
    "KEYS",
    "MEDIA",
    "METRICS",
    "SERVICE",
    "SETTINGS",
    "STORE",
    "EngineState",
]


@dataclass
class EngineState:
    """What /readyz reports: whether the model is loaded and warm, and how it runs."""

    ready: bool = False
    provider: str = ""
    variant: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"provider": self.provider, "variant": self.variant, **self.details}


SETTINGS = web.AppKey("settings", Settings)
SERVICE: web.AppKey[SessionService] = web.AppKey("service")
EVENTS: web.AppKey[EventReads] = web.AppKey("events")
ENGINE_STATE = web.AppKey("engine_state", EngineState)
METRICS = web.AppKey("metrics", Metrics)
BLOBS: web.AppKey[BlobStore] = web.AppKey("blobs")
STORE: web.AppKey[StoreThread] = web.AppKey("store")
KEYS: web.AppKey[KeyDirectory] = web.AppKey("keys")
MEDIA: web.AppKey[MediaService] = web.AppKey("media")
JOBS: web.AppKey[JobService] = web.AppKey("jobs")
DATASETS: web.AppKey[DatasetService] = web.AppKey("datasets")
ANNOTATIONS: web.AppKey[AnnotationService] = web.AppKey("annotations")
ENGINE: web.AppKey[InferenceEngine] = web.AppKey("engine")
DETECTOR_MODELS: web.AppKey[ModelLoader] = web.AppKey("detector_models")
