"""Window latency of live streams read by Server-Sent Events against long-polling, in one run.

    python -m benchmarks.sse_latency --streams 200 --duration 20 --runs 3
    python -m benchmarks.sse_latency --streams 100 --runs 1 --sse-share 1   # SSE readers only

N live streams send 0.5 s raw s16le chunks in real time; each has one reader, and the readers
alternate: one stream's reader follows ``GET .../sse``, the next one's long-polls ``/status``
along ``next_token`` (``--sse-share`` changes the mix). Both kinds run against the same server at
the same moments, so a run compares them under one load; ``--runs`` repeats it on that server.

A window's latency runs from the client receiving the acknowledgement of the chunk that completes
it to the reader receiving the window (the readers differ only after the server has the audio;
the upload's own time is the same for both and is reported apart, as ack latency). The latency
from sending that chunk, as ``benchmarks.latency`` measures it, is recorded too, and so is the
time from the acknowledgement of ``make_readonly`` to the last (zero-padded) window and to the
reader learning that the session is over (``event: end``; a page without ``next_token``).

Starts its own server (loopback, free port, temporary data dir) unless given ``--url`` and
``--api-key``. Writes ``result.json`` and ``result.png`` under ``--out`` and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness.audio import SAMPLE_RATE_HZ, encode_bodies, make_clip
from benchmarks.harness.load import LoadConfig
from benchmarks.harness.reader_report import format_reader_table, plot_readers
from benchmarks.harness.reader_stats import summarize_readers
from benchmarks.harness.readers import reader_kinds, run_readers
from benchmarks.harness.report import result_header, write_json
from benchmarks.harness.server import ServerHandle, add_server_arguments, open_server

__all__ = ["main"]

SCHEMA = "tympan-sse-latency/1"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sse_latency", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--streams", type=int, default=200, help="live streams, one reader each")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of audio per stream")
    parser.add_argument("--runs", type=int, default=3, help="runs against the same server")
    parser.add_argument(
        "--sse-share",
        type=float,
        default=0.5,
        help="share of the streams read by SSE, interleaved with the polled ones (0..1)",
    )
    parser.add_argument(
        "--pause", type=float, default=3.0, help="seconds between runs (the server drains)"
    )
    parser.add_argument(
        "--transport",
        choices=("json", "msgpack"),
        default="json",
        help="chunk uploads and status pages (the SSE feed is text either way)",
    )
    add_server_arguments(parser, "benchmarks/out/sse-<UTC time>")
    return parser


class Benchmark:
    """Prepared audio, one server, and the result document that grows with each run."""

    def __init__(self, args: argparse.Namespace, server: ServerHandle, out: Path) -> None:
        self.args = args
        self.server = server
        self.out = out
        clip = make_clip()
        self.bodies = encode_bodies(clip, args.transport)
        kinds = reader_kinds(args.streams, args.sse_share)
        self.result: dict[str, Any] = result_header(
            SCHEMA, "benchmarks.sse_latency", args, server, clip.shape[0] / SAMPLE_RATE_HZ
        )
        self.result.update(
            {
                "readers": {
                    "sse_streams": kinds.count("sse"),
                    "poll_streams": kinds.count("poll"),
                    "assignment": "interleaved by stream index",
                    "latency": "chunk acknowledged (client-side) -> window received; "
                    "also from chunk sent",
                },
                "runs": [],
            }
        )

    async def run_all(self) -> None:
        config = LoadConfig(
            streams=self.args.streams,
            files=0,
            duration_s=self.args.duration,
            transport=self.args.transport,
        )
        for number in range(1, self.args.runs + 1):
            if number > 1:
                await asyncio.sleep(self.args.pause)
            run = await run_readers(self.server, config, self.bodies, self.args.sse_share)
            summary = summarize_readers(config, run, self.server.peak_rss_mib())
            self.result["runs"].append(summary)
            self.result["server"]["peak_rss_mib"] = summary["server"]["peak_rss_mib"]
            self.save()
            sse, poll = (summary["readers"][k]["latency_from_ack_ms"] for k in ("sse", "poll"))
            print(
                f"  run {number}: sse p50 {sse['p50']} p99 {sse['p99']} ms, "
                f"poll p50 {poll['p50']} p99 {poll['p99']} ms, complete={summary['complete']}",
                file=sys.stderr,
                flush=True,
            )

    def save(self) -> None:
        write_json(self.result, self.out / "result.json")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.streams < 1 or args.duration <= 0 or args.runs < 1:
        raise SystemExit("error: --streams and --runs must be >= 1 and --duration > 0")
    if not 0 <= args.sse_share <= 1:
        raise SystemExit("error: --sse-share must be between 0 and 1")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out: Path = args.out or Path("benchmarks/out") / f"sse-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    with open_server(
        args.url, args.api_key, args.server_pid, args.server_env, out / "server.log"
    ) as server:
        bench = Benchmark(args, server, out)
        asyncio.run(bench.run_all())
    plot_readers(bench.result, out / "result.png")
    print(format_reader_table(bench.result["runs"]))
    print(f"\nwrote {out / 'result.json'} and {out / 'result.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
