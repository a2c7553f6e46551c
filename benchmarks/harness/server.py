"""A tympan server in a subprocess on loopback, with its own data dir and key, whose CPU time the
harness reads from ``/proc``. Or an external server, given its URL (and optionally its pid)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from benchmarks.machine import free_port, process_cpu_seconds

__all__ = ["ManagedServer", "ServerHandle", "process_cpu_seconds", "process_peak_rss_mib"]

_READY_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 15.0
_POLL_INTERVAL_S = 0.1
_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def process_peak_rss_mib(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


@dataclass
class ServerHandle:
    """What the load generator needs to know about a server."""

    url: str
    api_key: str
    pid: int | None = None
    managed: bool = False
    env: dict[str, str] = field(default_factory=dict)

    def cpu_seconds(self) -> float | None:
        return None if self.pid is None else process_cpu_seconds(self.pid)

    def peak_rss_mib(self) -> float | None:
        return None if self.pid is None else process_peak_rss_mib(self.pid)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "server.cli", *args]


class ManagedServer:
    """``tympan serve`` on a free loopback port with a temporary data dir; a context manager."""

    def __init__(self, env: dict[str, str] | None = None, log_path: Path | None = None) -> None:
        self.env = dict(env or {})
        self._log_path = log_path
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerHandle:
        self._tmp = tempfile.TemporaryDirectory(prefix="tympan-bench-data-")
        data_dir = Path(self._tmp.name)
        env = {**os.environ, **self.env}
        key = subprocess.run(
            _cli("keys", "create", "bench", "--data-dir", str(data_dir)),
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        port = free_port()
        log_path = self._log_path or data_dir / "server.log"
        with open(log_path, "wb") as log:
            self._process = subprocess.Popen(
                _cli(
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--data-dir",
                    str(data_dir),
                    "--no-bootstrap-key",
                ),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        self._wait_ready(url, log_path)
        return ServerHandle(url, key, self._process.pid, managed=True, env=self.env)

    def _wait_ready(self, url: str, log_path: Path) -> None:
        assert self._process is not None
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the server exited with {self._process.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(_POLL_INTERVAL_S)
        self._stop()
        raise RuntimeError(f"the server was not ready within {_READY_TIMEOUT_S:.0f} s")

    def _stop(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self._stop()
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()
