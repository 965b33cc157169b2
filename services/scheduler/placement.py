"""The placement pipeline: feasible nodes, scored, one selected; and why nothing fit.

For one replica, ``select`` walks the nodes that pass the static checks (labels) in a
seeded, shuffled order, starting where the previous walk of the same ring stopped
(replayable: the same inputs and seed give the same placements):

1. dynamic feasibility (``checks.fits``: ready, not cordoned, max_per_node, cpu, memory);
2. stop after ``limit`` feasible nodes (bounded search: about log2(n), as Nomad does;
   a small cluster is searched whole);
3. score each feasible node with the demand's weighted scorers (``scorers.scorers_for``;
   topology spread is relative to the emptiest domain among these candidates);
4. the highest score wins; on a tie, the node met first in the walk (deterministic).

When nothing fits, ``explain`` runs every check on every node and counts the first
failure of each: "0/5 nodes fit: 3 insufficient memory, 2 constraint zone".
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from services.scheduler.checks import CHECKS, first_failure, fits
from services.scheduler.model import Demand, NodeView, Replica
from services.scheduler.scorers import Scorer


@dataclass(slots=True, eq=False)
class NodeRing:
    """Nodes in walk order and where the next walk starts."""

    nodes: list[NodeView]
    pos: int = 0


def candidate_limit(n: int, configured: int | None = None) -> int:
    """How many feasible nodes to score: ``configured``, else max(8, ceil(log2 n))."""
    if configured is not None:
        return max(1, configured)
    if n <= 8:
        return max(1, n)
    return max(8, math.ceil(math.log2(n)))


def select(ring: NodeRing, demand: Demand, score: Scorer, limit: int) -> NodeView | None:
    """The best of up to ``limit`` feasible nodes of the ring by ``score`` (see above)."""
    nodes = ring.nodes
    n = len(nodes)
    if n == 0:
        return None
    start = ring.pos
    feasible: list[NodeView] = []
    visited = 0
    # Two slices instead of a modulo per step: from the cursor to the end, then the head.
    for segment in (range(start, n), range(start)):
        for i in segment:
            node = nodes[i]
            visited += 1
            if fits(node, demand):
                feasible.append(node)
                if len(feasible) >= limit:
                    break
        else:
            continue
        break
    ring.pos = (start + visited) % n
    if not feasible:
        return None
    if demand.spread_by is not None:
        key, domains = demand.spread_by, demand.domains
        demand.domain_floor = min(
            (domains.get(d, 0) for nd in feasible if (d := nd.labels.get(key)) is not None),
            default=0,
        )
    best = feasible[0]
    best_score = -1.0
    for node in feasible:
        value = score(node, demand)
        if value > best_score:
            best, best_score = node, value
    return best


@dataclass(frozen=True, slots=True)
class Unplaceable:
    """Replicas of one app revision that no node can take right now, and why."""

    revision: int
    count: int
    nodes: int
    reasons: Mapping[str, int] = field(default_factory=dict)

    @property
    def message(self) -> str:
        return f"{self.count} unplaceable: {format_reasons(self.nodes, self.reasons)}"


def explain(nodes: Iterable[NodeView], demand: Demand) -> tuple[int, dict[str, int]]:
    """(number of nodes, first failing reason counted per node) for a demand."""
    counts: Counter[str] = Counter()
    total = 0
    for node in nodes:
        total += 1
        reason = first_failure(node, demand, CHECKS)
        if reason is not None:
            counts[reason] += 1
    return total, dict(counts)


def format_reasons(nodes: int, reasons: Mapping[str, int]) -> str:
    """``0/5 nodes fit: 3 insufficient memory, 2 constraint zone`` (most frequent first)."""
    fit = nodes - sum(reasons.values())
    parts = [f"{n} {r}" for r, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))]
    text = f"{fit}/{nodes} nodes fit"
    return f"{text}: {', '.join(parts)}" if parts else text


def removal_order(
    replicas: Iterable[Replica],
    nodes: Mapping[str, NodeView],
    count: int,
    *,
    spread_by: str | None = None,
    domains: Mapping[str, int] | None = None,
) -> list[Replica]:
    """Which ``count`` replicas to stop when an app scales down.

    Replicas on unusable nodes go first; then, with ``spread_by``, those in the domain
    holding most of the app; then those on the most loaded node; then on the node with most
    replicas of the app; the replica id breaks ties. Chosen one at a time, so each pick sees
    the counts left by the previous ones (a lazy heap: a removal only makes the others on
    its node or domain less eligible, so a stale key is never too pessimistic).
    """
    pool = list(replicas)
    if count >= len(pool):
        return sorted(pool, key=lambda r: r.id)
    dom = dict(domains or {})
    per_node: Counter[str] = Counter(r.node for r in pool)
    load = {r.node: _load(nodes.get(r.node)) for r in pool}

    def key(r: Replica) -> tuple[bool, int, float, int, str]:
        node = nodes.get(r.node)
        usable = node is not None and node.usable
        domain = node.labels.get(spread_by) if node is not None and spread_by else None
        return (
            usable,
            -dom.get(domain, 0) if domain is not None else 0,
            -load[r.node],
            -per_node[r.node],
            r.id,
        )

    heap = [(key(r), i) for i, r in enumerate(pool)]
    heapq.heapify(heap)
    chosen: list[Replica] = []
    while len(chosen) < count:
        stored, i = heapq.heappop(heap)
        victim = pool[i]
        current = key(victim)
        if current != stored:
            heapq.heappush(heap, (current, i))
            continue
        chosen.append(victim)
        per_node[victim.node] -= 1
        node = nodes.get(victim.node)
        if node is not None and spread_by:
            domain = node.labels.get(spread_by)
            if domain is not None:
                dom[domain] = dom.get(domain, 0) - 1
        if node is not None and node.cpu > 0 and node.memory > 0:
            load[victim.node] -= (victim.cpu / node.cpu + victim.memory / node.memory) / 2
    return chosen


def _load(node: NodeView | None) -> float:
    return node.load if node is not None else 0.0
