"""What a custom detector costs per second of audio, against YAMNet on the same audio.

Inference jobs (``server/inference``) run a head in a child process: the frame features
(``models.heads.features``: log-mel plus the linear-prediction residual's peak and crest) and
the head's ONNX graph, one thread. This measures that work's CPU time per audio second, split
into features and model, and YAMNet's (its log-mel patches and the served variant, batches of
16, a window every ``--yamnet-hop-s``) on the same audio in the same run, each ``--rounds``
times, in turn; it reports the median and the spread, and the ratios.

The head has the default architecture and feature set, trained briefly on generated audio
(its cost does not depend on its weights), or ``--model`` is an exported head's ONNX file.
BLAS and ONNX Runtime get one thread each, as in the server.

    .venv/bin/python -m benchmarks.head_inference --seconds 120 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.machine import machine_info

__all__ = ["main", "measure"]

_RATE_HZ = 16_000
_YAMNET_BATCH = 16


def _audio(seconds: float, seed: int) -> npt.NDArray[np.float32]:
    """Speech-like noise with a 2 ms click every 3 s and a 600 ms near-silence every 7 s."""
    rng = np.random.default_rng(seed)
    count = int(seconds * _RATE_HZ)
    t = np.arange(count) / _RATE_HZ
    noise = np.convolve(rng.standard_normal(count), np.ones(8) / 8, mode="same")
    audio = 0.3 * noise * (0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t) ** 2)
    for start in range(int(1.5 * _RATE_HZ), count - _RATE_HZ, 7 * _RATE_HZ):
        audio[start : start + int(0.6 * _RATE_HZ)] *= 0.003
    for start in range(_RATE_HZ, count - _RATE_HZ, 3 * _RATE_HZ):
        audio[start : start + 32] = 0.95
    return audio.astype(np.float32)


def _head_bytes(model: Path | None) -> bytes:
    if model is not None:
        return model.read_bytes()
    from models.heads.config import TrainingConfig
    from models.heads.data import AnnotatedFile
    from models.heads.export import export_onnx
    from models.heads.training import train_head

    files = []
    for n in range(4):
        audio = _audio(10.0, seed=n)
        clicks = [("glitch", s * 1000.0, s * 1000.0 + 2) for s in range(1, 9, 3)]
        pauses = [("long_pause", 1500.0, 2100.0), ("long_pause", 8500.0, 9100.0)]
        files.append(AnnotatedFile.build(f"f{n}.wav", clicks + pauses, samples=audio))
    config = TrainingConfig(artifact_types=("glitch", "long_pause"), epochs=2, seed=0)
    return export_onnx(train_head(files, config))


def _cpu(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    """This process's CPU time (every thread) for ``fn(*args)``, and its value."""
    started = time.process_time()
    value = fn(*args)
    return time.process_time() - started, value


def measure(seconds: float, rounds: int, hop_s: float, model: Path | None) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from models.heads.features import frame_features
    from models.yamnet.frontend import patches_offline
    from models.yamnet.spec import FRONTEND, WEIGHTS_DIR
    from server.config import Settings
    from server.runner import load_head_runner, load_runner

    threadpool_limits(limits=1, user_api="blas")
    audio = _audio(seconds, seed=99)
    head = load_head_runner(_head_bytes(model))
    yamnet = load_runner(Settings.from_env({}, intra_op_threads=1), WEIGHTS_DIR)
    hop_frames = FRONTEND.hop_frames(hop_s)

    def run_yamnet(patches: npt.NDArray[np.float32]) -> int:
        prepared = yamnet.prepare(patches)
        for start in range(0, len(prepared), _YAMNET_BATCH):
            yamnet.run(prepared[start : start + _YAMNET_BATCH])
        return len(prepared)

    per_s: dict[str, list[float]] = {
        k: [] for k in ("head_features", "head_model", "yamnet_frontend", "yamnet_model")
    }
    for _ in range(rounds):
        cost, features = _cpu(lambda: frame_features(head.spec, samples=audio))
        per_s["head_features"].append(cost / seconds)
        cost, _ = _cpu(head.run, features)
        per_s["head_model"].append(cost / seconds)
        cost, patches = _cpu(patches_offline, audio, hop_frames)
        per_s["yamnet_frontend"].append(cost / seconds)
        cost, windows = _cpu(run_yamnet, patches)
        per_s["yamnet_model"].append(cost / seconds)
    head_total = [a + b for a, b in zip(per_s["head_features"], per_s["head_model"], strict=True)]
    yamnet_total = [
        a + b for a, b in zip(per_s["yamnet_frontend"], per_s["yamnet_model"], strict=True)
    ]
    per_s["head_total"], per_s["yamnet_total"] = head_total, yamnet_total
    ratios = [h / y for h, y in zip(head_total, yamnet_total, strict=True)]

    def summary(values: list[float], scale: float = 1000.0) -> dict[str, float]:
        return {
            "median": round(statistics.median(values) * scale, 3),
            "min": round(min(values) * scale, 3),
            "max": round(max(values) * scale, 3),
        }

    return {
        "machine": machine_info(),
        "audio_seconds": seconds,
        "rounds": rounds,
        "yamnet_variant": yamnet.variant,
        "yamnet_windows": windows,
        "yamnet_hop_s": hop_s,
        "head_frames": int(features.shape[0]),
        "head_feature_width": int(features.shape[1]),
        "cpu_ms_per_audio_s": {name: summary(values) for name, values in per_s.items()},
        "head_over_yamnet": summary(ratios, scale=1.0),
        "features_share_of_head": summary(
            [f / t for f, t in zip(per_s["head_features"], head_total, strict=True)], scale=1.0
        ),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="audio length")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--yamnet-hop-s", type=float, default=0.5)
    parser.add_argument("--model", type=Path, default=None, help="an exported head (.onnx)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    result = measure(args.seconds, args.rounds, args.yamnet_hop_s, args.model)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
