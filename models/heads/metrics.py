"""How good a head is, per artifact type: events and frames.

Frames to events follows ``server/events.py``'s rule on the head's 10 ms cells: a frame passes
when its probability is above the threshold, a run of passing frames spans its cells, runs of a
type closer than ``merge_window_ms`` merge, and events shorter than ``min_duration_ms`` are
dropped; the confidence is the run's highest probability.

Event scoring follows sed_eval's event-based convention with a tight collar, because a head must
place boundaries to tens of ms: a detection matches a reference event when its onset is within
``collar_ms`` (20 ms) of the reference's and its offset within ``max(collar_ms, offset_ratio *
reference duration)`` (20 %: a 700 ms pause may end 140 ms off, a click 20 ms); one to one, by
maximum bipartite matching. Onset errors are those of the matched pairs.

Frame-level AUPRC is the average precision of the probabilities against the frame targets
(frames of weight 0 left out), which does not depend on a threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

__all__ = [
    "COLLAR_MS",
    "DEFAULT_THRESHOLDS",
    "EMPTY_SCORE",
    "MAX_SHIFT_MS",
    "OFFSET_RATIO",
    "EventRule",
    "EventScore",
    "average_precision",
    "boundary_shifts",
    "choose_threshold",
    "frames_to_events",
    "match_events",
    "score_events",
]

COLLAR_MS = 20.0
MAX_SHIFT_MS = 50.0
# Every 0.05, and finer near 1: class-balanced training pushes a rare type's probabilities up,
# so its best threshold can sit above 0.95.
DEFAULT_THRESHOLDS = np.r_[np.round(np.arange(0.05, 0.96, 0.05), 2), 0.97, 0.98, 0.99, 0.995, 0.999]
OFFSET_RATIO = 0.2
Interval = tuple[float, float]


@dataclass(frozen=True)
class EventRule:
    """One type's frames-to-events parameters, and the frames' time grid."""

    threshold: float = 0.5
    merge_window_ms: float = 20.0
    min_duration_ms: float = 0.0
    hop_ms: float = 10.0
    cell_offset_ms: float = 7.5
    onset_shift_ms: float = 0.0  # added to every event's start (``boundary_shifts``)
    offset_shift_ms: float = 0.0


@dataclass(frozen=True)
class EventScore:
    true_positives: int
    false_positives: int
    false_negatives: int
    onset_errors_ms: tuple[float, ...]

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        real = self.true_positives + self.false_negatives
        return self.true_positives / real if real else 1.0

    @property
    def f1(self) -> float:
        total = 2 * self.true_positives + self.false_positives + self.false_negatives
        return 2 * self.true_positives / total if total else 1.0

    @property
    def median_onset_error_ms(self) -> float | None:
        return float(np.median(self.onset_errors_ms)) if self.onset_errors_ms else None

    def __add__(self, other: EventScore) -> EventScore:
        return EventScore(
            self.true_positives + other.true_positives,
            self.false_positives + other.false_positives,
            self.false_negatives + other.false_negatives,
            self.onset_errors_ms + other.onset_errors_ms,
        )


EMPTY_SCORE = EventScore(0, 0, 0, ())


def frames_to_events(
    probabilities: npt.ArrayLike, rule: EventRule
) -> list[tuple[float, float, float]]:
    """``(start_ms, end_ms, confidence)`` of one type's events in one file, in order."""
    p = np.asarray(probabilities, dtype=np.float64)
    passing = np.concatenate([[False], p > rule.threshold, [False]])
    edges = np.flatnonzero(passing[1:] != passing[:-1])
    events: list[list[float]] = []
    for first, stop in zip(edges[::2], edges[1::2], strict=True):
        start_ms = rule.cell_offset_ms + first * rule.hop_ms
        end_ms = rule.cell_offset_ms + stop * rule.hop_ms
        confidence = float(p[first:stop].max())
        if events and start_ms - events[-1][1] <= rule.merge_window_ms:
            events[-1][1] = end_ms
            events[-1][2] = max(events[-1][2], confidence)
        else:
            events.append([start_ms, end_ms, confidence])
    shifted = [
        (s + rule.onset_shift_ms, max(s + rule.onset_shift_ms, e + rule.offset_shift_ms), c)
        for s, e, c in events
    ]
    return [(s, e, c) for s, e, c in shifted if e - s >= rule.min_duration_ms - 1e-9]


def _matches(reference: Interval, detected: Interval, collar_ms: float, ratio: float) -> bool:
    offset_collar = max(collar_ms, ratio * (reference[1] - reference[0]))
    return (
        abs(detected[0] - reference[0]) <= collar_ms
        and abs(detected[1] - reference[1]) <= offset_collar
    )


def match_events(
    reference: Sequence[Interval],
    detected: Sequence[Interval],
    collar_ms: float = COLLAR_MS,
    offset_ratio: float = OFFSET_RATIO,
) -> list[tuple[int, int]]:
    """A maximum one-to-one matching: ``(reference index, detected index)`` pairs."""
    candidates = [
        [j for j, d in enumerate(detected) if _matches(r, d, collar_ms, offset_ratio)]
        for r in reference
    ]
    owner: dict[int, int] = {}

    def augment(i: int, seen: set[int]) -> bool:
        for j in candidates[i]:
            if j in seen:
                continue
            seen.add(j)
            if j not in owner or augment(owner[j], seen):
                owner[j] = i
                return True
        return False

    for i in range(len(reference)):
        augment(i, set())
    return sorted((i, j) for j, i in owner.items())


def score_events(
    reference: Sequence[Interval],
    detected: Sequence[Interval],
    collar_ms: float = COLLAR_MS,
    offset_ratio: float = OFFSET_RATIO,
) -> EventScore:
    """One type in one file; add the scores of several files with ``+``."""
    pairs = match_events(reference, detected, collar_ms, offset_ratio)
    errors = tuple(abs(detected[j][0] - reference[i][0]) for i, j in pairs)
    return EventScore(len(pairs), len(detected) - len(pairs), len(reference) - len(pairs), errors)


def average_precision(
    scores: npt.ArrayLike, labels: npt.ArrayLike, weights: npt.ArrayLike | None = None
) -> float | None:
    """Area under the precision-recall curve as the mean precision at each positive (ties
    taken together); None when there is no positive. Frames of weight 0 are left out."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel() > 0.5
    if weights is not None:
        keep = np.asarray(weights).ravel() > 0
        s, y = s[keep], y[keep]
    positives = int(y.sum())
    if positives == 0:
        return None
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    hits = np.cumsum(y)[last_of_tie]
    seen = np.arange(1, s.size + 1)[last_of_tie]
    new_hits = np.diff(np.r_[0, hits])
    return float(np.sum(new_hits * hits / seen) / positives)


def choose_threshold(
    probabilities: Sequence[npt.ArrayLike],
    references: Sequence[Sequence[Interval]],
    rule: EventRule,
    candidates: npt.ArrayLike | None = None,
) -> tuple[float, EventScore]:
    """The threshold of highest event F1 over the files (one type), and its score; among
    equal F1, the one nearest 0.5, so that a tie does not sit on the edge of a plateau."""
    grid = DEFAULT_THRESHOLDS if candidates is None else candidates
    best: tuple[float, float, EventScore] | None = None
    for threshold in np.asarray(grid, dtype=np.float64):
        each = replace(rule, threshold=float(threshold))
        total = EMPTY_SCORE
        for probs, reference in zip(probabilities, references, strict=True):
            detected = [(s, e) for s, e, _ in frames_to_events(probs, each)]
            total = total + score_events(reference, detected)
        key = (total.f1, -abs(float(threshold) - 0.5))
        if best is None or key > (best[0], best[1]):
            best = (key[0], key[1], total)
            chosen = float(threshold)
    assert best is not None
    return chosen, best[2]


def boundary_shifts(
    probabilities: Sequence[npt.ArrayLike],
    references: Sequence[Sequence[Interval]],
    rule: EventRule,
    limit_ms: float = MAX_SHIFT_MS,
) -> tuple[float, float]:
    """Onset and offset corrections that cancel a type's median boundary bias.

    A head's probability crosses the threshold a frame or more inside a long event's edges
    (a log-mel window that still holds 7 ms of loud speech does not look silent), and does so
    consistently; the median signed error of each reference's most-overlapping detection,
    negated, is the correction (the refined boundaries of ``server/events.py`` do the same
    with a fill fraction). Limited to ``limit_ms`` either way, and 0 when nothing overlaps.
    """
    onsets: list[float] = []
    offsets: list[float] = []
    plain = replace(rule, onset_shift_ms=0.0, offset_shift_ms=0.0)
    for probs, reference in zip(probabilities, references, strict=True):
        detected = frames_to_events(probs, plain)
        for start, end in reference:
            overlaps = [(min(end, e) - max(start, s), s, e) for s, e, _ in detected]
            best = max(overlaps, default=(0.0, 0.0, 0.0))
            if best[0] > 0:
                onsets.append(best[1] - start)
                offsets.append(best[2] - end)
    if not onsets:
        return 0.0, 0.0
    onset = float(np.clip(-np.median(onsets), -limit_ms, limit_ms))
    offset = float(np.clip(-np.median(offsets), -limit_ms, limit_ms))
    return onset, offset
