"""The health monitor's shell on the in-memory broker: reports in, verdicts out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from core.bus import Bus
from core.channels import APPS, HEALTH, NODE_ASSIGN, NODE_INFO, NODE_REPLICAS
from core.config import ServiceConfig
from core.keys import AppKey
from core.memory import MemoryBroker
from core.spec import AppSpec, Resources
from core.state import (
    AppState,
    AppVersion,
    AssignedReplica,
    NodeAssignment,
    NodeInfo,
    NodeReplicas,
    ReplicaStatus,
)
from services.health.service import HealthService
from tests.support.memory import connected, serving
from tests.support.waiting import eventually

PREFIX = "t"
WEB = AppKey("default", "web")


@asynccontextmanager
async def running(broker: MemoryBroker) -> AsyncIterator[Bus]:
    """The health service, and a bus that plays the controller and the agents."""
    service = HealthService(ServiceConfig(broker=broker, prefix=PREFIX, instance="h1"))
    async with serving(service), connected(broker, PREFIX) as bus:
        yield bus


def web_app() -> AppState:
    spec = AppSpec.model_validate(
        {"name": "web", "image": "x:1", "ports": {"http": 8080}, "route": {"port": "http"}}
    )
    return AppState(
        namespace="default",
        name="web",
        revision=1,
        generation=1,
        spec=spec,
        replicas=1,
        versions=[AppVersion(revision=1, spec=spec, replicas=1)],
    )


def report(node: str, phase: str = "running") -> NodeReplicas:
    replica = ReplicaStatus.model_validate(
        {
            "id": "default.web.00000001",
            "namespace": "default",
            "app": "web",
            "revision": 1,
            "node": node,
            "phase": phase,
            "endpoints": {"http": "10.0.0.1:31000"},
            "started_at": 100.0,
        }
    )
    return NodeReplicas(node=node, replicas=[replica])


async def test_a_reported_replica_without_probes_is_ready_and_deletion_clears() -> None:
    broker = MemoryBroker()
    async with running(broker) as bus:
        health = await bus.view(HEALTH)
        await bus.publish(NODE_INFO, node_info())
        await bus.publish(APPS, web_app())
        await bus.publish(NODE_REPLICAS, report("n1"))

        verdict = await eventually(lambda: (h := health.get(WEB)) and h.replicas and h)
        [replica] = verdict.replicas
        assert (replica.id, replica.node, replica.endpoint) == (
            "default.web.00000001",
            "n1",
            "10.0.0.1:31000",
        )
        assert replica.ready
        assert replica.live
        assert not replica.terminating

        # the agent reports it terminating: out of rotation at once
        await bus.publish(NODE_REPLICAS, report("n1", phase="terminating"))
        await eventually(lambda: (h := health.get(WEB)) and h.replicas[0].terminating)
        assert not health[WEB].replicas[0].ready

        await bus.clear(APPS, WEB)
        await eventually(lambda: WEB not in health)


def node_info(status: str = "ready", address: str = "10.0.0.1", node: str = "n1") -> NodeInfo:
    return NodeInfo.model_validate(
        {"node": node, "address": address, "capacity": Resources(), "status": status}
    )


async def test_a_replica_reported_off_its_nodes_address_never_gets_traffic() -> None:
    """Issue 13 item 7: a forged ``replicas`` pointing at another address was marked
    ready; endpoints must be on the address the node advertises."""
    broker = MemoryBroker()
    async with running(broker) as bus:
        health = await bus.view(HEALTH)
        await bus.publish(APPS, web_app())
        await bus.publish(NODE_REPLICAS, report("n1"))  # n1's address not known yet
        await bus.publish(NODE_INFO, node_info(address="10.0.0.9"))  # not the report's
        await bus.sync()
        forged = report("n2").replicas[0].model_copy(update={"id": "default.web.00000002"})
        await bus.publish(NODE_INFO, node_info(address="10.0.0.2", node="n2"))
        await bus.publish(NODE_REPLICAS, NodeReplicas(node="n2", replicas=[forged]))
        await bus.sync()
        # n1 now advertises the address its report uses: only that replica is a target
        await bus.publish(NODE_INFO, node_info(address="10.0.0.1"))
        verdict = await eventually(lambda: (h := health.get(WEB)) and h.replicas and h)
        assert [r.id for r in verdict.replicas] == ["default.web.00000001"]
        assert [r.id for r in verdict.ready] == ["default.web.00000001"]


async def test_replicas_of_an_offline_node_stay_while_their_endpoint_answers() -> None:
    """Issue 14: the agent's last will alone takes nothing out of rotation."""
    broker = MemoryBroker()
    connects: list[int] = []

    def accept(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        connects.append(1)
        w.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    replica = (
        report("n1").replicas[0].model_copy(update={"endpoints": {"http": f"127.0.0.1:{port}"}})
    )
    async with running(broker) as bus:
        health = await bus.view(HEALTH)
        await bus.publish(NODE_INFO, node_info(address="127.0.0.1"))
        await bus.publish(APPS, web_app())
        await bus.publish(NODE_REPLICAS, NodeReplicas(node="n1", replicas=[replica]))
        await eventually(lambda: (h := health.get(WEB)) and len(h.ready) == 1)

        # the agent dies: its replica (no readiness probe) gets a TCP check, and stays
        flips: list[bool] = []
        await bus.subscribe(HEALTH, lambda _k, h: flips.append(bool(h and h.ready)))
        await bus.publish(NODE_INFO, node_info("offline", address="127.0.0.1"))
        await eventually(lambda: len(connects) >= 3)  # three rounds of the check passed
        assert len(health[WEB].ready) == 1
        assert all(flips)

        # its container goes: refused twice, out of rotation
        server.close()
        await server.wait_closed()
        verdict = await eventually(lambda: (h := health.get(WEB)) and not h.ready and h)
        assert "node offline and endpoint unreachable" in verdict.replicas[0].reason

        # the scheduler replaces it: an offline node's unassigned replica is left out
        await bus.publish(NODE_ASSIGN, NodeAssignment(node="n1", generation=2))
        await eventually(lambda: (h := health.get(WEB)) and h.replicas == [])


async def test_a_replica_its_node_is_no_longer_assigned_leaves_rotation() -> None:
    broker = MemoryBroker()
    async with running(broker) as bus:
        health = await bus.view(HEALTH)
        await bus.publish(NODE_INFO, node_info())
        await bus.publish(APPS, web_app())
        listed = AssignedReplica(
            id="default.web.00000001", namespace="default", app="web", revision=1
        )
        await bus.publish(
            NODE_ASSIGN,
            NodeAssignment(
                node="n1", replicas=[listed], specs={listed.spec_key: web_app().spec}, generation=1
            ),
        )
        await bus.publish(NODE_REPLICAS, report("n1"))
        await eventually(lambda: (h := health.get(WEB)) and len(h.ready) == 1)
        # a partitioned node back with a replica the scheduler replaced meanwhile
        await bus.publish(NODE_ASSIGN, NodeAssignment(node="n1", generation=2))
        verdict = await eventually(
            lambda: (h := health.get(WEB)) and h.replicas[0].terminating and h
        )
        assert not verdict.ready
        assert verdict.replicas[0].reason == "no longer assigned to node n1"


async def test_probes_in_flight_are_bounded_and_every_replica_still_gets_its_verdict() -> None:
    """An apply's first probes do not all start in the same instant: they wait for a slot."""
    inflight, peak = 0, 0

    async def slow_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        try:
            await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(0.02)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        finally:
            inflight -= 1
            writer.close()

    server = await asyncio.start_server(slow_ok, "127.0.0.1", 0)
    endpoint = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    spec = AppSpec.model_validate(
        {
            "name": "web",
            "image": "x:1",
            "ports": {"http": 8080},
            "route": {"port": "http"},
            "health": {"readiness": {"http": "/healthz", "port": "http", "interval": "30s"}},
        }
    )
    app = web_app().model_copy(update={"spec": spec, "replicas": 40})
    app = app.model_copy(update={"versions": [AppVersion(revision=1, spec=spec, replicas=40)]})
    statuses = [
        report("n1")
        .replicas[0]
        .model_copy(update={"id": f"default.web.{i:08x}", "endpoints": {"http": endpoint}})
        for i in range(40)
    ]
    broker = MemoryBroker()
    service = HealthService(ServiceConfig(broker=broker, prefix=PREFIX, instance="h1"))
    service.probe_slots = asyncio.Semaphore(4)
    async with server, serving(service), connected(broker, PREFIX) as bus:
        health = await bus.view(HEALTH)
        await bus.publish(NODE_INFO, node_info(address="127.0.0.1"))
        await bus.publish(APPS, app)
        await bus.publish(NODE_REPLICAS, NodeReplicas(node="n1", replicas=statuses))
        await eventually(lambda: (h := health.get(WEB)) and len(h.ready) == 40, timeout=20)
    assert 1 <= peak <= 4
