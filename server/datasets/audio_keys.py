"""Where a dataset audio file's blobs live: the upload and what processing derives from it sit
side by side under one folder of the team's namespace, named by ids only (never by the
client's file name), so removing a file is removing a known, short list of keys."""

from __future__ import annotations

from server.storage import team_key

__all__ = [
    "EMBEDDINGS_NAME",
    "FEATURES_NAME",
    "NORMALISED_NAME",
    "all_keys",
    "derived_key",
    "upload_key",
]

UPLOAD_NAME = "upload"
NORMALISED_NAME = "audio-16k-mono.wav"  # 16-bit PCM WAV, 16 kHz mono
FEATURES_NAME = "log-mel.npy"  # float32 [frames, mel bands], one frame per 10 ms
EMBEDDINGS_NAME = "embeddings.npy"  # float32 [windows, 1024], a 0.96 s window every 0.48 s


def upload_key(team: str, dataset_id: str, audio_id: str) -> str:
    return team_key(team, f"datasets/{dataset_id}/audio/{audio_id}/{UPLOAD_NAME}")


def derived_key(upload: str, name: str) -> str:
    """The key of ``name`` next to the upload whose key is ``upload``."""
    return upload.rsplit("/", 1)[0] + "/" + name


def all_keys(upload: str) -> tuple[str, ...]:
    names = (NORMALISED_NAME, FEATURES_NAME, EMBEDDINGS_NAME)
    return (upload, *(derived_key(upload, name) for name in names))
