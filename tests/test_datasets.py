"""The Datasets API over real HTTP on loopback, against the real app and real SQLite: Relay's
Steps 2 and 4 with ``requests`` (only the base URL changed), team isolation, every annotation
rule with the item's index, all-or-nothing bulk writes, publication (immutable, idempotent hash,
negative evidence), and removal of a dataset with everything hanging off it.

Ready audio files are rows written with the real audio file repository (uploads and their
processing are another part of the issue): real storage, no mock."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import requests
from aiohttp.test_utils import TestClient
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from protocol.annotations import MAX_BULK_ANNOTATIONS, content_hash
from protocol.datasets_openapi import datasets_openapi_document
from server.app import create_app
from server.appkeys import BLOBS, KEYS, STORE
from server.config import Settings
from server.datasets.repository import AudioFileRecord, AudioStatus, SqliteAudioFileRepository
from server.storage import team_key
from tests.test_media import host_of

REFERENCE_AUDIO_ID = "456e7890-e89b-12d3-a456-426614174001"
# Relay's reference bodies, as its curl examples send them.
STEP_2_BODY = """{
"name": "TTS Glitch Detection",
"description": "Detect glitches and pauses in TTS output",
"artifact_types": [
{"name": "glitch", "description": "Audio pop or click", "color": "#FF4444"},
{"name": "long_pause", "description": "Unnatural pause > 500ms", "color": "#4444FF"}
]
}"""
STEP_4_BULK_BODY = """{
"annotations": [
{
"audio_file_id": "456e7890-e89b-12d3-a456-426614174001",
"artifact_type": "glitch",
"start_ms": 1200,
"end_ms": 1450,
"confidence": 1.0
},
{
"audio_file_id": "456e7890-e89b-12d3-a456-426614174001",
"artifact_type": "long_pause",
"start_ms": 3500,
"end_ms": 4200,
"confidence": 1.0
}
]
}"""


DOC = datasets_openapi_document()
ROUTES = [
    (re.compile("^" + re.sub(r"\{[a-z_]+\}", "[^/]+", path) + "$"), item)
    for path, item in DOC["paths"].items()
]


def check_documented(method: str, path: str, status: int, body: Any) -> None:
    """The answer is one the document gives for this operation and status, body included."""
    item = next(item for pattern, item in ROUTES if pattern.match(path))
    documented = item[method.lower()]["responses"].get(str(status))
    assert documented is not None, f"{method} {path} answered undocumented {status}"
    if "$ref" in documented:
        documented = DOC["components"]["responses"][documented["$ref"].rsplit("/", 1)[1]]
    if "content" not in documented:
        assert body is None
        return
    schema = {
        **documented["content"]["application/json"]["schema"],
        "components": DOC["components"],
    }
    OAS30Validator(schema, format_checker=oas30_format_checker).validate(body)


@pytest.fixture
async def datasets_client(
    aiohttp_client: Callable[..., Any], media_settings: Settings, api_key: str
) -> TestClient:
    client: TestClient = await aiohttp_client(create_app(media_settings))
    return client


class Api:
    """The Datasets API for one key: each call asserts the status it expects."""

    def __init__(self, client: TestClient, key: str) -> None:
        self.client = client
        self.key = key

    @property
    def team(self) -> str:
        return str(self.client.app[KEYS].authenticate(self.key).key_id)

    async def call(
        self, method: str, path: str, expect: int, body: Any = None, **params: Any
    ) -> Any:
        response = await self.client.request(
            method,
            "/api/v1/datasets" + path,
            json=body,
            params=params or None,
            headers={"X-API-Key": self.key},
        )
        payload = await response.read()
        assert response.status == expect, (method, path, response.status, payload[:500])
        answer = None if response.status == 204 else json.loads(payload)
        check_documented(method, "/datasets" + path.split("?")[0], response.status, answer)
        if answer is None:
            return None
        if response.status >= 400:
            assert answer["status_code"] == response.status and answer["error"]
        return answer

    async def dataset(self, *types: str) -> str:
        kinds = [{"name": name, "color": "#112233"} for name in types or ("glitch", "long_pause")]
        created = await self.call("POST", "", 201, {"name": "d", "artifact_types": kinds})
        return str(created["id"])

    async def audio(
        self,
        dataset_id: str,
        audio_id: str,
        status: AudioStatus = "ready",
        duration_ms: int = 10_000,
    ) -> AudioFileRecord:
        """An audio file row as the audio pipeline leaves it, in the real repository."""
        record = AudioFileRecord(
            audio_id, self.team, dataset_id, f"{audio_id}.wav", "audio/wav", 1000,
            team_key(self.team, f"datasets/{dataset_id}/{audio_id}.wav"), status, 1.0, 1.0,
            duration_ms=duration_ms if status == "ready" else None,
        )  # fmt: skip
        await SqliteAudioFileRepository(self.client.app[STORE]).create(record)
        return record

    async def draft(self, dataset_id: str, body: Any = None) -> str:
        created = await self.call("POST", f"/{dataset_id}/annotation-sets", 201, body)
        assert created["status"] == "draft" and "content_hash" not in created
        return str(created["id"])

    async def bulk(self, dataset_id: str, set_id: str, items: list[Any], expect: int = 201) -> Any:
        return await self.call(
            "POST",
            f"/{dataset_id}/annotation-sets/{set_id}/annotations/bulk",
            expect,
            {"annotations": items},
        )

    async def annotations(self, dataset_id: str, set_id: str, **params: Any) -> Any:
        return await self.call(
            "GET", f"/{dataset_id}/annotation-sets/{set_id}/annotations", 200, **params
        )

    async def publish(self, dataset_id: str, set_id: str) -> Any:
        return await self.call("POST", f"/{dataset_id}/annotation-sets/{set_id}/publish", 200)


def mark(audio_id: str, kind: str = "glitch", start_ms: int = 0, end_ms: int = 100) -> Any:
    return {
        "audio_file_id": audio_id,
        "artifact_type": kind,
        "start_ms": start_ms,
        "end_ms": end_ms,
    }


def step_2(base_url: str, api_key: str) -> requests.Response:
    """Relay's Step 2 with requests, only the base URL changed."""
    return requests.post(
        f"{base_url}/api/v1/datasets",
        headers={"X-API-Key": api_key, "Content-Type": "application/json"},
        data=STEP_2_BODY,
        timeout=30,
    )


def step_4(base_url: str, api_key: str, dataset_id: str) -> list[requests.Response]:
    """Relay's Step 4 with requests: create a set (no body), add annotations, publish."""
    created = requests.post(
        f"{base_url}/api/v1/datasets/{dataset_id}/annotation-sets",
        headers={"X-API-Key": api_key},
        timeout=30,
    )
    annotation_set_id = created.json()["id"]
    added = requests.post(
        f"{base_url}/api/v1/datasets/{dataset_id}/annotation-sets/{annotation_set_id}"
        "/annotations/bulk",
        headers={"X-API-Key": api_key, "Content-Type": "application/json"},
        data=STEP_4_BULK_BODY,
        timeout=30,
    )
    published = requests.post(
        f"{base_url}/api/v1/datasets/{dataset_id}/annotation-sets/{annotation_set_id}/publish",
        headers={"X-API-Key": api_key},
        timeout=30,
    )
    return [created, added, published]


async def test_reference_steps_2_and_4_with_requests(
    datasets_client: TestClient, api_key: str
) -> None:
    api = Api(datasets_client, api_key)
    base_url = host_of(datasets_client)
    response = await asyncio.to_thread(step_2, base_url, api_key)
    assert response.status_code == 201
    dataset = response.json()
    assert set(dataset) == {
        "id", "name", "description", "artifact_types", "created_at", "updated_at",
    }  # fmt: skip
    expected = json.loads(STEP_2_BODY)
    assert dataset["name"] == expected["name"]
    assert dataset["description"] == expected["description"]
    assert dataset["artifact_types"] == expected["artifact_types"]
    assert dataset["created_at"] == dataset["updated_at"]
    assert datetime.fromisoformat(dataset["created_at"]).utcoffset() == timedelta(0)
    # Step 3 (upload and processing) leaves the reference's file ready in the dataset.
    await api.audio(dataset["id"], REFERENCE_AUDIO_ID)
    created, added, published = await asyncio.to_thread(step_4, base_url, api_key, dataset["id"])
    assert created.status_code == 201 and created.json()["status"] == "draft"
    assert added.status_code == 201 and added.json()["created"] == 2
    sent = json.loads(STEP_4_BULK_BODY)["annotations"]
    answered = [{k: v for k, v in a.items() if k != "id"} for a in added.json()["annotations"]]
    assert answered == sent
    assert published.status_code == 200
    answer = published.json()
    assert answer["status"] == "published" and answer["published_at"]
    assert (answer["annotation_count"], answer["audio_file_count"]) == (2, 1)
    assert answer["content_hash"] == content_hash(
        [REFERENCE_AUDIO_ID],
        ["glitch", "long_pause"],
        [(a["audio_file_id"], a["artifact_type"], a["start_ms"], a["end_ms"], 1.0) for a in sent],
    )
    assert await api.call("GET", f"/{dataset['id']}", 200) == dataset


async def test_bearer_key_works_and_no_key_is_401(
    datasets_client: TestClient, api_key: str
) -> None:
    response = await datasets_client.get(
        "/api/v1/datasets", headers={"Authorization": f"Bearer {api_key}"}
    )
    assert response.status == 200
    assert (await response.json())["items"] == []
    response = await datasets_client.post("/api/v1/datasets", json={"name": "x"})
    assert response.status == 401 and (await response.json())["status_code"] == 401


async def test_datasets_are_paged_newest_first_and_validated(
    datasets_client: TestClient, api_key: str
) -> None:
    api = Api(datasets_client, api_key)
    ids = [await api.dataset() for _ in range(3)]
    page = await api.call("GET", "", 200, limit=2)
    assert [d["id"] for d in page["items"]] == ids[::-1][:2]
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 0)
    rest = await api.call("GET", "", 200, limit=2, offset=2)
    assert [d["id"] for d in rest["items"]] == ids[:1]
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"limit": "x"}):
        error = await api.call("GET", "", 400, **bad)
        assert next(iter(bad)) in error["error"]
    ok = {"name": "n", "artifact_types": [{"name": "glitch", "color": "#ff4444"}]}
    cases = [
        ({**ok, "name": ""}, "name"),
        ({**ok, "name": "x" * 201}, "name"),
        ({**ok, "description": "x" * 2001}, "description"),
        ({"name": "n"}, "artifact_types is required"),
        ({**ok, "artifact_types": []}, "at least one"),
        ({**ok, "artifact_types": [{"name": "a b"}]}, "artifact_types[0].name"),
        ({**ok, "artifact_types": [{"name": "x" * 65}]}, "artifact_types[0].name"),
        ({**ok, "artifact_types": [{"name": "g", "color": "red"}]}, "#RRGGBB"),
        ({**ok, "artifact_types": [{"name": "g", "color": "#12345G"}]}, "#RRGGBB"),
        (
            {**ok, "artifact_types": [{"name": "g"}, {"name": "h"}, {"name": "g"}]},
            "the name 'g' twice (items 0 and 2)",
        ),
        ([1], "JSON object"),
    ]
    for body, needle in cases:
        error = await api.call("POST", "", 400, body)
        assert needle in error["error"], (body, error)
    made = await api.call("POST", "", 201, ok)
    assert made["artifact_types"] == [{"name": "glitch", "description": "", "color": "#ff4444"}]


async def test_patch_changes_a_dataset_and_keeps_types_annotations_use(
    datasets_client: TestClient, api_key: str
) -> None:
    api = Api(datasets_client, api_key)
    dataset_id = await api.dataset("glitch", "click")
    await api.audio(dataset_id, "a1")
    set_id = await api.draft(dataset_id)
    await api.bulk(dataset_id, set_id, [mark("a1", "glitch")])
    renamed = await api.call("PATCH", f"/{dataset_id}", 200, {"name": "new", "description": "d"})
    assert (renamed["name"], renamed["description"]) == ("new", "d")
    assert renamed["updated_at"] >= renamed["created_at"]
    types = [{"name": "glitch", "color": "#000000"}, {"name": "pop"}]
    changed = await api.call("PATCH", f"/{dataset_id}", 200, {"artifact_types": types})
    assert [t["name"] for t in changed["artifact_types"]] == ["glitch", "pop"]  # click: unused
    error = await api.call("PATCH", f"/{dataset_id}", 409, {"artifact_types": [{"name": "pop"}]})
    assert "glitch" in error["error"]
    error = await api.call("PATCH", f"/{dataset_id}", 400, {"name": ""})
    assert "name" in error["error"]
    assert (await api.call("GET", f"/{dataset_id}", 200))["name"] == "new"


async def test_another_teams_datasets_and_sets_are_404(
    datasets_client: TestClient, api_key: str, other_key: str
) -> None:
    mine, theirs = Api(datasets_client, api_key), Api(datasets_client, other_key)
    dataset_id = await mine.dataset()
    await mine.audio(dataset_id, "a1")
    set_id = await mine.draft(dataset_id)
    created = await mine.bulk(dataset_id, set_id, [mark("a1")])
    annotation_id = created["annotations"][0]["id"]
    base = f"/{dataset_id}/annotation-sets/{set_id}"
    for method, path, body in [
        ("GET", f"/{dataset_id}", None),
        ("PATCH", f"/{dataset_id}", {"name": "x"}),
        ("DELETE", f"/{dataset_id}", None),
        ("POST", f"/{dataset_id}/annotation-sets", None),
        ("GET", f"/{dataset_id}/annotation-sets", None),
        ("GET", base, None),
        ("PATCH", base, {"name": "x"}),
        ("DELETE", base, None),
        ("POST", base + "/annotations/bulk", {"annotations": [mark("a1")]}),
        ("GET", base + "/annotations", None),
        ("GET", f"{base}/annotations/{annotation_id}", None),
        ("PATCH", f"{base}/annotations/{annotation_id}", {"end_ms": 50}),
        ("DELETE", f"{base}/annotations/{annotation_id}", None),
        ("POST", base + "/publish", None),
    ]:
        await theirs.call(method, path, 404, body)
    assert (await theirs.call("GET", "", 200))["total"] == 0
    # Their own dataset cannot name my file either.
    their_dataset = await theirs.dataset()
    their_set = await theirs.draft(their_dataset)
    error = await theirs.bulk(their_dataset, their_set, [mark("a1")], expect=400)
    assert (
        "annotations[0].audio_file_id 'a1' is not an audio file of this dataset" in (error["error"])
    )
    assert (await mine.annotations(dataset_id, set_id))["total"] == 1
    assert (await mine.call("GET", base, 200))["status"] == "draft"


async def test_every_annotation_rule_names_the_item_and_nothing_is_written(
    datasets_client: TestClient, api_key: str
) -> None:
    api = Api(datasets_client, api_key)
    dataset_id = await api.dataset()
    other_dataset = await api.dataset()
    await api.audio(dataset_id, "ready", duration_ms=5000)
    await api.audio(dataset_id, "pending", status="pending")
    await api.audio(other_dataset, "elsewhere")
    set_id = await api.draft(dataset_id)
    good = mark("ready", "glitch", 0, 100)
    cases = [
        (mark("nope"), "annotations[3].audio_file_id 'nope' is not an audio file of this dataset"),
        (mark("elsewhere"), "'elsewhere' is not an audio file of this dataset"),
        (mark("pending"), "annotations[3].audio_file_id 'pending' is not ready"),
        (mark("ready", "hum"), "annotations[3].artifact_type 'hum' is not an artifact type"),
        (mark("ready", start_ms=100, end_ms=100), "annotations[3] has start_ms 100 not before"),
        (mark("ready", start_ms=200, end_ms=100), "annotations[3] has start_ms 200 not before"),
        (mark("ready", start_ms=-1), "annotations[3].start_ms"),
        (mark("ready", end_ms=5001), "annotations[3].end_ms 5001 is beyond the end"),
        ({**good, "confidence": 1.5}, "annotations[3].confidence must be a number from 0 to 1"),
        ({**good, "confidence": -0.1}, "annotations[3].confidence"),
        ({**good, "confidence": "high"}, "annotations[3].confidence"),
        ({**good, "start_ms": 1.5}, "annotations[3].start_ms"),
        ({**good, "audio_file_id": None}, "annotations[3].audio_file_id"),
        ({"artifact_type": "glitch", "start_ms": 0, "end_ms": 1}, "annotations[3].audio_file_id"),
    ]
    for bad, needle in cases:
        error = await api.bulk(dataset_id, set_id, [good, good, good, bad, good], expect=400)
        assert needle in error["error"], (bad, error)
        assert (await api.annotations(dataset_id, set_id))["total"] == 0
    error = await api.bulk(dataset_id, set_id, [mark("nope"), mark("ready", "hum")], expect=400)
    assert "annotations[0]" in error["error"] and "annotations[1]" in error["error"]
    for body in ({}, {"annotations": []}, {"annotations": "x"}, []):
        await api.call(
            "POST", f"/{dataset_id}/annotation-sets/{set_id}/annotations/bulk", 400, body
        )
    ok = await api.bulk(dataset_id, set_id, [good, mark("ready", end_ms=5000)])
    assert [a["confidence"] for a in ok["annotations"]] == [1.0, 1.0]  # the default
    assert (await api.annotations(dataset_id, set_id))["total"] == 2


async def test_ten_thousand_annotations_in_one_request_and_not_one_more(
    datasets_client: TestClient, api_key: str
) -> None:
    api = Api(datasets_client, api_key)
    dataset_id = await api.dataset()
    await api.audio(dataset_id, "long", duration_ms=MAX_BULK_ANNOTATIONS * 10)
    set_id = await api.draft(dataset_id)
    items = [mark("long", "glitch", 10 * i, 10 * i + 5) for i in range(MAX_BULK_ANNOTATIONS)]
    error = await api.bulk(dataset_id, set_id, [*items, mark("long")], expect=400)
    assert "10001 annotations; at most 10000 per request" in error["error"]
    created = await api.bulk(dataset_id, set_id, items)
    assert created["created"] == MAX_BULK_ANNOTATIONS == len(created["annotations"])
    page = await api.annotations(dataset_id, set_id, limit=1000, offset=9500)
    assert page["total"] == MAX_BULK_ANNOTATIONS and len(page["items"]) == 500
    assert page["items"][-1]["start_ms"] == 10 * (MAX_BULK_ANNOTATIONS - 1)


async def test_annotations_are_listed_filtered_and_changed_while_draft(
    datasets_client: TestClient, api_key: str
) -> None:
    api = Api(datasets_client, api_key)
    dataset_id = await api.dataset()
    await api.audio(dataset_id, "a", duration_ms=3000)
    await api.audio(dataset_id, "b")
    set_id = await api.draft(dataset_id, {"name": "first pass"})
    created = await api.bulk(
        dataset_id,
        set_id,
        [mark("b", "glitch", 5, 9), mark("a", "long_pause", 10, 20), mark("a", "glitch", 0, 5)],
    )
    ids = [a["id"] for a in created["annotations"]]
    listed = await api.annotations(dataset_id, set_id)
    assert [a["id"] for a in listed["items"]] == [ids[2], ids[1], ids[0]]  # by file, start
    only_a = await api.annotations(dataset_id, set_id, audio_file_id="a")
    assert only_a["total"] == 2
    glitches = await api.annotations(dataset_id, set_id, artifact_type="glitch", limit=1)
    assert glitches["total"] == 2 and len(glitches["items"]) == 1
    path = f"/{dataset_id}/annotation-sets/{set_id}/annotations/{ids[1]}"
    assert (await api.call("GET", path, 200))["start_ms"] == 10
    changed = await api.call("PATCH", path, 200, {"end_ms": 3000, "confidence": 0.5})
    assert (changed["start_ms"], changed["end_ms"], changed["confidence"]) == (10, 3000, 0.5)
    error = await api.call("PATCH", path, 400, {"end_ms": 3001})
    assert "the annotation.end_ms 3001 is beyond the end" in error["error"]
    error = await api.call("PATCH", path, 400, {"start_ms": 3000})
    assert "start_ms 3000 not before end_ms 3000" in error["error"]
    await api.call("PATCH", path, 400, {"artifact_type": "hum"})
    await api.call("DELETE", path, 204)
    await api.call("GET", path, 404)
    await api.call("DELETE", path, 404)
    sets = await api.call("GET", f"/{dataset_id}/annotation-sets", 200)
    assert sets["total"] == 1 and sets["items"][0]["name"] == "first pass"
    assert (sets["items"][0]["annotation_count"], sets["items"][0]["audio_file_count"]) == (2, 2)
    renamed = await api.call(
        "PATCH", f"/{dataset_id}/annotation-sets/{set_id}", 200, {"name": "second"}
    )
    assert renamed["name"] == "second"
    await api.call("DELETE", f"/{dataset_id}/annotation-sets/{set_id}", 204)
    await api.call("GET", f"/{dataset_id}/annotation-sets/{set_id}", 404)


async def test_published_sets_are_immutable_and_publishing_is_idempotent(
    datasets_client: TestClient, api_key: str
) -> None:
    api = Api(datasets_client, api_key)
    dataset_id = await api.dataset()
    await api.audio(dataset_id, "a")
    set_id = await api.draft(dataset_id)
    created = await api.bulk(dataset_id, set_id, [mark("a")])
    first = await api.publish(dataset_id, set_id)
    assert first["status"] == "published" and len(first["content_hash"]) == 64
    assert first["artifact_types"] == ["glitch", "long_pause"]
    again = await api.publish(dataset_id, set_id)
    assert again == first
    base = f"/{dataset_id}/annotation-sets/{set_id}"
    one = f"{base}/annotations/{created['annotations'][0]['id']}"
    for method, path, body in [
        ("POST", base + "/annotations/bulk", {"annotations": [mark("a")]}),
        ("PATCH", base, {"name": "x"}),
        ("DELETE", base, None),
        ("PATCH", one, {"end_ms": 50}),
        ("DELETE", one, None),
    ]:
        error = await api.call(method, path, 409, body)
        assert "published" in error["error"] and "immutable" in error["error"]
    assert await api.call("GET", base, 200) == first
    assert (await api.annotations(dataset_id, set_id))["total"] == 1


async def test_the_content_hash_follows_the_content(
    datasets_client: TestClient, api_key: str
) -> None:
    api = Api(datasets_client, api_key)
    dataset_id = await api.dataset()
    await api.audio(dataset_id, "a")
    await api.audio(dataset_id, "b")
    items = [mark("a", "glitch", 0, 100), mark("b", "long_pause", 50, 900)]
    hashes = []
    for batch in (items, items[::-1], [items[0], {**items[1], "end_ms": 901}]):
        set_id = await api.draft(dataset_id)
        await api.bulk(dataset_id, set_id, batch)
        hashes.append((await api.publish(dataset_id, set_id))["content_hash"])
    assert hashes[0] == hashes[1]  # order sent does not matter
    assert hashes[2] != hashes[0]  # one end differs
    confident = await api.draft(dataset_id)
    await api.bulk(dataset_id, confident, [items[0], {**items[1], "confidence": 0.9}])
    assert (await api.publish(dataset_id, confident))["content_hash"] != hashes[0]


async def test_a_published_set_holds_every_ready_file_as_negative_evidence(
    datasets_client: TestClient, api_key: str
) -> None:
    api = Api(datasets_client, api_key)
    dataset_id = await api.dataset()
    for name in ("annotated", "silent"):
        await api.audio(dataset_id, name)
    await api.audio(dataset_id, "processing", status="processing")
    everything = await api.draft(dataset_id)
    await api.bulk(dataset_id, everything, [mark("annotated")])
    assert (await api.call("GET", f"/{dataset_id}/annotation-sets/{everything}", 200))[
        "audio_file_count"
    ] == 1
    published = await api.publish(dataset_id, everything)
    assert published["audio_file_count"] == 2  # "silent" is background for both types
    assert published["content_hash"] == content_hash(
        ["annotated", "silent"], ["glitch", "long_pause"], [("annotated", "glitch", 0, 100, 1.0)]
    )
    chosen = await api.draft(dataset_id, {"audio_file_ids": ["annotated"]})
    error = await api.bulk(dataset_id, chosen, [mark("silent")], expect=400)
    assert "'silent' is not one of this annotation set's audio files" in error["error"]
    assert (await api.publish(dataset_id, chosen))["audio_file_count"] == 1
    sets = f"/{dataset_id}/annotation-sets"
    error = await api.call("POST", sets, 400, {"audio_file_ids": ["annotated", "processing"]})
    assert "audio_file_ids[1] 'processing' is not ready" in error["error"]
    error = await api.call("POST", sets, 400, {"audio_file_ids": ["nope"]})
    assert "audio_file_ids[0] 'nope' is not an audio file of this dataset" in error["error"]
    error = await api.call("POST", sets, 400, {"audio_file_ids": ["silent", "silent"]})
    assert "lists 'silent' twice" in error["error"]


async def test_deleting_a_dataset_removes_its_sets_audio_rows_and_uploads(
    datasets_client: TestClient, api_key: str
) -> None:
    api = Api(datasets_client, api_key)
    dataset_id = await api.dataset()
    kept = await api.dataset()
    audio = await api.audio(dataset_id, "a")
    other = await api.audio(kept, "b")
    blobs = datasets_client.app[BLOBS]

    async def chunks(data: bytes) -> Any:
        yield data

    for record in (audio, other):
        await blobs.put_stream(record.blob_key, chunks(b"RIFF...."), max_bytes=1000)
    draft = await api.draft(dataset_id)
    await api.bulk(dataset_id, draft, [mark("a")])
    published = await api.draft(dataset_id)
    await api.publish(dataset_id, published)
    await api.call("DELETE", f"/{dataset_id}", 204)
    await api.call("GET", f"/{dataset_id}", 404)
    await api.call("GET", f"/{dataset_id}/annotation-sets/{published}", 404)
    await api.call("DELETE", f"/{dataset_id}", 404)
    repository = SqliteAudioFileRepository(datasets_client.app[STORE])
    assert await repository.get(api.team, dataset_id, "a") is None
    assert await blobs.stat(audio.blob_key) is None
    assert await repository.get(api.team, kept, "b") == other
    assert await blobs.stat(other.blob_key) is not None
    leftovers = await datasets_client.app[STORE].read(
        lambda store: store.execute("SELECT COUNT(*) FROM annotations").fetchone()[0]
    )
    assert leftovers == 0
    # A dataset made again is empty.
    again = await api.dataset()
    assert (await api.call("GET", f"/{again}/annotation-sets", 200))["total"] == 0


async def test_an_annotation_set_needs_no_body(datasets_client: TestClient, api_key: str) -> None:
    api = Api(datasets_client, api_key)
    dataset_id = await api.dataset()
    path = f"/api/v1/datasets/{dataset_id}/annotation-sets"
    for headers in ({}, {"Content-Type": "application/json"}):
        response = await datasets_client.post(path, headers={"X-API-Key": api_key, **headers})
        assert response.status == 201, await response.text()
    response = await datasets_client.post(
        path, data="{", headers={"X-API-Key": api_key, "Content-Type": "application/json"}
    )
    assert response.status == 400
