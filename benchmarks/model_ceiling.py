"""The bare model's ceiling: patches per second per variant x batch size x intra-op threads.

Usage: ``python -m benchmarks.model_ceiling [--variants w8a8,w8a8-dyn,w8a8-u8,fp32]
[--batches 1,2,4,8,16,32,64,128] [--threads 1,2] [--runs 5] [--seconds 3] [--out FILE.json]``

No decoding, no frontend, no server: one ONNX Runtime session per variant and thread count, fed
log-mel patches of noise (the kernels' cost does not depend on the values) for ``--seconds`` per
run. A fixed-batch model (the fetched w8a8) is run one patch at a time, as the runner must run it,
so its "batch" is only a loop. Reported per cell: median patches/s and its spread (min, max) over
``--runs``, and the p50/p90 time of one batch over every call of every run. The best batch size
per variant is the fastest median; the knee is the smallest batch within 5% of it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.machine import machine_info as base_machine_info
from models.yamnet.spec import FRONTEND, WEIGHTS_DIR
from models.yamnet.variants import (
    ORIGINAL,
    VariantMetadata,
    load_variant_metadata,
    prepare_variants,
    variant_path,
)

__all__ = ["Cell", "measure_ceiling", "run_benchmark"]

PROVIDER = "CPUExecutionProvider"
WARMUP_CALLS = 3
KNEE_FRACTION = 0.95
SEED = 20240501


@dataclass(frozen=True)
class Cell:
    """One variant x batch x threads measurement."""

    variant: str
    batch: int
    threads: int
    patches_per_s_median: float
    patches_per_s_min: float
    patches_per_s_max: float
    patches_per_cpu_s_median: float  # per CPU-second of this process: robust to a busy host
    ms_per_batch_p50: float
    ms_per_batch_p90: float
    runs: int


def _session(path: Path, threads: int) -> ort.InferenceSession:
    """The runner's settings: intra-op threads as asked, one inter-op thread, sequential."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=[PROVIDER])


def _feed(meta: VariantMetadata, batch: int) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    log_mel = rng.normal(-2.0, 1.5, (batch, FRONTEND.patch_frames, FRONTEND.mel_bands))
    return meta.model_input(log_mel)


def _timed_run(
    session: ort.InferenceSession, meta: VariantMetadata, feed: np.ndarray, seconds: float
) -> tuple[float, float, list[float]]:
    """Patches per wall second and per CPU second over ``seconds``, and each call's duration."""
    step = len(feed) if meta.dynamic_batch else 1
    pieces = [feed[i : i + step] for i in range(0, len(feed), step)]
    durations: list[float] = []
    cpu_start = time.process_time()
    start = time.perf_counter()
    while True:
        call_start = time.perf_counter()
        for piece in pieces:
            session.run(None, {meta.input_name: piece})
        now = time.perf_counter()
        durations.append(now - call_start)
        if now - start >= seconds:
            done = len(durations) * len(feed)
            cpu_s = max(time.process_time() - cpu_start, 1e-9)
            return done / (now - start), done / cpu_s, durations


def _warm(session: ort.InferenceSession, meta: VariantMetadata, feed: np.ndarray) -> None:
    step = len(feed) if meta.dynamic_batch else 1
    for _ in range(WARMUP_CALLS):
        session.run(None, {meta.input_name: feed[:step]})


def measure_ceiling(variant_path: Path, batch: int, threads: int, seconds: float) -> float:
    """Patches per second of one model file at one batch size on the CPU provider."""
    meta = load_variant_metadata(variant_path)
    session = _session(variant_path, threads)
    feed = _feed(meta, batch)
    _warm(session, meta, feed)
    return _timed_run(session, meta, feed, seconds)[0]


def _measure_variant(
    name: str, path: Path, batches: list[int], threads: int, runs: int, seconds: float
) -> list[Cell]:
    """One session for all batch sizes; runs interleave batch sizes so drift hits all alike."""
    meta = load_variant_metadata(path)
    session = _session(path, threads)
    feeds = {batch: _feed(meta, batch) for batch in batches}
    rates: dict[int, list[float]] = {batch: [] for batch in batches}
    cpu_rates: dict[int, list[float]] = {batch: [] for batch in batches}
    durations: dict[int, list[float]] = {batch: [] for batch in batches}
    for _ in range(runs):
        for batch in batches:
            _warm(session, meta, feeds[batch])
            rate, cpu_rate, calls = _timed_run(session, meta, feeds[batch], seconds)
            rates[batch].append(rate)
            cpu_rates[batch].append(cpu_rate)
            durations[batch].extend(calls)
    cells = []
    for batch in batches:
        ms = np.array(durations[batch]) * 1000.0
        cells.append(
            Cell(
                variant=name,
                batch=batch,
                threads=threads,
                patches_per_s_median=statistics.median(rates[batch]),
                patches_per_s_min=min(rates[batch]),
                patches_per_s_max=max(rates[batch]),
                patches_per_cpu_s_median=statistics.median(cpu_rates[batch]),
                ms_per_batch_p50=float(np.percentile(ms, 50)),
                ms_per_batch_p90=float(np.percentile(ms, 90)),
                runs=runs,
            )
        )
    return cells


def _best(cells: list[Cell]) -> dict[str, dict[str, int | float]]:
    """Per variant and thread count: the fastest batch and the knee (smallest within 5%)."""
    best: dict[str, dict[str, int | float]] = {}
    for key in sorted({(c.variant, c.threads) for c in cells}):
        group = [c for c in cells if (c.variant, c.threads) == key]
        top = max(group, key=lambda c: c.patches_per_s_median)
        knee = min(
            (
                c
                for c in group
                if c.patches_per_s_median >= KNEE_FRACTION * top.patches_per_s_median
            ),
            key=lambda c: c.batch,
        )
        best[f"{key[0]}@{key[1]}t"] = {
            "best_batch": top.batch,
            "best_patches_per_s": round(top.patches_per_s_median, 1),
            "knee_batch": knee.batch,
            "knee_patches_per_s": round(knee.patches_per_s_median, 1),
        }
    return best


def machine_info() -> dict[str, object]:
    """What the numbers depend on; the load average says whether the host was busy."""
    return {
        **base_machine_info(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "provider": PROVIDER,
    }


def _resolve(names: list[str], weights_dir: Path) -> dict[str, Path]:
    derived = tuple(n for n in names if n != ORIGINAL)
    paths = prepare_variants(weights_dir, names=derived) if derived else {}
    return {n: variant_path(n, weights_dir) if n == ORIGINAL else paths[n] for n in names}


def run_benchmark(
    names: list[str],
    batches: list[int],
    threads: list[int],
    runs: int,
    seconds: float,
    weights_dir: Path = WEIGHTS_DIR,
) -> dict[str, object]:
    machine = machine_info()
    paths = _resolve(names, weights_dir)
    cells: list[Cell] = []
    for name, path in paths.items():
        for count in threads:
            cells += _measure_variant(name, path, batches, count, runs, seconds)
            print(f"measured {name} with {count} thread(s)", file=sys.stderr)
    machine["load_average_1m_after"] = os.getloadavg()[0]
    return {
        "machine": machine,
        "settings": {"runs": runs, "seconds": seconds, "batches": batches, "threads": threads},
        "cells": [asdict(c) for c in cells],
        "best": _best(cells),
    }


def format_table(report: dict[str, object]) -> str:
    cells = [Cell(**c) for c in report["cells"]]  # type: ignore[attr-defined]
    lines = [
        f"{'variant':9} {'thr':>3} {'batch':>5} {'patches/s':>10} {'(min':>8} {'max)':>8} "
        f"{'per cpu-s':>10} {'ms/batch p50':>12} {'p90':>8}"
    ]
    for c in cells:
        lines.append(
            f"{c.variant:9} {c.threads:>3} {c.batch:>5} {c.patches_per_s_median:>10.1f} "
            f"{c.patches_per_s_min:>8.1f} {c.patches_per_s_max:>8.1f} "
            f"{c.patches_per_cpu_s_median:>10.1f} "
            f"{c.ms_per_batch_p50:>12.2f} {c.ms_per_batch_p90:>8.2f}"
        )
    lines.append("")
    for key, best in report["best"].items():  # type: ignore[attr-defined]
        lines.append(
            f"{key:14} best batch {best['best_batch']:>4} ({best['best_patches_per_s']} p/s), "
            f"knee {best['knee_batch']:>4} ({best['knee_patches_per_s']} p/s)"
        )
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="w8a8,w8a8-dyn,w8a8-u8,fp32")
    parser.add_argument("--batches", type=_ints, default=_ints("1,2,4,8,16,32,64,128"))
    parser.add_argument("--threads", type=_ints, default=_ints("1,2"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    args = parser.parse_args(argv)
    report = run_benchmark(
        args.variants.split(","),
        args.batches,
        args.threads,
        args.runs,
        args.seconds,
        args.weights_dir,
    )
    print(json.dumps(report["machine"]))
    print(format_table(report))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
