"""pyannoteAI's TypeScript media example (axios), run with node against the real server over
loopback, unchanged but for the host. node comes from the system, axios and tsx from the npm
registry, pinned in tests/node/package-lock.json (``make test-deps`` installs them)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from pathlib import Path

from aiohttp.test_utils import TestClient

from tests.test_media import describe, host_of

EXAMPLES = Path(__file__).parent / "node"
TSX = EXAMPLES / "node_modules" / ".bin" / "tsx"


async def test_the_typescript_upload_example(
    media_client: TestClient, api_key: str, tmp_path: Path
) -> None:
    if shutil.which("node") is None or not TSX.exists():
        raise AssertionError("node and tests/node/node_modules are required: run make test-deps")
    audio = os.urandom(200_000)
    path = tmp_path / "recording.wav"
    path.write_bytes(audio)
    process = await asyncio.create_subprocess_exec(
        str(TSX),
        str(EXAMPLES / "uploadAudio.ts"),
        str(path),
        "meetings/2024-01-15/call.wav",
        cwd=EXAMPLES,
        env={**os.environ, "PYANNOTE_HOST": host_of(media_client), "PYANNOTE_API_KEY": api_key},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode(errors="replace")
    assert b"File uploaded successfully!" in output
    info = await describe(media_client, api_key, "meetings/2024-01-15/call.wav")
    assert info["size_bytes"] == len(audio)
    assert info["sha256"] == hashlib.sha256(audio).hexdigest()
