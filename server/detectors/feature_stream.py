"""A head's frame features on a stream: the frames ``frame_features`` gives on the whole stream.

``models.heads.features.frame_features`` is written for a whole file. Rather than re-derive each
feature incrementally (and silently diverge when one is added), ``FeatureStream`` keeps a short
buffer of samples and recomputes ``frame_features`` over it at each push, keeping only the frames
whose support lies inside the buffer with ``MARGIN_FRAMES`` to spare on either side: a feature
that looks up to that far beyond its own 25 ms window (before or after) still comes out as on the
whole stream. The buffer starts on a frame boundary, so its frame ``j`` is the stream's frame
``first + j``. At the stream's start and end the buffer's edges are the stream's edges, as
offline. The price is recomputing ``2 * MARGIN_FRAMES`` frames and the window's overlap per push
(``benchmarks/live_detectors.py`` measures it).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from models.heads.features import FeatureSpec, frame_features

__all__ = ["MARGIN_FRAMES", "FeatureStream"]

MARGIN_FRAMES = 4  # 40 ms of look-behind and look-ahead a feature may have
Features = npt.NDArray[np.float32]


class FeatureStream:
    """Per session and feature spec: push samples (with their position in the stream), get the
    frames that became final; ``finish`` gives the rest. Synchronous (an executor thread)."""

    def __init__(self, spec: FeatureSpec, first_frame: int = 0, margin_frames: int = MARGIN_FRAMES):
        """``first_frame``: the first frame wanted (a resumed session); samples before what it
        needs are dropped as they arrive."""
        self.spec = spec
        self._hop = spec.params.stft_hop_samples
        self._margin = margin_frames
        self.next_frame = first_frame
        self._buffer_frame = max(0, first_frame - margin_frames)  # the buffer's first frame
        self._samples = np.empty(0, dtype=np.float32)
        self._seen_to: int | None = None  # the stream position one past the last sample given
        self.finished = False

    @property
    def lookback_samples(self) -> int:
        """How far before ``next_frame``'s start the buffer reaches."""
        return (self.next_frame - self._buffer_frame) * self._hop

    def push(self, samples: npt.ArrayLike, start_sample: int) -> tuple[int, Features]:
        """Samples ``[start_sample, ...)`` of the stream; (first frame, the frames now final)."""
        if self.finished:
            raise RuntimeError("push after finish")
        audio = np.asarray(samples, dtype=np.float32)
        if self._seen_to is not None and start_sample != self._seen_to:
            raise RuntimeError(f"samples from {start_sample}, expected {self._seen_to}")
        self._seen_to = start_sample + int(audio.shape[0])
        buffer_start = self._buffer_frame * self._hop
        buffered_to = buffer_start + int(self._samples.shape[0])
        if self._samples.shape[0] == 0 and start_sample > buffer_start:
            raise RuntimeError(f"samples from {start_sample}, the features need {buffer_start}")
        skip = max(0, buffered_to - start_sample)
        if skip < audio.shape[0]:
            new = audio[skip:]
            self._samples = np.concatenate([self._samples, new]) if self._samples.size else new
        return self._emit(final=False)

    def finish(self) -> tuple[int, Features]:
        """The stream has ended: every frame left (its support ends with the stream)."""
        out = self._emit(final=True)
        self.finished = True
        return out

    def _emit(self, final: bool) -> tuple[int, Features]:
        first = self.next_frame
        count = self.spec.frames_for(int(self._samples.shape[0]))
        stop = self._buffer_frame + count - (0 if final else self._margin)
        if stop <= first:
            return first, np.empty((0, self.spec.width), dtype=np.float32)
        features = frame_features(self.spec, samples=self._samples)
        out = np.ascontiguousarray(features[first - self._buffer_frame : stop - self._buffer_frame])
        self.next_frame = stop
        keep_from = max(0, stop - self._margin)
        drop = (keep_from - self._buffer_frame) * self._hop
        if drop > 0:
            self._samples = self._samples[drop:].copy()
            self._buffer_frame = keep_from
        return first, out
