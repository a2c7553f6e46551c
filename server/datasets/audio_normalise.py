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


class Normaliser:
    def __init__(
        self, fmt: AudioFormat, limits: DecodeLimits, work_dir: Path, embed: Embed | None = None
    ) -> None:
        self._fmt = fmt
        self._limits = limits
        self._dir = Path(tempfile.mkdtemp(prefix="audio-", dir=work_dir))
        self._decoder = StreamDecoder(fmt, limits)
        self._frontend = StreamingLogMel(FRONTEND)
        self._wav = sf.SoundFile(
            self._dir / "audio.wav",
            "w",
            samplerate=FRONTEND.sample_rate_hz,
            channels=1,
            subtype="PCM_16",
            format="WAV",
        )
        self._features = _NpyFile(self._dir / "log-mel.npy", FRONTEND.mel_bands)
        self._embed = embed
        self._embeddings = _NpyFile(self._dir / "embeddings.npy", EMBEDDING_DIMS)
        self._windower = PatchWindower(FRONTEND.hop_frames(EMBEDDING_HOP_S), FRONTEND)
        self._hop_samples = FRONTEND.hop_frames(EMBEDDING_HOP_S) * FRONTEND.stft_hop_samples
        self._patches: list[npt.NDArray[np.float32]] = []
        self._samples = 0

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
        self._wav.close()
        frames = self._features.rows
        features = self._features.finish()
        embeddings = None
        if self._embed is not None:
            self._pad_tail()
            self._run_embeddings(force=True)
            embeddings = self._embeddings.finish()
        else:
            self._embeddings.close()
        return Normalised(self._dir / "audio.wav", features, embeddings, self._samples, frames)

    def discard(self) -> None:
        """Remove the temporary files, whatever state the normaliser is in."""
        self._wav.close()
        self._features.close()
        self._embeddings.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _push(self, samples: npt.NDArray[np.float32]) -> None:
        if not samples.shape[0]:
            return
        self._samples += int(samples.shape[0])
        self._wav.write(samples)
        frames = self._frontend.push(samples)
        self._features.write(frames)
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
            self._embeddings.write(self._embed(batch))

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
