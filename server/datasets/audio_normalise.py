"""One upload turned into training material, block by block: 16 kHz mono 16-bit WAV, the
model frontend's log-mel frames (10 ms each, float32 ``[frames, mel bands]`` as ``.npy``) and,
when set-up prepared the embedding graph, YAMNet's 1024-d embedding of each 0.96 s window every
0.48 s (float32 ``[windows, 1024]``; the last window zero-padded, as YAMNet pads).

Synchronous and stateful, like a session's ``AudioPipeline``: the processor feeds it chunks in
its own low-priority thread. Both outputs go to temporary files as they grow (a four-hour
recording is 460 MB of WAV and 370 MB of frames), never into memory whole.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

from models.yamnet.embedding_meta import EMBEDDING_DIMS, EMBEDDING_HOP_S
from models.yamnet.frontend import PatchWindower, StreamingLogMel
from models.yamnet.spec import FRONTEND
from server.audio import AudioFormat, DecodeLimits, StreamDecoder, decode_file

__all__ = ["Embed", "Normalised", "Normaliser"]

_FILE_BLOCK_SAMPLES = 15 * FRONTEND.sample_rate_hz
_EMBED_BATCH_WINDOWS = 32  # patches gathered before one model run

# Float log-mel patches [n, 96, 64] -> embeddings [n, 1024] (``EmbeddingRunner.run``).
Embed = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]


class _NpyFile:
    """A float32 ``.npy`` of rows whose count is known only at the end: rows go to a raw file
    as they come, the header is written before them when finished."""

    def __init__(self, path: Path, width: int) -> None:
        self.path = path
        self._raw_path = path.with_suffix(".raw")
        self._raw = self._raw_path.open("wb")
        self._width = width
        self.rows = 0

    def write(self, rows: npt.NDArray[np.float32]) -> None:
        if rows.shape[0]:
            self.rows += int(rows.shape[0])
            self._raw.write(np.ascontiguousarray(rows, dtype="<f4").tobytes())

    def finish(self) -> Path:
        self._raw.close()
        header = {"descr": "<f4", "fortran_order": False, "shape": (self.rows, self._width)}
        with self.path.open("wb") as out, self._raw_path.open("rb") as raw:
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(raw, out)
        self._raw_path.unlink()
        return self.path

    def close(self) -> None:
        self._raw.close()


@dataclass(frozen=True)
class Normalised:
    wav_path: Path
    features_path: Path
    embeddings_path: Path | None
    samples: int
    frames: int

    @property
    def duration_ms(self) -> int:
        return self.samples * 1000 // FRONTEND.sample_rate_hz


class _Outputs:
    """The temporary files of one normalisation, opened by the first write."""

    def __init__(self, work_dir: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="audio-", dir=work_dir))
        self.wav_path = self.dir / "audio.wav"
        self.wav = sf.SoundFile(
            self.wav_path,
            "w",
            samplerate=FRONTEND.sample_rate_hz,
            channels=1,
            subtype="PCM_16",
            format="WAV",
        )
        self.features = _NpyFile(self.dir / "log-mel.npy", FRONTEND.mel_bands)
        self.embeddings = _NpyFile(self.dir / "embeddings.npy", EMBEDDING_DIMS)

    def close(self) -> None:
        self.wav.close()
        self.features.close()
        self.embeddings.close()


class Normaliser:
    """Made on the event loop (it opens nothing), then used from one thread at a time: the
    processor's. ``discard`` is queued behind any call still running there."""

    def __init__(
        self, fmt: AudioFormat, limits: DecodeLimits, work_dir: Path, embed: Embed | None = None
    ) -> None:
        self._fmt = fmt
        self._limits = limits
        self._work_dir = work_dir
        self._out: _Outputs | None = None
        self._decoder = StreamDecoder(fmt, limits)
        self._frontend = StreamingLogMel(FRONTEND)
        self._embed = embed
        self._windower = PatchWindower(FRONTEND.hop_frames(EMBEDDING_HOP_S), FRONTEND)
        self._hop_samples = FRONTEND.hop_frames(EMBEDDING_HOP_S) * FRONTEND.stft_hop_samples
        self._patches: list[npt.NDArray[np.float32]] = []
        self._samples = 0

    def _outputs(self) -> _Outputs:
        if self._out is None:
            self._out = _Outputs(self._work_dir)
        return self._out

    def feed_chunk(self, data: bytes) -> None:
        """Decode one chunk of a streamable format (raises DecodeError, AudioLimitError)."""
        self._push(self._decoder.decode_chunk(data))

    def feed_file(self, data: bytes) -> None:
        """A whole file whose index may be at its end (MP4), decoded in one call."""
        samples = decode_file(self._fmt, data, self._limits)
        for start in range(0, samples.shape[0], _FILE_BLOCK_SAMPLES):
            self._push(samples[start : start + _FILE_BLOCK_SAMPLES])

    def finish(self, streamed: bool) -> Normalised:
        if streamed:
            self._push(self._decoder.flush())
        out = self._outputs()
        out.wav.close()
        frames = out.features.rows
        features = out.features.finish()
        embeddings = None
        if self._embed is not None:
            self._pad_tail()
            self._run_embeddings(force=True)
            embeddings = out.embeddings.finish()
        else:
            out.embeddings.close()
        return Normalised(out.wav_path, features, embeddings, self._samples, frames)

    def discard(self) -> None:
        """Remove the temporary files, whatever state the normaliser is in."""
        if self._out is not None:
            self._out.close()
            shutil.rmtree(self._out.dir, ignore_errors=True)

    def _push(self, samples: npt.NDArray[np.float32]) -> None:
        if not samples.shape[0]:
            return
        out = self._outputs()
        self._samples += int(samples.shape[0])
        out.wav.write(samples)
        frames = self._frontend.push(samples)
        out.features.write(frames)
        self._window(frames)

    def _window(self, frames: npt.NDArray[np.float32]) -> None:
        if self._embed is None or not frames.shape[0]:
            return
        self._patches.extend(patch.frames for patch in self._windower.push(frames))
        self._run_embeddings(force=False)

    def _run_embeddings(self, force: bool) -> None:
        if self._embed is None or not self._patches:
            return
        if force or len(self._patches) >= _EMBED_BATCH_WINDOWS:
            batch = np.stack(self._patches).astype(np.float32, copy=False)
            self._patches = []
            self._outputs().embeddings.write(self._embed(batch))

    def _pad_tail(self) -> None:
        """Zero samples up to the end of the window that holds the last sample (as YAMNet pads
        a waveform to whole hops); they reach the windows only, never the WAV or features."""
        if self._samples == 0:
            return
        window = FRONTEND.patch_samples
        windows = 1 + max(0, math.ceil((self._samples - window) / self._hop_samples))
        needed = (windows - 1) * self._hop_samples + window - self._samples
        if needed > 0:
            self._window(self._frontend.push(np.zeros(needed, dtype=np.float32)))
