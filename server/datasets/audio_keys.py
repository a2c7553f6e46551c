"""Where a dataset audio file's blobs live: the upload and what processing derives from it sit
side by side under one folder of the team's namespace, named by ids only (never by the
client's file name), so removing a file is removing a known, short list of keys."""

from __future__ import annotations

from server.storage import team_key

__all__ = ["FEATURES_NAME", "NORMALISED_NAME", "all_keys", "derived_key", "upload_key"]

UPLOAD_NAME = "upload"
NORMALISED_NAME = "audio-16k-mono.wav"  # 16-bit PCM WAV, 16 kHz mono
FEATURES_NAME = "log-mel.npy"  # float32 [frames, mel bands], one frame per 10 ms


def upload_key(team: str, dataset_id: str, audio_id: str) -> str:
    return team_key(team, f"datasets/{dataset_id}/audio/{audio_id}/{UPLOAD_NAME}")


def derived_key(upload: str, name: str) -> str:
    """The key of ``name`` next to the upload whose key is ``upload``."""
    return upload.rsplit("/", 1)[0] + "/" + name


def all_keys(upload: str) -> tuple[str, ...]:
    return (upload, derived_key(upload, NORMALISED_NAME), derived_key(upload, FEATURES_NAME))
