"""Prometheus metrics, one registry per application (tests build many apps in one process).

Requests are counted by route template (not by URL, so session ids never become labels). Batches
are counted apart from windows, so mean batch size = windows / executions; queue time and compute
time are separate histograms, as Triton reports them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Metrics", "metrics_middleware"]

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "tympan_http_requests",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.chunks = Counter(
            "tympan_chunks_received", "Audio chunks acknowledged", ["type"], registry=r
        )
        self.chunk_bytes = Counter(
            "tympan_chunk_bytes_received", "Bytes of audio acknowledged", registry=r
        )
        self.chunk_overlap_bytes = Counter(
            "tympan_chunk_overlap_bytes",
            "Bytes of sliding-window stream chunks that repeated stored audio and were dropped",
            registry=r,
        )
        self.audio_seconds = Counter(
            "tympan_audio_seconds_decoded",
            "Seconds of audio decoded (16 kHz mono)",
            ["type"],
            registry=r,
        )
        self.windows = Counter(
            "tympan_windows_inferred", "Windows run through the model", registry=r
        )
        self.windows_skipped = Counter(
            "tympan_windows_silent",
            "Windows reported as silence without running the model",
            registry=r,
        )
        self.batches = Counter("tympan_batch_executions", "Model executions (batches)", registry=r)
        self.queue_seconds = Histogram(
            "tympan_queue_seconds",
            "Time windows waited for the model",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.compute_seconds = Histogram(
            "tympan_compute_seconds",
            "Model execution time per batch",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.result_latency = Histogram(
            "tympan_stream_result_seconds",
            "From a stream chunk's acknowledgement to its windows' results being stored",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.sessions = Gauge(
            "tympan_sessions_open", "Open sessions by state", ["state"], registry=r
        )
        self.provider = Gauge(
            "tympan_model_info",
            "The execution provider and model variant in use",
            ["provider", "variant"],
            registry=r,
        )
        self.variant_check = Gauge(
            "tympan_model_variant_check",
            "Each model variant tried at start-up against the exact semantics on the check set: "
            "ok (1/0), top1, p95_steps, within_one_step, decision_f1, mean_abs_prob_diff",
            ["variant", "measure"],
            registry=self.registry,
        )
        self.webhook_deliveries = Counter(
            "tympan_webhook_deliveries",
            "Webhook POSTs by outcome: delivered, retried (a try failed), given_up",
            ["outcome"],
            registry=r,
        )
        self.rejected = Counter(
            "tympan_requests_rejected", "Requests refused by a limit", ["reason"], registry=r
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


CONTENT_TYPE = CONTENT_TYPE_LATEST

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def metrics_middleware(
    metrics: Metrics,
) -> Middleware:
    children: dict[tuple[str, str, int], Any] = {}  # label lookups are costly per request

    @web.middleware
    async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        route = request.match_info.route.resource
        template = route.canonical if route is not None else "unmatched"
        key = (template, request.method, response.status)
        child = children.get(key)
        if child is None:
            child = children[key] = metrics.requests.labels(
                template, request.method, str(response.status)
            )
        child.inc()
        return response

    return count_requests
