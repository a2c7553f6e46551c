"""Cochl's sample clients against a real tympan, driven by Cochl's own generated client.

``cochlearai/sense-api-samples`` (Python ``stream_inference.py``, JavaScript ``stream.js``, Java
``UploadStream.java``) create stream sessions as ``audio/x-raw; rate=22050; format=f32`` (Python,
Java) or ``format=s16`` (JavaScript), send 1 s chunks every window hop (0.5 s, or 1 s with
``window_hop`` "1s": sliding windows) and read results by following ``next_token``. Here the
official Python client (``cochl-sense-api`` 1.7.11) does the same over loopback HTTP with only
the host changed, and the windows must equal those of the same audio sent contiguously in
half-second chunks, as the REST reference recommends.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from pathlib import Path

import cochl_sense_api as cochl
import numpy as np
import pytest

from tests.conftest import espeak_wav, make_key
from tests.conftest import sliding_chunks as cut_sliding
from tests.serverproc import ServerProcess

RATE_HZ = 22_050  # the samples' rate, and espeak-ng's own
NOISE_FLOOR = 0.002  # a microphone's: captured audio is never digital silence

Event = tuple[float, float, tuple[str, ...], tuple[float, ...]]


@pytest.fixture(scope="module")
def speech_22k(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    _, audio, rate = espeak_wav(tmp_path_factory)
    assert rate == RATE_HZ
    noise = np.random.default_rng(20).normal(0, NOISE_FLOOR, len(audio))
    return (audio[: RATE_HZ * 8] + noise[: RATE_HZ * 8]).astype(np.float32)


@contextlib.contextmanager
def connect(url: str, key: str) -> Iterator[cochl.AudioSessionApi]:
    """Cochl's client with only the host changed."""
    configuration = cochl.Configuration(host=f"{url}/api/v1")
    configuration.api_key["API_Key"] = key
    with cochl.ApiClient(configuration) as client:
        yield cochl.AudioSessionApi(client)


@pytest.fixture(scope="module")
def sense(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cochl.AudioSessionApi]:
    data_dir = tmp_path_factory.mktemp("samples") / "var"
    server = ServerProcess(
        data_dir, env={"TYMPAN_LOG_LEVEL": "WARNING", "TYMPAN_STATUS_WAIT_S": "5"}
    )
    key = make_key(data_dir, "samples")
    server.start(wait=True)
    try:
        with connect(server.url, key) as sense:
            yield sense
    finally:
        server.kill()


def encode(samples: np.ndarray, sample_format: str) -> bytes:
    if sample_format == "f32":
        return samples.astype("<f4").tobytes()
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def sliding_chunks(
    audio: bytes, frame_bytes: int, hop_s: float, rate_hz: int = RATE_HZ
) -> list[bytes]:
    """As the samples cut them: 1 s of audio, the next one starting ``hop_s`` later."""
    return cut_sliding(audio, rate_hz * frame_bytes, round(hop_s * rate_hz) * frame_bytes)


def contiguous_chunks(audio: bytes, frame_bytes: int, rate_hz: int = RATE_HZ) -> list[bytes]:
    size = rate_hz // 2 * frame_bytes
    return [audio[i : i + size] for i in range(0, len(audio), size)]


def events_of(status: cochl.SessionStatus) -> list[Event]:
    return [
        (
            event.start_time,
            event.end_time,
            tuple(tag.name for tag in event.tags),
            tuple(tag.probability for tag in event.tags),
        )
        for event in status.inference.results
    ]


def create(sense: cochl.AudioSessionApi, content_type: str, hop: str) -> str:
    created = sense.create_session(
        cochl.CreateSession(
            content_type=content_type, type=cochl.SessionType.STREAM, window_hop=hop
        )
    )
    return str(created.session_id)


def stream(
    sense: cochl.AudioSessionApi,
    content_type: str,
    hop: str,
    chunks: list[bytes],
    session_id: str | None = None,
    first_seq: int = 0,
) -> list[Event]:
    """Upload like the samples do, reading results as they go by following next_token."""
    session_id = session_id or create(sense, content_type, hop)
    events: list[Event] = []
    token: str | None = None

    def read() -> str | None:
        if token is None:
            status = sense.read_status(session_id)
        else:
            status = sense.read_status(session_id, next_token=token)
        events.extend(events_of(status))
        assert status.error is None, status.error
        return status.inference.page.next_token if status.inference.page else None

    for seq, chunk in enumerate(chunks, start=first_seq):
        data = base64.b64encode(chunk).decode()
        refs = sense.upload_chunk(session_id, seq, cochl.AudioChunk(data=data))
        assert refs.chunk_sequence == seq + 1
        if seq % 4 == 3:
            token = read()
    sense.update_session(session_id, cochl.UpdateSession(make_readonly=True))
    while True:
        token = read()
        if token is None:
            break
    sense.delete_session(session_id)
    return events


@pytest.mark.timeout(240)
@pytest.mark.parametrize("sample_format", ["f32", "s16"])
def test_sample_clients_sliding_windows_give_the_contiguous_windows(
    sense: cochl.AudioSessionApi, speech_22k: np.ndarray, sample_format: str
) -> None:
    content_type = f"audio/x-raw; rate={RATE_HZ}; format={sample_format}"
    frame_bytes = 4 if sample_format == "f32" else 2
    audio = encode(speech_22k, sample_format)
    for hop_s, hop in ((0.5, "0.5s"), (1.0, "1s")):
        expected = stream(sense, content_type, hop, contiguous_chunks(audio, frame_bytes))
        chunks = sliding_chunks(audio, frame_bytes, hop_s)
        if hop_s == 0.5:
            assert sum(map(len, chunks)) > 1.8 * len(audio)  # really overlapping
        got = stream(sense, content_type, hop, chunks)
        assert [e[:3] for e in got] == [e[:3] for e in expected], hop
        for mine, theirs in zip(got, expected, strict=True):
            assert mine[3] == pytest.approx(theirs[3], abs=1e-4)
        starts = [e[0] for e in got]
        assert starts == [round(i * hop_s, 3) for i in range(len(starts))]
        assert len(starts) >= (len(speech_22k) / RATE_HZ - 1) / hop_s
        assert any("Speech" in e[2] for e in got), got


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("rate_hz", "sample_format"), [(16_000, "s16"), (RATE_HZ, "f32")])
def test_sigkill_mid_sliding_stream_then_the_rest(
    tmp_path: Path, speech_22k: np.ndarray, rate_hz: int, sample_format: str
) -> None:
    """Chunks acknowledged before a SIGKILL are kept, and the restarted server reads the
    next sliding chunk against the same stored past (at 16 kHz, where consumed audio is pruned
    while streaming, and at 22,050 Hz)."""
    server = ServerProcess(tmp_path / "var", env={"TYMPAN_LOG_LEVEL": "WARNING"})
    key = make_key(server.data_dir, "crash")
    content_type = f"audio/x-raw; rate={rate_hz}; format={sample_format}"
    frame_bytes = 4 if sample_format == "f32" else 2
    audio = encode(speech_22k, sample_format)
    chunks = sliding_chunks(audio, frame_bytes, 0.5, rate_hz)
    cut = len(chunks) // 2
    server.start(wait=True)
    try:
        with connect(server.url, key) as sense:
            session_id = create(sense, content_type, "0.5s")
            for seq, chunk in enumerate(chunks[:cut]):
                data = base64.b64encode(chunk).decode()
                sense.upload_chunk(session_id, seq, cochl.AudioChunk(data=data))
        server.kill()
        server.start(wait=True)
        with connect(server.url, key) as sense:
            got = stream(sense, content_type, "0.5s", chunks[cut:], session_id, first_seq=cut)
            expected = stream(
                sense, content_type, "0.5s", contiguous_chunks(audio, frame_bytes, rate_hz)
            )
    finally:
        server.kill()
    assert [e[:3] for e in got] == [e[:3] for e in expected]
