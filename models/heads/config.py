"""A training job's configuration, with the reference's names and defaults, validated.

The reference's training job takes ``artifact_types, epochs, validation_split, learning_rate,
batch_size`` (relay-workflow Step 5, defaults 20, 0.2, 0.001, 32); ``seed`` makes a run
repeatable. Errors name the key and the bad value, so the API can return them as they are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ConfigError", "TrainingConfig"]

_MAX_EPOCHS = 1000
_MAX_BATCH = 65536
_MAX_TYPES = 64
_MAX_TYPE_CHARS = 64


class ConfigError(ValueError):
    """A bad configuration value; the message names the key."""


@dataclass(frozen=True)
class TrainingConfig:
    artifact_types: tuple[str, ...] = ()  # empty: every type the annotations name
    epochs: int = 20
    validation_split: float = 0.2
    learning_rate: float = 0.001
    batch_size: int = 32
    seed: int = 0

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> TrainingConfig:
        raw = dict(raw or {})
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(unknown)}")
        default = cls()
        return cls(
            artifact_types=_types(raw.get("artifact_types", default.artifact_types)),
            epochs=_int(raw, "epochs", default.epochs, 1, _MAX_EPOCHS),
            validation_split=_fraction(raw, "validation_split", default.validation_split),
            learning_rate=_learning_rate(raw, default.learning_rate),
            batch_size=_int(raw, "batch_size", default.batch_size, 1, _MAX_BATCH),
            seed=_int(raw, "seed", default.seed, 0, 2**32 - 1),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "artifact_types": list(self.artifact_types),
            "epochs": self.epochs,
            "validation_split": self.validation_split,
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "seed": self.seed,
        }


def _int(raw: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{key} must be between {low} and {high}, got {value}")
    return value


def _number(raw: Mapping[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    return float(value)


def _fraction(raw: Mapping[str, Any], key: str, default: float) -> float:
    value = _number(raw, key, default)
    if not 0.0 < value < 1.0:
        raise ConfigError(f"{key} must be greater than 0 and less than 1, got {value}")
    return value


def _learning_rate(raw: Mapping[str, Any], default: float) -> float:
    value = _number(raw, "learning_rate", default)
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"learning_rate must be greater than 0 and at most 1, got {value}")
    return value


def _types(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(f"artifact_types must be a list of names, got {value!r}")
    if len(value) > _MAX_TYPES:
        raise ConfigError(f"artifact_types may name at most {_MAX_TYPES} types, got {len(value)}")
    for name in value:
        if not isinstance(name, str) or not name.strip() or len(name) > _MAX_TYPE_CHARS:
            raise ConfigError(
                f"artifact_types: each name must be a non-empty string of at most "
                f"{_MAX_TYPE_CHARS} characters, got {name!r}"
            )
    if len(set(value)) != len(value):
        raise ConfigError(f"artifact_types must not repeat a name, got {list(value)!r}")
    return tuple(value)
