"""``tympan analyze`` and ``tympan stream`` against a real server process and real speech."""

from __future__ import annotations

import argparse
import csv
import io
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

from protocol.cli import add_client_commands, run_client_command
from protocol.cli_analyze import expected_windows
from protocol.cli_audio import STREAM_RATE_HZ, probe_duration_s
from tests.conftest import SPEECH_TEXT, make_key
from tests.serverproc import ServerProcess

WINDOW_LINE = re.compile(r"^\d+\.\d-\d+\.\d s  [^()]+ \(\d\.\d\d\)(, [^()]+ \(\d\.\d\d\))*$")
EVENT_LINE = re.compile(r"^ *(\d+\.\d\d)-(\d+\.\d\d) +  (\S.*?)  (\d\.\d\d)$")
OPEN_LINE = re.compile(r"^ *(\d+\.\d\d) +  open    (\S.*?)  (\d\.\d\d)$")
CLOSED_LINE = re.compile(r"^ *(\d+\.\d\d)-(\d+\.\d\d) +  closed  (\S.*?)  (\d\.\d\d)$")
SUMMARY = re.compile(r"^(.+): (\d+\.\d) s, (\d+) windows?, (\d+) events?( \((.+)\))?$")
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


class Terminal(io.StringIO):
    """stderr as a terminal: ``isatty`` says yes, and ``screen`` shows what it would display."""

    def isatty(self) -> bool:
        return True

    def screen(self) -> list[str]:
        """Each line as left on screen: a carriage return goes back to the first column and
        what follows overwrites what was there."""
        shown = []
        for raw in self.getvalue().split("\n"):
            line: list[str] = []
            for part in raw.split("\r"):
                line[: len(part)] = part
            shown.append("".join(line).rstrip())
        return [line for line in shown if line]


def pcm_16k(path: Path) -> bytes:
    """The file as 16 kHz mono s16le, decoded the way ``stream`` does it."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=STREAM_RATE_HZ)
    out = bytearray()
    with av.open(str(path)) as container:
        for frame in [*container.decode(audio=0), None]:
            for resampled in resampler.resample(frame):
                out += bytes(resampled.planes[0])[: resampled.samples * 2]
    return bytes(out)


def speech_duration_s(path: Path) -> float:
    info = sf.info(path)
    return info.frames / info.samplerate


# -- analyze ---------------------------------------------------------------------------------


def test_analyze_prints_events_and_a_summary(
    server_env: dict[str, str], speech_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["analyze", str(speech_wav)], server_env) == 0
    lines, err = output_lines(capsys)
    assert lines, "espeak's speech is at least one event"
    events = [EVENT_LINE.match(line) for line in lines]
    assert all(events), lines
    spans = [(float(m[1]), float(m[2])) for m in events if m]
    assert all(start < end for start, end in spans)
    assert [m[3] for m in events if m].count("Speech") >= 1
    assert float(next(m for m in events if m and m[3] == "Speech")[1]) < 1.0

    (summary,) = err.splitlines()  # no progress: stderr is not a terminal
    match = SUMMARY.match(summary)
    assert match, summary
    assert match[1] == str(speech_wav)
    assert float(match[2]) == pytest.approx(speech_duration_s(speech_wav), abs=0.05)
    assert int(match[4]) == len(lines)
    assert "Speech" in (match[6] or "")


def test_analyze_windows_prints_every_window(
    server_env: dict[str, str], speech_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["analyze", "--windows", str(speech_wav)], server_env) == 0
    lines, err = output_lines(capsys)
    assert len(lines) >= 10
    assert all(WINDOW_LINE.match(line) for line in lines), lines
    assert lines[0].startswith("0.0-1.0 s  ")
    assert lines[1].startswith("0.5-1.5 s  ")
    speech = [line for line in lines if "  Speech (" in line]
    assert len(speech) >= 0.7 * len(lines), lines

    match = SUMMARY.match(err.strip())
    assert match, err
    assert int(match[3]) == len(lines), "the summary counts the windows printed"
    duration_s = probe_duration_s(speech_wav)
    assert duration_s is not None
    assert int(match[3]) == expected_windows(duration_s, 0.975, 0.5), "the progress estimate"

    assert run(["analyze", str(speech_wav)], server_env) == 0
    _, events_err = output_lines(capsys)
    assert events_err.strip() == err.strip(), "the same summary in either mode"


def test_analyze_json_for_several_files(
    server_env: dict[str, str],
    speech_wav: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    audio, rate = sf.read(speech_wav, dtype="float32")
    flac = tmp_path / "speech.flac"
    sf.write(flac, audio, rate, format="FLAC")
    assert run(["analyze", "--windows", "--json", str(speech_wav), str(flac)], server_env) == 0
    captured = capsys.readouterr()
    reports = json.loads(captured.out)
    assert [report["file"] for report in reports] == [str(speech_wav), str(flac)]
    for report in reports:
        assert report["session_id"]
        assert report["duration_s"] == pytest.approx(speech_duration_s(speech_wav), abs=0.01)
        windows = report["windows"]
        assert windows[0]["start_time"] == 0.0
        assert windows[0]["end_time"] == 0.975
        assert {"name", "probability"} <= set(windows[0]["tags"][0])
        assert any(tag["name"] == "Speech" for w in windows for tag in w["tags"])
    assert len(reports[0]["windows"]) == len(reports[1]["windows"])  # FLAC is lossless
    assert len(captured.err.splitlines()) == 2, "one summary line per file, on stderr"

    assert run(["analyze", "--json", str(flac)], server_env) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert set(report) == {"file", "session_id", "duration_s", "events"}
    events = report["events"]
    assert set(events[0]) == {"id", "tag", "start_time", "end_time", "confidence", "state"}
    assert {event["state"] for event in events} == {"closed"}
    assert len({event["id"] for event in events}) == len(events), "each event once"
    assert any(event["tag"] == "Speech" for event in events)


def test_json_csv_and_text_agree(
    server_env: dict[str, str], speech_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["analyze", "--json", str(speech_wav)], server_env) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert run(["analyze", "--csv", str(speech_wav)], server_env) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert run(["analyze", str(speech_wav)], server_env) == 0
    lines, _ = output_lines(capsys)

    events = report["events"]
    assert len(rows) == len(events) == len(lines)
    for row, event, line in zip(rows, events, lines, strict=True):
        assert row["file"] == str(speech_wav)
        assert int(row["id"]) == event["id"]
        assert row["tag"] == event["tag"]
        for name in ("start_time", "end_time", "confidence"):
            assert float(row[name]) == event[name]
        assert line.split() == [
            f"{event['start_time']:.2f}-{event['end_time']:.2f}",
            *event["tag"].split(),
            f"{event['confidence']:.2f}",
        ]


def test_windows_csv_parses_back_to_the_json(
    server_env: dict[str, str], speech_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["analyze", "--windows", "--json", str(speech_wav)], server_env) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert run(["analyze", "--windows", "--csv", str(speech_wav)], server_env) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "file,start_time,end_time,tag,probability"
    rows = list(csv.DictReader(io.StringIO(out)))
    expected = [
        (w["start_time"], w["end_time"], tag["name"], tag["probability"])
        for w in report["windows"]
        for tag in w["tags"]
    ]
    assert [
        (float(r["start_time"]), float(r["end_time"]), r["tag"], float(r["probability"]))
        for r in rows
        if r["tag"]
    ] == expected
    untagged = [w for w in report["windows"] if not w["tags"]]
    assert len([r for r in rows if not r["tag"]]) == len(untagged)


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
    first, second = err.splitlines()
    assert first.startswith(f"error: {broken}: the server could not process the audio")
    assert second.startswith(f"{speech_wav}: ")
    assert lines[0] == f"== {speech_wav} =="
    assert any(EVENT_LINE.match(line) and "Speech" in line for line in lines)

    assert run(["analyze", "--csv", str(broken), str(speech_wav)], server_env) == 1
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows and {row["file"] for row in rows} == {str(speech_wav)}

    assert run(["analyze", str(tmp_path / "notes.txt")], server_env) == 2
    assert "pass --content-type" in capsys.readouterr().err


def test_analyze_draws_progress_on_a_terminal(
    server_env: dict[str, str],
    speech_wav: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    duration_s = probe_duration_s(speech_wav)
    assert duration_s is not None
    windows = expected_windows(duration_s, 0.975, 0.5)
    for mode in ([], ["--windows"]):
        terminal = Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        assert run(["analyze", *mode, str(speech_wav)], server_env) == 0
        drawn = terminal.getvalue()
        assert f"\r{speech_wav.name}  upload [" in drawn
        assert "100%  " in drawn
        assert f"{speech_wav.name}  analysis [" in drawn
        assert f"100%  {windows}/{windows} windows" in drawn
        (summary,) = terminal.screen()  # the bar is erased; the summary stays
        assert SUMMARY.match(summary), summary
        assert "[" not in capsys.readouterr().out


def test_progress_flags_override_the_terminal_test(
    server_env: dict[str, str],
    speech_wav: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert run(["analyze", "--no-progress", str(speech_wav)], server_env) == 0
    assert "\r" not in terminal.getvalue()
    capsys.readouterr()

    piped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", piped)
    assert run(["analyze", "--progress", "--json", str(speech_wav)], server_env) == 0
    assert "upload [" in piped.getvalue()
    json.loads(capsys.readouterr().out)  # progress never reaches stdout


# -- stream ----------------------------------------------------------------------------------


def test_stream_prints_events_as_they_open_and_close(
    server_env: dict[str, str], speech_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["stream", "--no-realtime", str(speech_wav)], server_env) == 0
    lines, err = output_lines(capsys)
    opened = [m for m in map(OPEN_LINE.match, lines) if m]
    closed = [m for m in map(CLOSED_LINE.match, lines) if m]
    assert len(opened) + len(closed) == len(lines), lines
    assert any(m[3] == "Speech" for m in closed)
    assert len(opened) <= len(closed), "an event opens at most once and always closes"

    assert run(["stream", "--no-realtime", "--json", str(speech_wav)], server_env) == 0
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(entries) == len(lines)
    closed_ids = [entry["id"] for entry in entries if entry["state"] == "closed"]
    assert sorted(closed_ids) == list(range(len(closed_ids))), "each event closes once"
    for entry in entries:
        if entry["state"] == "open":
            assert entry["id"] in closed_ids
            later = entries[entries.index(entry) :]
            final = next(e for e in later if e["state"] == "closed" and e["id"] == entry["id"])
            assert final["start_time"] == entry["start_time"]
            assert final["end_time"] >= entry["end_time"]

    match = SUMMARY.match(err.strip())
    assert match, err
    assert match[1] == str(speech_wav)
    assert int(match[4]) == len(closed_ids)


def test_stream_closes_the_events_analyze_finds(
    server_env: dict[str, str], speech_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same audio as a stream or as a file: the same windows, hence the same events (the
    stream is decoded here and the file by the server, so probabilities may differ a little)."""
    assert run(["stream", "--no-realtime", "--json", str(speech_wav)], server_env) == 0
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    streamed = [entry for entry in entries if entry["state"] == "closed"]
    assert run(["analyze", "--json", str(speech_wav)], server_env) == 0
    (report,) = json.loads(capsys.readouterr().out)
    analyzed = report["events"]
    assert [e["tag"] for e in streamed] == [e["tag"] for e in analyzed]
    for mine, theirs in zip(streamed, analyzed, strict=True):
        assert mine["start_time"] == pytest.approx(theirs["start_time"], abs=0.1)
        assert mine["end_time"] == pytest.approx(theirs["end_time"], abs=0.1)


def test_stream_windows_prints_windows_live(
    server_env: dict[str, str], speech_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["stream", "--windows", "--no-realtime", str(speech_wav)], server_env) == 0
    lines, err = output_lines(capsys)
    assert all(WINDOW_LINE.match(line) for line in lines), lines
    assert [line.split("  ")[0] for line in lines[:2]] == ["0.0-1.0 s", "0.5-1.5 s"]
    assert sum("  Speech (" in line for line in lines) >= 0.7 * len(lines)
    match = SUMMARY.match(err.strip())
    assert match and int(match[3]) == len(lines), err

    assert run(["analyze", "--windows", str(speech_wav)], server_env) == 0
    analyzed, _ = output_lines(capsys)
    assert [line.split("  ")[0] for line in lines] == [line.split("  ")[0] for line in analyzed]

    assert run(["stream", "--windows", "--json", "--no-realtime", str(speech_wav)], server_env) == 0
    windows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(windows) == len(lines)
    assert set(windows[0]) == {"start_time", "end_time", "tags"}


def test_stream_reads_raw_pcm_from_stdin(
    server_env: dict[str, str],
    speech_wav: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(["stream", "--windows", "--no-realtime", str(speech_wav)], server_env) == 0
    from_file, _ = output_lines(capsys)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(pcm_16k(speech_wav))))
    assert run(["stream", "--windows", "--no-realtime", "-"], server_env) == 0
    from_stdin, err = output_lines(capsys)
    assert from_stdin == from_file
    assert err.startswith("stdin: ")


def test_stream_in_real_time_takes_as_long_as_the_audio(
    server_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = espeak(tmp_path / "short.wav", SHORT_SPEECH)
    duration_s = len(pcm_16k(short)) / (2 * STREAM_RATE_HZ)
    started = time.monotonic()
    assert run(["stream", str(short)], server_env) == 0
    assert time.monotonic() - started >= duration_s - 0.1
    lines, err = output_lines(capsys)
    assert any("Speech" in line for line in lines)
    match = SUMMARY.match(err.strip())
    assert match and float(match[2]) == pytest.approx(duration_s, abs=0.05), err


def test_stream_mic_needs_sounddevice(
    server_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails as if not installed
    assert run(["stream", "--mic"], server_env) == 2
    assert "sounddevice" in capsys.readouterr().err


# -- both ------------------------------------------------------------------------------------


def test_usage_errors_exit_2(
    server_env: dict[str, str], speech_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["analyze", str(speech_wav)], {"TYMPAN_URL": server_env["TYMPAN_URL"]}) == 2
    assert "API key is required" in capsys.readouterr().err
    assert run(["stream"], server_env) == 2
    assert "exactly one source" in capsys.readouterr().err
    assert run(["stream", "--mic", str(speech_wav)], server_env) == 2
    with pytest.raises(SystemExit) as exit_info:
        run(["analyze", "--json", "--csv", str(speech_wav)], server_env)
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


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
    assert run(["analyze", str(speech_wav)], environ) == 0, capsys.readouterr().err
    assert any("Speech" in line for line in capsys.readouterr().out.splitlines())


def test_a_missing_file_is_a_one_line_error(
    server_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.wav"
    assert run(["analyze", str(missing)], server_env) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"error: {missing}: no such file"]
    assert captured.out == ""
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    assert run(["analyze", str(folder)], server_env) == 1
    assert capsys.readouterr().err.splitlines() == [f"error: {folder}: is a directory"]
    assert run(["analyze", "--json", str(missing)], server_env) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out) == [{"file": str(missing), "error": "no such file"}]
    assert captured.err.splitlines() == [f"error: {missing}: no such file"]
    assert run(["stream", str(missing)], server_env) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {missing} is not a file"]
