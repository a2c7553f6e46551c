"""Per-class base thresholds for YAMNet, as the run time reads them.

``load_thresholds`` reads the committed ``thresholds.csv`` (one row per class, in model order)
into a logit array. It needs nothing but the standard library and numpy: loading the thresholds
never imports onnxruntime, PyAV or the calibration tool. ``models.yamnet.calibrate`` is the
offline step that rebuilds the CSV (see benchmarks/calibration.md).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.yamnet.labels import CLASS_COUNT
from models.yamnet.spec import MODEL_DIR

__all__ = ["DEFAULT_THRESHOLD_LOGIT", "OUTPUT_SCALE", "THRESHOLDS_PATH", "load_thresholds"]

THRESHOLDS_PATH = MODEL_DIR / "thresholds.csv"
OUTPUT_SCALE = 0.7565417289733887  # the model's uint8 output quantisation (checked at build time)
# The midpoint above logit 0 (probability 0.5): it passes exactly the windows that the rule
# ``probability > 0.5`` passes and, half a grid step away from every value the model can
# output, float rounding can never flip a decision.
DEFAULT_THRESHOLD_LOGIT = 0.5 * OUTPUT_SCALE


def load_thresholds(path: Path = THRESHOLDS_PATH) -> npt.NDArray[np.float64]:
    """[521] base logit thresholds in model order, from the committed CSV."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if len(rows) != CLASS_COUNT:
        raise ValueError(f"{path} has {len(rows)} rows, expected {CLASS_COUNT}")
    thresholds = np.empty(CLASS_COUNT, dtype=np.float64)
    for position, row in enumerate(rows):
        if int(row["index"]) != position:
            raise ValueError(f"{path}: row {position} has index {row['index']}")
        thresholds[position] = float(row["threshold_logit"])
    if not np.all(np.isfinite(thresholds)):
        raise ValueError(f"{path} has a threshold that is not finite")
    return thresholds
