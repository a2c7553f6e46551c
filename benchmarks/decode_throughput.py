"""Decode throughput per format: audio seconds decoded per CPU second, file and stream.

Usage: ``python -m benchmarks.decode_throughput [--seconds 60] [--runs 5] [--out FILE.json]``

A speech-like test signal (noise shaped by a syllable-rate envelope) is encoded once per format
with the real encoders, then decoded ``--runs`` times as a file (one call) and as a stream of
0.5 s chunks cut from the same bytes. CPU time is ``time.process_time`` so the demuxer threads
of compressed streams are counted. Reported: median and spread (min, max) over runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from server.audio import StreamDecoder, decode_file, parse_content_type
from server.audio.encode import encode_audio, encode_pcm, encode_wav

STREAM_CHUNK_S = 0.5
SYLLABLE_RATE_HZ = 4.0
SIGNAL_PEAK = 0.5
SEED = 20240501


@dataclass(frozen=True)
class Case:
    """One format under test: a name, its content type and how to make its bytes."""

    name: str
    content_type: str
    rate_hz: int
    channels: int
    make: Callable[[np.ndarray, int], bytes]
    frame_bytes: int = 1  # stream chunks of raw PCM are cut at whole sample frames


@dataclass(frozen=True)
class Result:
    """Throughput of one case in audio seconds per CPU second."""

    name: str
    mode: str
    bytes_per_audio_s: float
    median: float
    minimum: float
    maximum: float
    runs: int


def speech_like(rate_hz: int, seconds: float, channels: int) -> np.ndarray:
    """Pink-ish noise under a syllable-rate envelope, a cheap stand-in for speech."""
    rng = np.random.default_rng(SEED)
    frames = round(rate_hz * seconds)
    white = rng.standard_normal(frames)
    pinkish = np.cumsum(white) * 0.02
    pinkish -= np.convolve(pinkish, np.ones(64) / 64, mode="same")
    t = np.arange(frames) / rate_hz
    envelope = 0.5 * (1 + np.sin(2 * np.pi * SYLLABLE_RATE_HZ * t)) ** 2
    mono = pinkish * envelope
    mono *= SIGNAL_PEAK / max(float(np.abs(mono).max()), 1e-9)
    return np.repeat(mono[:, None], channels, axis=1).astype(np.float32)


def _raw(fmt: str) -> Callable[[np.ndarray, int], bytes]:
    return lambda samples, _rate: encode_pcm(samples, fmt)


def _coded(encoding: str) -> Callable[[np.ndarray, int], bytes]:
    return lambda samples, rate: encode_audio(samples, rate, encoding)


CASES = [
    Case("raw s16le 16k mono", "audio/x-raw; rate=16000; format=s16le", 16000, 1, _raw("s16le"), 2),
    Case(
        "raw s16le 48k stereo",
        "audio/x-raw; rate=48000; format=s16le; channels=2",
        48000,
        2,
        _raw("s16le"),
        4,
    ),
    Case(
        "raw f32le 44.1k mono", "audio/x-raw; rate=44100; format=f32le", 44100, 1, _raw("f32le"), 4
    ),
    Case("wav s16 16k mono", "audio/wav", 16000, 1, encode_wav),
    Case("wav s24 44.1k stereo", "audio/wav", 44100, 2, lambda s, r: encode_wav(s, r, "PCM_24")),
    Case("mp3 44.1k stereo", "audio/mpeg", 44100, 2, _coded("mp3")),
    Case("ogg vorbis 44.1k stereo", "audio/ogg", 44100, 2, _coded("ogg-vorbis")),
    Case("ogg opus 48k mono", "audio/ogg", 48000, 1, _coded("ogg-opus")),
    Case("webm opus 48k mono", "audio/webm", 48000, 1, _coded("webm-opus")),
    Case("flac 44.1k stereo", "audio/flac", 44100, 2, _coded("flac")),
    Case("aac adts 44.1k stereo", "audio/aac", 44100, 2, _coded("aac-adts")),
    Case("m4a fragmented 44.1k stereo", "audio/mp4", 44100, 2, _coded("m4a-fragmented")),
]


def _chunks(data: bytes, seconds: float, frame_bytes: int) -> list[bytes]:
    """Cut ``data`` into pieces of about 0.5 s of audio each, aligned to ``frame_bytes``."""
    step = int(len(data) * STREAM_CHUNK_S / seconds)
    step = max(frame_bytes, step - step % frame_bytes)
    return [data[i : i + step] for i in range(0, len(data), step)]


def _time_file(content_type: str, data: bytes) -> float:
    fmt = parse_content_type(content_type)
    start = time.process_time()
    decode_file(fmt, data)
    return time.process_time() - start


def _time_stream(content_type: str, chunks: list[bytes]) -> float:
    fmt = parse_content_type(content_type)
    start = time.process_time()
    decoder = StreamDecoder(fmt)
    for chunk in chunks:
        decoder.decode_chunk(chunk)
    decoder.flush()
    return time.process_time() - start


def measure(case: Case, seconds: float, runs: int) -> list[Result]:
    """Encode ``case`` once, then time file and stream decoding ``runs`` times each."""
    data = case.make(speech_like(case.rate_hz, seconds, case.channels), case.rate_hz)
    chunks = _chunks(data, seconds, case.frame_bytes)
    results = []
    for mode, timer in (
        ("file", lambda: _time_file(case.content_type, data)),
        ("stream", lambda: _time_stream(case.content_type, chunks)),
    ):
        timer()  # warm-up: imports, codec tables, first-touch allocations
        speeds = [seconds / max(timer(), 1e-9) for _ in range(runs)]
        results.append(
            Result(
                case.name,
                mode,
                len(data) / seconds,
                statistics.median(speeds),
                min(speeds),
                max(speeds),
                runs,
            )
        )
    return results


def format_table(results: list[Result]) -> str:
    """A fixed-width table of the results, one row per case and mode."""
    header = (
        f"{'format':<28} {'mode':<6} {'kB/audio-s':>10} "
        f"{'median x':>10} {'min x':>10} {'max x':>10}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.name:<28} {r.mode:<6} {r.bytes_per_audio_s / 1000:>10.1f} "
            f"{r.median:>10.0f} {r.minimum:>10.0f} {r.maximum:>10.0f}"
        )
    return "\n".join(lines)


def model_realtime_factor(seconds: float, runs: int) -> float:
    """Audio seconds per CPU second of the model the server runs (its CPU default variant, at
    its max batch), on log-mel patches of the same length of audio (2 windows per second)."""
    from models.yamnet.frontend import log_mel_frames
    from models.yamnet.spec import FRONTEND, WEIGHTS_DIR
    from server.config import Settings
    from server.runner import load_runner

    runner = load_runner(Settings.from_env({}), WEIGHTS_DIR)
    windows = int(seconds * 2)
    patch = log_mel_frames(np.zeros(FRONTEND.patch_samples))[None].astype(np.float32)
    patches = np.repeat(patch, windows, axis=0)
    batch = runner.bucket_sizes[-1]
    runner.run(patches[:batch])
    factors = []
    for _ in range(runs):
        started = time.process_time()
        for start in range(0, windows, batch):
            runner.run(patches[start : start + batch])
        factors.append(seconds / (time.process_time() - started))
    return statistics.median(factors)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table; optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio length per format")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per format and mode")
    parser.add_argument("--out", help="write results as JSON to this file")
    args = parser.parse_args(argv)
    results: list[Result] = []
    for case in CASES:
        results.extend(measure(case, args.seconds, args.runs))
    model_x = model_realtime_factor(args.seconds, args.runs)
    print(f"audio seconds decoded per CPU second (x realtime), {args.seconds:g} s signal, "
          f"{args.runs} runs, stream chunks {STREAM_CHUNK_S:g} s")  # fmt: skip
    print(format_table(results))
    slowest = min(results, key=lambda r: r.median)
    print(
        f"\nthe model on the same audio (server variant, CPU): {model_x:.0f}x realtime; "
        f"the slowest decode ({slowest.name} {slowest.mode}, {slowest.median:.0f}x) costs "
        f"{model_x / slowest.median:.2f} of the model's time for the same audio"
    )
    if args.out:
        payload = {
            "seconds": args.seconds,
            "runs": args.runs,
            "stream_chunk_s": STREAM_CHUNK_S,
            "unit": "audio seconds per CPU second",
            "results": [asdict(r) for r in results],
            "model_audio_s_per_cpu_s": model_x,
        }
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
