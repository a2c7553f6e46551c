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


# -- SSE against long-polling (benchmarks.sse_latency) --------------------------------------

SSE_STREAMS = 4  # two read by SSE, two by long-polling status
SSE_DURATION_S = 3.0
SSE_RUN_KEYS = {
    "streams", "duration_s", "transport", "chunks_per_stream", "wall_s", "timed_out", "readers",
    "sse_over_poll", "sse", "poll", "ack_latency_ms", "send_lag_ms", "chunks", "errors", "server",
    "harness", "load_average_1m", "audio_s", "complete",
}  # fmt: skip


@pytest.fixture(scope="module")
def sse_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, str]:
    out = tmp_path_factory.mktemp("sse-bench")
    command = [
        sys.executable, "-m", "benchmarks.sse_latency", "--streams", str(SSE_STREAMS),
        "--duration", str(SSE_DURATION_S), "--runs", "1", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=40
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "result.json").read_text()), out, done.stdout


@pytest.mark.timeout(60)
def test_sse_result_json_is_complete(sse_result: tuple[dict[str, Any], Path, str]) -> None:
    document, out, stdout = sse_result
    assert document["schema"] == "tympan-sse-latency/1"
    for key in ("started_at", "command", "config", "machine", "git", "server", "audio", "readers"):
        assert key in document
    assert {"cpu_model", "cpu_flags", "cpu_cores", "load_average_1m"} <= document["machine"].keys()
    assert document["readers"]["sse_streams"] == document["readers"]["poll_streams"] == 2
    [run] = document["runs"]
    assert run.keys() >= SSE_RUN_KEYS
    for kind in ("sse", "poll"):
        reader = run["readers"][kind]
        for name in (
            "latency_from_ack_ms",
            "latency_from_send_ms",
            "tail_window_from_readonly_ms",
            "end_from_readonly_ms",
        ):
            assert reader[name].keys() >= DISTRIBUTION_KEYS
        assert len(reader["latency_from_ack_cdf_ms"]) == 101
        assert reader["latency_from_ack_cdf_ms"] == sorted(reader["latency_from_ack_cdf_ms"])
    for since in ("from_ack", "from_send"):
        assert run["sse_over_poll"][since].keys() == {"p50", "p90", "p99", "max"}
    assert run["server"]["cpu_s"] is not None and run["server"]["cpu_s"] >= 0
    assert "x p99" in stdout and stdout.count(" sse ") == stdout.count(" poll ") == 1
    assert (out / "result.png").read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.timeout(60)
def test_sse_and_polling_readers_each_get_every_window_once(
    sse_result: tuple[dict[str, Any], Path, str],
) -> None:
    [run] = sse_result[0]["runs"]
    chunks_per_stream = round(SSE_DURATION_S / HOP_S)
    assert run["complete"] is True and run["timed_out"] is False and run["errors"] == {}
    assert run["chunks"]["sent"] == run["chunks"]["acknowledged"] == SSE_STREAMS * chunks_per_stream
    for kind in ("sse", "poll"):
        reader = run["readers"][kind]
        windows = reader["windows"]
        # n chunks of one hop make n windows: n - 1 completed by chunks, one zero-padded tail.
        assert windows["expected"] == windows["received"] == 2 * chunks_per_stream, kind
        assert windows["measured"] + windows["tail"] == windows["received"]
        assert windows["tail"] == 2
        assert windows["missing"] == windows["duplicates"] == windows["out_of_order"] == 0
        assert windows["unexpected"] == windows["mislabelled"] == 0
        assert reader["streams"] == reader["streams_ended"] == 2
        assert reader["latency_from_ack_ms"]["count"] == windows["measured"]
        assert reader["latency_from_send_ms"]["count"] == windows["measured"]
        assert reader["tail_window_from_readonly_ms"]["count"] == 2
        assert reader["end_from_readonly_ms"]["count"] == 2
        assert len(reader["end_from_readonly_each_ms"]) == 2
    assert run["readers"]["sse"]["requests"] == 2  # one feed each, no reconnection
    assert run["sse"]["reconnects"] == 0


def test_reader_kinds_interleave() -> None:
    from benchmarks.harness.readers import reader_kinds

    assert reader_kinds(4, 0.5) == ["poll", "sse", "poll", "sse"]
    assert reader_kinds(3, 0.0) == ["poll"] * 3 and reader_kinds(3, 1.0) == ["sse"] * 3
    assert reader_kinds(200, 0.5).count("sse") == 100
    assert reader_kinds(9, 1 / 3).count("sse") == 3


def test_wire_cost_harness_runs_and_agrees_with_its_baseline(tmp_path: Path) -> None:
    """The harness checks that ``to_wire`` writes the body its hand-built baseline does."""
    from benchmarks import wire_cost

    out = tmp_path / "wire.json"
    assert wire_cost.main(["--windows", "3", "--runs", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["figures"]) >= {"status_by_hand", "status_to_wire", "chunk_1mib_parse"}
    assert report["machine"] and report["to_wire_over_by_hand"] > 0
