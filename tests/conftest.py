"""Shared fixtures: real settings on a temporary data dir, a real key, the real app over real
HTTP on loopback (pytest-aiohttp's TestServer binds 127.0.0.1), and real audio."""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from server.keys import generate_key, hash_key
from server.store import Store
from tests.seaweedfs import SeaweedFS

SAMPLE_RATE_HZ = 16_000
RAW_S16 = "audio/x-raw; rate=16000; format=s16le"
SPEECH_TEXT = (
    "Hello there. This is a recording of a person speaking clearly, for the sound event server. "
    "The quick brown fox jumps over the lazy dog, and then it keeps on talking for a while."
)


def make_key(data_dir: Path, name: str) -> str:
    store = Store(data_dir / "tympan.sqlite3", fsync=False)
    try:
        key = generate_key()
        store.add_key(name, hash_key(key))
        return key
    finally:
        store.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({}, data_dir=tmp_path / "var", status_wait_s=5.0)


@pytest.fixture
def api_key(settings: Settings) -> str:
    return make_key(settings.data_dir, "alice")


@pytest.fixture
def other_key(settings: Settings, api_key: str) -> str:
    return make_key(settings.data_dir, "mallory")


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Any], settings: Settings, api_key: str
) -> AsyncIterator[TestClient]:
    yield await aiohttp_client(create_app(settings))


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One real S3-compatible service for the whole run, started when a test first needs it."""
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def media_settings(settings: Settings) -> Settings:
    return settings.replace(fsync=False, media_max_bytes=1024 * 1024)


@pytest.fixture
async def media_client(
    aiohttp_client: Callable[..., Any], media_settings: Settings, api_key: str
) -> AsyncIterator[TestClient]:
    yield await aiohttp_client(create_app(media_settings))


def s16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tone(freq_hz: float, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def sliding_chunks(audio: bytes, chunk_bytes: int, step_bytes: int) -> list[bytes]:
    """Stream chunks as Cochl's sample clients cut them: ``chunk_bytes`` of audio, each one
    starting ``step_bytes`` after the previous one, the last one ending with the audio."""
    chunks = []
    for start in range(0, len(audio), step_bytes):
        chunks.append(audio[start : start + chunk_bytes])
        if start + chunk_bytes >= len(audio):
            break
    return chunks


def espeak_wav(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, int]:
    """espeak-ng's recording of SPEECH_TEXT at its own rate: the file, float32 mono, the rate."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.fail("espeak-ng is required (make test installs it)")
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run([espeak, "-w", str(path), SPEECH_TEXT], check=True)
    audio, rate = sf.read(path, dtype="float32")
    return path, audio, rate


@pytest.fixture(scope="session")
def speech_16k(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """Synthesized speech from espeak-ng, resampled to 16 kHz mono float32."""
    path, audio, rate = espeak_wav(tmp_path_factory)
    from server.audio import decode_file, parse_content_type

    return (
        decode_file(parse_content_type("audio/wav"), path.read_bytes())
        if rate != SAMPLE_RATE_HZ
        else audio
    )


class Api:
    """A small helper over the test client that fails loudly on unexpected statuses."""

    def __init__(self, client: TestClient, key: str) -> None:
        self.client = client
        self.key = key

    async def create(
        self, expect: int = 200, key: str | None = "default", **body: Any
    ) -> dict[str, Any]:
        headers = {"x-api-key": self.key if key == "default" else key} if key else {}
        response = await self.client.post("/api/v1/audio_sessions/", json=body, headers=headers)
        payload = await response.json()
        assert response.status == expect, payload
        return payload  # type: ignore[no-any-return]

    async def put(
        self, session_id: str, seq: int, data: bytes, expect: int = 200, **kw: Any
    ) -> dict[str, Any]:
        response = await self.client.put(
            f"/api/v1/audio_sessions/{session_id}/chunks/{seq}", json={"data": b64(data)}, **kw
        )
        payload = await response.json()
        assert response.status == expect, payload
        return payload  # type: ignore[no-any-return]

    async def readonly(self, session_id: str, expect: int = 204, **kw: Any) -> None:
        response = await self.client.patch(
            f"/api/v1/audio_sessions/{session_id}", json={"make_readonly": True}, **kw
        )
        assert response.status == expect, await response.text()

    async def status(self, session_id: str, expect: int = 200, **params: Any) -> dict[str, Any]:
        headers = params.pop("headers", None)
        response = await self.client.get(
            f"/api/v1/audio_sessions/{session_id}/status", params=params, headers=headers
        )
        payload = await response.json()
        assert response.status == expect, payload
        return payload  # type: ignore[no-any-return]

    async def all_results(self, session_id: str) -> list[dict[str, Any]]:
        """Follow next_token until the server says the session is finished."""
        results: list[dict[str, Any]] = []
        page = await self.status(session_id, count=100)
        while True:
            results.extend(page["inference"]["results"])
            token = page["inference"]["page"].get("next_token")
            if token is None:
                return results
            page = await self.status(session_id, next_token=token)


@pytest.fixture
def api(client: TestClient, api_key: str) -> Api:
    return Api(client, api_key)


@pytest.fixture
def audio_settings(settings: Settings) -> Settings:
    """Dataset audio tests: no fsync, an 8 MiB upload limit."""
    return settings.replace(fsync=False, media_max_bytes=8 * 1024 * 1024)


@pytest.fixture
async def audio(aiohttp_client: Callable[..., Any], audio_settings: Settings, api_key: str) -> Any:
    """The audio routes of a new dataset of ``api_key``'s team (``tests.dataset_audio.Audio``)."""
    from tests.dataset_audio import Audio, make_dataset

    client = await aiohttp_client(create_app(audio_settings))
    return Audio(client, api_key, await make_dataset(client, api_key))
