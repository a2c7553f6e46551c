"""From raw measurements to the figures a run reports: tails (p50/p90/p99/max, never only a
mean), counts that must add up, throughput and CPU per audio second."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.harness.load import HOP_S, LoadConfig, Tally

__all__ = ["CDF_POINTS", "cdf", "distribution", "run_passes", "summarize_run"]

CDF_POINTS = 101  # quantiles 0, 1, ..., 100 %
_PERCENTILES = {"p50": 50, "p90": 90, "p99": 99}


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def distribution(values_ms: Sequence[float]) -> dict[str, Any]:
    """count, mean, p50, p90, p99 and max; None for each figure of an empty sample."""
    if not values_ms:
        return {"count": 0, "mean": None, **dict.fromkeys(_PERCENTILES), "max": None}
    data = np.asarray(values_ms, dtype=np.float64)
    figures = {name: _rounded(np.percentile(data, q)) for name, q in _PERCENTILES.items()}
    return {
        "count": int(data.size),
        "mean": _rounded(data.mean()),
        **figures,
        "max": _rounded(data.max()),
    }


def cdf(values_ms: Sequence[float]) -> list[float]:
    if not values_ms:
        return []
    quantiles = np.percentile(np.asarray(values_ms), np.linspace(0, 100, CDF_POINTS))
    return [round(float(q), 3) for q in quantiles]


def _ratio(numerator: float | None, denominator: float) -> float | None:
    return None if numerator is None or denominator <= 0 else numerator / denominator


def summarize_run(config: LoadConfig, tally: Tally, peak_rss_mib: float | None) -> dict[str, Any]:
    stream_audio_s = config.streams * config.chunks_per_stream * HOP_S
    file_audio_s = sum(f.audio_s for f in tally.files)
    audio_s = stream_audio_s + file_audio_s
    file_windows = sum(f.windows_received for f in tally.files)
    files_wall_s = max((f.wall_s for f in tally.files), default=0.0)
    wall_s = tally.wall_s
    summary: dict[str, Any] = {
        "streams": config.streams,
        "files": config.files,
        "duration_s": config.duration_s,
        "transport": config.transport,
        "chunks_per_stream": config.chunks_per_stream,
        "file_seconds": config.file_seconds,
        "wall_s": _rounded(wall_s),
        "timed_out": tally.timed_out,
        "window_latency_ms": distribution(tally.window_latency_ms),
        "window_latency_cdf_ms": cdf(tally.window_latency_ms),
        "ack_latency_ms": distribution(tally.ack_latency_ms),
        "file_ack_latency_ms": distribution(tally.file_ack_latency_ms),
        "send_lag_ms": distribution(tally.send_lag_ms),
        "windows": {
            "stream_expected": tally.stream_windows_expected,
            "stream_received": tally.stream_windows_received,
            "stream_measured": len(tally.window_latency_ms),
            "stream_tail": tally.tail_windows,
            "duplicates": tally.duplicate_windows,
            "file_expected": tally.file_windows_expected,
            "file_received": file_windows,
        },
        "chunks": {
            "sent": tally.chunks_sent,
            "acknowledged": tally.chunks_acknowledged,
            "failed": tally.failed_chunks,
            "retries": tally.retries,
            "errors": dict(sorted(tally.errors.items())),
        },
        "status_polls": {
            "requests": tally.status_requests,
            "empty_pages": tally.empty_status_pages,
        },
        "throughput": {
            "windows_per_s": _rounded(
                _ratio(tally.stream_windows_received + file_windows, wall_s), 1
            ),
            "audio_s_per_s": _rounded(_ratio(audio_s, wall_s), 2),
            "files_completed": len(tally.files),
            "file_audio_s": _rounded(file_audio_s, 1),
            "file_wall_s": _rounded(files_wall_s),
            "file_x_realtime": _rounded(_ratio(file_audio_s, files_wall_s), 1),
            "per_file_x_realtime": [_rounded(f.audio_s / f.wall_s, 1) for f in tally.files],
        },
        "server": {
            "cpu_s": _rounded(tally.server_cpu_s),
            "cpu_s_per_audio_s": _rounded(_ratio(tally.server_cpu_s, audio_s), 5),
            "cores_busy": _rounded(_ratio(tally.server_cpu_s, wall_s)),
            "peak_rss_mib": _rounded(peak_rss_mib, 1),
        },
        "harness": {
            "cpu_s": _rounded(tally.harness_cpu_s),
            "cpu_s_per_audio_s": _rounded(_ratio(tally.harness_cpu_s, audio_s), 5),
            "cores_busy": _rounded(_ratio(tally.harness_cpu_s, wall_s)),
        },
        "audio_s": _rounded(audio_s, 1),
    }
    summary["complete"] = (
        not tally.timed_out
        and tally.failed_chunks == 0
        and tally.stream_windows_received == tally.stream_windows_expected
        and file_windows == tally.file_windows_expected
        and len(tally.files) == config.files
    )
    return summary


def run_passes(summary: dict[str, Any], bound_ms: float) -> bool:
    """A sweep probe passes when every window came back, no chunk failed, and p99 is in bound."""
    p99 = summary["window_latency_ms"]["p99"]
    return bool(summary["complete"]) and p99 is not None and p99 <= bound_ms
