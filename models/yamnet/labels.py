"""AudioSet display names for YAMNet's 521 outputs, read from the class map shipped with the model."""

from __future__ import annotations

import csv
from pathlib import Path

from models.yamnet.spec import WEIGHTS_DIR

__all__ = ["CLASS_COUNT", "load_class_map", "load_labels"]

CLASS_COUNT = 521


def load_class_map(weights_dir: Path = WEIGHTS_DIR) -> tuple[tuple[str, str], ...]:
    """(AudioSet id, display name) of each output, in model order."""
    with (weights_dir / "yamnet_class_map.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    classes = tuple(
        (row["mid"], row["display_name"]) for row in sorted(rows, key=lambda r: int(r["index"]))
    )
    if len(classes) != CLASS_COUNT:
        raise ValueError(f"class map has {len(classes)} classes, expected {CLASS_COUNT}")
    return classes


def load_labels(weights_dir: Path = WEIGHTS_DIR) -> tuple[str, ...]:
    return tuple(name for _, name in load_class_map(weights_dir))
