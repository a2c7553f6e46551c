"""Connection-level limits and TLS, on the real serving path (``serve_until_stopped``)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server.app import create_app
from server.config import Settings
from tests.serverproc import free_port


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[str]:
    stop = asyncio.Event()
    ready = asyncio.Event()
    lines: list[str] = []

    def on_ready(line: str) -> None:
        lines.append(line)
        ready.set()

    from server.serve import serve_until_stopped

    task = asyncio.create_task(serve_until_stopped(create_app(settings), settings, stop, on_ready))
    await asyncio.wait_for(ready.wait(), 30)
    try:
        yield lines[0].split()[3]
    finally:
        stop.set()
        await task


async def is_closed(reader: asyncio.StreamReader, within_s: float) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(1024), within_s)
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return data == b""


async def test_connection_cap_and_slow_headers(settings: Settings, api_key: str) -> None:
    settings = settings.replace(port=free_port(), max_connections=2, header_timeout_s=0.5)
    async with running(settings):
        first = await asyncio.open_connection("127.0.0.1", settings.port)
        second = await asyncio.open_connection("127.0.0.1", settings.port)
        third = await asyncio.open_connection("127.0.0.1", settings.port)
        assert await is_closed(third[0], 2.0), "a connection over the cap must be closed"
        # a slowloris: headers started, never finished
        first[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        await first[1].drain()
        assert await is_closed(first[0], 3.0), "headers slower than the timeout must close"
        # a well-behaved client on the remaining connection is served normally, repeatedly
        for _ in range(3):
            second[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            await second[1].drain()
            head = await asyncio.wait_for(second[0].readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            length = int(
                next(
                    h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")
                ).split(b":")[1]
            )
            await second[0].readexactly(length)
            await asyncio.sleep(0.3)  # idle between requests is not a slow header
        for _, writer in (first, second, third):
            writer.close()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_on_loopback(
    settings: Settings, api_key: str, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    settings = settings.replace(port=free_port(), tls_cert=cert, tls_key=key)
    context = ssl.create_default_context(cafile=str(cert))
    async with running(settings) as url:
        assert url.startswith("https://")
        async with aiohttp.ClientSession() as http:
            body: dict[str, Any] = {"type": "stream", "content_type": "audio/wav"}
            async with http.post(
                f"https://127.0.0.1:{settings.port}/api/v1/audio_sessions/",
                json=body,
                headers={"x-api-key": api_key},
                ssl=context,
            ) as response:
                assert response.status == 200
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{settings.port}/healthz") as response:
                    await response.read()
