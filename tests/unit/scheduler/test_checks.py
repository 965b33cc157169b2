"""Each feasibility check alone, and the fused hot-path check against them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.keys import AppKey
from services.scheduler.checks import (
    CHECKS,
    DYNAMIC_CHECKS,
    check_constraints,
    check_cordon,
    check_cpu,
    check_max_per_node,
    check_memory,
    check_ready,
    first_failure,
    fits,
)
from tests.unit.scheduler.helpers import GI, MI, demand, view


@pytest.mark.parametrize(
    ("status", "lost", "reason"),
    [
        ("ready", False, None),
        ("not_ready", False, "node not ready"),
        ("offline", False, "node offline"),
        ("ready", True, "node offline"),
        ("unknown", False, "node not ready"),
    ],
)
def test_ready(status: str, lost: bool, reason: str | None) -> None:
    node = view(status=status)
    node.lost = lost
    assert check_ready(node, demand()) == reason


def test_cordon() -> None:
    node = view()
    assert check_cordon(node, demand()) is None
    node.cordoned = True
    assert check_cordon(node, demand()) == "node cordoned"


@pytest.mark.parametrize(
    ("labels", "constraints", "reason"),
    [
        ({"zone": "a"}, {}, None),
        ({"zone": "a"}, {"zone": ["a", "b"]}, None),
        ({"zone": "c"}, {"zone": ["a", "b"]}, "constraint zone"),
        ({}, {"zone": ["a"]}, "constraint zone"),
        ({"zone": "a", "disk": "hdd"}, {"zone": ["a"], "disk": ["ssd"]}, "constraint disk"),
    ],
)
def test_constraints(
    labels: dict[str, str], constraints: dict[str, list[str]], reason: str | None
) -> None:
    assert check_constraints(view(**labels), demand(constraints=constraints)) == reason


def test_max_per_node() -> None:
    node = view(apps={AppKey("default", "web"): 2, AppKey("default", "other"): 5})
    assert check_max_per_node(node, demand(max_per_node=3)) is None
    assert check_max_per_node(node, demand(max_per_node=2)) == "max_per_node"
    assert check_max_per_node(node, demand(max_per_node=None)) is None
    assert check_max_per_node(node, demand(app=AppKey("default", "new"), max_per_node=1)) is None


def test_cpu_fit_is_exact_with_float_sums() -> None:
    node = view(cpu=0.3, cpu_used=0.1 + 0.1)  # 0.20000000000000004
    assert check_cpu(node, demand(cpu=0.1)) is None
    assert check_cpu(node, demand(cpu=0.11)) == "insufficient cpu"


def test_memory_fit() -> None:
    node = view(memory=1 * GI, mem_used=768 * MI)
    assert check_memory(node, demand(memory=256 * MI)) is None
    assert check_memory(node, demand(memory=257 * MI)) == "insufficient memory"


def test_first_failure_follows_the_order_of_checks() -> None:
    node = view(status="not_ready", cpu=0.1, zone="x")
    node.cordoned = True
    d = demand(cpu=1, constraints={"zone": ["a"]})
    assert first_failure(node, d) == "node not ready"
    assert first_failure(node, d, CHECKS[1:]) == "node cordoned"
    assert first_failure(node, d, CHECKS[2:]) == "constraint zone"


@given(
    status=st.sampled_from(["ready", "not_ready", "offline"]),
    lost=st.booleans(),
    cordoned=st.booleans(),
    cpu=st.floats(0, 8),
    cpu_used=st.floats(0, 8),
    memory=st.integers(0, 8 * GI),
    mem_used=st.integers(0, 8 * GI),
    here=st.integers(0, 4),
    limit=st.one_of(st.none(), st.integers(1, 4)),
    want_cpu=st.floats(0.01, 2),
    want_mem=st.integers(6 * MI, 2 * GI),
)
def test_fused_fits_equals_the_dynamic_checks(
    status: str,
    lost: bool,
    cordoned: bool,
    cpu: float,
    cpu_used: float,
    memory: int,
    mem_used: int,
    here: int,
    limit: int | None,
    want_cpu: float,
    want_mem: int,
) -> None:
    node = view(
        status=status,
        cpu=cpu,
        cpu_used=cpu_used,
        memory=memory,
        mem_used=mem_used,
        apps={AppKey("default", "web"): here} if here else {},
    )
    node.lost, node.cordoned = lost, cordoned
    d = demand(cpu=want_cpu, memory=want_mem, max_per_node=limit)
    assert fits(node, d) == (first_failure(node, d, DYNAMIC_CHECKS) is None)
