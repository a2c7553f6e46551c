"""From probabilities to tags: per-class thresholds shifted by the session's sensitivity.

A tag passes when its logit is above the class's threshold. Thresholds live in logit space so a
sensitivity step means the same evidence everywhere: each step of ``sensitivity`` (integers in
[-2, 2]; positive reduces a tag's appearance, negative increases it) moves the threshold by
``SENSITIVITY_STEP_LOGIT``. The shift is monotonic: a higher sensitivity never adds a tag.

YAMNet's ``Silence`` class is not a sound event: it is never reported as a tag, and a window
where nothing else passes is reported as ``Others``, as Cochl does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "BASE_THRESHOLD_LOGIT",
    "OTHERS",
    "SENSITIVITY_STEP_LOGIT",
    "Tagger",
]

OTHERS = "Others"
BASE_THRESHOLD_LOGIT = 0.0  # probability 0.5; the model's logits move in steps of ~0.76
SENSITIVITY_STEP_LOGIT = 1.0
_NOT_EVENTS = frozenset({"Silence"})
_DECIMALS = 4


class Tagger:
    """Immutable, shared: labels and base thresholds; sessions bring their own sensitivity."""

    def __init__(
        self, labels: Sequence[str], base_threshold_logit: npt.ArrayLike | None = None
    ) -> None:
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
        logits = self._base + SENSITIVITY_STEP_LOGIT * shift
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
