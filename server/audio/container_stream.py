"""Incremental decoding of a compressed stream whose chunks cut frames and pages anywhere.

FFmpeg demuxers pull bytes; a session pushes them. One demuxer per session runs on its own
daemon thread and reads from a ``_BytePipe`` that blocks when it runs dry. ``decode`` appends
a chunk and waits until the demuxer has consumed it and blocks for more: at that point
everything decodable from the bytes so far has been decoded, so a chunk returns its audio
without waiting for the next one, whatever byte boundaries the client chose (Ogg pages, WebM
clusters, MP3 or ADTS frames split in two). Keeping one demuxer and decoder alive for the
session, rather than reopening a container per chunk, also keeps codec state (MDCT overlap,
Opus pre-skip, LAME gapless info) and resampler state continuous.

The thread exits when the stream is finished, fails, or the decoder is garbage collected
(a finaliser closes the pipe, which the demuxer sees as end of input).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import overload

import av
import numpy as np

from server.audio import sniff
from server.audio.container import METADATA_ERRORS, FrameSink, choose_demuxer, run_decode
from server.audio.errors import AudioLimitError, DecodeError
from server.audio.limits import DecodeBudget

__all__ = ["ContainerStreamDecoder"]

_READ_BUFFER_BYTES = 4096  # small reads keep the demuxer close to the bytes that arrived
# The demuxer is already chosen, so stream probing only adds latency: by default FFmpeg reads
# up to a second of MP3 or ADTS before returning the first frame.
_LOW_LATENCY_PROBE = {"probesize": "32", "analyzeduration": "1"}
_EMPTY = np.zeros(0, np.float32)
_MP4_STREAM_HINT = (
    "an MP4 stream must be fragmented, with its moov box before the media "
    "(as MediaRecorder writes it); send a plain .m4a as a file session instead"
)


class _BytePipe:
    """A blocking byte pipe from the session (writer) to the demuxer thread (reader)."""

    def __init__(self, on_starve: Callable[[], np.ndarray]) -> None:
        self._on_starve = on_starve
        self._cond = threading.Condition()
        self._buffer = bytearray()
        self._closed = False
        self._reader_waiting = False
        self._finished = False
        self._error: BaseException | None = None
        self._outputs: list[np.ndarray] = []

    def read(self, size: int) -> bytes:
        """Reader side, called by FFmpeg: block until bytes arrive or the writer closes.

        Before blocking, ``on_starve`` hands over audio still batched in the reader, so the
        writer's ``collect`` returns everything the bytes so far could produce.
        """
        with self._cond:
            starving = not self._buffer and not self._closed
        if starving:
            self.emit(self._on_starve())
        with self._cond:
            while not self._buffer and not self._closed:
                self._reader_waiting = True
                self._cond.notify_all()
                self._cond.wait()
            self._reader_waiting = False
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
            return data

    def emit(self, block: np.ndarray) -> None:
        """Reader side: hand decoded audio to the writer."""
        if len(block):
            with self._cond:
                self._outputs.append(block)

    def finish(self, error: BaseException | None) -> None:
        """Reader side: the demuxer thread is done, with or without an error."""
        with self._cond:
            self._finished = True
            self._error = error
            self._cond.notify_all()

    def write(self, data: bytes) -> None:
        """Writer side: append bytes and wake the reader."""
        with self._cond:
            self._buffer += data
            self._cond.notify_all()

    def close(self) -> None:
        """Writer side: no more bytes; the reader sees end of input once the buffer drains."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def collect(self) -> np.ndarray:
        """Writer side: wait until the reader is idle or done, then take its decoded audio."""
        with self._cond:
            while not self._finished and (
                self._closed or not (self._reader_waiting and not self._buffer)
            ):
                self._cond.wait()
            if self._error is not None:
                raise _detached(self._error)  # a fresh copy: the stored one keeps no traceback
            outputs, self._outputs = self._outputs, []
        if not outputs:
            return _EMPTY.copy()
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)


def _demux_worker(pipe: _BytePipe, demuxer: str, mime: str, head: bytes, sink: FrameSink) -> None:
    error: BaseException | None = None
    try:
        run_decode(
            lambda: av.open(
                pipe,
                format=demuxer,
                buffer_size=_READ_BUFFER_BYTES,
                container_options=_LOW_LATENCY_PROBE,
                metadata_errors=METADATA_ERRORS,
            ),
            mime,
            head,
            sink,
            pipe.emit,
        )
    except AudioLimitError as caught:
        error = caught
    except DecodeError as caught:
        error = DecodeError(f"{caught}; {_MP4_STREAM_HINT}") if demuxer == "mp4" else caught
    except BaseException as caught:  # handed to the session thread, never lost
        error = caught
    finally:
        # Hand over the error without its traceback: the traceback's frames hold the PyAV
        # container, whose reader holds the pipe, which would hold the error: a cycle through
        # native objects that the collector cannot free (about 22 MB per failed stream).
        pipe.finish(_detached(error))


@overload
def _detached(error: BaseException) -> BaseException: ...
@overload
def _detached(error: None) -> None: ...
def _detached(error: BaseException | None) -> BaseException | None:
    """A copy of ``error`` without a traceback (see ``_demux_worker``)."""
    if error is None:
        return None
    try:
        copy = type(error)(*error.args)
    except Exception:
        copy = DecodeError(str(error))
    return copy.with_traceback(None)


class ContainerStreamDecoder:
    """Decodes one compressed stream session incrementally (see the module docstring)."""

    def __init__(self, mime: str, budget: DecodeBudget) -> None:
        self._mime = mime
        self._budget = budget
        self._head = b""
        self._pipe: _BytePipe | None = None
        self._decoded_any = False

    def _start(self, head: bytes) -> _BytePipe:
        demuxer = choose_demuxer(self._mime, head)
        sink = FrameSink(self._budget)
        pipe = _BytePipe(sink.drain)
        thread = threading.Thread(
            target=_demux_worker,
            args=(pipe, demuxer, self._mime, head, sink),
            name=f"tympan-demux-{demuxer}",
            daemon=True,
        )
        weakref.finalize(self, pipe.close)
        thread.start()
        return pipe

    def decode(self, data: bytes) -> np.ndarray:
        """Feed the next chunk; return the audio it completed."""
        if self._pipe is None:
            self._head += data
            if len(self._head) < sniff.SNIFF_BYTES:
                return _EMPTY.copy()
            self._pipe = self._start(self._head[: sniff.SNIFF_BYTES])
            data, self._head = self._head, b""
        self._pipe.write(data)
        return self._note(self._pipe.collect())

    def _note(self, decoded: np.ndarray) -> np.ndarray:
        self._decoded_any = self._decoded_any or bool(len(decoded))
        return decoded

    def finish(self) -> np.ndarray:
        """End of stream: let the demuxer drain, then return the rest of the audio."""
        if self._pipe is None:
            if not self._head:
                return _EMPTY.copy()
            self._pipe = self._start(self._head)
            self._pipe.write(self._head)
        self._pipe.close()
        decoded = self._note(self._pipe.collect())
        if not self._decoded_any:
            raise DecodeError(f"no audio could be decoded from the {self._mime} stream")
        return decoded
