"""From probabilities to tags: per-class thresholds shifted by the session's sensitivity.

A tag passes when its logit is above the class's threshold. Base thresholds come from evidence
(``models/yamnet/thresholds.csv``, chosen on labelled recordings: ``benchmarks/calibration.md``)
and sit between two of the model's output steps. Each step of ``sensitivity`` (integers in
[-2, 2]; positive reduces a tag's appearance, negative increases it) moves a threshold by one of
the model's output steps (0.7565 in logit for the int8 model), so every step changes what passes
by exactly one level, for every class. The shift is monotonic: a higher sensitivity never adds a
tag.

YAMNet's ``Silence`` class is not a sound event: it is never reported as a tag, and a window
where nothing else passes is reported as ``Others``, as Cochl does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from protocol.messages import OfficialTag

__all__ = [
    "BASE_THRESHOLD_LOGIT",
    "OTHERS",
    "OTHERS_ID",
    "SENSITIVITY_STEP_LOGIT",
    "Tagger",
    "official_tags",
]

OTHERS = "Others"
OTHERS_ID = "others"
BASE_THRESHOLD_LOGIT = 0.0  # used when no calibrated thresholds are given
SENSITIVITY_STEP_LOGIT = 0.7565  # the int8 model's output step; float variants use it too
_NOT_EVENTS = frozenset({"Silence"})
_DECIMALS = 4


class Tagger:
    """Immutable, shared: labels and base thresholds; sessions bring their own sensitivity."""

    def __init__(
        self,
        labels: Sequence[str],
        base_threshold_logit: npt.ArrayLike | None = None,
        sensitivity_step_logit: float = SENSITIVITY_STEP_LOGIT,
    ) -> None:
        self._step = sensitivity_step_logit
        self.labels = tuple(labels)
        self._index = {name: i for i, name in enumerate(self.labels)}
        base = (
            np.full(len(self.labels), BASE_THRESHOLD_LOGIT)
            if base_threshold_logit is None
            else np.asarray(base_threshold_logit, dtype=np.float64)
        )
        self._base = base
        self._reportable = np.array([name not in _NOT_EVENTS for name in self.labels])

    def thresholds(
        self, default_sensitivity: int = 0, tags_sensitivity: Mapping[str, int] | None = None
    ) -> npt.NDArray[np.float64]:
        """Probability thresholds per class for one session's sensitivity settings."""
        shift = np.full(len(self.labels), float(default_sensitivity))
        for name, value in (tags_sensitivity or {}).items():
            if name in self._index:
                shift[self._index[name]] = float(value)
        logits = self._base + self._step * shift
        return 1.0 / (1.0 + np.exp(-logits))

    def tags(
        self, probabilities: npt.NDArray[np.float32], thresholds: npt.NDArray[np.float64]
    ) -> list[list[tuple[str, float]]]:
        """Per window, the passing tags sorted by probability (highest first), or ``Others``."""
        passing = (probabilities > thresholds) & self._reportable
        windows: list[list[tuple[str, float]]] = []
        for row, mask in zip(probabilities, passing, strict=True):
            indices = np.flatnonzero(mask)
            if indices.size == 0:
                others = 1.0 - float(row[self._reportable].max())
                windows.append([(OTHERS, round(others, _DECIMALS))])
                continue
            ordered = indices[np.argsort(-row[indices], kind="stable")]
            windows.append([(self.labels[i], round(float(row[i]), _DECIMALS)) for i in ordered])
        return windows


def official_tags(class_map: Sequence[tuple[str, str]]) -> tuple[OfficialTag, ...]:
    """The tags this model can report, as ``GET /tags/official`` lists them: every class but
    the ones that are not sound events (id: its AudioSet id), then ``Others``."""
    reportable = [
        OfficialTag(class_id, name) for class_id, name in class_map if name not in _NOT_EVENTS
    ]
    return (*reportable, OfficialTag(OTHERS_ID, OTHERS))
