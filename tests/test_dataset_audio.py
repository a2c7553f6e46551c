"""Dataset audio files over real HTTP on loopback: Relay's Step 3 (upload URL, multipart form
POST, confirm, poll) with ``requests`` and curl against the local store and against SeaweedFS,
confirmation, processing to 16 kHz mono with log-mel features and embeddings, its failures,
team isolation and deletion. The form's own checks are in ``test_dataset_audio_forms``."""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from models.yamnet.embedding_meta import embedding_path
from models.yamnet.spec import FRONTEND, WEIGHTS_DIR
from server.app import create_app
from server.appkeys import BLOBS, KEYS
from server.audio.encode import encode_audio
from server.config import Settings
from server.datasets.audio_keys import EMBEDDINGS_NAME, FEATURES_NAME, NORMALISED_NAME, derived_key
from server.datasets.audio_routes import AUDIO_FILES
from server.runner import EmbeddingRunner
from tests.dataset_audio import (
    RATE_HZ,
    Audio,
    host_of,
    make_dataset,
    read_blob,
    relay_step_3,
    requests_post_form,
    stored_files,
    stored_upload_key,
    tone_wav,
    tone_wav_samples,
)
from tests.seaweedfs import SeaweedFS


async def test_relay_step_3_with_requests_and_curl_on_the_local_store(
    audio: Audio, audio_settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "sample_audio.wav"
    path.write_bytes(tone_wav(1.5))
    base = host_of(audio.client)
    ready = await asyncio.to_thread(
        relay_step_3, base, audio.key, audio.dataset_id, path, "audio/wav"
    )
    assert ready["processing_status"] == "ready", ready
    assert ready["upload_confirmed"] is True and ready["processing_error"] is None
    assert (ready["duration_ms"], ready["sample_rate"], ready["channels"]) == (1500, 44100, 2)
    assert ready["file_size"] == path.stat().st_size and ready["filename"] == "sample_audio.wav"

    # The outputs: 16 kHz mono WAV of the same length, and 10 ms log-mel frames.
    upload_key = stored_upload_key(audio_settings, ready["id"])
    normalised = await read_blob(audio.client, derived_key(upload_key, NORMALISED_NAME))
    samples, rate_hz = sf.read(io.BytesIO(normalised))
    assert rate_hz == RATE_HZ and samples.ndim == 1 and len(samples) == 1500 * 16
    features = np.load(
        io.BytesIO(await read_blob(audio.client, derived_key(upload_key, FEATURES_NAME)))
    )
    assert features.dtype == np.float32 and features.shape[1] == 64
    assert abs(features.shape[0] - 150) <= 3
    # YAMNet's embeddings: a 0.96 s window every 0.48 s, the last one zero-padded.
    vectors = np.load(
        io.BytesIO(await read_blob(audio.client, derived_key(upload_key, EMBEDDINGS_NAME)))
    )
    assert vectors.dtype == np.float32 and vectors.shape == (3, 1024)
    runner = EmbeddingRunner(embedding_path(WEIGHTS_DIR))
    first = runner.run(features[None, : FRONTEND.patch_frames])
    np.testing.assert_allclose(vectors[:1], first, rtol=1e-4, atol=1e-4)

    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is required for the reference's form upload")
    info = await audio.upload_url(path.read_bytes(), filename="sample_audio.wav")
    form = [arg for name, value in info["fields"].items() for arg in ("-F", f"{name}={value}")]
    result = await asyncio.to_thread(
        subprocess.run,
        [
            curl,
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            info["upload_url"],
            *form,
            "-F",
            f"file=@{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == "204", result
    await audio.confirm(info["audio_id"])
    assert (await audio.finished(info["audio_id"]))["duration_ms"] == 1500


async def test_relay_step_3_on_s3_posts_to_the_service_itself(
    aiohttp_client: Callable[..., Any],
    audio_settings: Settings,
    api_key: str,
    seaweedfs: SeaweedFS,
    tmp_path: Path,
) -> None:
    client = await aiohttp_client(create_app(seaweedfs.settings(audio_settings)))
    audio = Audio(client, api_key, await make_dataset(client, api_key))
    path = tmp_path / "sample_audio.ogg"
    path.write_bytes(encode_audio(tone_wav_samples(2.0), RATE_HZ, "ogg-opus"))
    info = await audio.upload_url(path.read_bytes(), content_type="audio/ogg")
    assert info["upload_url"].startswith(seaweedfs.endpoint_url)
    await audio.confirm(info["audio_id"], expect=409)  # nothing there yet
    whole = path.read_bytes()
    too_large = await asyncio.to_thread(requests_post_form, info, whole + bytes(1000))
    assert too_large.status_code == 400 and "EntityTooLarge" in too_large.text
    too_small = await asyncio.to_thread(requests_post_form, info, whole[:-10])
    assert too_small.status_code == 204  # S3's range starts at 0: confirm checks the size
    body = await audio.confirm(info["audio_id"], expect=409)
    assert "removed" in body["error"], body
    assert await client.app[BLOBS].stat(stored_upload_key(audio_settings, info["audio_id"])) is None
    ready = await asyncio.to_thread(
        relay_step_3, host_of(client), api_key, audio.dataset_id, path, "audio/ogg"
    )
    assert ready["processing_status"] == "ready", ready
    assert abs(ready["duration_ms"] - 2000) <= 30 and ready["channels"] == 1
    upload_key = stored_upload_key(audio_settings, ready["id"])
    assert await client.app[BLOBS].stat(derived_key(upload_key, FEATURES_NAME)) is not None
    await audio.call("DELETE", f"/{ready['id']}", 204)
    await audio.get(ready["id"], expect=404)
    assert await client.app[BLOBS].stat(upload_key) is None
    assert await client.app[BLOBS].stat(derived_key(upload_key, NORMALISED_NAME)) is None


async def test_confirm_is_idempotent_and_a_missing_upload_is_409(audio: Audio) -> None:
    data = tone_wav(0.3)
    info = await audio.upload_url(data)
    unconfirmed = await audio.get(info["audio_id"])
    assert unconfirmed["processing_status"] == "pending"
    assert unconfirmed["upload_confirmed"] is False
    body = await audio.confirm(info["audio_id"], expect=409)
    assert "has not arrived" in body["error"]
    await audio.post_form(info, data)
    first = await audio.confirm(info["audio_id"])
    await audio.finished(info["audio_id"])
    again = await audio.confirm(info["audio_id"])
    assert again["id"] == first["id"] and again["upload_confirmed"] is True
    assert again["processing_status"] == "ready"
    await audio.confirm(str(uuid.uuid4()), expect=404)


@pytest.mark.parametrize("encoding", ["mp3", "ogg-vorbis", "flac", "m4a"])
async def test_compressed_formats_are_processed_to_the_right_duration(
    audio: Audio, encoding: str
) -> None:
    data = encode_audio(tone_wav_samples(3.0), RATE_HZ, encoding)
    audio_id = await audio.upload(data, content_type="audio/mpeg")
    ready = await audio.finished(audio_id)
    assert ready["processing_status"] == "ready", ready
    assert abs(ready["duration_ms"] - 3000) <= 60, ready  # codec padding, a frame at most


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"this is a text file, not a recording at all" * 100, "not audio"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(200), "not audio"),
        (b"\x00", "not audio"),
        (tone_wav(0.0), "empty"),
    ],
)
async def test_what_is_not_audio_or_empty_fails_with_a_clear_error(
    audio: Audio, data: bytes, error: str
) -> None:
    audio_id = await audio.upload(data)
    failed = await audio.finished(audio_id)
    assert failed["processing_status"] == "failed", failed
    assert failed["processing_error"].startswith(error), failed


async def test_audio_longer_than_the_limit_fails(
    aiohttp_client: Callable[..., Any], audio_settings: Settings, api_key: str
) -> None:
    client = await aiohttp_client(create_app(audio_settings.replace(max_session_duration_s=1.0)))
    audio = Audio(client, api_key, await make_dataset(client, api_key))
    failed = await audio.finished(await audio.upload(tone_wav(2.0)))
    assert failed["processing_error"].startswith("longer than the limit"), failed


async def test_another_team_sees_nothing(audio: Audio, other_key: str) -> None:
    audio_id = await audio.upload(tone_wav(0.3))
    mallory = Audio(audio.client, other_key, audio.dataset_id)
    await mallory.get(audio_id, expect=404)
    await mallory.call("GET", "", 404)
    await mallory.upload_url(b"xx", expect=404)
    await mallory.confirm(audio_id, expect=404)
    await mallory.call("DELETE", f"/{audio_id}", 404)
    own = Audio(audio.client, other_key, await make_dataset(audio.client, other_key))
    await own.get(audio_id, expect=404)
    await own.call("DELETE", f"/{audio_id}", 404)
    nobody = Audio(audio.client, "not-a-key", audio.dataset_id)
    await nobody.get(audio_id, expect=401)
    assert (await audio.get(audio_id))["id"] == audio_id


async def test_list_pages_and_delete_removes_row_and_blobs(
    audio: Audio, audio_settings: Settings
) -> None:
    ids = [await audio.upload(tone_wav(0.2)) for _ in range(3)]
    for audio_id in ids:
        await audio.finished(audio_id)
    page = await audio.call("GET", "?limit=2", 200)
    assert [item["id"] for item in page["items"]] == ids[:2]
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 0)
    page = await audio.call("GET", "?limit=2&offset=2", 200)
    assert [item["id"] for item in page["items"]] == ids[2:]
    assert len(stored_files(audio_settings.data_dir / "blobs")) == 12  # upload + 3 outputs
    for audio_id in ids:
        await audio.call("DELETE", f"/{audio_id}", 204)
        await audio.get(audio_id, expect=404)
    assert stored_files(audio_settings.data_dir / "blobs") == []
    assert (await audio.call("GET", "", 200))["total"] == 0


async def test_the_audio_routes_spend_the_per_key_request_budget(
    aiohttp_client: Callable[..., Any], audio_settings: Settings, api_key: str, other_key: str
) -> None:
    client = await aiohttp_client(
        create_app(audio_settings.replace(rate_limit_per_key=0.001, rate_limit_burst=3.0))
    )
    audio = Audio(client, api_key, await make_dataset(client, api_key))
    await audio.call("GET", "", 200)
    await audio.upload_url(b"xx")
    await audio.get(str(uuid.uuid4()), expect=404)
    refused = await audio.call("GET", "", 429)
    assert refused["status_code"] == 429
    await Audio(client, other_key, audio.dataset_id).call("GET", "", 404)  # its own budget


async def test_a_datasets_files_can_be_removed_in_one_call(
    audio: Audio, audio_settings: Settings, api_key: str
) -> None:
    """What the dataset's own DELETE calls: rows and every blob of every file go."""
    ids = [await audio.upload(tone_wav(0.2)) for _ in range(2)]
    for audio_id in ids:
        await audio.finished(audio_id)
    team = str(audio.client.app[KEYS].authenticate(api_key).key_id)
    assert await audio.client.app[AUDIO_FILES].remove_dataset(team, audio.dataset_id) == 2
    assert (await audio.call("GET", "", 200))["total"] == 0
    assert stored_files(audio_settings.data_dir / "blobs") == []
