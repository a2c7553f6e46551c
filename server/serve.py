"""Run the application on a socket we control, so that connection-level limits apply before
aiohttp sees a byte: at most ``max_connections`` at once, and request headers that must arrive
within ``header_timeout_s`` of their first byte (a client sending a byte a second cannot hold a
connection). Request bodies have their own timeout in the handlers; idle keep-alive connections
close after ``keepalive_timeout_s``. Optional TLS. SIGTERM/SIGINT shut down gracefully: stop
accepting, finish in-flight requests, then close the engine and the store in order.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Callable
from typing import Any

from aiohttp import web

from server.config import Settings

__all__ = ["MAX_REQUEST_LINE_BYTES", "ConnectionGuard", "run_server", "serve_until_stopped"]

log = logging.getLogger(__name__)

_HEADER_END = b"\r\n\r\n"
_MAX_TRACKED_HEADER_BYTES = 64 * 1024


class _GuardedProtocol(asyncio.Protocol):
    """Wraps aiohttp's protocol; follows HTTP/1.1 framing just enough to time header phases."""

    def __init__(self, guard: ConnectionGuard, inner: Any) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._admitted = False
        self._header = bytearray()
        self._body_remaining = 0
        self._untracked = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if self._guard.active >= self._guard.max_connections:
            self._guard.refused += 1
            transport.abort()
            return
        self._admitted = True
        self._guard.active += 1
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        if not self._untracked:
            self._track(data)
        self._inner.data_received(data)

    def _track(self, data: bytes) -> None:
        if self._body_remaining >= len(data):  # the common case: more of a request body
            self._body_remaining -= len(data)
            return
        view = memoryview(data)
        while view:
            if self._body_remaining:
                taken = min(self._body_remaining, len(view))
                self._body_remaining -= taken
                view = view[taken:]
                continue
            if not self._header and self._timer is None:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(self._guard.header_timeout_s, self._headers_too_slow)
            scan_from = max(0, len(self._header) - 3)
            self._header += view
            end = self._header.find(_HEADER_END, scan_from)
            if end < 0:
                if len(self._header) > _MAX_TRACKED_HEADER_BYTES:
                    self._stop_tracking()  # aiohttp refuses oversized headers itself
                return
            consumed = end + len(_HEADER_END) - (len(self._header) - len(view))
            head = bytes(self._header[:end]).lower()
            self._header.clear()
            self._cancel_timer()
            if b"transfer-encoding:" in head:
                self._stop_tracking()  # chunked bodies: the handlers' body timeout applies
                return
            self._body_remaining = _content_length(head)
            view = view[consumed:]

    def _stop_tracking(self) -> None:
        self._untracked = True
        self._header.clear()
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _headers_too_slow(self) -> None:
        self._timer = None
        if self._header and self._transport is not None:
            self._guard.timed_out += 1
            log.info(
                "closing a connection whose request headers took over %.0f s",
                self._guard.header_timeout_s,
            )
            self._transport.abort()

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self._admitted:
            self._guard.active -= 1
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._admitted:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._admitted:
            self._inner.resume_writing()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip() == b"content-length":
            try:
                return max(0, int(value.strip()))
            except ValueError:
                return 0  # aiohttp answers 400 for it
    return 0


class ConnectionGuard:
    def __init__(
        self, protocol_factory: Callable[[], Any], max_connections: int, header_timeout_s: float
    ) -> None:
        self._factory = protocol_factory
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.active = 0
        self.refused = 0
        self.timed_out = 0

    def __call__(self) -> asyncio.Protocol:
        return _GuardedProtocol(self, self._factory())


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


# aiohttp answers a request line longer than its parser's limit (8190 bytes by default) itself,
# in plain text. Event queries carry tag overrides and next_tokens carry them back, so lines
# are allowed to 64 KiB; whatever the handlers see gets the JSON errors of the API.
MAX_REQUEST_LINE_BYTES = 64 * 1024


async def serve_until_stopped(
    app: web.Application,
    settings: Settings,
    stop: asyncio.Event,
    on_ready: Callable[[str], None] = print,
) -> None:
    runner = web.AppRunner(
        app,
        handle_signals=False,
        keepalive_timeout=settings.keepalive_timeout_s,
        shutdown_timeout=10.0,
        max_line_size=MAX_REQUEST_LINE_BYTES,
    )
    await runner.setup()
    guard = ConnectionGuard(runner.server, settings.max_connections, settings.header_timeout_s)  # type: ignore[arg-type]
    context = _ssl_context(settings)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        guard, settings.host, settings.port, ssl=context, reuse_address=True, backlog=1024
    )
    try:
        port = server.sockets[0].getsockname()[1]
        scheme = "https" if context else "http"
        on_ready(f"======== Running on {scheme}://{settings.host}:{port} ========")
        await stop.wait()
        log.info("shutting down: no new connections; finishing in-flight requests")
        server.close()
    finally:
        await runner.cleanup()


def run_server(app: web.Application, settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_until_stopped(app, settings, stop, lambda line: print(line, flush=True))

    asyncio.run(main())
