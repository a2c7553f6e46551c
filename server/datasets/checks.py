"""The checks an annotation passes before it is stored, each failure a sentence that names the
item (``annotations[3]``) and says why, so a client can fix a 10,000-item batch in one go."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from protocol.annotations import NewAnnotation
from protocol.errors import BadRequest
from server.datasets.repository import AudioFileRecord

__all__ = ["MAX_PROBLEMS_SHOWN", "check_annotation", "check_set_files", "refuse"]

MAX_PROBLEMS_SHOWN = 5
READY = "ready"


def _not_ready(where: str, record: AudioFileRecord) -> str:
    return (
        f"{where} {record.audio_id!r} is not ready (its status is {record.status!r}): "
        "annotate a file once its processing has finished"
    )


def check_annotation(
    where: str,
    item: NewAnnotation,
    types: set[str],
    files: Mapping[str, AudioFileRecord],
    allowed: set[str] | None,
) -> list[str]:
    """What is wrong with ``item`` (nothing: an empty list). ``allowed``: the set's own files,
    when they were given at its creation."""
    problems = []
    audio = files.get(item.audio_file_id)
    if audio is None:
        problems.append(
            f"{where}.audio_file_id {item.audio_file_id!r} is not an audio file of this dataset"
        )
    elif allowed is not None and item.audio_file_id not in allowed:
        problems.append(
            f"{where}.audio_file_id {item.audio_file_id!r} is not one of this annotation set's "
            "audio files (given at its creation)"
        )
    elif audio.status != READY:
        problems.append(_not_ready(f"{where}.audio_file_id", audio))
    if item.artifact_type not in types:
        problems.append(
            f"{where}.artifact_type {item.artifact_type!r} is not an artifact type of this "
            f"dataset (it has {', '.join(sorted(types))})"
        )
    if item.start_ms >= item.end_ms:
        problems.append(
            f"{where} has start_ms {item.start_ms} not before end_ms {item.end_ms} "
            "(an annotation covers [start_ms, end_ms))"
        )
    elif audio is not None and audio.duration_ms is not None and item.end_ms > audio.duration_ms:
        problems.append(
            f"{where}.end_ms {item.end_ms} is beyond the end of audio file "
            f"{item.audio_file_id!r} ({audio.duration_ms} ms long)"
        )
    return problems


def check_set_files(audio_ids: Sequence[str], files: Mapping[str, AudioFileRecord]) -> None:
    """A set's files given at creation: each one of the dataset's, and ready."""
    problems = []
    for index, audio_id in enumerate(audio_ids):
        audio = files.get(audio_id)
        if audio is None:
            problems.append(
                f"audio_file_ids[{index}] {audio_id!r} is not an audio file of this dataset"
            )
        elif audio.status != READY:
            problems.append(_not_ready(f"audio_file_ids[{index}]", audio))
    refuse(problems, "no annotation set was created")


def refuse(problems: Sequence[str], outcome: str) -> None:
    """A 400 listing the first problems (and how many more), if there are any."""
    if not problems:
        return
    shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
    more = len(problems) - MAX_PROBLEMS_SHOWN
    raise BadRequest(f"{outcome}: {shown}" + (f" (and {more} more)" if more > 0 else ""))
