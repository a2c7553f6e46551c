"""Run one fuzz target under atheris (libFuzzer), bounded in inputs and in time.

    python -m tests.fuzz.run --list
    python -m tests.fuzz.run TARGET --runs N --max-seconds S [--timeout S] [--corpus DIR]
    python -m tests.fuzz.run TARGET --replay FILE...

The working corpus starts from the target's seeds (``tests.fuzz.seeds``) and its stored
regressions; new interesting inputs are added to it, so pass ``--corpus`` to keep them between
runs. A crash (an unexpected exception) or a hang (an input running past ``--timeout`` seconds)
makes libFuzzer write the input under ``--artifacts`` and exit non-zero; libFuzzer prints the
number of inputs tried and the coverage it reached (``cov``, ``ft``) when it stops.
``--keep-going`` instead records the first input of each distinct crash (exception type and
raising line) under ``--artifacts`` and fuzzes on, so one run surveys every bug it can reach;
hangs still stop the run.

``server`` and ``protocol`` are imported inside atheris's instrumentation hook, before anything
else imports them, so their Python code reports coverage; FFmpeg and numpy are native and
uninstrumented, so coverage guidance stops at PyAV's boundary.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

__all__ = ["REGRESSIONS_DIR", "main", "regression_inputs"]

FUZZ_DIR = Path(__file__).resolve().parent
REGRESSIONS_DIR = FUZZ_DIR / "regressions"
DICTS_DIR = FUZZ_DIR / "dicts"
_RSS_LIMIT_MB = 2048  # what one input may grow the fuzzer by


def _rss_limit_mb() -> int:
    """libFuzzer checks the peak RSS (getrusage), and a process started with vfork, as
    subprocess does, inherits its parent's peak: under a whole test run the pytest parent
    passes 2 GB, so every fuzzer looked over the limit before its first input. The limit is
    counted on top of the peak the process starts with."""
    return _RSS_LIMIT_MB + resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def regression_inputs(target: str) -> list[Path]:
    """The stored reproducers of ``target``, sorted by name."""
    folder = REGRESSIONS_DIR / target
    return sorted(path for path in folder.glob("*") if path.is_file()) if folder.is_dir() else []


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__)
    parser.add_argument("target", nargs="?", help="fuzz target name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--runs", type=int, default=-1, help="most inputs to try (-1: no cap)")
    parser.add_argument("--max-seconds", type=int, default=60, help="stop after this long")
    parser.add_argument("--timeout", type=int, help="seconds one input may run (a hang)")
    parser.add_argument("--corpus", type=Path, help="working corpus folder, kept after the run")
    parser.add_argument("--artifacts", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--seed", type=int, help="libFuzzer random seed (default: random)")
    parser.add_argument("--replay", type=Path, nargs="+", help="run these inputs once, no fuzzing")
    parser.add_argument(
        "--keep-going", action="store_true", help="record each distinct crash and continue"
    )
    parser.add_argument(
        "--skip-regressions",
        action="store_true",
        help="start without the stored reproducers (to explore past known, unfixed crashes)",
    )
    return parser.parse_args(argv)


def _keep_going(
    function: Callable[[bytes], None], artifacts: Path, name: str
) -> Callable[[bytes], None]:
    """Wrap a target so a crash is saved once per signature instead of ending the run."""
    seen: set[str] = set()

    def survey(data: bytes) -> None:
        try:
            function(data)
        except Exception as error:
            frame = traceback.extract_tb(error.__traceback__)[-1]
            signature = f"{type(error).__name__} at {frame.filename}:{frame.lineno}"
            if signature in seen:
                return
            seen.add(signature)
            digest = hashlib.sha1(data).hexdigest()
            path = artifacts / f"{name}-finding-{digest}"
            path.write_bytes(data)
            print(f"FINDING {signature}: {path}", flush=True)
            traceback.print_exception(error)

    return survey


def _prepare_corpus(target: str, corpus: Path, with_regressions: bool) -> None:
    from tests.fuzz.seeds import seed_inputs

    corpus.mkdir(parents=True, exist_ok=True)
    for index, data in enumerate(seed_inputs(target)):
        (corpus / f"seed-{index:03d}").write_bytes(data)
    for path in regression_inputs(target) if with_regressions else []:
        (corpus / f"regression-{path.name}").write_bytes(path.read_bytes())


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    import atheris

    with atheris.instrument_imports(include=["server", "protocol"]):
        from tests.fuzz.targets import TARGETS
    if args.list or args.target is None:
        print("\n".join(TARGETS))
        return 0
    target = TARGETS.get(args.target)
    if target is None:
        print(f"unknown target {args.target!r}; known: {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    if args.replay:
        for path in args.replay:
            target.function(path.read_bytes())
            print(f"{path}: ok")
        return 0
    corpus = args.corpus or Path(tempfile.mkdtemp(prefix=f"tympan-fuzz-{target.name}-"))
    _prepare_corpus(target.name, corpus, not args.skip_regressions)
    args.artifacts.mkdir(parents=True, exist_ok=True)
    flags = [
        str(corpus),
        f"-runs={args.runs}",
        f"-max_total_time={args.max_seconds}",
        f"-timeout={args.timeout or target.timeout_s}",
        f"-max_len={target.max_len}",
        f"-rss_limit_mb={_rss_limit_mb()}",
        f"-artifact_prefix={args.artifacts}/{target.name}-",
        "-print_final_stats=1",
    ]
    if target.dictionary:
        flags.append(f"-dict={DICTS_DIR / target.dictionary}")
    if args.seed is not None:
        flags.append(f"-seed={args.seed}")
    print(f"fuzzing {target.name}: corpus {corpus}, flags {' '.join(flags[1:])}", flush=True)
    function = target.function
    if args.keep_going:
        function = _keep_going(function, args.artifacts, target.name)
    atheris.Setup([sys.argv[0], *flags], function)
    atheris.Fuzz()  # libFuzzer exits the process when it stops
    return 0


if __name__ == "__main__":
    sys.exit(main())
