"""Where a custom detector's ONNX file lives: under its team's namespace, named by id only."""

from __future__ import annotations

from server.storage import team_key

__all__ = ["MODEL_FILE_NAME", "model_key"]

MODEL_FILE_NAME = "head.onnx"


def model_key(team: str, model_id: str) -> str:
    return team_key(team, f"models/{model_id}/{MODEL_FILE_NAME}")
