"""What an SSE latency run leaves besides ``result.json``: a table on stdout (two lines per run,
one per reader) and ``result.png`` (latency CDF per reader and run; tails per run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.harness.readers import READERS

__all__ = ["format_reader_table", "plot_readers"]

_COLUMNS = (
    ("run", 3),
    ("reader", 6),
    ("streams", 7),
    ("p50", 7),
    ("p90", 7),
    ("p99", 7),
    ("max", 7),
    ("send p50", 8),
    ("send p99", 8),
    ("windows", 13),
    ("dup", 3),
    ("<ack", 4),
    ("x p50", 5),
    ("x p99", 5),
    ("end p50", 7),
    ("end max", 7),
    ("ack p99", 7),
    ("srv cores", 9),
    ("gen cores", 9),
    ("lag p99", 7),
    ("load", 9),
    ("ok", 3),
)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_reader_table(runs: list[dict[str, Any]]) -> str:
    """Latencies in ms from the completing chunk's acknowledgement ("send": from its sending);
    x p50 / x p99: SSE over polling; <ack: windows received before the acknowledgement;
    end: from the acknowledgement of make_readonly to the reader learning the session is over."""
    header = " ".join(name.rjust(width) for name, width in _COLUMNS)
    lines = [header, "-" * len(header)]
    for number, run in enumerate(runs, 1):
        for kind in READERS:
            reader = run["readers"][kind]
            ack, send, windows = (
                reader["latency_from_ack_ms"],
                reader["latency_from_send_ms"],
                reader["windows"],
            )
            ratio = run["sse_over_poll"]["from_ack"] if kind == "sse" else {}
            load = run["load_average_1m"]
            cells = (
                number,
                kind,
                reader["streams"],
                _fmt(ack["p50"]),
                _fmt(ack["p90"]),
                _fmt(ack["p99"]),
                _fmt(ack["max"]),
                _fmt(send["p50"]),
                _fmt(send["p99"]),
                f"{windows['received']}/{windows['expected']}",
                windows["duplicates"],
                reader["received_before_ack"],
                _fmt(ratio.get("p50"), 2),
                _fmt(ratio.get("p99"), 2),
                _fmt(reader["end_from_readonly_ms"]["p50"], 0),
                _fmt(reader["end_from_readonly_ms"]["max"], 0),
                _fmt(run["ack_latency_ms"]["p99"]),
                _fmt(run["server"]["cores_busy"], 2),
                _fmt(run["harness"]["cores_busy"], 2),
                _fmt(run["send_lag_ms"]["p99"]),
                f"{_fmt(load['before'], 2)}>{_fmt(load['after'], 2)}",
                "yes" if run["complete"] else "NO",
            )
            lines.append(
                " ".join(str(c).rjust(w) for c, (_, w) in zip(cells, _COLUMNS, strict=True))
            )
    return "\n".join(lines)


def plot_readers(result: dict[str, Any], path: Path) -> None:
    """Left: window latency CDF from acknowledgement, per reader (colour) and run (shade).
    Right: p50 and p99 per run for each reader."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    colours = {"sse": "tab:blue", "poll": "tab:orange"}
    fig, (cdf_ax, tail_ax) = plt.subplots(1, 2, figsize=(13, 4.8))
    for number, run in enumerate(runs, 1):
        for kind in READERS:
            quantiles = run["readers"][kind]["latency_from_ack_cdf_ms"]
            if quantiles:
                share = [q / (len(quantiles) - 1) for q in range(len(quantiles))]
                alpha = 0.4 + 0.6 * number / len(runs)
                cdf_ax.plot(
                    quantiles, share, color=colours[kind], alpha=alpha, label=f"{kind} run {number}"
                )
    cdf_ax.axhline(0.99, color="grey", linewidth=0.6, linestyle=":")
    lowest = min(
        (min(r["readers"][k]["latency_from_ack_cdf_ms"] or [1.0]) for r in runs for k in READERS),
        default=1.0,
    )
    if lowest > 0:
        cdf_ax.set_xscale("log")
    else:  # a window received before its chunk's acknowledgement was processed
        cdf_ax.set_xscale("symlog", linthresh=1.0)
    cdf_ax.set(
        title="Window latency CDF",
        xlabel="chunk acknowledged -> window received (ms)",
        ylabel="fraction of windows",
    )
    cdf_ax.legend(fontsize="small")
    numbers = list(range(1, len(runs) + 1))
    for kind in READERS:
        for figure, marker in (("p50", "o-"), ("p99", "s--")):
            values = [run["readers"][kind]["latency_from_ack_ms"][figure] for run in runs]
            tail_ax.plot(
                numbers,
                [float("nan") if v is None else v for v in values],
                marker,
                color=colours[kind],
                label=f"{kind} {figure}",
            )
    tail_ax.set(title="Tails per run", xlabel="run", ylabel="ms")
    tail_ax.set_xticks(numbers)
    tail_ax.legend(fontsize="small")
    machine = result["machine"]
    streams = runs[0]["streams"] if runs else 0
    fig.suptitle(
        f"tympan SSE vs long-polling, {streams} streams - {machine['cpu_model']}, "
        f"{machine['cpu_cores']} cores - commit {(result['git']['commit'] or 'unknown')[:10]}",
        fontsize="medium",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
