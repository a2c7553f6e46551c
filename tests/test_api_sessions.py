"""End to end over real HTTP with the real model: what a user sees."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

from tests.conftest import RAW_S16, SAMPLE_RATE_HZ, Api, s16, tone

HALF_SECOND = SAMPLE_RATE_HZ // 2


def tags_of(result: dict) -> list[str]:
    return [tag["name"] for tag in result["tags"]]


async def stream_samples(api: Api, samples: np.ndarray, chunk_samples: int = HALF_SECOND) -> str:
    created = await api.create(type="stream", content_type=RAW_S16)
    session_id = created["session_id"]
    data = s16(samples)
    step = chunk_samples * 2
    for seq, start in enumerate(range(0, len(data), step)):
        refs = await api.put(session_id, seq, data[start : start + step])
        assert refs == {"session_id": session_id, "chunk_sequence": seq + 1}
    await api.readonly(session_id)
    return session_id


async def test_create_reports_window_geometry(api: Api) -> None:
    created = await api.create(type="stream", content_type=RAW_S16)
    assert created["chunk_sequence"] == 0
    assert len(created["session_id"]) >= 22  # >= 128 random bits, url-safe
    assert created["window_size"] == 0.975
    assert created["window_hop"] == 0.5
    hop1 = await api.create(type="stream", content_type=RAW_S16, window_hop="1s")
    assert hop1["window_hop"] == 1.0


async def test_speech_is_tagged_speech(api: Api, speech_16k: np.ndarray) -> None:
    session_id = await stream_samples(api, speech_16k)
    results = await api.all_results(session_id)
    speech_windows = [r for r in results if "Speech" in tags_of(r)]
    assert len(speech_windows) >= 0.7 * len(results), results
    assert tags_of(speech_windows[0])[0] == "Speech"


async def test_tone_is_not_speech(api: Api) -> None:
    session_id = await stream_samples(api, tone(440.0, 4.0))
    results = await api.all_results(session_id)
    assert results
    assert all("Speech" not in tags_of(r) for r in results), results


async def test_silence_gives_others(api: Api) -> None:
    session_id = await stream_samples(api, np.zeros(3 * SAMPLE_RATE_HZ, dtype=np.float32))
    results = await api.all_results(session_id)
    assert results
    assert all(tags_of(r) == ["Others"] for r in results), results


async def test_ten_second_stream_yields_windows_in_order(api: Api) -> None:
    """0.975 s windows every 0.5 s: 19 complete windows while streaming 10 s, and one more,
    zero-padded, once the stream ends."""
    created = await api.create(type="stream", content_type=RAW_S16)
    session_id = created["session_id"]
    data = s16(tone(1000.0, 10.0, 0.2))
    for seq in range(20):
        await api.put(session_id, seq, data[seq * HALF_SECOND * 2 : (seq + 1) * HALF_SECOND * 2])
    while True:  # long-poll until the 19 live windows are in
        page = await api.status(session_id, offset=0, count=100)
        if page["inference"]["page"]["total"] == 19 and not page["inference"]["in_progress"]:
            break
    assert len(page["inference"]["results"]) == 19
    await api.readonly(session_id)
    results = await api.all_results(session_id)
    assert [r["start_time"] for r in results] == [i * 0.5 for i in range(20)]
    assert all(abs(r["end_time"] - r["start_time"] - 0.975) < 1e-9 for r in results)


async def test_first_window_arrives_with_the_chunk_that_completes_it(api: Api) -> None:
    created = await api.create(type="stream", content_type=RAW_S16)
    session_id = created["session_id"]
    data = s16(tone(1000.0, 1.5, 0.2))
    await api.put(session_id, 0, data[: HALF_SECOND * 2])
    early = await api.client.get(f"/api/v1/audio_sessions/{session_id}/results")  # never waits
    assert (await early.json())["data"] == []  # 0.5 s: no window yet
    await api.put(session_id, 1, data[HALF_SECOND * 2 : HALF_SECOND * 4])
    page = await api.status(session_id)  # waits (long-poll) for the window 1.0 s completes
    assert len(page["inference"]["results"]) == 1


async def test_wav_stream_and_wav_file(api: Api, speech_16k: np.ndarray) -> None:
    buffer = io.BytesIO()
    sf.write(
        buffer, speech_16k[: 2 * SAMPLE_RATE_HZ], SAMPLE_RATE_HZ, format="WAV", subtype="PCM_16"
    )
    wav = buffer.getvalue()
    stream = await api.create(type="stream", content_type="audio/wav")
    await api.put(stream["session_id"], 0, wav)
    await api.readonly(stream["session_id"])
    file = await api.create(type="file", content_type="audio/wav")
    half = len(wav) // 2
    await api.put(file["session_id"], 0, wav[:half])
    await api.put(file["session_id"], 1, wav[half:])
    before = await api.status(file["session_id"])
    assert before["inference"]["results"] == []  # files are inferred once readonly
    await api.readonly(file["session_id"])
    stream_results = await api.all_results(stream["session_id"])
    file_results = await api.all_results(file["session_id"])
    assert len(file_results) == 4  # 1 + ceil((2 s - 0.975 s) / 0.5 s), the last one padded
    assert stream_results == file_results


async def test_paging_with_offset_count_and_token(api: Api) -> None:
    session_id = await stream_samples(api, tone(700.0, 6.0, 0.3))
    everything = await api.all_results(session_id)
    assert len(everything) == 12
    page = await api.status(session_id, offset=3, count=4)
    assert page["inference"]["page"]["offset"] == 3
    assert page["inference"]["page"]["count"] == 4
    assert page["inference"]["page"]["total"] == 12
    assert page["inference"]["results"] == everything[3:7]
    walked = []
    page = await api.status(session_id, count=2)
    while True:
        walked.extend(page["inference"]["results"])
        assert page["inference"]["page"]["count"] <= 2
        token = page["inference"]["page"].get("next_token")
        if not token:
            break
        page = await api.status(session_id, next_token=token, offset=999, count=999)
    assert walked == everything
