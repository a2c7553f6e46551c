"""The latency harness end to end, briefly: a real server subprocess, two live streams and one
file. Checks that result.json is complete and its counts add up, and that result.png is a PNG.
Timings are not asserted: they belong to the machine, not to the code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STREAMS = 2
FILES = 1
DURATION_S = 4.0
FILE_SECONDS = 20.0
HOP_S = 0.5

DISTRIBUTION_KEYS = {"count", "mean", "p50", "p90", "p99", "max"}
RUN_KEYS = {
    "streams", "files", "duration_s", "transport", "chunks_per_stream", "file_seconds", "wall_s",
    "timed_out", "window_latency_ms", "window_latency_cdf_ms", "ack_latency_ms",
    "file_ack_latency_ms", "send_lag_ms", "windows", "chunks", "status_polls", "throughput",
    "server", "harness", "audio_s", "complete",
}  # fmt: skip


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench")
    command = [
        sys.executable, "-m", "benchmarks.latency", "--streams", str(STREAMS),
        "--files", str(FILES), "--duration", str(DURATION_S),
        "--file-seconds", str(FILE_SECONDS), "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=40
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "win p99" in done.stdout
    return json.loads((out / "result.json").read_text()), out


@pytest.mark.timeout(60)
def test_result_json_is_complete(result: tuple[dict[str, Any], Path]) -> None:
    document, _ = result
    assert document["schema"] == "tympan-latency/1"
    for key in ("started_at", "command", "config", "machine", "git", "server", "audio", "runs"):
        assert key in document
    assert {"cpu_model", "cpu_cores", "memory_gib", "os", "python"} <= document["machine"].keys()
    assert document["server"]["managed"] is True
    assert document["sweep"] is None
    [run] = document["runs"]
    assert run.keys() >= RUN_KEYS
    for name in ("window_latency_ms", "ack_latency_ms", "file_ack_latency_ms", "send_lag_ms"):
        assert run[name].keys() >= DISTRIBUTION_KEYS
    assert len(run["window_latency_cdf_ms"]) == 101
    assert run["window_latency_cdf_ms"] == sorted(run["window_latency_cdf_ms"])
    assert run["server"]["cpu_s"] is not None and run["server"]["cpu_s"] >= 0
    assert run["harness"]["cpu_s"] >= 0


@pytest.mark.timeout(60)
def test_counts_are_consistent(result: tuple[dict[str, Any], Path]) -> None:
    [run] = result[0]["runs"]
    chunks_per_stream = round(DURATION_S / HOP_S)
    windows = run["windows"]
    assert run["complete"] is True and run["timed_out"] is False
    assert run["chunks"]["failed"] == 0
    assert run["chunks"]["sent"] == run["chunks"]["acknowledged"] == STREAMS * chunks_per_stream
    # n chunks of one hop make n windows: n - 1 completed by chunks, one zero-padded tail.
    assert windows["stream_expected"] == STREAMS * chunks_per_stream
    assert windows["stream_received"] == windows["stream_expected"]
    assert windows["stream_measured"] + windows["stream_tail"] == windows["stream_received"]
    assert windows["stream_tail"] == STREAMS
    assert windows["duplicates"] == 0
    assert windows["file_received"] == windows["file_expected"] == round(FILE_SECONDS / HOP_S)
    assert run["window_latency_ms"]["count"] == windows["stream_measured"]
    assert run["ack_latency_ms"]["count"] == run["chunks"]["acknowledged"]
    assert run["throughput"]["files_completed"] == FILES


@pytest.mark.timeout(60)
def test_result_png_is_a_png(result: tuple[dict[str, Any], Path]) -> None:
    png = result[1] / "result.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert png.stat().st_size > 10_000
