"""Whole placements through ``Cluster.reconcile`` and ``plan``."""

from __future__ import annotations

import re
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from core.keys import AppKey
from core.state import NodeAssignment
from services.scheduler.cluster import Cluster, plan
from tests.unit.scheduler.helpers import GI, MI, app_state, node_info

ID = re.compile(r"^default\.web\.[0-9a-f]{8}$")
WEB = AppKey("default", "web")
BIG = AppKey("default", "big")


def cluster_with(*infos: object, seed: int = 0) -> Cluster:
    cluster = Cluster(seed=seed)
    for info in infos:
        cluster.upsert_node(info, seen=0.0)  # type: ignore[arg-type]
    return cluster


def apply(cluster: Cluster, *states: object, now: float = 0.0) -> dict[AppKey, object]:
    outs = {}
    for state in states:
        key = AppKey(state.namespace, state.name)  # type: ignore[attr-defined]
        cluster.set_app(key, state)  # type: ignore[arg-type]
        outs[key] = cluster.reconcile(key, now)
    return outs


def per_node(cluster: Cluster, app: AppKey = WEB) -> dict[str, int]:
    return {n.id: n.apps.get(app, 0) for n in cluster.nodes.values()}


def test_places_the_desired_replicas_with_well_formed_ids() -> None:
    cluster = cluster_with(node_info("n1"), node_info("n2"))
    out = apply(cluster, app_state("web", 3))[WEB]
    assert len(out.placed) == 3  # type: ignore[attr-defined]
    assert all(ID.match(r.id) for r in cluster.replicas.values())
    assert cluster.take_dirty() == {"n1", "n2"}
    assert sum(per_node(cluster).values()) == 3


def test_resources_are_honoured() -> None:
    # 2 cpu / 1Gi per replica: n1 takes 2 by cpu, n2 takes 1 by memory.
    cluster = cluster_with(
        node_info("n1", cpu=4, memory=8 * GI), node_info("n2", cpu=8, memory=1 * GI)
    )
    out = apply(cluster, app_state("web", 5, cpu=2, memory=1 * GI))[WEB]
    assert per_node(cluster) == {"n1": 2, "n2": 1}
    [problem] = out.unplaceable  # type: ignore[attr-defined]
    assert problem.count == 2
    assert (
        problem.message == "2 unplaceable: 0/2 nodes fit: 1 insufficient cpu, 1 insufficient memory"
    )
    for node in cluster.nodes.values():
        assert node.cpu_used <= node.cpu
        assert node.mem_used <= node.memory


def test_only_ready_nodes_get_replicas() -> None:
    cluster = cluster_with(
        node_info("ok"), node_info("sick", status="not_ready"), node_info("gone", status="offline")
    )
    apply(cluster, app_state("web", 4))
    assert per_node(cluster) == {"ok": 4, "sick": 0, "gone": 0}


def test_spread_balances_across_nodes() -> None:
    cluster = cluster_with(*(node_info(f"n{i}") for i in range(4)))
    apply(cluster, app_state("web", 8))
    assert set(per_node(cluster).values()) == {2}


def test_spread_across_zones_with_unequal_node_counts() -> None:
    nodes = [node_info("a1", zone="a"), node_info("a2", zone="a"), node_info("a3", zone="a")]
    nodes += [node_info("b1", zone="b"), node_info("c1", zone="c")]
    cluster = cluster_with(*nodes)
    apply(cluster, app_state("web", 6, spread_by="zone"))
    zones = Counter(cluster.nodes[r.node].labels["zone"] for r in cluster.replicas.values())
    assert zones == {"a": 2, "b": 2, "c": 2}


def test_binpack_fills_one_node_before_the_next() -> None:
    cluster = cluster_with(*(node_info(f"n{i}", cpu=2, memory=2 * GI) for i in range(3)))
    apply(cluster, app_state("web", 5, cpu=0.5, memory=512 * MI, strategy="binpack"))
    assert sorted(per_node(cluster).values()) == [0, 1, 4]


def test_binpack_fills_nodes_other_apps_already_use() -> None:
    cluster = cluster_with(
        node_info("n1", cpu=2, memory=2 * GI), node_info("n2", cpu=2, memory=2 * GI)
    )
    apply(cluster, app_state("base", 1, cpu=1, memory=1 * GI))
    base_node = next(iter(cluster.replicas.values())).node
    apply(cluster, app_state("web", 2, cpu=0.5, memory=512 * MI, strategy="binpack"))
    assert per_node(cluster)[base_node] == 2


def test_anti_affinity_keeps_replicas_of_an_app_apart() -> None:
    # n1 is much emptier, but the app's replicas still go one per node first.
    cluster = cluster_with(
        node_info("n1", cpu=64, memory=64 * GI), node_info("n2"), node_info("n3")
    )
    apply(cluster, app_state("web", 3, cpu=0.1, memory=64 * MI))
    assert per_node(cluster) == {"n1": 1, "n2": 1, "n3": 1}


def test_max_per_node() -> None:
    cluster = cluster_with(node_info("n1", cpu=64, memory=64 * GI), node_info("n2"))
    out = apply(cluster, app_state("web", 5, cpu=0.1, memory=64 * MI, max_per_node=2))
    assert per_node(cluster) == {"n1": 2, "n2": 2}
    assert out[WEB].unplaceable[0].reasons == {"max_per_node": 2}  # type: ignore[attr-defined]


def test_unsatisfiable_constraint_names_the_label() -> None:
    cluster = cluster_with(node_info("a", zone="a"), node_info("b", zone="b", disk="ssd"))
    out = apply(cluster, app_state("web", 2, constraints={"zone": ["z"]}))[WEB]
    assert out.placed == []  # type: ignore[attr-defined]
    assert out.unplaceable[0].message == "2 unplaceable: 0/2 nodes fit: 2 constraint zone"  # type: ignore[attr-defined]
    assert cluster.pending == {WEB: out.unplaceable}  # type: ignore[attr-defined]
    status = cluster.status(WEB)
    assert status is not None
    assert (status.desired, status.placed, status.unplaceable) == (2, 0, 2)
    assert status.reasons == {"constraint zone": 2}


def test_constraints_select_matching_nodes_only() -> None:
    cluster = cluster_with(
        node_info("a", zone="a", disk="ssd"),
        node_info("b", zone="b", disk="ssd"),
        node_info("c", zone="a"),
    )
    apply(cluster, app_state("web", 4, constraints={"zone": ["a"], "disk": "ssd"}))
    assert per_node(cluster) == {"a": 4, "b": 0, "c": 0}


def test_unplaceable_replicas_are_placed_when_a_node_joins() -> None:
    cluster = cluster_with(node_info("n1", cpu=1))
    apply(cluster, app_state("web", 3, cpu=0.5))
    assert WEB in cluster.pending
    affected = cluster.upsert_node(node_info("n2", cpu=1), seen=0.0)
    assert affected == {WEB}
    out = cluster.reconcile(WEB)
    assert len(out.placed) == 1
    assert not out.unplaceable
    assert cluster.pending == {}


def test_unplaceable_replicas_fit_once_another_app_shrinks() -> None:
    cluster = cluster_with(node_info("n1", cpu=1))
    apply(cluster, app_state("big", 2, cpu=0.5), app_state("web", 1, cpu=0.5))
    assert WEB in cluster.pending
    out = apply(cluster, app_state("big", 1, cpu=0.5))[BIG]
    assert out.freed  # type: ignore[attr-defined]
    assert len(cluster.reconcile(WEB).placed) == 1


def test_scale_down_removes_from_the_most_loaded_node() -> None:
    cluster = cluster_with(node_info("n1"), node_info("n2"))
    apply(cluster, app_state("web", 2))
    apply(cluster, app_state("hog", 1, cpu=2, memory=4 * GI))
    hog_node = next(r.node for r in cluster.replicas.values() if r.app == "hog")
    out = apply(cluster, app_state("web", 1))[WEB]
    assert [r.node for r in out.removed] == [hog_node]  # type: ignore[attr-defined]


def test_a_second_reconcile_changes_nothing() -> None:
    cluster = cluster_with(node_info("n1"), node_info("n2"))
    apply(cluster, app_state("web", 3))
    cluster.take_dirty()
    out = cluster.reconcile(WEB)
    assert not out.changed
    assert cluster.take_dirty() == set()


def test_two_versions_are_kept_at_their_counts() -> None:
    cluster = cluster_with(node_info("n1"), node_info("n2"))
    apply(cluster, app_state("web", 3, versions=[(1, 3), (2, 1)]))
    assert Counter(r.revision for r in cluster.replicas.values()) == {1: 3, 2: 1}
    apply(cluster, app_state("web", 3, versions=[(2, 3)]))
    assert Counter(r.revision for r in cluster.replicas.values()) == {2: 3}


def test_deleted_app_leaves_every_assignment() -> None:
    cluster = cluster_with(node_info("n1"), node_info("n2"))
    apply(cluster, app_state("web", 3), app_state("api", 1))
    cluster.take_dirty()
    cluster.set_app(WEB, None)
    out = cluster.reconcile(WEB)
    assert out.deleted
    assert len(out.removed) == 3
    assert {r.app for r in cluster.replicas.values()} == {"api"}
    assert cluster.status(WEB) is None
    assigned = [r.app for n in cluster.take_dirty() for r in cluster.assignment(n).replicas]
    assert "web" not in assigned


def test_assignment_carries_each_spec_once() -> None:
    cluster = cluster_with(node_info("n1"))
    apply(cluster, app_state("web", 3))
    message = cluster.assignment("n1")
    assert len(message.replicas) == 3
    assert list(message.specs) == ["default/web@1"]
    assert all(r.spec_key in message.specs for r in message.replicas)
    assert message.generation == 1
    assert cluster.assignment("n1").generation == 2


def test_node_loss_moves_its_replicas_and_empties_its_assignment() -> None:
    cluster = cluster_with(node_info("n1"), node_info("n2"), node_info("n3"))
    apply(cluster, app_state("web", 3))
    cluster.take_dirty()
    # a last will alone makes n2 unreachable, not lost (issue 14): see test_node_loss.py
    cluster.upsert_node(node_info("n2", status="offline"), seen=1.0)
    for other in ("n1", "n3"):
        cluster.upsert_node(node_info(other), seen=31.0)
    lost, affected = cluster.expire(now=31.0, grace=6.0)
    assert (lost, affected) == (["n2"], {WEB})
    assert cluster.assignment("n2").replicas == []
    out = cluster.reconcile(WEB)
    assert len(out.placed) == 1
    assert per_node(cluster) == {"n1": 2, "n2": 0, "n3": 1} or per_node(cluster) == {
        "n1": 1,
        "n2": 0,
        "n3": 2,
    }


def test_missed_heartbeats_lose_a_node_and_it_comes_back_empty() -> None:
    cluster = cluster_with(node_info("n1"), node_info("n2"))
    apply(cluster, app_state("web", 2))
    cluster.upsert_node(node_info("n1"), seen=31.0)  # n2 stays silent since 0.0
    lost, affected = cluster.expire(now=31.0, grace=6.0)
    assert (lost, affected) == (["n2"], {WEB})
    cluster.reconcile(WEB)
    assert per_node(cluster) == {"n1": 2, "n2": 0}
    cluster.take_dirty()
    # n2 is back: it is ready again, its (empty) set is re-sent, nothing moves back
    cluster.upsert_node(node_info("n2"), seen=32.0)
    assert "n2" in cluster.take_dirty()
    assert cluster.assignment("n2").replicas == []
    assert not cluster.reconcile(WEB).changed


def test_rebuild_from_assignments_moves_nothing() -> None:
    nodes = [node_info(f"n{i}", zone="ab"[i % 2]) for i in range(4)]
    first = plan([app_state("web", 5, spread_by="zone"), app_state("api", 3)], nodes)
    again = plan(
        [app_state("web", 5, spread_by="zone"), app_state("api", 3)],
        nodes,
        first.assignments.values(),
        seed=99,
    )
    assert again.assignments == {}


def test_plan_is_replayable_with_a_seed() -> None:
    nodes = [node_info(f"n{i}") for i in range(20)]
    apps = [app_state("web", 30, cpu=0.1, memory=64 * MI)]
    assert plan(apps, nodes, seed=7, ids_seed=1) == plan(apps, nodes, seed=7, ids_seed=1)
    # without an ids seed, the same placement gets fresh ids: never reused across restarts
    first, second = plan(apps, nodes, seed=7), plan(apps, nodes, seed=7)
    ids = {r.id for a in first.assignments.values() for r in a.replicas}
    assert not ids & {r.id for a in second.assignments.values() for r in a.replicas}

    def layout(result: object) -> dict[str, int]:
        return {n: len(a.replicas) for n, a in result.assignments.items()}  # type: ignore[attr-defined]

    assert layout(first) == layout(second)


def test_plan_drops_replicas_of_deleted_apps_and_lost_nodes() -> None:
    nodes = [node_info("n1"), node_info("n2")]
    first = plan([app_state("web", 2), app_state("api", 2)], nodes)
    nodes[1] = node_info("n2", status="offline")
    # offline alone moves nothing while the replicas are ready; not ready, they move
    ready = {AppKey("default", "api"): set[str]()}
    second = plan([app_state("api", 2)], nodes, first.assignments.values(), ready=ready)
    assert second.assignments["n2"].replicas == []
    assert [r.app for r in second.assignments["n1"].replicas].count("api") == 2
    assert "web" not in {r.app for r in second.assignments["n1"].replicas}


def test_plan_with_heartbeats_and_a_clock() -> None:
    nodes = [node_info("n1"), node_info("n2").model_copy(update={"heartbeat": 100.0})]
    result = plan([app_state("web", 2)], nodes, now=101.0, grace=6.0)
    assert {n: len(a.replicas) for n, a in result.assignments.items()} == {"n1": 0, "n2": 2}


def test_orphans_wait_for_the_grace_after_a_takeover() -> None:
    first = plan([app_state("web", 2)], [node_info("n1")])
    cluster = Cluster(orphan_grace=5.0, now=100.0)
    for assignment in first.assignments.values():
        cluster.load(assignment, seen=100.0)
    cluster.upsert_node(node_info("n1"), seen=100.0)
    out = cluster.reconcile(WEB, now=101.0)
    assert out.requeue == 4.0
    assert not out.removed
    assert len(cluster.reconcile(WEB, now=105.5).removed) == 2


def test_cordon_stops_new_placements_only() -> None:
    cluster = cluster_with(node_info("n1"), node_info("n2"))
    apply(cluster, app_state("web", 2))
    assert cluster.set_cordon("n1", True) == set()
    apply(cluster, app_state("web", 4))
    assert per_node(cluster) == {"n1": 1, "n2": 3}
    assert cluster.set_cordon("n1", False) == set()


def test_drain_surges_then_drops_once_replacements_are_ready() -> None:
    cluster = cluster_with(node_info("n1"), node_info("n2"))
    apply(cluster, app_state("web", 2))
    on_n1 = [r.id for r in cluster.replicas.values() if r.node == "n1"]
    assert len(on_n1) == 1
    cluster.set_ready(WEB, set(cluster.replicas))
    assert cluster.set_cordon("n1", True, drain=True) == {WEB}

    out = cluster.reconcile(WEB)
    assert len(out.placed) == 1
    assert out.placed[0].node == "n2"
    assert out.removed == []  # the replacement is not ready yet: the old one stays
    assert cluster.waiting_for_ready(WEB)
    status = cluster.status(WEB)
    assert status is not None
    assert (status.placed, status.leaving) == (2, 1)

    assert cluster.set_ready(WEB, set(cluster.replicas))
    out = cluster.reconcile(WEB)
    assert [r.id for r in out.removed] == on_n1
    assert per_node(cluster) == {"n1": 0, "n2": 2}
    assert cluster.assignment("n1").replicas == []


def test_drain_waits_when_no_replacement_can_be_placed() -> None:
    cluster = cluster_with(node_info("n1"), node_info("n2", cpu=0.1))
    apply(cluster, app_state("web", 1))
    cluster.set_ready(WEB, set(cluster.replicas))
    cluster.set_cordon("n1", True, drain=True)
    out = cluster.reconcile(WEB)
    assert out.removed == []
    assert out.unplaceable
    assert "1 node cordoned" in out.unplaceable[0].message
    assert cluster.set_cordon("n1", False) == {WEB}
    assert not cluster.reconcile(WEB).changed


def test_drain_without_health_information_moves_at_once() -> None:
    cluster = cluster_with(node_info("n1"), node_info("n2"))
    apply(cluster, app_state("web", 2))
    cluster.set_cordon("n1", True, drain=True)
    cluster.reconcile(WEB)
    assert per_node(cluster) == {"n1": 0, "n2": 2}


@settings(max_examples=40, deadline=None)
@given(
    capacities=st.lists(st.tuples(st.integers(1, 8), st.integers(1, 8)), min_size=1, max_size=8),
    apps=st.lists(
        st.tuples(st.integers(0, 12), st.sampled_from([0.25, 0.5, 1.0]), st.integers(1, 4)),
        min_size=1,
        max_size=5,
    ),
    strategy=st.sampled_from(["spread", "binpack"]),
)
def test_never_over_capacity_never_too_many_and_stable(
    capacities: list[tuple[int, int]], apps: list[tuple[int, float, int]], strategy: str
) -> None:
    nodes = [node_info(f"n{i}", cpu=c, memory=m * GI) for i, (c, m) in enumerate(capacities)]
    states = [
        app_state(f"a{i}", n, cpu=cpu, memory=mem * 256 * MI, strategy=strategy)
        for i, (n, cpu, mem) in enumerate(apps)
    ]
    result = plan(states, nodes)
    assignments: dict[str, NodeAssignment] = result.assignments
    for info in nodes:
        assignment = assignments.get(info.node)
        if assignment is None:
            continue
        cpu = sum(assignment.spec_for(r).resources.cpu for r in assignment.replicas)
        mem = sum(assignment.spec_for(r).resources.memory for r in assignment.replicas)
        assert cpu <= info.capacity.cpu + 1e-9
        assert mem <= info.capacity.memory
    counts = Counter(r.app for a in assignments.values() for r in a.replicas)
    for state in states:
        unplaced = sum(
            p.count for p in result.unplaceable.get(AppKey(state.namespace, state.name), [])
        )
        assert counts[state.name] + unplaced == state.replicas
    assert plan(states, nodes, assignments.values()).assignments == {}


def test_refresh_gives_silent_nodes_a_new_grace() -> None:
    cluster = cluster_with(node_info("n1"), node_info("n2"))
    cluster.refresh(now=100.0)
    cluster.upsert_node(node_info("n2"), seen=131.0)
    assert cluster.expire(now=129.0, grace=6.0)[0] == []
    assert cluster.expire(now=131.0, grace=6.0)[0] == ["n1"]


def test_when_every_node_is_silent_nobody_is_lost() -> None:
    cluster = cluster_with(node_info("n1"), node_info("n2"))
    apply(cluster, app_state("web", 2))
    assert cluster.expire(now=60.0, grace=6.0) == ([], set())
    assert cluster.all_silent
    assert sum(per_node(cluster).values()) == 2
    assert not any(n.unreachable for n in cluster.nodes.values())
    # a last will makes its node unreachable at once (no new replicas there)
    assert cluster.upsert_node(node_info("n1", status="offline"), seen=60.0) == {WEB}
    assert cluster.nodes["n1"].unreachable
    cluster.upsert_node(node_info("n2"), seen=61.0)
    # n2 is heard again, so silence means something: n1 (no word for 62 s) is lost
    assert cluster.expire(now=62.0, grace=6.0) == (["n1"], {WEB})
    assert not cluster.all_silent


def test_a_node_that_shrinks_sheds_its_largest_replicas() -> None:
    cluster = cluster_with(node_info("n1", cpu=4), node_info("n2", cpu=4))
    apply(cluster, app_state("big", 1, cpu=2), app_state("web", 2, cpu=0.5))
    big_node = next(r.node for r in cluster.replicas.values() if r.app == "big")
    affected = cluster.upsert_node(node_info(big_node, cpu=1), seen=1.0)
    assert affected == {BIG}
    assert cluster.nodes[big_node].cpu_used <= 1
    out = cluster.reconcile(BIG)
    assert [r.node for r in out.placed] == [n for n in ("n1", "n2") if n != big_node]


def test_a_read_lag_extends_both_graces() -> None:
    """Silence that is the scheduler's own backlog (heartbeats waiting unread) loses no
    node; the same silence without the lag does."""
    cluster = cluster_with(node_info("n1"), node_info("n2"))
    apply(cluster, app_state("web", 2))
    cluster.upsert_node(node_info("n1"), seen=31.0)  # n2 silent since 0.0
    assert cluster.expire(now=31.0, grace=6.0, lag=5.0) == ([], {WEB})  # unreachable only
    assert not cluster.nodes["n2"].lost
    lost, _ = cluster.expire(now=31.0, grace=6.0)
    assert lost == ["n2"]
