"""The aiohttp engine's doors: a connection cap and a request-head timeout, which aiohttp's
server does not have (its parser already bounds header lines, header count and pipelining).

``GuardedServer`` is ``aiohttp.web.Server`` whose connections are ``GuardedHandler``s:

- beyond ``max_connections`` open connections a new one gets 503 and is closed;
- once a request head has begun (bytes arrived while no request is being served), it must
  be complete within ``header_timeout`` seconds, or the client gets 408 and is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler


def plain_response(status: int, reason: str, message: str) -> bytes:
    body = f"shoal: {message}\n".encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


class GuardedHandler(RequestHandler):
    def __init__(
        self, manager: GuardedServer, *, loop: asyncio.AbstractEventLoop, **kwargs: Any
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self.guard = manager
        self.head_timer: asyncio.TimerHandle | None = None
        self.head_count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self.guard.connections) >= self.guard.max_connections:
            tcp: asyncio.Transport = transport  # type: ignore[assignment]
            tcp.write(plain_response(503, "Service Unavailable", "too many connections"))
            tcp.close()
            return
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        timer = self.head_timer
        if timer is not None:
            if self._request_count > self.head_count:  # the head it timed is complete
                timer.cancel()
                self.head_timer = None
        elif data and not self._request_in_progress and not self._messages:
            self.head_count = self._request_count
            self.head_timer = self._loop.call_later(self.guard.header_timeout, self._head_late)

    def _head_late(self) -> None:
        self.head_timer = None
        if self._request_count > self.head_count or self.transport is None:
            return
        timeout = self.guard.header_timeout
        self.transport.write(
            plain_response(408, "Request Timeout", f"request head not received within {timeout:g}s")
        )
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        super().connection_lost(exc)


class GuardedServer(web.Server):
    def __init__(
        self, handler: Any, *, max_connections: int, header_timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(handler, **kwargs)
        self.max_connections = max_connections
        self.header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, loop=self._loop, **self._kwargs)
