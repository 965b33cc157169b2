"""The scheduler as a process on real brokers, with fake nodes published by the test.

No Docker: the test publishes each node's retained ``info`` (and heartbeats) and the
apps' retained desired state itself, and reads the scheduler's ``assign`` topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from core import codec
from core.channels import (
    APPS,
    EVENTS,
    HEALTH,
    NODE,
    NODE_ASSIGN,
    NODE_CORDON,
    NODE_INFO,
    PRESENCE,
    SCHEDULER_STATUS,
)
from core.commands import NodeCommand
from core.errors import CodecError
from core.keys import AppKey, ServiceKey
from core.spec import AppSpec
from core.state import (
    AppHealth,
    AppState,
    AppVersion,
    NodeAssignment,
    NodeInfo,
    ReplicaHealth,
    SchedulerStatus,
)
from core.topics import matches
from tests.support.observer import Observer
from tests.support.procs import Broker, Proc, ProcGroup

pytestmark = pytest.mark.integration

MI = 1024**2
WEB = AppKey("default", "web")


def app(name: str, replicas: int, **placement: object) -> AppState:
    spec = AppSpec(
        name=name,
        image="example/app:1",
        replicas=replicas,
        resources={"cpu": 0.25, "memory": 64 * MI},
        placement=placement,
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


class FakeNodes:
    """Nodes that exist only as retained ``info`` messages with heartbeats."""

    def __init__(self, obs: Observer) -> None:
        self.obs = obs
        self.infos: dict[str, NodeInfo] = {}
        self.beating: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def add(self, node: str, zone: str, cpu: float = 4.0) -> None:
        info = NodeInfo(
            node=node,
            address="127.0.0.1",
            labels={"zone": zone},
            capacity={"cpu": cpu, "memory": 4096 * MI},
            heartbeat=time.time(),
            heartbeat_interval=0.5,
        )
        self.infos[node] = info
        self.beating.add(node)
        await self.publish(info)

    async def publish(self, info: NodeInfo) -> None:
        await self.obs.bus.publish(NODE_INFO, info)

    async def offline(self, node: str) -> None:
        """What the agent's last will says."""
        self.beating.discard(node)
        await self.publish(self.infos[node].model_copy(update={"status": "offline"}))

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            for node in sorted(self.beating):
                await self.publish(self.infos[node].model_copy(update={"heartbeat": time.time()}))

    def __enter__(self) -> FakeNodes:
        self._task = asyncio.create_task(self._beat())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


@contextlib.asynccontextmanager
async def cluster(broker: Broker, prefix: str) -> AsyncIterator[tuple[Observer, FakeNodes]]:
    async with Observer(broker.url, prefix) as obs:
        with FakeNodes(obs) as nodes:
            yield obs, nodes


def start_scheduler(procs: ProcGroup, broker: Broker, prefix: str, name: str = "sched") -> Proc:
    return procs.service(
        "scheduler",
        broker.url,
        "--node-grace",
        "2",
        "--lost-grace",
        "3",
        "--orphan-grace",
        "1",
        "--instance",
        name,
        prefix=prefix,
        name=name,
    )


def assignments(obs: Observer) -> dict[str, NodeAssignment]:
    found: dict[str, NodeAssignment] = {}
    pattern = NODE_ASSIGN.pattern(obs.prefix)
    for env in [e for t, e in obs.cache.items() if matches(pattern, t)]:
        with contextlib.suppress(CodecError):  # the malformed-input test leaves junk
            assignment = env.open(NodeAssignment)
            found[assignment.node] = assignment
    return found


def counts(obs: Observer, name: str = "web") -> dict[str, int]:
    return {n: sum(1 for r in a.replicas if r.app == name) for n, a in assignments(obs).items()}


def replica_ids(obs: Observer, name: str = "web") -> set[str]:
    return {r.id for a in assignments(obs).values() for r in a.replicas if r.app == name}


async def publish_app(obs: Observer, state: AppState) -> None:
    await obs.bus.publish(APPS, state)


def leader(obs: Observer) -> str | None:
    for p in obs.values(PRESENCE, service="scheduler").values():
        if p.status == "online" and p.leader:
            return p.instance
    return None


async def test_places_spread_across_zones_one_message_per_node(
    broker: Broker, prefix: str, procs: ProcGroup
) -> None:
    async with cluster(broker, prefix) as (obs, nodes):
        for node, zone in (("n1", "a"), ("n2", "b"), ("n3", "c")):
            await nodes.add(node, zone)
        start_scheduler(procs, broker, prefix)
        await obs.wait_for(lambda: leader(obs), 15, "a leader")
        mark = len(obs.seen)
        await publish_app(obs, app("web", 48, spread_by="zone"))
        await obs.wait_for(lambda: sum(counts(obs).values()) == 48, 10, "48 replicas assigned")
        assert counts(obs) == {"n1": 16, "n2": 16, "n3": 16}
        await asyncio.sleep(0.5)
        # one message per node for the whole apply, never one per replica
        writes = Counter(t for _, t, _ in obs.seen[mark:] if t.endswith("/assign"))
        assert set(writes.values()) == {1}
        ids = replica_ids(obs)
        assert all(i.startswith("default.web.") and len(i) == len("default.web.") + 8 for i in ids)

        status = await obs.wait_for(lambda: obs.value(SCHEDULER_STATUS, WEB), 5, "status")
        assert (status.desired, status.placed, status.unplaceable) == (48, 48, 0)

        await obs.bus.clear(APPS, WEB)  # the app is deleted
        await obs.wait_for(lambda: sum(counts(obs).values()) == 0, 10, "replicas removed")
        await obs.wait_for(lambda: obs.value(SCHEDULER_STATUS, WEB) is None, 5, "status gone")


async def test_restarted_scheduler_moves_nothing(
    mosquitto: Broker, prefix: str, procs: ProcGroup
) -> None:
    async with cluster(mosquitto, prefix) as (obs, nodes):
        for node, zone in (("n1", "a"), ("n2", "b")):
            await nodes.add(node, zone)
        first = start_scheduler(procs, mosquitto, prefix, "s1")
        await publish_app(obs, app("web", 6))
        await obs.wait_for(lambda: sum(counts(obs).values()) == 6, 15, "6 replicas assigned")
        before = {n: {r.id for r in a.replicas} for n, a in assignments(obs).items()}
        first.stop()
        start_scheduler(procs, mosquitto, prefix, "s2")
        await obs.wait_for(lambda: leader(obs) == "s2", 15, "s2 leads")
        await publish_app(obs, app("api", 2))  # activity after the restart
        await obs.wait_for(lambda: sum(counts(obs, "api").values()) == 2, 10, "api placed")
        await asyncio.sleep(1.5)  # past the orphan grace
        after = {
            n: {r.id for r in a.replicas if r.app == "web"} for n, a in assignments(obs).items()
        }
        assert after == before


async def test_lost_node_replicas_move_and_it_comes_back_empty(
    mosquitto: Broker, prefix: str, procs: ProcGroup
) -> None:
    async with cluster(mosquitto, prefix) as (obs, nodes):
        for node, zone in (("n1", "a"), ("n2", "b"), ("n3", "c")):
            await nodes.add(node, zone)
        start_scheduler(procs, mosquitto, prefix)
        await publish_app(obs, app("web", 6, spread_by="zone"))
        await obs.wait_for(lambda: counts(obs) == {"n1": 2, "n2": 2, "n3": 2}, 15, "spread")

        # n3 stops heartbeating (no last will): unreachable after the 2 s grace, lost (its
        # replicas replaced, though no probe failed) after the 3 s lost grace
        nodes.beating.discard("n3")
        await obs.wait_for(lambda: counts(obs).get("n3") == 0, 10, "n3 emptied")
        await obs.wait_for(lambda: sum(counts(obs).values()) == 6, 5, "6 replicas again")
        events = [e for _, t, e in obs.seen if t == obs.topic(EVENTS, "node_lost")]
        assert events

        # n2's agent dies (its last will says offline) and health finds its replicas
        # unready: the scheduler replaces them at once (issue 14: the last will alone
        # moves nothing while they pass their probes; that is the unit tests' job)
        on_n2 = {r.id for r in assignments(obs)["n2"].replicas}
        verdicts = [
            ReplicaHealth(id=rid, revision=1, node="n2", endpoint="x:1", ready=False)
            for rid in sorted(on_n2)
        ] + [
            ReplicaHealth(id=r.id, revision=1, node="n1", endpoint="x:1", ready=True)
            for r in assignments(obs)["n1"].replicas
        ]
        await nodes.offline("n2")
        started = time.monotonic()
        await obs.bus.publish(HEALTH, AppHealth(namespace="default", name="web", replicas=verdicts))
        await obs.wait_for(lambda: counts(obs) == {"n1": 6, "n2": 0, "n3": 0}, 5, "all on n1")
        assert time.monotonic() - started < 1.5

        # n3 comes back: its assignment stays empty (its stale replicas stop), no doubling
        nodes.beating.add("n3")
        await asyncio.sleep(1.5)
        assert counts(obs) == {"n1": 6, "n2": 0, "n3": 0}
        assert len(replica_ids(obs)) == 6


async def test_unplaceable_reasons_then_placed_when_capacity_appears(
    mosquitto: Broker, prefix: str, procs: ProcGroup
) -> None:
    async with cluster(mosquitto, prefix) as (obs, nodes):
        for node, zone in (("n1", "a"), ("n2", "b"), ("n3", "b")):
            await nodes.add(node, zone)
        start_scheduler(procs, mosquitto, prefix)
        await publish_app(obs, app("web", 2, constraints={"zone": ["z"]}))

        def unplaceable() -> SchedulerStatus | None:
            status = obs.value(SCHEDULER_STATUS, WEB)
            return status if status is not None and status.unplaceable else None

        status = await obs.wait_for(unplaceable, 10, "unplaceable status")
        assert status.message == "2 unplaceable: 0/3 nodes fit: 3 constraint zone"
        assert status.reasons == {"constraint zone": 3}
        await obs.wait_for(
            lambda: any(t == obs.topic(EVENTS, "unplaceable") for _, t, _ in obs.seen), 5, "event"
        )
        await nodes.add("n4", "z")
        await obs.wait_for(lambda: counts(obs).get("n4") == 2, 10, "placed on the new node")
        await obs.wait_for(
            lambda: (s := obs.value(SCHEDULER_STATUS, WEB)) is not None and s.unplaceable == 0,
            5,
            "status clear",
        )


async def test_drain_replaces_before_it_removes(
    mosquitto: Broker, prefix: str, procs: ProcGroup
) -> None:
    async with cluster(mosquitto, prefix) as (obs, nodes):
        for node, zone in (("n1", "a"), ("n2", "b")):
            await nodes.add(node, zone)
        start_scheduler(procs, mosquitto, prefix)
        await publish_app(obs, app("web", 4))
        await obs.wait_for(lambda: counts(obs) == {"n1": 2, "n2": 2}, 15, "placed")

        async def report_ready(ready: set[str]) -> None:
            health = AppHealth(
                namespace="default",
                name="web",
                replicas=[
                    ReplicaHealth(id=i, revision=1, node="x", endpoint="e:1", ready=i in ready)
                    for i in sorted(replica_ids(obs))
                ],
            )
            await obs.bus.publish(HEALTH, health)

        await report_ready(replica_ids(obs))
        old = {r.id for r in assignments(obs)["n1"].replicas}

        drained = await obs.bus.request(NODE, NodeCommand(node="n1", action="drain"), timeout=5)
        assert drained.ok
        # surge: replacements on n2, while the old replicas stay until they are ready
        await obs.wait_for(lambda: counts(obs).get("n2") == 4, 10, "replacements placed")
        await asyncio.sleep(0.5)
        assert {r.id for r in assignments(obs)["n1"].replicas} == old
        await report_ready(replica_ids(obs))
        await obs.wait_for(lambda: counts(obs).get("n1") == 0, 10, "n1 drained")
        assert counts(obs) == {"n1": 0, "n2": 4}

        # unknown node: a clear error from the scheduler
        reply = await obs.bus.request(NODE, NodeCommand(node="nx", action="cordon"), timeout=5)
        assert not reply.ok
        assert "unknown node 'nx'" in reply.errors[0]


async def test_cli_cordon_and_uncordon(mosquitto: Broker, prefix: str, procs: ProcGroup) -> None:
    async with cluster(mosquitto, prefix) as (obs, nodes):
        await nodes.add("n1", "a")
        await nodes.add("n2", "b")
        start_scheduler(procs, mosquitto, prefix)
        await obs.wait_for(lambda: leader(obs), 15, "a leader")
        cli = [sys.executable, "-m", "services.cli", "node"]
        opts = ["--broker", mosquitto.url, "--prefix", prefix]
        proc = await asyncio.create_subprocess_exec(
            *cli, "cordon", "n1", *opts, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        assert b"node n1 cordoned" in out
        await obs.wait_for(lambda: obs.value(NODE_CORDON, "n1"), 5, "cordon")
        await publish_app(obs, app("web", 3))
        await obs.wait_for(lambda: counts(obs).get("n2") == 3, 10, "placed on n2 only")
        assert counts(obs).get("n1", 0) == 0
        proc = await asyncio.create_subprocess_exec(
            *cli, "list", "-o", "json", *opts, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        rows = {row["node"]: row for row in json.loads(out)}
        assert (rows["n1"]["schedule"], rows["n1"]["replicas"]) == ("cordoned", 0)
        assert (rows["n2"]["schedule"], rows["n2"]["replicas"]) == ("", 3)
        assert rows["n2"]["allocated"]["cpu"] == 0.75  # requested CPU placed on n2
        proc = await asyncio.create_subprocess_exec(*cli, "uncordon", "n1", *opts)
        assert await proc.wait() == 0
        await obs.wait_for(lambda: obs.value(NODE_CORDON, "n1") is None, 5, "uncordoned")
        proc = await asyncio.create_subprocess_exec(
            *cli, "drain", "nx", *opts, stderr=asyncio.subprocess.PIPE
        )
        _, err = await proc.communicate()
        assert proc.returncode == 1
        assert b"unknown node 'nx'" in err


async def test_leader_failover_after_kill_9(broker: Broker, prefix: str, procs: ProcGroup) -> None:
    async with cluster(broker, prefix) as (obs, nodes):
        for node, zone in (("n1", "a"), ("n2", "b")):
            await nodes.add(node, zone)
        first = start_scheduler(procs, broker, prefix, "s1")
        await obs.wait_for(lambda: leader(obs) == "s1", 15, "s1 leads")
        start_scheduler(procs, broker, prefix, "s2")
        await obs.wait_for(
            lambda: (
                (p := obs.value(PRESENCE, ServiceKey("scheduler", "s2"))) is not None
                and p.status == "online"
            ),
            15,
            "s2 online",
        )
        await publish_app(obs, app("web", 4))
        await obs.wait_for(lambda: sum(counts(obs).values()) == 4, 10, "placed")
        await asyncio.sleep(0.5)
        assert leader(obs) == "s1"  # the newer instance does not preempt
        writers = {e.src for _, t, e in obs.seen if t.endswith("/assign") and e is not None}
        assert writers == {"scheduler/s1"}
        before = replica_ids(obs)

        first.kill()
        started = time.monotonic()
        await obs.wait_for(lambda: leader(obs) == "s2", 10, "s2 takes over")
        await publish_app(obs, app("web", 6))
        await obs.wait_for(lambda: sum(counts(obs).values()) == 6, 10, "scaled by s2")
        assert time.monotonic() - started < 5
        assert before <= replica_ids(obs)  # the takeover moved nothing


async def test_malformed_messages_leave_the_scheduler_running(
    broker: Broker, prefix: str, procs: ProcGroup
) -> None:
    async with cluster(broker, prefix) as (obs, nodes):
        await nodes.add("n1", "a")
        sched = start_scheduler(procs, broker, prefix)
        await obs.wait_for(lambda: leader(obs), 15, "a leader")
        bad = AppKey("default", "bad")
        junk_topics = [
            obs.topic(APPS, bad),
            obs.topic(NODE_INFO, "n9"),
            obs.topic(NODE_ASSIGN, "n9"),
            obs.topic(NODE_CORDON, "n9"),
            obs.topic(HEALTH, bad),
            obs.topic(PRESENCE, ServiceKey("scheduler", "ghost")),
            NODE.topic(obs.prefix),
        ]
        for topic in junk_topics:
            await obs.bus.publish_raw(topic, b"\xc1garbage", retain=False)
            await obs.bus.publish_raw(topic, b'{"kind": "app", "body": {"x": 1}}', retain=False)
            wrong = codec.encode(obs.bus.envelope("app", {"namespace": "default"}))
            await obs.bus.publish_raw(topic, wrong, retain=False)
        other = {"node": "other", "address": "x", "capacity": {}}
        await obs.bus.publish_raw(
            obs.topic(NODE_INFO, "n1"), codec.encode(obs.bus.envelope("node", other))
        )
        await publish_app(obs, app("web", 2))
        await obs.wait_for(lambda: counts(obs).get("n1") == 2, 10, "still placing")
        assert sched.alive()


async def test_broker_restart_loses_nothing(
    mosquitto: Broker, prefix: str, procs: ProcGroup
) -> None:
    """mosquitto without persistence forgets every retained message: the scheduler writes
    its assignments again, and the silence during the outage costs no node."""
    async with cluster(mosquitto, prefix) as (obs, nodes):
        for node, zone in (("n1", "a"), ("n2", "b")):
            await nodes.add(node, zone)
        start_scheduler(procs, mosquitto, prefix)
        await publish_app(obs, app("web", 4))
        await obs.wait_for(lambda: counts(obs) == {"n1": 2, "n2": 2}, 15, "placed")
        before = replica_ids(obs)
        mosquitto.proc.stop()
        await asyncio.sleep(3)  # longer than the 2 s node grace
        await asyncio.to_thread(mosquitto.restart)
        await obs.bus.wait_connected(15)
        obs.cache.clear()
        await obs.wait_for(lambda: replica_ids(obs) == before, 15, "assignments rewritten")
        await asyncio.sleep(2.5)
        assert counts(obs) == {"n1": 2, "n2": 2}
        assert replica_ids(obs) == before
