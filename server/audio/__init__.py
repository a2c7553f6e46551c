"""Audio decoding: content types in, float32 mono 16 kHz out.

``parse_content_type`` validates a session's content type once; ``StreamDecoder`` decodes a
stream session chunk by chunk and ``decode_file`` a file session in one call.

Layout: ``formats`` (content types), ``errors``, ``limits`` (the running decode budget),
``pcm`` (vectorised sample conversion), ``raw`` and ``wav`` (numpy decoders), ``sniff`` (magic
bytes for error messages), ``container`` and ``container_stream`` (PyAV demuxers for the
compressed formats), ``resample`` (stateful libswresample to 16 kHz), ``decoder`` (the entry
points) and ``encode`` (real encoder output for tests and benchmarks).
"""

from server.audio.decoder import StreamDecoder, decode_file
from server.audio.errors import AudioLimitError, ContentTypeError, DecodeError
from server.audio.formats import (
    SUPPORTED_MIMES,
    TARGET_RATE_HZ,
    AudioFormat,
    parse_content_type,
)
from server.audio.limits import DecodeLimits
from server.audio.pcm import RAW_SAMPLE_FORMATS

__all__ = [
    "RAW_SAMPLE_FORMATS",
    "SUPPORTED_MIMES",
    "TARGET_RATE_HZ",
    "AudioFormat",
    "AudioLimitError",
    "ContentTypeError",
    "DecodeError",
    "DecodeLimits",
    "StreamDecoder",
    "decode_file",
    "parse_content_type",
]
