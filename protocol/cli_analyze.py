"""``tympan analyze FILE...``: each file uploaded as a file session, then its sound events (or,
with ``--windows``, its windows) printed once inference is over.

Per file, stderr gets a progress line while it runs (upload bytes, then windows done of those
expected from the file's duration; on a terminal, or with ``--progress``) and a one-line summary
when it is done. stdout gets only results: text, one CSV table, or one JSON array.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.cli_audio import CONTENT_TYPES, file_chunks, guess_content_type, probe_duration_s
from protocol.cli_errors import FAILURES, LocalAudioError, UsageError, describe
from protocol.cli_output import (
    EVENT_CSV_HEADER,
    WINDOW_CSV_HEADER,
    CsvOutput,
    event_line,
    event_rows,
    summary_line,
    window_line,
    window_rows,
)
from protocol.cli_progress import ProgressBar
from protocol.client import IDLE_POLL_S, TympanClient, Window
from protocol.events import SoundEvent
from protocol.messages import AudioType

__all__ = ["FileReport", "analyze", "expected_windows"]

EXIT_OK, EXIT_FAILED = 0, 1
_EPS = 1e-9


def expected_windows(duration_s: float, window_s: float, hop_s: float) -> int:
    """How many windows the server makes of ``duration_s`` of audio: one every hop while a
    whole window fits, and one more over the zero-padded tail when audio is left over."""
    return 1 + max(0, math.ceil((duration_s - window_s) / hop_s - _EPS))


@dataclass(frozen=True)
class FileReport:
    """One analysed file: its closed events, and its windows when they were asked for."""

    file: str
    session_id: str
    duration_s: float | None
    windows_count: int
    events: tuple[SoundEvent, ...]
    windows: tuple[Window, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "file": self.file,
            "session_id": self.session_id,
            "duration_s": self.duration_s,
        }
        if self.windows is None:
            report["events"] = [event.to_dict() for event in self.events]
        else:
            report["windows"] = [window.to_dict() for window in self.windows]
        return report


class _AnalyzeOutput:
    """stdout for ``analyze``: text as each file finishes, CSV rows likewise (one header for
    all files), or one JSON array once every file is done."""

    def __init__(self, args: argparse.Namespace, several: bool) -> None:
        self._windows: bool = args.windows
        self._json: bool = args.json
        self._several = several
        self._reports: list[dict[str, Any]] = []
        self._csv = None
        if args.csv:
            self._csv = CsvOutput(
                sys.stdout, WINDOW_CSV_HEADER if args.windows else EVENT_CSV_HEADER
            )

    def report(self, report: FileReport) -> None:
        if self._json:
            self._reports.append(report.to_dict())
        elif self._csv is not None:
            if report.windows is not None:
                self._csv.write(window_rows(report.file, report.windows))
            else:
                self._csv.write(event_rows(report.file, report.events))
        else:
            if self._several:
                print(f"== {report.file} ==")
            if report.windows is not None:
                lines = [window_line(window) for window in report.windows]
            else:
                lines = [event_line(event) for event in report.events]
            for line in lines:
                print(line)
            sys.stdout.flush()

    def failed(self, file: str, error: str) -> None:
        self._reports.append({"file": file, "error": error})

    def close(self) -> None:
        if self._json:
            json.dump(self._reports, sys.stdout, indent=2)
            print()


def _content_type(path: Path, override: str | None) -> str:
    content_type = override or guess_content_type(path)
    if content_type is None:
        known = ", ".join(sorted(CONTENT_TYPES))
        raise UsageError(f"cannot tell the audio type of {path} ({known}); pass --content-type")
    return content_type


async def analyze(client: TympanClient, args: argparse.Namespace) -> int:
    paths: list[Path] = args.files
    types = {path: _content_type(path, args.content_type) for path in paths}
    show_progress = sys.stderr.isatty() if args.progress is None else args.progress
    output = _AnalyzeOutput(args, several=len(paths) > 1)
    status = EXIT_OK
    async with client:
        for path in paths:
            bar = ProgressBar(sys.stderr, path.name) if show_progress else None
            try:
                report = await _analyze_file(client, path, types[path], args.windows, bar)
            except BrokenPipeError:
                raise
            except FAILURES as exc:
                if bar is not None:
                    bar.clear()
                print(f"error: {path}: {describe(exc)}", file=sys.stderr)
                output.failed(str(path), describe(exc))
                status = EXIT_FAILED
                continue
            if bar is not None:
                bar.clear()
            output.report(report)
            summary = summary_line(
                str(path), report.duration_s, report.windows_count, report.events
            )
            print(summary, file=sys.stderr, flush=True)
    output.close()
    return status


async def _analyze_file(
    client: TympanClient,
    path: Path,
    content_type: str,
    with_windows: bool,
    bar: ProgressBar | None,
) -> FileReport:
    size = path.stat().st_size
    if size == 0:
        raise LocalAudioError("the file is empty")
    duration_s = await asyncio.to_thread(probe_duration_s, path)
    handle = await client.create_session(
        AudioType.FILE, content_type, total_size=size, file_name=path.name
    )
    session_id = handle.session_id
    try:
        if bar is not None:
            bar.start("upload", "bytes", size)
        await client.upload(
            session_id, file_chunks(path), on_chunk=None if bar is None else bar.advance
        )
        await client.make_readonly(session_id)  # a no-op once total_size was reached
        if bar is not None:
            expected = (
                None
                if duration_s is None
                else expected_windows(duration_s, handle.window_size_s, handle.window_hop_s)
            )
            bar.start("analysis", "windows", expected)
        windows: tuple[Window, ...] | None = None
        if with_windows:
            windows = tuple([window async for window in _counted(client, session_id, bar)])
            events = [event async for event in client.iter_events(session_id, state="closed")]
            windows_count = len(windows)
        else:
            events = await _closed_events(client, session_id, bar)
            windows_count = (
                await client.status(session_id, offset=0, count=1, wait=False)
            ).page.total
        if bar is not None:
            bar.update(windows_count, windows_count)
    finally:
        with contextlib.suppress(*FAILURES):
            await client.delete(session_id, missing_ok=True)
    return FileReport(str(path), session_id, duration_s, windows_count, tuple(events), windows)


async def _counted(
    client: TympanClient, session_id: str, bar: ProgressBar | None
) -> AsyncIterator[Window]:
    async for window in client.results(session_id):
        if bar is not None:
            bar.advance(1)
        yield window


async def _closed_events(
    client: TympanClient, session_id: str, bar: ProgressBar | None
) -> list[SoundEvent]:
    """Each event of a file once (its closed entry), with the windows done on ``bar`` meanwhile."""
    watcher = None if bar is None else asyncio.create_task(_watch_windows(client, session_id, bar))
    try:
        return [event async for event in client.iter_events(session_id, state="closed")]
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def _watch_windows(client: TympanClient, session_id: str, bar: ProgressBar) -> None:
    """Follow the count of windows done (the status page's ``total``) without reading them:
    a one-window page at the end of what is done, which the server holds until more is."""
    loop = asyncio.get_running_loop()
    done = 0
    with contextlib.suppress(*FAILURES):  # only a progress display: the analysis goes on
        while True:
            started = loop.time()
            status = await client.status(session_id, offset=done, count=1)
            if status.page.total > done:
                done = status.page.total
                bar.update(done)
            elif status.page.next_token is None:
                return
            elif loop.time() - started < IDLE_POLL_S:
                await asyncio.sleep(IDLE_POLL_S)
