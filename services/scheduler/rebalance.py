"""The rebalance plan: which replicas move where to even out the nodes (pure).

``plan_moves(nodes, demands, max_moves)`` simulates moves one at a time: the most loaded
node (``NodeView.load``, the mean of its CPU and memory shares) gives one replica to the
least loaded node that can take it, as long as the move lowers the higher of the two loads
(so every move narrows the spread, and the plan ends), until the spread between the most
and least loaded nodes is within ``tolerance`` or ``max_moves`` are planned. A move keeps
every rule placement keeps:

- the target passes every feasibility check (ready, not cordoned, labels satisfy the
  constraints, below ``max_per_node``, room for the requests);
- the app stays as spread as it was: the target holds fewer of the app's replicas than the
  source (anti-affinity), and with ``spread_by`` the move stays in its domain or goes to a
  domain with fewer of the app than the source's, less one (the domains stay balanced);
- replicas of ``binpack`` apps are never moved (packing is what they asked for), nor
  leaving ones (a drain already moves them), nor those of draining or unusable nodes.

The scheduler carries a move out as a drain does, one replica at a time: the replica is
marked leaving, its replacement is placed on the target, and the leaving one stops only
once the app has its ready count without it (``cluster.Cluster.move``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from core.keys import AppKey
from services.scheduler.checks import EPSILON, check_constraints
from services.scheduler.model import Demand, NodeView, Replica


@dataclass(frozen=True, slots=True)
class Move:
    replica: str
    app: AppKey
    source: str
    target: str
    reason: str


@dataclass(slots=True)
class _Sim:
    node: NodeView
    cpu_used: float
    mem_used: int
    apps: dict[AppKey, int]
    replicas: list[Replica] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.node.id

    def load_with(self, cpu: float = 0.0, memory: int = 0) -> float:
        node = self.node
        c = (self.cpu_used + cpu) / node.cpu if node.cpu > 0 else 1.0
        m = (self.mem_used + memory) / node.memory if node.memory > 0 else 1.0
        return (c + m) / 2

    @property
    def load(self) -> float:
        return self.load_with()


def _movable(replica: Replica, demand: Demand | None) -> bool:
    return not replica.leaving and demand is not None and demand.strategy != "binpack"


def _can_take(
    dst: _Sim, src: _Sim, replica: Replica, demand: Demand, domains: dict[str, int]
) -> bool:
    node = dst.node
    if not node.usable or node.cordoned or node.draining:
        return False
    if check_constraints(node, demand) is not None:
        return False
    here = dst.apps.get(replica.app_key, 0)
    if demand.max_per_node is not None and here >= demand.max_per_node:
        return False
    if here >= src.apps.get(replica.app_key, 0):  # anti-affinity: the app no less spread
        return False
    if (
        dst.cpu_used + replica.cpu > node.cpu + EPSILON
        or dst.mem_used + replica.memory > node.memory
    ):
        return False
    if demand.spread_by:
        have = src.node.labels.get(demand.spread_by, "")
        want = node.labels.get(demand.spread_by, "")
        if want != have and domains.get(want, 0) + 1 > domains.get(have, 0) - 1:
            return False
    return True


def plan_moves(
    nodes: Iterable[NodeView],
    demands: Mapping[tuple[AppKey, int], Demand],
    max_moves: int = 10,
    tolerance: float = 0.1,
) -> list[Move]:
    """At most ``max_moves`` moves that even out the usable nodes (see the module doc)."""
    sims = [
        _Sim(
            n,
            n.cpu_used,
            n.mem_used,
            dict(n.apps),
            sorted(n.replicas.values(), key=lambda r: (-r.cpu - r.memory / 2**30, r.id)),
        )
        for n in nodes
        if n.usable and not n.draining
    ]
    domains: dict[AppKey, dict[str, int]] = {}
    for (app, _), known in demands.items():
        domains.setdefault(app, dict(known.domains))
    moves: list[Move] = []
    moved: set[str] = set()
    while len(moves) < max_moves and len(sims) > 1:
        ordered = sorted(sims, key=lambda s: (s.load, s.id))
        if ordered[-1].load - ordered[0].load <= tolerance + EPSILON:
            break
        found: tuple[_Sim, Replica, _Sim] | None = None
        for src in reversed(ordered):
            before = src.load
            for replica in src.replicas:
                demand = demands.get((replica.app_key, replica.revision))
                if replica.id in moved or demand is None or not _movable(replica, demand):
                    continue
                after_src = src.load_with(-replica.cpu, -replica.memory)
                app_domains = domains.get(replica.app_key, {})
                for dst in ordered:
                    if dst is src:
                        continue
                    if dst.load >= before:
                        break
                    if (
                        max(after_src, dst.load_with(replica.cpu, replica.memory))
                        >= before - EPSILON
                    ):
                        continue
                    if _can_take(dst, src, replica, demand, app_domains):
                        found = (src, replica, dst)
                        break
                if found:
                    break
            if found:
                break
        if found is None:
            break
        src, replica, dst = found
        reason = (
            f"{src.id} {src.load:.0%} allocated -> {dst.id} {dst.load:.0%} "
            f"(after: {src.load_with(-replica.cpu, -replica.memory):.0%} / "
            f"{dst.load_with(replica.cpu, replica.memory):.0%})"
        )
        moves.append(Move(replica.id, replica.app_key, src.id, dst.id, reason))
        moved.add(replica.id)
        src.replicas.remove(replica)
        dst.replicas.append(replica)
        src.cpu_used -= replica.cpu
        src.mem_used -= replica.memory
        dst.cpu_used += replica.cpu
        dst.mem_used += replica.memory
        src.apps[replica.app_key] -= 1
        dst.apps[replica.app_key] = dst.apps.get(replica.app_key, 0) + 1
        spread_by = demands[(replica.app_key, replica.revision)].spread_by
        if spread_by:
            counts = domains.setdefault(replica.app_key, {})
            have = src.node.labels.get(spread_by, "")
            want = dst.node.labels.get(spread_by, "")
            counts[have] = counts.get(have, 0) - 1
            counts[want] = counts.get(want, 0) + 1
    return moves
