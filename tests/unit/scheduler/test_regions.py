"""``placement.regions``: a minimum per reachable region, the cut region's share placed
elsewhere, and one move back when the region returns (``regions.py`` through ``Cluster``)."""

from __future__ import annotations

from collections import Counter

import pytest
from pydantic import ValidationError

from core.keys import AppKey
from core.spec import AppSpec, Placement
from services.scheduler.cluster import Cluster
from services.scheduler.regions import (
    reachable_regions,
    region_counts,
    short_regions,
    surplus_victim,
    with_regions,
)
from tests.unit.scheduler.helpers import app_state, node_info, view

WEB = AppKey("default", "web")
MIN1 = {"regions": {"min_per_region": 1}}


def regional_cluster(eu: int = 3, us: int = 1, *, lost_grace: float = 20.0) -> Cluster:
    cluster = Cluster(seed=0)
    cluster.lost_grace = lost_grace
    for i in range(eu):
        cluster.upsert_node(node_info(f"eu{i}", region="eu"), seen=0.0)
    for i in range(us):
        cluster.upsert_node(node_info(f"us{i}", region="us"), seen=0.0)
    return cluster


def per_region(cluster: Cluster, *, leaving: bool = False) -> Counter[str]:
    return Counter(
        cluster.nodes[r.node].labels["region"]
        for r in cluster.replicas.values()
        if leaving or not r.leaving
    )


def reconcile(cluster: Cluster, state: object | None = None, now: float = 0.0) -> object:
    if state is not None:
        cluster.set_app(WEB, state)  # type: ignore[arg-type]
    return cluster.reconcile(WEB, now)


# -- the spec -----------------------------------------------------------------------------


def test_regions_imply_spreading_over_the_region_label() -> None:
    assert Placement(regions={"min_per_region": 2}).spread_label == "region"  # type: ignore[arg-type]
    assert Placement(spread_by="zone", regions={}).spread_label == "zone"  # type: ignore[arg-type]
    assert Placement().spread_label is None


def test_a_minimum_below_one_or_an_unknown_field_is_refused() -> None:
    for bad in ({"min_per_region": 0}, {"min_per_region": 1, "per_region": 2}):
        with pytest.raises(ValidationError):
            AppSpec(name="web", image="x:1", placement={"regions": bad})  # type: ignore[arg-type]


# -- the pure functions -------------------------------------------------------------------


def test_reachable_regions_are_those_with_a_usable_uncordoned_node() -> None:
    nodes = [
        view("a", region="eu"),
        view("b", status="offline", region="us"),
        view("c", region="ap"),
        view("d"),
    ]
    nodes[2].cordoned = True
    assert reachable_regions(nodes) == {"eu"}


def test_short_regions_and_the_narrowed_constraints() -> None:
    assert short_regions({"eu": 3, "us": 0}, {"eu", "us", "ap"}, 1) == {"us", "ap"}
    assert short_regions({"eu": 2, "us": 2}, {"eu", "us"}, 2) == frozenset()
    assert with_regions((("disk", frozenset({"ssd"})),), {"us"}) == (
        ("disk", frozenset({"ssd"})),
        ("region", frozenset({"us"})),
    )
    # a region constraint of the app itself is intersected, never widened
    assert with_regions((("region", frozenset({"eu", "us"})),), {"us", "ap"}) == (
        ("region", frozenset({"us"})),
    )


def test_the_victim_comes_from_the_region_holding_the_most() -> None:
    cluster = regional_cluster(eu=2, us=2)
    reconcile(cluster, app_state("web", 5, **MIN1))
    counts = region_counts(cluster.replicas.values(), cluster.nodes)
    assert sorted(counts.values()) == [2, 3]
    victim = surplus_victim(cluster.replicas.values(), cluster.nodes, counts, 1)
    assert victim is not None
    fullest = max(counts, key=lambda r: counts[r])
    assert cluster.nodes[victim.node].labels["region"] == fullest
    assert surplus_victim(cluster.replicas.values(), cluster.nodes, counts, 3) is None


# -- placement ----------------------------------------------------------------------------


def test_every_region_gets_its_minimum_first() -> None:
    # three eu nodes, one us node: plain spreading over nodes would put 1 of 3 in us at
    # best; the minimum puts 2 there
    cluster = regional_cluster(eu=3, us=1)
    reconcile(cluster, app_state("web", 4, regions={"min_per_region": 2}))
    assert per_region(cluster) == {"eu": 2, "us": 2}


def test_beyond_the_minimum_the_app_stays_balanced_over_regions() -> None:
    cluster = regional_cluster(eu=3, us=3)
    reconcile(cluster, app_state("web", 6, **MIN1))
    assert per_region(cluster) == {"eu": 3, "us": 3}


def test_a_full_region_does_not_stop_the_app() -> None:
    cluster = Cluster(seed=0)
    cluster.upsert_node(node_info("eu0", region="eu"), seen=0.0)
    cluster.upsert_node(node_info("us0", cpu=0.5, region="us"), seen=0.0)
    out = reconcile(cluster, app_state("web", 4, cpu=1, **MIN1))
    assert per_region(cluster) == {"eu": 4}
    assert not out.unplaceable  # type: ignore[attr-defined]


def test_the_minimum_honours_the_apps_constraints() -> None:
    cluster = regional_cluster(eu=2, us=2)
    reconcile(cluster, app_state("web", 3, constraints={"region": "eu"}, **MIN1))
    assert per_region(cluster) == {"eu": 3}


# -- a region cut off, then back ----------------------------------------------------------


def cut_us(cluster: Cluster, now: float) -> None:
    """Every node but the us ones keeps sending heartbeats until ``now``."""
    for node in cluster.nodes.values():
        if node.labels["region"] != "us":
            cluster.upsert_node(node_info(node.id, region="eu"), seen=now)


def test_a_cut_region_keeps_its_replicas_while_ready_then_its_share_moves() -> None:
    cluster = regional_cluster(eu=2, us=2)
    reconcile(cluster, app_state("web", 4, **MIN1))
    assert per_region(cluster) == {"eu": 2, "us": 2}
    us_ids = {r.id for r in cluster.replicas.values() if r.node.startswith("us")}
    cluster.set_ready(WEB, set(cluster.replicas))

    cut_us(cluster, now=10.0)
    lost, affected = cluster.expire(10.0, grace=6.0)
    assert lost == []
    assert affected == {WEB}
    out = reconcile(cluster, now=10.0)
    assert not out.changed  # type: ignore[attr-defined]  # unreachable, still ready: kept

    cut_us(cluster, now=21.0)
    lost, _ = cluster.expire(21.0, grace=6.0)
    assert sorted(lost) == ["us0", "us1"]
    out = reconcile(cluster, now=21.0)
    assert per_region(cluster) == {"eu": 4}  # us is not reachable: eu takes its share
    assert not out.unplaceable  # type: ignore[attr-defined]
    assert not us_ids & set(cluster.replicas)
    assert cluster.assignment("us0").replicas == []


def test_a_returning_region_gets_its_minimum_back_one_move_at_a_time() -> None:
    cluster = regional_cluster(eu=2, us=1)
    reconcile(cluster, app_state("web", 3, **MIN1))
    cluster.set_ready(WEB, set(cluster.replicas))
    cut_us(cluster, now=21.0)
    cluster.expire(21.0, grace=6.0)
    reconcile(cluster, now=21.0)
    assert per_region(cluster) == {"eu": 3}
    cluster.set_ready(WEB, set(cluster.replicas))

    affected = cluster.upsert_node(node_info("us0", region="us"), seen=22.0)
    assert WEB in affected  # a region reachable again: the app is reconciled
    out = reconcile(cluster, now=22.0)
    assert [cluster.nodes[r.node].labels["region"] for r in out.placed] == ["us"]  # type: ignore[attr-defined]
    assert per_region(cluster) == {"eu": 2, "us": 1}
    [leaving] = [r for r in cluster.replicas.values() if r.leaving]
    assert cluster.nodes[leaving.node].labels["region"] == "eu"
    assert len(cluster.replicas) == 4  # surge: the leaving one waits for the new one

    # not ready yet: the leaving replica stays, and no second move starts
    again = reconcile(cluster, now=22.5)
    assert not again.changed  # type: ignore[attr-defined]

    cluster.set_ready(WEB, set(cluster.replicas))
    done = reconcile(cluster, now=23.0)
    assert done.removed == [leaving]  # type: ignore[attr-defined]
    assert per_region(cluster, leaving=True) == {"eu": 2, "us": 1}
    assert not reconcile(cluster, now=24.0).changed  # type: ignore[attr-defined]


def test_no_move_when_no_region_holds_more_than_the_minimum() -> None:
    cluster = regional_cluster(eu=1, us=1)
    reconcile(cluster, app_state("web", 1, **MIN1))
    cluster.upsert_node(node_info("ap0", region="ap"), seen=0.0)
    assert not reconcile(cluster).changed  # type: ignore[attr-defined]
    assert len(cluster.replicas) == 1
