"""The provisioner shell on the in-memory broker with a fake provider: unplaceable demand
makes a node, a provider failure is an event and a retry (the service keeps running), a
drained empty node is deleted and its retained records cleared; malformed input is
dropped."""

from __future__ import annotations

import time
from dataclasses import replace

from core.channels import APPS, EVENTS, NODE, NODE_CORDON, NODE_INFO, SCHEDULER_STATUS
from core.codec import Envelope
from core.commands import NodeCommand, Reply
from core.config import ServiceConfig
from core.keys import AppKey
from core.memory import MemoryBroker
from core.state import Event, NodeCordon, SchedulerStatus
from services.provisioner.decide import Limits, Size
from services.provisioner.providers.base import NodeRequest, ProviderError, ProviderNode
from services.provisioner.service import ProvisionerService, ProvisionerSettings
from tests.support.memory import connected, serving
from tests.support.waiting import eventually
from tests.unit.scheduler.helpers import GI, app_state, node_info

PREFIX = "t"
WEB = AppKey("default", "web")
SETTINGS = ProvisionerSettings(
    sizes=(Size("small", 1.0, GI, 0.1),),
    limits=Limits(max_nodes=3, up_cooldown=0.05, down_cooldown=0.0, low_for=0.0),
    interval=0.02,
)


class FakeProvider:
    name = "fake"

    def __init__(self) -> None:
        self.nodes: dict[str, ProviderNode] = {}
        self.fail = 0
        self.created: list[NodeRequest] = []
        self.deleted: list[str] = []
        self.closed = False

    async def create(self, request: NodeRequest) -> ProviderNode:
        if self.fail:
            self.fail -= 1
            raise ProviderError("no capacity in the zone")
        self.created.append(request)
        node = ProviderNode(node=request.node, size=request.size, created=time.time())
        self.nodes[request.node] = node
        return node

    async def delete(self, node: str) -> None:
        self.deleted.append(node)
        self.nodes.pop(node, None)

    async def list(self) -> list[ProviderNode]:
        return list(self.nodes.values())

    async def close(self) -> None:
        self.closed = True


def unplaceable(count: int) -> SchedulerStatus:
    return SchedulerStatus(
        namespace="default",
        name="web",
        desired=3,
        placed=3 - count,
        unplaceable=count,
        message=f"{count} unplaceable: 0/1 nodes fit: 1 insufficient cpu",
    )


async def test_demand_makes_a_node_failures_are_retried_and_empty_nodes_go() -> None:
    broker = MemoryBroker()
    provider = FakeProvider()
    provider.fail = 1
    service = ProvisionerService(
        ServiceConfig(broker=broker, prefix=PREFIX, instance="p1"), SETTINGS, provider
    )
    async with connected(broker, PREFIX) as bus, serving(service):
        events: list[Event] = []
        await bus.subscribe(EVENTS, lambda _k, e: events.append(e) if e else None)
        drained: list[str] = []

        async def on_node(command: NodeCommand, env: Envelope) -> Reply:
            drained.append(f"{command.action} {command.node}")
            if command.action == "drain":
                await bus.publish(NODE_CORDON, NodeCordon(node=command.node, drain=True))
            else:
                await bus.clear(NODE_CORDON, command.node)
            return Reply(ok=True)

        await bus.answer(NODE, on_node)
        await bus.publish(NODE_INFO, node_info("static", cpu=1.0, memory=GI))
        await bus.publish(APPS, app_state("web", 3, cpu=0.5))
        # malformed input first: dropped, the service keeps going
        await bus.publish_raw(f"{PREFIX}/status/scheduler/default/web", b"\x00garbage", retain=True)
        await bus.publish(SCHEDULER_STATUS, unplaceable(1))

        await eventually(lambda: provider.created, message="a node asked for")
        assert provider.created[0].cpu == 1.0
        failed = [e for e in events if e.data.get("action") == "provision_failed"]
        assert failed, events
        assert "no capacity" in failed[0].message
        assert service.history.last_up is not None

        node_id = provider.created[0].node
        await bus.publish(NODE_INFO, node_info(node_id, cpu=1.0, memory=GI))
        await bus.publish(SCHEDULER_STATUS, unplaceable(0))
        # its replica goes away again (the app scaled down): empty -> drained -> removed
        await eventually(lambda: f"drain {node_id}" in drained, message="the empty node drained")
        await eventually(lambda: provider.deleted == [node_id], message="the node deleted")
        await eventually(lambda: f"uncordon {node_id}" in drained, message="its cordon lifted")
        infos = await bus.view(NODE_INFO)
        await bus.sync()
        assert node_id not in infos
        actions = [e.data.get("action") for e in events]
        assert "provision" in actions
        assert "drain" in actions
        assert "remove" in actions
        assert all(e.message for e in events)
    assert provider.closed


async def test_a_standby_does_nothing() -> None:
    broker = MemoryBroker()
    first, second = FakeProvider(), FakeProvider()
    config = ServiceConfig(broker=broker, prefix=PREFIX, instance="p1")
    async with connected(broker, PREFIX) as bus:
        leader = ProvisionerService(config, SETTINGS, first)
        async with serving(leader):
            await eventually(leader.is_leader, message="the first leads")
            standby = ProvisionerService(replace(config, instance="p2"), SETTINGS, second)
            async with serving(standby):
                await bus.publish(NODE_INFO, node_info("static", cpu=1.0, memory=GI))
                await bus.publish(APPS, app_state("web", 3, cpu=0.5))
                await bus.publish(SCHEDULER_STATUS, unplaceable(1))
                await eventually(lambda: first.created, message="the leader acts")
                assert not standby.is_leader()
                assert second.created == []
