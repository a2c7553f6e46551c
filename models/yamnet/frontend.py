"""YAMNet's log-mel frontend, offline and incremental.

The math follows the published YAMNet features (tensorflow/models, research/audioset/yamnet):
a periodic Hann window of 25 ms every 10 ms, the magnitude of a 512-point FFT, 64 HTK mel bands
from 125 to 7500 Hz built the way ``tf.signal.linear_to_mel_weight_matrix`` builds them (triangles
in the mel domain, DC bin zeroed), ``log(mel + 0.001)``, and 96-frame patches.

``StreamingLogMel`` computes each frame exactly once, whatever the chunking, and its frames are
identical to the offline ``log_mel_frames`` of the same samples, bit for bit, whatever the CPU,
its SIMD extensions or the BLAS: both call the same per-frame code on the same sample values,
and no step's arithmetic depends on how many frames go through together (see ``_FrameMath``).
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


_BLOCK_FRAMES = 128  # frames per pass: a block's FFT buffers stay in cache


class _FrameMath:
    """Window, FFT size and filterbank built once and shared (immutable).

    Each frame's values are the same bits however many frames are computed together and
    wherever the frame sits among them, so streaming in any chunking gives the offline frames.
    Every step treats each frame on its own, in arithmetic that depends on that frame's values
    alone: the window is an elementwise product, ``np.fft.rfft`` (pocketfft) transforms one row
    at a time, ``abs`` and ``log`` are elementwise, and the filterbank sums each band's
    products in a fixed order without BLAS (``_mel_energies``). Frames go through in blocks
    of ``_BLOCK_FRAMES`` only for speed: the buffers stay in cache, and 60 s of audio takes
    about 30 ms of CPU on the 2-core benchmark machine, against about 45 ms in one pass.
    """

    def __init__(self, params: FrontendParams) -> None:
        self.params = params
        self.window = _periodic_hann(params.stft_window_samples)
        weights = mel_weight_matrix(params).astype(np.float32)  # YAMNet's features are float32
        used = np.flatnonzero(weights.any(axis=1))
        self.first_bin, self.stop_bin = int(used[0]), int(used[-1]) + 1
        weights = weights[self.first_bin : self.stop_bin]
        # The filterbank as sparse columns: band i of ``bands`` sums magnitude[k] * weight
        # over its own bins k = gather[offsets[i] : offsets[i + 1]], in ascending order.
        self.bands = np.flatnonzero(weights.any(axis=0))  # the others stay 0
        columns = [np.flatnonzero(weights[:, band]) for band in self.bands]
        self.gather = np.concatenate(columns)
        self.gather_weights = np.concatenate(
            [weights[bins, band] for bins, band in zip(columns, self.bands, strict=True)]
        )
        self.offsets = np.cumsum([0] + [bins.size for bins in columns[:-1]])
        self.log_offset = np.float32(params.log_offset)

    def frame_power(self, framed: FloatArray) -> FloatArray:
        """Mean square of each raw frame: the level the silence gate compares (full scale = 1)."""
        return np.einsum("ij,ij->i", framed, framed) / framed.shape[1]

    def frames_to_log_mel(self, framed: FloatArray) -> Frames:
        rows, width = framed.shape
        out = np.empty((rows, self.params.mel_bands), dtype=np.float32)
        block = min(rows, _BLOCK_FRAMES)
        padded = np.zeros((block, self.params.fft_length))
        magnitude = np.empty((block, self.stop_bin - self.first_bin), dtype=np.float32)
        for start in range(0, rows, _BLOCK_FRAMES):
            count = min(rows - start, _BLOCK_FRAMES)
            np.multiply(framed[start : start + count], self.window, out=padded[:count, :width])
            spectrum = np.fft.rfft(padded[:count], axis=1)[:, self.first_bin : self.stop_bin]
            np.abs(spectrum, out=magnitude[:count])  # float64 magnitudes rounded to float32
            energies = self._mel_energies(magnitude[:count])
            energies += self.log_offset
            np.log(energies, out=out[start : start + count])
        return out

    def _mel_energies(self, magnitude: Frames) -> Frames:
        """``magnitude @ mel`` in float32, without BLAS, each band's sum in a fixed order.

        BLAS picks kernels by matrix shape and CPU, and OpenBLAS's Haswell kernel (what AVX2
        machines without AVX-512 get) even rounds a row differently by its position in the
        block: a frame streamed alone and the same frame computed offline among others then
        differed in the last bit. Here the products are elementwise and ``np.add.reduceat``
        reduces each row's segment (one band's bins, in bin order) on its own, in an order
        set by the segment's length alone. Each bin feeds at most two bands, so this does 461
        products per frame where the dense product did 15 360.
        """
        products = np.take(magnitude, self.gather, axis=1)
        products *= self.gather_weights
        sums = np.add.reduceat(products, self.offsets, axis=1)
        if self.bands.size == self.params.mel_bands:
            return sums
        out = np.zeros((magnitude.shape[0], self.params.mel_bands), dtype=np.float32)
        out[:, self.bands] = sums
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
