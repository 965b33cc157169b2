"""Hand-made retained state for the CLI's formatting tests (no broker)."""

from __future__ import annotations

from core.keys import AppKey
from core.spec import AppSpec
from core.state import (
    AppHealth,
    AppState,
    AppVersion,
    AssignedReplica,
    NodeAssignment,
    NodeCordon,
    NodeInfo,
    NodeReplicas,
    ReplicaHealth,
    ReplicaStatus,
    SchedulerStatus,
)
from services.cli.views import Snapshot

T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z
WEB = AppKey("default", "web")


def app_state(replicas: int = 2, labels: dict[str, str] | None = None, **kw: object) -> AppState:
    spec = AppSpec.model_validate(
        {
            "name": "web",
            "image": "shoal-test/echo:v1",
            "replicas": replicas,
            "ports": {"http": 8080},
            "resources": {"cpu": 0.5, "memory": "512Mi"},
            "labels": labels or {"tier": "front"},
        }
    )
    return AppState(
        namespace="default",
        name="web",
        revision=1,
        generation=1,
        spec=spec,
        replicas=replicas,
        versions=[AppVersion(revision=1, spec=spec, replicas=replicas)],
        updated=T0,
        **kw,  # type: ignore[arg-type]
    )


def node(name: str = "n1", memory: int = 24683584 * 1024, **kw: object) -> NodeInfo:
    return NodeInfo(
        node=name,
        address="10.0.0.1",
        labels={"zone": "a"} if name == "n1" else {"zone": "b"},
        capacity={"cpu": 4, "memory": memory},  # type: ignore[arg-type]
        heartbeat=T0,
        version="0.1.0",
        **kw,  # type: ignore[arg-type]
    )


def replica(rid: str = "web-1", phase: str = "running", **kw: object) -> ReplicaStatus:
    return ReplicaStatus(
        id=rid,
        namespace="default",
        app="web",
        revision=1,
        node="n1",
        phase=phase,  # type: ignore[arg-type]
        started_at=T0 - 90,
        endpoints={"http": "10.0.0.1:32001"},
        **kw,  # type: ignore[arg-type]
    )


def unplaceable_snapshot() -> Snapshot:
    """web wants 2 replicas; no node fits either."""
    return Snapshot(
        apps={WEB: app_state()},
        placement={
            WEB: SchedulerStatus(
                namespace="default",
                name="web",
                desired=2,
                placed=0,
                unplaceable=2,
                message="0/1 nodes fit: 1 insufficient memory",
                reasons={"insufficient memory": 1},
            )
        },
        nodes={"n1": node(memory=256 * 1024**2)},
    )


def running_snapshot() -> Snapshot:
    """web runs one ready and one unready replica on n1; n2 is cordoned and empty."""
    spec = app_state().spec
    return Snapshot(
        apps={WEB: app_state()},
        health={
            WEB: AppHealth(
                namespace="default",
                name="web",
                replicas=[
                    ReplicaHealth(
                        id="web-1", revision=1, node="n1", endpoint="10.0.0.1:32001", ready=True
                    ),
                    ReplicaHealth(
                        id="web-2",
                        revision=1,
                        node="n1",
                        endpoint="10.0.0.1:32002",
                        ready=False,
                        reason="readiness: connection refused",
                    ),
                ],
            )
        },
        placement={
            WEB: SchedulerStatus(
                namespace="default", name="web", desired=2, placed=2, nodes={"n1": 2}
            )
        },
        nodes={"n1": node(), "n2": node("n2")},
        observed={
            "n1": NodeReplicas(node="n1", replicas=[replica(), replica("web-2", restarts=3)])
        },
        assigns={
            "n1": NodeAssignment(
                node="n1",
                replicas=[
                    AssignedReplica(id=f"web-{i}", namespace="default", app="web", revision=1)
                    for i in (1, 2)
                ],
                specs={"default/web@1": spec},
            )
        },
        cordons={"n2": NodeCordon(node="n2", reason="disk swap")},
    )
