"""What declaring the wire types once costs per response and per request.

Usage: ``python -m benchmarks.wire_cost [--windows 32] [--tags 5] [--runs 7] [--out FILE.json]``

The types in ``protocol/`` (pydantic-annotated dataclasses) write every response and validate
every request. This measures, in one process and one run, a status page of ``--windows``
windows with ``--tags`` tags each written by ``to_wire`` against the same JSON-ready dict built
by hand (what the server did before: the baseline, the least work that gives the same body),
then the JSON encoding both share; a create-session body validated by ``CreateSession``; and a
1 MiB base64 chunk read by ``parse_chunk_data``. Each figure is the median of ``--runs`` runs of
many calls; the ratio to the baseline is what carries over between machines.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.machine import machine_info
from protocol.messages import (
    CreateSession,
    Page,
    Sense,
    SenseEvent,
    SenseEventTag,
    SessionRefs,
    SessionStatus,
    parse_chunk_data,
)
from protocol.states import SessionState
from protocol.wire import to_wire


def _status(windows: int, tags: int) -> SessionStatus:
    names = tuple(SenseEventTag(f"Tag {index}", 0.5) for index in range(tags))
    results = tuple(SenseEvent(i * 0.5, i * 0.5 + 0.975, names) for i in range(windows))
    page = Page(0, windows, windows * 4, "t" * 40)
    return SessionStatus(
        SessionState.WRITABLE, SessionRefs("s" * 32, 3), Sense(True, page, results)
    )


def _by_hand(status: SessionStatus) -> dict[str, Any]:
    page = status.page
    return {
        "state": status.state.value,
        "refs": {
            "session_id": status.refs.session_id,
            "chunk_sequence": status.refs.chunk_sequence,
        },
        "inference": {
            "in_progress": status.in_progress,
            "page": {
                "offset": page.offset,
                "count": page.count,
                "total": page.total,
                "next_token": page.next_token,
            },
            "results": [
                {
                    "start_time": w.start_time,
                    "end_time": w.end_time,
                    "tags": [{"name": t.name, "probability": t.probability} for t in w.tags],
                }
                for w in status.results
            ],
        },
    }


def _median_us(call: Callable[[], object], runs: int, calls: int) -> dict[str, float]:
    samples = [timeit.timeit(call, number=calls) / calls * 1e6 for _ in range(runs)]
    return {"median_us": statistics.median(samples), "min_us": min(samples), "max_us": max(samples)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--tags", type=int, default=5)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    status = _status(args.windows, args.tags)
    if to_wire(status) != _by_hand(status):
        print("to_wire and the baseline disagree", file=sys.stderr)
        return 1
    body = {
        "type": "stream",
        "content_type": "audio/x-raw; rate=16000; format=s16le",
        "events": {"threshold": 0.4, "tag_threshold": {"Dog": 0.3}},
        "tags_sensitivity": {"Speech": 1},
    }
    chunk = {"data": base64.b64encode(bytes(1 << 20)).decode()}
    calls = 2000
    figures = {
        "status_by_hand": _median_us(lambda: _by_hand(status), args.runs, calls),
        "status_to_wire": _median_us(lambda: to_wire(status), args.runs, calls),
        "status_json_encode": _median_us(lambda: json.dumps(_by_hand(status)), args.runs, calls),
        "create_session_parse": _median_us(lambda: CreateSession.from_body(body), args.runs, calls),
        "chunk_1mib_parse": _median_us(lambda: parse_chunk_data(chunk), args.runs, calls),
    }
    ratio = figures["status_to_wire"]["median_us"] / figures["status_by_hand"]["median_us"]
    report = {
        "machine": machine_info(),
        "command": "python -m benchmarks.wire_cost " + " ".join(argv or sys.argv[1:]),
        "windows": args.windows,
        "tags": args.tags,
        "figures": figures,
        "to_wire_over_by_hand": ratio,
    }
    for name, figure in figures.items():
        print(
            f"{name:>22}: median {figure['median_us']:8.1f} us "
            f"(min {figure['min_us']:.1f}, max {figure['max_us']:.1f})"
        )
    print(f"to_wire / by hand: {ratio:.2f}x")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
