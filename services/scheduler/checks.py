"""Feasibility checks: can this node take one more replica of this demand?

Each check is one small function ``(node, demand) -> reason | None``; the reason is the
text counted in "0/5 nodes fit: 3 insufficient memory, 2 constraint zone". ``CHECKS``
is the order they run in (the first failing check names a node's reason):

1. ``check_ready``        the node is ready, heard from, not lost "node offline" / "node not ready"
2. ``check_cordon``       no maintenance on it                    "node cordoned"
3. ``check_constraints``  its labels satisfy placement.constraints "constraint <label>"
4. ``check_max_per_node`` fewer than max_per_node of the app here  "max_per_node"
5. ``check_cpu``          requested cpu fits in what is left       "insufficient cpu"
6. ``check_memory``       requested memory fits in what is left    "insufficient memory"

Only ``check_constraints`` depends on the node's labels alone (static); the pipeline
filters by it once per constraint set and runs the dynamic checks per placement.
"""

from __future__ import annotations

from collections.abc import Callable

from services.scheduler.model import Demand, NodeView

Check = Callable[[NodeView, Demand], str | None]

#: tolerance for float sums of cpu requests (0.1 + 0.2 > 0.3)
EPSILON = 1e-9


def check_ready(node: NodeView, demand: Demand) -> str | None:
    if node.lost or node.status == "offline" or node.silent:
        return "node offline"
    if node.status != "ready":
        return "node not ready"
    return None


def check_cordon(node: NodeView, demand: Demand) -> str | None:
    return "node cordoned" if node.cordoned else None


def check_constraints(node: NodeView, demand: Demand) -> str | None:
    labels = node.labels
    for key, allowed in demand.constraints:
        if labels.get(key) not in allowed:
            return f"constraint {key}"
    return None


def check_max_per_node(node: NodeView, demand: Demand) -> str | None:
    limit = demand.max_per_node
    if limit is not None and node.apps.get(demand.app, 0) >= limit:
        return "max_per_node"
    return None


def check_cpu(node: NodeView, demand: Demand) -> str | None:
    if node.cpu_used + demand.cpu > node.cpu + EPSILON:
        return "insufficient cpu"
    return None


def check_memory(node: NodeView, demand: Demand) -> str | None:
    if node.mem_used + demand.memory > node.memory:
        return "insufficient memory"
    return None


CHECKS: tuple[Check, ...] = (
    check_ready,
    check_cordon,
    check_constraints,
    check_max_per_node,
    check_cpu,
    check_memory,
)

#: checks that depend on the node's labels only: applied once per constraint set
STATIC_CHECKS: tuple[Check, ...] = (check_constraints,)
#: checks that depend on the node's state: applied per placement
DYNAMIC_CHECKS: tuple[Check, ...] = tuple(c for c in CHECKS if c not in STATIC_CHECKS)


def first_failure(node: NodeView, demand: Demand, checks: tuple[Check, ...] = CHECKS) -> str | None:
    """The reason the node cannot take the demand, or None if it can."""
    for check in checks:
        reason = check(node, demand)
        if reason is not None:
            return reason
    return None


def fits(node: NodeView, demand: Demand) -> bool:
    """The dynamic checks, fused for the hot path; equal to ``first_failure(DYNAMIC) is None``
    (a unit test holds them to that)."""
    limit = demand.max_per_node
    return (
        node.status == "ready"
        and not node.lost
        and not node.silent
        and not node.cordoned
        and (limit is None or node.apps.get(demand.app, 0) < limit)
        and node.cpu_used + demand.cpu <= node.cpu + EPSILON
        and node.mem_used + demand.memory <= node.memory
    )
