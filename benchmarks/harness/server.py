"""A tympan server in a subprocess on loopback, with its own data dir and key, whose CPU time the
harness reads from ``/proc``. Or an external server, given its URL (and optionally its pid)."""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from benchmarks.machine import launch_server, process_cpu_seconds, stop_server

__all__ = [
    "ManagedServer",
    "ServerHandle",
    "add_server_arguments",
    "open_server",
    "parse_server_env",
    "process_cpu_seconds",
    "process_peak_rss_mib",
]

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
        log_path = self._log_path or data_dir / "server.log"
        self._process, url, key = launch_server(data_dir, {**os.environ, **self.env}, log_path)
        return ServerHandle(url, key, self._process.pid, managed=True, env=self.env)

    def _stop(self) -> None:
        stop_server(self._process)

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


def add_server_arguments(parser: argparse.ArgumentParser, out_default: str) -> None:
    """The options every harness shares: which server to measure, and where results go."""
    parser.add_argument("--url", help="an already running server (default: start one)")
    parser.add_argument("--api-key", help="key for --url")
    parser.add_argument("--server-pid", type=int, help="pid of the --url server, for its CPU time")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="TYMPAN_X=VALUE",
        help="setting for the started server (repeatable)",
    )
    parser.add_argument("--out", type=Path, help=f"output folder (default {out_default})")


def parse_server_env(pairs: Sequence[str]) -> dict[str, str]:
    """``--server-env TYMPAN_X=VALUE`` flags -> an environment for the started server."""
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.startswith("TYMPAN_"):
            raise SystemExit(f"error: --server-env wants TYMPAN_NAME=VALUE, got {pair!r}")
        env[name] = value
    return env


@contextlib.contextmanager
def open_server(
    url: str | None,
    api_key: str | None,
    server_pid: int | None,
    env_pairs: Sequence[str],
    log_path: Path,
) -> Iterator[ServerHandle]:
    """The server a benchmark measures: the one at ``url`` if given, else a managed one."""
    if url:
        if not api_key:
            raise SystemExit("error: --url needs --api-key")
        yield ServerHandle(url, api_key, server_pid)
        return
    with ManagedServer(parse_server_env(env_pairs), log_path) as handle:
        yield handle
