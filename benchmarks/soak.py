"""A soak: minutes of live streams that are created, read to the end and deleted, over and over,
while the server's memory, file descriptors and threads are sampled.

    python -m benchmarks.soak --minutes 5 --streams 40 --out benchmarks/out/soak

Each of ``--streams`` slots runs one session at a time: it sends real-time paced 0.5 s chunks of
real audio (espeak-ng speech, a tone, noise) for a random 5-20 s while a reader follows
``next_token`` with long polls, then makes the session readonly, reads every result (one per
chunk) and deletes it; a new session takes the slot. Every 5 s the server's VmRSS, open fds,
threads and the sessions created and deleted so far are sampled from /proc. When the time is up
the slots finish their sessions, the server idles a few seconds and is sampled once more, so the
first and last samples are both of an idle server. Writes ``soak.json`` and ``soak.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt

from benchmarks.durability import ServerProcess, git_state, machine_info

__all__ = ["main"]

SCHEMA = "tympan-soak/1"
API = "/api/v1/audio_sessions"
SAMPLE_RATE_HZ = 16_000
CHUNK_S = 0.5
CHUNK_SAMPLES = int(CHUNK_S * SAMPLE_RATE_HZ)
RAW_CONTENT_TYPE = "audio/x-raw; rate=16000; format=s16le"
SPEECH = (
    "The soak test is speaking now. Sessions come and go, thousands of them, and the server "
    "should forget every one it deletes. Is the kettle on? The train leaves at nine."
)
PAGE_COUNT = 16
_LONG_POLL_TIMEOUT_S = 30.0
_READ_DEADLINE_AFTER_END_S = 60.0
_IDLE_SETTLE_S = 5.0
_MAX_ERROR_SAMPLES = 10
_REPO_ROOT = Path(__file__).resolve().parents[1]

Samples = npt.NDArray[np.float32]


# -- audio ----------------------------------------------------------------------------------


def _speech() -> Samples:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RuntimeError("espeak-ng is needed for the soak's speech")
    with tempfile.TemporaryDirectory(prefix="tympan-soak-") as folder:
        path = Path(folder) / "speech.wav"
        subprocess.run([espeak, "-w", str(path), SPEECH], check=True, capture_output=True)
        import soundfile as sf  # the server's own dependency; only needed here

        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    times = np.arange(int(len(mono) * SAMPLE_RATE_HZ / rate)) / SAMPLE_RATE_HZ
    return np.interp(times, np.arange(len(mono)) / rate, mono).astype(np.float32)


def audio_chunks(seed: int = 7) -> list[bytes]:
    """Speech, a warbling tone, speech over noise and a noise bed, as 0.5 s s16le chunks."""
    rng = np.random.default_rng(seed)
    speech = _speech()
    t = np.arange(4 * SAMPLE_RATE_HZ) / SAMPLE_RATE_HZ
    tone = 0.3 * np.sin(2 * np.pi * (600 + 200 * np.sin(2 * np.pi * 2 * t)) * t)
    noisy = speech + 0.05 * rng.standard_normal(len(speech))
    bed = 0.02 * rng.standard_normal(2 * SAMPLE_RATE_HZ)
    clip = np.concatenate([speech, tone, noisy, bed])
    whole = -(-len(clip) // CHUNK_SAMPLES) * CHUNK_SAMPLES
    clip = np.pad(clip, (0, whole - len(clip)))
    raw = (np.clip(clip, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    step = CHUNK_SAMPLES * 2
    return [raw[i : i + step] for i in range(0, len(raw), step)]


# -- process sampling -----------------------------------------------------------------------


def _status_fields(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                values[name] = int(rest.split()[0])
    return values


def _fd_targets(pid: int) -> Counter[str]:
    """Open fds by kind (socket, pipe, anon_inode:[eventpoll], or the file's directory)."""
    kinds: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                kinds[target.split(":")[0] if ":" in target else str(Path(target).parent)] += 1
    return kinds


def _dir_stats(path: Path) -> tuple[int, int]:
    files = size = 0
    for root, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                size += (Path(root) / name).stat().st_size
                files += 1
    return files, size


@dataclass
class Counters:
    created: int = 0
    deleted: int = 0
    chunks: int = 0
    results: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)

    def error(self, what: str, detail: str) -> None:
        self.errors[what] += 1
        if len(self.error_samples) < _MAX_ERROR_SAMPLES:
            self.error_samples.append(f"{what}: {detail[:300]}")


def sample(pid: int, started: float, counters: Counters, data_dir: Path) -> dict[str, Any]:
    status = _status_fields(pid)
    fds = _fd_targets(pid)
    audio_files, audio_bytes = _dir_stats(data_dir / "audio")
    db_bytes = sum(
        p.stat().st_size for p in data_dir.glob("tympan.sqlite3*") if p.exists()
    )  # database, WAL and shared-memory index
    return {
        "t_s": round(time.monotonic() - started, 2),
        "rss_mib": status.get("VmRSS", 0) / 1024,
        "rss_anon_mib": status.get("RssAnon", 0) / 1024,
        "hwm_mib": status.get("VmHWM", 0) / 1024,
        "threads": status.get("Threads", 0),
        "fds": sum(fds.values()),
        "fd_kinds": dict(fds),
        "sessions_created": counters.created,
        "sessions_deleted": counters.deleted,
        "chunks_sent": counters.chunks,
        "results_read": counters.results,
        "errors": sum(counters.errors.values()),
        "audio_files": audio_files,
        "audio_bytes": audio_bytes,
        "db_bytes": db_bytes,
    }


# -- load -----------------------------------------------------------------------------------


class Soak:
    def __init__(
        self,
        server: ServerProcess,
        chunks: list[bytes],
        counters: Counters,
        life_s: tuple[float, float],
        rng: random.Random,
    ) -> None:
        self.server = server
        self.chunks = chunks
        self.counters = counters
        self.life_s = life_s
        self.rng = rng

    async def _request(
        self, http: aiohttp.ClientSession, method: str, path: str, what: str, **kwargs: Any
    ) -> tuple[int, Any]:
        """One request; non-2xx and transport failures are counted as errors."""
        try:
            async with http.request(method, self.server.url + path, **kwargs) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.counters.error(f"{what} -> {type(exc).__name__}", repr(exc))
            return 0, None
        if not 200 <= status < 300:
            self.counters.error(f"{what} -> {status}", text)
            return status, None
        return status, json.loads(text) if text else None

    async def session(self, http: aiohttp.ClientSession) -> None:
        """Create, stream in real time while reading, make readonly, read to the end, delete."""
        body = {"type": "stream", "content_type": RAW_CONTENT_TYPE}
        _, created = await self._request(
            http,
            "POST",
            API + "/",
            "POST session",
            json=body,
            headers={"x-api-key": self.server.api_key},
        )
        if created is None:
            await asyncio.sleep(1.0)
            return
        session_id = created["session_id"]
        self.counters.created += 1
        n_chunks = max(1, round(self.rng.uniform(*self.life_s) / CHUNK_S))
        reader = asyncio.create_task(self._read_all(http, session_id, n_chunks))
        offset = self.rng.randrange(len(self.chunks))
        started = time.monotonic()
        for seq in range(n_chunks):
            await asyncio.sleep(max(0.0, started + (seq + 1) * CHUNK_S - time.monotonic()))
            data = self.chunks[(offset + seq) % len(self.chunks)]
            status, _ = await self._request(
                http,
                "PUT",
                f"{API}/{session_id}/chunks/{seq}",
                "PUT chunk",
                data=_msgpack_chunk(data),
                headers={"Content-Type": "application/msgpack"},
            )
            if status == 0 or status >= 300:
                break
            self.counters.chunks += 1
        await self._request(
            http, "PATCH", f"{API}/{session_id}", "PATCH readonly", json={"make_readonly": True}
        )
        try:
            read = await asyncio.wait_for(reader, n_chunks * CHUNK_S + _READ_DEADLINE_AFTER_END_S)
        except TimeoutError:
            read = -1
            self.counters.error("results incomplete", f"{session_id}: reader timed out")
        if read >= 0 and read != n_chunks:
            self.counters.error(
                "results count", f"{session_id}: {read} results for {n_chunks} chunks"
            )
        status, _ = await self._request(http, "DELETE", f"{API}/{session_id}", "DELETE session")
        if 200 <= status < 300:
            self.counters.deleted += 1

    async def _read_all(self, http: aiohttp.ClientSession, session_id: str, expected: int) -> int:
        """Follow next_token (long polls) until the server says there is nothing more."""
        path = f"{API}/{session_id}/status?count={PAGE_COUNT}"
        read = 0
        timeout = aiohttp.ClientTimeout(total=_LONG_POLL_TIMEOUT_S)
        while True:
            _, page = await self._request(http, "GET", path, "GET status", timeout=timeout)
            if page is None:
                await asyncio.sleep(0.5)
                continue
            results = page["inference"]["results"]
            read += len(results)
            self.counters.results += len(results)
            token = page["inference"]["page"].get("next_token")
            if token is None:
                return read
            path = f"{API}/{session_id}/status?next_token={token}"

    async def slot(self, http: aiohttp.ClientSession, stop_at: float) -> None:
        while time.monotonic() < stop_at:
            await self.session(http)


def _msgpack_chunk(data: bytes) -> bytes:
    import msgpack

    return bytes(msgpack.packb({"data": data}, use_bin_type=True))


async def _sampler(
    pid: int, started: float, counters: Counters, data_dir: Path, every_s: float, out: list[Any]
) -> None:
    while True:
        out.append(sample(pid, started, counters, data_dir))
        await asyncio.sleep(every_s)


async def run_soak(
    server: ServerProcess, args: argparse.Namespace, chunks: list[bytes]
) -> tuple[list[dict[str, Any]], Counters, float]:
    counters = Counters()
    samples: list[dict[str, Any]] = []
    soak = Soak(server, chunks, counters, (args.min_life, args.max_life), random.Random(args.seed))
    started = time.monotonic()
    stop_at = started + args.minutes * 60
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        sampler = asyncio.create_task(
            _sampler(server.pid, started, counters, server.data_dir, args.sample_every, samples)
        )
        try:
            # Start the slots spread over one chunk period, not all on the same tick.
            async def staggered(index: int) -> None:
                await asyncio.sleep(index * CHUNK_S / args.streams)
                await soak.slot(http, stop_at)

            await asyncio.gather(*(staggered(i) for i in range(args.streams)))
            load_s = time.monotonic() - started
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
    # With the client's connections closed, the server should be back to its idle fd count.
    await asyncio.sleep(_IDLE_SETTLE_S)
    samples.append(sample(server.pid, started, counters, server.data_dir))
    samples[-1]["idle_after_load"] = True
    return samples, counters, load_s


# -- analysis -------------------------------------------------------------------------------


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    if len(xs) < 3 or max(xs) == min(xs):
        return None
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])


def analyse(samples: list[dict[str, Any]], load_s: float) -> dict[str, Any]:
    under_load = [s for s in samples if s["t_s"] <= load_s and not s.get("idle_after_load")]
    second_half = [s for s in under_load if s["t_s"] >= load_s / 2]
    deleted = [s["sessions_deleted"] for s in second_half]
    per_session = _slope(deleted, [s["rss_mib"] for s in second_half])
    per_minute = _slope([s["t_s"] / 60 for s in second_half], [s["rss_mib"] for s in second_half])
    fd_per_session = _slope(deleted, [s["fds"] for s in second_half])
    first, last = samples[0], samples[-1]
    return {
        "rss_slope_mib_per_1000_sessions_second_half": None
        if per_session is None
        else per_session * 1000,
        "rss_slope_mib_per_minute_second_half": per_minute,
        "fd_slope_per_1000_sessions_second_half": None
        if fd_per_session is None
        else fd_per_session * 1000,
        "second_half_sessions_deleted": (deleted[-1] - deleted[0]) if deleted else 0,
        "rss_mib": {
            "idle_start": first["rss_mib"],
            "second_half_start": second_half[0]["rss_mib"] if second_half else None,
            "second_half_end": second_half[-1]["rss_mib"] if second_half else None,
            "idle_end": last["rss_mib"],
            "peak": max(s["hwm_mib"] for s in samples),
        },
        "fds": {
            "idle_start": first["fds"],
            "max_under_load": max(s["fds"] for s in samples),
            "idle_end": last["fds"],
        },
        "threads": {"idle_start": first["threads"], "idle_end": last["threads"]},
        "audio_files_idle_end": last["audio_files"],
        "db_bytes": {"idle_start": first["db_bytes"], "idle_end": last["db_bytes"]},
    }


def plot(samples: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    minutes = [s["t_s"] / 60 for s in samples]
    figure, (rss_axis, fd_axis) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    rss_axis.plot(minutes, [s["rss_mib"] for s in samples], label="VmRSS")
    rss_axis.plot(minutes, [s["rss_anon_mib"] for s in samples], label="RssAnon")
    rss_axis.set_ylabel("MiB")
    rss_axis.set_title("tympan server under a session-churn soak")
    sessions_axis = rss_axis.twinx()
    sessions_axis.plot(
        minutes, [s["sessions_deleted"] for s in samples], color="grey", ls=":", label="deleted"
    )
    sessions_axis.set_ylabel("sessions deleted")
    rss_axis.legend(loc="upper left")
    sessions_axis.legend(loc="lower right")
    fd_axis.plot(minutes, [s["fds"] for s in samples], label="open fds")
    fd_axis.plot(minutes, [s["threads"] for s in samples], label="threads")
    fd_axis.set_xlabel("minutes")
    fd_axis.set_ylabel("count")
    fd_axis.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def _proc_snapshot(pid: int, path: Path) -> None:
    """smaps_rollup and the mapping list, to compare the start and the end of a run."""
    parts = []
    for name in ("smaps_rollup", "maps"):
        with contextlib.suppress(OSError):
            parts.append(f"== /proc/{pid}/{name}\n" + Path(f"/proc/{pid}/{name}").read_text())
    path.write_text("\n".join(parts))


# -- command line ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=5.0, help="how long to create sessions")
    parser.add_argument("--streams", type=int, default=40, help="concurrent stream sessions")
    parser.add_argument("--min-life", type=float, default=5.0, help="shortest stream, seconds")
    parser.add_argument("--max-life", type=float, default=20.0, help="longest stream, seconds")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="TYMPAN_X=VALUE", help="repeatable"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=_REPO_ROOT / "benchmarks" / "out" / "soak",
        help="folder for soak.json, soak.png, the server log and /proc snapshots",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    env = {name: value for name, _, value in (item.partition("=") for item in args.server_env)}
    args.out.mkdir(parents=True, exist_ok=True)
    chunks = audio_chunks(args.seed)
    started_at = dt.datetime.now(dt.UTC)
    code = git_state()
    with ServerProcess(args.out / "data", env) as server:
        _proc_snapshot(server.pid, args.out / "proc-start.txt")
        samples, counters, load_s = asyncio.run(run_soak(server, args, chunks))
        _proc_snapshot(server.pid, args.out / "proc-end.txt")
        exit_status = server.stop()
    shutil.copy(server.data_dir / "server.log", args.out / "server.log")
    shutil.rmtree(server.data_dir, ignore_errors=True)
    analysis = analyse(samples, load_s)
    plotted = plot(samples, args.out / "soak.png")
    result = {
        "schema": SCHEMA,
        "started_at": started_at.isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.soak", *(argv or sys.argv[1:])]),
        "config": {
            "minutes": args.minutes,
            "streams": args.streams,
            "life_s": [args.min_life, args.max_life],
            "sample_every_s": args.sample_every,
            "server_env": env,
            "transport": "msgpack chunks, JSON control",
        },
        "machine": machine_info(args.out),
        "git": code,
        "load_s": load_s,
        "totals": {
            "sessions_created": counters.created,
            "sessions_deleted": counters.deleted,
            "chunks_sent": counters.chunks,
            "results_read": counters.results,
            "errors": dict(counters.errors),
            "error_samples": counters.error_samples,
        },
        "analysis": analysis,
        "plot": "soak.png" if plotted else None,
        "server_exit_status": exit_status,
        "samples": samples,
    }
    (args.out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    _print_summary(result)
    if not plotted:
        print("matplotlib is not installed: no plot")
    return 0


def _print_summary(result: dict[str, Any]) -> None:
    totals, a = result["totals"], result["analysis"]

    def fmt(value: float | None, digits: int = 2) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    rows = [
        ("load", f"{result['load_s'] / 60:.1f} min, {result['config']['streams']} streams"),
        (
            "sessions created / deleted",
            f"{totals['sessions_created']} / {totals['sessions_deleted']}",
        ),
        ("chunks sent / results read", f"{totals['chunks_sent']} / {totals['results_read']}"),
        ("errors (non-2xx, transport, result checks)", str(sum(totals["errors"].values()))),
        (
            "RSS MiB idle start / 2nd half start / 2nd half end / idle end / peak",
            " / ".join(
                fmt(a["rss_mib"][k], 1)
                for k in ("idle_start", "second_half_start", "second_half_end", "idle_end", "peak")
            ),
        ),
        (
            "RSS slope, 2nd half (MiB per 1000 sessions)",
            fmt(a["rss_slope_mib_per_1000_sessions_second_half"]),
        ),
        ("RSS slope, 2nd half (MiB per minute)", fmt(a["rss_slope_mib_per_minute_second_half"])),
        (
            "fds idle start / max under load / idle end",
            f"{a['fds']['idle_start']} / {a['fds']['max_under_load']} / {a['fds']['idle_end']}",
        ),
        (
            "threads idle start / idle end",
            f"{a['threads']['idle_start']} / {a['threads']['idle_end']}",
        ),
        ("audio files left at idle end", str(a["audio_files_idle_end"])),
    ]
    print("| measure | value |\n| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    sys.exit(main())
