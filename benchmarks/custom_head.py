"""Which trainable head finds TTS glitches and long pauses best, measured on a set built now.

The set (``benchmarks/tts_artifacts.py``): ``--train-files`` espeak-ng files for training
(``train_head`` splits them by file, ``validation_split`` for choosing thresholds) and
``--test-files`` with other voices, rates and sentences, on which every figure below is
measured. Each architecture and feature set is trained with each seed of ``--seeds``, with the
reference's defaults (20 epochs, learning rate 0.001, batch 32).

Reported per type: event precision, recall and F1 (onset collar 20 ms, offset collar
max(20 ms, 20 % of the event's duration), ``models/heads/metrics.py``), frame AUPRC, the median
and p90 of |onset error| of matched events, the threshold chosen; per run the training time and
its ratio to the fastest architecture's median, and the ONNX Runtime inference time as a
fraction of the audio's duration. One run is repeated to check that a seed gives the same
metrics.

    .venv/bin/python -m benchmarks.custom_head --out benchmarks/out/custom_head
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from benchmarks.machine import machine_info
from benchmarks.tts_artifacts import RATE, SyntheticFile, build_set
from models.heads.config import TrainingConfig
from models.heads.data import AnnotatedFile, build_examples
from models.heads.export import INPUT_NAME, export_onnx
from models.heads.features import LOG_MEL, WITH_SAMPLE_FEATURES, FeatureSpec
from models.heads.metrics import EMPTY_SCORE, frames_to_events, match_events, score_events
from models.heads.network import Architecture
from models.heads.training import TrainedHead, evaluate, train_head

__all__ = ["CANDIDATES", "main", "run_one"]

_DILATED = Architecture(hidden_units=16, dilated_radius=4, dilation=8)
CANDIDATES: tuple[tuple[Architecture, FeatureSpec], ...] = (
    (Architecture(hidden_units=0, dilated_radius=4), LOG_MEL),
    (Architecture(hidden_units=0, dilated_radius=4), WITH_SAMPLE_FEATURES),
    (_DILATED, LOG_MEL),
    (_DILATED, WITH_SAMPLE_FEATURES),
    (Architecture(hidden_units=16), LOG_MEL),
    (Architecture(hidden_units=32, dense_radius=5), WITH_SAMPLE_FEATURES),
    (Architecture(hidden_units=16), WITH_SAMPLE_FEATURES),  # the default; last: run twice
)


def _annotated(files: list[SyntheticFile]) -> list[AnnotatedFile]:
    return [AnnotatedFile.build(f.name, f.annotations, samples=f.samples) for f in files]


def _onset_p90(head: TrainedHead, examples: list[Any], column: int) -> float | None:
    score = EMPTY_SCORE
    for ex in examples:
        detected = [
            (s, e)
            for s, e, _ in frames_to_events(
                head.predict(ex.features)[:, column], head.rules[column]
            )
        ]
        score = score + score_events(ex.events_ms[column], detected)
    errors = score.onset_errors_ms
    return float(np.percentile(errors, 90)) if errors else None


LEVEL_BANDS_DBFS = ((-34.0, -26.0), (-26.0, -18.0), (-18.0, -10.0))


def _glitch_recall_by_level(
    head: TrainedHead, examples: list[Any], synthetic: list[SyntheticFile]
) -> dict[str, float | None]:
    """Recall of the clicks whose peak lies in each band of ``LEVEL_BANDS_DBFS``."""
    column = head.artifact_types.index("glitch")
    found: list[tuple[float, bool]] = []
    for ex, file in zip(examples, synthetic, strict=True):
        probs = head.predict(ex.features)[:, column]
        detected = [(s, e) for s, e, _ in frames_to_events(probs, head.rules[column])]
        reference = ex.events_ms[column]
        matched = {i for i, _ in match_events(reference, detected)}
        level = dict(file.click_levels)
        found += [(level[start], i in matched) for i, (start, _) in enumerate(reference)]
    out: dict[str, float | None] = {}
    for low, high in LEVEL_BANDS_DBFS:
        band = [hit for db, hit in found if low <= db < high or (high == -10.0 and db == high)]
        out[f"{low:g}..{high:g} dBFS"] = sum(band) / len(band) if band else None
    return out


def _inference_fraction(model: bytes, examples: list[Any]) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    started = time.process_time()
    for ex in examples:
        session.run(None, {INPUT_NAME: ex.features})
    cpu_s = time.process_time() - started
    audio_s = sum(ex.frame_count for ex in examples) / 100.0
    return cpu_s / audio_s


def run_one(
    train: list[AnnotatedFile],
    test: list[AnnotatedFile],
    synthetic_test: list[SyntheticFile],
    architecture: Architecture,
    spec: FeatureSpec,
    seed: int,
    epochs: int,
) -> dict[str, Any]:
    started = time.process_time()
    head = train_head(train, TrainingConfig(epochs=epochs, seed=seed), spec, architecture)
    train_cpu_s = time.process_time() - started
    examples = build_examples(test, head.artifact_types, spec)
    test_metrics = evaluate(head, examples)
    for column, kind in enumerate(head.artifact_types):
        test_metrics[kind]["p90_onset_error_ms"] = _onset_p90(head, examples, column)
    return {
        "architecture": architecture.name,
        "features": spec.name,
        "seed": seed,
        "train_cpu_s": train_cpu_s,
        "best_epoch": int(min(head.history, key=lambda r: r["validation_loss"])["epoch"]),
        "validation": head.metrics,
        "test": test_metrics,
        "glitch_recall_by_level": _glitch_recall_by_level(head, examples, synthetic_test),
        "onnx_cpu_fraction_of_audio": _inference_fraction(export_onnx(head), examples),
    }


def _table(runs: list[dict[str, Any]]) -> str:
    fastest = min(
        float(
            np.median([r["train_cpu_s"] for r in runs if (r["architecture"], r["features"]) == key])
        )
        for key in {(r["architecture"], r["features"]) for r in runs}
    )
    lines = [
        "| head | features | type | F1 (per seed) | P | R | AUPRC | onset err med / p90 ms | train CPU (x fastest) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["architecture"], r["features"]) for r in runs})
    for arch, feats in keys:
        group = [r for r in runs if (r["architecture"], r["features"]) == (arch, feats)]
        ratio = float(np.median([r["train_cpu_s"] for r in group])) / fastest
        for kind in group[0]["test"]:
            m = [r["test"][kind] for r in group]

            def med(key: str, rows: list[dict[str, Any]] = m) -> str:
                values = [x[key] for x in rows if x[key] is not None]
                return f"{np.median(values):.2f}" if values else "-"

            f1s = "/".join(f"{x['f1']:.2f}" for x in m)
            lines.append(
                f"| {arch} | {feats} | {kind} | {f1s} | {med('precision')} | {med('recall')} | "
                f"{med('frame_auprc')} | {med('median_onset_error_ms')} / {med('p90_onset_error_ms')} | "
                f"{ratio:.2f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-files", type=int, default=40)
    parser.add_argument("--test-files", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    train_set = build_set("train", args.train_files, args.data_seed)
    test_set = build_set("test", args.test_files, args.data_seed)
    train, test = _annotated(train_set), _annotated(test_set)
    counts = {
        part: {
            kind: sum(a[0] == kind for f in files for a in f.annotations)
            for kind in ("glitch", "long_pause")
        }
        | {"files": len(files), "audio_s": sum(f.samples.size for f in files) / RATE}
        for part, files in (("train", train_set), ("test", test_set))
    }
    print(json.dumps(counts))
    runs = []
    for architecture, spec in CANDIDATES:
        for seed in args.seeds:
            result = run_one(train, test, test_set, architecture, spec, seed, args.epochs)
            runs.append(result)
            brief = {k: round(v["f1"], 3) for k, v in result["test"].items()}
            print(
                result["architecture"],
                result["features"],
                seed,
                brief,
                f"{result['train_cpu_s']:.1f}s",
                flush=True,
            )
    arch, spec = CANDIDATES[-1]
    again = run_one(train, test, test_set, arch, spec, args.seeds[0], args.epochs)
    first = next(
        r
        for r in runs
        if (r["architecture"], r["features"], r["seed"]) == (arch.name, spec.name, args.seeds[0])
    )
    reproducible = again["test"] == first["test"] and again["validation"] == first["validation"]
    table = _table(runs)
    print(table)
    print("same seed, same metrics:", reproducible)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        report = {
            "machine": machine_info(),
            "args": vars(args) | {"out": str(args.out)},
            "counts": counts,
            "runs": runs,
            "reproducible": reproducible,
        }
        (args.out / "custom_head.json").write_text(json.dumps(report, indent=1, default=str))
        (args.out / "custom_head.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
