"""Health's probes against scripted local servers: what counts as a success, and every way
an answer can fail (refused, silent, slow headers, garbage, huge headers, early close)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import uvloop

from core.spec import Probe
from services.health.checks import Checker
from services.health.http_probe import BODY_LIMIT, HEADER_LIMIT

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Scripted:
    """A local server running ``handler`` per connection; records each request head."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[bytes] = []
        self.endpoint = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.requests.append(await reader.readuntil(b"\r\n\r\n"))
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def scripted(handler: Handler) -> AsyncIterator[Scripted]:
    script = Scripted(handler)
    server = await asyncio.start_server(script.serve, "127.0.0.1", 0)
    script.endpoint = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        yield script
        server.close()


def answer(raw: bytes) -> Handler:
    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(raw)
        await writer.drain()

    return handler


async def silent(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
    await reader.read()  # until the prober gives up and closes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def probe(endpoint: str, path: str = "/healthz", timeout: float = 5.0) -> tuple[bool, str]:
    async with Checker("shoal-health/test") as checker:
        return await checker.check(Probe(http=path, timeout=timeout), endpoint)


def status(code: int, reason: str = "X", extra: str = "") -> bytes:
    return f"HTTP/1.1 {code} {reason}\r\n{extra}Content-Length: 2\r\n\r\nok".encode()


async def test_200_is_a_success_and_the_request_is_a_fresh_get() -> None:
    async with scripted(answer(status(200, "OK"))) as server:
        assert await probe(server.endpoint) == (True, "")
        assert await probe(server.endpoint) == (True, "")
    assert len(server.requests) == 2  # one connection per probe
    head = server.requests[0].decode()
    assert head.startswith("GET /healthz HTTP/1.1\r\n")
    assert f"\r\nHost: {server.endpoint}\r\n" in head
    assert "\r\nUser-Agent: shoal-health/test\r\n" in head
    assert "\r\nConnection: close\r\n" in head


async def test_2xx_and_3xx_succeed_and_redirects_are_not_followed() -> None:
    for code in (204, 301, 302, 399):
        extra = "Location: http://127.0.0.1:1/elsewhere\r\n" if code != 204 else ""
        raw = status(code, extra=extra) if code != 204 else b"HTTP/1.1 204 No Content\r\n\r\n"
        async with scripted(answer(raw)) as server:
            assert await probe(server.endpoint) == (True, ""), code
        assert len(server.requests) == 1


async def test_4xx_and_5xx_fail_with_the_status() -> None:
    for code in (199, 400, 404, 500, 503):
        async with scripted(answer(status(code))) as server:
            assert await probe(server.endpoint, "/ready") == (False, f"HTTP {code} from GET /ready")


async def test_an_answer_arriving_byte_by_byte_counts() -> None:
    async def trickle(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for byte in status(200, "OK"):
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0)

    async with scripted(trickle) as server:
        assert await probe(server.endpoint) == (True, "")


async def test_no_body_length_the_answer_ends_with_the_connection() -> None:
    raw = b"HTTP/1.0 200 OK\r\n\r\nbody until close"
    async with scripted(answer(raw)) as server:
        assert await probe(server.endpoint) == (True, "")


async def test_an_endless_body_is_read_only_up_to_the_limit() -> None:
    async def endless(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
        for _ in range(BODY_LIMIT // 1024 + 2):
            writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(3600)  # never ends the body

    async with scripted(endless) as server:
        assert await probe(server.endpoint, timeout=30) == (True, "")


async def test_refused_connect_fails_with_the_reason() -> None:
    ok, reason = await probe(f"127.0.0.1:{free_port()}")
    assert not ok
    assert reason.startswith("GET /healthz: connect to 127.0.0.1:")
    assert "refused" in reason.lower()


async def test_a_silent_server_times_out() -> None:
    async with scripted(silent) as server:
        assert await probe(server.endpoint, timeout=0.2) == (
            False,
            "GET /healthz: no answer within 0.2s",
        )


async def test_slow_headers_time_out_the_status_line_is_not_enough() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        await writer.drain()
        await reader.read()

    async with scripted(slow) as server:
        assert await probe(server.endpoint, timeout=0.2) == (
            False,
            "GET /healthz: no answer within 0.2s",
        )


async def test_garbage_is_not_an_http_answer() -> None:
    async with scripted(answer(b"SSH-2.0-OpenSSH_9.2\r\n")) as server:
        ok, reason = await probe(server.endpoint)
    assert not ok
    assert reason.startswith("GET /healthz: not an HTTP answer")


async def test_a_close_before_the_headers_fails() -> None:
    for raw in (b"", b"HTTP/1.1 200 OK\r\nContent-"):
        async with scripted(answer(raw)) as server:
            assert await probe(server.endpoint) == (
                False,
                "GET /healthz: connection closed before the answer's headers",
            )


async def test_huge_headers_are_bounded() -> None:
    async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        line = b"X-Pad: " + b"p" * 1000 + b"\r\n"
        for _ in range(HEADER_LIMIT // len(line) + 8):
            writer.write(line)
        await writer.drain()
        await reader.read()  # the headers never end

    async with scripted(huge) as server:
        assert await probe(server.endpoint, timeout=30) == (
            False,
            f"GET /healthz: headers larger than {HEADER_LIMIT // 1024} KiB",
        )


async def test_a_path_cannot_break_the_request_apart() -> None:
    async with scripted(answer(status(200))) as server:
        assert await probe(server.endpoint, "/a b\r\nX-Evil: 1") == (True, "")
    head = server.requests[0].decode()
    assert head.startswith("GET /a%20b%0D%0AX-Evil:%201 HTTP/1.1\r\n")
    assert "\r\nX-Evil" not in head


async def test_tcp_probe_connects_or_names_the_failure() -> None:
    async with scripted(silent) as server, Checker("t") as checker:
        assert await checker.check(Probe(tcp=True), server.endpoint) == (True, "")
        ok, reason = await checker.check(Probe(tcp=True), f"127.0.0.1:{free_port()}")
    assert not ok
    assert reason.startswith("TCP connect to 127.0.0.1:")


def test_the_same_answers_on_uvloop_the_services_loop() -> None:
    async def cases() -> list[tuple[bool, str]]:
        results = []
        for raw in (status(200), status(503), b"garbage\r\n\r\n"):
            async with scripted(answer(raw)) as server:
                results.append(await probe(server.endpoint))
        async with scripted(silent) as server:
            results.append(await probe(server.endpoint, timeout=0.2))
        results.append(await probe(f"127.0.0.1:{free_port()}"))
        return results

    results = uvloop.run(cases())
    assert results[:2] == [(True, ""), (False, "HTTP 503 from GET /healthz")]
    assert results[2][1].startswith("GET /healthz: not an HTTP answer")
    assert results[3] == (False, "GET /healthz: no answer within 0.2s")
    assert not results[4][0]
    assert "refused" in results[4][1].lower()
