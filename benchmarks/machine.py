"""What every benchmark records about the machine it ran on, and the server processes they
start and measure."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = [
    "cpu_model",
    "free_port",
    "launch_server",
    "machine_info",
    "memory_gib",
    "process_cpu_seconds",
    "stop_server",
    "thread_cpu_seconds",
    "tympan_command",
]

_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def cpu_flags() -> list[str]:
    """The vector extensions that decide which kernels run: AVX2, AVX-512 (each subset), VNNI."""
    wanted = re.compile(r"^(avx2|avx512\w*|avx_vnni)$")
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("flags"):
                return sorted({f for f in line.split(":", 1)[1].split() if wanted.match(f)})
    return []


def machine_info() -> dict[str, Any]:
    """CPU, its vector flags, cores, memory, OS, Python and the load average (host busy?)."""
    return {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_1m": os.getloadavg()[0],
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (all its threads), or None if unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    # After the command name: utime and stime are fields 14 and 15 of proc(5) (1-based).
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS_PER_S


def thread_cpu_seconds() -> dict[str, float]:
    """User + system CPU seconds of each thread of this process, by thread role: Python
    threads by name with trailing worker numbers dropped ("tympan-infer_0" -> "tympan-infer"),
    the main thread as "main", threads Python does not know (native libraries) as "native"."""
    import re
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    main_id = threading.main_thread().native_id
    totals: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        tid = int(task.name)
        with contextlib.suppress(OSError):
            stat = (task / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            seconds = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS_PER_S
            name = "main" if tid == main_id else names.get(tid, "native")
            role = re.sub(r"_\d+$", "", name)
            totals[role] = totals.get(role, 0.0) + seconds
    return totals


_READY_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 15.0
_POLL_INTERVAL_S = 0.1


def tympan_command(*args: str) -> list[str]:
    """The ``tympan`` command line, run by this interpreter (works from a source snapshot too)."""
    return [sys.executable, "-m", "server.cli", *args]


def launch_server(
    data_dir: Path, env: dict[str, str], log_path: Path, cwd: Path | None = None
) -> tuple[subprocess.Popen[bytes], str, str]:
    """Create a key, start ``tympan serve`` on a free loopback port over ``data_dir`` and wait
    until it is ready. Returns the process, its URL and the key; a server that exits or is not
    ready in time is stopped and reported with the tail of its log."""
    key = subprocess.run(
        tympan_command("keys", "create", "bench", "--data-dir", str(data_dir)),
        env=env, cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    port = free_port()
    serve = ["serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            tympan_command(*serve, "--no-bootstrap-key"),
            env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the server exited with {process.returncode}:\n{tail}")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url + "/readyz", timeout=2) as response,
        ):
            if response.status == 200:
                return process, url, key
        time.sleep(_POLL_INTERVAL_S)
    stop_server(process)
    raise RuntimeError(f"the server was not ready within {_READY_TIMEOUT_S:.0f} s")


def stop_server(process: subprocess.Popen[bytes] | None) -> int | None:
    """SIGINT (graceful), then SIGKILL if it lingers; the exit status, None if never started."""
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
