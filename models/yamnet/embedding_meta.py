"""What the server needs to know of the embedding graph (``embedding`` prepares it at set-up):
where it is, its output and geometry. Small on purpose: the server imports this, never the
set-up tool and its onnx dependency."""

from __future__ import annotations

from pathlib import Path

from models.yamnet.spec import WEIGHTS_DIR

__all__ = [
    "EMBEDDING_DIMS",
    "EMBEDDING_FILE",
    "EMBEDDING_HOP_S",
    "EMBEDDING_INPUT",
    "EMBEDDING_OUTPUT",
    "SOURCE_SHA256_PROP",
    "embedding_path",
]

EMBEDDING_FILE = "embedding.onnx"
EMBEDDING_INPUT = "log_mel"  # float log-mel patches [batch, 1, 96, 64], as the fp32 variant's
EMBEDDING_OUTPUT = "embedding"
EMBEDDING_DIMS = 1024
EMBEDDING_HOP_S = 0.48  # YAMNet's own hop between 0.96 s windows
SOURCE_SHA256_PROP = "tympan.source_sha256"


def embedding_path(weights_dir: Path = WEIGHTS_DIR) -> Path:
    return weights_dir / "variants" / EMBEDDING_FILE
