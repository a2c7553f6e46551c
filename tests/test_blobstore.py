"""The blob store contract, run against every implementation: the same tests, parametrised.

The S3 store runs against a real SeaweedFS started for the session (tests/seaweedfs.py): no
fakes, so signatures, expiry, POST policies and S3's minimum part size are really enforced.
Each test works under its own key prefix (``ns``), so the S3 tests can share one bucket.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import pytest
import requests
from botocore.exceptions import ClientError

from server.config import ConfigError, Settings
from server.storage import (
    BlobKeyConflict,
    BlobNotFound,
    BlobStore,
    BlobTooLarge,
    InvalidBlobKey,
    LocalBlobStore,
    team_key,
    team_prefix,
    validate_key,
    validate_prefix,
)
from server.storage.factory import make_blob_store
from server.storage.local import INCOMING_DIR
from server.storage.s3 import S3BlobStore
from server.storage.s3_config import MIN_PART_BYTES
from tests.seaweedfs import BUCKET, SeaweedFS

MiB = 1024 * 1024
# Large enough that an S3 upload of it takes several multipart parts.
BIG_BYTES = 12 * MiB

BAD_KEYS = [
    "",
    "..",
    "../escape",
    "a/../../escape",
    "a/./b",
    "/absolute",
    "a//b",
    "a/",
    ".hidden",
    "a/.incoming",
    "back\\slash",
    "nul\x00byte",
    "space here",
    "new\nline",
    "caf\u00e9",
    "x" * 256,
    "a/" * 512 + "b",
]
BAD_PREFIXES = ["/", "/a", "a//", "../", "a/../b", "a\\", "a\x00", ".in", "a/.in"]


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    blobs: BlobStore
    if request.param == "local":
        blobs = LocalBlobStore(tmp_path / "blobs")
    else:  # the smallest parts S3 allows, so multipart uploads happen at modest sizes
        server: SeaweedFS = request.getfixturevalue("seaweedfs")
        blobs = S3BlobStore(server.config(part_bytes=MIN_PART_BYTES))
    yield blobs
    await blobs.close()


@pytest.fixture
async def s3(seaweedfs: SeaweedFS) -> AsyncIterator[S3BlobStore]:
    blobs = S3BlobStore(seaweedfs.config(part_bytes=MIN_PART_BYTES))
    yield blobs
    await blobs.close()


@pytest.fixture
def ns() -> str:
    return f"t{uuid.uuid4().hex[:12]}/"


async def stream(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)
        yield part


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def read_all(store: BlobStore, key: str, **window: int | None) -> bytes:
    async with store.open(key, **window) as chunks:  # type: ignore[arg-type]
        return b"".join([chunk async for chunk in chunks])


async def listed(store: BlobStore, prefix: str) -> list[str]:
    """The keys listed under ``prefix``, sorted (the order is each store's own)."""
    keys = [info.key async for info in store.list_blobs(prefix)]
    assert len(set(keys)) == len(keys), keys
    return sorted(keys)


async def leftovers(
    store: BlobStore, ns: str, request: pytest.FixtureRequest | None = None
) -> list[str]:
    """What a failed upload might have left where no reader looks: temporary files, or
    multipart uploads neither completed nor aborted."""
    if isinstance(store, LocalBlobStore):
        incoming = store.root / INCOMING_DIR
        return sorted(os.listdir(incoming)) if incoming.exists() else []
    assert request is not None
    server: SeaweedFS = request.getfixturevalue("seaweedfs")
    uploads = await asyncio.to_thread(
        server.client().list_multipart_uploads, Bucket=BUCKET, Prefix=ns
    )
    return [upload["Key"] for upload in uploads.get("Uploads", [])]


def payload(size: int) -> bytes:
    return hashlib.shake_256(str(size).encode()).digest(size)


# -- the basic operations


async def test_put_stat_open_list_delete(store: BlobStore, ns: str) -> None:
    data = b"hello, blob world"
    info = await store.put_stream(ns + "a/b.wav", stream(pieces(data, 5)), max_bytes=1000)

    assert (info.key, info.size_bytes) == (ns + "a/b.wav", len(data))
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.created_at.tzinfo is not None
    assert info.created_at.utcoffset() == UTC.utcoffset(None)

    stat = await store.stat(ns + "a/b.wav")
    assert stat is not None
    assert (stat.key, stat.size_bytes, stat.created_at) == (info.key, len(data), info.created_at)
    assert stat.sha256 is None  # stat does not hash
    assert await read_all(store, ns + "a/b.wav") == data
    assert [(i.key, i.size_bytes) async for i in store.list_blobs(ns)] == [(info.key, len(data))]

    await store.delete(ns + "a/b.wav")
    assert await store.stat(ns + "a/b.wav") is None
    assert await listed(store, ns) == []
    with pytest.raises(BlobNotFound):
        await read_all(store, ns + "a/b.wav")


async def test_empty_and_big_objects(store: BlobStore, ns: str) -> None:
    empty = await store.put_stream(ns + "empty", stream([]), max_bytes=0)
    assert empty.size_bytes == 0
    assert empty.sha256 == hashlib.sha256(b"").hexdigest()
    assert await read_all(store, ns + "empty") == b""

    data = payload(BIG_BYTES + 12345)
    info = await store.put_stream(ns + "big", stream(pieces(data, 256 * 1024)), max_bytes=len(data))
    assert (info.size_bytes, info.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert await read_all(store, ns + "big") == data


async def test_put_replaces_the_object(store: BlobStore, ns: str) -> None:
    await store.put_stream(ns + "k", stream([b"first version"]), max_bytes=100)
    await store.put_stream(ns + "k", stream([b"second"]), max_bytes=100)
    assert await read_all(store, ns + "k") == b"second"
    assert await listed(store, ns) == [ns + "k"]


async def test_missing_objects(store: BlobStore, ns: str) -> None:
    assert await store.stat(ns + "nothing") is None
    await store.delete(ns + "nothing")  # not an error
    with pytest.raises(BlobNotFound):
        async with store.open(ns + "nothing"):
            pass
    with pytest.raises(BlobNotFound):
        async with store.open(ns + "nothing", length_bytes=0):
            pass


async def test_a_folder_is_not_an_object(store: BlobStore, ns: str) -> None:
    await store.put_stream(ns + "dir/file", stream([b"x"]), max_bytes=10)
    assert await store.stat(ns + "dir") is None
    with pytest.raises(BlobNotFound):
        await read_all(store, ns + "dir")
    await store.delete(ns + "dir")
    assert await read_all(store, ns + "dir/file") == b"x"


@pytest.mark.parametrize(
    ("offset", "length", "expected"),
    [
        (0, None, slice(0, 10)),
        (3, None, slice(3, 10)),
        (3, 4, slice(3, 7)),
        (8, 100, slice(8, 10)),
        (0, 0, slice(0, 0)),
        (10, None, slice(0, 0)),  # at the end
        (25, 3, slice(0, 0)),  # past it
    ],
)
async def test_ranges(
    store: BlobStore, ns: str, offset: int, length: int | None, expected: slice
) -> None:
    data = b"0123456789"
    await store.put_stream(ns + "digits", stream([data]), max_bytes=10)
    got = await read_all(store, ns + "digits", offset_bytes=offset, length_bytes=length)
    assert got == data[expected]


async def test_range_of_an_empty_object(store: BlobStore, ns: str) -> None:
    await store.put_stream(ns + "empty", stream([]), max_bytes=10)
    assert await read_all(store, ns + "empty", offset_bytes=0, length_bytes=5) == b""
    assert await read_all(store, ns + "empty", offset_bytes=3) == b""


async def test_negative_ranges_are_refused(store: BlobStore, ns: str) -> None:
    with pytest.raises(ValueError):
        await read_all(store, ns + "x", offset_bytes=-1)
    with pytest.raises(ValueError):
        await read_all(store, ns + "x", length_bytes=-1)


async def test_listing_by_prefix(store: BlobStore, ns: str) -> None:
    names = ["b", "a/y/z", "ab", "a-b", "a/x", "A", "a.b", "a_b"]
    for name in names:
        await store.put_stream(ns + name, stream([name.encode()]), max_bytes=10)

    assert await listed(store, ns) == [ns + name for name in sorted(names)]
    assert await listed(store, ns + "a/") == [ns + "a/x", ns + "a/y/z"]
    assert await listed(store, ns + "a") == [
        ns + name for name in sorted(n for n in names if n.startswith("a"))
    ]
    assert await listed(store, ns + "a/y") == [ns + "a/y/z"]
    assert await listed(store, ns + "c") == []
    assert await listed(store, ns + "nothing/here/") == []
    infos = sorted([info async for info in store.list_blobs(ns + "a/")], key=lambda i: i.key)
    assert [info.size_bytes for info in infos] == [3, 5]
    assert all(info.sha256 is None for info in infos)


# -- uploads that fail leave nothing


async def failing_stream(data: bytes, fail_after_bytes: int) -> AsyncIterator[bytes]:
    """``data`` up to ``fail_after_bytes`` (rounded up to a whole piece), then an error."""
    sent = 0
    for part in pieces(data, 256 * 1024):
        if sent >= fail_after_bytes:
            break
        sent += len(part)
        yield part
    raise RuntimeError("the client went away")


async def test_a_stream_that_fails_leaves_nothing(
    store: BlobStore, ns: str, request: pytest.FixtureRequest
) -> None:
    await store.put_stream(ns + "kept", stream([b"old"]), max_bytes=10)
    data = payload(BIG_BYTES)
    for key in (ns + "new", ns + "kept"):
        # Fails before any data, within the first part, past it, after the whole object.
        for fail_after in (0, 1024, BIG_BYTES // 2, BIG_BYTES):
            with pytest.raises(RuntimeError, match="went away"):
                await store.put_stream(key, failing_stream(data, fail_after), max_bytes=BIG_BYTES)

    assert await store.stat(ns + "new") is None
    assert await read_all(store, ns + "kept") == b"old"
    assert await listed(store, ns) == [ns + "kept"]
    assert await leftovers(store, ns, request) == []


async def test_a_cancelled_upload_leaves_nothing(
    store: BlobStore, ns: str, request: pytest.FixtureRequest
) -> None:
    data = payload(BIG_BYTES)
    stalled = asyncio.Event()

    async def stalling() -> AsyncIterator[bytes]:
        for part in pieces(data, MiB):
            yield part
        stalled.set()
        await asyncio.Event().wait()  # a client that stops sending, forever
        yield b"never"

    upload = asyncio.create_task(
        store.put_stream(ns + "stalled", stalling(), max_bytes=4 * BIG_BYTES)
    )
    await stalled.wait()
    assert len(await leftovers(store, ns, request)) == 1  # a temporary file, a multipart upload
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload

    assert await store.stat(ns + "stalled") is None
    assert await listed(store, ns) == []
    assert await leftovers(store, ns, request) == []


@pytest.mark.parametrize("limit", [10, BIG_BYTES // 2])
async def test_the_size_limit_stops_the_stream_at_once(
    store: BlobStore, ns: str, limit: int, request: pytest.FixtureRequest
) -> None:
    await store.put_stream(ns + "kept", stream([b"old"]), max_bytes=10)
    data = payload(2 * limit + 3)
    parts = pieces(data, max(1, limit // 4))
    pulled = 0

    async def counting() -> AsyncIterator[bytes]:
        nonlocal pulled
        for part in parts:
            pulled += 1
            yield part

    with pytest.raises(BlobTooLarge) as caught:
        await store.put_stream(ns + "kept", counting(), max_bytes=limit)
    assert caught.value.max_bytes == limit
    crossing = next(i for i in range(len(parts)) if sum(map(len, parts[: i + 1])) > limit)
    assert pulled == crossing + 1  # nothing read past the chunk that crossed the limit
    assert await read_all(store, ns + "kept") == b"old"
    assert await listed(store, ns) == [ns + "kept"]
    assert await leftovers(store, ns, request) == []

    exact = await store.put_stream(
        ns + "exact", stream(pieces(data[:limit], 4096)), max_bytes=limit
    )
    assert exact.size_bytes == limit


async def test_memory_stays_bounded_while_streaming(store: BlobStore, ns: str) -> None:
    """Python-level allocations (tracemalloc) while 64 MiB stream through: a store that held
    the object whole would peak above 64 MiB; these buffer one write or one part."""
    total_bytes, chunk_bytes = 64 * MiB, 256 * 1024
    bound_bytes = 8 * MiB if isinstance(store, LocalBlobStore) else 4 * MIN_PART_BYTES

    async def generated() -> AsyncIterator[bytes]:
        for i in range(total_bytes // chunk_bytes):
            yield i.to_bytes(4, "big") * (chunk_bytes // 4)

    await store.put_stream(ns + "warm-up", stream([b"x"]), max_bytes=1)
    tracemalloc.start()
    try:
        info = await store.put_stream(ns + "big", generated(), max_bytes=total_bytes)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.size_bytes == total_bytes
    assert peak_bytes < bound_bytes, f"peak {peak_bytes / MiB:.1f} MiB"

    tracemalloc.start()
    try:
        size = 0
        async with store.open(ns + "big") as chunks:
            async for chunk in chunks:
                size += len(chunk)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == total_bytes
    assert peak_bytes < bound_bytes, f"peak {peak_bytes / MiB:.1f} MiB while reading"


# -- keys


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_keys_are_refused_everywhere(store: BlobStore, key: str) -> None:
    before = await listed(store, "")
    operations: list[Callable[[], object]] = [
        lambda: store.put_stream(key, stream([b"x"]), max_bytes=10),
        lambda: store.stat(key),
        lambda: store.delete(key),
        lambda: read_all(store, key),
        lambda: store.presigned_put(key, expires_s=60, content_type="audio/wav"),
        lambda: store.presigned_post(key, expires_s=60, max_bytes=10),
    ]
    for operation in operations:
        with pytest.raises(InvalidBlobKey):
            await operation()  # type: ignore[misc]
    assert await listed(store, "") == before


@pytest.mark.parametrize("prefix", BAD_PREFIXES)
async def test_bad_prefixes_are_refused(store: BlobStore, prefix: str) -> None:
    with pytest.raises(InvalidBlobKey):
        await listed(store, prefix)


async def test_teams_do_not_see_each_other(store: BlobStore, ns: str) -> None:
    teams = [ns.strip("/") + suffix for suffix in ("1", "10", "2")]
    for team in teams:
        await store.put_stream(
            team_key(team, "media/a.wav"), stream([team.encode()]), max_bytes=100
        )
    for team in teams:
        assert await listed(store, team_prefix(team)) == [f"teams/{team}/media/a.wav"]
        assert await read_all(store, team_key(team, "media/a.wav")) == team.encode()


def test_key_alphabet() -> None:
    for key in ["a", "A-z_0.9", "teams/t1/media/x.wav", "a/b.c/d..e", "x" * 255, "a/" * 511 + "b"]:
        assert validate_key(key) == key
    for key in BAD_KEYS:
        with pytest.raises(InvalidBlobKey):
            validate_key(key)
    for prefix in ["", "a", "a/", "a/b", "teams/t1/", "teams/t1/me"]:
        assert validate_prefix(prefix) == prefix
    for prefix in BAD_PREFIXES:
        with pytest.raises(InvalidBlobKey):
            validate_prefix(prefix)


def test_team_keys() -> None:
    assert team_prefix("t1") == "teams/t1/"
    assert team_key("t1", "media/a.wav") == "teams/t1/media/a.wav"
    for team in ["", "a/b", "..", ".x", "a b", "t\x00"]:
        with pytest.raises(InvalidBlobKey):
            team_prefix(team)
    for name in ["../t2/media/a.wav", "/abs", "", "a//b"]:
        with pytest.raises(InvalidBlobKey):
            team_key("t1", name)


# -- pre-signing arguments are checked the same way everywhere


async def test_presign_arguments(store: BlobStore, ns: str) -> None:
    for expires_s in (0, -1, 7 * 24 * 3600 + 1):
        with pytest.raises(ValueError):
            await store.presigned_put(ns + "k", expires_s=expires_s, content_type="audio/wav")
        with pytest.raises(ValueError):
            await store.presigned_post(ns + "k", expires_s=expires_s, max_bytes=10)
    with pytest.raises(ValueError):
        await store.presigned_post(ns + "k", expires_s=60, max_bytes=-1)


# -- the local store


async def test_local_store_presigns_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    try:
        assert await store.presigned_put("k", expires_s=60, content_type="audio/wav") is None
        assert await store.presigned_post("k", expires_s=60, max_bytes=10) is None
    finally:
        await store.close()


async def test_local_store_refuses_a_key_below_or_above_an_object(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    try:
        await store.put_stream("a/b", stream([b"x"]), max_bytes=10)
        with pytest.raises(BlobKeyConflict):
            await store.put_stream("a/b/c", stream([b"y"]), max_bytes=10)
        with pytest.raises(BlobKeyConflict):
            await store.put_stream("a", stream([b"z"]), max_bytes=10)
        assert await listed(store, "") == ["a/b"]
        assert await leftovers(store, "") == []
    finally:
        await store.close()


async def test_local_store_keeps_files_under_its_root(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs", fsync=False)
    try:
        await store.put_stream("teams/t1/media/a.wav", stream([b"RIFF"]), max_bytes=10)
        assert (tmp_path / "blobs/teams/t1/media/a.wav").read_bytes() == b"RIFF"
        await store.delete("teams/t1/media/a.wav")
        assert sorted(os.listdir(tmp_path / "blobs")) == [INCOMING_DIR]  # empty folders went
        assert sorted(os.listdir(tmp_path)) == ["blobs"]
    finally:
        await store.close()


async def test_local_store_ignores_what_it_did_not_write(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = LocalBlobStore(root)
    try:
        await store.put_stream("ok", stream([b"1"]), max_bytes=10)
        (root / "bad name").write_bytes(b"x")
        (root / ".hidden").write_bytes(b"x")
        (tmp_path / "outside").write_bytes(b"secret")
        (root / "link").symlink_to(tmp_path / "outside")
        assert await listed(store, "") == ["ok"]
        assert await store.stat("link") is None
        with pytest.raises(BlobNotFound):
            await read_all(store, "link")
    finally:
        await store.close()


async def test_local_store_lists_in_byte_order(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    try:
        names = ["b", "a/y/z", "ab", "a-b", "a/x", "A", "a.b", "a_b"]
        for name in names:
            await store.put_stream(name, stream([b"x"]), max_bytes=10)
        assert [info.key async for info in store.list_blobs()] == sorted(names)
    finally:
        await store.close()


async def test_local_store_removes_stale_uploads(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    try:
        incoming = tmp_path / INCOMING_DIR
        incoming.mkdir()
        (incoming / "upload-old").write_bytes(b"x")
        (incoming / "upload-new").write_bytes(b"y")
        os.utime(incoming / "upload-old", (1_000_000_000, 1_000_000_000))
        assert store.remove_stale_uploads(older_than_s=3600) == 1
        assert sorted(os.listdir(incoming)) == ["upload-new"]
    finally:
        await store.close()


# -- the S3 store against SeaweedFS: what the service itself enforces


def put(url: str, data: bytes, headers: dict[str, str]) -> requests.Response:
    """A client with no credentials at all: plain requests, as a browser or curl would."""
    return requests.put(url, data=data, headers=headers, timeout=30)


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def with_query(url: str, **changes: str) -> str:
    query = {**query_of(url), **changes}
    return urlunsplit(urlsplit(url)._replace(query=urlencode(query, quote_via=quote)))


def error_code(response: requests.Response) -> str:
    return response.text.split("<Code>", 1)[-1].split("</Code>", 1)[0]


async def test_s3_refuses_unsigned_and_badly_signed_requests(
    seaweedfs: SeaweedFS, s3: S3BlobStore, ns: str
) -> None:
    """The fixture's service really checks signatures; without that the tests below prove
    nothing."""
    await s3.put_stream(ns + "secret", stream([b"x"]), max_bytes=10)
    anonymous = await asyncio.to_thread(
        requests.get, f"{seaweedfs.endpoint_url}/{BUCKET}/{ns}secret", timeout=30
    )
    assert anonymous.status_code == 403
    wrong = S3BlobStore(seaweedfs.config(secret_access_key="not-the-secret"))
    try:
        with pytest.raises(ClientError) as stat_refused:
            await wrong.stat(ns + "secret")
        with pytest.raises(ClientError, match="SignatureDoesNotMatch") as put_refused:
            await wrong.put_stream(ns + "other", stream([b"x"]), max_bytes=10)
    finally:
        await wrong.close()
    for refused in (stat_refused, put_refused):
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert await listed(s3, ns) == [ns + "secret"]


async def test_s3_presigned_put_points_at_the_service(
    seaweedfs: SeaweedFS, s3: S3BlobStore, ns: str
) -> None:
    signed = await s3.presigned_put(ns + "up.wav", expires_s=300, content_type="audio/wav")
    assert signed is not None
    assert signed.url.startswith(f"{seaweedfs.endpoint_url}/{BUCKET}/{ns}up.wav?")
    assert dict(signed.headers) == {"Content-Type": "audio/wav"}
    assert 290 < (signed.expires_at - datetime.now(UTC)).total_seconds() <= 300

    response = await asyncio.to_thread(put, signed.url, b"RIFF-data", dict(signed.headers))
    assert response.status_code == 200, response.text
    info = await s3.stat(ns + "up.wav")
    assert info is not None and info.size_bytes == 9
    assert await read_all(s3, ns + "up.wav") == b"RIFF-data"


async def test_s3_refuses_a_tampered_presigned_put(s3: S3BlobStore, ns: str) -> None:
    signed = await s3.presigned_put(ns + "mine", expires_s=300, content_type="audio/wav")
    assert signed is not None
    headers = dict(signed.headers)
    signature = query_of(signed.url)["X-Amz-Signature"]
    attempts = {
        "another key": (signed.url.replace(f"{ns}mine?", f"{ns}theirs?"), headers),
        "longer expiry": (with_query(signed.url, **{"X-Amz-Expires": "604800"}), headers),
        "forged signature": (
            with_query(signed.url, **{"X-Amz-Signature": signature[::-1]}),
            headers,
        ),
        "other content type": (signed.url, {"Content-Type": "text/html"}),
    }
    for name, (url, sent_headers) in attempts.items():
        response = await asyncio.to_thread(put, url, b"evil", sent_headers)
        assert response.status_code == 403, (name, response.status_code, response.text)
    assert await listed(s3, ns) == []


async def test_s3_refuses_an_expired_presigned_put(s3: S3BlobStore, ns: str) -> None:
    signed = await s3.presigned_put(ns + "late", expires_s=1, content_type="audio/wav")
    assert signed is not None
    # Signing times have whole seconds: wait a clear second past the expiry.
    await asyncio.sleep(max(0.0, (signed.expires_at - datetime.now(UTC)).total_seconds()) + 1.5)
    response = await asyncio.to_thread(put, signed.url, b"late", dict(signed.headers))
    assert response.status_code == 403, response.text
    assert error_code(response) == "AccessDenied"
    assert "expired" in response.text.lower()
    assert await s3.stat(ns + "late") is None


async def test_s3_presigns_for_the_public_endpoint(seaweedfs: SeaweedFS, ns: str) -> None:
    """Signed for the address clients use (here "localhost"); the Host header is signed, so
    the same URL sent to another address is refused."""
    public = seaweedfs.endpoint_url.replace("127.0.0.1", "localhost")
    store = S3BlobStore(seaweedfs.config(public_endpoint_url=public))
    try:
        signed = await store.presigned_put(ns + "pub", expires_s=300, content_type="audio/wav")
        assert signed is not None and signed.url.startswith(public + "/")
        internal = signed.url.replace("localhost", "127.0.0.1")
        refused = await asyncio.to_thread(put, internal, b"x", dict(signed.headers))
        assert refused.status_code == 403, refused.text
        accepted = await asyncio.to_thread(put, signed.url, b"x", dict(signed.headers))
        assert accepted.status_code == 200, accepted.text
        assert await read_all(store, ns + "pub") == b"x"
    finally:
        await store.close()


def post_form(url: str, fields: dict[str, str], data: bytes) -> requests.Response:
    return requests.post(url, data=fields, files={"file": ("upload", data)}, timeout=30)


async def test_s3_post_policy_bounds_the_size(s3: S3BlobStore, ns: str) -> None:
    signed = await s3.presigned_post(ns + "form", expires_s=300, max_bytes=1000)
    assert signed is not None
    fields = dict(signed.fields)
    assert fields["key"] == ns + "form"

    too_big = await asyncio.to_thread(post_form, signed.url, fields, payload(1001))
    assert too_big.status_code == 400, too_big.text
    assert error_code(too_big) == "EntityTooLarge"
    assert await s3.stat(ns + "form") is None

    exact = await asyncio.to_thread(post_form, signed.url, fields, payload(1000))
    assert exact.status_code in (200, 201, 204), exact.text
    assert await read_all(s3, ns + "form") == payload(1000)


async def test_s3_refuses_a_tampered_post_policy(s3: S3BlobStore, ns: str) -> None:
    signed = await s3.presigned_post(
        ns + "form", expires_s=300, max_bytes=1000, content_type="audio/wav"
    )
    assert signed is not None
    fields = dict(signed.fields)
    assert fields["Content-Type"] == "audio/wav"
    attempts = {
        "another key": {**fields, "key": ns + "theirs"},
        "other content type": {**fields, "Content-Type": "text/html"},
        "forged signature": {**fields, "x-amz-signature": fields["x-amz-signature"][::-1]},
    }
    for name, forged in attempts.items():
        response = await asyncio.to_thread(post_form, signed.url, forged, b"evil")
        assert response.status_code == 403, (name, response.status_code, response.text)
    assert await listed(s3, ns) == []
    accepted = await asyncio.to_thread(post_form, signed.url, fields, b"RIFF")
    assert accepted.status_code in (200, 201, 204), accepted.text
    assert await listed(s3, ns) == [ns + "form"]


# -- chosen at start-up, from settings


def s3_environ(seaweedfs: SeaweedFS | None = None, **changes: str) -> dict[str, str]:
    environ = {
        "TYMPAN_BLOB_STORE": "s3",
        "TYMPAN_S3_ENDPOINT_URL": seaweedfs.endpoint_url if seaweedfs else "http://s3.test:8333",
        "TYMPAN_S3_BUCKET": BUCKET,
        "TYMPAN_S3_REGION": "us-east-1",
        "TYMPAN_S3_ACCESS_KEY_ID": seaweedfs.access_key_id if seaweedfs else "key-id",
        "TYMPAN_S3_SECRET_ACCESS_KEY": seaweedfs.secret_access_key if seaweedfs else "s3cr3t",
    }
    environ.update(changes)
    return {name: value for name, value in environ.items() if value != "<unset>"}


async def test_the_local_store_is_the_default(tmp_path: Path) -> None:
    settings = Settings.from_env({}, data_dir=tmp_path / "var")
    store = make_blob_store(settings)
    try:
        assert isinstance(store, LocalBlobStore)
        assert store.root == tmp_path / "var" / "blobs"
        assert not store.root.exists()  # nothing is made before the first write
        await store.put_stream("a", stream([b"x"]), max_bytes=1)
        assert (store.root / "a").read_bytes() == b"x"
    finally:
        await store.close()
    elsewhere = Settings.from_env({"TYMPAN_BLOB_DIR": str(tmp_path / "blobs")})
    assert elsewhere.blob_root == tmp_path / "blobs"


async def test_the_s3_store_from_settings(seaweedfs: SeaweedFS, ns: str) -> None:
    settings = Settings.from_env(s3_environ(seaweedfs, TYMPAN_S3_PART_BYTES=str(6 * MiB)))
    assert seaweedfs.secret_access_key not in repr(settings)
    store = make_blob_store(settings)
    try:
        assert isinstance(store, S3BlobStore)
        assert store.config == seaweedfs.config(part_bytes=6 * MiB)
        assert seaweedfs.secret_access_key not in repr(store.config)
        await store.put_stream(ns + "from-settings", stream([b"x"]), max_bytes=1)
        assert await read_all(store, ns + "from-settings") == b"x"
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"TYMPAN_BLOB_STORE": "ftp"}, "TYMPAN_BLOB_STORE must be one of local, s3, got 'ftp'"),
        ({"TYMPAN_S3_BUCKET": "<unset>"}, "TYMPAN_S3_BUCKET is required when TYMPAN_BLOB_STORE"),
        ({"TYMPAN_S3_ACCESS_KEY_ID": ""}, "TYMPAN_S3_ACCESS_KEY_ID is required"),
        ({"TYMPAN_S3_SECRET_ACCESS_KEY": "<unset>"}, "TYMPAN_S3_SECRET_ACCESS_KEY is required"),
        ({"TYMPAN_S3_REGION": ""}, "TYMPAN_S3_REGION is required"),
        ({"TYMPAN_S3_BUCKET": "My_Bucket"}, "TYMPAN_S3_BUCKET='My_Bucket' is not a bucket name"),
        ({"TYMPAN_S3_ENDPOINT_URL": "s3.test:8333"}, "TYMPAN_S3_ENDPOINT_URL='s3.test:8333'"),
        ({"TYMPAN_S3_ENDPOINT_URL": "http://s3.test/bucket"}, "must have no path or query"),
        ({"TYMPAN_S3_PUBLIC_ENDPOINT_URL": "ftp://x"}, "TYMPAN_S3_PUBLIC_ENDPOINT_URL='ftp://x'"),
        ({"TYMPAN_S3_ADDRESSING_STYLE": "auto"}, "TYMPAN_S3_ADDRESSING_STYLE must be one of"),
        ({"TYMPAN_S3_PART_BYTES": "1048576"}, "TYMPAN_S3_PART_BYTES must be 5242880.."),
        ({"TYMPAN_S3_PART_BYTES": "lots"}, "TYMPAN_S3_PART_BYTES='lots' is not valid"),
    ],
)
def test_bad_blob_settings_name_the_variable(changes: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(s3_environ(**changes))
    assert message in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


def test_s3_settings_are_not_needed_for_the_local_store() -> None:
    settings = Settings.from_env({"TYMPAN_S3_BUCKET": "unused-bucket"})
    assert settings.blob_store == "local"
