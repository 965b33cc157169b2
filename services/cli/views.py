"""What ``get`` and ``describe`` show, built from one snapshot of the retained state.

Pure functions over models: no bus here (``read_snapshot`` is the one reader), so every row
and phase is unit-tested on hand-made models.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.bus import Bus
from core.channels import (
    APPS,
    HEALTH,
    NODE_ASSIGN,
    NODE_CORDON,
    NODE_INFO,
    NODE_REPLICAS,
    SCALER_STATUS,
    SCHEDULER_STATUS,
)
from core.cluster_state import ClusterState, app_phase, ready_replicas, requested
from core.keys import AppKey
from core.state import (
    AppHealth,
    AppState,
    NodeInfo,
    ReplicaHealth,
    ReplicaStatus,
    ScalerStatus,
    SchedulerStatus,
)
from services.cli.output import format_labels, human_memory, matches

#: The retained topics the CLI reads, as of one ``bus.sync()``.
Snapshot = ClusterState


async def live_snapshot(bus: Bus) -> Callable[[], Snapshot]:
    """Subscribe once to every topic ``get`` and ``describe`` read; the result takes a
    snapshot of what has arrived so far (after the first ``bus.sync()``)."""
    views = (
        await bus.view(APPS),
        await bus.view(HEALTH),
        await bus.view(SCHEDULER_STATUS),
        await bus.view(SCALER_STATUS),
        await bus.view(NODE_INFO),
        await bus.view(NODE_REPLICAS),
        await bus.view(NODE_ASSIGN),
        await bus.view(NODE_CORDON),
    )
    await bus.sync()
    return lambda: Snapshot(*(dict(v) for v in views))  # type: ignore[arg-type]


async def read_snapshot(bus: Bus) -> Snapshot:
    return (await live_snapshot(bus))()


# -- apps -------------------------------------------------------------------------------


def rollout_progress(app: AppState, health: AppHealth | None) -> tuple[int, int, int]:
    """(ready replicas of the current revision, desired, replicas of other revisions)."""
    replicas = health.replicas if health else []
    others = sum(1 for r in replicas if r.revision != app.revision and not r.terminating)
    return ready_replicas(app, health), app.replicas, others


@dataclass(frozen=True)
class AppView:
    """One row of ``get apps``: desired state joined with what the other services report."""

    app: AppState
    health: AppHealth | None
    running: int
    placement: SchedulerStatus | None
    scaler: ScalerStatus | None

    @property
    def ready(self) -> int:
        return rollout_progress(self.app, self.health)[0]

    @property
    def phase(self) -> str:
        return app_phase(self.app, self.placement)

    @property
    def autoscale(self) -> str:
        spec = self.app.spec.autoscale
        if spec is None:
            return "-"
        bounds = f"{spec.min}-{spec.max}"
        return f"{bounds}: {self.scaler.reason}" if self.scaler else bounds

    @property
    def notes(self) -> str:
        parts = [self.app.message] if self.app.message else []
        if self.placement is not None and self.placement.unplaceable:
            parts.append(self.placement.message)
        return "; ".join(parts)

    @property
    def route(self) -> str:
        route = self.app.spec.route
        return "-" if route is None else f"{route.host or '*'}{route.path}"

    def as_json(self) -> dict[str, Any]:
        return {
            **self.app.model_dump(mode="json"),
            "phase": self.phase,
            "ready": self.ready,
            "current": self.running,
            "desired": self.app.replicas,
            "placement": self.placement.model_dump(mode="json") if self.placement else None,
            "autoscaler": self.scaler.model_dump(mode="json") if self.scaler else None,
            "notes": self.notes,
        }


def app_views(
    snap: Snapshot,
    namespace: str | None = None,
    name: str | None = None,
    selector: dict[str, str] | None = None,
) -> list[AppView]:
    running = Counter(AppKey(r.namespace, r.app) for r in snap.replicas() if r.phase == "running")
    views = []
    for key, app in sorted(snap.apps.items()):
        if namespace and key.namespace != namespace:
            continue
        if name is not None and key.name != name:
            continue
        if selector and not matches(app.spec.labels, selector):
            continue
        views.append(
            AppView(
                app,
                snap.health.get(key),
                running[key],
                snap.placement.get(key),
                snap.scaling.get(key),
            )
        )
    return views


APP_COLUMNS = (
    "NAMESPACE",
    "NAME",
    "REV",
    "READY",
    "CURRENT",
    "DESIRED",
    "IMAGE",
    "ROUTE",
    "PHASE",
    "AUTOSCALE",
    "AGE",
    "NOTES",
)
APP_WIDE_COLUMNS = (*APP_COLUMNS, "CPU", "MEMORY", "LABELS")


def app_row(v: AppView, age: str, wide: bool = False) -> list[str]:
    a = v.app
    row = [
        a.namespace,
        a.name,
        str(a.revision),
        str(v.ready),
        str(v.running),
        str(a.replicas),
        a.spec.image,
        v.route,
        v.phase,
        v.autoscale,
        age,
        v.notes,
    ]
    if wide:
        row += [
            f"{a.spec.resources.cpu:g}",
            human_memory(a.spec.resources.memory),
            format_labels(a.spec.labels),
        ]
    return row


# -- nodes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One node: status, cordon, labels, replicas assigned and what they request."""

    node: str
    address: str
    status: str
    reason: str
    schedule: str
    labels: dict[str, str]
    replicas: int
    cpu: float
    cpu_capacity: float
    memory: int
    memory_capacity: int
    version: str
    heartbeat: float

    @property
    def status_text(self) -> str:
        return self.status + (f" ({self.reason})" if self.reason else "")


def node_rows(snap: Snapshot, selector: dict[str, str] | None = None) -> list[NodeRow]:
    rows = []
    for info in sorted(snap.nodes.values(), key=lambda i: i.node):
        if selector and not matches(info.labels, selector):
            continue
        assignment = snap.assigns.get(info.node)
        cpu, memory = requested(assignment)
        cordon = snap.cordons.get(info.node)
        schedule = ("draining" if cordon.drain else "cordoned") if cordon is not None else ""
        rows.append(
            NodeRow(
                node=info.node,
                address=info.address,
                status=info.status,
                reason=info.reason,
                schedule=schedule,
                labels=dict(info.labels),
                replicas=len(assignment.replicas) if assignment is not None else 0,
                cpu=cpu,
                cpu_capacity=info.capacity.cpu,
                memory=memory,
                memory_capacity=info.capacity.memory,
                version=info.version,
                heartbeat=info.heartbeat,
            )
        )
    return rows


NODE_COLUMNS = ("NODE", "STATUS", "SCHEDULE", "REPLICAS", "CPU", "MEMORY", "LABELS", "HEARTBEAT")
NODE_WIDE_COLUMNS = (*NODE_COLUMNS, "ADDRESS", "VERSION")


def node_row(row: NodeRow, heartbeat_age: str, wide: bool = False) -> list[str]:
    cells = [
        row.node,
        row.status_text,
        row.schedule or "-",
        str(row.replicas),
        f"{row.cpu:g}/{row.cpu_capacity:g}",
        f"{human_memory(row.memory)}/{human_memory(row.memory_capacity)}",
        format_labels(row.labels),
        heartbeat_age,
    ]
    if wide:
        cells += [row.address, row.version or "-"]
    return cells


def node_json(row: NodeRow, info: NodeInfo) -> dict[str, Any]:
    """The node's own record, with its cordon, assigned replicas and their requests."""
    return {
        **info.model_dump(mode="json"),
        "schedule": row.schedule,
        "replicas": row.replicas,
        "allocated": {"cpu": row.cpu, "memory": row.memory},
    }


# -- replicas ---------------------------------------------------------------------------


REPLICA_COLUMNS = ("ID", "APP", "REV", "NODE", "PHASE", "READY", "ENDPOINTS", "RESTARTS", "AGE")
REPLICA_WIDE_COLUMNS = (*REPLICA_COLUMNS, "CONTAINER", "REASON")


def replica_phase(r: ReplicaStatus, node_status: str | None) -> str:
    """A lost node's last report stays retained: say so instead of showing it as current."""
    if node_status != "ready":
        return f"unknown (node {node_status or 'unknown'})"
    return r.phase + (f" ({r.reason})" if r.reason else "")


def replica_views(
    snap: Snapshot,
    namespace: str | None = None,
    name: str | None = None,
    app: str | None = None,
    node: str | None = None,
) -> list[ReplicaStatus]:
    return [
        r
        for r in snap.replicas()
        if (not namespace or r.namespace == namespace)
        and (name is None or r.id == name)
        and (app is None or r.app == app)
        and (node is None or r.node == node)
    ]


def replica_row(
    r: ReplicaStatus,
    health: ReplicaHealth | None,
    node_status: str | None,
    started_age: str,
    wide: bool = False,
) -> list[str]:
    cells = [
        r.id,
        str(AppKey(r.namespace, r.app)),
        str(r.revision),
        r.node,
        replica_phase(r, node_status),
        "yes" if health and health.ready else "no",
        " ".join(f"{k}={v}" for k, v in r.endpoints.items()) or "-",
        str(r.restarts),
        started_age,
    ]
    if wide:
        cells += [r.container_id[:12] or "-", (health.reason if health else "") or "-"]
    return cells


def replica_json(
    r: ReplicaStatus, health: ReplicaHealth | None, node_status: str | None
) -> dict[str, Any]:
    return {
        **r.model_dump(mode="json"),
        "ready": bool(health and health.ready),
        "node_status": node_status or "unknown",
    }


def not_ready_reasons(
    app: AppState | None,
    health: AppHealth | None,
    placement: SchedulerStatus | None,
    replicas: list[ReplicaStatus],
) -> str:
    """Why an app waited on is not ready yet: readiness count, what the scheduler cannot
    place, and each replica of the target revision that is not ready, with its reason."""
    if app is None:
        return "not known to the controller yet"
    ready, desired, others = rollout_progress(app, health)
    parts = [f"{ready}/{desired} replicas of revision {app.revision} ready"]
    if others:
        parts.append(f"{others} of other revisions still running")
    if placement is not None and placement.unplaceable:
        parts.append(f"{placement.unplaceable} unplaceable: {placement.message}")
    if placement is not None and placement.waiting_for:
        parts.append(placement.waiting_for)
    verdicts = {r.id: r for r in (health.replicas if health else [])}
    for r in replicas:
        if r.namespace != app.namespace or r.app != app.name or r.revision != app.revision:
            continue
        verdict = verdicts.get(r.id)
        if verdict is not None and verdict.ready:
            continue
        why = r.phase + (f" ({r.reason})" if r.reason else "")
        if r.phase == "running":
            why = "not ready" + (
                f" ({verdict.reason})" if verdict is not None and verdict.reason else ""
            )
        parts.append(f"{r.id} on {r.node}: {why}")
    if app.message:
        parts.append(app.message)
    return "; ".join(parts)
