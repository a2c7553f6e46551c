"""Training a head: split by file, mini-batch Adam on class-balanced BCE, thresholds, metrics.

Each artifact type is its own binary problem (multi-label: a frame may be a click inside a
pause). A type's positives are a few frames in thousands, so each type's loss weighs its
positive and negative frames to half the total each; without that the head learns "never".
The weights decay (AdamW, 1e-3) and those of the epoch with the lowest validation loss are
kept: a head sees hundreds of inputs per frame and learns the training voices within a few
epochs (the best epoch was the 3rd-5th on the benchmark). Everything random (the split, the
initial weights, the batch order) comes from one seeded generator, and the arithmetic is the
same on every run, so a seed gives the same head and the same metrics.

After training, each type gets its frames-to-events rule: the minimum duration is 80 % of the
shortest annotated event of that type in the training files (a 500 ms pause annotation asks for
silences of about that length, a click for anything), the merge window 10 % of it but at
least two frames (20 ms: a noise blip does not cut a pause in two, two clicks stay apart),
and the threshold the one of highest event F1 on the validation files; then the median bias of
the edges there is corrected (``metrics.boundary_shifts``) and the threshold chosen again.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from models.heads.config import TrainingConfig
from models.heads.data import AnnotatedFile, FrameExamples, build_examples, split_by_file
from models.heads.features import WITH_SAMPLE_FEATURES, FeatureSpec
from models.heads.metrics import (
    COLLAR_MS,
    EMPTY_SCORE,
    OFFSET_RATIO,
    EventRule,
    average_precision,
    boundary_shifts,
    choose_threshold,
    frames_to_events,
    score_events,
)
from models.heads.network import (
    Architecture,
    HeadWeights,
    context_rows,
    forward,
    init_weights,
    logits_from_rows,
    normalise,
    sigmoid,
)

__all__ = [
    "DEFAULT_ARCHITECTURE",
    "ProgressCallback",
    "TrainedHead",
    "TrainingCanceled",
    "evaluate",
    "train_head",
]

ProgressCallback = Callable[[int, int, Mapping[str, float]], None]
DEFAULT_ARCHITECTURE = Architecture()
MERGE_WINDOW_MS = 20.0
MERGE_WINDOW_FRACTION = 0.1
WEIGHT_DECAY = 1e-3
MIN_DURATION_FRACTION = 0.8
_STD_FLOOR = 1e-3
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8
_CANCEL_EVERY_STEPS = 64
F32 = npt.NDArray[np.float32]


class TrainingCanceled(Exception):
    """The cancel check said stop; nothing was produced."""


@dataclass
class TrainedHead:
    weights: HeadWeights
    artifact_types: tuple[str, ...]
    spec: FeatureSpec
    rules: tuple[EventRule, ...]
    metrics: dict[str, dict[str, Any]]
    train_files: tuple[str, ...]
    validation_files: tuple[str, ...]
    history: list[dict[str, float]] = field(default_factory=list)

    def predict(self, features: npt.ArrayLike) -> F32:
        return forward(features, self.weights)


@dataclass
class _Stacked:
    """Files' normalised frames end to end, each with zero padding for the context."""

    zpad: F32
    centres: npt.NDArray[np.int64]
    targets: F32
    weights: F32

    @classmethod
    def build(cls, examples: Sequence[FrameExamples], head: HeadWeights) -> _Stacked:
        reach = head.architecture.reach_frames
        parts, centres, position = [], [], 0
        for ex in examples:
            pad = np.zeros((reach, head.width), dtype=np.float32)
            parts += [pad, normalise(ex.features, head)]
            centres.append(position + reach + np.arange(ex.frame_count))
            position += reach + ex.frame_count
        parts.append(np.zeros((reach, head.width), dtype=np.float32))
        return cls(
            np.concatenate(parts),
            np.concatenate(centres),
            np.concatenate([ex.targets for ex in examples]),
            np.concatenate([ex.weights for ex in examples]),
        )


def _balance(targets: F32, weights: F32) -> tuple[F32, F32]:
    """Per type, the weight of a positive and of a negative frame: half the total each."""
    counted = weights > 0
    positives = ((targets > 0) & counted).sum(axis=0).astype(np.float64)
    negatives = ((targets == 0) & counted).sum(axis=0).astype(np.float64)
    total = positives + negatives
    pos = np.where(positives > 0, 0.5 * total / np.maximum(positives, 1), 0.0)
    neg = np.where(negatives > 0, 0.5 * total / np.maximum(negatives, 1), 0.0)
    neg = np.where(positives > 0, neg, 1.0)
    return pos.astype(np.float32), neg.astype(np.float32)


def _loss_weights(targets: F32, weights: F32, balance: tuple[F32, F32]) -> F32:
    return weights * np.where(targets > 0, balance[0], balance[1]).astype(np.float32)


def _bce(logits: F32, targets: F32, w: F32) -> float:
    losses = np.logaddexp(0.0, logits) - targets * logits
    return float((w * losses).sum() / max(1, logits.shape[0]))


def _gradients(head: HeadWeights, rows: F32, targets: F32, w: F32) -> list[F32]:
    logits, hidden = logits_from_rows(rows, head)
    g = (w * (sigmoid(logits) - targets) / rows.shape[0]).astype(np.float32)
    if hidden is None or head.w2 is None:
        return [rows.T @ g, g.sum(axis=0)]
    dhidden = (g @ head.w2.T) * (hidden > 0)
    return [rows.T @ dhidden, dhidden.sum(axis=0), hidden.T @ g, g.sum(axis=0)]


class _Adam:
    def __init__(self, params: list[F32], learning_rate: float) -> None:
        self.rate = learning_rate
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.steps = 0

    def step(self, params: list[F32], grads: list[F32]) -> None:
        self.steps += 1
        b1, b2 = _ADAM_BETAS
        scale = self.rate * np.sqrt(1 - b2**self.steps) / (1 - b1**self.steps)
        for p, g, m, v in zip(params, grads, self.m, self.v, strict=True):
            if p.ndim == 2:  # decoupled weight decay (AdamW) on the weights, not the biases
                p *= np.float32(1.0 - self.rate * WEIGHT_DECAY)
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= (scale * m / (np.sqrt(v) + _ADAM_EPS)).astype(np.float32)


def _loss(head: HeadWeights, data: _Stacked, balance: tuple[F32, F32]) -> float:
    offsets = head.architecture.offsets()
    total = 0.0
    for start in range(0, data.centres.size, 4096):
        centres = data.centres[start : start + 4096]
        logits, _ = logits_from_rows(context_rows(data.zpad, centres, offsets), head)
        t, w = data.targets[start : start + 4096], data.weights[start : start + 4096]
        total += _bce(logits, t, _loss_weights(t, w, balance)) * centres.size
    return total / max(1, data.centres.size)


def _rules(
    files: Sequence[AnnotatedFile], types: Sequence[str], spec: FeatureSpec
) -> list[EventRule]:
    rules = []
    for kind in types:
        durations = [
            a.end_ms - a.start_ms for f in files for a in f.annotations if a.artifact_type == kind
        ]
        shortest = min(durations) if durations else 0.0
        min_duration = spec.hop_ms * np.floor(MIN_DURATION_FRACTION * shortest / spec.hop_ms)
        merge = max(MERGE_WINDOW_MS, MERGE_WINDOW_FRACTION * shortest)
        rules.append(EventRule(0.5, merge, float(min_duration), spec.hop_ms, spec.cell_offset_ms))
    return rules


def evaluate(
    head: TrainedHead, examples: Sequence[FrameExamples], rules: Sequence[EventRule] | None = None
) -> dict[str, dict[str, Any]]:
    """Per type: event precision, recall, F1 (collar stated), median onset error, frame AUPRC."""
    probabilities = [head.predict(ex.features) for ex in examples]
    out: dict[str, dict[str, Any]] = {}
    for c, kind in enumerate(head.artifact_types):
        rule = (rules or head.rules)[c]
        score = EMPTY_SCORE
        for probs, ex in zip(probabilities, examples, strict=True):
            detected = [(s, e) for s, e, _ in frames_to_events(probs[:, c], rule)]
            score = score + score_events(ex.events_ms[c], detected)
        ap = average_precision(
            np.concatenate([p[:, c] for p in probabilities]),
            np.concatenate([ex.targets[:, c] for ex in examples]),
            np.concatenate([ex.weights[:, c] for ex in examples]),
        )
        out[kind] = {
            "precision": score.precision,
            "recall": score.recall,
            "f1": score.f1,
            "events": score.true_positives + score.false_negatives,
            "detections": score.true_positives + score.false_positives,
            "median_onset_error_ms": score.median_onset_error_ms,
            "frame_auprc": ap,
            "threshold": rule.threshold,
            "min_duration_ms": rule.min_duration_ms,
            "merge_window_ms": rule.merge_window_ms,
            "onset_shift_ms": rule.onset_shift_ms,
            "offset_shift_ms": rule.offset_shift_ms,
            "collar_ms": COLLAR_MS,
            "offset_collar": f"max({COLLAR_MS:g} ms, {OFFSET_RATIO:g} x duration)",
        }
    return out


def train_head(
    files: Sequence[AnnotatedFile],
    config: TrainingConfig,
    spec: FeatureSpec = WITH_SAMPLE_FEATURES,
    architecture: Architecture = DEFAULT_ARCHITECTURE,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> TrainedHead:
    """Train, choose each type's threshold on the validation files, and measure there.

    BLAS runs on one thread: a batch's products are tiny, and on a shared machine threads cost
    more in hand-offs than they save (about 6x slower per epoch on two busy cores); one thread
    also keeps the sums' order, so the run is repeatable.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        return _train(files, config, spec, architecture, progress, should_cancel)


def _train(
    files: Sequence[AnnotatedFile],
    config: TrainingConfig,
    spec: FeatureSpec,
    architecture: Architecture,
    progress: ProgressCallback | None,
    should_cancel: Callable[[], bool] | None,
) -> TrainedHead:
    types = config.artifact_types or tuple(
        sorted({a.artifact_type for f in files for a in f.annotations})
    )
    if not types:
        raise ValueError("no artifact types: the files carry no annotations")
    examples = build_examples(files, types, spec)
    train_idx, val_idx = split_by_file(examples, config.validation_split, config.seed)
    train = [examples[i] for i in train_idx]
    val = [examples[i] for i in val_idx]
    rng = np.random.default_rng(config.seed)
    features = np.concatenate([ex.features for ex in train])
    mean = features.mean(axis=0).astype(np.float32)
    std = np.maximum(features.std(axis=0), _STD_FLOOR).astype(np.float32)
    head = init_weights(architecture, mean, std, len(types), rng)
    data, val_data = _Stacked.build(train, head), _Stacked.build(val, head)
    balance = _balance(data.targets, data.weights)
    loss_weights = _loss_weights(data.targets, data.weights, balance)
    adam = _Adam(head.params(), config.learning_rate)
    offsets = architecture.offsets()
    best: tuple[float, HeadWeights] | None = None
    history: list[dict[str, float]] = []
    for epoch in range(1, config.epochs + 1):
        order = rng.permutation(data.centres.size)
        total = 0.0
        for step, start in enumerate(range(0, order.size, config.batch_size)):
            if should_cancel is not None and step % _CANCEL_EVERY_STEPS == 0 and should_cancel():
                raise TrainingCanceled(f"canceled in epoch {epoch}")
            batch = order[start : start + config.batch_size]
            rows = context_rows(data.zpad, data.centres[batch], offsets)
            grads = _gradients(head, rows, data.targets[batch], loss_weights[batch])
            adam.step(head.params(), grads)
        total = _loss(head, data, balance)
        val_loss = _loss(head, val_data, balance)
        record = {"epoch": float(epoch), "train_loss": total, "validation_loss": val_loss}
        history.append(record)
        if best is None or val_loss < best[0]:
            best = (val_loss, copy.deepcopy(head))
        if progress is not None:
            progress(epoch, config.epochs, record)
    assert best is not None
    trained = TrainedHead(
        best[1],
        types,
        spec,
        (),
        {},
        tuple(e.name for e in train),
        tuple(e.name for e in val),
        history,
    )
    rules = _rules([files[i] for i in train_idx], types, spec)
    probabilities = [trained.predict(ex.features) for ex in val]
    chosen = []
    for c, rule in enumerate(rules):
        type_probs = [p[:, c] for p in probabilities]
        references = [ex.events_ms[c] for ex in val]
        threshold, _ = choose_threshold(type_probs, references, rule)
        onset, offset = boundary_shifts(type_probs, references, replace(rule, threshold=threshold))
        shifted = replace(rule, onset_shift_ms=onset, offset_shift_ms=offset)
        threshold, _ = choose_threshold(type_probs, references, shifted)
        chosen.append(replace(shifted, threshold=threshold))
    trained.rules = tuple(chosen)
    trained.metrics = evaluate(trained, val)
    return trained
