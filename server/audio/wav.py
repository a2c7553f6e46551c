"""WAV (RIFF) header parsing and a decoder for WAV files and WAV streams.

The header is read with ``struct`` and the samples with the vectorised PCM converter, which is
much faster than a general-purpose decoder for the one format mic clients send most.

Stream rules, in order:

* a chunk that begins with a ``RIFF``/``RF64`` ... ``WAVE`` header starts a new WAV (clients that
  wrap every chunk in its own header); a header may itself be split across chunks;
* the header's declared data size is counted down across chunks; placeholder sizes that
  streaming writers use (0, 0xFFFFFFFF, RF64) mean "until the end of the stream";
* after the declared data, a trailing RIFF sub-chunk of a known kind (``LIST``, ``id3 ``...) is
  skipped; anything else is headerless continuation: raw PCM in the format of the last header,
  which is what many microphone clients send after a single leading header;
* a sample frame split across chunks is carried over; an incomplete frame at the very end (a
  truncated writer) is dropped, because the header already fixed the format.

A file is the same with one header: everything after its declared data is ignored.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from server.audio.errors import DecodeError
from server.audio.formats import MAX_CHANNELS, MAX_RAW_RATE_HZ, MIN_RAW_RATE_HZ
from server.audio.limits import DecodeBudget
from server.audio.pcm import RAW_SAMPLE_FORMATS, PcmCarry, SampleFormat, pcm_to_mono
from server.audio.resample import RateConverter
from server.audio.sniff import describe_head

__all__ = ["WavDecoder", "WavHeader", "parse_wav_header"]

_RIFF_MAGICS = (b"RIFF", b"RF64")
_RIFX_MAGIC = b"RIFX"
_WAVE_ID = b"WAVE"
_RIFF_HEADER_BYTES = 12
_CHUNK_HEADER_BYTES = 8
_FMT_MIN_BYTES = 16
_FMT_EXTENSIBLE_MIN_BYTES = 40
_SUBFORMAT_OFFSET = 24
_TAG_PCM = 0x0001
_TAG_FLOAT = 0x0003
_TAG_EXTENSIBLE = 0xFFFE
_SIZE_PLACEHOLDERS = (0, 0xFFFFFFFF)
_MAX_HEADER_BYTES = 1 << 20
_TRAILING_CHUNK_IDS = frozenset(
    (b"LIST", b"id3 ", b"ID3 ", b"bext", b"cue ", b"smpl", b"inst", b"PEAK", b"fact", b"JUNK",
     b"acid", b"_PMX", b"iXML", b"umid", b"cart", b"afsp", b"DISP", b"labl", b"note")
)  # fmt: skip
_EMPTY = np.zeros(0, np.float32)


@dataclass(frozen=True)
class WavHeader:
    """What a WAV header says about the PCM that follows it."""

    sample_format: SampleFormat
    channels: int
    sample_rate_hz: int
    data_offset: int
    data_bytes: int | None  # None: placeholder size, data runs to the end of the stream

    @property
    def frame_bytes(self) -> int:
        """Bytes per sample frame (one sample of every channel)."""
        return self.sample_format.bytes_per_sample * self.channels


def starts_wav_header(data: bytes | memoryview) -> bool:
    """True when ``data`` begins with a RIFF/RF64 WAVE header (or could, being shorter)."""
    head = bytes(data[:_RIFF_HEADER_BYTES])
    magic_ok = any(magic.startswith(head[:4]) for magic in _RIFF_MAGICS)
    return magic_ok and _WAVE_ID.startswith(head[8:12])


def _sample_format(tag: int, bits: int, width_bytes: int) -> SampleFormat:
    if tag == _TAG_PCM and width_bytes == 1:
        return RAW_SAMPLE_FORMATS["u8"]
    if tag == _TAG_PCM and width_bytes in (2, 3, 4):
        return RAW_SAMPLE_FORMATS[f"s{width_bytes * 8}le"]
    if tag == _TAG_FLOAT and width_bytes in (4, 8):
        return RAW_SAMPLE_FORMATS[f"f{width_bytes * 8}le"]
    raise DecodeError(
        f"WAV encoding tag 0x{tag:04x} with {bits}-bit samples is not supported; "
        "send 8/16/24/32-bit integer PCM or 32/64-bit float WAV"
    )


def _parse_fmt(body: bytes) -> tuple[SampleFormat, int, int]:
    if len(body) < _FMT_MIN_BYTES:
        raise DecodeError(f"WAV fmt chunk is {len(body)} bytes; expected at least 16")
    tag, channels, rate_hz, _, block_align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == _TAG_EXTENSIBLE and len(body) >= _FMT_EXTENSIBLE_MIN_BYTES:
        (tag,) = struct.unpack_from("<H", body, _SUBFORMAT_OFFSET)
    if not 1 <= channels <= MAX_CHANNELS:
        raise DecodeError(f"WAV has {channels} channels; supported: 1..{MAX_CHANNELS}")
    if not MIN_RAW_RATE_HZ <= rate_hz <= MAX_RAW_RATE_HZ:
        raise DecodeError(
            f"WAV header has a sample rate of {rate_hz} Hz; supported: "
            f"{MIN_RAW_RATE_HZ}..{MAX_RAW_RATE_HZ} Hz"
        )
    if block_align == 0 or block_align % channels:
        raise DecodeError(f"WAV block align {block_align} does not fit {channels} channels")
    return _sample_format(tag, bits, block_align // channels), channels, rate_hz


def parse_wav_header(data: bytes | bytearray | memoryview) -> WavHeader | None:
    """Parse a WAV header at the start of ``data``.

    Returns None while ``data`` is only a prefix of a header; raises ``DecodeError`` when it is
    not a usable WAV header.
    """
    head = bytes(data[:_RIFF_HEADER_BYTES])
    if head.startswith(_RIFX_MAGIC):
        raise DecodeError("big-endian RIFX WAV is not supported; send little-endian RIFF WAV")
    if not starts_wav_header(head):
        raise DecodeError(
            f"{describe_head(head)}, but the session says audio/wav: "
            "expected data starting with a RIFF/WAVE header"
        )
    if len(head) < _RIFF_HEADER_BYTES:
        return None
    is_rf64 = head.startswith(b"RF64")
    fmt: tuple[SampleFormat, int, int] | None = None
    pos = _RIFF_HEADER_BYTES
    while pos + _CHUNK_HEADER_BYTES <= len(data):
        chunk_id = bytes(data[pos : pos + 4])
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body_start = pos + _CHUNK_HEADER_BYTES
        if chunk_id == b"data":
            if fmt is None:
                raise DecodeError("WAV data chunk comes before its fmt chunk")
            sample_format, channels, rate_hz = fmt
            data_bytes = None if is_rf64 or size in _SIZE_PLACEHOLDERS else size
            return WavHeader(sample_format, channels, rate_hz, body_start, data_bytes)
        if body_start + size > len(data):
            break
        if chunk_id == b"fmt ":
            fmt = _parse_fmt(bytes(data[body_start : body_start + size]))
        pos = body_start + size + (size & 1)
    if len(data) > _MAX_HEADER_BYTES:
        raise DecodeError("no WAV data chunk in the first 1 MiB of the header")
    return None


class WavDecoder:
    """Decodes a WAV file or stream to mono float32 at 16 kHz (see the module rules)."""

    def __init__(self, budget: DecodeBudget, *, single_file: bool) -> None:
        self._budget = budget
        self._single_file = single_file
        self._converter = RateConverter()
        self._header_buffer: bytearray | None = bytearray()
        self._header: WavHeader | None = None
        self._carry = PcmCarry(1)
        self._remaining_bytes: int | None = None
        self._skip_bytes = 0
        self._ended = False

    def _start(self, header: WavHeader) -> None:
        self._header = header
        self._carry = PcmCarry(header.frame_bytes)
        self._remaining_bytes = header.data_bytes

    def _samples(self, header: WavHeader, data: bytes | memoryview) -> np.ndarray:
        whole = self._carry.take(data)
        self._budget.charge(len(whole) // header.frame_bytes, header.sample_rate_hz)
        mono = pcm_to_mono(whole, header.sample_format, header.channels)
        return self._converter.push(mono, header.sample_rate_hz)

    def _after_data(self, view: memoryview) -> memoryview:
        """Decide what follows the declared data: a new header, a trailing chunk, or PCM."""
        if self._single_file:
            self._ended = True
            return view[len(view) :]
        if starts_wav_header(view):
            self._header_buffer = bytearray()
            return view
        if bytes(view[:4]) in _TRAILING_CHUNK_IDS and len(view) >= _CHUNK_HEADER_BYTES:
            (size,) = struct.unpack_from("<I", view, 4)
            self._skip_bytes = _CHUNK_HEADER_BYTES + size + (size & 1)
            return view
        self._remaining_bytes = None
        return view

    def decode(self, data: bytes) -> np.ndarray:
        """Decode the next chunk of the file or stream."""
        view = memoryview(data)
        if (
            not self._single_file
            and self._header_buffer is None
            and self._carry.pending_bytes == 0
            and starts_wav_header(view[:_RIFF_HEADER_BYTES])
            and len(view) >= _RIFF_HEADER_BYTES
        ):
            self._header_buffer = bytearray()
        outputs: list[np.ndarray] = []
        while len(view) and not self._ended:
            if self._skip_bytes:
                skipped = min(self._skip_bytes, len(view))
                self._skip_bytes -= skipped
                view = view[skipped:]
            elif self._header_buffer is not None:
                # Parse in place when the header starts in this chunk: no copy of a whole file.
                source = (
                    memoryview(bytes(self._header_buffer) + view) if self._header_buffer else view
                )
                header = parse_wav_header(source)
                if header is None:
                    self._header_buffer += view
                    break
                view = source[header.data_offset :]
                self._header_buffer = None
                self._start(header)
            elif self._header is None:
                raise DecodeError("WAV stream lost its header")
            elif self._remaining_bytes == 0:
                view = self._after_data(view)
            else:
                size = len(view) if self._remaining_bytes is None else self._remaining_bytes
                payload, view = view[:size], view[size:]
                if self._remaining_bytes is not None:
                    self._remaining_bytes -= len(payload)
                outputs.append(self._samples(self._header, payload))
        return np.concatenate(outputs) if outputs else _EMPTY.copy()

    def finish(self) -> np.ndarray:
        """End of file or stream: fail on a partial header, drain the resampler.

        No bytes at all is an empty recording, not an error.
        """
        if self._header is None:
            buffered = 0 if self._header_buffer is None else len(self._header_buffer)
            if not buffered:
                return _EMPTY.copy()
            raise DecodeError(f"WAV header is incomplete: only {buffered} bytes arrived")
        return self._converter.flush()
