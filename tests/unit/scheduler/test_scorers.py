"""Each scorer alone, and how they are assembled per strategy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.keys import AppKey
from services.scheduler.scorers import (
    explain_scores,
    fused,
    score_anti_affinity,
    score_binpack,
    score_spread,
    score_topology,
    scorers_for,
    total_score,
)
from tests.unit.scheduler.helpers import GI, demand, view

WEB = AppKey("default", "web")


def test_spread_prefers_the_least_allocated_node() -> None:
    empty = view(cpu=4, memory=4 * GI)
    half = view(cpu=4, memory=4 * GI, cpu_used=2, mem_used=2 * GI)
    d = demand(cpu=1, memory=1 * GI)
    assert score_spread(empty, d) == pytest.approx(0.75)
    assert score_spread(half, d) == pytest.approx(0.25)


def test_binpack_prefers_the_most_allocated_node_that_fits() -> None:
    empty = view(cpu=4, memory=4 * GI)
    half = view(cpu=4, memory=4 * GI, cpu_used=2, mem_used=2 * GI)
    d = demand(cpu=1, memory=1 * GI)
    assert score_binpack(half, d) > score_binpack(empty, d)
    assert score_binpack(half, d) == pytest.approx(0.75)


def test_allocation_scores_stay_in_range_on_zero_capacity() -> None:
    broken = view(cpu=0, memory=0)
    assert score_spread(broken, demand()) == 0.0
    assert score_binpack(broken, demand()) == 1.0


def test_anti_affinity_prefers_nodes_without_the_app() -> None:
    d = demand(app=WEB)
    assert score_anti_affinity(view(), d) == 1.0
    assert score_anti_affinity(view(apps={WEB: 1}), d) == pytest.approx(0.5)
    assert score_anti_affinity(view(apps={WEB: 3}), d) == pytest.approx(0.25)
    assert score_anti_affinity(view(apps={AppKey("default", "other"): 3}), d) == 1.0


def test_topology_prefers_the_emptiest_domain() -> None:
    d = demand(spread_by="zone", domains={"a": 2, "b": 1})
    assert score_topology(view(zone="c"), d) == 1.0  # floor 0: zone c has none yet
    assert score_topology(view(zone="b"), d) == pytest.approx(0.5)
    assert score_topology(view(zone="a"), d) == pytest.approx(1 / 3)
    assert score_topology(view(), d) == 0.0  # no zone label: last resort
    assert score_topology(view(zone="a"), demand(spread_by=None)) == 1.0


def test_topology_is_relative_to_the_emptiest_candidate_domain() -> None:
    d = demand(spread_by="zone", domains={"a": 12, "b": 11}, domain_floor=11)
    assert score_topology(view(zone="b"), d) == 1.0
    assert score_topology(view(zone="a"), d) == pytest.approx(0.5)


def test_scorers_for_each_strategy() -> None:
    assert [n for n, _, _ in scorers_for("spread", None)] == ["spread", "anti_affinity"]
    assert [n for n, _, _ in scorers_for("binpack", "zone")] == [
        "binpack",
        "anti_affinity",
        "topology",
    ]
    weights = {n: w for n, _, w in scorers_for("binpack", "zone")}
    assert weights["anti_affinity"] < weights["binpack"] < weights["topology"]


def test_total_and_explained_scores() -> None:
    scorers = scorers_for("spread", "zone")
    node = view(cpu=4, memory=4 * GI, zone="a")
    d = demand(cpu=1, memory=1 * GI, spread_by="zone")
    parts = explain_scores(node, d, scorers)
    assert parts == {"spread": 0.75, "anti_affinity": 1.0, "topology": 1.0}
    assert total_score(node, d, scorers) == pytest.approx(0.75 + 1.0 + 2.0)


@given(
    strategy=st.sampled_from(["spread", "binpack"]),
    spread_by=st.sampled_from([None, "zone"]),
    cpu=st.floats(0, 16),
    cpu_used=st.floats(0, 16),
    memory=st.integers(0, 16 * GI),
    mem_used=st.integers(0, 16 * GI),
    here=st.integers(0, 5),
    zone=st.sampled_from([None, "a", "b"]),
    in_a=st.integers(0, 5),
    in_b=st.integers(0, 5),
)
def test_fused_score_equals_the_weighted_scorers(
    strategy: str,
    spread_by: str | None,
    cpu: float,
    cpu_used: float,
    memory: int,
    mem_used: int,
    here: int,
    zone: str | None,
    in_a: int,
    in_b: int,
) -> None:
    labels = {"zone": zone} if zone else {}
    node = view(cpu=cpu, cpu_used=cpu_used, memory=memory, mem_used=mem_used, **labels)
    node.apps = {WEB: here} if here else {}
    d = demand(
        cpu=0.5,
        spread_by=spread_by,
        domains={"a": in_a, "b": in_b},
        domain_floor=min(in_a, in_b),
    )
    expected = total_score(node, d, scorers_for(strategy, spread_by))
    assert fused(strategy, spread_by)(node, d) == pytest.approx(expected)
