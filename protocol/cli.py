"""``tympan analyze`` and ``tympan stream``: the client half of the command line.

``analyze`` uploads whole files as file sessions and prints their sound events once inference is
over (``--windows``: every window and its tags instead); ``stream`` sends 16 kHz s16le PCM in
half-second chunks as a live stream session and prints events as they open and close (or
windows as they arrive). Both talk to a server through ``protocol.client`` only, with ``--url``
and ``--api-key`` falling back to ``TYMPAN_URL`` and ``TYMPAN_API_KEY``. Results go to stdout
(text, ``--json`` or ``--csv``); progress, the one-line summary per file and errors to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from protocol.cli_analyze import analyze
from protocol.cli_errors import UsageError
from protocol.cli_stream import stream
from protocol.client import DEFAULT_URL, TympanClient

__all__ = [
    "CLIENT_COMMANDS",
    "ENV_API_KEY",
    "ENV_URL",
    "add_client_commands",
    "run_client_command",
]

CLIENT_COMMANDS = ("analyze", "stream")
ENV_URL = "TYMPAN_URL"
ENV_API_KEY = "TYMPAN_API_KEY"
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def add_client_commands(subparsers: Any) -> None:
    """Register ``analyze`` and ``stream`` on an ``add_subparsers()`` object."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"server URL (default {DEFAULT_URL}, {ENV_URL})")
    common.add_argument("--api-key", help=f"API key ({ENV_API_KEY})")
    common.add_argument(
        "--transport",
        choices=("json", "msgpack"),
        default="json",
        help="wire encoding (default json)",
    )
    common.add_argument(
        "--windows",
        action="store_true",
        help="print every window and its tags instead of sound events",
    )

    analyze = subparsers.add_parser(
        "analyze",
        parents=[common],
        help="find the sound events in audio files (uploaded as file sessions)",
    )
    analyze.add_argument("files", nargs="+", type=Path, metavar="FILE")
    form = analyze.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print one JSON array of reports")
    form.add_argument("--csv", action="store_true", help="print CSV with a header row")
    analyze.add_argument("--content-type", help="override the type guessed from the extension")
    analyze.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw progress on stderr (default: only when stderr is a terminal)",
    )
    analyze.set_defaults(client_command="analyze")

    stream = subparsers.add_parser(
        "stream",
        parents=[common],
        help="stream audio live and print events as they open and close",
    )
    stream.add_argument(
        "file", nargs="?", metavar="FILE|-", help="audio file, or - for raw s16le 16 kHz mono stdin"
    )
    stream.add_argument(
        "--mic", action="store_true", help="capture the microphone (needs sounddevice)"
    )
    stream.add_argument(
        "--no-realtime", action="store_true", help="send as fast as possible, not in real time"
    )
    stream.add_argument("--json", action="store_true", help="print one JSON object per line")
    stream.set_defaults(client_command="stream")


def run_client_command(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    """Run ``analyze`` or ``stream``; returns the exit status (0 ok, 1 failed, 2 usage)."""
    environ = os.environ if environ is None else environ
    try:
        api_key = args.api_key or environ.get(ENV_API_KEY)
        if not api_key:
            raise UsageError(f"an API key is required: --api-key or {ENV_API_KEY}")
        client = TympanClient(
            args.url or environ.get(ENV_URL) or DEFAULT_URL, api_key, transport=args.transport
        )
        if args.client_command == "analyze":
            return asyncio.run(analyze(client, args))
        return asyncio.run(stream(client, args))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as Python's documentation advises.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
