"""Run a YAMNet model file over whole clips, for set-up and maintenance tools.

One onnxruntime CPU session, fed the way the model file says (``load_variant_metadata``): the
same quantised input, the same raw output and the same sigmoid as the server's runner, so the
calibration sees the probabilities a session would get. It has none of the runner's serving
concerns (provider choice, batch buckets, warm-up, thread budget); the server never imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from models.yamnet.variant_meta import OUTPUT_UINT8_LOGITS, VariantMetadata, load_variant_metadata

__all__ = ["OfflineModel"]

_MAX_BATCH = 64


class OfflineModel:
    """A model file on the CPU: float log-mel patches [n, 96, 64] in, outputs per patch."""

    def __init__(self, model_path: Path, threads: int = 1) -> None:
        self.path = model_path
        self.meta: VariantMetadata = load_variant_metadata(model_path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )

    @property
    def quantized_output(self) -> bool:
        """True when ``raw`` returns uint8 codes of the logits (the fetched int8 model)."""
        return self.meta.output_kind == OUTPUT_UINT8_LOGITS

    def raw(self, patches: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """The model's own output [n, classes]: uint8 logit codes, or float logits. Patches are
        quantised in their own dtype (float32 from the frontend), as the runner does."""
        feed = self.meta.model_input(patches)
        step = _MAX_BATCH if self.meta.dynamic_batch else 1
        outputs = [
            self._session.run(None, {self.meta.input_name: feed[start : start + step]})[0]
            for start in range(0, len(feed), step)
        ]
        if not outputs:
            dtype = np.uint8 if self.quantized_output else np.float32
            return np.zeros((0, self._classes()), dtype=dtype)
        return np.concatenate(outputs)

    def probabilities(self, patches: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Sigmoid of the logits [n, classes], computed as the server's runner computes it."""
        logits = self.meta.logits(self.raw(patches))
        return (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32)

    def _classes(self) -> int:
        return int(self._session.get_outputs()[0].shape[-1])
