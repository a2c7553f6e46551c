"""The embedding graph prepared at set-up: cut before the classifier, checked against the fp32
variant, written once, rebuilt when damaged; the server loads it or goes on without it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from models.yamnet.embedding import prepare_embedding
from models.yamnet.embedding_meta import EMBEDDING_DIMS, embedding_path
from models.yamnet.frontend import log_mel_frames
from models.yamnet.spec import FRONTEND, WEIGHTS_DIR
from server.runner import EmbeddingRunner, load_embedding_runner


def _weights_copy(tmp_path: Path) -> Path:
    for name in ("model.onnx", "model.data"):
        shutil.copy(WEIGHTS_DIR / name, tmp_path / name)
    return tmp_path


def test_prepared_once_checked_and_rebuilt_when_damaged(tmp_path: Path) -> None:
    weights = _weights_copy(tmp_path)
    path, worst = prepare_embedding(weights)
    assert path == embedding_path(weights) and worst is not None and worst < 1e-3
    assert prepare_embedding(weights) == (path, None)  # current: left as it is
    path.write_bytes(path.read_bytes()[:1000])
    _, rebuilt = prepare_embedding(weights)
    assert rebuilt is not None
    patches = np.stack(
        [
            log_mel_frames(np.zeros(FRONTEND.patch_samples)),
            log_mel_frames(np.ones(FRONTEND.patch_samples) * 0.1),
        ]
    ).astype(np.float32)
    vectors = EmbeddingRunner(path).run(patches)
    assert vectors.shape == (2, EMBEDDING_DIMS) and np.isfinite(vectors).all()
    assert EmbeddingRunner(path).run(patches[:0]).shape == (0, EMBEDDING_DIMS)


def test_without_the_graph_the_server_goes_on_without_embeddings(tmp_path: Path) -> None:
    assert load_embedding_runner(tmp_path) is None
