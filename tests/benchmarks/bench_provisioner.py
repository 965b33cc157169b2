"""Nodes on demand: from "replicas unplaceable" to "all ready on a new node".

Run by hand (not collected by pytest)::

    python -m tests.benchmarks.bench_provisioner [--runs 3]

A whole cluster of real processes on mosquitto and Docker: one static node (1 cpu), an app
of 0.4-cpu replicas (``shoal-test/echo``, readiness probed every 200 ms) at 2 replicas, and
the provisioner with the ``local`` provider (size ``small``: 0.5 cpu). Each run:

1. **new node**: scale 2 -> 3. Timed from the scheduler's status first saying a replica is
   unplaceable to health first reporting 3 ready, with the new node's first ready
   ``info`` along the way (the provisioner's decision plus the agent's start);
2. **reference**, in the same run: scale 3 -> 2 -> 3 while the added node is still there
   (empty): the same replica placed where there is room, timed from the controller's
   record at 3 to 3 ready;
3. scale to 2 and wait until the provisioner removed the node (scale-down after 20 s).
"""

from __future__ import annotations

import argparse
import statistics
import time

from core.channels import APPS, HEALTH, NODE_INFO, SCHEDULER_STATUS
from core.keys import AppKey
from core.state import AppHealth, AppState, NodeInfo, SchedulerStatus
from tests.e2e.test_autoscale import BusWatch
from tests.support.cluster import Cluster, wait_for
from tests.support.images import ensure_echo_image
from tests.support.procs import proc_group, start_broker

KEY = AppKey("default", "grow")
SPEC = """
name: grow
image: shoal-test/echo:v1
replicas: 2
resources: {cpu: 400m, memory: 32Mi}
ports: {http: 8080}
health:
  readiness: {http: /healthz, port: http, interval: 200ms, timeout: 500ms, failures: 1}
route: {host: grow.test, path: /, port: http}
termination: {drain: 200ms, grace: 2s}
"""
PROVISIONER_ARGS = [
    "--size", "small=500m,256Mi,0.10",
    "--max-nodes", "2",
    "--scale-up-cooldown", "1s",
    "--scale-down-cooldown", "1s",
    "--scale-down-after", "20s",
    "--local-first-address", "127.0.0.40",
]  # fmt: skip


def first(watch: BusWatch, since: float, test: object) -> float | None:
    """When the first message after ``since`` passing ``test(topic, env)`` arrived."""
    for ts, topic, env in list(watch.observer.seen):
        if ts >= since and env is not None and test(topic, env):  # type: ignore[operator]
            return ts
    return None


def unplaceable_at(watch: BusWatch, since: float) -> float | None:
    topic = watch.observer.topic(SCHEDULER_STATUS, KEY)
    return first(
        watch, since, lambda t, e: t == topic and e.open(SchedulerStatus, lenient=True).unplaceable
    )


def ready_at(watch: BusWatch, since: float, count: int) -> float | None:
    topic = watch.observer.topic(HEALTH, KEY)
    return first(
        watch,
        since,
        lambda t, e: t == topic and len(e.open(AppHealth, lenient=True).ready) >= count,
    )


def desired_at(watch: BusWatch, since: float, count: int) -> float | None:
    topic = watch.observer.topic(APPS, KEY)
    return first(
        watch, since, lambda t, e: t == topic and e.open(AppState, lenient=True).replicas == count
    )


def node_ready_at(watch: BusWatch, since: float) -> float | None:
    return first(
        watch,
        since,
        lambda t, e: (
            "/nodes/auto-" in t
            and t.endswith("/info")
            and e.open(NodeInfo, lenient=True).status == "ready"
        ),
    )


def added_nodes(watch: BusWatch) -> list[str]:
    return [n for n in watch.observer.values(NODE_INFO) if n.startswith("auto-")]


def run_once(cluster: Cluster, watch: BusWatch) -> tuple[float, float, float]:
    start = time.monotonic()
    cluster.shoal("scale", "grow", "3")
    wait_for(lambda: ready_at(watch, start, 3), 120, message="3 ready on a new node")
    unplaceable = unplaceable_at(watch, start)
    ready = ready_at(watch, start, 3)
    node = node_ready_at(watch, start)
    assert unplaceable is not None
    assert ready is not None
    assert node is not None
    new_node = ready - unplaceable
    joined = node - unplaceable

    cluster.shoal("scale", "grow", "2")
    wait_for(lambda: watch.ready("grow") == 2, 30, message="back to 2")
    again = time.monotonic()
    cluster.shoal("scale", "grow", "3")
    wait_for(lambda: ready_at(watch, again, 3), 60, message="3 ready where there is room")
    asked, done = desired_at(watch, again, 3), ready_at(watch, again, 3)
    assert asked is not None
    assert done is not None
    if unplaceable_at(watch, again) is not None:
        raise RuntimeError("the reference run found no room: the node was removed too early")
    reference = done - asked

    cluster.shoal("scale", "grow", "2")
    wait_for(lambda: not added_nodes(watch), 120, message="the added node removed")
    return new_node, joined, reference


def line(name: str, values: list[float]) -> str:
    return (
        f"{name}: median {statistics.median(values):.2f} s "
        f"(min {min(values):.2f}, max {max(values):.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    ensure_echo_image()
    with proc_group("shoal-bench-") as procs:
        broker = start_broker(procs, "mosquitto")
        cluster = Cluster(procs, broker)
        try:
            cluster.start(agents={})
            cluster.start_agent("static", "127.0.0.2", "--cpus", "1", "--memory", "1Gi")
            procs.service("provisioner", broker.url, *PROVISIONER_ARGS, prefix=cluster.prefix)
            cluster.wait_serving()
            with BusWatch(cluster) as watch:
                cluster.apply_text(SPEC, "--wait")
                new_node, joined, reference = [], [], []
                for i in range(args.runs):
                    a, b, c = run_once(cluster, watch)
                    print(
                        f"  run {i + 1}: unplaceable -> all ready on a new node {a:.2f} s "
                        f"(node ready after {b:.2f} s); room already there: {c:.2f} s"
                    )
                    new_node.append(a)
                    joined.append(b)
                    reference.append(c)
                print(line("unplaceable -> all ready on a new node", new_node))
                print(line("  of which: unplaceable -> the new node ready", joined))
                print(line("reference: scale-up with room -> all ready", reference))
        except Exception:
            print(procs.dump())
            raise
        finally:
            cluster.close()


if __name__ == "__main__":
    main()
