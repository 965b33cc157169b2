"""Scorers: how good is this feasible node for one more replica of this demand?

Each scorer is one small function ``(node, demand) -> float`` in [0, 1] (1 = best) and has
a name; ``scorers_for`` assembles the weighted set for a demand in one place:

- ``spread`` (strategy spread, weight 1): least allocated after placing. Keeps headroom on
  every node and spreads the blast radius of a lost node.
- ``binpack`` (strategy binpack, weight 1): most allocated after placing. Fills nodes so
  that others stay empty (cost: fewer machines).
- ``anti_affinity`` (weight 1 with spread, 0.25 with binpack): 1 / (1 + replicas of the
  app already on the node); with binpack it only breaks ties between equally full nodes.
- ``topology`` (only with ``placement.spread_by``, weight 2): 1 / (1 + how many more
  replicas of the app the node's domain (its value of the ``spread_by`` label, e.g. its
  zone) holds than the emptiest domain among the candidates); nodes without the label
  score 0. A domain one replica ahead loses 1 point of 2: more than any allocation score
  can make up, so zones stay balanced within about one replica.
"""

from __future__ import annotations

from collections.abc import Callable

from services.scheduler.model import Demand, NodeView

Scorer = Callable[[NodeView, Demand], float]


def _allocated_after(node: NodeView, demand: Demand) -> float:
    cpu = (node.cpu_used + demand.cpu) / node.cpu if node.cpu > 0 else 1.0
    mem = (node.mem_used + demand.memory) / node.memory if node.memory > 0 else 1.0
    return min(1.0, (cpu + mem) / 2)


def score_spread(node: NodeView, demand: Demand) -> float:
    return 1.0 - _allocated_after(node, demand)


def score_binpack(node: NodeView, demand: Demand) -> float:
    return _allocated_after(node, demand)


def score_anti_affinity(node: NodeView, demand: Demand) -> float:
    return 1.0 / (1 + node.apps.get(demand.app, 0))


def score_topology(node: NodeView, demand: Demand) -> float:
    key = demand.spread_by
    if key is None:
        return 1.0
    domain = node.labels.get(key)
    if domain is None:
        return 0.0
    ahead = demand.domains.get(domain, 0) - demand.domain_floor
    return 1.0 / (1 + ahead) if ahead > 0 else 1.0


WeightedScorer = tuple[str, Scorer, float]


def scorers_for(strategy: str, spread_by: str | None) -> tuple[WeightedScorer, ...]:
    """The named, weighted scorers for one demand (see the module docstring)."""
    if strategy == "binpack":
        chosen: list[WeightedScorer] = [
            ("binpack", score_binpack, 1.0),
            ("anti_affinity", score_anti_affinity, 0.25),
        ]
    else:
        chosen = [("spread", score_spread, 1.0), ("anti_affinity", score_anti_affinity, 1.0)]
    if spread_by is not None:
        chosen.append(("topology", score_topology, 2.0))
    return tuple(chosen)


def total_score(node: NodeView, demand: Demand, scorers: tuple[WeightedScorer, ...]) -> float:
    return sum(weight * scorer(node, demand) for _, scorer, weight in scorers)


def explain_scores(
    node: NodeView, demand: Demand, scorers: tuple[WeightedScorer, ...]
) -> dict[str, float]:
    """Each named score of a node, for traces and tests."""
    return {name: scorer(node, demand) for name, scorer, _ in scorers}


def fused(strategy: str, spread_by: str | None) -> Scorer:
    """``total_score`` with ``scorers_for(strategy, spread_by)``, as one function for the
    hot path (a unit test holds the two equal). Same arithmetic, no per-scorer calls."""
    binpack = strategy == "binpack"
    affinity = 0.25 if binpack else 1.0

    def score(node: NodeView, demand: Demand) -> float:
        cpu = (node.cpu_used + demand.cpu) / node.cpu if node.cpu > 0 else 1.0
        mem = (node.mem_used + demand.memory) / node.memory if node.memory > 0 else 1.0
        allocated = (cpu + mem) / 2
        if allocated > 1.0:
            allocated = 1.0
        total = (allocated if binpack else 1.0 - allocated) + affinity / (
            1 + node.apps.get(demand.app, 0)
        )
        if spread_by is not None:
            domain = node.labels.get(spread_by)
            if domain is not None:
                ahead = demand.domains.get(domain, 0) - demand.domain_floor
                total += 2.0 / (1 + ahead) if ahead > 0 else 2.0
        return total

    return score
