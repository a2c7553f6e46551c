"""From annotated files to frame-level examples: features, per-type targets, a split by file.

Users annotate whole files with ``(artifact_type, start_ms, end_ms)``. Every file in the set is
labelled for every type: the frames of a file outside its annotations of a type are background
for that type, whether or not the file has any annotation of it.

A frame's target is set on its 10 ms cell (``features``): positive when an annotation covers at
least half of the cell, or of the annotation when that is shorter (a 1 ms click makes its cell
positive, never vanishes between two); a cell the annotation only grazes is left out of the loss
(weight 0), so the head is neither rewarded nor punished for a boundary that the annotation
itself places within a few ms.

The split is by file, never by frame: neighbouring frames of one file are nearly the same
example, and a frame-level split would score the head on frames it has all but seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.heads.features import FeatureSpec, frame_features

__all__ = [
    "AnnotatedFile",
    "Annotation",
    "FrameExamples",
    "build_examples",
    "frame_targets",
    "split_by_file",
]

_SPLIT_TRIES = 200


@dataclass(frozen=True)
class Annotation:
    artifact_type: str
    start_ms: float
    end_ms: float

    @classmethod
    def of(cls, item: Annotation | Sequence[object]) -> Annotation:
        if isinstance(item, Annotation):
            return item
        kind, start, end = item
        annotation = cls(str(kind), float(start), float(end))  # type: ignore[arg-type]
        if not annotation.end_ms >= annotation.start_ms >= 0:
            raise ValueError(f"annotation {tuple(item)!r}: need 0 <= start_ms <= end_ms")
        return annotation


@dataclass(frozen=True)
class AnnotatedFile:
    """One file as training sees it: 16 kHz mono samples or precomputed log-mel frames."""

    name: str
    annotations: tuple[Annotation, ...]
    samples: npt.NDArray[np.float32] | None = None
    log_mel: npt.NDArray[np.float32] | None = None

    @classmethod
    def build(
        cls,
        name: str,
        annotations: Sequence[Annotation | Sequence[object]],
        samples: npt.ArrayLike | None = None,
        log_mel: npt.ArrayLike | None = None,
    ) -> AnnotatedFile:
        return cls(
            name,
            tuple(Annotation.of(a) for a in annotations),
            None if samples is None else np.asarray(samples, dtype=np.float32),
            None if log_mel is None else np.asarray(log_mel, dtype=np.float32),
        )


@dataclass(frozen=True)
class FrameExamples:
    """One file's frames: features [frames, width], targets and loss weights [frames, types]."""

    name: str
    features: npt.NDArray[np.float32]
    targets: npt.NDArray[np.float32]
    weights: npt.NDArray[np.float32]
    events_ms: tuple[tuple[tuple[float, float], ...], ...]  # per type, the annotated intervals

    @property
    def frame_count(self) -> int:
        return int(self.features.shape[0])


def frame_targets(
    annotations: Sequence[Annotation],
    artifact_types: Sequence[str],
    frame_count: int,
    spec: FeatureSpec,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Targets and loss weights [frames, types] on the frames' 10 ms cells."""
    column = {kind: i for i, kind in enumerate(artifact_types)}
    targets = np.zeros((frame_count, len(column)), dtype=np.float32)
    weights = np.ones_like(targets)
    hop = spec.hop_ms
    starts = spec.cell_offset_ms + hop * np.arange(frame_count)
    for annotation in annotations:
        if annotation.artifact_type not in column:
            continue
        c = column[annotation.artifact_type]
        overlap = np.minimum(starts + hop, annotation.end_ms) - np.maximum(
            starts, annotation.start_ms
        )
        duration = annotation.end_ms - annotation.start_ms
        needed = 0.5 * min(hop, duration) if duration > 0 else 0.0
        touched = (
            overlap > 0
            if duration > 0
            else (starts <= annotation.start_ms) & (annotation.start_ms < starts + hop)
        )
        positive = touched & (overlap >= needed)
        targets[positive, c] = 1.0
        weights[touched & ~positive, c] = 0.0
    weights[targets > 0] = 1.0  # a cell another annotation fills stays positive
    return targets, weights


def build_examples(
    files: Sequence[AnnotatedFile], artifact_types: Sequence[str], spec: FeatureSpec
) -> list[FrameExamples]:
    """Features and targets of each file, in order."""
    out = []
    for file in files:
        features = frame_features(spec, samples=file.samples, log_mel=file.log_mel)
        targets, weights = frame_targets(file.annotations, artifact_types, features.shape[0], spec)
        events = tuple(
            tuple((a.start_ms, a.end_ms) for a in file.annotations if a.artifact_type == kind)
            for kind in artifact_types
        )
        out.append(FrameExamples(file.name, features, targets, weights, events))
    return out


def split_by_file(
    examples: Sequence[FrameExamples], validation_split: float, seed: int
) -> tuple[list[int], list[int]]:
    """Train and validation file indices: a seeded shuffle of the files, ``validation_split`` of
    them (at least one) for validation. Among the first shuffles, the first in which every type
    that two or more files show appears on both sides is taken, so that each type's threshold
    is chosen on, and its metrics measured on, some of its events."""
    count = len(examples)
    if count < 2:
        raise ValueError(f"need at least 2 annotated files to split by file, got {count}")
    val_count = min(count - 1, max(1, round(count * validation_split)))
    shows = np.array(
        [[bool(e.targets[:, c].any()) for c in range(e.targets.shape[1])] for e in examples]
    ).reshape(count, -1)
    needed = shows.sum(axis=0) >= 2
    rng = np.random.default_rng(seed)
    order = rng.permutation(count)
    for _ in range(_SPLIT_TRIES):
        val = order[:val_count]
        train = order[val_count:]
        if (shows[val].any(axis=0) | ~needed).all() and (shows[train].any(axis=0) | ~needed).all():
            break
        order = rng.permutation(count)
    return sorted(int(i) for i in train), sorted(int(i) for i in val)
