"""``tympan analyze`` and ``tympan stream`` against a real server process and real speech."""

from __future__ import annotations

import argparse
import io
import itertools
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import av
import pytest
import soundfile as sf

from protocol.cli import (
    STREAM_RATE_HZ,
    Segment,
    add_client_commands,
    run_client_command,
    summarize,
)
from tests.conftest import SPEECH_TEXT, make_key
from tests.serverproc import ServerProcess

LINE = re.compile(r"^\d+\.\d-\d+\.\d s  [^()]+ \(\d\.\d\d\)(, [^()]+ \(\d\.\d\d\))*$")
SHORT_SPEECH = "Hello there, this is a short test."


@pytest.fixture(scope="module")
def server_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    server = ServerProcess(tmp_path_factory.mktemp("cli") / "var")
    key = make_key(server.data_dir, "cli")
    server.start()
    try:
        server.wait_ready()
        yield {"TYMPAN_URL": server.url, "TYMPAN_API_KEY": key}
    finally:
        server.kill()


def espeak(path: Path, text: str) -> Path:
    espeak_ng = shutil.which("espeak-ng")
    if espeak_ng is None:
        pytest.fail("espeak-ng is required (make test installs it)")
    subprocess.run([espeak_ng, "-w", str(path), text], check=True)
    return path


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return espeak(tmp_path_factory.mktemp("speech") / "speech.wav", SPEECH_TEXT)


def run(argv: list[str], environ: Mapping[str, str]) -> int:
    parser = argparse.ArgumentParser(prog="tympan")
    add_client_commands(parser.add_subparsers(dest="command", required=True))
    return run_client_command(parser.parse_args(argv), environ)


def output_lines(capsys: pytest.CaptureFixture[str]) -> tuple[list[str], str]:
    captured = capsys.readouterr()
    return captured.out.splitlines(), captured.err


def pcm_16k(path: Path) -> bytes:
    """The file as 16 kHz mono s16le, decoded the way ``stream`` does it."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=STREAM_RATE_HZ)
    out = bytearray()
    with av.open(str(path)) as container:
        for frame in [*container.decode(audio=0), None]:
            for resampled in resampler.resample(frame):
                out += bytes(resampled.planes[0])[: resampled.samples * 2]
    return bytes(out)


def test_analyze_prints_tagged_windows(
    server_env: dict[str, str], speech_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["analyze", str(speech_wav)], server_env) == 0
    lines, err = output_lines(capsys)
    assert err == "", "no progress bar when stderr is not a terminal"
    assert len(lines) >= 10
    assert all(LINE.match(line) for line in lines), lines
    assert lines[0].startswith("0.0-1.0 s  ")
    assert lines[1].startswith("0.5-1.5 s  ")
    speech = [line for line in lines if "  Speech (" in line]
    assert len(speech) >= 0.7 * len(lines), lines


def test_analyze_summary_merges_runs_of_the_same_top_tag(
    server_env: dict[str, str], speech_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["analyze", str(speech_wav)], server_env) == 0
    windows, _ = output_lines(capsys)
    assert run(["analyze", "--summary", str(speech_wav)], server_env) == 0
    segments, _ = output_lines(capsys)
    assert 1 <= len(segments) < len(windows)
    assert all(re.match(r"^\d+\.\d-\d+\.\d s  [^,]+ \(\d\.\d\d\)$", line) for line in segments)
    tops = [line.split("  ", 1)[1].split(" (")[0] for line in segments]
    assert all(a != b for a, b in itertools.pairwise(tops)), segments
    assert "Speech" in tops
    assert segments[0].startswith("0.0-")
    assert segments[-1].split(" s  ")[0].split("-")[1] == windows[-1].split(" s  ")[0].split("-")[1]


def test_summarize_keeps_the_highest_probability() -> None:
    from protocol.messages import SenseEvent, Tag

    def window(start: float, *tags: tuple[str, float]) -> SenseEvent:
        return SenseEvent(start, start + 0.975, tuple(Tag(n, p) for n, p in tags))

    windows = [
        window(0.0, ("Speech", 0.7), ("Music", 0.6)),
        window(0.5, ("Speech", 0.9)),
        window(1.0, ("Music", 0.8), ("Speech", 0.75)),
        window(1.5, ("Speech", 0.6)),
    ]
    assert summarize(windows) == [
        Segment(0.0, 1.475, "Speech", 0.9),
        Segment(1.0, 1.975, "Music", 0.8),
        Segment(1.5, 2.475, "Speech", 0.6),
    ]


def test_analyze_json_for_several_files(
    server_env: dict[str, str],
    speech_wav: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    audio, rate = sf.read(speech_wav, dtype="float32")
    flac = tmp_path / "speech.flac"
    sf.write(flac, audio, rate, format="FLAC")
    assert run(["analyze", "--json", str(speech_wav), str(flac)], server_env) == 0
    reports = json.loads(capsys.readouterr().out)
    assert [report["file"] for report in reports] == [str(speech_wav), str(flac)]
    for report in reports:
        assert report["session_id"]
        windows = report["windows"]
        assert windows[0]["start_time"] == 0.0
        assert windows[0]["end_time"] == 0.975
        assert {"name", "probability"} <= set(windows[0]["tags"][0])
        assert any(tag["name"] == "Speech" for w in windows for tag in w["tags"])
    assert len(reports[0]["windows"]) == len(reports[1]["windows"])  # FLAC is lossless

    assert run(["analyze", "--json", "--summary", str(flac)], server_env) == 0
    (summary,) = json.loads(capsys.readouterr().out)
    assert set(summary["segments"][0]) == {"start_time", "end_time", "tag", "probability"}
    assert any(segment["tag"] == "Speech" for segment in summary["segments"])


def test_analyze_reports_each_failing_file_and_goes_on(
    server_env: dict[str, str],
    speech_wav: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"this is not a RIFF file, only text pretending to be audio" * 20)
    assert run(["analyze", str(broken), str(speech_wav)], server_env) == 1
    lines, err = output_lines(capsys)
    assert f"error: {broken}: the server could not process the audio" in err
    assert lines[0] == f"== {speech_wav} =="
    assert any("Speech" in line for line in lines)

    assert run(["analyze", str(tmp_path / "notes.txt")], server_env) == 2
    assert "pass --content-type" in capsys.readouterr().err


def test_analyze_draws_progress_on_a_terminal(
    server_env: dict[str, str],
    speech_wav: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert run(["analyze", str(speech_wav)], server_env) == 0
    assert f"\r{speech_wav.name} [" in terminal.getvalue()
    assert "100%" in terminal.getvalue()
    assert "[" not in capsys.readouterr().out


def test_stream_prints_windows_live(
    server_env: dict[str, str], speech_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["stream", "--no-realtime", str(speech_wav)], server_env) == 0
    lines, err = output_lines(capsys)
    assert err == ""
    assert all(LINE.match(line) for line in lines), lines
    assert [line.split("  ")[0] for line in lines[:2]] == ["0.0-1.0 s", "0.5-1.5 s"]
    assert sum("  Speech (" in line for line in lines) >= 0.7 * len(lines)
    assert run(["analyze", str(speech_wav)], server_env) == 0
    analyzed, _ = output_lines(capsys)
    assert [line.split("  ")[0] for line in lines] == [line.split("  ")[0] for line in analyzed]


def test_stream_reads_raw_pcm_from_stdin(
    server_env: dict[str, str],
    speech_wav: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(["stream", "--no-realtime", str(speech_wav)], server_env) == 0
    from_file, _ = output_lines(capsys)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(pcm_16k(speech_wav))))
    assert run(["stream", "--no-realtime", "-"], server_env) == 0
    from_stdin, _ = output_lines(capsys)
    assert from_stdin == from_file


def test_stream_in_real_time_takes_as_long_as_the_audio(
    server_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = espeak(tmp_path / "short.wav", SHORT_SPEECH)
    duration_s = len(pcm_16k(short)) / (2 * STREAM_RATE_HZ)
    started = time.monotonic()
    assert run(["stream", str(short)], server_env) == 0
    assert time.monotonic() - started >= duration_s - 0.1
    lines, _ = output_lines(capsys)
    assert any("Speech" in line for line in lines)


def test_stream_mic_needs_sounddevice(
    server_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails as if not installed
    assert run(["stream", "--mic"], server_env) == 2
    assert "sounddevice" in capsys.readouterr().err


def test_usage_errors_exit_2(
    server_env: dict[str, str], speech_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["analyze", str(speech_wav)], {"TYMPAN_URL": server_env["TYMPAN_URL"]}) == 2
    assert "API key is required" in capsys.readouterr().err
    assert run(["stream"], server_env) == 2
    assert "exactly one source" in capsys.readouterr().err
    assert run(["stream", "--mic", str(speech_wav)], server_env) == 2


def test_flags_override_the_environment(
    server_env: dict[str, str], speech_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = {"TYMPAN_URL": "http://127.0.0.1:9", "TYMPAN_API_KEY": "wrong"}
    flags = ["--url", server_env["TYMPAN_URL"], "--api-key", server_env["TYMPAN_API_KEY"]]
    assert run(["analyze", *flags, "--transport", "msgpack", str(speech_wav)], wrong) == 0
    assert any("Speech" in line for line in capsys.readouterr().out.splitlines())
    bad_key = ["--url", server_env["TYMPAN_URL"], "--api-key", "wrong"]
    assert run(["analyze", *bad_key, str(speech_wav)], server_env) == 1
    assert "API key is missing, invalid or revoked (HTTP 401)" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", ["/api/v1", "/api/v1/", "/"])
def test_url_may_be_the_api_base_cochl_clients_use(
    server_env: dict[str, str], speech_wav: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    environ = {**server_env, "TYMPAN_URL": server_env["TYMPAN_URL"] + suffix}
    assert run(["analyze", "--summary", str(speech_wav)], environ) == 0, capsys.readouterr().err
    assert any("Speech" in line for line in capsys.readouterr().out.splitlines())


def test_a_missing_file_is_a_one_line_error(
    server_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.wav"
    assert run(["analyze", str(missing)], server_env) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: {missing}: no such file"]
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    assert run(["analyze", str(folder)], server_env) == 1
    assert capsys.readouterr().err.splitlines() == [f"error: {folder}: is a directory"]
