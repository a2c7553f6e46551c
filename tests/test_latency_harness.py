"""A short run of the latency harness: it starts its own server, drives streams and a file,
and writes complete, well-formed output. No timing is asserted (these machines are shared)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_harness_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.latency",
            "--streams",
            "2",
            "--files",
            "1",
            "--duration",
            "4",
            "--file-seconds",
            "20",
            "--transport",
            "msgpack",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=150,
    )
    result = json.loads((out / "result.json").read_text())
    assert result["schema"] == "tympan-latency/1"
    assert {"cpu_model", "cpu_cores"} <= set(result["machine"])
    assert len(result["git"]["commit"]) == 40
    (run,) = result["runs"]
    assert run["streams"] == 2 and run["files"] == 1 and run["transport"] == "msgpack"
    assert run["complete"] and not run["timed_out"]
    assert run["chunks"]["failed"] == 0
    assert run["chunks"]["acknowledged"] == run["chunks"]["sent"] == 2 * run["chunks_per_stream"]
    windows = run["windows"]
    assert windows["stream_received"] == windows["stream_expected"] > 0
    for figure in ("window_latency_ms", "ack_latency_ms"):
        stats = run[figure]
        assert stats["count"] > 0
        assert 0 <= stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]
    assert run["throughput"]["files_completed"] == 1
    assert run["server"]["cpu_s"] > 0 and run["harness"]["cpu_s"] > 0
    assert (out / "result.png").read_bytes().startswith(PNG_SIGNATURE)
