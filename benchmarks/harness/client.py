"""A thin client for the audio-session API over one shared aiohttp session, speaking JSON or
msgpack (the Server-Sent Events feed is text whatever the transport). Chunk bodies arrive
pre-encoded; only control messages are encoded here."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import msgpack

__all__ = ["MSGPACK", "ApiClient", "RequestFailed"]

MSGPACK = "application/msgpack"
_JSON = "application/json"
_EVENT_STREAM = "text/event-stream"
_SESSIONS = "/api/v1/audio_sessions"


class RequestFailed(Exception):
    """A control or status request did not return the expected status."""

    def __init__(self, what: str, status: int, body: bytes) -> None:
        super().__init__(f"{what}: HTTP {status}: {body[:200]!r}")
        self.status = status


class ApiClient:
    def __init__(
        self, http: aiohttp.ClientSession, base_url: str, api_key: str, transport: str
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/") + _SESSIONS
        self.msgpack = transport == "msgpack"
        content_type = MSGPACK if self.msgpack else _JSON
        self._send_headers = {"x-api-key": api_key, "Content-Type": content_type}
        self._read_headers = {"x-api-key": api_key}
        if self.msgpack:
            self._send_headers["Accept"] = MSGPACK
            self._read_headers["Accept"] = MSGPACK

    def _encode(self, value: Any) -> bytes:
        if self.msgpack:
            return bytes(msgpack.packb(value, use_bin_type=True))
        return json.dumps(value).encode()

    def _decode(self, raw: bytes) -> Any:
        return msgpack.unpackb(raw, raw=False) if self.msgpack else json.loads(raw)

    async def create(self, kind: str, content_type: str) -> str:
        body = self._encode({"type": kind, "content_type": content_type})
        async with self._http.post(
            self._base + "/", data=body, headers=self._send_headers
        ) as response:
            raw = await response.read()
            if response.status != 200:
                raise RequestFailed("create session", response.status, raw)
        return str(self._decode(raw)["session_id"])

    async def put_chunk(self, session_id: str, seq: int, body: bytes) -> int:
        """Send one pre-encoded chunk body; returns the HTTP status."""
        url = f"{self._base}/{session_id}/chunks/{seq}"
        async with self._http.put(url, data=body, headers=self._send_headers) as response:
            await response.read()
            return response.status

    async def make_readonly(self, session_id: str) -> int:
        body = self._encode({"make_readonly": True})
        async with self._http.patch(
            f"{self._base}/{session_id}", data=body, headers=self._send_headers
        ) as response:
            await response.read()
            return response.status

    async def status(self, session_id: str, next_token: str | None, count: int) -> Any:
        params = {"next_token": next_token} if next_token else {"offset": "0", "count": str(count)}
        async with self._http.get(
            f"{self._base}/{session_id}/status", params=params, headers=self._read_headers
        ) as response:
            raw = await response.read()
            if response.status != 200:
                raise RequestFailed("status", response.status, raw)
        return self._decode(raw)

    async def open_sse(
        self, session_id: str, last_event_id: str | None, read_timeout_s: float
    ) -> aiohttp.ClientResponse:
        """Open the session's Server-Sent Events feed; the caller reads and closes the response.
        No total timeout (a feed lasts as long as its session), only one between reads."""
        headers = {**self._read_headers, "Accept": _EVENT_STREAM}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        response = await self._http.get(
            f"{self._base}/{session_id}/sse",
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=read_timeout_s),
        )
        if response.status != 200:
            raw = await response.read()
            response.release()
            raise RequestFailed("sse", response.status, raw)
        return response

    async def delete(self, session_id: str) -> int:
        async with self._http.delete(
            f"{self._base}/{session_id}", headers=self._read_headers
        ) as response:
            await response.read()
            return response.status
