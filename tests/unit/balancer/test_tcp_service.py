"""TCP routes through the balancer's shell, on the in-memory broker and local echo servers,
with either HTTP engine: health gating, balancing, draining, a dead replica, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from core.bus import Bus
from core.channels import APPS, HEALTH, LB_METRICS
from core.config import ServiceConfig
from core.keys import AppKey
from core.memory import MemoryBroker
from core.spec import AppSpec
from core.state import AppHealth, AppState, AppVersion, LbMetrics, ReplicaHealth
from services.balancer.service import BalancerOptions, BalancerService
from tests.support.memory import connected, serving
from tests.support.net import free_port
from tests.support.waiting import eventually

PREFIX = "t"
DB = AppKey("d", "db")


class Echo:
    """A replica: greets with its id, then echoes every line."""

    def __init__(self, rid: str) -> None:
        self.rid = rid
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"{self.rid}\n".encode())
        try:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    def stop(self) -> None:
        assert self.server is not None
        self.server.close()


@asynccontextmanager
async def replicas(*ids: str) -> AsyncIterator[dict[str, Echo]]:
    echoes = {rid: Echo(rid) for rid in ids}
    for echo in echoes.values():
        await echo.start()
    try:
        yield echoes
    finally:
        for echo in echoes.values():
            if echo.server is not None:
                echo.server.close()


@asynccontextmanager
async def running(
    broker: MemoryBroker, engine: str
) -> AsyncIterator[tuple[BalancerService, Bus, int]]:
    port, admin = free_port(), free_port()
    options = BalancerOptions(
        listen=("127.0.0.1", port), admin=("127.0.0.1", admin), engine=engine, metrics_interval=0.1
    )
    service = BalancerService(ServiceConfig(broker=broker, prefix=PREFIX, instance="lb1"), options)
    async with connected(broker, PREFIX) as bus, serving(service, timeout=10):
        yield service, bus, admin


def app(listen: int, algorithm: str = "round_robin") -> AppState:
    doc: dict[str, Any] = {
        "name": DB.name,
        "namespace": DB.namespace,
        "image": "x:1",
        "ports": {"db": 6379},
        "tcp_routes": [{"listen": listen, "port": "db", "algorithm": algorithm}],
    }
    spec = AppSpec.model_validate(doc)
    return AppState(
        namespace=DB.namespace,
        name=DB.name,
        revision=1,
        generation=1,
        spec=spec,
        replicas=2,
        versions=[AppVersion(revision=1, spec=spec, replicas=2)],
    )


def health(
    echoes: dict[str, Echo], ready: list[str], terminating: tuple[str, ...] = ()
) -> AppHealth:
    return AppHealth(
        namespace=DB.namespace,
        name=DB.name,
        replicas=[
            ReplicaHealth(
                id=rid,
                revision=1,
                node="n1",
                endpoint=f"127.0.0.1:{echoes[rid].port}",
                endpoints={"db": f"127.0.0.1:{echoes[rid].port}"},
                ready=rid in ready,
                terminating=rid in terminating,
            )
            for rid in echoes
        ],
    )


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def greeting(self) -> str:
        async with asyncio.timeout(5):
            return (await self.reader.readline()).decode().strip()

    async def echo(self, text: str) -> str:
        self.writer.write(f"{text}\n".encode())
        async with asyncio.timeout(5):
            return (await self.reader.readline()).decode().strip()

    def close(self) -> None:
        self.writer.close()


async def replica_of_a_new_connection(port: int) -> str:
    client = await Client.connect(port)
    try:
        return await client.greeting()
    finally:
        client.close()


def tcp_backends(service: BalancerService, listen: int) -> list[str] | None:
    route = service.tcp_route_table().get(str(listen))
    if route is None or not route["listening"]:
        return None
    return [b["id"] for b in route["backends"]]


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False


@pytest.mark.parametrize("engine", ["fast", "aiohttp"])
async def test_a_tcp_route_balances_ready_replicas_and_drains_a_terminating_one(
    engine: str,
) -> None:
    listen = free_port()
    broker = MemoryBroker()
    async with replicas("r1", "r2", "r3") as echoes, running(broker, engine) as (svc, bus, _):
        await bus.publish(APPS, app(listen))
        await bus.publish(HEALTH, health(echoes, ["r1", "r2"]))  # r3 not ready
        await eventually(lambda: tcp_backends(svc, listen) == ["r1", "r2"])
        seen = [await replica_of_a_new_connection(listen) for _ in range(4)]
        assert sorted(seen) == ["r1", "r1", "r2", "r2"]

        # r1 starts draining with a connection open: it goes on, new ones go to r2
        clients = [await Client.connect(listen) for _ in range(2)]
        by_replica = {await c.greeting(): c for c in clients}
        assert set(by_replica) == {"r1", "r2"}
        await bus.publish(HEALTH, health(echoes, ["r2"], terminating=("r1",)))
        await eventually(lambda: tcp_backends(svc, listen) == ["r2"])
        assert {await replica_of_a_new_connection(listen) for _ in range(3)} == {"r2"}
        assert await by_replica["r1"].echo("still here") == "still here"
        for c in clients:
            c.close()

        # the app loses its TCP route: the port stops listening
        plain = app(listen).spec.model_copy(update={"tcp_routes": []})
        await bus.publish(APPS, app(listen).model_copy(update={"spec": plain}))
        await eventually(lambda: svc.tcp_route_table() == {})
        assert await refused(listen)


@pytest.mark.parametrize("engine", ["fast", "aiohttp"])
async def test_a_dead_replica_is_skipped_and_metrics_count_connections_and_bytes(
    engine: str,
) -> None:
    listen = free_port()
    broker = MemoryBroker()
    async with replicas("r1", "r2") as echoes, running(broker, engine) as (svc, bus, admin):
        windows: list[LbMetrics] = []
        await bus.subscribe(LB_METRICS, lambda _k, m: windows.append(m))
        await bus.publish(APPS, app(listen))
        await bus.publish(HEALTH, health(echoes, ["r1", "r2"]))
        await eventually(lambda: tcp_backends(svc, listen) == ["r1", "r2"])
        echoes["r1"].stop()  # dead, and health has not noticed yet
        for _ in range(4):
            client = await Client.connect(listen)
            assert await client.greeting() == "r2"
            assert await client.echo("x" * 99) == "x" * 99
            client.close()
        assert "r1" in svc.tcp.ejected

        stats = svc.tcp_stats.app(DB)
        await eventually(lambda: stats.active == 0)
        assert (stats.connections, stats.errors) == (4, 0)
        assert stats.retries >= 1
        assert (stats.bytes_in, stats.bytes_out) == (4 * 100, 4 * (3 + 100))

        def counted() -> bool:
            return sum(w.tcp["d/db"].connections for w in windows if "d/db" in w.tcp) == 4

        await eventually(counted)
        url = f"http://127.0.0.1:{admin}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            text = await resp.text()
        assert 'shoal_lb_tcp_connections_total{app="db",namespace="d"} 4.0' in text
        assert 'shoal_lb_tcp_bytes_total{app="db",direction="in",namespace="d"} 400.0' in text

        # no ready replica: the connection is closed at once, counted as an error
        await bus.publish(HEALTH, health(echoes, []))
        await eventually(lambda: tcp_backends(svc, listen) == [])
        client = await Client.connect(listen)
        async with asyncio.timeout(5):
            assert await client.reader.read() == b""
        client.close()
        await eventually(lambda: stats.errors == 1)
