"""What the dashboard's pages show, from hand-made retained state."""

from __future__ import annotations

import pytest

from core.cluster_state import ready_replicas
from core.keys import AppKey, ServiceKey
from core.spec import AppSpec, Resources
from core.state import (
    AppHealth,
    AppState,
    AppVersion,
    AssignedReplica,
    LbMetrics,
    NodeAssignment,
    NodeCordon,
    NodeInfo,
    NodeMetrics,
    NodeReplicas,
    Presence,
    ReplicaHealth,
    ReplicaStatus,
    ReplicaUsage,
    RouteMetrics,
    SchedulerStatus,
)
from services.dashboard import model

WEB = AppKey("default", "web")
SPEC = AppSpec(name="web", image="echo:v1", resources=Resources(cpu=0.5, memory=128 * 1024**2))


def app(replicas: int = 2, phase: str = "stable", message: str = "") -> AppState:
    return AppState(
        namespace="default",
        name="web",
        revision=3,
        generation=5,
        spec=SPEC,
        replicas=replicas,
        versions=[AppVersion(revision=3, spec=SPEC, replicas=replicas)],
        phase=phase,  # type: ignore[arg-type]
        message=message,
    )


def health(*ready: bool, revision: int = 3) -> AppHealth:
    return AppHealth(
        namespace="default",
        name="web",
        replicas=[
            ReplicaHealth(id=f"r{i}", revision=revision, node="n1", endpoint="x:1", ready=r)
            for i, r in enumerate(ready)
        ],
    )


@pytest.mark.parametrize(
    ("state", "placement", "ready", "phase", "reason"),
    [
        (app(), None, (True, True), "stable", ""),
        (app(), None, (True, False), "stable", "1 of 2 replicas ready"),
        (
            app(),
            SchedulerStatus(
                namespace="default", name="web", unplaceable=2, message="0/1 nodes fit: memory"
            ),
            (),
            "pending",
            "0/1 nodes fit: memory",
        ),
        (
            app(phase="failed", message="readiness timed out"),
            None,
            (True, True),
            "failed",
            "readiness timed out",
        ),
        (app(phase="progressing"), None, (True,), "progressing", "1 of 2 replicas ready"),
    ],
)
def test_app_row_phase_and_reason(
    state: AppState,
    placement: SchedulerStatus | None,
    ready: tuple[bool, ...],
    phase: str,
    reason: str,
) -> None:
    row = model.app_row(state, health(*ready), placement, None)
    assert (row["phase"], row["reason"]) == (phase, reason)
    assert row["ready"] == sum(ready)
    assert row["desired"] == 2
    assert row["key"] == "default/web"


def test_ready_counts_only_the_current_revision() -> None:
    assert ready_replicas(app(), health(True, True, revision=2)) == 0
    assert ready_replicas(app(), None) == 0


def cluster() -> model.Cluster:
    replica = ReplicaStatus(
        id="default.web.1",
        namespace="default",
        app="web",
        revision=3,
        node="n1",
        phase="running",
        restarts=2,
        endpoints={"http": "127.0.0.1:4000"},
        container_id="c",
    )
    return model.Cluster(
        apps={WEB: app()},
        health={
            WEB: AppHealth(
                namespace="default",
                name="web",
                replicas=[
                    ReplicaHealth(
                        id="default.web.1",
                        revision=3,
                        node="n1",
                        endpoint="x",
                        ready=False,
                        reason="http 503",
                    )
                ],
            )
        },
        nodes={
            "n1": NodeInfo(
                node="n1", address="127.0.0.2", capacity=Resources(cpu=4, memory=8 * 1024**3)
            )
        },
        observed={"n1": NodeReplicas(node="n1", replicas=[replica])},
        assigns={
            "n1": NodeAssignment(
                node="n1",
                replicas=[
                    AssignedReplica(id="default.web.1", namespace="default", app="web", revision=3)
                ],
                specs={"default/web@3": SPEC},
            )
        },
        cordons={"n1": NodeCordon(node="n1", drain=True, reason="kernel")},
        usage={
            "n1": NodeMetrics(
                node="n1", replicas={"default.web.1": ReplicaUsage(cpu=0.25, memory=1000)}
            )
        },
        presence={ServiceKey("agent", "a1"): Presence(service="agent", instance="a1")},
    )


def test_nodes_show_capacity_requests_use_and_cordon() -> None:
    [row] = model.node_rows(cluster())
    assert row["capacity"] == {"cpu": 4.0, "memory": 8 * 1024**3}
    assert row["requested"] == {"cpu": 0.5, "memory": 128 * 1024**2}
    assert row["used"] == {"cpu": 0.25, "memory": 1000}
    assert row["replicas"] == 1
    assert row["schedulable"] is False
    assert row["cordon"] == {"drain": True, "reason": "kernel", "since": 0.0}


def test_replicas_join_the_health_verdict() -> None:
    [row] = model.replica_rows(cluster())
    assert row["key"] == "default/web"
    assert row["node"] == "n1"
    assert row["restarts"] == 2
    assert row["ready"] is False
    assert row["health"] == "not ready: http 503"


@pytest.mark.parametrize(
    ("verdict", "text"),
    [
        (None, "no verdict yet"),
        (ReplicaHealth(id="r", revision=1, node="n", endpoint="e", ready=True), "ready"),
        (
            ReplicaHealth(
                id="r", revision=1, node="n", endpoint="e", ready=False, terminating=True
            ),
            "terminating",
        ),
        (
            ReplicaHealth(id="r", revision=1, node="n", endpoint="e", ready=True, live=False),
            "liveness failed",
        ),
    ],
)
def test_health_text(verdict: ReplicaHealth | None, text: str) -> None:
    assert model.health_text(verdict) == text


def test_overview_holds_every_page() -> None:
    view = model.overview(cluster())
    assert set(view) == {"apps", "nodes", "replicas", "services"}
    assert [s["service"] for s in view["services"]] == ["agent"]


def lb(instance: str, ts: float, **apps: RouteMetrics) -> LbMetrics:
    return LbMetrics(
        instance=instance, ts=ts, apps={k.replace("_", "/"): v for k, v in apps.items()}
    )


def test_series_adds_rates_and_keeps_the_worst_latency_across_balancers() -> None:
    series = model.Series(points=3)
    series.record(lb("b1", 100.0, default_web=RouteMetrics(rps=10, errors=2, p50_ms=3, p99_ms=9)))
    series.record(lb("b2", 100.0, default_web=RouteMetrics(rps=5, errors=1, p50_ms=4, p99_ms=7)))
    series.sample(100.5, {"default/web", "default/idle"})
    data = series.as_json()
    assert data["default/web"] == [[100.5, 15.0, 3.0, 4.0, 9.0]]
    assert data["default/idle"] == [[100.5, 0.0, 0.0, 0.0, 0.0]]


def test_series_forgets_stale_balancers_and_deleted_apps_and_is_bounded() -> None:
    series = model.Series(points=3)
    series.record(lb("b1", 100.0, default_web=RouteMetrics(rps=10)))
    for t in range(4):
        series.sample(101.0 + t, {"default/web"})
    assert [p[1] for p in series.as_json()["default/web"]] == [10.0, 10.0, 10.0]
    series.sample(110.0, {"default/web"})  # b1 silent for 10 s
    assert series.as_json()["default/web"][-1][1] == 0.0
    assert series.latest == {}
    series.sample(111.0, set())
    assert series.as_json() == {}
