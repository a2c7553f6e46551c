"""Local audio for the client commands: what a file is, how long it lasts, and the 16 kHz
s16le PCM that ``tympan stream`` sends (from a file, stdin or the microphone).

PyAV is imported only where a file must be probed or decoded here: ``analyze`` uploads files
as they are and needs it only to estimate their duration, so it still works without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any

from protocol.cli_errors import LocalAudioError

__all__ = [
    "CONTENT_TYPES",
    "STREAM_CHUNK_BYTES",
    "STREAM_CONTENT_TYPE",
    "STREAM_RATE_HZ",
    "STREAM_SAMPLE_BYTES",
    "decoded_pcm",
    "file_chunks",
    "guess_content_type",
    "microphone",
    "off_loop",
    "paced",
    "pcm_duration_s",
    "probe_duration_s",
    "stdin_pcm",
]

FILE_CHUNK_BYTES = 1024 * 1024
STREAM_RATE_HZ = 16_000
STREAM_CHUNK_S = 0.5
STREAM_SAMPLE_BYTES = 2
STREAM_CHUNK_BYTES = int(STREAM_RATE_HZ * STREAM_CHUNK_S) * STREAM_SAMPLE_BYTES
STREAM_CONTENT_TYPE = f"audio/x-raw; rate={STREAM_RATE_HZ}; format=s16le; channels=1"
_AV_TIME_BASE = 1_000_000  # av.time_base: container durations are in microseconds

CONTENT_TYPES = {
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


def guess_content_type(path: Path) -> str | None:
    """The upload's content type from the file name's extension; None when unknown."""
    return CONTENT_TYPES.get(path.suffix.lower())


def file_chunks(path: Path, chunk_bytes: int = FILE_CHUNK_BYTES) -> Iterator[bytes]:
    with path.open("rb") as audio:
        while chunk := audio.read(chunk_bytes):
            yield chunk


def probe_duration_s(path: Path) -> float | None:
    """The duration a file's header declares (blocking; no decoding), or None when it cannot
    be told here: PyAV missing, a format without one, or a file PyAV cannot open. Only an
    estimate for progress and the summary; the server decodes the file itself."""
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(str(path)) as container:
            if container.duration is not None and container.duration > 0:
                return float(container.duration) / _AV_TIME_BASE
            for stream in container.streams.audio:
                if stream.duration and stream.time_base:
                    return float(stream.duration * stream.time_base)
    except (av.FFmpegError, OSError, ValueError):
        return None
    return None


def pcm_duration_s(n_bytes: int) -> float:
    """Seconds of audio in ``n_bytes`` of the stream's PCM."""
    return n_bytes / (STREAM_RATE_HZ * STREAM_SAMPLE_BYTES)


def decoded_pcm(path: Path) -> Iterator[bytes]:
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


def stdin_pcm(stdin: IO[bytes]) -> Iterator[bytes]:
    while chunk := stdin.read(STREAM_CHUNK_BYTES):
        yield chunk


async def off_loop(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Pull a blocking iterator (decoder, pipe) in a thread, one chunk at a time."""
    while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
        yield chunk


async def paced(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Release each chunk when its audio would have been recorded live."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent_s = 0.0
    async for chunk in chunks:
        sent_s += pcm_duration_s(len(chunk))
        delay_s = started + sent_s - loop.time()
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        yield chunk


async def microphone(sounddevice: Any) -> AsyncIterator[bytes]:
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
