"""AudioSet display names for YAMNet's 521 outputs, read from the class map shipped with the model."""

from __future__ import annotations

import csv
from pathlib import Path

from models.yamnet.spec import WEIGHTS_DIR

__all__ = ["CLASS_COUNT", "load_labels"]

CLASS_COUNT = 521


def load_labels(weights_dir: Path = WEIGHTS_DIR) -> tuple[str, ...]:
    with (weights_dir / "yamnet_class_map.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    labels = tuple(row["display_name"] for row in sorted(rows, key=lambda r: int(r["index"])))
    if len(labels) != CLASS_COUNT:
        raise ValueError(f"class map has {len(labels)} classes, expected {CLASS_COUNT}")
    return labels
