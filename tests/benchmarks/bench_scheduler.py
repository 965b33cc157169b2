"""Scheduler benchmark: simulated nodes, no broker, no Docker.

5,000 nodes in 10 zones with mixed capacities and labels; 1,000 apps totalling 150,000
replicas with mixed requests, constraints, spread and strategies. Prints placements per
second for the initial placement, the time to re-place a lost node's replicas, the time
to scale one app by +10 in the full cluster, and peak memory.

    python tests/benchmarks/bench_scheduler.py [--nodes 5000] [--apps 1000] [--replicas 150000]
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import statistics
import time

from core.keys import AppKey
from core.spec import AppSpec
from core.state import AppState, AppVersion, NodeInfo
from services.scheduler.cluster import Cluster

GI = 1024**3
MI = 1024**2


def make_nodes(n: int, zones: int, rng: random.Random) -> list[NodeInfo]:
    shapes = [(4, 8 * GI), (8, 16 * GI), (16, 32 * GI), (16, 64 * GI), (32, 64 * GI)]
    nodes = []
    for i in range(n):
        cpu, mem = rng.choice(shapes)
        labels = {
            "zone": f"z{i % zones}",
            "region": f"r{(i % zones) // 5}",
            "disk": "ssd" if rng.random() < 0.4 else "hdd",
        }
        if rng.random() < 0.1:
            labels["gpu"] = "yes"
        nodes.append(
            NodeInfo(
                node=f"n{i:05d}",
                address=f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}",
                labels=labels,
                capacity={"cpu": cpu, "memory": mem},
                heartbeat=0.0,
            )
        )
    return nodes


def make_apps(n: int, total: int, zones: int, rng: random.Random) -> list[AppState]:
    # Replica counts: a long tail (a few big apps, many small ones) summing to ``total``.
    weights = [rng.paretovariate(1.2) for _ in range(n)]
    scale = total / sum(weights)
    counts = [max(1, int(w * scale)) for w in weights]
    counts = [min(c, 5000) for c in counts]
    diff = total - sum(counts)
    i = 0
    while diff != 0:
        step = 1 if diff > 0 else -1
        if counts[i % n] + step >= 1 and counts[i % n] + step <= 5000:
            counts[i % n] += step
            diff -= step
        i += 1
    apps = []
    for i, count in enumerate(counts):
        r = rng.random()
        placement: dict[str, object] = {}
        if r < 0.2:
            placement["constraints"] = {"zone": rng.sample([f"z{z}" for z in range(zones)], 3)}
        elif r < 0.3:
            placement["constraints"] = {"disk": ["ssd"]}
        if rng.random() < 0.4:
            placement["spread_by"] = "zone"
        if rng.random() < 0.15:
            placement["strategy"] = "binpack"
        if rng.random() < 0.1:
            placement["max_per_node"] = 3
        spec = AppSpec(
            name=f"app{i:04d}",
            namespace=f"ns{i % 7}",
            image="registry.example/app:1",
            replicas=count,
            resources={
                "cpu": rng.choice([0.05, 0.1, 0.25, 0.5, 1.0]),
                "memory": rng.choice([64 * MI, 128 * MI, 256 * MI, 512 * MI, 1 * GI]),
            },
            placement=placement,
        )
        apps.append(
            AppState(
                namespace=spec.namespace,
                name=spec.name,
                revision=1,
                generation=1,
                spec=spec,
                replicas=count,
                versions=[AppVersion(revision=1, spec=spec, replicas=count)],
            )
        )
    return apps


def app_key(state: AppState) -> AppKey:
    return AppKey(state.namespace, state.name)


def scaled(state: AppState, by: int) -> AppState:
    n = state.replicas + by
    spec = state.spec.model_copy(update={"replicas": n})
    return state.model_copy(
        update={
            "replicas": n,
            "spec": spec,
            "versions": [AppVersion(revision=state.revision, spec=spec, replicas=n)],
            "generation": state.generation + 1,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--zones", type=int, default=10)
    parser.add_argument("--apps", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=150_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--candidates", type=int, default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    nodes = make_nodes(args.nodes, args.zones, rng)
    apps = make_apps(args.apps, args.replicas, args.zones, rng)
    total = sum(a.replicas for a in apps)
    print(f"cluster: {len(nodes)} nodes in {args.zones} zones, {len(apps)} apps, {total} replicas")

    gc.collect()
    cluster = Cluster(seed=args.seed, candidates=args.candidates, ids_seed=args.seed)
    for info in nodes:
        cluster.upsert_node(info, seen=0.0)
    for state in apps:
        cluster.set_app(app_key(state), state)

    t0 = time.perf_counter()
    placed = 0
    for state in apps:
        placed += len(cluster.reconcile(app_key(state)).placed)
    t_place = time.perf_counter() - t0
    unplaced = sum(p.count for problems in cluster.pending.values() for p in problems)
    print(
        f"initial placement: {placed} replicas in {t_place:.2f} s = "
        f"{placed / t_place:,.0f} placements/s ({unplaced} unplaceable)"
    )

    t0 = time.perf_counter()
    dirty = cluster.take_dirty()
    messages = [cluster.assignment(n) for n in dirty]
    t_msg = time.perf_counter() - t0
    print(
        f"assignment messages: {len(messages)} nodes built in {t_msg:.2f} s "
        f"({sum(len(m.replicas) for m in messages)} replicas)"
    )

    loads = sorted(cluster.nodes.values(), key=lambda n: n.load)
    print(
        f"node load after placement: min {loads[0].load:.2f} "
        f"median {loads[len(loads) // 2].load:.2f} max {loads[-1].load:.2f}"
    )
    skews = []
    for state in apps:
        placement = state.spec.placement
        if placement.spread_by != "zone" or state.replicas < args.zones:
            continue
        allowed = placement.constraints.get("zone") or [f"z{z}" for z in range(args.zones)]
        rec = cluster.apps[app_key(state)]
        per_zone = [rec.domains.get(zone, 0) for zone in allowed]
        skews.append(max(per_zone) - min(per_zone))
    if skews:
        print(
            f"zone spread (apps with spread_by: zone): max-min replicas per zone "
            f"median {statistics.median(skews):.0f}, worst {max(skews)} over {len(skews)} apps"
        )

    # A restarted or newly elected scheduler: rebuild from every retained assignment,
    # reconcile every app, find nothing to change.
    t0 = time.perf_counter()
    rebuilt = Cluster(seed=args.seed + 1, candidates=args.candidates)
    for message in messages:
        rebuilt.load(message, seen=0.0)
    for info in nodes:
        rebuilt.upsert_node(info, seen=0.0)
    for state in apps:
        rebuilt.set_app(app_key(state), state)
    moved = sum(rebuilt.reconcile(app_key(state)).changed for state in apps)
    t_rebuild = time.perf_counter() - t0
    print(
        f"takeover rebuild: {len(rebuilt.replicas)} replicas loaded and every app reconciled "
        f"in {t_rebuild:.2f} s ({moved} apps changed)"
    )

    # Node loss: the node running most replicas goes offline.
    victim = max(cluster.nodes.values(), key=lambda n: len(n.replicas))
    lost = len(victim.replicas)
    t0 = time.perf_counter()
    affected = cluster.lose_node(victim.id)
    replaced = sum(len(cluster.reconcile(key).placed) for key in sorted(affected))
    msgs = [cluster.assignment(n) for n in cluster.take_dirty()]
    t_loss = (time.perf_counter() - t0) * 1000
    print(
        f"node loss: {lost} replicas of {len(affected)} apps re-placed ({replaced}) and "
        f"{len(msgs)} assignments built in {t_loss:.1f} ms"
    )

    # Scale one app by +10 (several apps, median and max).
    times = []
    for state in rng.sample(apps, 20):
        key = app_key(state)
        bigger = scaled(state, 10)
        t0 = time.perf_counter()
        cluster.set_app(key, bigger)
        out = cluster.reconcile(key)
        msgs = [cluster.assignment(n) for n in cluster.take_dirty()]
        times.append((time.perf_counter() - t0) * 1000)
        assert len(out.placed) + sum(p.count for p in out.unplaceable) == 10
    print(
        f"scale one app +10 (20 apps): median {statistics.median(times):.2f} ms, "
        f"max {max(times):.2f} ms (placement and assignment messages)"
    )

    # Scale the largest app down by half (scale-down order over thousands of replicas).
    big = max(apps, key=lambda a: len(cluster.apps[app_key(a)].replicas))
    have = len(cluster.apps[app_key(big)].replicas)
    smaller = scaled(big, -(big.replicas // 2))
    t0 = time.perf_counter()
    cluster.set_app(app_key(big), smaller)
    out = cluster.reconcile(app_key(big))
    msgs = [cluster.assignment(n) for n in cluster.take_dirty()]
    t_down = (time.perf_counter() - t0) * 1000
    print(
        f"scale the largest app down ({have} -> {have - len(out.removed)} replicas): "
        f"{t_down:.0f} ms, {len(msgs)} assignments"
    )

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS of the process): {peak:.0f} MiB")


if __name__ == "__main__":
    main()
