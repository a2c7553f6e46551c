"""Per-frame features for a head: YAMNet's log-mel frames, plus cheap sample features.

A log-mel frame is a 25 ms Hann window every 10 ms. A 1-3 ms click inside it adds a broadband
smear of a few dB to two or three neighbouring frames, often below the frame-to-frame variation
of speech, and says nothing about where in the 25 ms the click was. Two cheap features from the
samples keep it, over each frame's own 10 ms *cell* (the hop of samples centred on the frame's
window): the peak of the linear-prediction residual, and that peak over the residual's RMS
around it. A predictor fitted to the frame predicts speech and noise and not a click, so the
residual's crest is high for a click and low for speech. On the benchmark's training files one
of them alone ranks click frames with a frame AUPRC of about 0.4, where the first difference's
crest factor gets 0.08 (``benchmarks/custom_head.py`` measures what they add to a head).

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
    "spec_from_name",
]

Features = npt.NDArray[np.float32]
_LOG_FLOOR = 1e-5  # below 16-bit resolution: silence and digital zero give the same value
_LPC_ORDER = 16
_LPC_RIDGE = 1e-3
_LPC_FLOOR = 1e-9
_BLOCK_FRAMES = 1024
_HANN = 0.5 - 0.5 * np.cos(
    2.0 * np.pi * np.arange(FRONTEND.stft_window_samples) / FRONTEND.stft_window_samples
)


@dataclass(frozen=True)
class FeatureSpec:
    """What a head's input frame holds; it travels in the exported model's metadata."""

    log_mel: bool = True
    sample_features: bool = True  # the linear-prediction residual's peak and crest per cell
    params: FrontendParams = FRONTEND

    @property
    def name(self) -> str:
        return "log_mel+lpc" if self.sample_features else "log_mel"

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
            parts.append("log_peak_lpc_residual[1]")
            parts.append("log_crest_lpc_residual[1]")
        return " + ".join(parts)


LOG_MEL = FeatureSpec(sample_features=False)
WITH_SAMPLE_FEATURES = FeatureSpec()
_SPECS = {spec.name: spec for spec in (LOG_MEL, WITH_SAMPLE_FEATURES)}


def spec_from_name(name: str) -> FeatureSpec:
    """The spec an exported head names in its metadata (``feature_spec.name``), so that a
    server computes exactly the frames the head was trained on."""
    try:
        return _SPECS[name]
    except KeyError:
        raise ValueError(f"unknown feature spec {name!r} (known: {', '.join(_SPECS)})") from None


def _lpc(frames: npt.NDArray[np.float64], order: int) -> npt.NDArray[np.float64]:
    """[frames, order + 1] prediction-error filters (a[0] = 1), by Levinson-Durbin on each
    windowed frame's autocorrelation, all frames at once."""
    width = frames.shape[1]
    r = np.stack(
        [np.einsum("ij,ij->i", frames[:, k:], frames[:, : width - k]) for k in range(order + 1)],
        axis=1,
    )
    r[:, 0] = r[:, 0] * (1.0 + _LPC_RIDGE) + _LPC_FLOOR  # white-noise floor: always stable
    a = np.zeros_like(r)
    a[:, 0] = 1.0
    error = r[:, 0].copy()
    for i in range(1, order + 1):
        k = -np.einsum("ij,ij->i", a[:, :i], r[:, i:0:-1]) / error
        a[:, 1:i] = a[:, 1:i] + k[:, None] * a[:, i - 1 : 0 : -1]
        a[:, i] = k
        error *= 1.0 - k * k
    return a


def sample_features(samples: npt.ArrayLike, spec: FeatureSpec = WITH_SAMPLE_FEATURES) -> Features:
    """[frames, 2]: per frame, the log peak of the linear-prediction residual over its cell and
    that peak over the residual's RMS around it (the cell and half a cell either side).

    Each frame's 25 ms window gets its own order-16 predictor (``_lpc``); speech and noise are
    what such a predictor predicts well, and a click is not, so the residual keeps the click
    and drops most of the speech around it (the classic declicker's detector).
    """
    audio = np.asarray(samples, dtype=np.float64)
    params = spec.params
    count = spec.frames_for(audio.shape[0])
    hop, window = params.stft_hop_samples, params.stft_window_samples
    out = np.empty((count, 2), dtype=np.float32)
    if count == 0:
        return out
    framed = np.lib.stride_tricks.sliding_window_view(audio, window)[::hop][:count]
    span_start = (window - 2 * hop) // 2  # the cell and half a cell either side
    history = np.lib.stride_tricks.sliding_window_view(audio, _LPC_ORDER + 1)
    taps = np.arange(2 * hop)
    for first in range(0, count, _BLOCK_FRAMES):
        block = slice(first, min(count, first + _BLOCK_FRAMES))
        a = _lpc(framed[block] * _HANN[:window], _LPC_ORDER)
        starts = np.arange(block.start, block.stop) * hop + span_start - _LPC_ORDER
        past = history[starts[:, None] + taps[None, :]]  # [frames, span, order + 1], oldest first
        residual = np.einsum("fso,fo->fs", past, a[:, ::-1])
        peak = np.abs(residual[:, hop // 2 : hop // 2 + hop]).max(axis=1)
        rms = np.sqrt(np.mean(residual * residual, axis=1))
        out[block, 0] = np.log(peak + _LOG_FLOOR)
        out[block, 1] = np.log(peak + _LOG_FLOOR) - np.log(rms + _LOG_FLOOR)
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
