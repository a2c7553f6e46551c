"""Per-frame features for a head: YAMNet's log-mel frames, plus cheap sample features.

A log-mel frame is a 25 ms Hann window every 10 ms. A 1-3 ms click inside it adds a broadband
smear of a few dB to two or three neighbouring frames, often below the frame-to-frame variation
of speech, and says nothing about where in the 25 ms the click was. Two cheap features taken
straight from the samples keep it: the peak and the RMS of the first difference (a high-pass
filter that a click's edges dominate) over each frame's own 10 ms *cell*, the hop of samples
centred on the frame's window. Their ratio is the crest factor of the high-passed signal: high
for a click, low for speech and noise. ``benchmarks/custom_head.py`` measures what they add.

Frame ``i`` of the log-mel covers samples ``[i * hop, i * hop + window)``; its cell is the hop
centred on that window, ``[i * hop + (window - hop) / 2, ... + hop)``, i.e. 7.5-17.5 ms after
``i * 10 ms`` at 16 kHz. Targets and events use the cells, so adjacent frames tile time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.yamnet.frontend import log_mel_frames
from models.yamnet.spec import FRONTEND, FrontendParams

__all__ = [
    "LOG_MEL",
    "WITH_SAMPLE_FEATURES",
    "FeatureSpec",
    "frame_features",
    "sample_features",
]

Features = npt.NDArray[np.float32]
_LOG_FLOOR = 1e-5  # below 16-bit resolution: silence and digital zero give the same value


@dataclass(frozen=True)
class FeatureSpec:
    """What a head's input frame holds; it travels in the exported model's metadata."""

    log_mel: bool = True
    sample_features: bool = True  # log peak and log RMS of the first difference per cell
    params: FrontendParams = FRONTEND

    @property
    def name(self) -> str:
        return "log_mel+hp" if self.sample_features else "log_mel"

    @property
    def width(self) -> int:
        return self.params.mel_bands * self.log_mel + 2 * self.sample_features

    @property
    def hop_ms(self) -> float:
        return 1000.0 * self.params.stft_hop_samples / self.params.sample_rate_hz

    @property
    def cell_offset_ms(self) -> float:
        """Where frame 0's cell starts, in ms from the first sample."""
        params = self.params
        offset = (params.stft_window_samples - params.stft_hop_samples) / 2
        return 1000.0 * offset / params.sample_rate_hz

    def frames_for(self, sample_count: int) -> int:
        params = self.params
        if sample_count < params.stft_window_samples:
            return 0
        return 1 + (sample_count - params.stft_window_samples) // params.stft_hop_samples

    def describe(self) -> str:
        """A one-line description for the model's metadata."""
        parts = []
        if self.log_mel:
            parts.append(f"log_mel[{self.params.mel_bands}]")
        if self.sample_features:
            parts.append("log_peak_abs_diff[1]")
            parts.append("log_rms_diff[1]")
        return " + ".join(parts)


LOG_MEL = FeatureSpec(sample_features=False)
WITH_SAMPLE_FEATURES = FeatureSpec()


def sample_features(samples: npt.ArrayLike, spec: FeatureSpec = WITH_SAMPLE_FEATURES) -> Features:
    """[frames, 2]: log peak and log RMS of the first difference over each frame's cell."""
    audio = np.asarray(samples, dtype=np.float64)
    params = spec.params
    count = spec.frames_for(audio.shape[0])
    hop = params.stft_hop_samples
    offset = (params.stft_window_samples - hop) // 2
    out = np.empty((count, 2), dtype=np.float32)
    if count == 0:
        return out
    diff = np.diff(audio, prepend=audio[:1])
    cells = diff[offset : offset + count * hop].reshape(count, hop)
    out[:, 0] = np.log(np.abs(cells).max(axis=1) + _LOG_FLOOR)
    out[:, 1] = 0.5 * np.log(np.mean(cells * cells, axis=1) + _LOG_FLOOR**2)
    return out


def frame_features(
    spec: FeatureSpec,
    samples: npt.ArrayLike | None = None,
    log_mel: npt.ArrayLike | None = None,
) -> Features:
    """[frames, spec.width] for one file, from its 16 kHz mono samples or, when the spec needs
    no sample features, from its precomputed log-mel frames (which are then used as they are)."""
    parts: list[Features] = []
    if log_mel is None and samples is None:
        raise ValueError("give the file's samples or its log-mel frames")
    if spec.sample_features and samples is None:
        raise ValueError(f"features {spec.name!r} need the samples, not only log-mel frames")
    if spec.log_mel:
        if log_mel is None:
            assert samples is not None  # checked above
            mel = log_mel_frames(samples, spec.params)
        else:
            mel = np.asarray(log_mel)
        if mel.ndim != 2 or mel.shape[1] != spec.params.mel_bands:
            raise ValueError(f"log-mel frames must be [frames, {spec.params.mel_bands}]")
        parts.append(mel.astype(np.float32, copy=False))
    if spec.sample_features:
        assert samples is not None  # checked above
        extra = sample_features(samples, spec)
        if parts and parts[0].shape[0] != extra.shape[0]:
            raise ValueError(
                f"{parts[0].shape[0]} log-mel frames for {extra.shape[0]} frames of samples"
            )
        parts.append(extra)
    return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
