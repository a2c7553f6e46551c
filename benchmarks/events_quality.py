"""How close the event boundaries of ``server/events.py`` come to known event times.

Scenes of ``--scene-s`` seconds: real clips of the check set (``models/yamnet/checkset``) at
seeded random offsets, with 1-5 s pauses, in pink or white noise at -40 dBFS, each clip at an SNR
drawn from ``SNRS_DB`` (active power of the clip over the noise's power). A clip is trimmed to
its active part (10 ms frames within 35 dB of its loudest) and its placed interval is the
ground truth, with the AudioSet class in ``TAGS``. Only clips whose class passes in at least two
windows when the clip is alone in quiet noise are used: this measures boundaries, not
recognition. The server's runner gives each window's probabilities (0.975 s every 0.5 s) and
the session's calibrated thresholds at sensitivity 0 decide what passes. Only the target
classes are scored (``Animal``, ``Music`` and other parents the model also reports are neither
hits nor false alarms).

The refined rule's two fill fractions are tuned on the ``--tune-seeds`` scenes (best F1, then
smallest median boundary error) and the figures are reported on the ``--seeds`` scenes, for the
naive rule and the refined one on the same probabilities.

Scoring (sed_eval's event-based convention): a detection matches a reference event of the same
tag when its onset is within ``COLLAR_S`` (200 ms) of the reference onset and its offset within
max(200 ms, 20 % of the reference's duration) of its offset; one to one, by maximum bipartite
matching. Onset and offset errors are measured, for each reference event, on the detection of its
tag that overlaps it most (events with none are counted as missed, not as errors).
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
import soundfile

from benchmarks.machine import machine_info
from benchmarks.silence_gate import pink_noise
from models.yamnet.checkset import CHECKSET_DIR
from models.yamnet.frontend import patches_offline
from models.yamnet.labels import load_labels
from models.yamnet.spec import FRONTEND, WEIGHTS_DIR
from models.yamnet.thresholds import load_thresholds
from server.config import Settings
from server.events import EventRules, derive_events
from server.runner import OnnxRunner, load_runner
from server.tagging import SENSITIVITY_STEP_LOGIT, Tagger

__all__ = ["Interval", "boundary_errors", "matched_count", "score"]

RATE = FRONTEND.sample_rate_hz
HOP_S = 0.5
HOP_FRAMES = FRONTEND.hop_frames(HOP_S)
COLLAR_S = 0.2
OFFSET_RATIO = 0.2
NOISE_DBFS = -40.0
SNRS_DB = (0.0, 6.0, 12.0, 20.0)
ACTIVE_DB = 35.0
MERGE_WINDOW_MS = 500
FILLS = tuple(round(0.1 * k, 1) for k in range(1, 10))
TAGS = {
    "dog": "Dog",
    "cat": "Cat",
    "cow": "Cattle, bovinae",
    "rooster": "Chicken, rooster",
    "crow": "Crow",
    "sheep": "Sheep",
    "horse": "Horse",
    "pig": "Pig",
    "lion": "Roaring cats (lions, tigers)",
    "bee": "Bee, wasp, etc.",
    "frog": "Frog",
    "duck": "Duck",
    "phone-ringing": "Telephone bell ringing",
    "alarm-clock": "Alarm clock",
    "bell": "Bell",
    "piano": "Piano",
    "guitar": "Guitar",
    "trumpet": "Trumpet",
    "cello": "Cello",
    "speech-front-center": "Speech",
    "speech-rear-left": "Speech",
    "speech-side-right": "Speech",
}


@dataclass(frozen=True)
class Interval:
    tag: str
    onset_s: float
    offset_s: float


def _matches(ref: Interval, est: Interval) -> bool:
    collar = max(COLLAR_S, OFFSET_RATIO * (ref.offset_s - ref.onset_s))
    return (
        ref.tag == est.tag
        and abs(est.onset_s - ref.onset_s) <= COLLAR_S + 1e-9
        and abs(est.offset_s - ref.offset_s) <= collar + 1e-9
    )


def matched_count(refs: list[Interval], ests: list[Interval]) -> int:
    """Maximum one-to-one matching under the collars (Kuhn's augmenting paths)."""
    owner: dict[int, int] = {}

    def augment(r: int, seen: set[int]) -> bool:
        for e, est in enumerate(ests):
            if e in seen or not _matches(refs[r], est):
                continue
            seen.add(e)
            if e not in owner or augment(owner[e], seen):
                owner[e] = r
                return True
        return False

    return sum(augment(r, set()) for r in range(len(refs)))


def boundary_errors(
    refs: list[Interval], ests: list[Interval]
) -> tuple[list[float], list[float], int]:
    """Signed onset and offset errors (s) against the most-overlapping same-tag detection, and
    how many reference events had none."""
    onsets: list[float] = []
    offsets: list[float] = []
    missed = 0
    for ref in refs:
        best, overlap = None, 0.0
        for est in ests:
            shared = min(ref.offset_s, est.offset_s) - max(ref.onset_s, est.onset_s)
            if est.tag == ref.tag and shared > overlap:
                best, overlap = est, shared
        if best is None:
            missed += 1
            continue
        onsets.append(best.onset_s - ref.onset_s)
        offsets.append(best.offset_s - ref.offset_s)
    return onsets, offsets, missed


def score(scenes: list[tuple[list[Interval], list[Interval]]]) -> dict[str, Any]:
    """F1 and boundary errors over scenes of (references, detections)."""
    hits = refs_n = ests_n = missed = 0
    onsets: list[float] = []
    offsets: list[float] = []
    for refs, ests in scenes:
        hits += matched_count(refs, ests)
        refs_n += len(refs)
        ests_n += len(ests)
        on, off, miss = boundary_errors(refs, ests)
        onsets += on
        offsets += off
        missed += miss
    precision = hits / ests_n if ests_n else 0.0
    recall = hits / refs_n if refs_n else 0.0
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0

    def ms(values: list[float], q: float) -> float:
        return round(1000 * float(np.percentile(np.abs(values), q)), 0) if values else 0.0

    return {
        "f1": round(f1, 3),
        "precision": round(precision, 3),
        "recall": round(recall, 3),
        "references": refs_n,
        "detections": ests_n,
        "no_overlap": missed,
        "onset_ms_p50": ms(onsets, 50),
        "onset_ms_p90": ms(onsets, 90),
        "offset_ms_p50": ms(offsets, 50),
        "offset_ms_p90": ms(offsets, 90),
        "onset_bias_ms": round(1000 * float(np.median(onsets)), 0) if onsets else 0.0,
        "offset_bias_ms": round(1000 * float(np.median(offsets)), 0) if offsets else 0.0,
    }


def _trimmed(samples: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    frame = RATE // 100
    usable = samples[: samples.size // frame * frame].reshape(-1, frame)
    power_db = 10 * np.log10(np.mean(usable**2, axis=1) + 1e-12)
    active = np.flatnonzero(power_db > power_db.max() - ACTIVE_DB)
    return samples[active[0] * frame : (active[-1] + 1) * frame]


def _active_power(samples: npt.NDArray[np.float64]) -> float:
    frame = RATE // 100
    usable = samples[: samples.size // frame * frame].reshape(-1, frame)
    power = np.mean(usable**2, axis=1)
    return float(np.mean(power[10 * np.log10(power + 1e-12) > 10 * np.log10(power.max()) - 20]))


def _noise(samples: int, kind: str, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    if kind == "pink":
        return pink_noise(samples, NOISE_DBFS, rng).astype(np.float64)
    return rng.standard_normal(samples) * np.sqrt(10 ** (NOISE_DBFS / 10))


def _probabilities(runner: OnnxRunner, audio: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    patches = runner.prepare(patches_offline(audio.astype(np.float32), HOP_FRAMES))
    return np.concatenate([runner.run(patches[i : i + 16]) for i in range(0, len(patches), 16)])


@dataclass(frozen=True)
class Scene:
    probabilities: npt.NDArray[np.float32]
    references: list[Interval]


def build_scene(
    clips: dict[str, npt.NDArray[np.float64]], scene_s: float, seed: int, runner: OnnxRunner
) -> Scene:
    rng = np.random.default_rng(seed)
    total = int(scene_s * RATE)
    kind = "pink" if seed % 2 == 0 else "white"
    audio = _noise(total, kind, rng)
    noise_power = 10 ** (NOISE_DBFS / 10)
    names = list(clips)
    references: list[Interval] = []
    at_s = float(rng.uniform(1.0, 3.0))
    while True:
        name = names[int(rng.integers(len(names)))]
        clip = clips[name]
        if at_s + clip.size / RATE > scene_s - 1.0:
            break
        snr_db = float(rng.choice(SNRS_DB))
        gain = np.sqrt(noise_power * 10 ** (snr_db / 10) / _active_power(clip))
        start = round(at_s * RATE)
        audio[start : start + clip.size] += gain * clip
        references.append(Interval(TAGS[name], start / RATE, (start + clip.size) / RATE))
        at_s = (start + clip.size) / RATE + float(rng.uniform(1.0, 5.0))
    return Scene(_probabilities(runner, np.clip(audio, -1, 1)), references)


def _detectable(
    clips: dict[str, npt.NDArray[np.float64]], runner: OnnxRunner, rules: EventRules
) -> dict[str, npt.NDArray[np.float64]]:
    index = {name: i for i, name in enumerate(rules.labels)}
    kept = {}
    rng = np.random.default_rng(0)
    for name, clip in clips.items():
        audio = _noise(clip.size + 2 * RATE, "pink", rng) * 0.1
        audio[RATE : RATE + clip.size] += clip
        tag = index[TAGS[name]]
        passing = _probabilities(runner, audio)[:, tag] > rules.threshold[tag]
        if int(passing.sum()) >= 2:
            kept[name] = clip
    return kept


def evaluate(scenes: list[Scene], rules: EventRules) -> dict[str, Any]:
    targets = {ref.tag for scene in scenes for ref in scene.references}
    pairs = []
    for scene in scenes:
        events = derive_events(scene.probabilities, rules)
        ests = [Interval(e.tag, e.start_time_s, e.end_time_s) for e in events if e.tag in targets]
        pairs.append((scene.references, ests))
    return score(pairs)


def _rules(labels: tuple[str, ...], thresholds: Any, **kwargs: Any) -> EventRules:
    return EventRules.build(labels, thresholds, merge_window_ms=MERGE_WINDOW_MS, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tune-seeds", default="0-9")
    parser.add_argument("--seeds", default="100-119")
    parser.add_argument("--scene-s", type=float, default=45.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    def seeds(text: str) -> list[int]:
        low, high = (int(v) for v in text.split("-"))
        return list(range(low, high + 1))

    started = time.perf_counter()
    settings = Settings.from_env({}, data_dir=Path(tempfile.gettempdir()))
    model_dir = settings.model_dir or WEIGHTS_DIR
    runner = load_runner(settings, model_dir)
    step = runner.output_quant.scale if runner.output_quant else SENSITIVITY_STEP_LOGIT
    labels = load_labels(model_dir)
    thresholds = Tagger(labels, load_thresholds(), sensitivity_step_logit=step).thresholds(0)
    naive = _rules(labels, thresholds, boundary="naive")
    clips = {
        name: _trimmed(soundfile.read(CHECKSET_DIR / f"{name}.flac", dtype="float64")[0])
        for name in TAGS
    }
    clips = _detectable(clips, runner, naive)
    tune = [build_scene(clips, args.scene_s, s, runner) for s in seeds(args.tune_seeds)]
    test = [build_scene(clips, args.scene_s, s, runner) for s in seeds(args.seeds)]

    best: tuple[float, float, float, float] | None = None
    for onset_fill in FILLS:
        for offset_fill in FILLS:
            rules = _rules(labels, thresholds, onset_fill=onset_fill, offset_fill=offset_fill)
            result = evaluate(tune, rules)
            key = (-result["f1"], result["onset_ms_p50"] + result["offset_ms_p50"])
            if best is None or key < best[:2]:
                best = (*key, onset_fill, offset_fill)
    assert best is not None
    refined = _rules(labels, thresholds, onset_fill=best[2], offset_fill=best[3])
    report: dict[str, Any] = {
        "machine": machine_info(),
        "config": {
            "variant": list(runner.variant_checks)[-1] if runner.variant_checks else None,
            "scene_s": args.scene_s,
            "tune_seeds": args.tune_seeds,
            "seeds": args.seeds,
            "clips_used": sorted(clips),
            "clips_dropped": sorted(set(TAGS) - set(clips)),
            "merge_window_ms": MERGE_WINDOW_MS,
            "tuned": {"onset_fill": best[2], "offset_fill": best[3]},
        },
        "tune": {"naive": evaluate(tune, naive), "refined": evaluate(tune, refined)},
        "test": {"naive": evaluate(test, naive), "refined": evaluate(test, refined)},
    }
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
