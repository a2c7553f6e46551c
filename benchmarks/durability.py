"""The measured cost of durability: chunks acknowledged per second with ``TYMPAN_FSYNC=true``
against ``false``, in one run, the two configurations alternating to spread drift and noise.

    python -m benchmarks.durability --runs 5 --duration 10 --out benchmarks/out/durability.json

Three cases, each against a fresh server and data dir per run: ``sequential`` (one stream
session uploading 0.5 s chunks back to back: every ack waits for its own commit), ``streams``
(64 stream sessions back to back: group commit shares one commit among many chunks) and
``files`` (1 MiB chunks from 4 file sessions). The data dir lives under ``--data-root`` on the
disk the repository is on, because on tmpfs an fsync costs nothing. With ``--count-commits``
(the default when strace is installed) one extra run per case with fsync on is traced to count
the store's commits (WAL fdatasyncs); ptrace slows that run, so it is kept out of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import numpy as np

from benchmarks.machine import launch_server, process_cpu_seconds, stop_server
from benchmarks.machine import machine_info as base_machine_info

__all__ = [
    "ServerProcess",
    "git_state",
    "machine_info",
    "main",
    "percentile",
    "process_cpu_seconds",
]

SCHEMA = "tympan-durability/1"
API = "/api/v1/audio_sessions"
SAMPLE_RATE_HZ = 16_000
STREAM_CHUNK_BYTES = 16_000  # 0.5 s of 16 kHz s16le mono
FILE_CHUNK_BYTES = 1024 * 1024
RAW_CONTENT_TYPE = "audio/x-raw; rate=16000; format=s16le"
# Sessions are replaced before they reach the server's per-session audio limit (4 h).
MAX_SESSION_AUDIO_S = 3.5 * 3600.0
# What is measured is storage, so the per-key request rate limit is off.
SERVER_ENV = {"TYMPAN_RATE_LIMIT_PER_KEY": "0"}
_DISTINCT_BODIES = 8
_SETTLE_S = 1.0
_MAX_CONSECUTIVE_ERRORS = 20
_ERROR_BACKOFF_S = 0.05
_FSYNC_PROBE_WRITES = 200
_REPO_ROOT = Path(__file__).resolve().parents[1]
_SERVER_PACKAGES = ("server", "protocol", "models")
_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "stream" or "file"
    sessions: int
    chunk_bytes: int

    @property
    def chunks_per_session(self) -> int:
        seconds_per_chunk = self.chunk_bytes / (2 * SAMPLE_RATE_HZ)
        return max(1, int(MAX_SESSION_AUDIO_S / seconds_per_chunk))


# -- server ---------------------------------------------------------------------------------


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat), to see other load."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / _CLOCK_TICKS_PER_S


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def snapshot_source(destination: Path) -> str:
    """Copy the server's code (``server``, ``protocol``, ``models``; the weights linked, not
    copied) so that every run of a benchmark starts the same code while the tree is being
    edited. Returns a short sha256 over the copied sources, to name that code in the results."""
    shutil.rmtree(destination, ignore_errors=True)
    digest = hashlib.sha256()
    for package in _SERVER_PACKAGES:
        shutil.copytree(
            _REPO_ROOT / package,
            destination / package,
            ignore=shutil.ignore_patterns("__pycache__", "weights"),
        )
        for path in sorted((destination / package).rglob("*.py")):
            digest.update(str(path.relative_to(destination)).encode() + path.read_bytes())
    for weights in (_REPO_ROOT / "models").glob("*/weights"):
        link = destination / weights.relative_to(_REPO_ROOT)
        link.symlink_to(weights.resolve(), target_is_directory=True)
    return digest.hexdigest()[:16]


class ServerProcess:
    """``tympan serve`` in a subprocess on a free loopback port, with a key of its own, over a
    data dir that it creates afresh; a context manager that stops it (SIGINT, then SIGKILL)."""

    def __init__(
        self, data_dir: Path, env: dict[str, str] | None = None, source: Path | None = None
    ) -> None:
        """``source``: a ``snapshot_source`` folder to run the server from instead of the tree."""
        self.data_dir = data_dir.resolve()
        self.env = {**os.environ, **(env or {})}
        self.source = source
        if source is not None:
            self.env["PYTHONPATH"] = str(source)
        self.url = ""
        self.api_key = ""
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the server is not running")
        return self._process.pid

    def __enter__(self) -> ServerProcess:
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir(parents=True)
        self._process, self.url, self.api_key = launch_server(
            self.data_dir, self.env, self.data_dir / "server.log", cwd=self.source
        )
        return self

    def stop(self) -> int | None:
        """Stop the server; its exit status (None if it never started)."""
        return stop_server(self._process)

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# -- machine --------------------------------------------------------------------------------


def _first_line_value(path: str, prefix: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    return None


def _filesystem(path: Path) -> dict[str, Any]:
    """Device, filesystem type and mount point of ``path`` (``df -T``), and whether the block
    device says it is rotational (a VM's virtual disk often claims 1 whatever backs it)."""
    info: dict[str, Any] = {"path": str(path)}
    with contextlib.suppress(OSError, subprocess.CalledProcessError, IndexError):
        out = subprocess.run(
            ["df", "-T", str(path)], check=True, capture_output=True, text=True
        ).stdout
        device, fstype, *_, mount = out.splitlines()[1].split()
        info.update(device=device, fstype=fstype, mount=mount)
        name = re.sub(r"p?\d+$", "", Path(device).name)
        rotational = Path(f"/sys/block/{name}/queue/rotational")
        if rotational.exists():
            info["rotational"] = rotational.read_text().strip() == "1"
    return info


def machine_info(data_dir: Path | None = None) -> dict[str, Any]:
    info = base_machine_info()
    if data_dir is not None:
        info["data_dir_filesystem"] = _filesystem(data_dir)
    return info


def fsync_probe(directory: Path, size_bytes: int = STREAM_CHUNK_BYTES) -> dict[str, float]:
    """What one write + fsync of a chunk-sized file costs on this filesystem, without tympan."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "fsync-probe.bin"
    payload = os.urandom(size_bytes)
    latencies_ms = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(_FSYNC_PROBE_WRITES):
            started = time.perf_counter()
            os.pwrite(fd, payload, 0)
            os.fsync(fd)
            latencies_ms.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return {
        "writes": _FSYNC_PROBE_WRITES,
        "bytes": size_bytes,
        "p50_ms": percentile(latencies_ms, 50),
        "p99_ms": percentile(latencies_ms, 99),
    }


def git_state() -> dict[str, Any]:
    """HEAD and whether the server's packages differ from it, taken when a run starts."""

    def git(*args: str) -> str | None:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            return subprocess.run(
                ["git", *args], cwd=_REPO_ROOT, capture_output=True, text=True, check=True
            ).stdout.strip()
        return None

    changes = git("status", "--porcelain", "--", *_SERVER_PACKAGES)
    return {"commit": git("rev-parse", "HEAD"), "server_code_dirty": bool(changes)}


# -- load -----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def _bodies(chunk_bytes: int, transport: str) -> tuple[list[bytes], str]:
    """A few distinct chunks of tone + noise, encoded once before the clock starts."""
    rng = np.random.default_rng(chunk_bytes)
    samples = chunk_bytes // 2
    t = np.arange(samples) / SAMPLE_RATE_HZ
    bodies = []
    for index in range(_DISTINCT_BODIES):
        wave = 0.2 * np.sin(2 * np.pi * (220 + 55 * index) * t) + 0.05 * rng.standard_normal(
            samples
        )
        raw = (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()
        if transport == "msgpack":
            bodies.append(bytes(msgpack.packb({"data": raw}, use_bin_type=True)))
        else:
            bodies.append(json.dumps({"data": base64.b64encode(raw).decode()}).encode())
    content_type = "application/msgpack" if transport == "msgpack" else "application/json"
    return bodies, content_type


@dataclass
class LoadOutcome:
    acks: list[tuple[float, float]] = field(default_factory=list)  # (done at, latency s)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    sessions_created: int = 0

    def error(self, what: str, detail: str) -> None:
        self.errors[what] += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(f"{what}: {detail[:300]}")


async def _create(http: aiohttp.ClientSession, url: str, key: str, kind: str) -> str:
    body = {"type": kind, "content_type": RAW_CONTENT_TYPE}
    async with http.post(url + API + "/", json=body, headers={"x-api-key": key}) as response:
        text = await response.text()
        if response.status != 200:
            raise RuntimeError(f"create {kind} session: {response.status} {text[:300]}")
        return str(json.loads(text)["session_id"])


async def _upload(
    http: aiohttp.ClientSession,
    server: ServerProcess,
    case: Case,
    bodies: tuple[list[bytes], str],
    stop_at: float,
    outcome: LoadOutcome,
    offset: int,
) -> None:
    """One session's chunks back to back until ``stop_at``; a new session past the audio cap."""
    payloads, content_type = bodies
    headers = {"Content-Type": content_type}
    session_id, seq, failures = "", 0, 0
    while time.perf_counter() < stop_at and failures < _MAX_CONSECUTIVE_ERRORS:
        if not session_id or seq >= case.chunks_per_session:
            try:
                session_id, seq = await _create(http, server.url, server.api_key, case.kind), 0
            except (RuntimeError, aiohttp.ClientError) as exc:
                outcome.error("POST session", str(exc))
                failures += 1
                await asyncio.sleep(_ERROR_BACKOFF_S)
                continue
            outcome.sessions_created += 1
        started = time.perf_counter()
        try:
            async with http.put(
                f"{server.url}{API}/{session_id}/chunks/{seq}",
                data=payloads[(seq + offset) % len(payloads)],
                headers=headers,
            ) as response:
                text = await response.text()
                status = response.status
        except aiohttp.ClientError as exc:
            status, text = 0, repr(exc)
        done = time.perf_counter()
        if 200 <= status < 300:
            outcome.acks.append((done, done - started))
            seq, failures = seq + 1, 0
        else:
            outcome.error(f"PUT chunk -> {status}", text)
            failures += 1
            await asyncio.sleep(_ERROR_BACKOFF_S)


async def _run_load(
    server: ServerProcess, case: Case, transport: str, warmup_s: float, duration_s: float
) -> tuple[LoadOutcome, float, float]:
    bodies = _bodies(case.chunk_bytes, transport)
    outcome = LoadOutcome()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        start = time.perf_counter()
        measure_from = start + warmup_s
        stop_at = measure_from + duration_s
        await asyncio.gather(
            *(
                _upload(http, server, case, bodies, stop_at, outcome, offset)
                for offset in range(case.sessions)
            )
        )
    return outcome, measure_from, stop_at


# -- one measurement --------------------------------------------------------------------------


@contextlib.contextmanager
def _strace_fsyncs(pid: int, path: Path) -> Any:
    """Count fsync/fdatasync calls of ``pid`` (all threads) while the block runs."""
    tracer = subprocess.Popen(
        ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", str(path), "-p", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # let it attach to every thread
    try:
        yield
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(10)


def _syscall_counts(path: Path) -> dict[str, int]:
    counts = {"fsync": 0, "fdatasync": 0}  # strace -c leaves out what was never called
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[-1] in ("fsync", "fdatasync"):
                counts[parts[-1]] = int(parts[3])
    return counts


def measure(
    case: Case,
    fsync: bool,
    data_dir: Path,
    transport: str,
    warmup_s: float,
    duration_s: float,
    count_commits: bool = False,
    source: Path | None = None,
) -> dict[str, Any]:
    env = {**SERVER_ENV, "TYMPAN_FSYNC": "true" if fsync else "false"}
    trace_path = data_dir.parent / f"{data_dir.name}.strace"
    with ServerProcess(data_dir, env, source) as server:
        cpu_before = process_cpu_seconds(server.pid) or 0.0
        own_before, busy_before = _own_cpu_seconds(), machine_busy_seconds()
        tracing = _strace_fsyncs(server.pid, trace_path) if count_commits else None
        with tracing or contextlib.nullcontext():
            outcome, measure_from, stop_at = asyncio.run(
                _run_load(server, case, transport, warmup_s, duration_s)
            )
        cpu_after = process_cpu_seconds(server.pid) or 0.0
        own_after, busy_after = _own_cpu_seconds(), machine_busy_seconds()
        exit_status = server.stop()
    window = [latency for done, latency in outcome.acks if measure_from <= done <= stop_at]
    wall_s = warmup_s + duration_s
    result: dict[str, Any] = {
        "case": case.name,
        "fsync": fsync,
        "chunks_acked": len(window),
        "chunks_per_s": len(window) / duration_s,
        "ack_ms": {
            "p50": percentile(window, 50) * 1000,
            "p90": percentile(window, 90) * 1000,
            "p99": percentile(window, 99) * 1000,
            "max": max(window, default=float("nan")) * 1000,
        },
        "megabytes_per_s": len(window) * case.chunk_bytes / duration_s / 1e6,
        "sessions_created": outcome.sessions_created,
        "server_cpu_cores": (cpu_after - cpu_before) / wall_s,
        "client_cpu_cores": (own_after - own_before) / wall_s,
        # Busy cores of the whole machine minus the server and this client: other people's load.
        "other_cpu_cores": max(
            0.0,
            (busy_after - busy_before) - (cpu_after - cpu_before) - (own_after - own_before),
        )
        / wall_s,  # clamped: clock-tick rounding makes an idle machine read slightly negative
        "errors": dict(outcome.errors),
        "error_samples": outcome.error_samples,
        "server_exit_status": exit_status,
    }
    if count_commits:
        counts = _syscall_counts(trace_path)
        commits = counts.get("fdatasync")
        result["traced"] = {
            "fdatasync": commits,
            "fsync": counts.get("fsync"),
            "chunks_acked_whole_run": len(outcome.acks),
            "chunks_per_commit": len(outcome.acks) / commits if commits else None,
        }
        trace_path.unlink(missing_ok=True)
    shutil.rmtree(data_dir, ignore_errors=True)
    os.sync()  # write back this run's dirty pages now, not during the next run
    time.sleep(_SETTLE_S)
    return result


# -- summary ----------------------------------------------------------------------------------


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(runs: list[dict[str, Any]], cases: Sequence[Case]) -> list[dict[str, Any]]:
    summary = []
    for case in cases:
        rows: dict[bool, dict[str, Any]] = {}
        for fsync in (True, False):
            mine = [r for r in runs if r["case"] == case.name and r["fsync"] is fsync]
            rows[fsync] = {
                "case": case.name,
                "fsync": fsync,
                "runs": len(mine),
                "chunks_per_s": _spread([r["chunks_per_s"] for r in mine]),
                "ack_p50_ms": _spread([r["ack_ms"]["p50"] for r in mine]),
                "ack_p99_ms": _spread([r["ack_ms"]["p99"] for r in mine]),
                "server_cpu_cores": statistics.median(r["server_cpu_cores"] for r in mine),
                "client_cpu_cores": statistics.median(r["client_cpu_cores"] for r in mine),
                "other_cpu_cores": statistics.median(r["other_cpu_cores"] for r in mine),
                "errors": sum(sum(r["errors"].values()) for r in mine),
            }
        with_sync = rows[True]["chunks_per_s"]["median"]
        without = rows[False]["chunks_per_s"]["median"]
        summary.append(
            {
                "case": case.name,
                "fsync": rows[True],
                "no_fsync": rows[False],
                "throughput_ratio_fsync_over_no_fsync": with_sync / without if without else None,
            }
        )
    return summary


def format_table(summary: list[dict[str, Any]], traced: list[dict[str, Any]]) -> str:
    def spread(values: dict[str, float], digits: int) -> str:
        return (
            f"{values['median']:.{digits}f} [{values['min']:.{digits}f}-{values['max']:.{digits}f}]"
        )

    lines = [
        "| case | fsync | chunks/s median [min-max] | ack p50 ms | ack p99 ms "
        "| CPU cores server/client/other | errors | fsync/no-fsync |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for entry in summary:
        for label in ("fsync", "no_fsync"):
            row = entry[label]
            ratio = entry["throughput_ratio_fsync_over_no_fsync"] if label == "fsync" else None
            lines.append(
                f"| {row['case']} | {'on' if row['fsync'] else 'off'} "
                f"| {spread(row['chunks_per_s'], 0)} | {spread(row['ack_p50_ms'], 2)} "
                f"| {spread(row['ack_p99_ms'], 2)} | {row['server_cpu_cores']:.2f}/{row['client_cpu_cores']:.2f}/"
                f"{row['other_cpu_cores']:.2f} "
                f"| {row['errors']} | {'' if ratio is None else f'{ratio:.2f}'} |"
            )
    if traced:
        lines += [
            "",
            "| case (traced, fsync on) | chunks/s | chunks acked | WAL fdatasyncs (commits) "
            "| file+dir fsyncs | chunks/commit |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for run in traced:
            t = run["traced"]
            per_commit = t["chunks_per_commit"]
            lines.append(
                f"| {run['case']} | {run['chunks_per_s']:.0f} | {t['chunks_acked_whole_run']} "
                f"| {t['fdatasync']} | {t['fsync']} "
                f"| {'' if per_commit is None else f'{per_commit:.1f}'} |"
            )
    return "\n".join(lines)


# -- command line -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.durability", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--runs", type=int, default=5, help="runs per case and configuration")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--streams", type=int, default=64, help="sessions in the streams case")
    parser.add_argument("--files", type=int, default=4, help="sessions in the files case")
    parser.add_argument(
        "--cases", default="sequential,streams,files", help="comma-separated subset to run"
    )
    parser.add_argument("--transport", choices=("json", "msgpack"), default="msgpack")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=_REPO_ROOT / "benchmarks" / "out" / "durability-data",
        help="where the servers' data dirs go (a real disk, not tmpfs)",
    )
    parser.add_argument(
        "--count-commits",
        action=argparse.BooleanOptionalAction,
        default=shutil.which("strace") is not None,
        help="one extra strace'd run per case (fsync on) to count commits",
    )
    parser.add_argument(
        "--snapshot",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run every server from one copy of the code taken at the start",
    )
    parser.add_argument("--out", type=Path, help="write the JSON result here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    all_cases = {
        "sequential": Case("sequential", "stream", 1, STREAM_CHUNK_BYTES),
        "streams": Case("streams", "stream", args.streams, STREAM_CHUNK_BYTES),
        "files": Case("files", "file", args.files, FILE_CHUNK_BYTES),
    }
    try:
        cases = [all_cases[name.strip()] for name in args.cases.split(",") if name.strip()]
    except KeyError as exc:
        print(f"error: unknown case {exc}; choose from {', '.join(all_cases)}", file=sys.stderr)
        return 2
    code = git_state()
    args.data_root = args.data_root.resolve()
    args.data_root.mkdir(parents=True, exist_ok=True)
    source = args.data_root / "src-snapshot" if args.snapshot else None
    source_sha = snapshot_source(source) if source is not None else None
    probe_before = fsync_probe(args.data_root)
    started = dt.datetime.now(dt.UTC)
    runs: list[dict[str, Any]] = []
    for run in range(args.runs):
        for index, case in enumerate(cases):
            # Alternate which configuration goes first, per run and per case.
            order = (True, False) if (run + index) % 2 == 0 else (False, True)
            for fsync in order:
                label = f"{case.name}-{'fsync' if fsync else 'nofsync'}-{run}"
                result = measure(
                    case,
                    fsync,
                    args.data_root / label,
                    args.transport,
                    args.warmup,
                    args.duration,
                    source=source,
                )
                result["run"] = run
                runs.append(result)
                print(
                    f"{label}: {result['chunks_per_s']:.0f} chunks/s, ack p50 "
                    f"{result['ack_ms']['p50']:.2f} ms p99 {result['ack_ms']['p99']:.2f} ms, "
                    f"errors {sum(result['errors'].values())}, CPU server "
                    f"{result['server_cpu_cores']:.2f} client {result['client_cpu_cores']:.2f} "
                    f"other {result['other_cpu_cores']:.2f}",
                    flush=True,
                )
    traced = []
    if args.count_commits:
        for case in cases:
            label = f"{case.name}-fsync-traced"
            result = measure(
                case,
                True,
                args.data_root / label,
                args.transport,
                args.warmup,
                args.duration,
                count_commits=True,
                source=source,
            )
            traced.append(result)
            print(f"{label}: {result['traced']}", flush=True)
    summary = summarize(runs, cases)
    machine = machine_info(args.data_root)
    probe = {"before": probe_before, "after": fsync_probe(args.data_root)}
    output: dict[str, Any] = {
        "schema": SCHEMA,
        "started_at": started.isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.durability", *(argv or sys.argv[1:])]),
        "config": {
            "runs": args.runs,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "transport": args.transport,
            "cases": [vars(case) for case in cases],
        },
        "machine": machine,
        "fsync_probe": probe,
        "git": code,
        "server_source_sha256": source_sha,
        "summary": summary,
        "traced_runs": traced,
        "runs": runs,
    }
    print()
    print(format_table(summary, traced))
    fs = machine.get("data_dir_filesystem", {})
    print(
        f"\ndata dir on {fs.get('fstype')} ({fs.get('device')}); bare 16 kB write+fsync "
        f"before/after: p50 {probe['before']['p50_ms']:.3f}/{probe['after']['p50_ms']:.3f} ms, "
        f"p99 {probe['before']['p99_ms']:.3f}/{probe['after']['p99_ms']:.3f} ms"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(output, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
