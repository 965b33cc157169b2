"""Values larger than the broker's message limit, on a real mosquitto that enforces it.

mosquitto is started with the shipped limit (``message_size_limit 1048576``, as in
configs/mosquitto.conf); over MQTT 3.1.1 it drops a larger message without telling the
publisher. A node assignment of 20,000 replicas (about 1.3 MB) must arrive whole anyway:
the bus sends it in pages (``core.paging``) and every reader assembles it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from core import codec
from core.bus import Bus, connect_bus
from core.channels import APPS, NODE_ASSIGN, NODE_INFO, PRESENCE, SCHEDULER_STATUS
from core.config import BrokerURL
from core.errors import MessageTooLarge
from core.keys import AppKey
from core.spec import AppSpec
from core.state import AppState, AppVersion, AssignedReplica, NodeAssignment, NodeInfo
from core.topics import Topics
from tests.support.procs import Broker, ProcGroup, start_broker

pytestmark = pytest.mark.integration

LIMIT = 1024 * 1024
MI = 1024**2


@pytest.fixture
def limited(procs: ProcGroup) -> Broker:
    return start_broker(procs, "mosquitto", conf_lines=[f"message_size_limit {LIMIT}"])


@asynccontextmanager
async def bus_on(broker: Broker, prefix: str, **kwargs: object) -> AsyncIterator[Bus]:
    bus = connect_bus(
        BrokerURL.parse(broker.url), Topics(prefix), client_id=f"t-{uuid.uuid4().hex[:8]}", **kwargs
    )
    task = asyncio.create_task(bus.run())
    try:
        await bus.wait_connected(10)
        yield bus
    finally:
        bus.close()
        task.cancel()
        await asyncio.wait({task}, timeout=10)


async def until(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.1)


def big_assignment(node: str, per_app: int) -> NodeAssignment:
    specs = {f"default/{a}@1": AppSpec(name=a, image="x:1") for a in ("web", "api")}
    return NodeAssignment(
        node=node,
        generation=1,
        specs=specs,
        replicas=[
            AssignedReplica(
                id=f"default.{a}.{uuid.uuid4().hex[:8]}", namespace="default", app=a, revision=1
            )
            for a in ("web", "api")
            for _ in range(per_app)
        ],
    )


async def test_a_20000_replica_assignment_arrives_whole_through_the_1_mib_limit(
    limited: Broker, prefix: str
) -> None:
    async with bus_on(limited, prefix) as writer, bus_on(limited, prefix) as reader:
        view = await reader.view(NODE_ASSIGN)
        await reader.sync()
        assignment = big_assignment("n1", 10_000)
        size = len(codec.encode(codec.make("assign", assignment)))
        assert size > LIMIT

        # the limit is live: the same bytes as one message are refused by the bus...
        with pytest.raises(MessageTooLarge):
            await writer.publish_raw(NODE_ASSIGN.topic(prefix, "n1"), b"\x80" * (LIMIT + 1))
        # ...and dropped without a word by mosquitto when a client sends them anyway
        async with bus_on(limited, prefix, max_message=16 * MI) as careless:
            big = NodeInfo(node="n9", address="x", labels={"k": "v" * (LIMIT + 10)}, capacity={})
            await careless.publish(NODE_INFO, big)
        infos = await reader.view(NODE_INFO)
        await reader.sync()
        assert "n9" not in infos

        await writer.publish(NODE_ASSIGN, assignment)
        await until(lambda: "n1" in view, 30, "the paged assignment assembled")
        assert view["n1"] == assignment
        assert writer.counters.paged == 1
        assert writer.counters.pages >= 2

        # a reader that starts later assembles it from the retained pages
        async with bus_on(limited, prefix) as late:
            late_view = await late.view(NODE_ASSIGN)
            await until(lambda: "n1" in late_view, 30, "the late reader assembled it")
            assert len(late_view["n1"].replicas) == 20_000


def app(name: str, replicas: int) -> AppState:
    spec = AppSpec(
        name=name, image="x:1", replicas=replicas, resources={"cpu": 0.001, "memory": 6 * MI}
    )
    return AppState(
        namespace="default",
        name=name,
        revision=1,
        generation=1,
        spec=spec,
        replicas=replicas,
        versions=[AppVersion(revision=1, spec=spec, replicas=replicas)],
    )


async def test_the_scheduler_places_two_apps_of_10000_on_one_node_and_it_arrives(
    limited: Broker, prefix: str, procs: ProcGroup
) -> None:
    """The known break of issue 16: placed=10000 reported, the assignment refused."""
    async with bus_on(limited, prefix) as bus:
        info = NodeInfo(
            node="big",
            address="127.0.0.1",
            capacity={"cpu": 64.0, "memory": 1024 * 1024 * MI},
            heartbeat=time.time(),
            heartbeat_interval=30,
        )
        await bus.publish(NODE_INFO, info)
        assigned = await bus.view(NODE_ASSIGN)
        status = await bus.view(SCHEDULER_STATUS)
        presence = await bus.view(PRESENCE)
        procs.service("scheduler", limited.url, "--node-grace", "120", prefix=prefix)
        await until(lambda: any(p.leader for p in presence.values()), 30, "a scheduler leader")
        await bus.publish(APPS, app("web", 10_000))
        await bus.publish(APPS, app("api", 10_000))

        def placed() -> bool:
            a = assigned.get("big")
            return a is not None and len(a.replicas) == 20_000

        await until(placed, 120, "20,000 replicas in the node's assignment")
        for name in ("web", "api"):
            s = status[AppKey("default", name)]
            assert (s.placed, s.unplaceable) == (10_000, 0)


def test_shoal_apply_of_a_command_too_large_says_so(
    limited: Broker, prefix: str, procs: ProcGroup
) -> None:
    """A 2 MiB apply got no reply at all (the broker dropped it): now the CLI says why."""
    docs = [
        f"name: app{i:05d}\nimage: example/app:1\nenv: {{FILLER: {'x' * 220}}}\n"
        for i in range(8_000)
    ]
    spec = procs.workdir / "many.yaml"
    spec.write_text("---\n".join(docs))
    assert spec.stat().st_size > 2 * MI
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "apply", "-f", str(spec)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SHOAL_BROKER": limited.url, "SHOAL_PREFIX": prefix},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the apply command is" in result.stderr
    assert "more than the 1048576 the broker carries" in result.stderr
