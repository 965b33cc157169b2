"""The scheduler shell on the in-memory broker: nodes and apps in, assignments out; one
leader among several instances; its own writes are the only ones it keeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from core import codec
from core.bus import Bus
from core.channels import (
    APPS,
    NODE,
    NODE_ASSIGN,
    NODE_CORDON,
    NODE_INFO,
    PRESENCE,
    SCHEDULER_STATUS,
)
from core.commands import NodeCommand, Reply
from core.config import ServiceConfig
from core.identities import AuthFile, Identity, dump_auth
from core.keys import AppKey, ServiceKey
from core.memory import MemoryBroker
from core.state import NodeAssignment
from services.scheduler.service import SchedulerOptions, SchedulerService
from tests.support.memory import connected, serving
from tests.support.waiting import eventually
from tests.unit.scheduler.helpers import app_state, node_info

PREFIX = "t"
WEB = AppKey("default", "web")
FAST = SchedulerOptions(debounce=0.01, tick=0.1)


@asynccontextmanager
async def scheduler(broker: MemoryBroker, instance: str) -> AsyncIterator[SchedulerService]:
    service = SchedulerService(ServiceConfig(broker=broker, prefix=PREFIX, instance=instance), FAST)
    async with serving(service):
        yield service


@asynccontextmanager
async def client(broker: MemoryBroker) -> AsyncIterator[Bus]:
    """A bus that plays the agents and the controller."""
    async with connected(broker, PREFIX) as bus:
        yield bus


def placed(assignments: dict[str, NodeAssignment] | Any, node: str = "n1") -> set[str]:
    assignment = assignments.get(node)
    return {r.id for r in assignment.replicas} if assignment is not None else set()


async def test_a_node_and_an_app_make_an_assignment() -> None:
    broker = MemoryBroker()
    async with client(broker) as bus, scheduler(broker, "s1") as service:
        assignments = await bus.view(NODE_ASSIGN)
        statuses = await bus.view(SCHEDULER_STATUS)
        await bus.publish(NODE_INFO, node_info("n1"))
        await bus.publish(APPS, app_state("web", 3))

        ids = await eventually(lambda: len(placed(assignments)) == 3 and placed(assignments))
        assert all(i.startswith("default.web.") for i in ids)
        status = await eventually(lambda: statuses.get(WEB))
        assert (status.desired, status.placed, status.unplaceable) == (3, 3, 0)
        assert service.is_leader()
        presence = await bus.view(PRESENCE, service="scheduler")
        assert await eventually(
            lambda: (p := presence.get(ServiceKey("scheduler", "s1"))) and p.leader
        )

        await bus.clear(APPS, WEB)  # the app is deleted: its replicas and status go
        await eventually(lambda: not placed(assignments) and WEB not in statuses)


async def test_a_removed_node_leaves_no_assignment_behind() -> None:
    broker = MemoryBroker()
    async with client(broker) as bus, scheduler(broker, "s1"):
        assignments = await bus.view(NODE_ASSIGN)
        await bus.publish(NODE_INFO, node_info("n1"))
        await bus.publish(NODE_INFO, node_info("n2"))
        await bus.publish(APPS, app_state("web", 4))
        await eventually(lambda: len(placed(assignments)) + len(placed(assignments, "n2")) == 4)
        await bus.clear(NODE_INFO, "n2")  # removed (shoal node rm, the provisioner)
        await eventually(lambda: len(placed(assignments)) == 4 and "n2" not in assignments)
        assert NODE_ASSIGN.topic(PREFIX, "n2") not in broker.retained


async def test_an_assignment_written_by_someone_else_is_rewritten() -> None:
    broker = MemoryBroker()
    async with client(broker) as bus, scheduler(broker, "s1"):
        assignments = await bus.view(NODE_ASSIGN)
        await bus.publish(NODE_INFO, node_info("n1"))
        await bus.publish(APPS, app_state("web", 2))
        ids = await eventually(lambda: len(placed(assignments)) == 2 and placed(assignments))
        writes: list[NodeAssignment | None] = []
        await bus.subscribe(NODE_ASSIGN, lambda node, value: writes.append(value), key="n1")
        await bus.sync()
        writes.clear()

        await bus.publish(NODE_ASSIGN, NodeAssignment(node="n1"))
        await eventually(lambda: placed(assignments) == ids)
        await asyncio.sleep(0.2)  # its own write coming back is not taken for another's
        assert [placed({"n1": w}) if w else None for w in writes] == [set(), ids]


async def test_the_leader_answers_node_commands() -> None:
    broker = MemoryBroker()
    async with client(broker) as bus, scheduler(broker, "s1") as service:
        cordons = await bus.view(NODE_CORDON)
        await bus.publish(NODE_INFO, node_info("n1"))
        await eventually(lambda: service.cluster is not None and "n1" in service.cluster.nodes)

        reply = await bus.request(NODE, NodeCommand(node="n1", action="drain"), timeout=5)
        assert reply == Reply(ok=True)
        assert (await eventually(lambda: cordons.get("n1"))).drain
        refused = await bus.request(NODE, NodeCommand(node="nx", action="cordon"), timeout=5)
        assert refused.errors == ["unknown node 'nx' (known: n1)"]


async def test_a_standby_takes_over_when_the_leader_dies_and_moves_nothing() -> None:
    broker = MemoryBroker()
    async with AsyncExitStack() as stack:
        bus = await stack.enter_async_context(client(broker))
        assignments = await bus.view(NODE_ASSIGN)
        await bus.publish(NODE_INFO, node_info("n1"))
        await bus.publish(APPS, app_state("web", 2))
        first = await stack.enter_async_context(scheduler(broker, "s1"))
        ids = await eventually(lambda: len(placed(assignments)) == 2 and placed(assignments))
        second = await stack.enter_async_context(scheduler(broker, "s2"))
        await eventually(lambda: second.leadership.leader == "s1")
        assert first.is_leader()
        assert not second.is_leader()
        assert second.cluster is None

        # an invalid node command gets one answer, the leader's: the standby stays quiet
        answers: list[str] = []
        await bus.watch(
            f"{PREFIX}/reply/+", lambda _t, env: answers.append(env.src) if env else None
        )
        bad = bus.envelope(
            NODE.kind, {"node": "n1", "action": "explode"}, reply_to=f"{PREFIX}/reply/w"
        )
        await bus.publish_raw(NODE.topic(PREFIX), codec.encode(bad))
        await eventually(lambda: answers)
        await bus.sync()
        assert answers == ["scheduler/s1"]

        broker.crash(first.bus.client_id)  # kill -9: the broker publishes its last will
        await eventually(second.is_leader)
        await bus.publish(APPS, app_state("web", 3))
        await eventually(lambda: len(placed(assignments)) == 3)
        assert ids <= placed(assignments)


async def test_with_identities_only_admins_send_node_commands(tmp_path: Path) -> None:
    hashed = "$7$101$AAAAAAAAAAAAAAAA$AAAA"
    auth = AuthFile(
        prefix=PREFIX,
        identities={
            "alice": Identity(role="user", password_hash=hashed, grants={"*": ["*"]}),
            "ops": Identity(role="user", password_hash=hashed, admin=True),
        },
    )
    (tmp_path / "ids.yaml").write_text(dump_auth(auth))
    options = replace(FAST, auth=tmp_path / "ids.yaml")
    broker = MemoryBroker()
    service = SchedulerService(ServiceConfig(broker=broker, prefix=PREFIX, instance="s1"), options)
    async with (
        connected(broker, PREFIX, "a", user="alice") as alice,
        connected(broker, PREFIX, "o", user="ops") as ops,
        serving(service),
    ):
        await alice.publish(NODE_INFO, node_info("n1"))
        await eventually(lambda: service.cluster is not None)
        cordon = NodeCommand(node="n1", action="cordon")
        refused = await alice.request(NODE, cordon, timeout=5)
        assert refused == Reply(
            ok=False,
            errors=["not allowed: user 'alice' may not cordon on the cluster (only admins may)"],
        )
        assert service.cordons == {}
        done = await ops.request(NODE, cordon, timeout=5)
        assert isinstance(done, Reply)
        assert done.ok, done
