"""The wire types: one declaration gives the validation, the JSON and the OpenAPI schemas.

These check the conventions of ``protocol.wire`` on the real types, so a type declared against
them (a response field that is neither required nor ``Absent``, a schema keyword OpenAPI 3.0 does
not know) fails here rather than in a generated client.
"""

from __future__ import annotations

from typing import Any

import pytest

from protocol.audio_files_openapi import audio_files_openapi_document
from protocol.errors import BadRequest
from protocol.events import EventParams, EventsPage, EventsPageInfo, SoundEvent
from protocol.jobs import Job, JobEvent, JobsQuery, SoundEventsInput, SoundEventsOutput
from protocol.media import MediaObject
from protocol.media_openapi import media_openapi_document
from protocol.messages import (
    DEFAULT_PAGE_COUNT,
    MAX_PAGE_COUNT,
    CreateSession,
    Page,
    PageQuery,
    Sense,
    SenseEvent,
    SenseEventTag,
    SessionRefs,
    SessionStatus,
    UpdateSession,
)
from protocol.openapi import openapi_document
from protocol.states import SessionState
from protocol.wire import from_wire, parse, parse_query, query_parameters, to_wire

DOCUMENTS = {
    "session": openapi_document(),
    "media": media_openapi_document(),
    "audio_files": audio_files_openapi_document(),
}
# JSON Schema 2020-12 words that OpenAPI 3.0.3's schema objects do not have.
NOT_OPENAPI_30 = {"const", "$defs", "prefixItems", "examples", "$schema", "unevaluatedProperties"}


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found += _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _walk(value, f"{path}/{index}")
    return found


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_generated_schemas_speak_openapi_30(name: str) -> None:
    for path, node in _walk(DOCUMENTS[name]["components"]["schemas"]):
        assert not NOT_OPENAPI_30 & set(node), path
        assert "title" not in node or not isinstance(node["title"], str), path
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert isinstance(node.get(bound, True), bool), (path, bound)
        assert {"type": "null"} not in node.get("anyOf", []), path
        if "$ref" in node:
            assert set(node) == {"$ref"}, path  # OpenAPI 3.0 ignores a $ref's siblings
            target = node["$ref"].rsplit("/", 1)[1]
            assert target in DOCUMENTS[name]["components"]["schemas"], path


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_response_schemas_are_closed_and_say_what_is_always_there(name: str) -> None:
    schemas = DOCUMENTS[name]["components"]["schemas"]
    for schema_name in ("GenericError", "SessionStatus", "Page", "Job", "MediaObject"):
        schema = schemas.get(schema_name)
        if schema is None:
            continue
        assert schema["additionalProperties"] is False, schema_name
        assert schema["required"], schema_name


def test_constants_reach_the_document_from_one_place() -> None:
    doc = DOCUMENTS["session"]
    assert doc["components"]["schemas"]["Page"]["properties"]["count"]["maximum"] == MAX_PAGE_COUNT
    status = doc["paths"]["/audio_sessions/{session_id}/status"]["get"]["parameters"]
    count = next(p for p in status if p["name"] == "count")
    assert count["schema"]["maximum"] == MAX_PAGE_COUNT


def test_absent_fields_are_left_out_and_nullable_ones_are_null() -> None:
    status = SessionStatus(
        SessionState.WRITABLE,
        SessionRefs("s", 3),
        Sense(False, Page(0, 0, 0), ()),
    )
    body = to_wire(status)
    assert "error" not in body and "next_token" not in body["inference"]["page"]
    assert body["state"] == "writable" and body["refs"] == {"session_id": "s", "chunk_sequence": 3}
    media = to_wire(MediaObject("a/b.wav", 3, None, 0.0, 3600.0))
    assert media == {
        "url": "media://a/b.wav",
        "size_bytes": 3,
        "sha256": None,
        "created_at": "1970-01-01T00:00:00.000+00:00",
        "expires_at": "1970-01-01T01:00:00.000+00:00",
    }


def test_a_client_reads_back_what_the_server_writes() -> None:
    window = SenseEvent(0.0, 0.96, (SenseEventTag("Speech", 0.9),))
    status = SessionStatus(
        SessionState.READONLY,
        SessionRefs("s", 2),
        Sense(True, Page(4, 1, 9, "tok"), (window,)),
        error="boom",
    )
    assert from_wire(SessionStatus, to_wire(status)) == status
    page = EventsPage(
        "s",
        "readonly",
        False,
        EventsPageInfo(0, 1, 1),
        (SoundEvent(0, "Dog", 1, 2, 0.7, "closed"),),
    )
    assert from_wire(EventsPage, to_wire(page)) == page
    output = SoundEventsOutput((window,), (JobEvent("Speech", 0.0, 0.96, 0.9),))
    job = Job("j", "sound-events", "succeeded", 1.0, 2.0, 100.0, output, None, 3.0)
    wire = to_wire(job)
    assert wire["jobId"] == "j" and wire["outputExpiresAt"].startswith("1970-01-01T00:00:03")
    assert "error" not in wire
    assert from_wire(SoundEventsOutput, wire["output"]) == output


def test_a_response_with_a_field_the_type_does_not_know_is_refused() -> None:
    body = to_wire(SessionRefs("s", 0))
    with pytest.raises(ValueError, match="SessionRefs"):
        from_wire(SessionRefs, {**body, "surprise": 1})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "type is required"),
        (
            {"type": "movie", "content_type": "audio/wav"},
            "type must be 'stream' or 'file'",
        ),
        ({"type": "file", "content_type": "  "}, "content_type"),
        ({"type": "file", "content_type": "audio/wav", "total_size": True}, "total_size"),
        ({"type": "file", "content_type": "audio/wav", "total_size": 1.5}, "total_size"),
        ({"type": "file", "content_type": "audio/wav", "window_hop": "2s"}, "window_hop must be"),
        (
            {"type": "file", "content_type": "audio/wav", "tags_sensitivity": {"Dog": 3}},
            "tags_sensitivity.Dog",
        ),
        (
            {"type": "file", "content_type": "audio/wav", "events": {"threshold": 1.5}},
            "events.threshold",
        ),
        (
            {"type": "file", "content_type": "audio/wav", "events": {"boundary": "x"}},
            "events.boundary",
        ),
        (
            {
                "type": "file",
                "content_type": "audio/wav",
                "webhook": {"url": "ftp://x", "secret": "s" * 16},
            },
            "webhook.url",
        ),
        ({"type": "file", "content_type": "audio/wav", "metadata": {"x": "y" * 20000}}, "metadata"),
        ("not an object", "request body must be a JSON object"),
    ],
)
def test_bad_requests_name_the_field(body: Any, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        CreateSession.from_body(body)
    assert message in caught.value.message


def test_requests_keep_their_lenient_spellings() -> None:
    created = CreateSession.from_body(
        {
            "type": "stream",
            "content_type": " audio/wav ",
            "window_hop": "1s",
            "total_size": 10.0,
            "metadata": None,
            "events": None,
            "unknown_field_from_a_generated_client": 1,
        }
    )
    assert created.content_type == "audio/wav" and created.window_hop_s == 1.0
    assert created.total_size == 10 and created.metadata == {} and created.events == EventParams()
    assert CreateSession.from_body(created.to_dict()) == created
    with pytest.raises(BadRequest, match="make_readonly"):
        UpdateSession.from_body({"make_readonly": "yes"})
    job = parse(SoundEventsInput, {"url": "media://a/b.wav", "events": {"threshold": "0.4"}})
    assert job.object_key == "a/b.wav" and job.events.threshold == 0.4
    assert SoundEventsInput.from_body(job.to_dict()) == job


def test_query_types_read_text_and_document_themselves() -> None:
    assert parse_query(PageQuery, {"offset": "5", "count": ""}) == PageQuery(5, DEFAULT_PAGE_COUNT)
    for query, message in [
        ({"offset": "x"}, "offset must be an integer"),
        ({"offset": "-1"}, "offset must be between 0 and"),
        ({"count": "0"}, f"count must be between 1 and {MAX_PAGE_COUNT}"),
        ({"take": "1000"}, "take must be an integer from 1 to"),
    ]:
        kind = JobsQuery if "take" in query else PageQuery
        with pytest.raises(BadRequest, match=message):
            parse_query(kind, query)
    offset, count = query_parameters(PageQuery)
    assert offset["name"] == "offset" and offset["schema"]["format"] == "int64"
    assert count["schema"] == {
        "default": DEFAULT_PAGE_COUNT,
        "maximum": MAX_PAGE_COUNT,
        "minimum": 1,
        "type": "integer",
    }
