"""The agent shell on an in-memory engine: parallel creates, one pull per image,
adoption without restarts, failures recorded with their reasons. No broker, no Docker:
the bus is constructed but never connected (events and reports only queue up)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from core import codec
from core.codec import Envelope
from core.config import BrokerURL, ServiceConfig
from core.spec import AppSpec
from core.state import AppHealth, AssignedReplica, NodeAssignment, ReplicaHealth
from services.agent.engine import EngineError
from services.agent.service import AgentOptions, AgentService

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

    async def close(self) -> None:
        pass


def make_agent(engine: FakeEngine, **options: Any) -> AgentService:
    config = ServiceConfig(broker=BrokerURL.parse("mqtt://127.0.0.1:1"), prefix=PREFIX)
    agent = AgentService(config, AgentOptions(node_id="n1", address="127.0.0.9", **options))
    agent.engine = engine  # type: ignore[assignment]
    return agent


async def ready(agent: AgentService) -> None:
    """What the engine loop and the bus sync do before the first reconcile."""
    agent._apply_info(await agent.engine.info())
    await agent._resync_containers()
    agent._listed = True
    agent.engine_ready = True
    agent._synced.set()


async def settle(agent: AgentService, rounds: int = 5) -> None:
    """Reconcile and wait for the actions it starts, until nothing is left to do."""
    for _ in range(rounds):
        await agent._reconcile("node")
        if not agent.actions:
            return
        await asyncio.gather(*agent.actions.values())


def replicas(n: int) -> list[AssignedReplica]:
    return [
        AssignedReplica(id=f"default.web.{i:08x}", namespace="default", app="web", revision=1)
        for i in range(n)
    ]


def assign(agent: AgentService, reps: list[AssignedReplica]) -> None:
    agent.assignment = NodeAssignment(node="n1", replicas=reps, specs={"default/web@1": SPEC})


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
    running = [c for c in agent.containers.values() if c.running]
    assert len(running) == 50
    assert all(c.endpoints("127.0.0.9") == {"http": "127.0.0.9:40000"} for c in running)
    assert agent.capacity.cpu == 4


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
    assert sum(c.running for c in agent.containers.values()) == 10


async def test_pull_failure_is_recorded_with_the_reason_and_retried_later() -> None:
    engine = FakeEngine(has_image=False, pull_error="unauthorized: authentication required")
    agent = make_agent(engine)
    await ready(agent)
    reps = replicas(3)
    assign(agent, reps)
    await settle(agent, rounds=1)
    assert len(engine.pulls) == 1
    for r in reps:
        record = agent.records[r.id]
        assert record.hint == "image_pull_failed"
        assert "unauthorized: authentication required" in record.hint_reason
        assert record.retry_at is not None
    wake = await agent._reconcile("node")
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
    agent.containers.clear()
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
    wake = await agent._reconcile("node")
    assert wake is not None  # first restart after the initial back-off
    record = agent.records[rep.id]
    assert (record.exit_code, record.reason, record.attempts) == (3, "Error", 1)
    record.restart_at = 0.0  # time passes
    await settle(agent)
    assert engine.boxes[cid]["State"]["Status"] == "running"
    assert agent.records[rep.id].restarts == 1


# -- probes: the shell's wiring (decisions are tested in test_probes.py) ---------------


def health_env(rep: AssignedReplica, started_at: float | None, *, node: str = "n1") -> Envelope:
    value = AppHealth(
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
    env = codec.decode(codec.encode(codec.make("health", value, src="health/h1")))
    assert env is not None
    return env


async def test_a_liveness_verdict_restarts_once_and_counts() -> None:
    engine = FakeEngine()
    (rep,) = replicas(1)
    cid = engine.add(labels_for(rep.id))
    agent = make_agent(engine)
    await ready(agent)
    assign(agent, [rep])
    started = agent.containers[cid].started_at
    topic = agent.topics.health("default", "web")

    agent._on_health(topic, health_env(rep, started, node="n2"))  # another node's
    agent._on_health(topic, health_env(rep, (started or 0) - 5))  # an older start
    await settle(agent)
    assert "restart" not in engine.calls

    agent._on_health(topic, health_env(rep, started))
    await settle(agent)
    assert engine.calls.count("restart") == 1
    assert agent.records[rep.id].restarts == 1
    assert agent.containers[cid].started_at != started
    kind, _, fields = agent._events.get_nowait()
    assert (kind, fields["replica"], fields["data"]["source"]) == (
        "liveness_restart",
        rep.id,
        "health",
    )

    agent._on_health(topic, health_env(rep, started))  # the same, stale verdict again
    await settle(agent)
    assert engine.calls.count("restart") == 1

    agent._on_health(topic, None)  # health topic deleted: nothing breaks
    agent._on_health("unit/health/only-one-level", health_env(rep, started))  # dropped
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
    agent.assignment = NodeAssignment(node="n1", replicas=[rep], specs={rep.spec_key: spec})
    await settle(agent)
    assert set(agent._probes) == {(rep.id, "readiness"), (rep.id, "liveness")}

    async def until(predicate: Any) -> None:
        for _ in range(1000):
            if predicate():
                return
            await asyncio.sleep(0.005)
        raise AssertionError("condition never met")

    started = agent.containers[cid].started_at
    await until(lambda: agent.records.get(rep.id) and agent.records[rep.id].exec_ready)
    assert agent.records[rep.id].exec_ready == (started, True)

    engine.exec_exit[cid] = 1  # both probes fail from now on
    await until(lambda: agent._exec_not_live)
    await settle(agent)
    assert engine.calls.count("restart") == 1
    assert agent.records[rep.id].restarts == 1
    # A new start: new probe tasks (fresh state), the old verdict no longer applies.
    new_start = agent.containers[cid].started_at
    assert new_start != started
    assert {t.started_at for t, _ in agent._probes.values()} == {new_start}
    for _, task in agent._probes.values():
        task.cancel()
    await asyncio.gather(*(t for _, t in agent._probes.values()), return_exceptions=True)


async def test_a_failed_liveness_restart_is_retried_after_its_back_off() -> None:
    engine = FakeEngine()
    engine.restart_error = 1
    (rep,) = replicas(1)
    cid = engine.add(labels_for(rep.id))
    agent = make_agent(engine)
    await ready(agent)
    assign(agent, [rep])
    started = agent.containers[cid].started_at
    agent._on_health(agent.topics.health("default", "web"), health_env(rep, started))
    await settle(agent)
    record = agent.records[rep.id]
    assert engine.calls.count("restart") == 1
    assert (record.restarts, record.failures, record.hint) == (0, 1, "failed")
    wake = await agent._reconcile("node")  # waits for the back-off, and says when to look
    assert wake is not None
    assert 0 < wake <= 1.0
    assert engine.calls.count("restart") == 1
    record.retry_at = 0.0  # time passes
    await settle(agent)
    assert engine.calls.count("restart") == 2
    assert agent.records[rep.id].restarts == 1
    assert agent.containers[cid].started_at != started
