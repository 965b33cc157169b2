"""The rebalance plan (pure) and its moves through ``Cluster`` (surge, then remove)."""

from __future__ import annotations

from collections import Counter

import pytest

from core.keys import AppKey
from services.scheduler.cluster import Cluster
from tests.unit.scheduler.helpers import GI, MI, app_state, node_info

WEB = AppKey("default", "web")
API = AppKey("default", "api")


def cluster_with(*infos: object) -> Cluster:
    cluster = Cluster(seed=0)
    for info in infos:
        cluster.upsert_node(info, seen=0.0)  # type: ignore[arg-type]
    return cluster


def apply(cluster: Cluster, *states: object) -> None:
    for state in states:
        key = AppKey(state.namespace, state.name)  # type: ignore[attr-defined]
        cluster.set_app(key, state)  # type: ignore[arg-type]
        cluster.reconcile(key)


def per_node(cluster: Cluster, app: AppKey | None = None) -> Counter[str]:
    return Counter(r.node for r in cluster.replicas.values() if app is None or r.app_key == app)


def crowded(*extra: object, replicas: int = 4, **placement: object) -> Cluster:
    """Every replica on n1 (the only node at first), then the nodes of ``extra`` join."""
    cluster = cluster_with(node_info("n1", zone="a"))
    apply(cluster, app_state("web", replicas, cpu=0.5, memory=256 * MI, **placement))
    for info in extra:
        cluster.upsert_node(info, seen=0.0)  # type: ignore[arg-type]
    return cluster


def test_nothing_to_do_on_even_nodes() -> None:
    cluster = cluster_with(node_info("n1"), node_info("n2"))
    apply(cluster, app_state("web", 4))
    assert per_node(cluster) == Counter({"n1": 2, "n2": 2})
    assert cluster.rebalance_plan(10) == []


def test_a_joined_node_gets_half() -> None:
    cluster = crowded(node_info("n2", zone="a"))
    moves = cluster.rebalance_plan(10)
    assert [(m.source, m.target) for m in moves] == [("n1", "n2"), ("n1", "n2")]
    assert len({m.replica for m in moves}) == 2
    assert all("->" in m.reason for m in moves)


def test_bounded_number_of_moves() -> None:
    cluster = crowded(node_info("n2"), node_info("n3"), replicas=6)
    assert len(cluster.rebalance_plan(1)) == 1
    assert len(cluster.rebalance_plan(10)) == 4  # 6 -> 2 / 2 / 2


@pytest.mark.parametrize(
    ("placement", "joined", "expect"),
    [
        ({"constraints": {"zone": "a"}}, node_info("n2", zone="b"), 0),  # labels
        ({"strategy": "binpack"}, node_info("n2", zone="a"), 0),  # packing asked for
        ({"spread_by": "zone"}, node_info("n2", zone="a"), 2),  # same domain: fine
        ({}, node_info("n2", cpu=0.4), 0),  # no room for 0.5 cpu
        ({}, node_info("n2", status="not_ready"), 0),
    ],
)
def test_moves_keep_placement_rules(
    placement: dict[str, object], joined: object, expect: int
) -> None:
    cluster = crowded(joined, **placement)
    assert len(cluster.rebalance_plan(10)) == expect


def test_spread_by_never_unbalances_domains() -> None:
    cluster = cluster_with(node_info("a1", zone="a"), node_info("b1", zone="b"))
    apply(cluster, app_state("web", 2, spread_by="zone"))
    cluster.upsert_node(node_info("b2", zone="b"), seen=0.0)
    # another app loads a1 so it is the most loaded node
    apply(cluster, app_state("api", 1, cpu=2.0, memory=4 * GI, constraints={"zone": "a"}))
    moves = cluster.rebalance_plan(10)
    for m in moves:
        if m.app == WEB:
            assert cluster.nodes[m.target].labels["zone"] == cluster.nodes[m.source].labels["zone"]


def test_max_per_node_is_kept() -> None:
    # web: 2 per node at most, on n1 and n2 (full of web); n3 joins holding 2 already
    cluster = cluster_with(node_info("n1", cpu=8), node_info("n2", cpu=1, memory=GI))
    apply(cluster, app_state("web", 3, cpu=0.5, memory=128 * MI, max_per_node=2))
    moves = cluster.rebalance_plan(10)
    counts = per_node(cluster, WEB)
    for m in moves:
        counts[m.source] -= 1
        counts[m.target] += 1
    assert max(counts.values()) <= 2


def test_a_cordoned_node_is_no_target() -> None:
    cluster = crowded(node_info("n2"))
    cluster.set_cordon("n2", True)
    assert cluster.rebalance_plan(10) == []


def test_moves_surge_then_remove_once_ready() -> None:
    cluster = crowded(node_info("n2"))
    cluster.set_ready(WEB, set(cluster.replicas))
    moves = cluster.rebalance_plan(10)
    assert cluster.move(moves) == {WEB}
    out = cluster.reconcile(WEB)
    assert sorted(r.node for r in out.placed) == ["n2", "n2"]  # on the plan's target
    assert out.removed == []  # the replacements are not ready yet: the old ones stay
    status = cluster.status(WEB)
    assert status is not None
    assert (status.placed, status.leaving) == (4, 2)
    cluster.set_ready(WEB, set(cluster.replicas))
    out = cluster.reconcile(WEB)
    assert sorted(r.id for r in out.removed) == sorted(m.replica for m in moves)
    assert per_node(cluster) == Counter({"n1": 2, "n2": 2})
    assert cluster.rebalance_plan(10) == []


def test_a_stale_move_is_skipped_and_a_lost_target_placed_as_usual() -> None:
    cluster = crowded(node_info("n2"), node_info("n3"))
    moves = cluster.rebalance_plan(1)
    (move,) = moves
    stale = type(move)(move.replica, move.app, "elsewhere", move.target, move.reason)
    assert cluster.move([stale]) == set()
    cluster.set_cordon(move.target, True)  # the target cannot take it any more
    cluster.set_ready(WEB, set(cluster.replicas))
    assert cluster.move(moves) == {WEB}
    out = cluster.reconcile(WEB)
    (placed,) = out.placed
    assert placed.node != move.target
    assert cluster.move_targets == {}
