"""From a reader run's raw measurements to its figures: per reader kind, the window latency
tails from the completing chunk's acknowledgement and from its sending, the windows received
against those expected, and the SSE/polling ratio of each tail figure."""

from __future__ import annotations

from typing import Any

from benchmarks.harness.load import HOP_S, LoadConfig
from benchmarks.harness.readers import READERS, ReaderKind, ReaderRun
from benchmarks.harness.stats import cdf, distribution

__all__ = ["RATIO_FIGURES", "summarize_readers"]

RATIO_FIGURES = ("p50", "p90", "p99", "max")
_ENDED = {"sse": "readonly", "poll": "finished"}


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def _per_second(value: float | None, seconds: float) -> float | None:
    return None if value is None or seconds <= 0 else value / seconds


def _reader(run: ReaderRun, kind: ReaderKind) -> dict[str, Any]:
    records = [r for r in run.streams if r.kind == kind]
    from_ack = run.latencies_ms(kind, "ack")
    from_send = run.latencies_ms(kind, "send")
    expected = sum(r.expected for r in records)
    received = sum(len(r.received_at) for r in records)
    tail_ms, end_ms = run.end_latencies_ms(kind)
    missing = sum(len(set(range(r.expected)) - r.received_at.keys()) for r in records)
    return {
        "streams": len(records),
        "latency_from_ack_ms": distribution(from_ack),
        "latency_from_send_ms": distribution(from_send),
        "latency_from_ack_cdf_ms": cdf(from_ack),
        "received_before_ack": sum(v < 0 for v in from_ack),
        "tail_window_from_readonly_ms": distribution(tail_ms),
        "end_from_readonly_ms": distribution(end_ms),
        "end_from_readonly_each_ms": sorted(round(v, 1) for v in end_ms),  # one per stream
        "windows": {
            "expected": expected,
            "received": received,
            "measured": len(from_ack),
            "tail": received - len(from_ack),
            "missing": missing,
            "unexpected": sum(len(r.received_at.keys() - set(range(r.expected))) for r in records),
            "duplicates": sum(r.duplicates for r in records),
            "out_of_order": sum(r.out_of_order for r in records),
            "mislabelled": sum(r.mislabelled for r in records),
        },
        "streams_ended": sum(r.ended == _ENDED[kind] for r in records),
        "requests": run.requests[kind],
    }


def _ratios(sse: dict[str, Any], poll: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in RATIO_FIGURES:
        a, b = sse.get(name), poll.get(name)
        out[name] = None if a is None or b is None or b <= 0 else round(a / b, 3)
    return out


def summarize_readers(
    config: LoadConfig, run: ReaderRun, peak_rss_mib: float | None
) -> dict[str, Any]:
    tally = run.senders
    wall_s = tally.wall_s
    audio_s = config.streams * config.chunks_per_stream * HOP_S
    readers = {kind: _reader(run, kind) for kind in READERS}
    summary: dict[str, Any] = {
        "streams": config.streams,
        "duration_s": config.duration_s,
        "transport": config.transport,
        "chunks_per_stream": config.chunks_per_stream,
        "wall_s": _rounded(wall_s),
        "timed_out": tally.timed_out,
        "readers": readers,
        "sse_over_poll": {
            since: _ratios(readers["sse"][key], readers["poll"][key])
            for since, key in (
                ("from_ack", "latency_from_ack_ms"),
                ("from_send", "latency_from_send_ms"),
            )
        },
        "sse": {
            "heartbeats": run.heartbeats,
            "log_entries": run.log_entries,
            "reconnects": run.reconnects,
        },
        "poll": {"empty_pages": run.empty_pages},
        "ack_latency_ms": distribution(tally.ack_latency_ms),
        "send_lag_ms": distribution(tally.send_lag_ms),
        "chunks": {
            "sent": tally.chunks_sent,
            "acknowledged": tally.chunks_acknowledged,
            "failed": tally.failed_chunks,
            "retries": tally.retries,
        },
        "errors": dict(sorted((tally.errors + run.errors).items())),
        "server": {
            "cpu_s": _rounded(tally.server_cpu_s),
            "cpu_s_per_audio_s": _rounded(
                None if tally.server_cpu_s is None else tally.server_cpu_s / audio_s, 5
            ),
            "cores_busy": _rounded(_per_second(tally.server_cpu_s, wall_s)),
            "peak_rss_mib": _rounded(peak_rss_mib, 1),
        },
        "harness": {
            "cpu_s": _rounded(tally.harness_cpu_s),
            "cores_busy": _rounded(_per_second(tally.harness_cpu_s, wall_s)),
        },
        "load_average_1m": {
            "before": _rounded(run.load_average_1m[0], 2),
            "after": _rounded(run.load_average_1m[1], 2),
        },
        "audio_s": _rounded(audio_s, 1),
    }
    summary["complete"] = (
        not tally.timed_out
        and tally.failed_chunks == 0
        and all(
            r["windows"]["received"] == r["windows"]["expected"]
            and r["windows"]["missing"] == r["windows"]["duplicates"] == 0
            and r["windows"]["unexpected"] == r["windows"]["mislabelled"] == 0
            and r["streams_ended"] == r["streams"]
            for r in readers.values()
        )
    )
    return summary
