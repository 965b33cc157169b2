"""The relay and the DNS server on loopback sockets (no broker, no Docker)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence

from services.mesh import dnswire
from services.mesh.relay import Relay, RelayCounters, start_dns

LOOP = ipaddress.IPv4Address("127.0.0.1")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def echo_server(tag: bytes) -> tuple[asyncio.Server, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readline()
        writer.write(tag + b" " + data)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"127.0.0.1:{port}"


async def ask(port: int, line: bytes = b"hi\n") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(line)
    await writer.drain()
    try:
        return await reader.read()
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


async def test_relay_copies_both_ways_fails_over_and_refuses() -> None:
    a, a_addr = await echo_server(b"a")
    b, b_addr = await echo_server(b"b")
    dead = f"127.0.0.1:{free_port()}"
    choice: list[Sequence[str] | None] = [[a_addr, b_addr]]
    sources: list[str] = []

    def choose(source: str) -> Sequence[str] | None:
        sources.append(source)
        return choice[0]

    counters = RelayCounters()
    port = free_port()
    relay = Relay(LOOP, port, choose, counters)
    await relay.start()
    try:
        assert await ask(port) == b"a hi\n"
        assert sources == ["127.0.0.1"]
        choice[0] = [dead, b_addr]  # a replica that just died: the next one answers
        assert await ask(port) == b"b hi\n"
        assert counters.retried == 1
        choice[0] = None  # isolation: refused, nothing sent anywhere
        assert await ask(port) == b""
        assert counters.refused == 1
        choice[0] = [dead]  # nobody to answer
        assert await ask(port) == b""
        assert counters.failed == 1
        choice[0] = []
        assert await ask(port) == b""
        assert (counters.accepted, counters.failed) == (2, 2)
    finally:
        await relay.stop()
        a.close()
        b.close()


async def test_relay_streams_large_bodies() -> None:
    blob = b"x" * (8 * 1024 * 1024)

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = await reader.readexactly(len(blob))
        writer.write(str(len(got)).encode() + b"\n" + got)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    target = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    port = free_port()
    relay = Relay(LOOP, port, lambda _: [target], RelayCounters())
    await relay.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(blob)
        await writer.drain()
        assert await reader.readline() == b"8388608\n"
        assert await reader.readexactly(len(blob)) == blob
        writer.close()
    finally:
        await relay.stop()
        server.close()


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answers: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.answers.put_nowait(data)


async def test_dns_answers_cluster_names_and_forwards_the_rest() -> None:
    loop = asyncio.get_running_loop()
    vip = ipaddress.IPv4Address("10.200.7.130")
    upstream = await start_dns(LOOP, "-", lambda n, q: [ipaddress.IPv4Address("1.2.3.4")], [], 0)
    assert upstream.transport is not None
    up_port = upstream.transport.get_extra_info("sockname")[1]
    asked: list[tuple[str, str]] = []

    def resolve(name: str, querier: str) -> list[ipaddress.IPv4Address] | None:
        asked.append((name, querier))
        return {"db": [vip], "nope.prod": []}.get(name)

    server = await start_dns(LOOP, "prod", resolve, [f"127.0.0.1#{up_port}"], 0)
    assert server.transport is not None
    port = server.transport.get_extra_info("sockname")[1]
    transport, client = await loop.create_datagram_endpoint(
        _Client, remote_addr=("127.0.0.1", port)
    )
    try:
        for name, expected in (
            ("db", (0, [vip])),
            ("nope.prod", (3, [])),
            ("example.com", (0, [ipaddress.IPv4Address("1.2.3.4")])),
        ):
            transport.sendto(dnswire.build_query(name))
            async with asyncio.timeout(5):
                assert dnswire.answer_addresses(await client.answers.get()) == expected
        transport.sendto(b"\x00\x07junk")  # malformed: a format error, the server goes on
        async with asyncio.timeout(5):
            assert (await client.answers.get())[:4] == b"\x00\x07\x80\x01"
        assert asked[:3] == [("db", "prod"), ("nope.prod", "prod"), ("example.com", "prod")]
        assert (server.answered, server.forwarded) == (2, 1)
    finally:
        transport.close()
        server.close()
        upstream.close()
