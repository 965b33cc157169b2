"""TCP routes at the edge (L4): one listening socket per listen port of the table, each
connection relayed, bytes both ways, to a ready replica of the port's app.

Independent of the HTTP engine (``fast`` or ``aiohttp``): both run this same relay.

- **Health gating and draining**: backends come from ``tcp_routes.TcpTable`` (ready, not
  terminating replicas). A replica that leaves the table gets no new connection; the ones
  it has are relayed until either side closes. A route that goes away stops listening; its
  open connections go on too.
- **Balancing**: ``round_robin``, ``least_conn`` (this instance's open connections per
  replica) or ``hash`` (rendezvous on the client IP), the pickers of ``algorithms.py``.
- **Failures**: a replica that refuses or does not answer within the connect timeout is
  ejected for ``eject_seconds`` (until health finds it ready again, as for HTTP) and the
  connection tried on another, up to ``retries`` more; when every replica left is ejected
  they are tried anyway (panic routing). No replica reachable, or none ready: the client
  connection is closed at once and counted as an error.
- **Sockets**: every worker (and every instance on the host) binds each port with
  ``SO_REUSEPORT``, so the kernel spreads connections among them. A port that cannot be
  bound (taken by another program) is logged and tried again on the next sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from collections.abc import Callable
from dataclasses import dataclass

from core.keys import AppKey
from core.logs import get_logger
from services.balancer.algorithms import Picker, make_picker
from services.balancer.policy import Ejected
from services.balancer.routes import Backend
from services.balancer.tcp_routes import TcpAppRoute, TcpTable, listener_changes
from services.balancer.tcp_stats import TcpAppStats, TcpStats

log = get_logger("shoal.balancer.tcp")

CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class TcpOptions:
    connect_timeout: float = 2.0
    retries: int = 2
    eject_seconds: float = 3.0
    reuse_port: bool = True
    #: on shutdown, how long open connections may go on before they are cut
    drain_timeout: float = 10.0


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: Callable[[int], None]
) -> None:
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            count(len(data))
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class TcpRelay:
    """The listeners of one balancer worker; ``apply`` a new table whenever routes change."""

    def __init__(self, host: str, stats: TcpStats, options: TcpOptions | None = None) -> None:
        self.host = host
        self.stats = stats
        self.options = options or TcpOptions()
        self.table = TcpTable()
        self.servers: dict[int, asyncio.Server] = {}
        self.bind_errors: dict[int, str] = {}
        self.ejected = Ejected()
        self.pickers: dict[tuple[AppKey, int], Picker] = {}
        self.open_per_replica: dict[str, int] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False

    # -- listeners ---------------------------------------------------------------------

    async def apply(self, table: TcpTable) -> bool:
        """Swap in ``table`` and listen on exactly its ports; False when a port could not
        be bound (the caller tries again later)."""
        self.table = table
        for route in table.shadowed:
            log.warning(
                "TCP listen port taken by another app; ignored",
                listen=route.listen,
                app=str(route.key),
                owner=str(table.by_port[route.listen].key),
            )
        for key in [k for k in self.pickers if table.by_port.get(k[1], None) is None]:
            del self.pickers[key]
        if self.closing:
            return True
        start, stop = listener_changes(self.servers, table)
        for port in stop:
            self.servers.pop(port).close()  # open connections go on
            log.info("TCP route removed: not listening any more", listen=port)
        for port in start:
            try:
                self.servers[port] = await asyncio.start_server(
                    functools.partial(self._handle, port),
                    self.host,
                    port,
                    reuse_address=True,
                    reuse_port=self.options.reuse_port,
                    limit=CHUNK,
                    backlog=1024,
                )
            except OSError as err:
                if self.bind_errors.get(port) != str(err):
                    log.error(
                        "TCP route cannot listen",
                        listen=f"{self.host}:{port}",
                        app=str(table.by_port[port].key),
                        error=str(err),
                    )
                self.bind_errors[port] = str(err)
                continue
            self.bind_errors.pop(port, None)
            log.info(
                "TCP route listening",
                listen=f"{self.host}:{port}",
                app=str(table.by_port[port].key),
            )
        for port in [p for p in self.bind_errors if p not in table.by_port]:
            del self.bind_errors[port]
        return not self.bind_errors

    async def close(self) -> None:
        """Stop accepting; open connections get ``drain_timeout`` to finish, then are cut."""
        self.closing = True
        for server in self.servers.values():
            server.close()
        self.servers.clear()
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=self.options.drain_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)

    # -- connections -------------------------------------------------------------------

    def _picker(self, route: TcpAppRoute) -> Picker:
        key = (route.key, route.listen)
        picker = self.pickers.get(key)
        if picker is None or picker.algorithm != route.algorithm:
            picker = self.pickers[key] = make_picker(route.algorithm)
        return picker

    def choose(self, route: TcpAppRoute, client: str, tried: set[str]) -> Backend | None:
        """The next replica to try: not tried yet, not ejected unless all left are."""
        picker = self._picker(route)
        exclude = tried | self.ejected.current()
        backend = picker.pick(
            route.backends, key=client, exclude=exclude, inflight=self.open_per_replica
        )
        if backend is None:  # panic routing: the ejected ones rather than nothing
            backend = picker.pick(
                route.backends, key=client, exclude=tried, inflight=self.open_per_replica
            )
        return backend

    async def _connect(
        self, route: TcpAppRoute, client: str, stats: TcpAppStats
    ) -> tuple[Backend, asyncio.StreamReader, asyncio.StreamWriter] | None:
        tried: set[str] = set()
        for attempt in range(1 + max(0, self.options.retries)):
            backend = self.choose(route, client, tried)
            if backend is None:
                return None
            tried.add(backend.id)
            if attempt:
                stats.retries += 1
            try:
                async with asyncio.timeout(self.options.connect_timeout):
                    reader, writer = await asyncio.open_connection(
                        backend.host, backend.port, limit=CHUNK
                    )
            except (OSError, TimeoutError) as err:
                self.ejected.add(backend.id, self.options.eject_seconds)
                log.info(
                    "replica ejected: TCP connect failed",
                    app=str(route.key),
                    replica=backend.id,
                    error=str(err) or type(err).__name__,
                )
                continue
            return backend, reader, writer
        return None

    async def _handle(
        self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        route = self.table.by_port.get(port)
        if route is None:  # the route went away while this connection was accepted
            writer.transport.abort()
            return
        stats = self.stats.app(route.key)
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else ""
        upstream = await self._connect(route, client, stats)
        if upstream is None:
            stats.failed()
            log.debug("TCP connection closed: no ready replica answered", app=str(route.key))
            writer.transport.abort()
            return
        backend, up_reader, up_writer = upstream
        stats.opened(backend.id)
        self.open_per_replica[backend.id] = self.open_per_replica.get(backend.id, 0) + 1
        _nodelay(writer)
        _nodelay(up_writer)
        try:
            await asyncio.gather(
                _pump(reader, up_writer, stats.sent), _pump(up_reader, writer, stats.received)
            )
        finally:
            stats.closed(backend.id)
            left = self.open_per_replica.get(backend.id, 0) - 1
            if left > 0:
                self.open_per_replica[backend.id] = left
            else:
                self.open_per_replica.pop(backend.id, None)
            for w in (writer, up_writer):
                w.close()
            for w in (writer, up_writer):
                with contextlib.suppress(ConnectionError, OSError):
                    await w.wait_closed()
