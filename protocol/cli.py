"""``tympan analyze`` and ``tympan stream``: the client half of the command line.

``analyze`` uploads whole files as file sessions and prints their windows once inference is
over; ``stream`` sends 16 kHz s16le PCM in half-second chunks as a live stream session and prints
windows as they arrive. Both talk to a server through ``protocol.client`` only, with ``--url`` and
``--api-key`` falling back to ``TYMPAN_URL`` and ``TYMPAN_API_KEY``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from protocol.client import (
    DEFAULT_URL,
    MalformedResponse,
    SessionFailed,
    TransportError,
    TympanClient,
    Window,
)
from protocol.errors import ApiError
from protocol.messages import AudioType, Tag

__all__ = [
    "CLIENT_COMMANDS",
    "Segment",
    "add_client_commands",
    "guess_content_type",
    "run_client_command",
    "summarize",
]

CLIENT_COMMANDS = ("analyze", "stream")
ENV_URL = "TYMPAN_URL"
ENV_API_KEY = "TYMPAN_API_KEY"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

FILE_CHUNK_BYTES = 1024 * 1024
STREAM_RATE_HZ = 16_000
STREAM_CHUNK_S = 0.5
STREAM_SAMPLE_BYTES = 2
STREAM_CHUNK_BYTES = int(STREAM_RATE_HZ * STREAM_CHUNK_S) * STREAM_SAMPLE_BYTES
STREAM_CONTENT_TYPE = f"audio/x-raw; rate={STREAM_RATE_HZ}; format=s16le; channels=1"
_PROGRESS_BAR_CHARS = 30

_CONTENT_TYPES = {
    ".wav": "audio/wav",
    ".wave": "audio/wav",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".flac": "audio/flac",
    ".webm": "audio/webm",
    ".aac": "audio/aac",
    ".m4a": "audio/mp4",
    ".mp4": "audio/mp4",
}


class UsageError(Exception):
    """A problem with the command line itself (exit status 2)."""


class LocalAudioError(Exception):
    """A local file that cannot be sent: empty, or not decodable here."""


_FAILURES = (
    ApiError,
    TransportError,
    MalformedResponse,
    SessionFailed,
    LocalAudioError,
    OSError,
)


@dataclass(frozen=True)
class Segment:
    """Consecutive windows sharing a top tag, merged; ``probability`` is the highest one."""

    start_time: float
    end_time: float
    tag: str
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_time": self.start_time,
            "end_time": self.end_time,
            "tag": self.tag,
            "probability": self.probability,
        }


def guess_content_type(path: Path) -> str:
    content_type = _CONTENT_TYPES.get(path.suffix.lower())
    if content_type is None:
        known = ", ".join(sorted(_CONTENT_TYPES))
        raise UsageError(f"cannot tell the audio type of {path} ({known}); pass --content-type")
    return content_type


def summarize(windows: Iterable[Window]) -> list[Segment]:
    segments: list[Segment] = []
    for window in windows:
        if not window.tags:
            continue
        top = max(window.tags, key=lambda tag: tag.probability)
        last = segments[-1] if segments else None
        if last is not None and last.tag == top.name and window.start_time <= last.end_time:
            segments[-1] = Segment(
                last.start_time,
                window.end_time,
                last.tag,
                max(last.probability, top.probability),
            )
        else:
            segments.append(Segment(window.start_time, window.end_time, top.name, top.probability))
    return segments


# -- argument parsing ------------------------------------------------------------------------


def add_client_commands(subparsers: Any) -> None:
    """Register ``analyze`` and ``stream`` on an ``add_subparsers()`` object."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"server URL (default {DEFAULT_URL}, {ENV_URL})")
    common.add_argument("--api-key", help=f"API key ({ENV_API_KEY})")
    common.add_argument(
        "--transport",
        choices=("json", "msgpack"),
        default="json",
        help="wire encoding (default json)",
    )

    analyze = subparsers.add_parser(
        "analyze", parents=[common], help="tag audio files (uploaded as file sessions)"
    )
    analyze.add_argument("files", nargs="+", type=Path, metavar="FILE")
    analyze.add_argument("--json", action="store_true", help="print machine-readable JSON")
    analyze.add_argument(
        "--summary", action="store_true", help="merge consecutive windows with the same top tag"
    )
    analyze.add_argument("--content-type", help="override the type guessed from the extension")
    analyze.set_defaults(client_command="analyze")

    stream = subparsers.add_parser(
        "stream", parents=[common], help="stream audio live and print tags as they arrive"
    )
    stream.add_argument(
        "file", nargs="?", metavar="FILE|-", help="audio file, or - for raw s16le 16 kHz mono stdin"
    )
    stream.add_argument(
        "--mic", action="store_true", help="capture the microphone (needs sounddevice)"
    )
    stream.add_argument(
        "--no-realtime", action="store_true", help="send as fast as possible, not in real time"
    )
    stream.set_defaults(client_command="stream")


def run_client_command(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    """Run ``analyze`` or ``stream``; returns the exit status (0 ok, 1 failed, 2 usage)."""
    environ = os.environ if environ is None else environ
    try:
        api_key = args.api_key or environ.get(ENV_API_KEY)
        if not api_key:
            raise UsageError(f"an API key is required: --api-key or {ENV_API_KEY}")
        client = TympanClient(
            args.url or environ.get(ENV_URL) or DEFAULT_URL, api_key, transport=args.transport
        )
        if args.client_command == "analyze":
            return asyncio.run(_analyze(client, args))
        return asyncio.run(_stream(client, args))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as Python's documentation advises.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


# -- analyze ---------------------------------------------------------------------------------


class _Progress:
    """An upload bar on stderr, drawn only for a terminal."""

    def __init__(self, name: str, total_bytes: int, stream: IO[str]) -> None:
        self._name = name
        self._total = max(total_bytes, 1)
        self._done = 0
        self._stream = stream

    def advance(self, n_bytes: int) -> None:
        self._done += n_bytes
        filled = _PROGRESS_BAR_CHARS * self._done // self._total
        bar = "#" * filled + "." * (_PROGRESS_BAR_CHARS - filled)
        mib = 1024 * 1024
        self._stream.write(
            f"\r{self._name} [{bar}] {100 * self._done // self._total:3d}% "
            f"{self._done / mib:.1f}/{self._total / mib:.1f} MiB"
        )
        self._stream.flush()

    def close(self) -> None:
        self._stream.write("\n")
        self._stream.flush()


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as audio:
        while chunk := audio.read(FILE_CHUNK_BYTES):
            yield chunk


async def _analyze_file(client: TympanClient, path: Path, content_type: str) -> dict[str, Any]:
    size = path.stat().st_size
    if size == 0:
        raise LocalAudioError("the file is empty")
    handle = await client.create_session(
        AudioType.FILE, content_type, total_size=size, file_name=path.name
    )
    try:
        progress = _Progress(path.name, size, sys.stderr) if sys.stderr.isatty() else None
        try:
            await client.upload(
                handle.session_id,
                _file_chunks(path),
                on_chunk=None if progress is None else progress.advance,
            )
        finally:
            if progress is not None:
                progress.close()
        await client.make_readonly(handle.session_id)  # a no-op once total_size was reached
        windows = [window async for window in client.results(handle.session_id)]
    finally:
        with contextlib.suppress(*_FAILURES):
            await client.delete(handle.session_id, missing_ok=True)
    return {"file": str(path), "session_id": handle.session_id, "windows": windows}


def _span(start_s: float, end_s: float) -> str:
    return f"{start_s:.1f}-{end_s:.1f} s"


def _tags_text(tags: Iterable[Tag]) -> str:
    return ", ".join(f"{tag.name} ({tag.probability:.2f})" for tag in tags)


def _window_line(window: Window) -> str:
    return f"{_span(window.start_time, window.end_time)}  {_tags_text(window.tags)}"


def _report_lines(windows: list[Window], summary: bool) -> list[str]:
    if summary:
        return [
            f"{_span(s.start_time, s.end_time)}  {s.tag} ({s.probability:.2f})"
            for s in summarize(windows)
        ]
    return [_window_line(window) for window in windows]


def _report_json(report: dict[str, Any], summary: bool) -> dict[str, Any]:
    windows: list[Window] = report.pop("windows")
    if summary:
        report["segments"] = [segment.to_dict() for segment in summarize(windows)]
    else:
        report["windows"] = [window.to_dict() for window in windows]
    return report


async def _analyze(client: TympanClient, args: argparse.Namespace) -> int:
    paths: list[Path] = args.files
    types = {path: args.content_type or guess_content_type(path) for path in paths}
    reports: list[dict[str, Any]] = []
    status = EXIT_OK
    async with client:
        for path in paths:
            try:
                report = await _analyze_file(client, path, types[path])
            except BrokenPipeError:
                raise
            except _FAILURES as exc:
                print(f"error: {path}: {_describe(exc)}", file=sys.stderr)
                reports.append({"file": str(path), "error": _describe(exc)})
                status = EXIT_FAILED
                continue
            if args.json:
                reports.append(_report_json(report, args.summary))
                continue
            if len(paths) > 1:
                print(f"== {path} ==")
            for line in _report_lines(report["windows"], args.summary):
                print(line)
            sys.stdout.flush()
    if args.json:
        json.dump(reports, sys.stdout, indent=2)
        print()
    return status


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return f"{exc.message} (HTTP {exc.status_code})"
    if isinstance(exc, SessionFailed):
        return f"the server could not process the audio: {exc.error}"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]  # without "[Errno N]" and the path
    return str(exc)


# -- stream ----------------------------------------------------------------------------------


def _decoded_pcm(path: Path) -> Iterator[bytes]:
    """Decode any file PyAV reads to 16 kHz mono s16le, in half-second chunks (blocking)."""
    import av

    resampler = av.AudioResampler(format="s16", layout="mono", rate=STREAM_RATE_HZ)
    pending = bytearray()
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise LocalAudioError(f"{path} has no audio stream")
            frames = container.decode(container.streams.audio[0])
            for frame in itertools.chain(frames, [None]):
                for out in resampler.resample(frame):
                    pending += bytes(out.planes[0])[: out.samples * STREAM_SAMPLE_BYTES]
                while len(pending) >= STREAM_CHUNK_BYTES:
                    yield bytes(pending[:STREAM_CHUNK_BYTES])
                    del pending[:STREAM_CHUNK_BYTES]
    except av.FFmpegError as exc:
        raise LocalAudioError(f"cannot decode {path}: {exc}") from exc
    if pending:
        yield bytes(pending)


def _stdin_pcm(stdin: IO[bytes]) -> Iterator[bytes]:
    while chunk := stdin.read(STREAM_CHUNK_BYTES):
        yield chunk


async def _off_loop(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Pull a blocking iterator (decoder, pipe) in a thread, one chunk at a time."""
    while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
        yield chunk


async def _paced(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Release each chunk when its audio would have been recorded live."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent_s = 0.0
    async for chunk in chunks:
        sent_s += len(chunk) / (STREAM_RATE_HZ * STREAM_SAMPLE_BYTES)
        delay_s = started + sent_s - loop.time()
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        yield chunk


async def _microphone(sounddevice: Any) -> AsyncIterator[bytes]:
    """Capture until Ctrl-C, which ends the stream cleanly instead of killing it."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def captured(data: Any, frames: int, time: Any, status: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, bytes(data))

    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGINT, queue.put_nowait, None)
    print("listening; press Ctrl-C to stop", file=sys.stderr)
    try:
        with sounddevice.RawInputStream(
            samplerate=STREAM_RATE_HZ,
            channels=1,
            dtype="int16",
            blocksize=STREAM_CHUNK_BYTES // STREAM_SAMPLE_BYTES,
            callback=captured,
        ):
            while (chunk := await queue.get()) is not None:
                yield chunk
    finally:
        with contextlib.suppress(NotImplementedError):
            loop.remove_signal_handler(signal.SIGINT)


def _stream_source(args: argparse.Namespace) -> AsyncIterator[bytes]:
    if args.mic == (args.file is not None):
        raise UsageError("stream needs exactly one source: FILE, - (stdin) or --mic")
    if args.mic:
        try:
            import sounddevice
        except ImportError:
            raise UsageError(
                "--mic needs the optional sounddevice package: pip install 'tympan[mic]'"
            ) from None
        return _microphone(sounddevice)
    if args.file == "-":
        source = _off_loop(_stdin_pcm(sys.stdin.buffer))
    else:
        path = Path(args.file)
        if not path.is_file():
            raise UsageError(f"{path} is not a file")
        source = _off_loop(_decoded_pcm(path))
    return source if args.no_realtime else _paced(source)


async def _stream(client: TympanClient, args: argparse.Namespace) -> int:
    source = _stream_source(args)
    async with client:
        try:
            handle = await client.create_session(AudioType.STREAM, STREAM_CONTENT_TYPE)
        except _FAILURES as exc:
            print(f"error: {_describe(exc)}", file=sys.stderr)
            return EXIT_FAILED
        session_id = handle.session_id
        sending = asyncio.Event()

        async def send() -> None:
            await client.upload(session_id, source, on_chunk=lambda _: sending.set())
            sending.set()
            await client.make_readonly(session_id)

        async def show() -> None:
            await sending.wait()  # no window can exist before the first chunk is in
            async for window in client.results(session_id):
                print(_window_line(window), flush=True)

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(send())
                group.create_task(show())
        except ExceptionGroup as failures:
            first = failures.exceptions[0]
            if isinstance(first, UsageError | BrokenPipeError):
                raise first from None
            if not isinstance(first, _FAILURES):
                raise
            print(f"error: {_describe(first)}", file=sys.stderr)
            return EXIT_FAILED
        finally:
            with contextlib.suppress(*_FAILURES):
                await client.delete(session_id, missing_ok=True)
    return EXIT_OK
