"""What a run leaves behind: ``result.json`` (configuration, machine, commit, every figure),
``result.png`` (latency CDF per stream count, tails and throughput against streams) and a table
on stdout."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.harness.audio import RAW_CONTENT_TYPE
from benchmarks.machine import machine_info

__all__ = ["format_table", "git_info", "machine_info", "plot", "result_header", "write_json"]

_REPO_ROOT = Path(__file__).resolve().parents[2]


def git_info() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=_REPO_ROOT, capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def result_header(
    schema: str, module: str, args: Any, server: Any, clip_s: float
) -> dict[str, Any]:
    """What every harness result starts with: the command that reproduces it, its settings,
    the machine, the code, the server and the common audio."""
    return {
        "schema": schema,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([f"python -m {module}", *sys.argv[1:]]),
        "config": {
            key: str(value) if isinstance(value, Path) else value
            for key, value in vars(args).items()
            if key != "api_key"
        },
        "machine": machine_info(),
        "git": git_info(),
        "server": {
            "managed": server.managed,
            "env": server.env,
            "cpu_measured": server.pid is not None,
            "peak_rss_mib": None,
        },
        "audio": {
            "clip_s": clip_s,
            "sources": "espeak-ng speech, 440+880 Hz modulated tone, white noise",
            "stream_content_type": RAW_CONTENT_TYPE,
            "stream_chunk_s": 0.5,
        },
    }


def write_json(result: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(result, indent=2) + "\n")


def _label(run: dict[str, Any]) -> str:
    return f"{run['streams']} streams ({run['transport']})"


def plot(result: dict[str, Any], path: Path) -> None:
    """Three panels: window-latency CDF per stream count; p50/p99 window and p99 ack latency
    against streams; windows/s and server CPU against streams."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    runs = sorted(result["runs"], key=lambda r: r["streams"])
    bound = (result.get("sweep") or {}).get("p99_bound_ms")
    fig, (cdf_ax, tail_ax, load_ax) = plt.subplots(1, 3, figsize=(16, 4.8))
    colours = plt.get_cmap("viridis")
    for i, run in enumerate(runs):
        quantiles = run["window_latency_cdf_ms"]
        if quantiles:
            share = [q / (len(quantiles) - 1) for q in range(len(quantiles))]
            colour = colours(i / max(1, len(runs) - 1))
            cdf_ax.plot(quantiles, share, label=_label(run), color=colour)
    if bound is not None:
        cdf_ax.axvline(bound, color="red", linestyle="--", label=f"bound {bound:g} ms")
    cdf_ax.axhline(0.99, color="grey", linewidth=0.6, linestyle=":")
    cdf_ax.set_xscale("log")
    cdf_ax.xaxis.set_major_formatter(ScalarFormatter())
    cdf_ax.set(title="Window latency CDF", xlabel="chunk sent -> result received (ms)")
    cdf_ax.set_ylabel("fraction of windows")
    cdf_ax.legend(fontsize="small")

    streams = [r["streams"] for r in runs]

    def series(*keys: str) -> list[float]:
        values = []
        for run in runs:
            value: Any = run
            for key in keys:
                value = value[key]
            values.append(float("nan") if value is None else value)
        return values

    tail_ax.plot(streams, series("window_latency_ms", "p50"), "o-", label="window p50")
    tail_ax.plot(streams, series("window_latency_ms", "p99"), "s-", label="window p99")
    tail_ax.plot(streams, series("ack_latency_ms", "p99"), "^--", label="chunk ack p99")
    if bound is not None:
        tail_ax.axhline(bound, color="red", linestyle="--", label=f"bound {bound:g} ms")
    for run in runs:
        if not run["complete"]:
            tail_ax.annotate(
                "x", (run["streams"], run["window_latency_ms"]["p99"] or 0), color="red"
            )
    tail_ax.set_yscale("log")
    tail_ax.yaxis.set_major_formatter(ScalarFormatter())
    tail_ax.set(title="Latency tails (x: failed/missing)", xlabel="live streams", ylabel="ms")
    tail_ax.legend(fontsize="small")

    load_ax.plot(streams, series("throughput", "windows_per_s"), "o-", label="windows/s")
    load_ax.set(title="Throughput and server CPU", xlabel="live streams", ylabel="windows / s")
    cpu_ax = load_ax.twinx()
    cpu_ax.plot(streams, series("server", "cores_busy"), "s--", color="tab:red", label="server")
    cpu_ax.plot(streams, series("harness", "cores_busy"), "^:", color="tab:grey", label="harness")
    cpu_ax.set_ylabel("CPU cores busy")
    files = [r for r in runs if r["throughput"]["file_x_realtime"] is not None]
    if files:
        note = ", ".join(
            f"{r['throughput']['file_x_realtime']:g}x @ {r['streams']}" for r in files[-3:]
        )
        load_ax.text(
            0.02,
            0.96,
            f"file throughput (x realtime @ streams): {note}",
            fontsize="small",
            transform=load_ax.transAxes,
            va="top",
            wrap=True,
        )
    handles = load_ax.get_legend_handles_labels()
    cpu_handles = cpu_ax.get_legend_handles_labels()
    load_ax.legend(
        handles[0] + cpu_handles[0],
        handles[1] + cpu_handles[1],
        fontsize="small",
        loc="lower right",
    )
    machine = result["machine"]
    fig.suptitle(
        f"tympan latency - {machine['cpu_model']}, {machine['cpu_cores']} cores - "
        f"commit {(result['git']['commit'] or 'unknown')[:10]}",
        fontsize="medium",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


_COLUMNS = (
    ("streams", 7),
    ("files", 5),
    ("transport", 9),
    ("win p50", 8),
    ("win p90", 8),
    ("win p99", 8),
    ("win max", 8),
    ("ack p50", 8),
    ("ack p99", 8),
    ("windows", 13),
    ("failed", 6),
    ("retries", 7),
    ("file xRT", 8),
    ("srv cpu/aud", 11),
    ("srv cores", 9),
    ("gen cores", 9),
    ("lag p99", 7),
    ("ok", 3),
)


def format_table(runs: list[dict[str, Any]]) -> str:
    """One line per run; latencies in ms, CPU in seconds per audio second and in cores."""
    header = " ".join(name.rjust(width) for name, width in _COLUMNS)
    lines = [header, "-" * len(header)]
    for run in runs:
        windows = run["windows"]
        received = windows["stream_received"] + windows["file_received"]
        expected = windows["stream_expected"] + windows["file_expected"]
        cells = (
            run["streams"],
            run["files"],
            run["transport"],
            _fmt(run["window_latency_ms"]["p50"], 1),
            _fmt(run["window_latency_ms"]["p90"], 1),
            _fmt(run["window_latency_ms"]["p99"], 1),
            _fmt(run["window_latency_ms"]["max"], 1),
            _fmt(run["ack_latency_ms"]["p50"], 1),
            _fmt(run["ack_latency_ms"]["p99"], 1),
            f"{received}/{expected}",
            run["chunks"]["failed"],
            run["chunks"]["retries"],
            _fmt(run["throughput"]["file_x_realtime"], 1),
            _fmt(run["server"]["cpu_s_per_audio_s"], 4),
            _fmt(run["server"]["cores_busy"], 2),
            _fmt(run["harness"]["cores_busy"], 2),
            _fmt(run["send_lag_ms"]["p99"], 1),
            "yes" if run["complete"] else "NO",
        )
        lines.append(" ".join(str(c).rjust(w) for c, (_, w) in zip(cells, _COLUMNS, strict=True)))
    return "\n".join(lines)
