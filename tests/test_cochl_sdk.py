"""Cochl's own Python SDK (PyPI ``cochl`` 1.0.13), unchanged, against a real tympan server.

The SDK uploads a file session in chunks of 5,000,000 bytes, so files over 5 MB send at least
two full-size chunks. The files are made here (espeak-ng speech, looped, at 44.1 kHz stereo)
and encoded with PyAV: MP3 by LAME, OGG by FFmpeg's Vorbis encoder, WAV by libsndfile.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import av
import numpy as np
import pytest
import soundfile as sf

from tests.conftest import SAMPLE_RATE_HZ, make_key
from tests.serverproc import ServerProcess

cochl_sense = pytest.importorskip("cochl.sense")

SDK_CHUNK_BYTES = 5_000_000
RATE_HZ = 44_100
WINDOW_S = 0.975
HOP_S = 0.5  # the SDK asks for no hop: tympan's default
# Seconds of 44.1 kHz stereo audio that make a file of a little over 5 MB in each format.
SECONDS = {"wav": 32.0, "mp3": 135.0, "ogg": 165.0}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    process = ServerProcess(tmp_path_factory.mktemp("sdk") / "var")
    key = make_key(process.data_dir, "sdk")
    process.start()
    try:
        process.wait_ready()
        yield process.url + "/api/v1", key  # the base the README gives Cochl clients
    finally:
        process.kill()


def _stereo_44k(speech_16k: np.ndarray, seconds: float) -> np.ndarray:
    """Speech looped to ``seconds``, resampled to 44.1 kHz, on both channels."""
    needed = int(seconds * SAMPLE_RATE_HZ) + 1
    looped = np.tile(speech_16k, math.ceil(needed / len(speech_16k)))[:needed]
    t = np.arange(int(seconds * RATE_HZ)) / RATE_HZ
    mono = np.interp(t, np.arange(needed) / SAMPLE_RATE_HZ, looped).astype(np.float32)
    return np.stack([mono, 0.8 * mono], axis=1)


def _encode(samples: np.ndarray, container: str, codec: str, bit_rate: int | None) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as output:
        stream = cast(av.AudioStream, output.add_stream(codec, rate=RATE_HZ, layout="stereo"))
        if bit_rate:
            stream.bit_rate = bit_rate
        if codec == "vorbis":
            stream.codec_context.options = {"strict": "-2"}  # FFmpeg's encoder is experimental
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples.T), format="fltp", layout="stereo"
        )
        frame.sample_rate = RATE_HZ
        frame.pts = 0
        resampler = av.AudioResampler(
            format="fltp", layout="stereo", rate=RATE_HZ, frame_size=stream.codec_context.frame_size
        )
        for piece in [*resampler.resample(frame), *resampler.resample(None)]:
            output.mux(stream.encode(piece))
        output.mux(stream.encode(None))
    return buffer.getvalue()


@pytest.fixture(scope="module", params=["wav", "mp3", "ogg"])
def audio_file(
    request: pytest.FixtureRequest,
    speech_16k: np.ndarray,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, float]:
    fmt = str(request.param)
    seconds = SECONDS[fmt]
    samples = _stereo_44k(speech_16k, seconds)
    path = tmp_path_factory.mktemp("sdk-files") / f"speech.{fmt}"
    if fmt == "wav":
        sf.write(path, samples, RATE_HZ, subtype="PCM_16")
    elif fmt == "mp3":
        path.write_bytes(_encode(samples, "mp3", "libmp3lame", 320_000))
    else:
        # Vorbis has no bit-rate knob here and packs clean speech into ~15 kB/s: a hiss under
        # the speech (as a room would add) brings it to a few minutes per 5 MB instead of six.
        hiss = np.random.default_rng(13).standard_normal(samples.shape).astype(np.float32)
        path.write_bytes(_encode(samples + 0.02 * hiss, "ogg", "vorbis", None))
    assert path.stat().st_size > SDK_CHUNK_BYTES, (fmt, path.stat().st_size)
    return path, seconds


def _sdk(server: tuple[str, str], **config: Any) -> Any:
    host, key = server
    return cochl_sense.Client(key, api_config=cochl_sense.APIConfig(host=host, **config))


def _windows_with(result: Any, tag: str) -> int:
    return sum(
        any(sound.name == tag for sound in window.sound_tags)
        for window in result.events.window_results
    )


def test_sdk_predicts_a_file_of_several_chunks(
    server: tuple[str, str], audio_file: tuple[Path, float]
) -> None:
    path, seconds = audio_file
    scale = cochl_sense.SensitivityScale
    config = cochl_sense.APIConfig(
        host=server[0],
        sensitivity=cochl_sense.SensitivityConfig(scale.MEDIUM, {"Speech": scale.HIGH}),
        default_interval_margin=1,
        tag_interval_margin={"Speech": 2},
    )
    result = cochl_sense.Client(server[1], api_config=config).predict(str(path))

    windows = result.events.window_results
    expected = 1 + math.ceil((seconds - WINDOW_S) / HOP_S)
    assert abs(len(windows) - expected) <= 2, (len(windows), expected)  # codec padding
    assert [w.start_time for w in windows[:3]] == [0.0, 0.5, 1.0]
    assert _windows_with(result, "Speech") > len(windows) // 2

    as_dict = result.events.to_dict(config)
    assert as_dict["session_id"] == result.events.session_id
    first = as_dict["window_results"][0]
    assert set(first) == {"start_time", "end_time", "sound_tags"}
    assert first["end_time"] == pytest.approx(WINDOW_S)
    assert all({"name", "probability"} == set(tag) for tag in first["sound_tags"])

    summary = result.events_summarized(config)
    lines = [line for line in summary.splitlines() if line.strip()]
    assert any("Speech" in line for line in lines), summary
    assert len(lines) < len(windows)  # margins merge neighbouring windows into intervals


def test_sdk_sensitivity_moves_a_tag(
    server: tuple[str, str], audio_file: tuple[Path, float]
) -> None:
    path, _ = audio_file
    if path.suffix != ".wav":
        pytest.skip("one format is enough to compare sensitivities")
    scale = cochl_sense.SensitivityScale
    counts = []
    for speech in (scale.VERY_HIGH, scale.MEDIUM, scale.VERY_LOW):
        sensitivity = cochl_sense.SensitivityConfig(scale.MEDIUM, {"Speech": speech})
        result = _sdk(server, sensitivity=sensitivity).predict(str(path))
        counts.append(_windows_with(result, "Speech"))
    assert counts[0] >= counts[1] >= counts[2], counts
    assert counts[0] > counts[2], counts


def test_sdk_lists_official_tags(server: tuple[str, str]) -> None:
    tags = _sdk(server).get_official_tags()
    names = {tag.name for tag in tags}
    assert {"Speech", "Others"} <= names and "Silence" not in names
