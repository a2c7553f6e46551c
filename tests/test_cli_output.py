"""What the client commands print, without a server: lines, CSV, the summary, the progress bar
(drawn on a fake terminal), and the window estimate the progress bar relies on."""

from __future__ import annotations

import csv
import io

import pytest

from protocol.cli_analyze import expected_windows
from protocol.cli_output import (
    EVENT_CSV_HEADER,
    CsvOutput,
    event_line,
    event_rows,
    live_event_line,
    summary_line,
    window_line,
    window_rows,
)
from protocol.cli_progress import ProgressBar
from protocol.events import SoundEvent
from protocol.messages import SenseEvent, Tag


def event(
    tag: str, start: float, end: float, confidence: float, state: str = "closed", id: int = 0
) -> SoundEvent:
    return SoundEvent(id, tag, start, end, confidence, state)  # type: ignore[arg-type]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True

    def screen(self) -> str:
        """The last line as a terminal shows it after carriage returns overwrote it."""
        line: list[str] = []
        for part in self.getvalue().split("\n")[-1].split("\r"):
            line[: len(part)] = part
        return "".join(line).rstrip()


def test_event_lines_align_and_keep_two_decimals() -> None:
    assert event_line(event("Dog", 12.5, 18.0, 0.913)) == "  12.50-18.00    Dog  0.91"
    assert event_line(event("Speech", 0.0, 3.5, 0.5)) == "   0.00-3.50     Speech  0.50"
    long = event_line(event("Male speech, man speaking", 1234.567, 1300.0, 0.99))
    assert long == "1234.57-1300.00  Male speech, man speaking  0.99"


def test_live_lines_show_open_with_its_start_and_closed_with_both_edges() -> None:
    opened = live_event_line(event("Dog", 12.5, 13.0, 0.83, "open"))
    closed = live_event_line(event("Dog", 12.5, 18.0, 0.91, "closed"))
    assert opened == "  12.50          open    Dog  0.83"
    assert closed == "  12.50-18.00    closed  Dog  0.91"
    assert opened.index("open") == closed.index("closed")


def test_window_line() -> None:
    window = SenseEvent(0.5, 1.475, (Tag("Speech", 0.987), Tag("Music", 0.1)))
    assert window_line(window) == "0.5-1.5 s  Speech (0.99), Music (0.10)"


def test_csv_rows_parse_back_with_full_precision() -> None:
    out = io.StringIO()
    table = CsvOutput(out, EVENT_CSV_HEADER)
    events = [event("Dog, barking", 1.234, 5.678, 0.91234, id=3), event("Speech", 0, 1, 0.5)]
    table.write(event_rows("a,b.wav", events))
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert rows[0] == {
        "file": "a,b.wav",
        "id": "3",
        "tag": "Dog, barking",
        "start_time": "1.234",
        "end_time": "5.678",
        "confidence": "0.91234",
    }
    assert len(rows) == 2


def test_a_window_without_tags_keeps_one_csv_row() -> None:
    windows = [SenseEvent(0.0, 0.975, ()), SenseEvent(0.5, 1.475, (Tag("A", 0.5), Tag("B", 0.4)))]
    assert window_rows("f", windows) == [
        ("f", 0.0, 0.975, "", ""),
        ("f", 0.5, 1.475, "A", 0.5),
        ("f", 0.5, 1.475, "B", 0.4),
    ]


def test_summary_counts_events_per_tag_most_frequent_first() -> None:
    events = [event("Speech", 0, 1, 0.9), event("Dog", 2, 3, 0.8), event("Dog", 5, 6, 0.7)]
    assert (
        summary_line("dog.wav", 12.34, 25, events)
        == "dog.wav: 12.3 s, 25 windows, 3 events (Dog 2; Speech 1)"
    )
    assert summary_line("x.wav", None, 1, []) == "x.wav: 1 window, 0 events"
    assert (
        summary_line("x.wav", 0.5, 2, events[:1]) == "x.wav: 0.5 s, 2 windows, 1 event (Speech 1)"
    )


def test_summary_names_the_most_frequent_tags_only() -> None:
    tags = ["Chicken, rooster", "Fowl", "Animal", "Animal", "Bark", "Dog", "Speech", "Music"]
    events = [event(tag, 0, 1, 0.9) for tag in tags]
    assert summary_line("farm.wav", 9.0, 18, events) == (
        "farm.wav: 9.0 s, 18 windows, 8 events "
        "(Animal 2; Bark 1; Chicken, rooster 1; Dog 1; Fowl 1; 2 more tags)"
    )


def test_progress_bar_draws_bytes_then_windows_in_place() -> None:
    terminal = Terminal()
    bar = ProgressBar(terminal, "dog.wav")
    bar.start("upload", "bytes", 3 * 1024 * 1024)
    assert terminal.screen() == "dog.wav  upload [....................]   0%  0.0/3.0 MiB"
    bar.advance(1024 * 1024)
    assert terminal.screen() == "dog.wav  upload [######..............]  33%  1.0/3.0 MiB"
    bar.advance(2 * 1024 * 1024)
    assert terminal.screen() == "dog.wav  upload [####################] 100%  3.0/3.0 MiB"

    bar.start("analysis", "windows", 25)
    bar.update(10)
    assert terminal.screen() == "dog.wav  analysis [########............]  40%  10/25 windows"
    bar.update(24)
    assert terminal.screen() == "dog.wav  analysis [###################.]  96%  24/25 windows"
    bar.update(27)  # the estimate was short: the total grows to what is done
    assert terminal.screen() == "dog.wav  analysis [####################] 100%  27/27 windows"
    assert "\n" not in terminal.getvalue(), "one line, redrawn"

    bar.clear()
    assert terminal.screen() == ""


def test_progress_without_a_total_counts_alone() -> None:
    terminal = Terminal()
    bar = ProgressBar(terminal, "stream.ogg")
    bar.start("analysis", "windows")
    bar.update(7)
    assert terminal.screen() == "stream.ogg  analysis  7 windows"
    bar.start("upload", "bytes")
    bar.advance(2048)
    assert terminal.screen() == "stream.ogg  upload  2 KiB"


def test_progress_redraws_only_when_the_line_changes() -> None:
    terminal = Terminal()
    bar = ProgressBar(terminal, "a.wav")
    bar.start("upload", "bytes", 10_000_000)
    for _ in range(100):
        bar.advance(1)  # far below one shown digit
    assert terminal.getvalue().count("\r") == 1


def test_progress_shortens_long_names_from_the_left() -> None:
    terminal = Terminal()
    bar = ProgressBar(terminal, "a-very-long-recording-name-from-the-field.wav")
    bar.start("upload", "bytes", 100)
    assert terminal.screen().startswith("…name-from-the-field.wav  upload [")


@pytest.mark.parametrize(
    ("duration_s", "windows"),
    [(0.1, 1), (0.975, 1), (0.976, 2), (1.475, 2), (1.476, 3), (10.0, 20), (10.1, 20)],
)
def test_expected_windows_follow_the_servers_padding(duration_s: float, windows: int) -> None:
    assert expected_windows(duration_s, 0.975, 0.5) == windows
