"""Do dataset audio files being processed delay live streams?

    python -m benchmarks.processing_interference --streams 50 --duration 20 --rounds 3

One server (started here: loopback, temporary data dir). Each round runs the live-stream load
of ``benchmarks.latency`` twice, in alternating order: once alone, once while the server
processes a long dataset audio file (decode, 16 kHz mono, log-mel frames, YAMNet embeddings),
uploaded and confirmed just before, and checked to be still processing when the load ends (so
the whole run overlapped it). Reports window latency p50/p99 of both and their ratio per round;
alternation and several rounds keep drift (thermal, neighbours) out of the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import soundfile as sf

from benchmarks.harness.audio import encode_bodies, make_clip
from benchmarks.harness.load import LoadConfig, run_load
from benchmarks.harness.server import ManagedServer, ServerHandle
from benchmarks.harness.stats import summarize_run
from benchmarks.machine import machine_info

__all__ = ["main"]

_RATE_HZ = 16_000


def _long_wav(seconds: float) -> bytes:
    rng = np.random.default_rng(0)
    samples = (0.1 * rng.standard_normal(int(seconds * _RATE_HZ))).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, samples, _RATE_HZ, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


async def _call(
    http: aiohttp.ClientSession, method: str, url: str, key: str, **kw: Any
) -> dict[str, Any]:
    async with http.request(method, url, headers={"X-API-Key": key}, **kw) as response:
        body: dict[str, Any] = await response.json()
        if response.status >= 400:
            raise RuntimeError(f"{method} {url}: {response.status} {body}")
        return body


async def _start_processing(server: ServerHandle, dataset_id: str, data: bytes) -> str:
    """Upload and confirm a file; its processing starts at once."""
    base = f"{server.url}/api/v1/datasets/{dataset_id}/audio"
    async with aiohttp.ClientSession() as http:
        wanted = {"filename": "long.wav", "content_type": "audio/wav", "file_size": len(data)}
        info = await _call(http, "POST", base + "/upload-url", server.api_key, json=wanted)
        form = aiohttp.FormData()
        for name, value in info["fields"].items():
            form.add_field(name, value)
        form.add_field("file", data, filename="long.wav", content_type="audio/wav")
        async with http.post(info["upload_url"], data=form) as response:
            if response.status != 204:
                raise RuntimeError(f"form upload: {response.status} {await response.text()}")
        await _call(http, "POST", base + "/confirm", server.api_key, json=info)
    return str(info["audio_id"])


async def _status(server: ServerHandle, dataset_id: str, audio_id: str) -> str:
    url = f"{server.url}/api/v1/datasets/{dataset_id}/audio/{audio_id}"
    async with aiohttp.ClientSession() as http:
        return str((await _call(http, "GET", url, server.api_key))["processing_status"])


async def _rounds(server: ServerHandle, args: argparse.Namespace) -> list[dict[str, Any]]:
    clip = make_clip()
    bodies = encode_bodies(clip, "json")
    config = LoadConfig(
        streams=args.streams, files=0, duration_s=args.duration, transport="json", file_seconds=1
    )
    data = _long_wav(args.file_minutes * 60)
    async with aiohttp.ClientSession() as http:
        dataset = await _call(
            http,
            "POST",
            f"{server.url}/api/v1/datasets",
            server.api_key,
            json={"name": "bench", "artifact_types": [{"name": "glitch", "color": "#FF4444"}]},
        )
    rounds = []
    for index in range(args.rounds):
        round_result: dict[str, Any] = {}
        order = ("alone", "processing") if index % 2 == 0 else ("processing", "alone")
        for kind in order:
            audio_id = None
            if kind == "processing":
                audio_id = await _start_processing(server, dataset["id"], data)
                while await _status(server, dataset["id"], audio_id) == "pending":
                    await asyncio.sleep(0.05)
            tally = await run_load(server, config, bodies, None, 0)
            summary = summarize_run(config, tally, server.peak_rss_mib())
            if audio_id is not None:
                still = await _status(server, dataset["id"], audio_id)
                summary["file_still_processing_at_end"] = still == "processing"
                # The next "alone" run must be alone: let the file finish first.
                while await _status(server, dataset["id"], audio_id) in ("pending", "processing"):
                    await asyncio.sleep(0.5)
            round_result[kind] = summary
            latency = summary["window_latency_ms"]
            print(
                f"round {index + 1} {kind:>10}: window p50 {latency['p50']} ms, "
                f"p99 {latency['p99']} ms, complete={summary['complete']}",
                file=sys.stderr,
                flush=True,
            )
        alone, busy = (round_result[k]["window_latency_ms"] for k in ("alone", "processing"))
        round_result["p50_ratio"] = busy["p50"] / alone["p50"]
        round_result["p99_ratio"] = busy["p99"] / alone["p99"]
        rounds.append(round_result)
    return rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per stream")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--file-minutes", type=float, default=30.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out: Path = args.out or Path("benchmarks/out") / f"interference-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    with ManagedServer(log_path=out / "server.log") as server:
        rounds = asyncio.run(_rounds(server, args))
    p50 = [r["p50_ratio"] for r in rounds]
    p99 = [r["p99_ratio"] for r in rounds]
    report = {
        "machine": machine_info(),
        "command": "python -m benchmarks.processing_interference " + " ".join(argv or sys.argv[1:]),
        "rounds": rounds,
        "p50_ratio_median": statistics.median(p50),
        "p99_ratio_median": statistics.median(p99),
    }
    (out / "result.json").write_text(json.dumps(report, indent=2))
    print(f"p50 with/without processing: {', '.join(f'{r:.2f}' for r in p50)}")
    print(f"p99 with/without processing: {', '.join(f'{r:.2f}' for r in p99)}")
    print(f"wrote {out / 'result.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
