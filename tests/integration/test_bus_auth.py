"""Issue 13 item 1 on real mosquitto: authentication on, the generated password file and
ACL, the controller as a real process authorising per namespace and verb."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest

from core import codec
from core.bus import Bus, MqttBus
from core.channels import APPLY, APPS, NODE_ASSIGN, NODE_CORDON, NODE_INFO, NODE_REPLICAS
from core.commands import ApplyCommand, Reply
from core.config import BrokerURL
from core.errors import BusError
from core.keys import AppKey
from core.state import NodeAssignment, NodeCordon, NodeReplicas
from core.topics import Topics
from tests.support.auth import Identities, make_identities, start_auth_mosquitto
from tests.support.procs import Broker, ProcGroup

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("mosquitto") is None, reason="mosquitto missing"),
]


@pytest.fixture
def identities(tmp_path: Path) -> Identities:
    return make_identities(
        tmp_path / "auth",
        f"auth{uuid.uuid4().hex[:8]}",
        nodes=("n1", "n2"),
        users={"alice": {"test": ["*"]}},
    )


@pytest.fixture
def broker(procs: ProcGroup, identities: Identities) -> Broker:
    return start_auth_mosquitto(procs, identities)


@asynccontextmanager
async def client(broker: Broker, identities: Identities, user: str) -> AsyncIterator[Bus]:
    url = BrokerURL.parse(identities.url(broker, user))
    bus = MqttBus(url, Topics(identities.prefix), client_id=f"{user}-{uuid.uuid4().hex[:6]}")
    task = asyncio.create_task(bus.run())
    try:
        await bus.wait_connected(10)
        yield bus
    finally:
        bus.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_anonymous_client_and_a_wrong_password_are_refused(broker: Broker) -> None:
    with pytest.raises(aiomqtt.MqttError, match=r"[Nn]ot authori"):
        async with aiomqtt.Client(broker.host, broker.port, timeout=10):
            pass
    with pytest.raises(aiomqtt.MqttError, match=r"[Nn]ot authori|[Bb]ad user"):
        async with aiomqtt.Client(
            broker.host, broker.port, username="alice", password="guess", timeout=10
        ):
            pass


async def test_an_agent_can_neither_read_nor_write_another_nodes_topics(
    broker: Broker, identities: Identities
) -> None:
    p = identities.prefix
    async with (
        client(broker, identities, "scheduler") as scheduler,
        client(broker, identities, "agent-n1") as n1,
        client(broker, identities, "ops") as ops,
    ):
        for node in ("n1", "n2"):
            await scheduler.publish(NODE_ASSIGN, NodeAssignment(node=node, generation=1))
        seen: list[str] = []
        await n1.watch(NODE_ASSIGN.pattern(p), lambda t, e: seen.append(t))
        await n1.watch(f"{p}/#", lambda t, e: seen.append(t))
        await n1.sync()
        assert sorted(set(seen)) == [NODE_ASSIGN.topic(p, "n1")]

        # its own node: fine; another's: refused, and nothing is retained there
        await n1.publish(NODE_REPLICAS, NodeReplicas(node="n1"))
        with pytest.raises(BusError, match="Not authorized"):
            await n1.publish(NODE_REPLICAS, NodeReplicas(node="n2"))
        with pytest.raises(BusError, match="Not authorized"):
            await n1.publish_raw(NODE_INFO.topic(p, "n2"), b"forged", retain=True)
        with pytest.raises(BusError, match="Not authorized"):
            await n1.publish_raw(NODE_ASSIGN.topic(p, "n2"), b"forged", retain=True)
        replicas = await ops.view(NODE_REPLICAS)
        infos = await ops.view(NODE_INFO)
        await ops.sync()
        assert set(replicas) == {"n1"}
        assert dict(infos) == {}


async def test_who_writes_what(broker: Broker, identities: Identities) -> None:
    p = identities.prefix
    async with (
        client(broker, identities, "scheduler") as scheduler,
        client(broker, identities, "alice") as alice,
        client(broker, identities, "health") as health,
    ):
        # the scheduler's retained cordon (denied by the old hand-written ACL)
        await scheduler.publish(NODE_CORDON, NodeCordon(node="n1", reason="test"))
        await scheduler.clear(NODE_CORDON, "n1")
        # a user asks for logs, and writes no state, nobody else's commands or replies
        await alice.publish_raw(f"{p}/logs/request", b"")
        for topic in (
            APPS.topic(p, AppKey("test", "web")),
            f"{p}/cmd/apply/ops",
            f"{p}/cmd/apply",
            f"{p}/reply/ops/cli-1",
            f"{p}/events/scale",
        ):
            with pytest.raises(BusError, match="Not authorized"):
                await alice.publish_raw(topic, b"x")
        # only the controller writes apps/
        with pytest.raises(BusError, match="Not authorized"):
            await health.publish_raw(APPS.topic(p, AppKey("test", "web")), b"x")


async def test_a_user_granted_test_cannot_apply_in_prod(
    procs: ProcGroup, broker: Broker, identities: Identities, tmp_path: Path
) -> None:
    procs.service(
        "controller",
        broker.url,
        "--data-dir",
        str(tmp_path / "data"),
        "--auth",
        str(identities.file),
        "--broker-credentials",
        str(identities.credentials["controller"]),
        prefix=identities.prefix,
    )
    web = {"name": "web", "image": "shoal-test/echo:v1"}
    async with client(broker, identities, "alice") as alice:
        reply = await _until_answered(alice, ApplyCommand(apps=[{**web, "namespace": "prod"}]))
        assert reply == Reply(
            ok=False, errors=["not allowed: user 'alice' may not apply in namespace 'prod'"]
        )
        # one app outside the grant refuses the whole apply: nothing changes
        both = [{**web, "namespace": "test"}, {**web, "namespace": "prod"}]
        reply = await alice.request(APPLY, ApplyCommand(apps=both))
        assert not reply.ok
        apps = await alice.view(APPS)
        await alice.sync()
        assert dict(apps) == {}
        reply = await alice.request(APPLY, ApplyCommand(apps=[{**web, "namespace": "test"}]))
        assert reply.ok, reply
        assert [r.namespace for r in reply.results] == ["test"]
        # a JSON request on the bare topic (no identity) cannot even be sent
        bare = codec.encode_json(
            alice.envelope(APPLY.kind, {"apps": [web]}, reply_to=alice.reply_topic)
        )
        with pytest.raises(BusError, match="Not authorized"):
            await alice.publish_raw(APPLY.topic(identities.prefix), bare)


async def _until_answered(bus: Bus, body: ApplyCommand, timeout: float = 30) -> Reply:
    """The first answer of a controller that is still starting (requests before it
    subscribed are lost, as on any MQTT bus)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            answer = await bus.request(APPLY, body, timeout=2)
        except BusError:
            if loop.time() > deadline:
                raise
            continue
        assert isinstance(answer, Reply)
        return answer
