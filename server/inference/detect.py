"""A custom detector over one file's samples, block by block: frame features, the head's
probabilities, then each artifact type's events.

Memory stays bounded whatever the file's length: the features of a head are ~66 floats per
10 ms frame (a four-hour file would be 380 MB of them), so they are computed for a block of
frames at a time and kept only while the head still needs them as context. Only the
probabilities (one float per type per frame: 11 MB for four hours of two types) are kept whole,
since an event may span blocks; the events come from them at the end.

Blocks do not change the answer: a frame's features depend only on the samples of its own
window, and the head reads ``context_frames`` frames either side of each frame, so each block
is run with that margin of the frames around it (as ``HeadRunner.run`` cuts long inputs), and
only the file's true ends see the zeros beyond.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from models.heads.features import frame_features
from models.heads.metrics import EventRule, frames_to_events
from server.runner import HeadRunner

__all__ = ["BLOCK_FRAMES", "StreamingDetector", "effective_rules"]

BLOCK_FRAMES = 2048  # ~20 s of frames per features/head step
_CONFIDENCE_DIGITS = 4
Floats = npt.NDArray[np.float32]
Detection = tuple[str, int, int, float]


def effective_rules(
    rules: Sequence[EventRule],
    threshold: float | None,
    merge_window_ms: float | None,
    min_duration_ms: float | None,
) -> tuple[EventRule, ...]:
    """Each type's own rule with the values given applied to every type."""
    changes: dict[str, float] = {}
    if threshold is not None:
        changes["threshold"] = threshold
    if merge_window_ms is not None:
        changes["merge_window_ms"] = merge_window_ms
    if min_duration_ms is not None:
        changes["min_duration_ms"] = min_duration_ms
    return tuple(replace(rule, **changes) for rule in rules)


class StreamingDetector:
    """Push 16 kHz mono samples as they are decoded; ``finish`` gives the detections."""

    def __init__(self, runner: HeadRunner, rules: Sequence[EventRule]) -> None:
        if len(rules) != len(runner.artifact_types):
            raise ValueError("one rule per artifact type of the model")
        self._runner = runner
        self._rules = tuple(rules)
        params = runner.spec.params
        self._hop = params.stft_hop_samples
        self._window = params.stft_window_samples
        self._reach = runner.context_frames
        self._samples = np.empty(0, dtype=np.float32)  # from the next frame's first sample
        self._features = np.empty((0, runner.spec.width), dtype=np.float32)
        self._features_from = 0  # frame index of self._features[0]
        self._frames = 0  # frames whose features were computed
        self._probabilities: list[Floats] = []
        self._scored = 0  # frames whose probabilities were computed
        self.sample_count = 0

    def push(self, samples: npt.ArrayLike) -> None:
        block = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not block.size:
            return
        self.sample_count += int(block.size)
        self._samples = np.concatenate([self._samples, block]) if self._samples.size else block
        while self._ready_frames() >= BLOCK_FRAMES:
            self._featurise(BLOCK_FRAMES)
        self._score(final=False)

    def finish(self) -> list[Detection]:
        """Every type's detections in the order they start (then by type)."""
        while self._ready_frames():
            self._featurise(min(BLOCK_FRAMES, self._ready_frames()))
        self._score(final=True)
        types = self._runner.artifact_types
        probabilities = (
            np.concatenate(self._probabilities)
            if self._probabilities
            else np.empty((0, len(types)), dtype=np.float32)
        )
        found: list[Detection] = []
        for index, (name, rule) in enumerate(zip(types, self._rules, strict=True)):
            for start_ms, end_ms, confidence in frames_to_events(probabilities[:, index], rule):
                start = max(0, round(start_ms))
                found.append(
                    (name, start, max(start, round(end_ms)), round(confidence, _CONFIDENCE_DIGITS))
                )
        found.sort(key=lambda item: (item[1], item[2], types.index(item[0])))
        return found

    def _ready_frames(self) -> int:
        if self._samples.size < self._window:
            return 0
        return 1 + (self._samples.size - self._window) // self._hop

    def _featurise(self, count: int) -> None:
        needed = (count - 1) * self._hop + self._window
        features = frame_features(self._runner.spec, samples=self._samples[:needed])
        self._samples = self._samples[count * self._hop :].copy()
        self._features = np.concatenate([self._features, features])
        self._frames += count

    def _score(self, final: bool) -> None:
        """Probabilities of every frame whose context is complete (all of them when final)."""
        while self._scored < self._frames:
            stop = min(self._frames, self._scored + BLOCK_FRAMES)
            if not final and stop + self._reach > self._frames:
                break
            lo = max(self._features_from, self._scored - self._reach)
            hi = min(self._frames, stop + self._reach)
            out = self._runner.run(
                self._features[lo - self._features_from : hi - self._features_from]
            )
            first = self._scored - lo
            self._probabilities.append(out[first : first + stop - self._scored])
            self._scored = stop
        keep_from = max(self._features_from, self._scored - self._reach)
        self._features = self._features[keep_from - self._features_from :]
        self._features_from = keep_from
