"""The retained cluster state as the readers of it see it: the CLI's ``get``/``describe``
(one snapshot per command) and the dashboard (live views, pushed to its pages).

Pure functions over models, no bus: what both show the same way lives here once (an app's
phase, its ready replicas, what a node's assignment requests); each keeps its own rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from core.keys import AppKey
from core.state import (
    AppHealth,
    AppState,
    NodeAssignment,
    NodeCordon,
    NodeInfo,
    NodeReplicas,
    ReplicaHealth,
    ReplicaStatus,
    ScalerStatus,
    SchedulerStatus,
)


@dataclass
class ClusterState:
    """The retained topics about apps and nodes, by key (plain dicts or live ``View``s)."""

    apps: Mapping[AppKey, AppState] = field(default_factory=dict)
    health: Mapping[AppKey, AppHealth] = field(default_factory=dict)
    placement: Mapping[AppKey, SchedulerStatus] = field(default_factory=dict)
    scaling: Mapping[AppKey, ScalerStatus] = field(default_factory=dict)
    nodes: Mapping[str, NodeInfo] = field(default_factory=dict)
    observed: Mapping[str, NodeReplicas] = field(default_factory=dict)
    assigns: Mapping[str, NodeAssignment] = field(default_factory=dict)
    cordons: Mapping[str, NodeCordon] = field(default_factory=dict)

    def replicas(self) -> list[ReplicaStatus]:
        """Every replica the agents report, by id."""
        return sorted((r for o in self.observed.values() for r in o.replicas), key=lambda r: r.id)

    def replica_health(self) -> dict[str, ReplicaHealth]:
        """Each replica's health verdict, by replica id."""
        return {r.id: r for h in self.health.values() for r in h.replicas}


def app_phase(app: AppState, placement: SchedulerStatus | None) -> str:
    """The controller's phase, except ``pending`` while the scheduler cannot place replicas
    of a stable or progressing app (it is not stable with 0 of 2 placed)."""
    if placement is not None and placement.unplaceable and app.phase in ("stable", "progressing"):
        return "pending"
    return app.phase


def ready_replicas(app: AppState, health: AppHealth | None) -> int:
    """Ready, non-terminating replicas of the app's current revision."""
    replicas = health.replicas if health else []
    return sum(1 for r in replicas if r.revision == app.revision and r.ready and not r.terminating)


def requested(assignment: NodeAssignment | None) -> tuple[float, int]:
    """CPU (rounded to 3 places) and memory the replicas assigned to a node request."""
    if assignment is None:
        return 0.0, 0
    specs = [assignment.specs.get(r.spec_key) for r in assignment.replicas]
    cpu = sum(s.resources.cpu for s in specs if s is not None)
    return round(cpu, 3), sum(s.resources.memory for s in specs if s is not None)
