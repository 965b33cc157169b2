"""The agent shell on an in-memory engine and an in-memory broker (``MemoryBroker``):
parallel creates, one pull per image, adoption without restarts, failures recorded with
their reasons, liveness verdicts and exec probes. The first tests drive the rooms step by
step (the bus constructed, not connected: events and reports only queue up); the last
ones run the whole service on the broker and talk to it as other services would."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from core import codec
from core.bus import Bus
from core.channels import (
    EVENTS,
    HEALTH,
    LOGS_REQUEST,
    LOGS_STREAM,
    NODE_ASSIGN,
    NODE_INFO,
    NODE_METRICS,
    NODE_REPLICAS,
    PRESENCE,
)
from core.config import ServiceConfig
from core.keys import AppKey, ServiceKey
from core.memory import MemoryBroker
from core.spec import AppSpec
from core.state import (
    AppHealth,
    AssignedReplica,
    Event,
    LogChunk,
    LogsRequest,
    NodeAssignment,
    NodeInfo,
    ReplicaHealth,
)
from core.topics import Topics
from services.agent.engine import EngineError
from services.agent.node import AgentOptions
from services.agent.service import AgentService
from tests.support.waiting import eventually

PREFIX = "unit"
SPEC = AppSpec(name="web", image="reg.example:5000/web:1", ports={"http": 8080})
T0 = "2026-01-01T00:00:00Z"


class FakeEngine:
    """Just enough of ``engine.Engine`` to drive the agent; counts what it is asked."""

    def __init__(self, *, has_image: bool = True, pull_error: str | None = None) -> None:
        self.boxes: dict[str, dict[str, Any]] = {}
        self.names: set[str] = set()
        self.has_image = has_image
        self.pull_error = pull_error
        self.pulls: list[tuple[str, Any]] = []
        self.calls: list[str] = []
        self.inflight = 0
        self.max_inflight = 0
        self._ids = itertools.count(1)
        self.restarts = 0
        self.restart_error = 0
        self.execs: list[str] = []
        self.exec_exit: dict[str, int] = {}
        self.docker_events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.log_lines: dict[str, list[str]] = {}

    async def _slow(self) -> None:
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        await asyncio.sleep(0.01)
        self.inflight -= 1

    def add(self, labels: dict[str, str], status: str = "running") -> str:
        cid = f"c{next(self._ids)}"
        self.boxes[cid] = {
            "Id": cid,
            "Config": {"Labels": labels},
            "State": {"Status": status, "ExitCode": 0, "StartedAt": T0, "FinishedAt": T0},
            "NetworkSettings": {"Ports": {"8080/tcp": [{"HostPort": "40000"}]}},
        }
        return cid

    async def info(self) -> dict[str, Any]:
        return {"NCPU": 4, "MemTotal": 8 * 2**30, "ServerVersion": "fake"}

    async def list_ids(self, filters: list[str]) -> list[str]:
        wanted = dict(f.split("=", 1) for f in filters)
        return [
            cid
            for cid, box in self.boxes.items()
            if all(box["Config"]["Labels"].get(k) == v for k, v in wanted.items())
        ]

    async def inspect(self, cid: str) -> dict[str, Any] | None:
        return self.boxes.get(cid)

    async def create(self, config: dict[str, Any], name: str) -> str:
        self.calls.append("create")
        await self._slow()
        if not self.has_image:
            raise EngineError(404, f"No such image: {config['Image']}")
        if name in self.names:
            raise EngineError(409, f"Conflict. The container name {name!r} is already in use")
        self.names.add(name)
        return self.add(config["Labels"], status="created")

    async def start(self, cid: str) -> None:
        self.calls.append("start")
        await self._slow()
        self.boxes[cid]["State"]["Status"] = "running"

    async def stop(self, cid: str, grace: float) -> None:
        self.calls.append("stop")
        self.boxes[cid]["State"]["Status"] = "exited"

    async def restart(self, cid: str, grace: float) -> None:
        self.calls.append("restart")
        if self.restart_error:
            self.restart_error -= 1
            raise EngineError(500, "cannot restart")
        self.restarts += 1
        self.boxes[cid]["State"].update(
            Status="running", StartedAt=f"2026-01-01T00:01:{self.restarts:02d}Z"
        )

    async def exec_run(
        self, cid: str, command: list[str], timeout: float
    ) -> tuple[int | None, str]:
        self.calls.append("exec")
        self.execs.append(cid)
        await asyncio.sleep(0)
        return self.exec_exit.get(cid, 0), "output"

    async def exec_running(self, exec_id: str) -> bool:
        return False

    async def remove(self, cid: str) -> None:
        self.calls.append("remove")
        self.boxes.pop(cid, None)

    async def pull(self, reference: str, auth: Any) -> AsyncIterator[dict[str, Any]]:
        self.pulls.append((reference, auth))
        await asyncio.sleep(0.05)
        if self.pull_error:
            raise EngineError(500, self.pull_error)
        self.has_image = True
        yield {"id": "layer1", "status": "Pull complete"}

    async def events(self, filters: list[str], since: float) -> AsyncIterator[dict[str, Any]]:
        while True:
            yield await self.docker_events.get()

    def die(self, cid: str, exit_code: int = 137) -> None:
        """The container dies behind the agent's back (``docker kill``)."""
        self.boxes[cid]["State"].update(
            Status="exited", ExitCode=exit_code, FinishedAt="2026-01-01T00:00:05Z"
        )
        self.docker_events.put_nowait({"Action": "die", "id": cid})

    async def stats(self, cid: str) -> dict[str, Any] | None:
        return {
            "read": "2026-01-01T00:00:10Z",
            "cpu_stats": {"cpu_usage": {"total_usage": 10**9}},
            "memory_stats": {"usage": 2**20, "limit": 2**26},
        }

    async def logs(self, cid: str, *, follow: bool, tail: int | None) -> AsyncIterator[str]:
        lines = self.log_lines.get(cid, [])
        for line in lines if tail is None else lines[len(lines) - tail :]:
            yield line

    async def reset(self) -> None:
        pass

    async def close(self) -> None:
        pass


def make_agent(
    engine: FakeEngine, broker: MemoryBroker | None = None, **options: Any
) -> AgentService:
    config = ServiceConfig(broker=broker or MemoryBroker(), prefix=PREFIX, instance="t1")
    return AgentService(
        config,
        AgentOptions(node_id="n1", address="127.0.0.9", **options),
        engine=engine,  # type: ignore[arg-type]
    )


async def ready(agent: AgentService) -> None:
    """What the engine loop and the bus sync do before the first reconcile."""
    agent.watch.apply_info(await agent.engine.info())
    await agent.watch.resync()
    agent.node.listed = True
    agent.node.engine_ready = True
    agent.node.synced = True


async def settle(agent: AgentService, rounds: int = 5) -> None:
    """Reconcile and wait for the actions it starts, until nothing is left to do."""
    for _ in range(rounds):
        await agent.reconcile.once()
        if not agent.actions.running:
            return
        await asyncio.gather(*agent.actions.tasks())


def replicas(n: int) -> list[AssignedReplica]:
    return [
        AssignedReplica(id=f"default.web.{i:08x}", namespace="default", app="web", revision=1)
        for i in range(n)
    ]


def assign(agent: AgentService, reps: list[AssignedReplica]) -> None:
    agent.node.assignment = NodeAssignment(node="n1", replicas=reps, specs={"default/web@1": SPEC})


def labels_for(rid: str, node: str = "n1", prefix: str = PREFIX) -> dict[str, str]:
    return {
        "shoal.managed": "true",
        "shoal.prefix": prefix,
        "shoal.node": node,
        "shoal.replica": rid,
        "shoal.ns": "default",
        "shoal.app": "web",
        "shoal.revision": "1",
        "shoal.ports": "http=8080",
        "shoal.drain": "0",
        "shoal.grace": "1",
    }


async def test_fifty_replicas_are_created_in_parallel() -> None:
    engine = FakeEngine()
    agent = make_agent(engine)
    await ready(agent)
    assign(agent, replicas(50))
    await settle(agent)
    assert engine.calls.count("create") == 50
    assert engine.calls.count("start") == 50
    assert engine.max_inflight >= 25  # not one after the other
    running = [c for c in agent.node.containers.values() if c.running]
    assert len(running) == 50
    assert all(c.endpoints("127.0.0.9") == {"http": "127.0.0.9:40000"} for c in running)
    assert agent.node.capacity.cpu == 4


async def test_one_pull_per_image_with_the_registry_credentials() -> None:
    from services.agent.registry import Credential

    engine = FakeEngine(has_image=False)
    agent = make_agent(engine, registry_auth={"reg.example:5000": Credential("u", "p")})
    await ready(agent)
    assign(agent, replicas(10))
    await settle(agent)
    assert engine.pulls == [
        (
            "reg.example:5000/web:1",
            {"username": "u", "password": "p", "serveraddress": "reg.example:5000"},
        )
    ]
    assert sum(c.running for c in agent.node.containers.values()) == 10


async def test_pull_failure_is_recorded_with_the_reason_and_retried_later() -> None:
    engine = FakeEngine(has_image=False, pull_error="unauthorized: authentication required")
    agent = make_agent(engine)
    await ready(agent)
    reps = replicas(3)
    assign(agent, reps)
    await settle(agent, rounds=1)
    assert len(engine.pulls) == 1
    for r in reps:
        record = agent.node.records[r.id]
        assert record.hint == "image_pull_failed"
        assert "unauthorized: authentication required" in record.hint_reason
        assert record.retry_at is not None
    wake = await agent.reconcile.once()
    assert wake is not None
    assert 0 < wake <= 1.0  # back-off, not a hot loop
    assert len(engine.pulls) == 1


async def test_adoption_keeps_running_replicas_and_removes_orphans_and_foreign_is_untouched() -> (
    None
):
    engine = FakeEngine()
    reps = replicas(3)
    kept = [engine.add(labels_for(r.id)) for r in reps[:2]]
    orphan = engine.add(labels_for("default.web.deadbeef"))
    other_node = engine.add(labels_for("default.web.00000009", node="n2"))
    other_prefix = engine.add(labels_for("default.web.0000000a", prefix="elsewhere"))
    agent = make_agent(engine)
    await ready(agent)

    await settle(agent)  # the assignment is not known yet: nothing may be removed
    assert engine.calls == []

    assign(agent, reps)
    await settle(agent)
    assert engine.calls.count("create") == 1  # only the missing replica
    assert engine.calls.count("start") == 1  # the new one; the adopted ones are not restarted
    assert orphan not in engine.boxes
    for cid in (*kept, other_node, other_prefix):
        assert cid in engine.boxes


async def test_name_conflict_resyncs_instead_of_duplicating() -> None:
    engine = FakeEngine()
    agent = make_agent(engine)
    await ready(agent)
    (rep,) = replicas(1)
    engine.names.add(f"shoal.n1.{rep.id}")  # created by a previous agent, not listed yet
    cid = engine.add(labels_for(rep.id), status="created")
    assign(agent, [rep])
    agent.node.containers.clear()
    await settle(agent)
    assert engine.calls.count("create") == 1
    assert engine.boxes[cid]["State"]["Status"] == "running"
    assert len(engine.boxes) == 1


@pytest.mark.parametrize("status", ["exited", "dead"])
async def test_exited_replica_is_restarted_and_counted(status: str) -> None:
    engine = FakeEngine()
    (rep,) = replicas(1)
    cid = engine.add(labels_for(rep.id), status=status)
    engine.boxes[cid]["State"].update(ExitCode=3, FinishedAt="2026-01-01T00:00:01Z")
    agent = make_agent(engine)
    await ready(agent)
    assign(agent, [rep])
    wake = await agent.reconcile.once()
    assert wake is not None  # first restart after the initial back-off
    record = agent.node.records[rep.id]
    assert (record.exit_code, record.reason, record.attempts) == (3, "Error", 1)
    record.restart_at = 0.0  # time passes
    await settle(agent)
    assert engine.boxes[cid]["State"]["Status"] == "running"
    assert agent.node.records[rep.id].restarts == 1


# -- probes: the shell's wiring (decisions are tested in test_probes.py) ---------------


WEB = AppKey("default", "web")


def not_live(rep: AssignedReplica, started_at: float | None, *, node: str = "n1") -> AppHealth:
    """What the health monitor publishes when ``rep`` fails its liveness probe."""
    return AppHealth(
        namespace="default",
        name="web",
        replicas=[
            ReplicaHealth(
                id=rep.id,
                revision=1,
                node=node,
                endpoint="127.0.0.9:40000",
                ready=False,
                live=False,
                started_at=started_at,
                reason="liveness: HTTP 500",
            )
        ],
    )


@contextlib.asynccontextmanager
async def wired(agent: AgentService) -> AsyncIterator[Bus]:
    """The agent's subscriptions live on its MemoryBroker (its loops not running), and
    a client's bus to publish with, as another service would."""
    broker = agent.config.broker
    assert isinstance(broker, MemoryBroker)
    client = broker.bus(Topics(PREFIX), client_id="test-client")
    tasks = [asyncio.create_task(agent.bus.run()), asyncio.create_task(client.run())]
    await agent.setup()
    await agent.bus.wait_connected(5)
    await client.wait_connected(5)
    try:
        yield client
    finally:
        agent.bus.close()
        client.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def publish_health(
    agent: AgentService, client: Bus, value: AppHealth | None, *, key: AppKey = WEB
) -> None:
    """Publish (None: delete) a health value and wait until the agent has handled it."""
    if value is None:
        await client.clear(HEALTH, key)
    else:
        await client.publish(HEALTH, value, key=key)
    await agent.bus.sync()


async def test_a_liveness_verdict_restarts_once_and_counts() -> None:
    engine = FakeEngine()
    (rep,) = replicas(1)
    cid = engine.add(labels_for(rep.id))
    agent = make_agent(engine)
    await ready(agent)
    assign(agent, [rep])
    started = agent.node.containers[cid].started_at

    async with wired(agent) as client:
        await publish_health(agent, client, not_live(rep, started, node="n2"))  # another node's
        await publish_health(agent, client, not_live(rep, (started or 0) - 5))  # an older start
        await settle(agent)
        assert "restart" not in engine.calls

        await publish_health(agent, client, not_live(rep, started))
        await settle(agent)
        assert engine.calls.count("restart") == 1
        assert agent.node.records[rep.id].restarts == 1
        assert agent.node.containers[cid].started_at != started
        kind, _, fields = agent.node.events.get_nowait()
        assert (kind, fields["replica"], fields["data"]["source"]) == (
            "liveness_restart",
            rep.id,
            "health",
        )

        # the same, stale verdict again
        await publish_health(agent, client, not_live(rep, started))
        await settle(agent)
        assert engine.calls.count("restart") == 1

        await publish_health(agent, client, None)  # health topic deleted: nothing breaks
        assert WEB not in agent.liveness.health
        # A verdict about the current start, under another app's topic: dropped.
        current = agent.node.containers[cid].started_at
        other = AppKey("default", "other")
        await publish_health(agent, client, not_live(rep, current), key=other)
        assert other not in agent.liveness.health
        await settle(agent)
        assert engine.calls.count("restart") == 1


async def test_exec_probes_report_readiness_and_restart_on_liveness_failure() -> None:
    spec = AppSpec.model_validate(
        {
            "name": "web",
            "image": "img",
            "ports": {"http": 8080},
            "health": {
                "readiness": {"exec": ["ready"], "interval": "10ms"},
                "liveness": {"exec": ["alive"], "interval": "10ms", "failures": 2},
            },
        }
    )
    engine = FakeEngine()
    (rep,) = replicas(1)
    cid = engine.add(labels_for(rep.id))
    agent = make_agent(engine)
    await ready(agent)
    agent.node.assignment = NodeAssignment(node="n1", replicas=[rep], specs={rep.spec_key: spec})
    await settle(agent)
    assert set(agent.probes.running) == {(rep.id, "readiness"), (rep.id, "liveness")}

    async def eventually(predicate: Any) -> None:
        for _ in range(1000):
            if predicate():
                return
            await asyncio.sleep(0.005)
        raise AssertionError("condition never met")

    started = agent.node.containers[cid].started_at
    await eventually(
        lambda: agent.node.records.get(rep.id) and agent.node.records[rep.id].exec_ready
    )
    assert agent.node.records[rep.id].exec_ready == (started, True)

    engine.exec_exit[cid] = 1  # both probes fail from now on
    await eventually(lambda: agent.liveness.exec_failures)
    await settle(agent)
    assert engine.calls.count("restart") == 1
    assert agent.node.records[rep.id].restarts == 1
    # A new start: new probe tasks (fresh state), the old verdict no longer applies.
    new_start = agent.node.containers[cid].started_at
    assert new_start != started
    assert {t.started_at for t, _ in agent.probes.running.values()} == {new_start}
    for _, task in agent.probes.running.values():
        task.cancel()
    await asyncio.gather(*(t for _, t in agent.probes.running.values()), return_exceptions=True)


async def test_a_failed_liveness_restart_is_retried_after_its_back_off() -> None:
    engine = FakeEngine()
    engine.restart_error = 1
    (rep,) = replicas(1)
    cid = engine.add(labels_for(rep.id))
    agent = make_agent(engine)
    await ready(agent)
    assign(agent, [rep])
    started = agent.node.containers[cid].started_at
    async with wired(agent) as client:
        await publish_health(agent, client, not_live(rep, started))
        await settle(agent)
        record = agent.node.records[rep.id]
        assert engine.calls.count("restart") == 1
        assert (record.restarts, record.failures, record.hint) == (0, 1, "failed")
        wake = await agent.reconcile.once()  # waits for the back-off, and says when to look
        assert wake is not None
        assert 0 < wake <= 1.0
        assert engine.calls.count("restart") == 1
        record.retry_at = 0.0  # time passes
        await settle(agent)
        assert engine.calls.count("restart") == 2
        assert agent.node.records[rep.id].restarts == 1
        assert agent.node.containers[cid].started_at != started


# -- the whole service on a MemoryBroker, driven through the bus ------------------------


@contextlib.asynccontextmanager
async def running(
    engine: FakeEngine, broker: MemoryBroker | None = None, **options: Any
) -> AsyncIterator[tuple[AgentService, Bus]]:
    """The agent service running on a MemoryBroker, and a client's bus on the same broker
    (connected, its subscriptions in place before the agent starts)."""
    broker = broker or MemoryBroker()
    agent = make_agent(engine, broker, heartbeat=0.2, **options)
    client = broker.bus(Topics(PREFIX), client_id="test-client")
    client_task = asyncio.create_task(client.run())
    await client.wait_connected(5)
    service = asyncio.create_task(agent.run())
    try:
        yield agent, client
    finally:
        agent.stop()
        await asyncio.wait_for(service, 10)
        client.close()
        client_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await client_task


def assignment(reps: list[AssignedReplica], generation: int = 1) -> NodeAssignment:
    return NodeAssignment(
        node="n1", replicas=reps, specs={"default/web@1": SPEC}, generation=generation
    )


async def test_the_service_runs_the_assignment_it_is_given_on_the_bus_and_reports_it() -> None:
    engine = FakeEngine()
    async with running(engine) as (_, client):
        infos = await client.view(NODE_INFO)
        reports = await client.view(NODE_REPLICAS)
        info = await eventually(lambda: (i := infos.get("n1")) and i.status == "ready" and i)
        assert (info.address, info.capacity.cpu, info.version) == ("127.0.0.9", 4, "docker fake")
        presence = await client.view(PRESENCE, service="agent")
        await client.sync()  # the retained values are delivered
        assert presence[ServiceKey("agent", "t1")].status == "online"

        reps = replicas(3)
        await client.publish(NODE_ASSIGN, assignment(reps))

        def all_running() -> bool:
            report = reports.get("n1")
            return report is not None and sorted(
                (r.id, r.phase, r.endpoints.get("http")) for r in report.replicas
            ) == [(r.id, "running", "127.0.0.9:40000") for r in reps]

        await eventually(all_running, message="3 replicas running in the report")
        assert engine.calls.count("create") == 3

        # A container dies behind the agent's back: the Docker event is seen, it restarts.
        (cid,) = [c for c, box in engine.boxes.items() if "default.web.00000000" in str(box)]
        engine.die(cid)
        await eventually(
            lambda: (
                (r := reports.get("n1"))
                and any(s.restarts == 1 and s.phase == "running" for s in r.replicas)
            ),
            message="the killed replica restarted",
        )
        before = infos["n1"].heartbeat
        await eventually(lambda: infos["n1"].heartbeat > before, message="a heartbeat")

        await client.clear(NODE_ASSIGN, "n1")  # deleted: nothing to run
        await eventually(lambda: (r := reports.get("n1")) and not r.replicas, message="all removed")
        assert engine.boxes == {}

    assert infos["n1"].status == "offline"  # the goodbye of a clean stop
    assert presence[ServiceKey("agent", "t1")].status == "offline"


async def test_malformed_assignments_are_dropped_and_the_service_keeps_going() -> None:
    engine = FakeEngine()
    async with running(engine) as (agent, client):
        reports = await client.view(NODE_REPLICAS)
        topic = NODE_ASSIGN.topic(PREFIX, "n1")
        await client.publish_raw(topic, b"\x00garbage", retain=True)
        await client.publish_raw(topic, codec.encode(client.envelope("assign", {"node": 5})))
        await client.publish(NODE_ASSIGN, NodeAssignment(node="n2"), key="n1")  # another node's
        (rep,) = replicas(1)
        no_spec = NodeAssignment(node="n1", replicas=[rep])  # its spec is missing
        await client.publish(NODE_ASSIGN, no_spec)
        await client.publish_raw(
            LOGS_REQUEST.topic(PREFIX, None), codec.encode(client.envelope("logs_request", {}))
        )
        await agent.bus.sync()
        assert agent.node.assignment is None
        await client.publish(NODE_ASSIGN, assignment([rep]))
        await eventually(
            lambda: (r := reports.get("n1")) and [s.phase for s in r.replicas] == ["running"],
            message="the good assignment running",
        )


async def test_a_not_live_verdict_on_the_bus_restarts_the_replica() -> None:
    engine = FakeEngine()
    (rep,) = replicas(1)
    cid = engine.add(labels_for(rep.id))
    async with running(engine) as (_, client):
        reports = await client.view(NODE_REPLICAS)
        events: list[Event] = []
        await client.subscribe(EVENTS, lambda _, e: events.append(e) if e else None)
        await client.publish(NODE_ASSIGN, assignment([rep]))
        report = await eventually(lambda: reports.get("n1"), message="a report")
        (status,) = report.replicas
        assert (status.phase, status.container_id) == ("running", cid)

        await client.publish(HEALTH, not_live(rep, status.started_at))
        restarted = await eventually(
            lambda: (r := reports.get("n1")) and r.replicas[0].restarts == 1 and r.replicas[0],
            message="restarted for liveness",
        )
        assert restarted.started_at != status.started_at
        assert restarted.reason.startswith("last exit: liveness:")
        event = await eventually(lambda: [e for e in events if e.kind == "liveness_restart"])
        assert (event[0].node, event[0].replica) == ("n1", rep.id)
        assert event[0].data["source"] == "health"
        assert engine.calls.count("restart") == 1


async def test_a_logs_request_is_answered_with_the_replica_lines_and_eof() -> None:
    engine = FakeEngine()
    (rep,) = replicas(1)
    cid = engine.add(labels_for(rep.id))
    engine.log_lines[cid] = ["one", "two", "three"]
    async with running(engine, stats_interval=0.05) as (agent, client):
        chunks: list[LogChunk] = []
        await client.subscribe(LOGS_STREAM, lambda _, c: chunks.append(c) if c else None)
        metrics = await client.view(NODE_METRICS)
        await client.publish(NODE_ASSIGN, assignment([rep]))
        await eventually(lambda: agent.node.listed and agent.node.synced, message="agent ready")
        await client.publish(LOGS_REQUEST, LogsRequest(id="r1", app="web", tail=2))
        await eventually(lambda: chunks and chunks[-1].eof, message="the end of the stream")
        assert [line for c in chunks for line in c.lines] == ["two", "three"]
        assert {(c.request, c.node, c.replica) for c in chunks} == {("r1", "n1", rep.id)}
        usage = await eventually(lambda: (m := metrics.get("n1")) and m.replicas.get(rep.id))
        assert (usage.memory, usage.memory_limit, usage.app) == (2**20, 2**26, "web")


async def test_the_last_will_says_offline_and_a_reconnect_reports_again() -> None:
    engine = FakeEngine()
    broker = MemoryBroker()
    async with running(engine, broker) as (agent, client):
        seen: list[NodeInfo] = []
        await client.subscribe(NODE_INFO, lambda _, i: seen.append(i) if i else None)
        reports = await client.view(NODE_REPLICAS)
        await client.publish(NODE_ASSIGN, assignment(replicas(1)))
        await eventually(lambda: reports.get("n1") and reports["n1"].replicas, message="a report")
        await eventually(lambda: seen and seen[-1].status == "ready", message="ready")
        await client.clear(NODE_REPLICAS, "n1")  # gone with a broker that lost its state
        await agent.bus.sync()

        broker.crash("agent-t1")  # the connection dies: the broker publishes the last will
        will = await eventually(
            lambda: [i for i in seen if i.status == "offline"], message="the will"
        )
        assert will[0].reason == "agent connection lost"
        await eventually(
            lambda: seen[-1].status == "ready", message="ready again after reconnecting"
        )
        await eventually(lambda: reports.get("n1"), message="the report sent again")


async def test_a_stale_report_replayed_over_ours_is_replaced_at_once() -> None:
    # A bridge between region brokers that reconnects replays the copy the other region
    # kept; the agent, this topic's only writer, publishes its own report again.
    engine = FakeEngine()
    broker = MemoryBroker()
    observer = broker.bus(Topics(PREFIX), client_id="observer")
    observer_task = asyncio.create_task(observer.run())
    await observer.wait_connected(5)
    try:
        async with running(engine, broker) as (_, client):
            seen = await observer.view(NODE_REPLICAS)
            await client.publish(NODE_ASSIGN, assignment(replicas(2)))
            await eventually(
                lambda: (r := seen.get("n1")) is not None and len(r.replicas) == 2,
                message="2 replicas in the report",
            )
            current = seen["n1"]
            stale = current.model_copy(update={"replicas": current.replicas[:1], "ts": 1.0})
            await client.publish(NODE_REPLICAS, stale)
            await eventually(lambda: seen["n1"].ts == 1.0, message="the stale copy delivered")
            await eventually(
                lambda: len(seen["n1"].replicas) == 2 and seen["n1"].ts > 1.0,
                message="the agent's own report back",
            )
            assert engine.calls.count("create") == 2  # nothing restarted for it
    finally:
        observer.close()
        observer_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await observer_task
