"""Each algorithm's distribution, exclusion, and stickiness."""

from __future__ import annotations

import collections
import itertools

import pytest

from services.balancer.algorithms import (
    ConsistentHash,
    LeastConn,
    RoundRobin,
    Weighted,
    make_picker,
)
from services.balancer.routes import Backend


def backends(n: int, weights: list[float] | None = None) -> list[Backend]:
    ws = weights or [1.0] * n
    return [Backend(f"r{i}", 1, "127.0.0.1", 8000 + i, ws[i]) for i in range(n)]


def test_round_robin_is_even_and_skips_excluded() -> None:
    bs = backends(3)
    p = RoundRobin()
    picks = [p.pick(bs).id for _ in range(9)]  # type: ignore[union-attr]
    assert picks == ["r0", "r1", "r2"] * 3
    picks = [p.pick(bs, exclude={"r1"}).id for _ in range(4)]  # type: ignore[union-attr]
    assert picks == ["r0", "r2", "r0", "r2"]
    assert p.pick(bs, exclude={"r0", "r1", "r2"}) is None
    assert p.pick([]) is None


def test_least_conn_prefers_the_idlest_and_rotates_ties() -> None:
    bs = backends(3)
    p = LeastConn()
    assert p.pick(bs, inflight={"r0": 2, "r1": 0, "r2": 1}).id == "r1"  # type: ignore[union-attr]
    assert p.pick(bs, inflight={"r0": 2, "r1": 5, "r2": 1}).id == "r2"  # type: ignore[union-attr]
    ties = collections.Counter(p.pick(bs, inflight={}).id for _ in range(30))  # type: ignore[union-attr]
    assert ties == {"r0": 10, "r1": 10, "r2": 10}
    assert p.pick(bs, inflight={"r1": 0}, exclude={"r1"}).id != "r1"  # type: ignore[union-attr]


def test_weighted_is_exact_and_smooth() -> None:
    bs = backends(3, [0.45, 0.45, 0.1])
    p = Weighted()
    picks = [p.pick(bs).id for _ in range(100)]  # type: ignore[union-attr]
    counts = collections.Counter(picks)
    assert counts == {"r0": 45, "r1": 45, "r2": 10}
    # smooth: the canary is spread out, never two in a row
    canary = [i for i, x in enumerate(picks) if x == "r2"]
    assert all(b - a >= 5 for a, b in itertools.pairwise(canary))
    assert p.pick(bs, exclude={"r0", "r1"}).id == "r2"  # type: ignore[union-attr]
    assert p.pick(backends(1, [0.0])) is None


def test_hash_is_sticky_and_moves_only_the_leavers_keys() -> None:
    bs = backends(5)
    p = ConsistentHash()
    keys = [f"10.0.0.{i}" for i in range(500)]
    first = {k: p.pick(bs, key=k).id for k in keys}  # type: ignore[union-attr]
    assert first == {k: ConsistentHash().pick(bs, key=k).id for k in keys}  # type: ignore[union-attr]
    spread = collections.Counter(first.values())
    assert len(spread) == 5
    assert min(spread.values()) > 60
    without = [b for b in bs if b.id != "r3"]
    for k in keys:
        now = p.pick(without, key=k).id  # type: ignore[union-attr]
        if first[k] != "r3":
            assert now == first[k]
    # excluding (ejecting) works like removing
    assert all(
        p.pick(bs, key=k, exclude={"r3"}).id == p.pick(without, key=k).id  # type: ignore[union-attr]
        for k in keys[:50]
    )


@pytest.mark.parametrize("name", ["round_robin", "least_conn", "weighted", "hash", "bogus"])
def test_make_picker(name: str) -> None:
    p = make_picker(name)
    assert p.algorithm == (name if name != "bogus" else "round_robin")
    assert p.pick(backends(2), key="k") is not None
