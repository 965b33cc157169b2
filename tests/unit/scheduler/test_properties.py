"""Random sequences of cluster events: the books stay consistent and nothing unsafe happens."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from core.keys import AppKey
from services.scheduler.cluster import Cluster, versions_of
from tests.unit.scheduler.helpers import GI, MI, app_state, node_info

NODES = [f"n{i}" for i in range(5)]
APPS = ["web", "api", "db"]

op = st.one_of(
    st.tuples(st.just("scale"), st.sampled_from(APPS), st.integers(0, 8)),
    st.tuples(st.just("delete"), st.sampled_from(APPS), st.just(0)),
    st.tuples(st.just("offline"), st.sampled_from(NODES), st.just(0)),
    st.tuples(st.just("online"), st.sampled_from(NODES), st.integers(1, 4)),
    st.tuples(st.just("cordon"), st.sampled_from(NODES), st.just(0)),
    st.tuples(st.just("drain"), st.sampled_from(NODES), st.just(0)),
    st.tuples(st.just("uncordon"), st.sampled_from(NODES), st.just(0)),
    st.tuples(st.just("ready"), st.sampled_from(APPS), st.just(0)),
    st.tuples(st.just("expire"), st.just(""), st.integers(0, 10)),
)


def check_books(cluster: Cluster) -> None:
    assert set(cluster.replicas) == {r for n in cluster.nodes.values() for r in n.replicas}
    assert set(cluster.replicas) == {r for a in cluster.apps.values() for r in a.replicas}
    for node in cluster.nodes.values():
        reps = node.replicas.values()
        assert abs(node.cpu_used - sum(r.cpu for r in reps)) < 1e-6
        assert node.mem_used == sum(r.memory for r in reps)
        assert node.apps == dict(Counter(r.app_key for r in reps))
        assert node.cpu_used <= node.cpu + 1e-6 or node.lost or not reps
        assert node.mem_used <= node.memory or node.lost or not reps
        if node.lost:
            assert not reps
    for rec in cluster.apps.values():
        if rec.state is None:
            continue
        for rev, version in versions_of(rec.state).items():
            active = [r for r in rec.replicas.values() if r.revision == rev and not r.leaving]
            assert len(active) <= version.replicas
            for r in active:
                node = cluster.nodes[r.node]
                assert not node.draining


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(op, max_size=40), strategy=st.sampled_from(["spread", "binpack"]))
def test_random_events_keep_the_cluster_consistent(
    ops: list[tuple[str, str, int]], strategy: str
) -> None:
    cluster = Cluster(seed=3)
    now = 0.0
    for i, node in enumerate(NODES):
        cluster.upsert_node(node_info(node, cpu=2, memory=2 * GI, zone="ab"[i % 2]), seen=now)
    for kind, target, n in ops:
        now += 1.0
        touched: set[AppKey] = set()
        if kind == "scale":
            state = app_state(
                target, n, cpu=0.5, memory=256 * MI, strategy=strategy, spread_by="zone"
            )
            cluster.set_app(AppKey("default", target), state)
            touched.add(AppKey("default", target))
        elif kind == "delete":
            cluster.set_app(AppKey("default", target), None)
            touched.add(AppKey("default", target))
        elif kind == "offline":
            touched |= cluster.upsert_node(node_info(target, status="offline"), seen=now)
        elif kind == "online":
            info = node_info(target, cpu=n, memory=2 * GI, zone="ab"[int(target[1]) % 2])
            touched |= cluster.upsert_node(info, seen=now)
        elif kind in ("cordon", "drain", "uncordon"):
            touched |= cluster.set_cordon(target, kind != "uncordon", kind == "drain")
        elif kind == "ready":
            key = AppKey("default", target)
            if cluster.set_ready(
                key, {r for r in cluster.replicas if str(key) in r.replace(".", "/", 1)}
            ):
                touched.add(key)
        elif kind == "expire":
            for node in NODES[: n % len(NODES)]:
                if not cluster.nodes[node].lost:
                    cluster.upsert_node(
                        node_info(node, cpu=2, memory=2 * GI, zone="ab"[int(node[1]) % 2]),
                        seen=now,
                    )
            touched |= cluster.expire(now, grace=0.5)[1]
        for key in sorted(touched | set(cluster.pending)):
            out = cluster.reconcile(key, now)
            if out.freed:
                for other in sorted(cluster.pending):
                    cluster.reconcile(other, now)
        check_books(cluster)
    # converged: one more pass over every app changes nothing
    for key in sorted(cluster.apps):
        cluster.reconcile(key, now)
    for key in sorted(cluster.apps):
        assert not cluster.reconcile(key, now).changed
