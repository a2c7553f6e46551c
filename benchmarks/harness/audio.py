"""Real test audio, built once and encoded once before a run.

Speech from espeak-ng, a harmonic tone and a noise bed, mixed and resampled to 16 kHz mono s16le
with PyAV. Every chunk body (base64 JSON or msgpack) is encoded before the clock starts, so the
load generator spends its CPU on sending, not on encoding.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import msgpack
import numpy as np
import numpy.typing as npt
import soundfile as sf

__all__ = [
    "CHUNK_SAMPLES",
    "FILE_CHUNK_BYTES",
    "RAW_CONTENT_TYPE",
    "SAMPLE_RATE_HZ",
    "WAV_CONTENT_TYPE",
    "ChunkBodies",
    "encode_bodies",
    "make_clip",
    "wav_file_chunks",
]

SAMPLE_RATE_HZ = 16_000
CHUNK_SECONDS = 0.5
CHUNK_SAMPLES = int(CHUNK_SECONDS * SAMPLE_RATE_HZ)
FILE_CHUNK_BYTES = 1024 * 1024
RAW_CONTENT_TYPE = "audio/x-raw; rate=16000; format=s16le"
WAV_CONTENT_TYPE = "audio/wav"
SPEECH_TEXT = (
    "Good morning. This is the latency benchmark speaking, one sentence after another, "
    "so that the sound event model hears a real voice. The kettle is on, the door is open, "
    "and somebody is talking in the next room about the weather and the trains."
)
_TONE_SECONDS = 6.0
_NOISE_SECONDS = 3.0
_SEED = 20240611

Samples = npt.NDArray[np.float32]


def _speech(text: str) -> Samples:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RuntimeError("espeak-ng is needed to synthesise the benchmark speech")
    with tempfile.TemporaryDirectory(prefix="tympan-bench-") as folder:
        path = Path(folder) / "speech.wav"
        subprocess.run([espeak, "-w", str(path), text], check=True, capture_output=True)
        return _decode_16k(path)


def _decode_16k(path: Path) -> Samples:
    """Any file PyAV reads -> 16 kHz mono float32 in [-1, 1)."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE_HZ)
    pieces: list[npt.NDArray[Any]] = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            pieces.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
    pieces.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    return (np.concatenate(pieces).astype(np.float32) / 32768.0).astype(np.float32)


def make_clip() -> Samples:
    """About 25 s of speech, tone, speech over noise and a quiet noise bed, a whole number of
    chunks long, so that streams can loop it from different offsets."""
    rng = np.random.default_rng(_SEED)
    speech = _speech(SPEECH_TEXT)
    t = np.arange(int(_TONE_SECONDS * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 0.5 * t)
    tone = envelope * (0.3 * np.sin(2 * np.pi * 440 * t) + 0.15 * np.sin(2 * np.pi * 880 * t))
    tone += 0.02 * rng.standard_normal(t.shape[0])
    noisy_speech = speech + 0.05 * rng.standard_normal(speech.shape[0])
    bed = 0.01 * rng.standard_normal(int(_NOISE_SECONDS * SAMPLE_RATE_HZ))
    clip = np.concatenate([speech, tone, noisy_speech, bed]).astype(np.float32)
    whole = -(-clip.shape[0] // CHUNK_SAMPLES) * CHUNK_SAMPLES
    return np.pad(clip, (0, whole - clip.shape[0]))


def _s16le(samples: Samples) -> bytes:
    return (np.clip(samples, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()


def _body(raw: bytes, transport: str) -> bytes:
    if transport == "msgpack":
        return bytes(msgpack.packb({"data": raw}, use_bin_type=True))
    return json.dumps({"data": base64.b64encode(raw).decode()}).encode()


@dataclass(frozen=True)
class ChunkBodies:
    """Request bodies ready to send, one per chunk of the looped clip."""

    bodies: tuple[bytes, ...]
    samples_per_body: int

    def __len__(self) -> int:
        return len(self.bodies)

    def at(self, index: int) -> bytes:
        return self.bodies[index % len(self.bodies)]


def encode_bodies(clip: Samples, transport: str) -> ChunkBodies:
    """0.5 s raw s16le stream chunks of the clip, encoded for the transport."""
    raw = _s16le(clip)
    step = CHUNK_SAMPLES * 2
    bodies = tuple(_body(raw[i : i + step], transport) for i in range(0, len(raw), step))
    return ChunkBodies(bodies, CHUNK_SAMPLES)


def wav_file_chunks(clip: Samples, seconds: float, transport: str) -> tuple[ChunkBodies, int]:
    """A 16-bit WAV file of ``seconds`` (the clip looped), cut into 1 MiB chunks; also returns
    the number of samples in it."""
    total = int(seconds * SAMPLE_RATE_HZ)
    samples = np.resize(clip, total).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, samples, SAMPLE_RATE_HZ, format="WAV", subtype="PCM_16")
    data = buffer.getvalue()
    bodies = tuple(
        _body(data[i : i + FILE_CHUNK_BYTES], transport)
        for i in range(0, len(data), FILE_CHUNK_BYTES)
    )
    return ChunkBodies(bodies, 0), total
