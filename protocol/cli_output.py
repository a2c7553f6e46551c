"""What the client commands print: event and window lines, CSV rows, the one-line summary.

Times are seconds from the start of the audio with two decimals (``12.50-18.00``), the same
numbers as in ``--json`` and ``--csv`` (which keep the server's full precision), so output of
any form can be compared with any other without converting clock times. Every formatter here
is a pure function of protocol types; ``cli`` decides where the text goes.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import IO, Any

from protocol.events import SoundEvent
from protocol.messages import SenseEvent, Tag

__all__ = [
    "EVENT_CSV_HEADER",
    "SUMMARY_TAGS",
    "WINDOW_CSV_HEADER",
    "CsvOutput",
    "event_line",
    "event_rows",
    "live_event_line",
    "summary_line",
    "window_line",
    "window_rows",
]

EVENT_CSV_HEADER = ("file", "id", "tag", "start_time", "end_time", "confidence")
WINDOW_CSV_HEADER = ("file", "start_time", "end_time", "tag", "probability")
SUMMARY_TAGS = 5
_START_CHARS = 7  # "1234.50": aligned up to almost three hours
_OPEN_GAP = " " * (_START_CHARS + 1)


def _span(event: SoundEvent) -> str:
    return f"{event.start_time:{_START_CHARS}.2f}-{event.end_time:<{_START_CHARS}.2f}"


def event_line(event: SoundEvent) -> str:
    """``  12.50-18.00    Dog  0.91``: one finished event."""
    return f"{_span(event)}  {event.tag}  {event.confidence:.2f}"


def live_event_line(event: SoundEvent) -> str:
    """One event log entry as a stream reports it: ``open`` with its start only (its end is
    not known yet), ``closed`` with its final edges.

    ``  12.50          open    Dog  0.83`` / ``  12.50-18.00    closed  Dog  0.91``
    """
    if event.state == "open":
        span = f"{event.start_time:{_START_CHARS}.2f}{_OPEN_GAP}"
    else:
        span = _span(event)
    return f"{span}  {event.state:<6}  {event.tag}  {event.confidence:.2f}"


def _tags_text(tags: Iterable[Tag]) -> str:
    return ", ".join(f"{tag.name} ({tag.probability:.2f})" for tag in tags)


def window_line(window: SenseEvent) -> str:
    """``0.0-1.0 s  Speech (0.99), Music (0.12)``: one window and every tag above threshold."""
    return f"{window.start_time:.1f}-{window.end_time:.1f} s  {_tags_text(window.tags)}"


def event_rows(file: str, events: Iterable[SoundEvent]) -> list[tuple[Any, ...]]:
    return [(file, e.id, e.tag, e.start_time, e.end_time, e.confidence) for e in events]


def window_rows(file: str, windows: Iterable[SenseEvent]) -> list[tuple[Any, ...]]:
    """One row per tag of each window; a window without tags keeps one row, its tag empty."""
    rows: list[tuple[Any, ...]] = []
    for w in windows:
        if not w.tags:
            rows.append((file, w.start_time, w.end_time, "", ""))
        rows += [(file, w.start_time, w.end_time, t.name, t.probability) for t in w.tags]
    return rows


class CsvOutput:
    """A CSV table on ``stream``: the header row first, then rows as they come."""

    def __init__(self, stream: IO[str], header: Sequence[str]) -> None:
        self._writer = csv.writer(stream, lineterminator="\n")
        self._writer.writerow(header)
        self._stream = stream

    def write(self, rows: Iterable[Sequence[Any]]) -> None:
        self._writer.writerows(rows)
        self._stream.flush()


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def summary_line(
    name: str, duration_s: float | None, windows: int, events: Sequence[SoundEvent]
) -> str:
    """``dog.wav: 12.3 s, 25 windows, 3 events (Dog 2; Speech 1)``: events counted per tag,
    most frequent first, the first few only; the duration is left out when it is not known.
    Semicolons part the tags because AudioSet names hold commas (``Chicken, rooster``)."""
    parts = [] if duration_s is None else [f"{duration_s:.1f} s"]
    parts.append(_plural(windows, "window"))
    counted = _plural(len(events), "event")
    per_tag = Counter(event.tag for event in events)
    if per_tag:
        ranked = sorted(per_tag.items(), key=lambda item: (-item[1], item[0]))
        shown = [f"{tag} {count}" for tag, count in ranked[:SUMMARY_TAGS]]
        if len(ranked) > SUMMARY_TAGS:
            shown.append(f"{len(ranked) - SUMMARY_TAGS} more tags")
        counted += " (" + "; ".join(shown) + ")"
    parts.append(counted)
    return f"{name}: " + ", ".join(parts)
