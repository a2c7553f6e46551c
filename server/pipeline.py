"""Per-session audio pipeline: decoder -> incremental log-mel -> patches. Synchronous; the engine
runs it in an executor thread, one call at a time per session.

It lives on the session (decoder state, sample remainder, frame buffer, next window index) and
shares only immutable things (filterbank, model spec) with other sessions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from models.yamnet.frontend import Patch, PatchWindower, StreamingLogMel
from models.yamnet.spec import FRONTEND, FrontendParams
from server.audio import AudioFormat, DecodeLimits, StreamDecoder, decode_file

__all__ = ["AudioPipeline", "WindowBatch", "replay_frame_bytes", "split_batch"]

_FILE_BLOCK_SAMPLES = 15 * FRONTEND.sample_rate_hz


@dataclass(frozen=True)
class WindowBatch:
    """Consecutive windows of one session, as log-mel patches for the model."""

    first_index: int
    patches: npt.NDArray[Any]  # [n, patch_frames, mel_bands]: float32, or the model's input
    levels_dbfs: npt.NDArray[np.float64] | None = None  # per window, for the silence gate
    # With ``keep_samples``: the decoded samples this batch came from, and where the first one
    # lies in the stream (custom detectors compute their own frames from them).
    samples: npt.NDArray[np.float32] | None = None
    samples_start: int = 0

    def __len__(self) -> int:
        return int(self.patches.shape[0])


def replay_frame_bytes(fmt: AudioFormat) -> int | None:
    """Bytes per sample frame when a stream can be replayed from any chunk boundary.

    That holds for raw PCM already at the model rate: decoding carries no state but a split
    sample, and no resampler sits between bytes and samples. Such streams keep only the audio
    that the next window needs; others keep their chunks until inference is over.
    """
    if fmt.sample_format is None or fmt.sample_rate_hz != FRONTEND.sample_rate_hz:
        return None
    return fmt.raw_sample_format.bytes_per_sample * fmt.channels


class AudioPipeline:
    def __init__(
        self,
        fmt: AudioFormat,
        hop_seconds: float,
        limits: DecodeLimits,
        skip_below: int = 0,
        params: FrontendParams = FRONTEND,
        first_window: int = 0,
        first_sample: int = 0,
        prepare: Callable[[npt.NDArray[np.float32]], npt.NDArray[Any]] | None = None,
        keep_samples: bool = False,
    ) -> None:
        """``first_window``/``first_sample``: resume a replayable stream whose earlier audio was
        pruned; decoding restarts at ``first_sample`` (a sample-aligned chunk boundary at or
        before window ``first_window``'s start) and the samples before that start are dropped.
        ``prepare``: turns float32 patches into the model's input (``OnnxRunner.prepare``).
        ``keep_samples``: batches carry the decoded samples (``WindowBatch.samples``)."""
        self._fmt = fmt
        self._limits = limits
        self._params = params
        self._hop_samples = params.hop_frames(hop_seconds) * params.stft_hop_samples
        self._decoder: StreamDecoder | None = None
        self._frontend = StreamingLogMel(params)
        hop_frames = params.hop_frames(hop_seconds)
        self._windower = PatchWindower(hop_frames, params)
        self._windower.resume_at(first_window)
        start_sample = first_window * self._hop_samples
        if first_sample > start_sample:
            raise ValueError("replay starts after the window it must resume")
        self._discard = start_sample - first_sample
        self._skip_below = skip_below
        self._prepare = prepare
        self.samples_seen = start_sample
        self._keep_samples = keep_samples
        self._decoded_to = first_sample  # stream position after the last decoded sample

    # -- streams --------------------------------------------------------------------------

    def feed_chunk(self, data: bytes) -> WindowBatch:
        """Decode one stream chunk and return the windows it completes (raises DecodeError)."""
        if self._decoder is None:
            self._decoder = StreamDecoder(self._fmt, self._limits)
        return self._push(self._decoder.decode_chunk(data))

    def finish(self) -> WindowBatch:
        """End of input: drain the decoder, then zero-pad the tail so that the last partial
        window is analysed too (as YAMNet pads a waveform to whole hops)."""
        tail = self._decoder.flush() if self._decoder is not None else np.empty(0, np.float32)
        head = self._push(tail)
        return _join(head, self._pad_tail())

    # -- files ----------------------------------------------------------------------------

    def decode_file(self, data: bytes) -> npt.NDArray[np.float32]:
        """Decode a whole file (the concatenation of its chunks) to 16 kHz mono."""
        return decode_file(self._fmt, data, self._limits)

    def file_blocks(self, samples: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        """Cut decoded audio into blocks whose windows can be computed while earlier ones run."""
        return [
            samples[i : i + _FILE_BLOCK_SAMPLES]
            for i in range(0, samples.shape[0], _FILE_BLOCK_SAMPLES)
        ]

    def push_block(self, block: npt.NDArray[np.float32]) -> WindowBatch:
        """The windows a block of file audio completes."""
        return self._push(block)

    def finish_file(self) -> WindowBatch:
        """The zero-padded tail windows once all blocks are in."""
        return self._pad_tail()

    def file_windows(self, data: bytes, max_windows: int = 256) -> list[WindowBatch]:
        """All windows of a whole file at once (tests and tools; the engine streams blocks)."""
        batches = [self.push_block(b) for b in self.file_blocks(self.decode_file(data))]
        batches.append(self.finish_file())
        return [
            piece for batch in batches if len(batch) for piece in split_batch(batch, max_windows)
        ]

    # -- internals ------------------------------------------------------------------------

    def _push(self, samples: npt.NDArray[np.float32]) -> WindowBatch:
        decoded, decoded_from = samples, self._decoded_to
        self._decoded_to += int(samples.shape[0])
        if self._discard:
            dropped = min(self._discard, int(samples.shape[0]))
            samples = samples[dropped:]
            self._discard -= dropped
        self.samples_seen += int(samples.shape[0])
        frames, power = self._frontend.push_with_power(samples)
        batch = self._quantize(self._windower.push(frames, power))
        if self._keep_samples:
            batch = replace(batch, samples=decoded, samples_start=decoded_from)
        return batch

    def _pad_tail(self) -> WindowBatch:
        if self.samples_seen == 0:
            return self._quantize([])
        window = self._params.patch_samples
        total_windows = 1 + max(0, math.ceil((self.samples_seen - window) / self._hop_samples))
        needed = (total_windows - 1) * self._hop_samples + window - self.samples_seen
        if needed <= 0:
            return self._quantize([])
        frames, power = self._frontend.push_with_power(np.zeros(needed, dtype=np.float32))
        return self._quantize(self._windower.push(frames, power))

    def _quantize(self, patches: list[Patch]) -> WindowBatch:
        kept = [p for p in patches if p.index >= self._skip_below]
        if not kept:
            return WindowBatch(self._windower.next_index, _EMPTY)
        stacked = np.stack([p.frames for p in kept])
        power = np.array([p.power if p.power is not None else 0.0 for p in kept])
        levels = 10.0 * np.log10(power + _POWER_FLOOR)
        model_input: npt.NDArray[Any] = stacked.astype(np.float32, copy=False)
        if self._prepare is not None:
            model_input = self._prepare(model_input)
        return WindowBatch(kept[0].index, model_input, levels)


_EMPTY = np.empty((0, FRONTEND.patch_frames, FRONTEND.mel_bands), dtype=np.float32)


_POWER_FLOOR = 1e-12  # -120 dBFS: digital silence still has a finite level


def _join(first: WindowBatch, second: WindowBatch) -> WindowBatch:
    if not len(first):  # the padded tail carries no samples of the stream
        return replace(second, samples=first.samples, samples_start=first.samples_start)
    if not len(second):
        return first
    levels = None
    if first.levels_dbfs is not None and second.levels_dbfs is not None:
        levels = np.concatenate([first.levels_dbfs, second.levels_dbfs])
    patches = np.concatenate([first.patches, second.patches])
    return WindowBatch(first.first_index, patches, levels, first.samples, first.samples_start)


def split_batch(batch: WindowBatch, size: int) -> list[WindowBatch]:
    return [
        WindowBatch(
            batch.first_index + i,
            batch.patches[i : i + size],
            None if batch.levels_dbfs is None else batch.levels_dbfs[i : i + size],
        )
        for i in range(0, len(batch), size)
    ]
