"""YAMNet's log-mel frontend, offline and incremental.

The math follows the published YAMNet features (tensorflow/models, research/audioset/yamnet):
a periodic Hann window of 25 ms every 10 ms, the magnitude of a 512-point FFT, 64 HTK mel bands
from 125 to 7500 Hz built the way ``tf.signal.linear_to_mel_weight_matrix`` builds them (triangles
in the mel domain, DC bin zeroed), ``log(mel + 0.001)``, and 96-frame patches.

``StreamingLogMel`` computes each frame exactly once, whatever the chunking, and its frames are
identical to the offline ``log_mel_frames`` of the same samples: both call the same per-frame code
on the same sample values, and the filterbank product always runs on blocks of the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from models.yamnet.spec import FRONTEND, FrontendParams

__all__ = [
    "Patch",
    "PatchWindower",
    "StreamingLogMel",
    "log_mel_frames",
    "mel_weight_matrix",
    "patches_offline",
    "quantize_patches",
]

FloatArray = npt.NDArray[np.float64]
Frames = npt.NDArray[np.float32]  # log-mel frames (float32, as YAMNet's own features)
_MEL_BREAK_HZ = 700.0
_MEL_HIGH_Q = 1127.0


def _hz_to_mel(freq_hz: FloatArray | float) -> FloatArray:
    return _MEL_HIGH_Q * np.log1p(np.asarray(freq_hz, dtype=np.float64) / _MEL_BREAK_HZ)


def mel_weight_matrix(params: FrontendParams = FRONTEND) -> FloatArray:
    """[fft_length // 2 + 1, mel_bands] triangular filterbank, as TensorFlow builds it."""
    spectrogram_bins = params.fft_length // 2 + 1
    nyquist_hz = params.sample_rate_hz / 2.0
    bin_mel = _hz_to_mel(np.linspace(0.0, nyquist_hz, spectrogram_bins))[1:]  # DC bin is zeroed
    edges_mel = np.linspace(
        _hz_to_mel(params.mel_min_hz), _hz_to_mel(params.mel_max_hz), params.mel_bands + 2
    )
    lower, center, upper = edges_mel[:-2], edges_mel[1:-1], edges_mel[2:]
    rising = (bin_mel[:, None] - lower) / (center - lower)
    falling = (upper - bin_mel[:, None]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return np.vstack([np.zeros((1, params.mel_bands)), weights])


def _periodic_hann(length: int) -> FloatArray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)


_MEL_BLOCK_ROWS = 16
_BIN_ALIGN = 16


class _FrameMath:
    """Window, FFT size and filterbank built once and shared (immutable).

    Per 0.5 s of audio (50 frames) on the 2-core benchmark machine this takes 126 us, against
    182 us for ``abs(rfft(x * w, n)) @ mel`` in float64 on 64-row blocks: the FFT reads a
    buffer padded once, only the bins the filterbank uses are kept (the weights are zero from
    7.5 kHz up), and the filterbank product runs in float32, the precision YAMNet's own
    TensorFlow features use.
    """

    def __init__(self, params: FrontendParams) -> None:
        self.params = params
        self.window = _periodic_hann(params.stft_window_samples)
        weights = mel_weight_matrix(params)
        used = int(np.flatnonzero(weights.any(axis=1))[-1]) + 1
        self.bins = min(weights.shape[0], -(-used // _BIN_ALIGN) * _BIN_ALIGN)
        self.mel = np.ascontiguousarray(weights[: self.bins], dtype=np.float32)
        self.log_offset = np.float32(params.log_offset)

    def frame_power(self, framed: FloatArray) -> FloatArray:
        """Mean square of each raw frame: the level the silence gate compares (full scale = 1)."""
        return np.einsum("ij,ij->i", framed, framed) / framed.shape[1]

    def frames_to_log_mel(self, framed: FloatArray) -> Frames:
        rows, width = framed.shape
        padded = np.zeros((rows, self.params.fft_length))
        np.multiply(framed, self.window, out=padded[:, :width])
        spectrum = np.abs(np.fft.rfft(padded, axis=1)[:, : self.bins])
        energies = self._mel_energies(spectrum)
        return np.log(energies + self.log_offset, out=energies)

    def _mel_energies(self, spectrum: FloatArray) -> Frames:
        """``spectrum @ mel``, always as fixed-size blocks of rows (the last one zero-padded).

        BLAS picks its kernels by matrix shape, and one row goes down another path than many
        (matrix-vector), which changes the last bit; a fixed shape makes every frame's result
        the same however the audio was chunked (the property tests check it bit for bit).
        Small blocks waste little on the padding of the last one.
        """
        rows = spectrum.shape[0]
        out = np.empty((rows, self.mel.shape[1]), dtype=np.float32)
        block = np.zeros((_MEL_BLOCK_ROWS, self.bins), dtype=np.float32)
        for start in range(0, rows, _MEL_BLOCK_ROWS):
            part = spectrum[start : start + _MEL_BLOCK_ROWS]
            count = part.shape[0]
            block[:count] = part
            if count < _MEL_BLOCK_ROWS:
                block[count:] = 0.0
            out[start : start + count] = (block @ self.mel)[:count]
        return out


_MATH: dict[FrontendParams, _FrameMath] = {}


def _math(params: FrontendParams) -> _FrameMath:
    if params not in _MATH:
        _MATH[params] = _FrameMath(params)
    return _MATH[params]


def _frame_count(samples: int, params: FrontendParams) -> int:
    if samples < params.stft_window_samples:
        return 0
    return 1 + (samples - params.stft_window_samples) // params.stft_hop_samples


def _frame(samples: FloatArray, count: int, params: FrontendParams) -> FloatArray:
    return np.lib.stride_tricks.as_strided(
        samples,
        shape=(count, params.stft_window_samples),
        strides=(samples.strides[0] * params.stft_hop_samples, samples.strides[0]),
        writeable=False,
    )


def log_mel_frames(samples: npt.ArrayLike, params: FrontendParams = FRONTEND) -> Frames:
    """Offline log-mel: [frames, mel_bands] for 16 kHz mono samples (no padding, like TF's stft)."""
    audio = np.ascontiguousarray(samples, dtype=np.float64)
    count = _frame_count(audio.shape[0], params)
    if count == 0:
        return np.empty((0, params.mel_bands), dtype=np.float32)
    return _math(params).frames_to_log_mel(_frame(audio, count, params))


def patches_offline(
    samples: npt.ArrayLike, hop_frames: int, params: FrontendParams = FRONTEND
) -> Frames:
    """All complete patches [n, patch_frames, mel_bands] of a whole signal."""
    frames = log_mel_frames(samples, params)
    if frames.shape[0] < params.patch_frames:
        return np.empty((0, params.patch_frames, params.mel_bands), dtype=np.float32)
    count = 1 + (frames.shape[0] - params.patch_frames) // hop_frames
    return np.stack(
        [frames[i * hop_frames : i * hop_frames + params.patch_frames] for i in range(count)]
    )


def quantize_patches(
    patches: npt.NDArray[np.floating[Any]], scale: float, zero_point: int
) -> npt.NDArray[np.uint8]:
    """Quantise log-mel patches for the uint8 model input (round half to even, clipped)."""
    quantized = np.rint(patches / scale) + zero_point
    return np.clip(quantized, 0, 255).astype(np.uint8)


class StreamingLogMel:
    """Per-session incremental log-mel: push samples, get the frames they complete.

    Keeps only the samples that the next frame still needs (less than one STFT window).
    """

    def __init__(self, params: FrontendParams = FRONTEND) -> None:
        self._params = params
        self._math = _math(params)
        self._pending = np.empty(0, dtype=np.float64)
        self.frames_emitted = 0

    def push(self, samples: npt.ArrayLike) -> Frames:
        return self.push_with_power(samples)[0]

    def push_with_power(self, samples: npt.ArrayLike) -> tuple[Frames, FloatArray]:
        """New log-mel frames and each frame's mean-square level."""
        audio = np.asarray(samples, dtype=np.float64)
        buffer = np.concatenate([self._pending, audio]) if self._pending.size else audio.copy()
        count = _frame_count(buffer.shape[0], self._params)
        if count == 0:
            self._pending = buffer
            return np.empty((0, self._params.mel_bands), dtype=np.float32), np.empty(0)
        framed = _frame(buffer, count, self._params)
        frames = self._math.frames_to_log_mel(framed)
        power = self._math.frame_power(framed)
        self._pending = buffer[count * self._params.stft_hop_samples :].copy()
        self.frames_emitted += count
        return frames, power


@dataclass(frozen=True)
class Patch:
    """One model window: its index in the session, its log-mel frames and, when the frames'
    levels were given, the window's mean-square level."""

    index: int
    frames: Frames
    power: float | None = None


@dataclass
class PatchWindower:
    """Cuts a growing sequence of log-mel frames into patches every ``hop_frames`` frames."""

    hop_frames: int
    params: FrontendParams = FRONTEND
    next_index: int = 0
    _frames: Frames = field(
        default_factory=lambda: np.empty((0, FRONTEND.mel_bands), dtype=np.float32)
    )
    _first_frame: int = 0  # absolute frame index of self._frames[0]
    _power: FloatArray = field(default_factory=lambda: np.empty(0))

    def resume_at(self, window_index: int) -> None:
        """Start at ``window_index``: the next pushed frame is that window's first frame."""
        self.next_index = window_index
        self._first_frame = window_index * self.hop_frames
        self._frames = np.empty((0, self.params.mel_bands), dtype=np.float32)
        self._power = np.empty(0)

    def push(self, frames: Frames, power: FloatArray | None = None) -> list[Patch]:
        """Add frames (and optionally their levels); return the patches they complete."""
        if frames.shape[0]:
            self._frames = np.concatenate([self._frames, frames]) if self._frames.size else frames
            if power is not None:
                self._power = np.concatenate([self._power, power])
        with_power = self._power.shape[0] == self._frames.shape[0] and self._frames.shape[0] > 0
        patches: list[Patch] = []
        while True:
            start = self.next_index * self.hop_frames - self._first_frame
            stop = start + self.params.patch_frames
            if stop > self._frames.shape[0]:
                break
            level = float(self._power[start:stop].mean()) if with_power else None
            patches.append(Patch(self.next_index, self._frames[start:stop].copy(), level))
            self.next_index += 1
        # With a hop longer than a patch (1 s hop: 100 > 96 frames), the next window may start
        # beyond the frames received so far: drop only what exists.
        keep_from = min(
            max(0, self.next_index * self.hop_frames - self._first_frame), self._frames.shape[0]
        )
        if keep_from:
            self._frames = self._frames[keep_from:]
            self._power = self._power[keep_from:]
            self._first_frame += keep_from
        return patches
