"""One session's custom detectors: its samples -> frame features -> heads -> window tags and frames.

Per session (state lives with the session; runners are shared and immutable):

- a ``FeatureStream`` per feature spec its models use, fed every decoded sample;
- per model a ``_HeadStream``: the features still needed as context, and the probabilities that
  are final. A frame's probability is final once its ``context_frames`` successors exist (the
  head looks that far either way), or at the stream's end, where the graph pads with zeros as
  the offline forward does;
- the YAMNet windows waiting for them. Window ``k`` covers frames ``[k * hop_frames, k *
  hop_frames + 96)`` (YAMNet's own 96 log-mel frames: the frames whose 10 ms cells lie inside
  its 0.975 s); it is released once every model's probabilities are final through its last
  frame. Each custom type is then a tag of the window when its highest probability over those
  frames passes the type's threshold, and the frames it brings go to the event log's frame
  trackers (``frame_events``): through window ``k``, frames ``< k * hop_frames + 96``.

Which frames the trackers have seen is a function of the windows stored, so after a restart
(``resume_window``) the session recomputes, from the audio kept for it (``lookback_samples``
before the next window's start), exactly what it needs: the features back to the context of the
first frame not yet final.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from models.heads.features import FeatureSpec
from models.heads.metrics import EventRule
from models.yamnet.spec import FRONTEND
from server.detectors.feature_stream import MARGIN_FRAMES, FeatureStream
from server.detectors.head_batch import HeadSegment

__all__ = ["DetectorModel", "ReleasedWindows", "SessionDetectors", "fed_frames"]

Frames = npt.NDArray[np.float32]
_DECIMALS = 4  # as the tagger's probabilities


class Runner(Protocol):
    artifact_types: tuple[str, ...]
    rules: tuple[EventRule, ...]
    spec: FeatureSpec
    context_frames: int

    def run(self, features: Frames) -> Frames: ...


@dataclass(frozen=True)
class DetectorModel:
    model_id: str
    runner: Runner


@dataclass(frozen=True)
class ReleasedWindows:
    """Consecutive windows ready to store: YAMNet's probabilities, and per window the custom
    tags and the frames (per model: first frame, probabilities) it brings to the trackers."""

    first_index: int
    probabilities: npt.NDArray[np.float32]
    tags: list[list[tuple[str, float]]]
    frames: list[list[tuple[int, Frames]]]


def fed_frames(windows: int, hop_frames: int, patch_frames: int = FRONTEND.patch_frames) -> int:
    """Frames the trackers have seen once ``windows`` windows are stored."""
    return 0 if windows == 0 else (windows - 1) * hop_frames + patch_frames


class _HeadStream:
    def __init__(self, runner: Runner, first_frame: int) -> None:
        self.runner = runner
        self.reach = runner.context_frames
        self.final_to = first_frame  # probabilities are final before this frame
        self.features_from = max(0, first_frame - self.reach)
        self.features = np.empty((0, runner.spec.width), dtype=np.float32)
        self.probabilities_from = first_frame
        self.probabilities = np.empty((0, len(runner.artifact_types)), dtype=np.float32)
        self._asked_to: int | None = None

    @property
    def features_to(self) -> int:
        return self.features_from + int(self.features.shape[0])

    def add(self, first: int, features: Frames) -> None:
        drop = max(0, self.features_to - first)
        if first + drop != self.features_to:
            raise RuntimeError(f"features from {first}, expected {self.features_to}")
        if drop < features.shape[0]:
            self.features = np.concatenate([self.features, features[drop:]])

    def segment(self, final: bool) -> HeadSegment | None:
        end = self.features_to if final else self.features_to - self.reach
        if end <= self.final_to:
            self._asked_to = None
            return None
        lo = self.features_from
        self._asked_to = end
        return HeadSegment(
            self.features,
            self.final_to - lo,
            end - self.final_to,
            pad_before=self.final_to - self.reach < lo,
            pad_after=final,
        )

    def accept(self, probabilities: Frames) -> None:
        assert self._asked_to is not None
        self.probabilities = np.concatenate([self.probabilities, probabilities])
        self.final_to, self._asked_to = self._asked_to, None
        keep_from = max(0, self.final_to - self.reach)
        if keep_from > self.features_from:
            self.features = self.features[keep_from - self.features_from :]
            self.features_from = keep_from

    def take(self, stop: int, trim_to: int) -> tuple[int, Frames]:
        """Probabilities ``[probabilities_from, stop)``; then forget those before ``trim_to``."""
        first = self.probabilities_from
        out = self.probabilities[: max(0, stop - first)]
        cut = max(0, trim_to - first)
        if cut:
            self.probabilities = self.probabilities[cut:]
            self.probabilities_from = first + cut
        return first, out


class SessionDetectors:
    def __init__(
        self,
        models: Sequence[DetectorModel],
        hop_frames: int,
        resume_window: int = 0,
        patch_frames: int = FRONTEND.patch_frames,
    ) -> None:
        self.models = tuple(models)
        self.hop_frames = hop_frames
        self.patch_frames = patch_frames
        self.first_fed_frame = fed_frames(resume_window, hop_frames, patch_frames)
        need = min(self.first_fed_frame, resume_window * hop_frames)
        self._heads = [_HeadStream(m.runner, need) for m in self.models]
        self._features: dict[FeatureSpec, FeatureStream] = {}
        for head in self._heads:
            spec = head.runner.spec
            start = head.features_from
            current = self._features.get(spec)
            if current is None or start < current.next_frame:
                self._features[spec] = FeatureStream(spec, start)
        self._held: deque[tuple[int, npt.NDArray[np.float32]]] = deque()
        self.finished = False
        reach = max(m.runner.context_frames for m in self.models)
        gap = max(0, hop_frames - patch_frames)
        self.lookback_samples = (reach + MARGIN_FRAMES + gap) * FRONTEND.stft_hop_samples

    @property
    def rules(self) -> list[tuple[tuple[str, ...], tuple[EventRule, ...]]]:
        return [(m.runner.artifact_types, m.runner.rules) for m in self.models]

    # -- executor thread: features ---------------------------------------------------------

    def advance(
        self, samples: npt.ArrayLike | None, start_sample: int, final: bool = False
    ) -> list[HeadSegment | None]:
        """New samples (``[start_sample, ...)`` of the stream; None: none), and with ``final``
        the stream's end: per model the segment its head should run now (None: nothing)."""
        for spec, stream in self._features.items():
            parts = []
            if samples is not None:
                parts.append(stream.push(samples, start_sample))
            if final:
                parts.append(stream.finish())
            for head in self._heads:
                if head.runner.spec == spec:
                    for first, features in parts:
                        head.add(first, features)
        return [head.segment(final) for head in self._heads]

    # -- event loop -------------------------------------------------------------------------

    def accept(self, model: int, probabilities: Frames) -> None:
        self._heads[model].accept(probabilities)

    def mark_finished(self) -> None:
        self.finished = True

    def hold(self, first_index: int, probabilities: Any) -> None:
        for i, row in enumerate(np.asarray(probabilities, dtype=np.float32)):
            self._held.append((first_index + i, row))

    @property
    def held(self) -> int:
        return len(self._held)

    def _ready(self, index: int) -> bool:
        last = index * self.hop_frames + self.patch_frames
        return self.finished or all(h.final_to >= last for h in self._heads)

    def release(self) -> ReleasedWindows | None:
        """The held windows whose frames are all final, in order (None: none yet)."""
        taken: list[tuple[int, npt.NDArray[np.float32]]] = []
        while self._held and self._ready(self._held[0][0]):
            taken.append(self._held.popleft())
        if not taken:
            return None
        tags, frames = [], []
        for index, _ in taken:
            window_tags, window_frames = self._window(index)
            tags.append(window_tags)
            frames.append(window_frames)
        return ReleasedWindows(taken[0][0], np.stack([row for _, row in taken]), tags, frames)

    def _window(self, index: int) -> tuple[list[tuple[str, float]], list[tuple[int, Frames]]]:
        start = index * self.hop_frames
        stop = start + self.patch_frames
        tags: list[tuple[str, float]] = []
        frames: list[tuple[int, Frames]] = []
        for head in self._heads:
            upto = min(stop, head.final_to)
            first, probabilities = head.take(upto, min(start + self.hop_frames, upto))
            inside = probabilities[max(0, start - first) :]
            if inside.shape[0]:
                best = inside.max(axis=0)
                runner = head.runner
                for name, rule, p in zip(runner.artifact_types, runner.rules, best, strict=True):
                    if p > rule.threshold:
                        tags.append((name, round(float(p), _DECIMALS)))
            frames.append((first, probabilities))
        tags.sort(key=lambda tag: -tag[1])
        return tags, frames
