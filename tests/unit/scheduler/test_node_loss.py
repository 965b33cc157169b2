"""Issue 14: an agent's absence alone replaces nothing that still passes its probes.

The decisions with the time passed in: ``node_condition`` (reachable / unreachable / lost),
``Cluster.expire`` and the reconcile of replicas on an unreachable node.
"""

from __future__ import annotations

import pytest

from core.keys import AppKey
from services.scheduler.cluster import Cluster, node_condition
from tests.unit.scheduler.helpers import app_state, node_info

WEB = AppKey("default", "web")


@pytest.mark.parametrize(
    ("status", "seen", "now", "expected"),
    [
        ("ready", 100.0, 100.0, "reachable"),
        ("ready", 100.0, 106.0, "reachable"),  # exactly the grace: still heard
        ("ready", 100.0, 106.1, "unreachable"),  # silent past the heartbeat grace
        ("offline", 100.0, 100.5, "unreachable"),  # a last will: at once
        ("offline", 100.0, 130.0, "unreachable"),
        ("offline", 100.0, 130.1, "lost"),  # no word for the lost grace
        ("ready", 100.0, 130.1, "lost"),
        ("not_ready", 100.0, 101.0, "reachable"),  # Docker down: heard, not unreachable
    ],
)
def test_node_condition(status: str, seen: float, now: float, expected: str) -> None:
    assert node_condition(status, seen, now, grace=6.0, lost_grace=30.0) == expected


def three_nodes(lost_grace: float = 30.0) -> Cluster:
    cluster = Cluster(lost_grace=lost_grace)
    for node in ("n1", "n2", "n3"):
        cluster.upsert_node(node_info(node), seen=0.0)
    key = WEB
    cluster.set_app(key, app_state("web", 3))
    cluster.reconcile(key, 0.0)
    cluster.take_dirty()
    return cluster


def on(cluster: Cluster, node: str) -> set[str]:
    return set(cluster.nodes[node].replicas)


def test_a_last_will_moves_nothing_that_is_ready() -> None:
    cluster = three_nodes()
    ready = set(cluster.replicas)
    cluster.set_ready(WEB, ready)
    before = on(cluster, "n3")
    assert len(before) == 1
    affected = cluster.upsert_node(node_info("n3", status="offline"), seen=1.0)
    assert affected == {WEB}
    assert cluster.nodes["n3"].unreachable
    assert not cluster.nodes["n3"].lost
    assert not cluster.reconcile(WEB, 1.0).changed
    assert on(cluster, "n3") == before
    assert "n3" not in cluster.take_dirty()  # its assignment is not rewritten
    # the agent restarts: nothing moves, nothing is re-sent
    cluster.upsert_node(node_info("n3"), seen=2.0)
    assert not cluster.nodes["n3"].unreachable
    assert not cluster.reconcile(WEB, 2.0).changed
    assert on(cluster, "n3") == before


def test_an_unreachable_node_gets_no_new_replicas() -> None:
    cluster = three_nodes()
    cluster.set_ready(WEB, set(cluster.replicas))
    cluster.upsert_node(node_info("n3", status="offline"), seen=1.0)
    cluster.set_app(WEB, app_state("web", 6))
    out = cluster.reconcile(WEB, 1.0)
    assert len(out.placed) == 3
    assert {r.node for r in out.placed} <= {"n1", "n2"}


def test_a_replica_that_fails_its_probes_on_an_unreachable_node_moves_at_once() -> None:
    cluster = three_nodes()
    ready = set(cluster.replicas)
    cluster.set_ready(WEB, ready)
    cluster.upsert_node(node_info("n3", status="offline"), seen=1.0)
    [gone] = on(cluster, "n3")
    # health finds it unready (its container is gone): a decision waits on that
    assert cluster.set_ready(WEB, ready - {gone})
    out = cluster.reconcile(WEB, 1.5)
    assert [r.id for r in out.removed] == [gone]
    assert len(out.placed) == 1
    assert out.placed[0].node in {"n1", "n2"}
    assert on(cluster, "n3") == set()
    assert "n3" in cluster.take_dirty()  # its assignment no longer lists it
    assert cluster.assignment("n3").replicas == []


def test_a_replica_that_fails_its_probes_on_a_reachable_node_stays() -> None:
    cluster = three_nodes()
    [replica] = on(cluster, "n3")
    assert not cluster.set_ready(WEB, set(cluster.replicas) - {replica})
    assert not cluster.reconcile(WEB, 1.0).changed  # its agent restarts it


def test_without_any_health_record_the_lost_grace_decides() -> None:
    cluster = three_nodes(lost_grace=10.0)
    cluster.upsert_node(node_info("n3", status="offline"), seen=1.0)
    assert not cluster.reconcile(WEB, 1.0).changed
    for node in ("n1", "n2"):
        cluster.upsert_node(node_info(node), seen=10.0)
    assert cluster.expire(10.0, grace=6.0) == ([], set())
    for node in ("n1", "n2"):
        cluster.upsert_node(node_info(node), seen=10.1)
    lost, affected = cluster.expire(10.1, grace=6.0)
    assert (lost, affected) == (["n3"], {WEB})
    out = cluster.reconcile(WEB, 10.1)
    assert len(out.placed) == 1
    assert out.placed[0].node in {"n1", "n2"}


def test_silence_makes_a_node_unreachable_then_lost() -> None:
    cluster = three_nodes(lost_grace=20.0)
    cluster.set_ready(WEB, set(cluster.replicas))
    before = on(cluster, "n3")
    for now in (7.0, 19.0):
        cluster.upsert_node(node_info("n1"), seen=now)
        cluster.upsert_node(node_info("n2"), seen=now)
        lost, affected = cluster.expire(now, grace=6.0)
        assert lost == []
        assert cluster.nodes["n3"].unreachable
        assert affected == ({WEB} if now == 7.0 else set())  # reconciled once, on the change
        assert not cluster.reconcile(WEB, now).changed  # still ready: kept
        assert on(cluster, "n3") == before
    cluster.upsert_node(node_info("n1"), seen=20.5)
    cluster.upsert_node(node_info("n2"), seen=20.5)
    assert cluster.expire(20.5, grace=6.0) == (["n3"], {WEB})
    out = cluster.reconcile(WEB, 20.5)
    assert len(out.placed) == 1
    assert cluster.assignment("n3").replicas == []
    # the partition heals: n3 comes back with an empty set (its agent removes the stale
    # container), nothing moves back, and no replica is counted twice
    cluster.upsert_node(node_info("n3"), seen=21.0)
    assert not cluster.reconcile(WEB, 21.0).changed
    assert on(cluster, "n3") == set()
    assert len(cluster.replicas) == 3


def test_a_heartbeat_after_silence_makes_the_node_reachable_again() -> None:
    cluster = three_nodes()
    cluster.set_ready(WEB, set(cluster.replicas))
    for node in ("n1", "n2"):
        cluster.upsert_node(node_info(node), seen=7.0)
    cluster.expire(7.0, grace=6.0)
    assert cluster.nodes["n3"].unreachable
    cluster.upsert_node(node_info("n3"), seen=8.0)
    assert not cluster.nodes["n3"].unreachable
    assert cluster.nodes["n3"].usable
    assert not cluster.waiting_for_ready(WEB)
