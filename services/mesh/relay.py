"""The mesh's data path: a TCP relay per ``VIP:port`` and a DNS server per node network.

A relay accepts a connection from a container, finds the namespace of its source address
(one of this node's networks; anything else is refused), checks the allow rule, then
connects to a ready replica of the app (round robin; a replica that refuses or times out
is skipped for the next one, so a replica that just died costs no connection) and copies
bytes both ways until either side closes. HTTP and any other TCP protocol look the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from core.logs import get_logger
from services.mesh import dnswire

log = get_logger("shoal.mesh.relay")

CONNECT_TIMEOUT = 1.0
CHUNK = 256 * 1024


@dataclass
class RelayCounters:
    accepted: int = 0
    refused: int = 0  # isolation: source not allowed, or unknown
    failed: int = 0  # no replica could be reached
    retried: int = 0  # connects that failed over to another replica


#: (source address) -> the endpoints to try, in order; None: refused.
Chooser = Callable[[str], Sequence[str] | None]


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def _connect(
    endpoints: Sequence[str], counters: RelayCounters
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    for i, endpoint in enumerate(endpoints):
        host, _, port = endpoint.rpartition(":")
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                pair = await asyncio.open_connection(host, int(port), limit=CHUNK)
        except (OSError, TimeoutError, ValueError) as err:
            log.debug("replica unreachable", endpoint=endpoint, error=str(err))
            if i + 1 < len(endpoints):
                counters.retried += 1
            continue
        sock = pair[1].get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return pair
    return None


class Relay:
    """One listening socket ``vip:port``; ``choose`` is read at every connection."""

    def __init__(
        self, vip: ipaddress.IPv4Address, port: int, choose: Chooser, counters: RelayCounters
    ) -> None:
        self.vip = vip
        self.port = port
        self.choose = choose
        self.counters = counters
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._handle, str(self.vip), self.port, reuse_address=True, limit=CHUNK, backlog=1024
        )

    async def stop(self) -> None:
        """Stop accepting; connections already relayed go on until they close."""
        if self.server is not None:
            self.server.close()
            self.server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if peer else ""
        endpoints = self.choose(source)
        if endpoints is None:
            self.counters.refused += 1
            writer.transport.abort()
            return
        pair = await _connect(endpoints, self.counters)
        if pair is None:
            self.counters.failed += 1
            writer.transport.abort()
            return
        self.counters.accepted += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        up_reader, up_writer = pair
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()
            for w in (writer, up_writer):
                with contextlib.suppress(ConnectionError, OSError):
                    await w.wait_closed()


# -- DNS -----------------------------------------------------------------------------------

#: (name, namespace of the querier) -> addresses, [] for a name error, None to forward.
Resolver = Callable[[str, str], list[ipaddress.IPv4Address] | None]


def upstream_servers(path: str = "/etc/resolv.conf") -> list[str]:
    """The host's resolvers: where names that are not the cluster's go."""
    out: list[str] = []
    with contextlib.suppress(OSError), open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                out.append(parts[1])
    return out


class _Forward(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if not self.answer.done():
            self.answer.set_result(data)


async def forward(query: bytes, servers: Sequence[str], timeout: float = 2.0) -> bytes | None:
    loop = asyncio.get_running_loop()
    for server in servers:
        host, _, port = server.partition("#")  # "address" or "address#port" (as dig writes it)
        transport, proto = await loop.create_datagram_endpoint(
            _Forward, remote_addr=(host, int(port or 53))
        )
        try:
            transport.sendto(query)
            async with asyncio.timeout(timeout):
                return await proto.answer
        except (TimeoutError, OSError):
            continue
        finally:
            transport.close()
    return None


class DnsServer(asyncio.DatagramProtocol):
    """Answers on one node network's gateway, for containers of that network's namespace."""

    def __init__(self, namespace: str, resolve: Resolver, upstream: Sequence[str]) -> None:
        self.namespace = namespace
        self.resolve = resolve
        self.upstream = list(upstream)
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.answered = 0
        self.forwarded = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is no subclass

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        try:
            query = dnswire.parse_query(data)
        except dnswire.DnsError as err:
            log.debug("malformed DNS query dropped", error=str(err), source=str(addr))
            reply = dnswire.format_error(data)
            if reply is not None and self.transport is not None:
                self.transport.sendto(reply, addr)
            return
        addresses = self.resolve(query.name, self.namespace)
        if addresses is None:
            task = asyncio.create_task(self._forward(data, addr))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return
        self.answered += 1
        reply = dnswire.answer(query, addresses) if addresses else dnswire.name_error(query)
        if self.transport is not None:
            self.transport.sendto(reply, addr)

    async def _forward(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.forwarded += 1
        reply = await forward(data, self.upstream)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        for task in self.tasks:
            task.cancel()


async def start_dns(
    gateway: ipaddress.IPv4Address,
    namespace: str,
    resolve: Resolver,
    upstream: Sequence[str],
    port: int = 53,
) -> DnsServer:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(
        lambda: DnsServer(namespace, resolve, upstream), local_addr=(str(gateway), port)
    )
    return proto
