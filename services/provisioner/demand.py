"""From the bus's retained state to what ``decide`` reads: pending demand and node use.

Pure: plain functions over the wire models (``SchedulerStatus``, ``AppState``,
``NodeInfo``, ``NodeAssignment``, ``NodeCordon``).
"""

from __future__ import annotations

from collections.abc import Mapping

from core.keys import AppKey
from core.spec import AppSpec
from core.state import (
    AppState,
    NodeAssignment,
    NodeCordon,
    NodeInfo,
    NodeReplicas,
    SchedulerStatus,
)
from services.provisioner.decide import Load, NodeUse, Pending


def _constraints(spec: AppSpec) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple(sorted((k, tuple(v)) for k, v in spec.placement.constraints.items()))


def pending_demand(
    statuses: Mapping[AppKey, SchedulerStatus], apps: Mapping[AppKey, AppState]
) -> list[Pending]:
    """Every app with unplaceable replicas, with the requests of its newest revision."""
    out: list[Pending] = []
    for key, status in sorted(statuses.items(), key=lambda kv: str(kv[0])):
        app = apps.get(key)
        if status.unplaceable <= 0 or app is None:
            continue
        newest = max(app.versions, key=lambda v: v.revision, default=None)
        spec = newest.spec if newest is not None else app.spec
        out.append(
            Pending(
                app=str(key),
                count=status.unplaceable,
                cpu=spec.resources.cpu,
                memory=spec.resources.memory,
                max_per_node=spec.placement.max_per_node,
                constraints=_constraints(spec),
                reason=status.message,
            )
        )
    return out


def node_use(
    infos: Mapping[str, NodeInfo],
    assignments: Mapping[str, NodeAssignment],
    cordons: Mapping[str, NodeCordon],
    prices: Mapping[str, float],
    reports: Mapping[str, NodeReplicas] | None = None,
) -> list[NodeUse]:
    """Every node that reported itself, with what is assigned to it and what its agent
    still runs (``reports``); ``prices`` holds the nodes the provider made (owned) and what
    each costs per hour."""
    out: list[NodeUse] = []
    for node_id, info in sorted(infos.items()):
        assignment = assignments.get(node_id)
        loads: list[Load] = []
        if assignment is not None:
            for replica in assignment.replicas:
                spec = assignment.specs.get(replica.spec_key)
                if spec is None:
                    continue
                loads.append(
                    Load(
                        app=f"{replica.namespace}/{replica.app}",
                        cpu=spec.resources.cpu,
                        memory=spec.resources.memory,
                        max_per_node=spec.placement.max_per_node,
                        constraints=_constraints(spec),
                    )
                )
        cordon = cordons.get(node_id)
        report = (reports or {}).get(node_id)
        out.append(
            NodeUse(
                id=node_id,
                cpu=info.capacity.cpu,
                memory=info.capacity.memory,
                loads=tuple(loads),
                labels=tuple(sorted(info.labels.items())),
                ready=info.status == "ready",
                cordoned=cordon is not None,
                draining=cordon is not None and cordon.drain,
                owned=node_id in prices,
                price=prices.get(node_id, 0.0),
                running=len(report.replicas) if report is not None else 0,
            )
        )
    return out
