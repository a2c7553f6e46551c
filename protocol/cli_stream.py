"""``tympan stream FILE|-|--mic``: audio sent as a live stream session, in real time unless
``--no-realtime``, and its sound events printed as they open and close (or, with ``--windows``,
each window as it arrives). ``--json`` prints one JSON object per line. stderr gets a one-line
summary at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from protocol.cli_audio import (
    STREAM_CONTENT_TYPE,
    decoded_pcm,
    microphone,
    off_loop,
    paced,
    pcm_duration_s,
    stdin_pcm,
)
from protocol.cli_errors import FAILURES, UsageError, describe
from protocol.cli_output import live_event_line, summary_line, window_line
from protocol.client import TympanClient, Window
from protocol.events import SoundEvent
from protocol.messages import AudioType

__all__ = ["stream"]

EXIT_OK, EXIT_FAILED = 0, 1


def _stream_source(args: argparse.Namespace) -> tuple[str, AsyncIterator[bytes]]:
    """The name the summary gives the source, and its PCM chunks."""
    if args.mic == (args.file is not None):
        raise UsageError("stream needs exactly one source: FILE, - (stdin) or --mic")
    if args.mic:
        try:
            import sounddevice
        except ImportError:
            raise UsageError(
                "--mic needs the optional sounddevice package: pip install 'tympan[mic]'"
            ) from None
        return "microphone", microphone(sounddevice)
    if args.file == "-":
        name, source = "stdin", off_loop(stdin_pcm(sys.stdin.buffer))
    else:
        path = Path(args.file)
        if not path.is_file():
            raise UsageError(f"{path} is not a file")
        name, source = str(path), off_loop(decoded_pcm(path))
    return name, source if args.no_realtime else paced(source)


def _print_json_line(item: Mapping[str, Any]) -> None:
    print(json.dumps(item), flush=True)


class _LiveOutput:
    """What ``stream`` prints as the session goes, and what its summary counts."""

    def __init__(self, as_json: bool) -> None:
        self._json = as_json
        self.windows_count = 0
        self.closed: list[SoundEvent] = []

    def window(self, window: Window) -> None:
        self.windows_count += 1
        if self._json:
            _print_json_line(window.to_dict())
        else:
            print(window_line(window), flush=True)

    def event(self, event: SoundEvent) -> None:
        if event.state == "closed":
            self.closed.append(event)
        if self._json:
            _print_json_line(event.to_dict())
        else:
            print(live_event_line(event), flush=True)


async def stream(client: TympanClient, args: argparse.Namespace) -> int:
    name, source = _stream_source(args)
    output = _LiveOutput(args.json)
    sent_bytes = 0
    async with client:
        try:
            handle = await client.create_session(AudioType.STREAM, STREAM_CONTENT_TYPE)
        except FAILURES as exc:
            print(f"error: {describe(exc)}", file=sys.stderr)
            return EXIT_FAILED
        session_id = handle.session_id
        sending = asyncio.Event()

        def sent(n_bytes: int) -> None:
            nonlocal sent_bytes
            sent_bytes += n_bytes
            sending.set()

        async def send() -> None:
            await client.upload(session_id, source, on_chunk=sent)
            sending.set()
            await client.make_readonly(session_id)

        async def show() -> None:
            await sending.wait()  # no window can exist before the first chunk is in
            if args.windows:
                async for window in client.results(session_id):
                    output.window(window)
            else:
                async for event in client.iter_events(session_id):
                    output.event(event)

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(send())
                group.create_task(show())
            windows_count, closed = await _stream_counts(client, session_id, output, args.windows)
        except ExceptionGroup as failures:
            return _stream_failed(failures.exceptions)
        except FAILURES as exc:
            return _stream_failed([exc])
        finally:
            with contextlib.suppress(*FAILURES):
                await client.delete(session_id, missing_ok=True)
    summary = summary_line(name, pcm_duration_s(sent_bytes), windows_count, closed)
    print(summary, file=sys.stderr, flush=True)
    return EXIT_OK


async def _stream_counts(
    client: TympanClient, session_id: str, output: _LiveOutput, with_windows: bool
) -> tuple[int, list[SoundEvent]]:
    """Windows and closed events for the summary: what was printed, and what was not read."""
    if with_windows:
        closed = [event async for event in client.iter_events(session_id, state="closed")]
        return output.windows_count, closed
    status = await client.status(session_id, offset=0, count=1, wait=False)
    return status.page.total, output.closed


def _stream_failed(failures: Sequence[BaseException]) -> int:
    first = failures[0]
    if isinstance(first, UsageError | BrokenPipeError):
        raise first from None
    if not isinstance(first, FAILURES):
        raise first
    print(f"error: {describe(first)}", file=sys.stderr)
    return EXIT_FAILED
