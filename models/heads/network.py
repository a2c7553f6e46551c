"""The head's math: a temporal convolution over normalised frames, in numpy.

``z = (features - mean) / std`` per feature, then for each frame ``t`` the context rows
``z[t + offset]`` (zero beyond the file: zero is the training mean) for the offsets of each
branch: a dense branch (every frame within ``dense_radius``) sees the shape of a click or an
edge, a dilated one (every ``dilation``-th frame within ``dilation * dilated_radius``) sees
whether a silence lasts. ``hidden_units == 0`` is logistic regression on those rows; otherwise
one ReLU layer and a linear layer per type, then a sigmoid. Each branch is exactly a 1-D
convolution (kernel ``2 * radius + 1``, its dilation, zero padding), which is how ``export``
writes it into ONNX, so the exported graph computes the same sums.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = [
    "Architecture",
    "HeadWeights",
    "context_rows",
    "forward",
    "init_weights",
    "logits_from_rows",
    "normalise",
    "padded",
    "sigmoid",
]

F32 = npt.NDArray[np.float32]
_CHUNK_FRAMES = 4096


@dataclass(frozen=True)
class Architecture:
    """The head's shape; ``name`` is how benchmarks and metadata refer to it."""

    hidden_units: int = 16  # the defaults: the best head of benchmarks/custom_head.py
    dense_radius: int = 3
    dilated_radius: int = 0
    dilation: int = 8

    def __post_init__(self) -> None:
        if self.hidden_units < 0 or self.dense_radius < 0 or self.dilated_radius < 0:
            raise ValueError("hidden_units and radii must be >= 0")
        if self.dilation < 1:
            raise ValueError("dilation must be >= 1")

    @property
    def name(self) -> str:
        kind = f"mlp{self.hidden_units}" if self.hidden_units else "linear"
        return f"{kind}-d{self.dense_radius}-x{self.dilated_radius}s{self.dilation}"

    def branches(self) -> list[tuple[int, int]]:
        """(kernel, dilation) of each convolution branch, in row order."""
        out = [(2 * self.dense_radius + 1, 1)]
        if self.dilated_radius:
            out.append((2 * self.dilated_radius + 1, self.dilation))
        return out

    def offsets(self) -> npt.NDArray[np.int64]:
        parts = [
            (np.arange(kernel) - (kernel - 1) // 2) * dilation
            for kernel, dilation in self.branches()
        ]
        return np.concatenate(parts)

    @property
    def reach_frames(self) -> int:
        """How far the context reaches on either side, in frames."""
        return int(np.abs(self.offsets()).max())


@dataclass
class HeadWeights:
    """Everything the forward pass needs. ``w1`` rows are (offset, feature) in offset order."""

    architecture: Architecture
    mean: F32  # [width]
    std: F32  # [width]
    w1: F32  # [offsets * width, hidden or types]
    b1: F32
    w2: F32 | None = None  # [hidden, types]
    b2: F32 | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return int(self.mean.shape[0])

    @property
    def type_count(self) -> int:
        return int((self.w2 if self.w2 is not None else self.w1).shape[1])

    def params(self) -> list[F32]:
        out = [self.w1, self.b1]
        if self.w2 is not None and self.b2 is not None:
            out += [self.w2, self.b2]
        return out


def init_weights(
    architecture: Architecture, mean: F32, std: F32, type_count: int, rng: np.random.Generator
) -> HeadWeights:
    """He-initialised first layer, small last layer, zero biases."""
    rows = architecture.offsets().size * mean.shape[0]
    hidden = architecture.hidden_units
    first = hidden or type_count
    scale = np.sqrt(2.0 / rows) if hidden else np.sqrt(1.0 / rows)
    w1 = (rng.standard_normal((rows, first)) * scale).astype(np.float32)
    b1 = np.zeros(first, dtype=np.float32)
    if not hidden:
        return HeadWeights(architecture, mean, std, w1, b1)
    w2 = (rng.standard_normal((hidden, type_count)) * np.sqrt(1.0 / hidden)).astype(np.float32)
    return HeadWeights(architecture, mean, std, w1, b1, w2, np.zeros(type_count, np.float32))


def normalise(features: npt.ArrayLike, weights: HeadWeights) -> F32:
    z = (np.asarray(features, dtype=np.float32) - weights.mean) / weights.std
    return z.astype(np.float32, copy=False)


def padded(z: F32, reach: int) -> F32:
    """``z`` with ``reach`` zero rows on either side (zero: the normalised training mean)."""
    out = np.zeros((z.shape[0] + 2 * reach, z.shape[1]), dtype=np.float32)
    out[reach : reach + z.shape[0]] = z
    return out


def context_rows(zpad: F32, centres: npt.NDArray[np.int64], offsets: npt.NDArray[np.int64]) -> F32:
    """[len(centres), offsets * width]: the context of each centre row of a padded array."""
    rows = zpad[centres[:, None] + offsets[None, :]]
    return rows.reshape(centres.shape[0], -1)


def logits_from_rows(rows: F32, weights: HeadWeights) -> tuple[F32, F32 | None]:
    """Output logits and, for an MLP, the hidden activations (what training needs back)."""
    pre = rows @ weights.w1 + weights.b1
    if weights.w2 is None or weights.b2 is None:
        return pre, None
    hidden = np.maximum(pre, 0.0)
    return hidden @ weights.w2 + weights.b2, hidden


def sigmoid(x: F32) -> F32:
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32, copy=False)


def forward(features: npt.ArrayLike, weights: HeadWeights) -> F32:
    """Per-frame probabilities [frames, types] for one file's features [frames, width]."""
    z = normalise(features, weights)
    reach = weights.architecture.reach_frames
    zpad = padded(z, reach)
    offsets = weights.architecture.offsets()
    out = np.empty((z.shape[0], weights.type_count), dtype=np.float32)
    for start in range(0, z.shape[0], _CHUNK_FRAMES):  # bounded memory on long files
        centres = np.arange(start, min(start + _CHUNK_FRAMES, z.shape[0])) + reach
        logits, _ = logits_from_rows(context_rows(zpad, centres, offsets), weights)
        out[start : start + centres.size] = sigmoid(logits)
    return out
