"""A labelled TTS-artifact set built at run time: espeak-ng speech with inserted clicks and pauses.

Each file is a few sentences that espeak-ng speaks with one voice and rate, resampled to 16 kHz,
its peak set to -6 dBFS, in room noise (white or pink, -60 to -45 dBFS). Into it go, at seeded
positions, with exact labels in the final timeline:

- ``long_pause``: 500-900 ms of room noise spliced into running speech (where the 60 ms around
  the cut are active, so the silence is all inserted: the label is the silence), with 5 ms
  fades on both sides of the cut so that the splice itself clicks no more than a real edit;
- ``glitch``: a 1-3 ms click added to the signal, a DC pulse or a decaying burst of a
  1-6 kHz tone, of random polarity, its peak from -34 to -10 dBFS (log-uniform), anywhere.

About one file in five gets neither (clean negatives). The train and test parts use different
voices, rates and sentences, so a test score is one on speech the head has not heard.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.yamnet.audiofile import decode_audio_file
from models.yamnet.spec import FRONTEND

__all__ = ["TEST_VOICES", "TRAIN_VOICES", "SyntheticFile", "build_set"]

RATE = FRONTEND.sample_rate_hz
TRAIN_VOICES = ("en-gb+m1", "en-us+f1", "en-gb-scotland+m3", "en-gb-x-rp+f3", "en-us+m4")
TEST_VOICES = ("en-029+m2", "en-gb-x-gbclan+f2", "en-gb-x-gbcwmd+f4")
_TEXT = (
    "the quick brown fox jumps over lazy dog morning weather report train station "
    "platform seven minutes late please remember your ticket customer service number "
    "account balance payment received thank you for calling our office hours are "
    "monday through friday nine until five today tomorrow evening cloudy sunny rain "
    "temperature degrees north south river bridge market coffee table window garden "
    "message after the tone we will call you back as soon as possible"
)
_WORDS = tuple(_TEXT.split())
_FADE_SAMPLES = 80  # 5 ms
_ACTIVE_DB = -30.0  # a cut point's 60 ms must be within this of the file's peak level


@dataclass(frozen=True)
class SyntheticFile:
    name: str
    voice: str
    samples: npt.NDArray[np.float32]
    annotations: tuple[tuple[str, float, float], ...]  # (type, start_ms, end_ms)
    click_levels: tuple[tuple[float, float], ...] = ()  # (start_ms, peak dBFS) of each click


def _sentences(rng: np.random.Generator, count: int) -> str:
    out = []
    for _ in range(count):
        words = rng.choice(_WORDS, size=int(rng.integers(6, 12)))
        out.append(" ".join(words).capitalize() + ".")
    return " ".join(out)


def _speak(text: str, voice: str, rate_wpm: int, scratch: Path) -> npt.NDArray[np.float32]:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise SystemExit("espeak-ng is needed: make test-deps (or apt-get install espeak-ng)")
    wav = scratch / "speech.wav"
    subprocess.run(
        [espeak, "-v", voice, "-s", str(rate_wpm), "-w", str(wav), text],
        check=True,
        capture_output=True,
    )
    samples = decode_audio_file(wav)
    return (0.5 * samples / max(1e-6, float(np.abs(samples).max()))).astype(np.float32)


def _room_noise(rng: np.random.Generator, count: int) -> npt.NDArray[np.float32]:
    level = 10 ** (rng.uniform(-60, -45) / 20)
    white = rng.standard_normal(count)
    if rng.random() < 0.5:  # pink-ish: white through a leaky integrator's 256 taps
        white = np.convolve(white, 0.97 ** np.arange(256), mode="same")
    return (level * white / white.std()).astype(np.float32)


def _active_cuts(speech: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    """Sample positions whose surrounding 60 ms is speech, not a pause."""
    hop = RATE // 100
    frames = speech[: speech.size // hop * hop].reshape(-1, hop)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    active = level > level.max() + _ACTIVE_DB
    window = np.convolve(active.astype(int), np.ones(7, int), mode="same") == 7
    return np.flatnonzero(window) * hop + hop // 2


def _splice_pauses(
    speech: npt.NDArray[np.float32], rng: np.random.Generator, count: int
) -> tuple[npt.NDArray[np.float32], list[tuple[int, int]]]:
    cuts = _active_cuts(speech)
    margin = RATE // 2
    cuts = cuts[(cuts > margin) & (cuts < speech.size - margin)]
    chosen: list[int] = []
    for cut in rng.permutation(cuts):
        if len(chosen) == count:
            break
        if all(abs(int(cut) - c) > RATE for c in chosen):
            chosen.append(int(cut))
    pieces, labels, start, shift = [], [], 0, 0
    fade = np.linspace(1.0, 0.0, _FADE_SAMPLES, dtype=np.float32)
    for cut in sorted(chosen):
        piece = speech[start:cut].copy()
        piece[-_FADE_SAMPLES:] *= fade
        after = speech[cut : cut + _FADE_SAMPLES]
        speech[cut : cut + _FADE_SAMPLES] = after * fade[::-1]
        length = int(rng.uniform(0.5, 0.9) * RATE)
        pieces += [piece, np.zeros(length, dtype=np.float32)]
        labels.append((cut + shift, cut + shift + length))
        shift += length
        start = cut
    pieces.append(speech[start:])
    return np.concatenate(pieces), labels


def _click(rng: np.random.Generator) -> npt.NDArray[np.float32]:
    length = int(rng.integers(RATE // 1000, 3 * RATE // 1000 + 1))
    peak = 10 ** (rng.uniform(-34, -10) / 20) * rng.choice([-1.0, 1.0])
    if rng.random() < 0.5:
        shape = np.ones(length)
    else:
        t = np.arange(length) / RATE
        shape = np.sin(2 * np.pi * rng.uniform(1000, 6000) * t + rng.uniform(0, np.pi))
        shape *= np.exp(-t / (length / RATE / 3))
        shape /= np.abs(shape).max()
    return (peak * shape).astype(np.float32)


def _one_file(
    name: str, voice: str, rate_wpm: int, rng: np.random.Generator, scratch: Path
) -> SyntheticFile:
    speech = _speak(_sentences(rng, int(rng.integers(2, 4))), voice, rate_wpm, scratch)
    clean = rng.random() < 0.2
    pauses = 0 if clean else int(rng.integers(0, 3))
    clicks = 0 if clean else int(rng.integers(1, 9))
    audio, pause_labels = _splice_pauses(speech, rng, pauses)
    audio = audio + _room_noise(rng, audio.size)
    labels = [("long_pause", s * 1000 / RATE, e * 1000 / RATE) for s, e in pause_labels]
    placed: list[int] = []
    levels: list[tuple[float, float]] = []
    for _ in range(clicks):
        click = _click(rng)
        for _try in range(100):
            at = int(rng.integers(RATE // 10, audio.size - RATE // 10))
            edges = [p for s, e in pause_labels for p in (s, e)]
            if all(abs(at - p) > RATE // 10 for p in placed + edges):
                break
        audio[at : at + click.size] += click
        placed.append(at)
        levels.append((at * 1000 / RATE, 20 * float(np.log10(np.abs(click).max()))))
        labels.append(("glitch", at * 1000 / RATE, (at + click.size) * 1000 / RATE))
    return SyntheticFile(
        name,
        voice,
        audio.astype(np.float32),
        tuple(sorted(labels, key=lambda x: x[1])),
        tuple(levels),
    )


def build_set(part: str, count: int, seed: int) -> list[SyntheticFile]:
    """``count`` files of the ``train`` or ``test`` part (their voices, rates and texts)."""
    voices = TRAIN_VOICES if part == "train" else TEST_VOICES
    rates = (140, 190) if part == "train" else (150, 200)
    rng = np.random.default_rng([seed, 0 if part == "train" else 1])
    with tempfile.TemporaryDirectory(prefix="tympan-tts-") as scratch:
        return [
            _one_file(
                f"{part}-{i:03d}",
                voices[i % len(voices)],
                int(rng.integers(*rates)),
                rng,
                Path(scratch),
            )
            for i in range(count)
        ]
