"""End-to-end latency and throughput of tympan under live streams and file uploads.

    python -m benchmarks.latency --streams 100 --files 2 --duration 30 --transport msgpack
    python -m benchmarks.latency --sweep --p99-bound-ms 250 --max-streams 600 --duration 20

Starts its own server (loopback, free port, temporary data dir) unless given ``--url`` and
``--api-key``. Writes ``result.json`` and ``result.png`` under ``--out`` and prints a table.
A window's latency runs from sending the chunk that completes it to receiving its result.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness.audio import (
    FILE_CHUNK_BYTES,
    SAMPLE_RATE_HZ,
    WAV_CONTENT_TYPE,
    ChunkBodies,
    encode_bodies,
    make_clip,
    wav_file_chunks,
)
from benchmarks.harness.load import LoadConfig, run_load
from benchmarks.harness.report import format_table, plot, result_header, write_json
from benchmarks.harness.server import ServerHandle, add_server_arguments, open_server
from benchmarks.harness.stats import run_passes, summarize_run

__all__ = ["main"]

SCHEMA = "tympan-latency/1"
_PAUSE_BETWEEN_PROBES_S = 2.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.latency", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--streams", type=int, default=10, help="live streams (sweep: first probe)")
    parser.add_argument("--files", type=int, default=1, help="concurrent file uploads")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of audio per stream")
    parser.add_argument("--file-seconds", type=float, default=300.0, help="length of each file")
    parser.add_argument("--transport", choices=("json", "msgpack"), default="json")
    add_server_arguments(parser, "benchmarks/out/<UTC time>")
    parser.add_argument("--sweep", action="store_true", help="find the most streams within bound")
    parser.add_argument("--p99-bound-ms", type=float, default=250.0)
    parser.add_argument("--max-streams", type=int, default=600)
    parser.add_argument(
        "--sweep-resolution",
        type=float,
        default=0.1,
        help="stop bisecting when the bracket is narrower than this share of the passing count",
    )
    return parser


class Benchmark:
    """Prepared audio, one server, and the result document that grows with each run."""

    def __init__(self, args: argparse.Namespace, server: ServerHandle, out: Path) -> None:
        self.args = args
        self.server = server
        self.out = out
        clip = make_clip()
        self.stream_bodies: ChunkBodies = encode_bodies(clip, args.transport)
        self.file_bodies, self.file_samples = wav_file_chunks(
            clip, args.file_seconds, args.transport
        )
        self.result: dict[str, Any] = result_header(
            SCHEMA, "benchmarks.latency", args, server, clip.shape[0] / SAMPLE_RATE_HZ
        )
        self.result["audio"].update(
            {
                "file_content_type": WAV_CONTENT_TYPE,
                "file_chunk_bytes": FILE_CHUNK_BYTES,
                "file_chunks": len(self.file_bodies),
            }
        )
        self.result.update(
            {
                "runs": [],
                "sweep": None,
            }
        )

    async def run(self, streams: int) -> dict[str, Any]:
        config = LoadConfig(
            streams=streams,
            files=self.args.files,
            duration_s=self.args.duration,
            transport=self.args.transport,
            file_seconds=self.args.file_seconds,
        )
        tally = await run_load(
            self.server, config, self.stream_bodies, self.file_bodies, self.file_samples
        )
        summary = summarize_run(config, tally, self.server.peak_rss_mib())
        self.result["runs"].append(summary)
        self.result["server"]["peak_rss_mib"] = summary["server"]["peak_rss_mib"]
        self.save()
        latency = summary["window_latency_ms"]
        print(
            f"  {streams:4d} streams: window p50 {latency['p50']} ms, p99 {latency['p99']} ms, "
            f"complete={summary['complete']}",
            file=sys.stderr,
            flush=True,
        )
        return summary

    async def sweep(self) -> None:
        """Double the streams while p99 stays in bound with nothing lost, then bisect."""
        bound = self.args.p99_bound_ms
        ceiling = self.args.max_streams
        record: dict[str, Any] = {"p99_bound_ms": bound, "max_streams": ceiling, "probes": []}
        self.result["sweep"] = record
        passing, failing = 0, None
        streams = max(1, min(self.args.streams, ceiling))
        started = time.monotonic()

        async def probe(n: int) -> bool:
            if record["probes"]:
                await asyncio.sleep(_PAUSE_BETWEEN_PROBES_S)
            summary = await self.run(n)
            ok = run_passes(summary, bound)
            record["probes"].append(
                {"streams": n, "p99_ms": summary["window_latency_ms"]["p99"], "passed": ok}
            )
            return ok

        while True:
            if not await probe(streams):
                failing = streams
                break
            passing = streams
            if streams >= ceiling:
                break
            streams = min(ceiling, streams * 2)
        while failing is not None and failing - passing > max(
            1, self.args.sweep_resolution * passing
        ):
            middle = (passing + failing) // 2
            if await probe(middle):
                passing = middle
            else:
                failing = middle
        record.update(
            largest_passing_streams=passing,
            smallest_failing_streams=failing,
            sweep_s=round(time.monotonic() - started, 1),
        )
        self.save()

    def save(self) -> None:
        write_json(self.result, self.out / "result.json")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.streams < 0 or args.files < 0 or args.duration <= 0:
        raise SystemExit("error: --streams and --files must be >= 0 and --duration > 0")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out: Path = args.out or Path("benchmarks/out") / stamp
    out.mkdir(parents=True, exist_ok=True)
    with open_server(
        args.url, args.api_key, args.server_pid, args.server_env, out / "server.log"
    ) as server:
        bench = Benchmark(args, server, out)
        asyncio.run(bench.sweep() if args.sweep else _single(bench))
    plot(bench.result, out / "result.png")
    print(format_table(bench.result["runs"]))
    sweep = bench.result["sweep"]
    if sweep is not None:
        print(
            f"\nlargest stream count with p99 <= {sweep['p99_bound_ms']:g} ms and no failed "
            f"chunks: {sweep['largest_passing_streams']} (first failing: "
            f"{sweep['smallest_failing_streams']}, {len(sweep['probes'])} probes)"
        )
    print(f"\nwrote {out / 'result.json'} and {out / 'result.png'}")
    return 0


async def _single(bench: Benchmark) -> None:
    await bench.run(bench.args.streams)


if __name__ == "__main__":
    raise SystemExit(main())
