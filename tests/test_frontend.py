"""YAMNet's log-mel frontend: known signals, counts, and streaming equal to offline."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from models.yamnet.frontend import (
    PatchWindower,
    StreamingLogMel,
    log_mel_frames,
    mel_weight_matrix,
    patches_offline,
    quantize_patches,
)
from models.yamnet.spec import FRONTEND

RATE = FRONTEND.sample_rate_hz


def hz_to_mel(freq_hz: float) -> float:
    return 1127.0 * np.log1p(freq_hz / 700.0)


def tone(freq_hz: float, seconds: float) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * freq_hz * np.arange(int(seconds * RATE)) / RATE)


@pytest.mark.parametrize("freq_hz", [250.0, 1000.0, 3000.0, 6000.0])
def test_a_tone_peaks_in_its_mel_band(freq_hz: float) -> None:
    frames = log_mel_frames(tone(freq_hz, 1.0))
    band = int(np.argmax(frames.mean(axis=0)))
    # band centres are evenly spaced in HTK mel between 125 and 7500 Hz
    edges = np.linspace(hz_to_mel(125.0), hz_to_mel(7500.0), FRONTEND.mel_bands + 2)
    expected = int(np.argmin(np.abs(edges[1:-1] - hz_to_mel(freq_hz))))
    assert abs(band - expected) <= 1


def test_filterbank_shape_and_coverage() -> None:
    weights = mel_weight_matrix()
    assert weights.shape == (257, 64)
    assert np.all(weights[0] == 0)  # DC is never counted
    bin_hz = np.linspace(0, RATE / 2, 257)
    assert np.all(weights[bin_hz < 125.0] == 0) and np.all(weights[bin_hz > 7500.0] == 0)
    assert np.all(weights.max(axis=0) > 0.5)  # every band has a peak
    assert np.all(weights <= 1.0)


@pytest.mark.parametrize(
    ("samples", "frames", "patches_hop_50"),
    [
        (399, 0, 0),
        (400, 1, 0),
        (559, 1, 0),
        (560, 2, 0),
        (15_599, 95, 0),
        (15_600, 96, 1),
        (23_599, 145, 1),
        (23_600, 146, 2),
        (160_000, 998, 19),
    ],
)
def test_frame_and_patch_counts(samples: int, frames: int, patches_hop_50: int) -> None:
    audio = np.zeros(samples)
    assert log_mel_frames(audio).shape == (frames, 64)
    assert patches_offline(audio, 50).shape[0] == patches_hop_50


def test_silence_is_the_log_offset() -> None:
    frames = log_mel_frames(np.zeros(16_000))
    assert np.allclose(frames, np.log(FRONTEND.log_offset))


def test_window_geometry() -> None:
    assert FRONTEND.patch_samples == 15_600
    assert FRONTEND.window_seconds == 0.975
    assert FRONTEND.hop_frames(0.5) == 50 and FRONTEND.hop_frames(1.0) == 100
    with pytest.raises(ValueError):
        FRONTEND.hop_frames(0.333)


def test_quantisation_rounds_and_clips() -> None:
    patches = np.array([[-100.0, 0.0, 0.024, 0.025, 0.03, 100.0]])
    # round half to even, as ONNX QuantizeLinear does: 0.025 / 0.05 = 0.5 rounds to 0
    assert quantize_patches(patches, 0.05, 144).tolist() == [[0, 144, 144, 144, 145, 255]]


def stream(audio: np.ndarray, cuts: list[int], hop_frames: int) -> list[np.ndarray]:
    frontend, windower = StreamingLogMel(), PatchWindower(hop_frames)
    patches = []
    start = 0
    for cut in [*sorted(cuts), len(audio)]:
        patches += windower.push(frontend.push(audio[start:cut]))
        start = cut
    return [p.frames for p in patches]


@settings(max_examples=40, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=48_000), max_size=30),
    hop_frames=st.sampled_from([50, 100]),
)
@example(cuts=[400], hop_frames=50)  # one frame, then the rest: failed on an AVX2 EPYC
def test_any_chunking_gives_the_offline_patches_bit_for_bit(
    cuts: list[int], hop_frames: int
) -> None:
    rng = np.random.default_rng(7)
    audio = rng.normal(0, 0.2, 48_000) + tone(440.0, 3.0)
    offline = patches_offline(audio, hop_frames)
    streamed = stream(audio, cuts, hop_frames)
    assert len(streamed) == len(offline)
    for a, b in zip(streamed, offline, strict=True):
        assert np.array_equal(a, b)


def test_one_sample_at_a_time_equals_offline() -> None:
    audio = tone(1000.0, 2.0)
    streamed = stream(audio, list(range(1, len(audio))), 50)
    offline = patches_offline(audio, 50)
    assert len(streamed) == 3 and all(
        np.array_equal(a, b) for a, b in zip(streamed, offline, strict=True)
    )


def test_a_frame_alone_equals_it_among_others() -> None:
    """Each frame computed on its own, against the same frame at every position of the offline
    computation (300 frames: more than two of its internal blocks)."""
    audio = np.random.default_rng(3).normal(0, 0.3, 299 * 160 + 400)
    frames = log_mel_frames(audio)
    alone = np.stack([log_mel_frames(audio[i * 160 : i * 160 + 400])[0] for i in range(300)])
    assert frames.shape == (300, 64) and np.array_equal(alone, frames)


def test_frame_levels_do_not_depend_on_the_chunking() -> None:
    audio = np.random.default_rng(5).normal(0, 0.3, 16_000)
    whole = StreamingLogMel().push_with_power(audio)
    frontend = StreamingLogMel()
    parts = [frontend.push_with_power(audio[a:b]) for a, b in [(0, 400), (400, 401), (401, 16_000)]]
    assert np.array_equal(np.concatenate([p[0] for p in parts]), whole[0])
    assert np.array_equal(np.concatenate([p[1] for p in parts]), whole[1])


# The same checks in child processes that take other code paths of this machine: numpy's
# AVX2 loops instead of its AVX-512 ones, OpenBLAS's Haswell kernels (what AVX2 machines such
# as AMD EPYC get), both, and numpy's baseline (pre-AVX2) loops. Streaming and offline must
# agree bit for bit on every one of them, whichever one a machine picks.
_CHILD_CHECK = """
import json
import numpy as np
from models.yamnet.frontend import PatchWindower, StreamingLogMel, log_mel_frames, patches_offline

def stream(audio, cuts, hop_frames):
    frontend, windower, patches, start = StreamingLogMel(), PatchWindower(hop_frames), [], 0
    for cut in [*sorted(cuts), len(audio)]:
        patches += windower.push(frontend.push(audio[start:cut]))
        start = cut
    return [p.frames for p in patches]

def same(audio, cuts, hop_frames):
    offline, streamed = patches_offline(audio, hop_frames), stream(audio, cuts, hop_frames)
    return len(offline) == len(streamed) and all(map(np.array_equal, streamed, offline))

rate = 16_000
noisy = np.random.default_rng(7).normal(0, 0.2, 48_000)
noisy += 0.5 * np.sin(2 * np.pi * 440 * np.arange(48_000) / rate)
clean = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(2 * rate) / rate)
failures = []
if not same(noisy, [400], 50):
    failures.append("cuts=[400], hop_frames=50")
if not same(clean, list(range(1, len(clean))), 50):
    failures.append("one sample at a time")
draw = np.random.default_rng(12)
for hop_frames in [50, 100] * 4:
    cuts = sorted(draw.integers(0, len(noisy), draw.integers(1, 30)).tolist())
    if not same(noisy, cuts, hop_frames):
        failures.append(f"cuts={cuts}, hop_frames={hop_frames}")
frames = log_mel_frames(noisy[: 299 * 160 + 400])
alone = [log_mel_frames(noisy[i * 160 : i * 160 + 400])[0] for i in range(len(frames))]
if not np.array_equal(np.stack(alone), frames):
    failures.append("a frame computed alone")
whole, frontend = StreamingLogMel().push_with_power(noisy), StreamingLogMel()
parts = [frontend.push_with_power(noisy[a:b]) for a, b in [(0, 400), (400, 5001), (5001, 48_000)]]
if not all(np.array_equal(np.concatenate(p), w) for p, w in zip(zip(*parts), whole)):
    failures.append("frame levels")

try:
    from numpy._core import _multiarray_umath as umath
except ImportError:  # numpy 1.x
    from numpy.core import _multiarray_umath as umath
import threadpoolctl

blas = [i.get("architecture") for i in threadpoolctl.threadpool_info() if i["internal_api"] == "openblas"]
print(json.dumps({
    "failures": failures,
    "enabled": sorted(name for name, on in umath.__cpu_features__.items() if on),
    "openblas": blas,
}))
"""


def _numpy_cpu() -> tuple[list[str], dict[str, bool]]:
    """numpy's dispatched SIMD targets and this CPU's features, as numpy sees them."""
    try:
        from numpy._core import _multiarray_umath as umath
    except ImportError:  # numpy 1.x
        from numpy.core import _multiarray_umath as umath  # type: ignore[no-redef]
    return list(umath.__cpu_dispatch__), dict(umath.__cpu_features__)


def _uses_openblas() -> bool:
    from threadpoolctl import threadpool_info

    return any(i["internal_api"] == "openblas" for i in threadpool_info())


def _code_paths() -> dict[str, dict[str, str]]:
    """Environments that send this machine down other code paths, where it has them."""
    if platform.machine().lower() not in {"x86_64", "amd64"}:
        return {}
    dispatch, features = _numpy_cpu()
    # numpy 2.x names the AVX-512 targets X86_V4, AVX512_ICL, ...; numpy 1.x AVX512F, ...
    on = [n for n in dispatch if features.get(n, False)]
    avx512 = [n for n in on if n == "X86_V4" or n.startswith("AVX512")]
    avx2 = [n for n in on if n in {"X86_V3", "AVX2", "FMA3"}]
    haswell = features.get("AVX2", False) and features.get("FMA3", False) and _uses_openblas()
    paths: dict[str, dict[str, str]] = {}
    if avx512:
        paths["numpy AVX2"] = {"NPY_DISABLE_CPU_FEATURES": " ".join(avx512)}
    if haswell:
        paths["OpenBLAS Haswell"] = {"OPENBLAS_CORETYPE": "Haswell"}
    if avx512 and haswell:
        paths["numpy AVX2 + OpenBLAS Haswell"] = {
            "NPY_DISABLE_CPU_FEATURES": " ".join(avx512),
            "OPENBLAS_CORETYPE": "Haswell",
        }
    if avx2:
        paths["numpy baseline"] = {"NPY_DISABLE_CPU_FEATURES": " ".join(avx2 + avx512)}
    return paths


def test_streaming_equals_offline_on_other_cpu_code_paths() -> None:
    paths = _code_paths()
    if not paths:
        pytest.skip("no other numpy or OpenBLAS code paths to force on this machine")
    root = Path(__file__).resolve().parents[1]
    inherited = {
        k: v
        for k, v in os.environ.items()
        if k not in {"NPY_DISABLE_CPU_FEATURES", "OPENBLAS_CORETYPE"}
    }
    pythonpath = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    children: dict[str, subprocess.Popen[str]] = {}
    try:
        for name, settings_ in paths.items():  # all at once: each is mostly interpreter start
            children[name] = subprocess.Popen(
                [sys.executable, "-c", _CHILD_CHECK],
                cwd=root,
                env={**inherited, **settings_, "PYTHONPATH": pythonpath},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        for name, child in children.items():
            stdout, stderr = child.communicate(timeout=60)
            assert child.returncode == 0, f"{name}: {stderr}"
            report: dict[str, Any] = json.loads(stdout)
            disabled = set(paths[name].get("NPY_DISABLE_CPU_FEATURES", "").split())
            assert not disabled & set(report["enabled"]), f"{name}: numpy kept {disabled}"
            if "OPENBLAS_CORETYPE" in paths[name]:
                kernels = [a.lower() for a in report["openblas"]]
                assert kernels == ["haswell"], f"{name}: OpenBLAS ignored it, {kernels}"
            assert report["failures"] == [], f"{name}: streaming differs from offline"
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
                child.communicate()
