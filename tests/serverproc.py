"""``tympan serve`` as a real child process, for tests about processes: restarts, signals,
the command line against a live server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["ServerProcess", "free_port"]

TYMPAN = Path(sys.executable).parent / "tympan"
READY_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """A server on a fixed port and data directory, which can be killed and started again."""

    def __init__(
        self, data_dir: Path, port: int | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = env or {}
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = data_dir.parent / f"server-{self.port}.log"

    def start(self, wait: bool = False) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TYMPAN_")} | self._env
        command = [str(TYMPAN), "serve", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [*command, "--no-bootstrap-key"], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._process is not None, "the server was not started"
            status = self._process.poll()
            assert status is None, f"the server exited with status {status}:\n{self.log()}"
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1.0) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as error:
                error.close()
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server did not become ready:\n{self.log()}")

    def signal(self, sig: int) -> int:
        """Send ``sig`` and wait for the exit; returns the exit status."""
        assert self._process is not None
        self._process.send_signal(sig)
        status = self._process.wait(timeout=30)
        self._process = None
        return status

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def log(self) -> str:
        return self._log_path.read_text(errors="replace") if self._log_path.exists() else ""
