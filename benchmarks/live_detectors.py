"""What a custom detector model costs a live stream, against YAMNet's cost in the same run.

Usage: ``python -m benchmarks.live_detectors [--streams 40] [--seconds 20] [--models 0,1,2]
[--runs 3] [--out FILE.json]``

- Per chunk, in one thread: YAMNet's share of a 0.5 s chunk (frontend + one window through
  the model at batch 1 and at batch 16, per window) against a model's (its frame features
  recomputed over the sliding buffer, ``server.detectors.feature_stream``, and its head over
  the chunk's frames, alone and as one of 16 sessions' segments in one call).
- In the engine (no HTTP): N live streams, each 0.5 s of audio every 0.5 s, with 0, 1, 2 ...
  models each (the tiny trained head of ``tests.detector_fixtures``, renamed per model so that
  their types differ); CPU seconds of the process per audio second, window latency, and the
  heads' calls (mean segments per call: the batching across sessions). Configurations
  alternate within each run, so drifts of a shared machine hit them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.engine import CHUNK_BYTES, HOP_S, RAW_S16, _percentiles, _real_audio, _start
from benchmarks.machine import machine_info
from models.heads.export import export_onnx
from models.yamnet.spec import FRONTEND, WEIGHTS_DIR
from server.appkeys import BLOBS, DETECTOR_MODELS, KEYS
from server.audio import DecodeLimits, parse_content_type
from server.config import Settings
from server.detectors.head_batch import run_segments
from server.detectors.live import DetectorModel, SessionDetectors
from server.detectors.loader import store_model
from server.pipeline import AudioPipeline
from server.runner import load_head_runner, load_runner
from tests.detector_fixtures import install_model, tiny_head

__all__ = ["main"]


def _onnx(n: int) -> bytes:
    types = [f"{name}_{n}" for name in tiny_head().artifact_types]
    return export_onnx(tiny_head(), extra={"artifact_types": json.dumps(types)})


def _per_call_ms(fn: Any, repeat: int) -> float:
    fn()
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return 1000.0 * (time.perf_counter() - started) / repeat


def measure_per_chunk(settings: Settings, audio: bytes, repeat: int) -> dict[str, float]:
    """Milliseconds of one thread per 0.5 s chunk of one stream."""
    yamnet = load_runner(settings, settings.model_dir or WEIGHTS_DIR)
    head = load_head_runner(_onnx(0))
    fmt = parse_content_type(RAW_S16)
    chunks = [audio[i : i + CHUNK_BYTES] for i in range(0, 40 * CHUNK_BYTES, CHUNK_BYTES)]
    samples = [np.frombuffer(c, "<i2").astype(np.float32) / 32768 for c in chunks]
    pipeline = AudioPipeline(fmt, HOP_S, DecodeLimits(), prepare=yamnet.prepare)
    batches = [pipeline.feed_chunk(c) for c in chunks]
    patch = next(b.patches for b in batches if len(b))[:1]
    hop_frames = FRONTEND.hop_frames(HOP_S)

    def frontend() -> None:
        p = AudioPipeline(fmt, HOP_S, DecodeLimits(), prepare=yamnet.prepare)
        for chunk in chunks:
            p.feed_chunk(chunk)

    def stream_segments(run_head: bool) -> list[Any]:
        d = SessionDetectors([DetectorModel("m", head)], hop_frames)
        out = []
        for i, s in enumerate(samples):
            seg = d.advance(s, i * len(s))[0]
            if seg is not None:  # the head's answer, or a stand-in when timing features alone
                p = head.run(seg.features) if run_head else np.zeros((seg.frames, 2), np.float32)
                d.accept(0, p[seg.keep_from : seg.keep_from + seg.keep_count])
                out.append(seg)
        return out

    def features() -> None:
        stream_segments(run_head=False)

    segment = stream_segments(run_head=True)[10]
    sixteen = [segment] * 16
    patches16 = np.repeat(patch, 16, axis=0)
    return {
        "yamnet_frontend_ms": _per_call_ms(frontend, max(1, repeat // 40)) / len(chunks),
        "yamnet_model_batch1_ms": _per_call_ms(lambda: yamnet.run(patch), repeat),
        "yamnet_model_batch16_ms": _per_call_ms(lambda: yamnet.run(patches16), repeat) / 16,
        "head_features_ms": _per_call_ms(features, max(1, repeat // 40)) / len(samples),
        "head_run_alone_ms": _per_call_ms(lambda: run_segments(head, [segment]), repeat),
        "head_run_in_16_ms": _per_call_ms(lambda: run_segments(head, sixteen), repeat) / 16,
        "head_segment_frames": float(segment.frames),
    }


async def run_streams(
    settings: Settings, streams: int, seconds: float, models: int
) -> dict[str, Any]:
    runner, service, key = await _start(settings)
    app = runner.app
    try:
        team = str(app[KEYS].authenticate(key).key_id)
        loader = app[DETECTOR_MODELS]
        model_ids = []
        for n in range(models):
            record = await install_model(loader.repository, app[BLOBS], team, model_id=f"m{n}")
            await loader.repository.delete(team, record.model_id)
            await store_model(loader.repository, app[BLOBS], record, _onnx(n))
            model_ids.append(record.model_id)
        audio = _real_audio(seconds)
        chunks = int(seconds / HOP_S)
        sessions = []
        for _ in range(streams):
            body = {"type": "stream", "content_type": RAW_S16, "model_ids": model_ids}
            sessions.append((await service.create(key, body)).refs.session_id)
        sent: dict[str, list[float]] = {s: [] for s in sessions}
        stored: dict[str, dict[int, float]] = {s: {} for s in sessions}

        def listener(session_id: str, first_index: int, count: int) -> None:
            now = time.perf_counter()
            for index in range(first_index, first_index + count):
                stored[session_id].setdefault(index, now)

        engine = service._engine
        engine.result_listeners.append(listener)
        heads0 = (engine.heads.stats.calls, engine.heads.stats.segments)

        async def stream(session_id: str, t0: float) -> None:
            for seq in range(chunks):
                delay = t0 + seq * HOP_S - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent[session_id].append(time.perf_counter())
                data = audio[seq * CHUNK_BYTES : (seq + 1) * CHUNK_BYTES]
                await service.put_chunk(session_id, str(seq), None, data)

        start = time.perf_counter() + 0.5
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(
            *(stream(s, start + i * HOP_S / streams) for i, s in enumerate(sessions))
        )
        windows = chunks - 2  # with models, window k is stored once chunk k + 2 is in
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline and any(len(v) < windows for v in stored.values()):
            await asyncio.sleep(0.05)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        latencies = [
            stored[s][k] - sent[s][k + 1]
            for s in sessions
            for k in range(windows)
            if k in stored[s]
        ]
        calls = engine.heads.stats.calls - heads0[0]
        segments = engine.heads.stats.segments - heads0[1]
        return {
            "models": models,
            "streams": streams,
            "cpu_s_per_audio_s": cpu / (streams * chunks * HOP_S),
            "wall_s": wall,
            "latency_from_completing_chunk_ms": _percentiles(latencies),
            "head_calls": calls,
            "head_segments_per_call": segments / calls if calls else 0.0,
        }
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--models", default="0,1,2")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=400)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.models.split(",")]
    import tempfile

    results: dict[str, Any] = {"machine": machine_info(), "args": vars(args) | {"out": None}}
    with tempfile.TemporaryDirectory() as tmp:
        base = Settings.from_env({}, data_dir=Path(tmp) / "chunk", fsync=False)
        per_chunk = [
            measure_per_chunk(base, _real_audio(20.0), args.repeat) for _ in range(args.runs)
        ]
        results["per_chunk"] = {
            name: statistics.median(run[name] for run in per_chunk) for name in per_chunk[0]
        }
        runs: list[list[dict[str, Any]]] = []
        for r in range(args.runs):
            row = []
            for models in counts:
                settings = Settings.from_env({}, data_dir=Path(tmp) / f"r{r}m{models}", fsync=False)
                row.append(asyncio.run(run_streams(settings, args.streams, args.seconds, models)))
                print(json.dumps(row[-1]), flush=True)
            runs.append(row)
    results["runs"] = runs
    summary = {}
    for i, models in enumerate(counts):
        cpu = [row[i]["cpu_s_per_audio_s"] for row in runs]
        base_cpu = [row[0]["cpu_s_per_audio_s"] for row in runs]
        summary[str(models)] = {
            "cpu_ms_per_audio_s": [round(1000 * c, 2) for c in cpu],
            "vs_no_models": [round(c / b, 3) for c, b in zip(cpu, base_cpu, strict=True)],
            "head_segments_per_call": [round(row[i]["head_segments_per_call"], 2) for row in runs],
            "latency_p50_ms": [
                round(row[i]["latency_from_completing_chunk_ms"]["p50"]) for row in runs
            ],
            "latency_p99_ms": [
                round(row[i]["latency_from_completing_chunk_ms"]["p99"]) for row in runs
            ],
        }
    results["summary"] = summary
    text = json.dumps({"per_chunk": results["per_chunk"], "summary": summary}, indent=2)
    print(text)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
