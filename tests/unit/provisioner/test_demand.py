"""From retained wire models to ``decide``'s inputs."""

from __future__ import annotations

from core.keys import AppKey
from core.spec import AppSpec, Resources
from core.state import (
    AppState,
    AppVersion,
    AssignedReplica,
    NodeAssignment,
    NodeCordon,
    NodeInfo,
    SchedulerStatus,
)
from services.provisioner.demand import node_use, pending_demand

MI = 1024**2


def spec(cpu: float = 0.5, memory: int = 128 * MI) -> AppSpec:
    return AppSpec.model_validate(
        {
            "name": "web",
            "image": "img:v1",
            "resources": {"cpu": cpu, "memory": memory},
            "placement": {"max_per_node": 2, "constraints": {"zone": "a"}},
        }
    )


def app(revisions: dict[int, AppSpec]) -> AppState:
    newest = max(revisions)
    return AppState(
        namespace="default",
        name="web",
        revision=newest,
        generation=1,
        spec=revisions[newest],
        replicas=3,
        versions=[AppVersion(revision=r, spec=s, replicas=1) for r, s in revisions.items()],
    )


def test_pending_takes_the_newest_revision() -> None:
    key = AppKey("default", "web")
    status = SchedulerStatus(
        namespace="default",
        name="web",
        desired=3,
        unplaceable=2,
        message="0/1 nodes fit: 1 insufficient cpu",
    )
    (p,) = pending_demand({key: status}, {key: app({1: spec(0.1), 2: spec(0.5)})})
    assert (p.app, p.count, p.cpu, p.memory, p.max_per_node) == ("default/web", 2, 0.5, 128 * MI, 2)
    assert p.constraints == (("zone", ("a",)),)
    assert "insufficient cpu" in p.reason
    placed = status.model_copy(update={"unplaceable": 0})
    assert pending_demand({key: placed}, {key: app({1: spec()})}) == []
    assert pending_demand({key: status}, {}) == []  # the app is gone


def test_node_use_sums_the_assignment() -> None:
    info = NodeInfo(
        node="auto-1",
        address="127.0.0.10",
        capacity=Resources(cpu=2.0, memory=1024 * MI),
        labels={"zone": "a"},
    )
    s = spec()
    assignment = NodeAssignment(
        node="auto-1",
        replicas=[
            AssignedReplica(id=f"default.web.{i}", namespace="default", app="web", revision=1)
            for i in range(2)
        ],
        specs={"default/web@1": s},
    )
    (n,) = node_use(
        {"auto-1": info},
        {"auto-1": assignment},
        {"auto-1": NodeCordon(node="auto-1", drain=True)},
        {"auto-1": 0.25},
    )
    assert n.cpu_used == 1.0
    assert n.memory_used == 256 * MI
    assert n.utilization() == 0.5
    assert n.owned
    assert n.price == 0.25
    assert n.draining
    assert n.ready
    (other,) = node_use(
        {"x": info.model_copy(update={"node": "x", "status": "offline"})}, {}, {}, {}
    )
    assert not other.owned
    assert not other.ready
    assert other.loads == ()
