"""A custom detector trained and run through the HTTP API, exactly as a Relay user does it.

Against a real ``tympan serve`` on loopback, with Python ``requests`` and the reference's routes
and fields (relay-workflow Steps 2-6): create a dataset with the ``glitch`` and ``long_pause``
artifact types, upload the train part of the TTS-artifact set (``benchmarks/tts_artifacts.py``)
through pre-signed forms and wait for processing, annotate it in bulk, publish, train one
model per seed, then upload the test part (other voices, rates and texts) to an inference job
per model and score its detections against the test labels.

Reported per type and seed: event precision, recall and F1 (onset collar 20 ms, offset collar
max(20 ms, 20 % of the reference's duration): ``models.heads.metrics``), |onset| and |offset|
error p50/p90 of matched detections; per seed the training wall time and the server's CPU
seconds while training (the server and its children: training runs in a child process);
inference speed as the server's CPU seconds per audio second for the inference job, against
the same for a YAMNet file session on the same test audio, measured in the same run; and
whether training the first seed again gives the same metrics and the same detections.

    .venv/bin/python -m benchmarks.custom_detector_api --seeds 0,1,2 \\
        --out benchmarks/out/custom_detector_api
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import requests
import soundfile as sf

from benchmarks.harness.server import ManagedServer, ServerHandle
from benchmarks.machine import machine_info
from benchmarks.tts_artifacts import RATE, SyntheticFile, build_set
from models.heads.metrics import COLLAR_MS, EMPTY_SCORE, match_events, score_events

__all__ = ["main", "score_detections", "tree_cpu_seconds"]

TYPES = ("glitch", "long_pause")
_API = "/api/v1"
_POLL_S = 0.5
_TIMEOUT_S = 1800.0
_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_SESSION_CHUNK_BYTES = 1024 * 1024


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and every live descendant (training and processing
    run in child processes), plus what its finished children were charged."""
    stats: dict[int, tuple[int, float, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        own = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS_PER_S
        waited = (int(fields[13]) + int(fields[14])) / _CLOCK_TICKS_PER_S
        stats[int(entry.name)] = (int(fields[1]), own, waited)
    total, frontier, seen = 0.0, [pid], set()
    while frontier:
        current = frontier.pop()
        if current in seen or current not in stats:
            continue
        seen.add(current)
        total += stats[current][1] + stats[current][2]
        frontier += [child for child, (parent, _, _) in stats.items() if parent == current]
    return total


def _wav(file: SyntheticFile) -> bytes:
    out = io.BytesIO()
    sf.write(out, file.samples, RATE, format="WAV", subtype="PCM_16")
    return out.getvalue()


class _Relay:
    """The reference's calls, as its examples make them."""

    def __init__(self, handle: ServerHandle) -> None:
        self.base = handle.url + _API
        self.http = requests.Session()
        self.http.headers["X-API-Key"] = handle.api_key

    def call(self, method: str, path: str, expect: int = 200, **kw: Any) -> Any:
        response = self.http.request(method, self.base + path, timeout=120, **kw)
        if response.status_code != expect:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None

    def wait(self, path: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + _TIMEOUT_S
        while time.monotonic() < deadline:
            body = self.call("GET", path)
            if done(body):
                return dict(body)
            time.sleep(_POLL_S)
        raise TimeoutError(path)

    def upload(self, form: dict[str, Any], data: bytes, filename: str) -> None:
        fields = form.get("fields", form.get("upload_fields"))
        response = requests.post(
            form["upload_url"], data=fields, files={"file": (filename, data)}, timeout=120
        )
        if response.status_code not in (200, 201, 204):
            raise RuntimeError(f"upload: {response.status_code} {response.text[:300]}")


def _dataset(relay: _Relay, train: list[SyntheticFile]) -> tuple[str, str]:
    dataset = relay.call(
        "POST",
        "/datasets",
        201,
        json={
            "name": "TTS artifacts",
            "description": "glitches and long pauses in TTS output",
            "artifact_types": [
                {"name": "glitch", "description": "click, pop or dropout", "color": "#FF4444"},
                {"name": "long_pause", "description": "unnatural pause", "color": "#4444FF"},
            ],
        },
    )
    dataset_id = dataset["id"]
    audio_ids = {}
    for file in train:
        data = _wav(file)
        form = relay.call(
            "POST",
            f"/datasets/{dataset_id}/audio/upload-url",
            json={
                "filename": file.name + ".wav",
                "content_type": "audio/wav",
                "file_size": len(data),
            },
        )
        relay.upload(form, data, file.name + ".wav")
        relay.call(
            "POST", f"/datasets/{dataset_id}/audio/confirm", json={"audio_id": form["audio_id"]}
        )
        audio_ids[file.name] = form["audio_id"]
    for audio_id in audio_ids.values():
        audio = relay.wait(
            f"/datasets/{dataset_id}/audio/{audio_id}",
            lambda a: a["processing_status"] in ("ready", "failed"),
        )
        if audio["processing_status"] != "ready":
            raise RuntimeError(f"processing failed: {audio['processing_error']}")
    annotation_set = relay.call("POST", f"/datasets/{dataset_id}/annotation-sets", 201)
    set_id = annotation_set["id"]
    items = [
        {
            "audio_file_id": audio_ids[file.name],
            "artifact_type": kind,
            "start_ms": round(start, 3),
            "end_ms": round(end, 3),
            "confidence": 1.0,
        }
        for file in train
        for kind, start, end in file.annotations
    ]
    for first in range(0, len(items), 5000):
        relay.call(
            "POST",
            f"/datasets/{dataset_id}/annotation-sets/{set_id}/annotations/bulk",
            201,
            json={"annotations": items[first : first + 5000]},
        )
    relay.call("POST", f"/datasets/{dataset_id}/annotation-sets/{set_id}/publish")
    return dataset_id, set_id


def _train(
    relay: _Relay, handle: ServerHandle, dataset_id: str, set_id: str, seed: int
) -> dict[str, Any]:
    assert handle.pid is not None
    cpu0, wall0 = tree_cpu_seconds(handle.pid), time.monotonic()
    job = relay.call(
        "POST",
        "/training-jobs",
        201,
        json={
            "dataset_id": dataset_id,
            "annotation_set_id": set_id,
            "config": {
                "artifact_types": list(TYPES),
                "epochs": 20,
                "validation_split": 0.2,
                "learning_rate": 0.001,
                "batch_size": 32,
                "seed": seed,
            },
        },
    )
    done = relay.wait(
        f"/training-jobs/{job['id']}", lambda j: j["status"] in ("completed", "failed", "canceled")
    )
    if done["status"] != "completed":
        raise RuntimeError(f"training {done['status']}: {done.get('error_message')}")
    return {
        "job": done,
        "wall_s": time.monotonic() - wall0,
        "server_cpu_s": tree_cpu_seconds(handle.pid) - cpu0,
    }


def _infer(
    relay: _Relay, handle: ServerHandle, model_id: str, test: list[SyntheticFile]
) -> dict[str, Any]:
    assert handle.pid is not None
    job = relay.call("POST", "/inference-jobs", 201, json={"model_id": model_id, "config": {}})
    bodies = [(file, _wav(file)) for file in test]
    cpu0 = tree_cpu_seconds(handle.pid)
    for file, data in bodies:
        form = relay.call(
            "POST",
            f"/inference-jobs/{job['id']}/files/upload-url",
            json={
                "filename": file.name + ".wav",
                "content_type": "audio/wav",
                "file_size_bytes": len(data),
            },
        )
        relay.upload(form, data, file.name + ".wav")
        relay.call(
            "POST", f"/inference-jobs/{job['id']}/files/confirm", json={"file_id": form["file_id"]}
        )
    done = relay.wait(
        f"/inference-jobs/{job['id']}",
        lambda j: j["processed_files"] >= len(test) or j["status"] in ("failed", "canceled"),
    )
    return {"job": done, "server_cpu_s": tree_cpu_seconds(handle.pid) - cpu0}


def _yamnet_cpu(relay: _Relay, handle: ServerHandle, test: list[SyntheticFile]) -> float:
    """Server CPU seconds for the same audio as YAMNet file sessions (create, chunks, read)."""
    assert handle.pid is not None
    cpu0 = tree_cpu_seconds(handle.pid)
    sessions = relay.base + "/audio_sessions"
    for file in test:
        data = _wav(file)
        created = relay.call(
            "POST", "/audio_sessions/", json={"type": "file", "content_type": "audio/wav"}
        )
        sid = created["session_id"]
        for seq, start in enumerate(range(0, len(data), _SESSION_CHUNK_BYTES)):
            chunk = base64.b64encode(data[start : start + _SESSION_CHUNK_BYTES]).decode()
            relay.http.put(f"{sessions}/{sid}/chunks/{seq}", json={"data": chunk}, timeout=60)
        relay.http.patch(f"{sessions}/{sid}", json={"make_readonly": True}, timeout=60)
        relay.wait(
            f"/audio_sessions/{sid}/status?count=1",
            lambda s: s["state"] == "readonly" and not s["inference"]["in_progress"],
        )
    return tree_cpu_seconds(handle.pid) - cpu0


def score_detections(
    test: Iterable[SyntheticFile], files: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per type: P, R, F1 and the |onset|/|offset| errors of matched detections, in ms."""
    by_name = {f["original_filename"].removesuffix(".wav"): f for f in files}
    out: dict[str, dict[str, Any]] = {}
    for kind in TYPES:
        score, onsets, offsets = EMPTY_SCORE, [], []
        for file in test:
            reference = [(s, e) for k, s, e in file.annotations if k == kind]
            found = [
                (float(d["start_ms"]), float(d["end_ms"]))
                for d in by_name[file.name]["detections"]
                if d["artifact_type"] == kind
            ]
            score = score + score_events(reference, found)
            for i, j in match_events(reference, found):
                onsets.append(abs(found[j][0] - reference[i][0]))
                offsets.append(abs(found[j][1] - reference[i][1]))
        out[kind] = {
            "precision": round(score.precision, 3),
            "recall": round(score.recall, 3),
            "f1": round(score.f1, 3),
            "events": score.true_positives + score.false_negatives,
            "detections": score.true_positives + score.false_positives,
            "onset_error_ms_p50_p90": _p50_p90(onsets),
            "offset_error_ms_p50_p90": _p50_p90(offsets),
        }
    return out


def _p50_p90(values: list[float]) -> list[float] | None:
    if not values:
        return None
    return [round(float(np.percentile(values, q)), 1) for q in (50, 90)]


def _detections(job: dict[str, Any]) -> list[Any]:
    return sorted(
        (f["original_filename"], [sorted(d.items()) for d in f["detections"]]) for f in job["files"]
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    seeds = [int(s) for s in args.seeds.split(",")]
    train = build_set("train", args.train_files, args.data_seed)
    test = build_set("test", args.test_files, args.data_seed)
    audio_s = sum(f.samples.size for f in test) / RATE
    result: dict[str, Any] = {
        "machine": machine_info(),
        "command": "python -m benchmarks.custom_detector_api " + " ".join(args.argv),
        "collar_ms": COLLAR_MS,
        "train_files": len(train),
        "test_files": len(test),
        "test_audio_s": round(audio_s, 1),
        "runs": [],
    }
    with ManagedServer() as handle:
        relay = _Relay(handle)
        dataset_id, set_id = _dataset(relay, train)
        yamnet_cpu_s = _yamnet_cpu(relay, handle, test)
        result["yamnet_server_cpu_s_per_audio_s"] = round(yamnet_cpu_s / audio_s, 5)
        first: tuple[dict[str, Any], list[Any]] | None = None
        for seed in seeds:
            trained = _train(relay, handle, dataset_id, set_id, seed)
            inferred = _infer(relay, handle, trained["job"]["model_id"], test)
            per_audio_s = inferred["server_cpu_s"] / audio_s
            run_result = {
                "seed": seed,
                "test": score_detections(test, inferred["job"]["files"]),
                "validation_metrics": trained["job"]["metrics"],
                "training_wall_s": round(trained["wall_s"], 1),
                "training_server_cpu_s": round(trained["server_cpu_s"], 1),
                "inference_server_cpu_s_per_audio_s": round(per_audio_s, 5),
                "inference_vs_yamnet_cpu": round(per_audio_s / (yamnet_cpu_s / audio_s), 3),
            }
            result["runs"].append(run_result)
            print(json.dumps(run_result["test"]), flush=True)
            if first is None:
                first = (trained["job"]["metrics"], _detections(inferred["job"]))
        if first is not None:
            again = _train(relay, handle, dataset_id, set_id, seeds[0])
            inferred = _infer(relay, handle, again["job"]["model_id"], test)
            result["reproducible"] = {
                "seed": seeds[0],
                "same_metrics": again["job"]["metrics"] == first[0],
                "same_detections": _detections(inferred["job"]) == first[1],
            }
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--train-files", type=int, default=40)
    parser.add_argument("--test-files", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/custom_detector_api"))
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
