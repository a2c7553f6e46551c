"""What fuzzing found, kept found: stored reproducers, one named test per bug, and a fuzz smoke.

Each bug the fuzzers (``tests/fuzz``) or the schemathesis run turned up has a test here that
states the documented behaviour (a typed error, a 400, finite audio, a freed decoder), so it
fails until the bug is fixed. ``tests/fuzz/regressions/TARGET/`` keeps the raw inputs; every one
is replayed through its target, and each target is fuzzed briefly under atheris on every run.
"""

from __future__ import annotations

import gc
import math
import os
import struct
import subprocess
import sys
import weakref
from pathlib import Path

import msgpack
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from protocol.codec import DecodeBodyError, decode_body
from protocol.errors import BadRequest
from protocol.messages import CreateSession
from server.audio import DecodeError, StreamDecoder, decode_file, parse_content_type
from tests.fuzz.run import REGRESSIONS_DIR, regression_inputs
from tests.fuzz.targets import TARGETS

REPO_ROOT = Path(__file__).resolve().parent.parent
# Reproducers of hangs and native crashes run in a subprocess, under a deadline.
SUBPROCESS_MARKS = ("timeout", "segv")
HANG_DEADLINE_S = 5.0
SMOKE_RUNS = 3000
SMOKE_SECONDS = 4
SMOKE_TIMEOUT_S = 5  # per input: a hang fails the smoke
SMOKE_WAIT_S = 90.0
RAW_STEREO_F32 = "audio/x-raw; rate=16000; format=f32le; channels=2"
HUGE_FLOAT32 = 3e38
WAVE_FORMAT_PCM = 1


def _reproducers() -> list[tuple[str, Path]]:
    return [(target, path) for target in TARGETS for path in regression_inputs(target)]


def _wav(rate_hz: int, data: bytes = b"\x00\x01" * 100) -> bytes:
    """A 16-bit mono PCM WAV whose header claims ``rate_hz``."""
    fmt = struct.pack("<HHIIHH", WAVE_FORMAT_PCM, 1, rate_hz, (rate_hz * 2) & 0xFFFFFFFF, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _replay_in_subprocess(target: str, path: Path, deadline_s: float) -> None:
    command = [sys.executable, "-c", _REPLAY_SCRIPT, target, str(path)]
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, timeout=deadline_s, capture_output=True)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{path.name} still runs after {deadline_s:g} s (a hang)")
    assert done.returncode == 0, f"{path.name}: exit {done.returncode}\n{done.stderr[-3000:]!r}"


_REPLAY_SCRIPT = """
import sys
from pathlib import Path
from tests.fuzz.targets import TARGETS
TARGETS[sys.argv[1]].function(Path(sys.argv[2]).read_bytes())
"""


# -- every stored reproducer passes its target ---------------------------------------------


@pytest.mark.parametrize(
    ("target", "path"),
    [pytest.param(t, p, id=f"{t}/{p.name}") for t, p in _reproducers()],
)
def test_stored_reproducer_passes_its_target(target: str, path: Path) -> None:
    if any(mark in path.name for mark in SUBPROCESS_MARKS):
        _replay_in_subprocess(target, path, HANG_DEADLINE_S)
    else:
        TARGETS[target].function(path.read_bytes())


def test_every_reproducer_belongs_to_a_target() -> None:
    folders = {path.name for path in REGRESSIONS_DIR.iterdir() if path.is_dir()}
    assert folders <= set(TARGETS), folders - set(TARGETS)


# -- request parsing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"total_size": math.nan},
        {"total_size": math.inf},
        {"default_sensitivity": -math.inf},
        {"tags_sensitivity": {"Speech": math.inf}},
        {"window_hop": 10**400},
    ],
    ids=["nan-total-size", "inf-total-size", "inf-sensitivity", "inf-tag", "huge-int-hop"],
)
def test_create_session_rejects_non_finite_and_huge_numbers(body: dict[str, object]) -> None:
    """Found by the create_session target: int(nan) / int(inf) / float(10**400) escaped."""
    with pytest.raises(BadRequest):
        CreateSession.from_body({"type": "stream", "content_type": "audio/wav", **body})


def test_create_session_rejects_metadata_that_is_not_json() -> None:
    """msgpack can carry bytes; ``json.dumps(metadata)`` raised TypeError (a 500)."""
    body = msgpack.unpackb(
        msgpack.packb(
            {"type": "file", "content_type": "audio/flac", "metadata": {"id": b"\x00\x01"}},
            use_bin_type=True,
        ),
        raw=False,
    )
    with pytest.raises(BadRequest):
        CreateSession.from_body(body)


def test_decode_body_rejects_deeply_nested_json() -> None:
    """json.loads raises RecursionError, which decode_body does not catch (a 500)."""
    with pytest.raises(DecodeBodyError):
        decode_body(b"[" * 100_000 + b"]" * 100_000, "application/json")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"type":"stream","content_type":"audio/wav","total_size":NaN}', "application/json"),
        (b'{"type":"stream","content_type":"audio/wav","window_hop":1' + b"0" * 400 + b"}", None),
        (b"[" * 3000 + b"]" * 3000, "application/json"),
        (
            msgpack.packb(
                {"type": "file", "content_type": "audio/wav", "metadata": {"id": b"\x00"}},
                use_bin_type=True,
            ),
            "application/msgpack",
        ),
        (
            msgpack.packb({"type": "stream", "content_type": "audio/ogg", "total_size": math.inf}),
            "application/msgpack",
        ),
    ],
    ids=["json-nan", "json-huge-int", "json-deep", "msgpack-bytes-metadata", "msgpack-inf"],
)
async def test_create_session_answers_400_not_500(
    client: TestClient, api_key: str, body: bytes, content_type: str | None
) -> None:
    headers = {"x-api-key": api_key}
    if content_type:
        headers["Content-Type"] = content_type
    response = await client.post("/api/v1/audio_sessions/", data=body, headers=headers)
    assert response.status == 400, await response.text()


# -- audio decoding ------------------------------------------------------------------------


@pytest.mark.parametrize("rate_hz", [2**31 - 1, 2**31, 2**32 - 1])
def test_wav_with_out_of_range_sample_rate_is_a_decode_error(rate_hz: int) -> None:
    """Found by the wav target: OverflowError (rate >= 2**31) and av MemoryError escaped."""
    with pytest.raises(DecodeError):
        decode_file(parse_content_type("audio/wav"), _wav(rate_hz))


def test_wav_with_absurd_sample_rate_fails_fast() -> None:
    """A 200-byte WAV claiming 536,878,912 Hz kept libswresample busy for over 10 s (and
    over 1 GB) before answering: a hang for the fuzzer, a cheap DoS for a server."""
    script = (
        "import struct, sys\n"
        "from server.audio import DecodeError, decode_file, parse_content_type\n"
        "from tests.test_fuzz_regressions import _wav\n"
        "try:\n"
        "    decode_file(parse_content_type('audio/wav'), _wav(536_878_912))\n"
        "except DecodeError:\n"
        "    sys.exit(0)\n"
        "sys.exit('decoded a WAV at 536878912 Hz instead of refusing its rate')\n"
    )
    try:
        subprocess.run(
            [sys.executable, "-c", script], cwd=REPO_ROOT, check=True, timeout=HANG_DEADLINE_S
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"decoding still runs after {HANG_DEADLINE_S:g} s")


def test_failed_container_stream_is_freed() -> None:
    """A compressed stream that fails keeps its error, whose traceback frames hold the PyAV
    container, whose reader holds the pipe that holds the error: an uncollectable cycle that
    leaked ~22 MB per failed AAC stream session (found by the aac target as an OOM)."""
    payload = (REGRESSIONS_DIR / "aac" / "stream-error-leak.bin").read_bytes()[1:]
    decoder = StreamDecoder(parse_content_type("audio/aac"))
    with pytest.raises(DecodeError):
        decoder.decode_chunk(payload)
        decoder.flush()
    freed = weakref.ref(decoder)
    del decoder
    gc.collect()
    assert freed() is None, "the failed stream decoder (and its demuxer) is never freed"


def test_decoded_audio_is_finite_for_loud_float_pcm() -> None:
    """Found by the raw target: averaging two channels of large (finite) float32 samples
    overflows to inf, which then reaches the log-mel frontend and the model."""
    loud = np.full((1600, 2), HUGE_FLOAT32, "<f4").tobytes()
    audio = decode_file(parse_content_type(RAW_STEREO_F32), loud)
    assert np.isfinite(audio).all()


@pytest.mark.parametrize("session", ["file", "stream"])
def test_aac_frame_with_inconsistent_channels_does_not_crash(session: str) -> None:
    """Found by the aac target (libFuzzer "deadly signal"): 669 bytes of corrupt ADTS decode
    to a frame whose layout says 29 channels while it has 41 planes; ``frame.to_ndarray()``
    in ``frame_to_mono`` then reads past the planes and segfaults the whole process (in the
    server: every session, from one upload). Run in a subprocess so the crash fails one test."""
    script = (
        "import sys\n"
        "from server.audio import DecodeError, StreamDecoder, decode_file, parse_content_type\n"
        "fmt = parse_content_type('audio/aac')\n"
        "data = open(sys.argv[1], 'rb').read()[1:]\n"
        "for _ in range(30):\n"
        "    try:\n"
        "        if sys.argv[2] == 'file':\n"
        "            decode_file(fmt, data)\n"
        "        else:\n"
        "            decoder = StreamDecoder(fmt)\n"
        "            decoder.decode_chunk(data)\n"
        "            decoder.flush()\n"
        "    except DecodeError:\n"
        "        pass\n"
    )
    path = REGRESSIONS_DIR / "aac" / "segv-29-channel-frame.bin"
    done = subprocess.run(
        [sys.executable, "-c", script, str(path), session],
        cwd=REPO_ROOT,
        timeout=HANG_DEADLINE_S * 4,
        capture_output=True,
    )
    assert done.returncode == 0, f"exit {done.returncode} (-11 is SIGSEGV)\n{done.stderr[-3000:]!r}"


# -- a short fuzz of every target ----------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.Popen[str]]:
    """Start every target's fuzz run at once, so the smoke costs one run's time, not twelve."""
    pytest.importorskip("atheris")
    artifacts = tmp_path_factory.mktemp("fuzz-artifacts")
    environment = {**os.environ, "PYTHONWARNINGS": "ignore::RuntimeWarning"}
    return {
        name: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fuzz.run",
                name,
                f"--runs={SMOKE_RUNS}",
                f"--max-seconds={SMOKE_SECONDS}",
                f"--timeout={SMOKE_TIMEOUT_S}",
                f"--artifacts={artifacts}",
            ],
            cwd=REPO_ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in TARGETS
    }


@pytest.mark.parametrize("target", list(TARGETS))
def test_fuzz_smoke(target: str, smoke_runs: dict[str, subprocess.Popen[str]]) -> None:
    process = smoke_runs[target]
    try:
        output, _ = process.communicate(timeout=SMOKE_WAIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"fuzzing {target} did not stop:\n{output[-4000:]}")
    assert process.returncode == 0, f"fuzzing {target} found a crash:\n{output[-4000:]}"
    assert "DONE" in output or "Done" in output, output[-2000:]
