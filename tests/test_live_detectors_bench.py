"""The custom-detectors benchmark end to end, briefly (timings are not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.live_detectors import main


def test_the_live_detectors_harness_runs(tmp_path: Path) -> None:
    out = tmp_path / "live.json"
    args = ["--streams", "2", "--seconds", "3", "--runs", "1", "--repeat", "5", "--models", "0,1"]
    assert main([*args, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["summary"]) == {"0", "1"}
    assert result["per_chunk"]["head_segment_frames"] > 50
    with_model = result["runs"][0][1]
    assert with_model["models"] == 1 and with_model["head_calls"] > 0
    assert with_model["latency_from_completing_chunk_ms"]["p50"] > 0
