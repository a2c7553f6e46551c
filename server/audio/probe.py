"""What a recording was before decoding made it 16 kHz mono: its own sample rate and channel
count, read by PyAV from the first bytes (or the whole file where the index sits at the end).
Only informative: a file PyAV cannot probe from its head is still decoded, its numbers unknown.
"""

from __future__ import annotations

import io

import av

__all__ = ["SourceInfo", "probe_source"]

SourceInfo = tuple[int, int]  # (sample rate in Hz, channels)


def probe_source(data: bytes) -> SourceInfo | None:
    """The first audio stream's rate and channels in ``data``, or None when it cannot tell."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            for stream in container.streams.audio:
                context = stream.codec_context
                rate, channels = int(context.sample_rate or 0), int(context.channels or 0)
                if rate > 0 and channels > 0:
                    return rate, channels
    except (av.FFmpegError, ValueError, OSError, EOFError):
        return None
    return None
