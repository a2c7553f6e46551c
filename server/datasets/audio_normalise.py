"""One upload turned into training material, block by block: 16 kHz mono 16-bit WAV and the
model frontend's log-mel frames (10 ms each, float32 ``[frames, mel bands]`` as ``.npy``).

Synchronous and stateful, like a session's ``AudioPipeline``: the processor feeds it chunks in
its own low-priority thread. Both outputs go to temporary files as they grow (a four-hour
recording is 460 MB of WAV and 370 MB of frames), never into memory whole.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

from models.yamnet.frontend import StreamingLogMel
from models.yamnet.spec import FRONTEND
from server.audio import AudioFormat, DecodeLimits, StreamDecoder, decode_file

__all__ = ["Normalised", "Normaliser"]

_FILE_BLOCK_SAMPLES = 15 * FRONTEND.sample_rate_hz


@dataclass(frozen=True)
class Normalised:
    wav_path: Path
    features_path: Path
    samples: int
    frames: int

    @property
    def duration_ms(self) -> int:
        return self.samples * 1000 // FRONTEND.sample_rate_hz


class Normaliser:
    def __init__(self, fmt: AudioFormat, limits: DecodeLimits, work_dir: Path) -> None:
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
        self._raw_frames = (self._dir / "frames.f32").open("wb")
        self._samples = 0
        self._frames = 0

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
        self._raw_frames.close()
        features = self._dir / "log-mel.npy"
        with features.open("wb") as out, (self._dir / "frames.f32").open("rb") as raw:
            header = {
                "descr": "<f4",
                "fortran_order": False,
                "shape": (self._frames, FRONTEND.mel_bands),
            }
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(raw, out)
        (self._dir / "frames.f32").unlink()
        return Normalised(self._dir / "audio.wav", features, self._samples, self._frames)

    def discard(self) -> None:
        """Remove the temporary files, whatever state the normaliser is in."""
        self._wav.close()
        self._raw_frames.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _push(self, samples: npt.NDArray[np.float32]) -> None:
        if not samples.shape[0]:
            return
        self._samples += int(samples.shape[0])
        self._wav.write(samples)
        frames = self._frontend.push(samples)
        if frames.shape[0]:
            self._frames += int(frames.shape[0])
            self._raw_frames.write(np.ascontiguousarray(frames, dtype="<f4").tobytes())
