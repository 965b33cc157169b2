"""A lean HTTP/1.1 probe: one fresh TCP connection, one GET, the status line and headers.

A probe needs only the status code, so this is a bare ``asyncio.Protocol`` fed to httptools'
response parser (llhttp, the parser the balancer's fast engine relays with) instead of a full
HTTP client: about a fifth of aiohttp's CPU per probe here (``tests/benchmarks/
bench_probes.py``), which is what a health instance spends its core on at fleet size.

Semantics (as the aiohttp probe it replaces, and as Kubernetes' HTTP probe): a fresh
connection per probe (``Connection: close``, no keep-alive), ``GET <path>`` with ``Host``
and ``User-Agent``; 200-399 is a success; a redirect is not followed (a 3xx is a success);
``timeout`` covers connect, request and the answer's headers; the body is read up to
``BODY_LIMIT`` bytes (or its end) and then the connection is closed; headers larger than
``HEADER_LIMIT`` bytes are a failure (nothing buffers them). Every failure is a reason.
"""

from __future__ import annotations

import asyncio
import functools
import os
from typing import cast
from urllib.parse import quote

import httptools

from services.health.logic import http_success

#: bytes of status line + headers accepted before the answer is called too large
HEADER_LIMIT = 64 * 1024
#: what goes into the request line as is; anything else (spaces, controls, non-ASCII) is
#: percent-encoded, so a probe path can never break the request apart
_PATH_SAFE = "".join(chr(c) for c in range(33, 127))
#: bytes of body read (then the connection is closed), as Kubernetes' probe reads 10 KiB
BODY_LIMIT = 10 * 1024


class _Answer(asyncio.Protocol):
    """Sends the request on connect; resolves ``done`` with a status code or a reason."""

    __slots__ = ("body", "done", "head", "parser", "request", "status", "transport")

    def __init__(self, request: bytes, done: asyncio.Future[int | str]) -> None:
        self.request = request
        self.done = done
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.status = 0  # set when the headers are complete
        self.head = 0  # bytes received before the headers were complete
        self.body = 0

    def _finish(self, result: int | str) -> None:
        if not self.done.done():
            self.done.set_result(result)
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        if not self.status:
            self.head += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._finish(self.parser.get_status_code())
            return
        except httptools.HttpParserError as err:
            self._finish(f"not an HTTP answer ({err})")
            return
        if self.done.done():
            return
        if not self.status and self.head > HEADER_LIMIT:
            self._finish(f"headers larger than {HEADER_LIMIT // 1024} KiB")
        elif self.status and self.body >= BODY_LIMIT:
            self._finish(self.status)

    def eof_received(self) -> bool | None:
        if self.status:
            self._finish(self.status)
        else:
            self._finish("connection closed before the answer's headers")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.status:
            self._finish(self.status)
        elif exc is not None:
            self._finish(f"connection lost: {exc}")
        else:
            self._finish("connection closed before the answer's headers")

    # -- httptools callbacks -----------------------------------------------------------

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code() or 1

    def on_body(self, body: bytes) -> None:
        self.body += len(body)

    def on_message_complete(self) -> None:
        self._finish(self.status)


def os_reason(err: OSError) -> str:
    """``Connection refused``, not asyncio's ``Connect call failed ('127.0.0.1', 80)``."""
    return os.strerror(err.errno) if err.errno else str(err)


@functools.lru_cache(maxsize=65536)
def request_bytes(host: str, path: str, user_agent: str) -> bytes:
    path = quote(path, safe=_PATH_SAFE)
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")


async def http_probe(
    host: str, port: int, path: str, timeout: float, *, host_header: str, user_agent: str
) -> tuple[bool, str]:
    """GET ``path`` on a fresh connection to ``host:port``: ``(success, reason)``."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int | str] = loop.create_future()
    request = request_bytes(host_header, path, user_agent)
    transport: asyncio.BaseTransport | None = None
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(lambda: _Answer(request, done), host, port)
            result = await done
    except TimeoutError:
        return False, f"GET {path}: no answer within {timeout:g}s"
    except OSError as err:
        return False, f"GET {path}: connect to {host_header}: {os_reason(err)}"
    finally:
        if transport is not None:
            transport.close()
    if isinstance(result, str):
        return False, f"GET {path}: {result}"
    if http_success(result):
        return True, ""
    return False, f"HTTP {result} from GET {path}"
