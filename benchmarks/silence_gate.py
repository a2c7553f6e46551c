"""The silence gate on microphone-like audio: how much model work it saves, and what it loses.

Usage: ``python -m benchmarks.silence_gate [--cache DIR] [--out FILE.json]``

A live microphone is never digitally silent: between sounds it hears the room and its own
self-noise. The scene here is what such a stream looks like. The labelled clips of the
calibration set (real recordings from Debian packages plus espeak-ng speech, see
``models/yamnet/calibrate.py``) play one after another in a seeded random order, each at a
level drawn from ``--event-dbfs`` (the clip's active level: the mean power of its 0.1 s blocks
within 30 dB of its loudest), separated by pauses of 2-8 s, over a continuous pink-noise floor
at each ``--floors-dbfs`` level (none: digital silence between sounds, as in a file).

The scene goes through the server's own pipeline (frontend, windows, levels) and runner, once;
then every gate threshold is applied as the engine applies it (windows whose level is below it
get what the model says for digital silence) and the tags are compared with the ungated ones:

- windows skipped: model work saved (the frontend still runs for every window);
- windows whose tags change;
- events missed: labelled clips none of whose windows carries one of their labels any more,
  among those detected without the gate (what a user of the session would notice);
- tags removed in pauses: windows entirely inside a pause that had a tag without the gate.

``--cache`` keeps the extracted Debian packages for the next run (about 600 MB downloaded).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.machine import machine_info
from models.yamnet.calibrate import Clip, labelled_clips
from models.yamnet.labels import load_labels
from models.yamnet.spec import FRONTEND, WEIGHTS_DIR
from models.yamnet.thresholds import load_thresholds
from server.app import silence_probabilities
from server.audio import DecodeLimits, parse_content_type
from server.config import Settings
from server.pipeline import AudioPipeline
from server.runner import OnnxRunner, load_runner
from server.tagging import OTHERS, SENSITIVITY_STEP_LOGIT, Tagger

__all__ = ["main"]

RATE = FRONTEND.sample_rate_hz
HOP_S = 0.5
WINDOW_S = FRONTEND.patch_samples / RATE
DEFAULT_THRESHOLDS = (-90.0, -80.0, -70.0, -65.0, -60.0, -55.0, -50.0, -45.0, -40.0)
DEFAULT_FLOORS = ("none", "-70", "-60", "-50")


@dataclass(frozen=True)
class Event:
    source: str
    labels: frozenset[str]
    start_s: float
    end_s: float
    level_dbfs: float


def active_level_dbfs(samples: npt.NDArray[np.float32]) -> float:
    """Mean power of the 0.1 s blocks within 30 dB of the loudest one: a clip's level while it
    sounds, not diluted by the silence some recordings carry around the sound."""
    block = RATE // 10
    count = max(1, samples.size // block)
    blocks = np.resize(samples.astype(np.float64), count * block).reshape(count, block)
    power = (blocks**2).mean(axis=1)
    active = power[power >= power.max() / 1000.0]
    return float(10.0 * np.log10(active.mean() + 1e-20))


def pink_noise(
    samples: int, level_dbfs: float, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """Noise whose power falls 3 dB per octave (like a room and a microphone's self-noise),
    scaled to ``level_dbfs`` mean power."""
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    freqs = np.fft.rfftfreq(samples, 1.0 / RATE)
    spectrum[1:] /= np.sqrt(freqs[1:] / freqs[1])
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, samples)
    noise *= np.sqrt(10 ** (level_dbfs / 10.0) / np.mean(noise**2))
    return noise.astype(np.float32)


def build_scene(
    clips: list[Clip], event_dbfs: tuple[float, float], seed: int
) -> tuple[npt.NDArray[np.float32], list[Event]]:
    """The labelled clips in a random order, each at a random level, with 2-8 s pauses of
    digital silence between them (the floor is added per run)."""
    rng = np.random.default_rng(seed)
    pieces: list[npt.NDArray[np.float32]] = []
    events: list[Event] = []
    at = 0
    for index in rng.permutation(len(clips)):
        clip = clips[int(index)]
        pause = int(rng.uniform(2.0, 8.0) * RATE)
        pieces.append(np.zeros(pause, np.float32))
        at += pause
        target = float(rng.uniform(*event_dbfs))
        gain = 10 ** ((target - active_level_dbfs(clip.samples)) / 20.0)
        sound = np.clip(clip.samples * gain, -1.0, 1.0).astype(np.float32)
        pieces.append(sound)
        events.append(Event(clip.source, clip.labels, at / RATE, (at + sound.size) / RATE, target))
        at += sound.size
    pieces.append(np.zeros(int(4.0 * RATE), np.float32))
    return np.concatenate(pieces), events


@dataclass
class Analysed:
    levels_dbfs: npt.NDArray[np.float64]
    probabilities: npt.NDArray[np.float32]
    model_s: float


def analyse(samples: npt.NDArray[np.float32], runner: OnnxRunner, max_batch: int) -> Analysed:
    """Levels and probabilities of every window, through the server's pipeline and runner."""
    fmt = parse_content_type(f"audio/x-raw; rate={RATE}; format=f32le")
    pipeline = AudioPipeline(fmt, HOP_S, DecodeLimits(), prepare=runner.prepare)
    batches = [pipeline.push_block(block) for block in pipeline.file_blocks(samples)]
    batches.append(pipeline.finish_file())
    levels: list[npt.NDArray[np.float64]] = []
    probabilities: list[npt.NDArray[np.float32]] = []
    model_s = 0.0
    for batch in batches:
        if not len(batch):
            continue
        assert batch.levels_dbfs is not None
        levels.append(batch.levels_dbfs)
        for start in range(0, len(batch), max_batch):
            started = time.perf_counter()
            probabilities.append(runner.run(batch.patches[start : start + max_batch]))
            model_s += time.perf_counter() - started
    return Analysed(np.concatenate(levels), np.concatenate(probabilities), model_s)


def event_windows(count: int, events: list[Event]) -> list[npt.NDArray[np.int64]]:
    """Per event, the indices of the windows (of ``count``) that overlap it."""
    starts = np.arange(count) * HOP_S
    return [
        np.flatnonzero((starts < event.end_s) & (starts + WINDOW_S > event.start_s))
        for event in events
    ]


def _pause_mask(
    count: int, windows_of_events: list[npt.NDArray[np.int64]]
) -> npt.NDArray[np.bool_]:
    pause = np.ones(count, bool)
    for windows in windows_of_events:
        pause[windows] = False
    return pause


def evaluate(
    analysed: Analysed,
    silence: npt.NDArray[np.float32],
    events: list[Event],
    tagger: Tagger,
    thresholds_dbfs: list[float],
) -> list[dict[str, Any]]:
    """``silence``: what the model says for digital silence, which the engine reports for
    windows under the gate."""
    levels, probabilities = analysed.levels_dbfs, analysed.probabilities
    thresholds = tagger.thresholds()
    windows_of_events = event_windows(levels.size, events)
    pause = _pause_mask(levels.size, windows_of_events)

    def tag_sets(probs: npt.NDArray[np.float32]) -> list[frozenset[str]]:
        return [
            frozenset(name for name, _ in tags if name != OTHERS)
            for tags in tagger.tags(probs, thresholds)
        ]

    ungated = tag_sets(probabilities)

    def detected(tags: list[frozenset[str]]) -> list[bool]:
        return [
            any(tags[w] & event.labels for w in windows)
            for event, windows in zip(events, windows_of_events, strict=True)
        ]

    labelled = [bool(event.labels) for event in events]
    detected_ungated = detected(ungated)
    rows = []
    for threshold in thresholds_dbfs:
        quiet = levels < threshold
        gated_probs = probabilities.copy()
        gated_probs[quiet] = silence
        gated = tag_sets(gated_probs)
        detected_gated = detected(gated)
        missed = [
            event.source
            for event, lab, before, after in zip(
                events, labelled, detected_ungated, detected_gated, strict=True
            )
            if lab and before and not after
        ]
        rows.append(
            {
                "threshold_dbfs": threshold,
                "windows": int(levels.size),
                "windows_skipped": int(quiet.sum()),
                "windows_skipped_in_pauses": int((quiet & pause).sum()),
                "pause_windows": int(pause.sum()),
                "windows_changed": int(sum(a != b for a, b in zip(ungated, gated, strict=True))),
                "events_labelled": int(sum(labelled)),
                "events_detected_ungated": int(
                    sum(d for d, lab in zip(detected_ungated, labelled, strict=True) if lab)
                ),
                "events_missed": len(missed),
                "missed": missed,
                "pause_windows_tagged_ungated": int(
                    sum(bool(ungated[w]) for w in np.flatnonzero(pause))
                ),
                "pause_windows_tagged_gated": int(
                    sum(bool(gated[w]) for w in np.flatnonzero(pause))
                ),
            }
        )
    return rows


def _level_summary(analysed: Analysed, events: list[Event]) -> dict[str, list[float]]:
    count = analysed.levels_dbfs.size
    pause = _pause_mask(count, event_windows(count, events))
    pcts = [1, 5, 50, 95, 99]

    def percentiles(values: npt.NDArray[np.float64]) -> list[float]:
        return [round(float(v), 1) for v in np.percentile(values, pcts)] if values.size else []

    return {
        "percentiles": [float(p) for p in pcts],
        "pause_windows_dbfs": percentiles(analysed.levels_dbfs[pause]),
        "event_windows_dbfs": percentiles(analysed.levels_dbfs[~pause]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, help="keep the extracted packages here (reused)")
    parser.add_argument("--floors-dbfs", default=",".join(DEFAULT_FLOORS))
    parser.add_argument("--thresholds-dbfs", default=",".join(str(t) for t in DEFAULT_THRESHOLDS))
    parser.add_argument("--event-dbfs", default="-45,-15", help="range of event levels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    low, high = (float(v) for v in args.event_dbfs.split(","))
    thresholds = [float(v) for v in args.thresholds_dbfs.split(",")]

    with tempfile.TemporaryDirectory(prefix="tympan-gate-") as scratch:
        packages = args.cache or Path(scratch) / "packages"
        packages.mkdir(parents=True, exist_ok=True)
        # The generated noise and silence clips are left out: the floor below plays that part.
        clips = [
            c
            for c in labelled_clips(packages, Path(scratch))
            if c.samples.size and not c.source.startswith("generated:")
        ]
    scene, events = build_scene(clips, (low, high), args.seed)
    settings = Settings.from_env({}, data_dir=Path(tempfile.gettempdir()))
    model_dir = settings.model_dir or WEIGHTS_DIR
    runner = load_runner(settings, model_dir)
    step = runner.output_quant.scale if runner.output_quant else SENSITIVITY_STEP_LOGIT
    tagger = Tagger(load_labels(model_dir), load_thresholds(), sensitivity_step_logit=step)
    silence = silence_probabilities(runner)  # what the engine reports for gated windows
    report: dict[str, Any] = {
        "machine": machine_info(),
        "config": {
            "scene_s": round(scene.size / RATE, 1),
            "events": len(events),
            "event_dbfs": [low, high],
            "seed": args.seed,
        },
        "floors": [],
    }
    rng = np.random.default_rng(args.seed + 1)
    print(
        f"scene: {scene.size / RATE:.0f} s, {len(events)} events at {low:g}..{high:g} dBFS",
        flush=True,
    )
    for floor in args.floors_dbfs.split(","):
        audio = scene if floor == "none" else scene + pink_noise(scene.size, float(floor), rng)
        analysed = analyse(
            np.clip(audio, -1.0, 1.0).astype(np.float32), runner, settings.max_batch_size
        )
        rows = evaluate(analysed, silence, events, tagger, thresholds)
        levels = _level_summary(analysed, events)
        report["floors"].append(
            {"floor_dbfs": floor, "model_s": analysed.model_s, "levels": levels, "rows": rows}
        )
        print(
            f"\nfloor {floor} dBFS: window levels p1/p5/p50/p95/p99, pauses "
            f"{levels['pause_windows_dbfs']}, events {levels['event_windows_dbfs']}"
        )
        print(
            "gate dBFS | skipped | skipped in pauses | windows changed | events missed | pause windows tagged"
        )
        for row in rows:
            print(
                f"{row['threshold_dbfs']:9.0f} | {row['windows_skipped'] / row['windows']:7.1%} | "
                f"{row['windows_skipped_in_pauses'] / max(1, row['pause_windows']):17.1%} | "
                f"{row['windows_changed']:15d} | "
                f"{row['events_missed']:3d} of {row['events_detected_ungated']:3d} | "
                f"{row['pause_windows_tagged_ungated']} -> {row['pause_windows_tagged_gated']}",
                flush=True,
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
