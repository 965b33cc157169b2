"""Selection, bounded search, reasons and scale-down order."""

from __future__ import annotations

from collections import Counter

from core.keys import AppKey
from services.scheduler.model import Replica
from services.scheduler.placement import (
    NodeRing,
    Unplaceable,
    candidate_limit,
    explain,
    format_reasons,
    removal_order,
    select,
)
from services.scheduler.scorers import fused
from tests.unit.scheduler.helpers import GI, MI, demand, view

SPREAD = fused("spread", None)


def test_candidate_limit() -> None:
    assert candidate_limit(1) == 1
    assert candidate_limit(5) == 5  # small clusters are searched whole
    assert candidate_limit(16) == 8
    assert candidate_limit(5000) == 13
    assert candidate_limit(5000, configured=3) == 3


def test_select_takes_the_best_score_and_skips_infeasible_nodes() -> None:
    full = view("full", cpu=1, cpu_used=1)
    busy = view("busy", cpu=4, cpu_used=3)
    idle = view("idle", cpu=4)
    ring = NodeRing([full, busy, idle])
    chosen = select(ring, demand(cpu=0.5), SPREAD, limit=3)
    assert chosen is idle


def test_select_breaks_ties_by_walk_order_and_moves_on() -> None:
    nodes = [view(f"n{i}") for i in range(4)]
    ring = NodeRing(nodes)
    first = select(ring, demand(), SPREAD, limit=1)
    second = select(ring, demand(), SPREAD, limit=1)
    assert (first, second) == (nodes[0], nodes[1])  # equal scores: the walk order decides
    assert ring.pos == 2


def test_select_is_bounded_by_the_limit() -> None:
    nodes = [view(f"n{i}", cpu=4, cpu_used=3 - i * 0.5) for i in range(4)]  # n3 is emptiest
    ring = NodeRing(nodes)
    assert select(ring, demand(), SPREAD, limit=2) is nodes[1]
    assert ring.pos == 2


def test_select_wraps_around_the_ring() -> None:
    nodes = [view("a"), view("b", cpu=0.1), view("c")]
    ring = NodeRing(nodes, pos=2)
    assert select(ring, demand(), SPREAD, limit=2) is nodes[2]
    assert ring.pos == 1  # visited c, a: the next walk starts at b


def test_select_without_any_fit() -> None:
    ring = NodeRing([view("a", cpu=0.1)])
    assert select(ring, demand(cpu=1), SPREAD, limit=5) is None
    assert select(NodeRing([]), demand(), SPREAD, limit=5) is None


def test_select_sets_the_domain_floor_from_the_candidates() -> None:
    nodes = [view("a", zone="a"), view("b", zone="b"), view("c", zone="c")]
    d = demand(spread_by="zone", domains={"a": 5, "b": 4, "c": 6})
    chosen = select(NodeRing(nodes), d, fused("spread", "zone"), limit=3)
    assert chosen is nodes[1]
    assert d.domain_floor == 4


def test_explain_counts_the_first_failure_per_node() -> None:
    nodes = [
        view("a", memory=128 * MI, zone="a"),
        view("b", memory=128 * MI, zone="a"),
        view("c", memory=128 * MI, zone="a"),
        view("d", zone="x"),
        view("e", zone="y"),
    ]
    total, reasons = explain(nodes, demand(memory=256 * MI, constraints={"zone": ["a"]}))
    assert total == 5
    assert reasons == {"insufficient memory": 3, "constraint zone": 2}
    assert format_reasons(total, reasons) == (
        "0/5 nodes fit: 3 insufficient memory, 2 constraint zone"
    )


def test_unplaceable_message() -> None:
    problem = Unplaceable(revision=1, count=2, nodes=3, reasons={"node cordoned": 3})
    assert problem.message == "2 unplaceable: 0/3 nodes fit: 3 node cordoned"
    assert format_reasons(0, {}) == "0/0 nodes fit"


def replica(rid: str, node: str, cpu: float = 0.5) -> Replica:
    return Replica(rid, AppKey("default", "web"), 1, node, cpu, 256 * MI)


def test_removal_takes_the_most_loaded_nodes_first() -> None:
    nodes = {
        "light": view("light", cpu=4, memory=4 * GI, cpu_used=1, mem_used=512 * MI),
        "heavy": view("heavy", cpu=4, memory=4 * GI, cpu_used=3.5, mem_used=3 * GI),
    }
    pool = [replica("r1", "light"), replica("r2", "heavy"), replica("r3", "heavy")]
    assert [r.id for r in removal_order(pool, nodes, 1)] == ["r2"]
    # each pick sees the load it leaves behind: heavy drops to light's level, then below
    assert {r.id for r in removal_order(pool, nodes, 2)} == {"r2", "r3"}


def test_removal_prefers_unusable_nodes_then_the_fullest_domain() -> None:
    nodes = {
        "a1": view("a1", zone="a"),
        "a2": view("a2", zone="a"),
        "b1": view("b1", zone="b", cpu_used=3),
        "gone": view("gone", status="offline", zone="b"),
    }
    pool = [replica("r1", "a1"), replica("r2", "a2"), replica("r3", "b1"), replica("r4", "gone")]
    picked = removal_order(pool, nodes, 2, spread_by="zone", domains={"a": 2, "b": 2})
    assert picked[0].id == "r4"
    assert picked[1].node in ("a1", "a2")  # zone a now has more replicas than zone b


def test_removal_of_everything() -> None:
    pool = [replica("r2", "x"), replica("r1", "y")]
    assert [r.id for r in removal_order(pool, {}, 5)] == ["r1", "r2"]


def test_removal_matches_one_at_a_time_selection() -> None:
    """The lazy heap picks exactly what re-sorting after every pick would."""
    nodes = {
        f"n{i}": view(f"n{i}", cpu=4, memory=4 * GI, zone="abc"[i % 3], cpu_used=i * 0.3)
        for i in range(9)
    }
    pool = [replica(f"r{j:02d}", f"n{j % 9}", cpu=0.1 * (1 + j % 4)) for j in range(40)]
    domains = dict(Counter(nodes[r.node].labels["zone"] for r in pool))
    picked = removal_order(pool, nodes, 25, spread_by="zone", domains=domains)

    left, dom, chosen = list(pool), dict(domains), []
    per_node = Counter(r.node for r in pool)
    load = {n: v.load for n, v in nodes.items()}
    for _ in range(25):
        victim = min(
            left,
            key=lambda r: (
                True,
                -dom[nodes[r.node].labels["zone"]],
                -load[r.node],
                -per_node[r.node],
                r.id,
            ),
        )
        left.remove(victim)
        chosen.append(victim)
        dom[nodes[victim.node].labels["zone"]] -= 1
        per_node[victim.node] -= 1
        load[victim.node] -= (victim.cpu / 4 + victim.memory / (4 * GI)) / 2
    assert [r.id for r in picked] == [r.id for r in chosen]
    after = Counter(nodes[r.node].labels["zone"] for r in pool if r not in picked)
    assert max(after.values()) - min(after.values()) <= 1
