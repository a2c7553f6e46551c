"""Webhooks against a real receiver on loopback: signed, in order, retried, never in the way."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from server.app import create_app
from server.config import Settings
from tests.conftest import RAW_S16, Api
from tests.test_events_api import scene, stream, walk

SECRET = "a-receiver-secret-of-some-length"


class Receiver:
    """Records deliveries; fails the first ``fail_first`` with 500; holds every answer while
    ``hold`` is clear."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.hold = asyncio.Event()
        self.hold.set()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls.append((dict(request.headers), body))
        await self.hold.wait()
        if len(self.calls) <= self.fail_first:
            return web.Response(status=500)
        return web.Response(status=204)

    def delivered(self) -> list[dict[str, Any]]:
        """Each entry once, in the order first accepted, after checking every signature."""
        out: dict[int, dict[str, Any]] = {}
        for headers, body in self.calls:
            parts = dict(p.split("=", 1) for p in headers["Tympan-Signature"].split(","))
            timestamp, mac = parts["t"], parts["v1"]
            expected = hmac.new(
                SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
            ).hexdigest()
            assert hmac.compare_digest(mac, expected), "bad signature"
            payload = json.loads(body)
            assert headers["Tympan-Delivery"] == f"{payload['session_id']}/{payload['seq']}"
            out.setdefault(payload["seq"], payload)
        return [out[seq] for seq in sorted(out)]


async def receiver_url(aiohttp_server: Callable[..., Any], receiver: Receiver) -> str:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = await aiohttp_server(app)
    return str(server.make_url("/hook"))


@pytest.fixture
def fast_retries(settings: Settings) -> Settings:
    return settings.replace(webhook_retry_base_s=0.02, webhook_timeout_s=60.0)


async def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


async def test_webhook_gets_the_event_log_signed_in_order_despite_failures(
    aiohttp_client: Callable[..., Any],
    aiohttp_server: Callable[..., Any],
    fast_retries: Settings,
    api_key: str,
    speech_16k: np.ndarray,
) -> None:
    receiver = Receiver(fail_first=3)
    url = await receiver_url(aiohttp_server, receiver)
    api = Api(await aiohttp_client(create_app(fast_retries)), api_key)
    session_id = await stream(api, scene(speech_16k), webhook={"url": url, "secret": SECRET})
    log = await walk(api, session_id)
    assert log
    await wait_for(lambda: len(receiver.delivered()) == len(log))
    delivered = receiver.delivered()
    assert [d["seq"] for d in delivered] == list(range(len(log)))
    assert [d["event"] for d in delivered] == log
    assert all(d["session_id"] == session_id for d in delivered)
    assert len(receiver.calls) == len(log) + 3  # the first entry was tried four times
    metrics = await (await api.client.get("/metrics")).text()
    assert 'tympan_webhook_deliveries_total{outcome="retried"} 3.0' in metrics


async def test_a_stuck_receiver_never_holds_up_inference(
    aiohttp_client: Callable[..., Any],
    aiohttp_server: Callable[..., Any],
    fast_retries: Settings,
    api_key: str,
    speech_16k: np.ndarray,
) -> None:
    receiver = Receiver()
    receiver.hold.clear()  # the receiver accepts connections and never answers, for now
    url = await receiver_url(aiohttp_server, receiver)
    api = Api(await aiohttp_client(create_app(fast_retries)), api_key)
    session_id = await stream(api, scene(speech_16k), webhook={"url": url, "secret": SECRET})
    # every window and the whole log are there while the first delivery is still waiting
    log = await walk(api, session_id)
    assert log and len(await api.all_results(session_id)) > 30
    assert len(receiver.calls) == 1
    receiver.hold.set()
    await wait_for(lambda: len(receiver.delivered()) == len(log))
    assert [d["event"] for d in receiver.delivered()] == log


async def test_a_dead_receiver_is_given_up_per_entry(
    aiohttp_client: Callable[..., Any],
    aiohttp_server: Callable[..., Any],
    settings: Settings,
    api_key: str,
    speech_16k: np.ndarray,
) -> None:
    receiver = Receiver(fail_first=10**6)
    url = await receiver_url(aiohttp_server, receiver)
    quick = settings.replace(webhook_retry_base_s=0.01, webhook_max_attempts=2)
    api = Api(await aiohttp_client(create_app(quick)), api_key)
    session_id = await stream(api, scene(speech_16k), webhook={"url": url, "secret": SECRET})
    log = await walk(api, session_id)
    await wait_for(lambda: len(receiver.calls) == 2 * len(log))
    seqs = [json.loads(body)["seq"] for _, body in receiver.calls]
    assert seqs == [seq for seq in range(len(log)) for _ in range(2)]


@pytest.mark.parametrize(
    ("webhook", "message"),
    [
        ({"url": "ftp://example.test/x", "secret": SECRET}, "webhook.url must be an http"),
        ({"url": "http://", "secret": SECRET}, "webhook.url must be an http"),
        ({"url": "http://example.test/x"}, "webhook.secret is required"),
        ({"url": "http://example.test/x", "secret": 7}, "webhook.secret must be a string of at"),
        ({"url": "http://example.test/x", "secret": "short"}, "webhook.secret must be"),
        ("http://example.test/x", "webhook must be an object"),
    ],
)
async def test_bad_webhooks_are_400(api: Api, webhook: Any, message: str) -> None:
    payload = await api.create(expect=400, type="stream", content_type=RAW_S16, webhook=webhook)
    assert message in payload["error"]


async def test_deliveries_carry_on_after_a_restart(
    aiohttp_client: Callable[..., Any],
    aiohttp_server: Callable[..., Any],
    fast_retries: Settings,
    api_key: str,
    speech_16k: np.ndarray,
) -> None:
    receiver = Receiver()
    url = await receiver_url(aiohttp_server, receiver)
    first = await aiohttp_client(create_app(fast_retries))
    api = Api(first, api_key)
    session_id = await stream(api, scene(speech_16k), webhook={"url": url, "secret": SECRET})
    log = await walk(api, session_id)
    await wait_for(lambda: len(receiver.delivered()) >= 1)
    receiver.hold.clear()  # the next delivery hangs when the server stops
    await wait_for(lambda: len(receiver.calls) >= 2)
    await first.close()
    receiver.hold.set()
    second = Api(await aiohttp_client(create_app(fast_retries)), api_key)
    await wait_for(lambda: len(receiver.delivered()) == len(log))
    assert [d["event"] for d in receiver.delivered()] == log
    assert await walk(second, session_id) == log
    # what was acknowledged before the restart is not sent again; the one in flight may be
    sent = [json.loads(body)["seq"] for _, body in receiver.calls]
    assert sent.count(0) == 1 and sent.count(1) <= 2, sent
