"""Issue 16 item 2 on real Docker: the provisioner with the ``local`` provider.

One static node (1 cpu) and an app of 0.4-cpu replicas. Sizes ``small`` (0.5 cpu, 0.10/h,
one replica) and ``big`` (2 cpu, 1.00/h); a budget of 0.25/h, at most 3 nodes:

1. 3 replicas: one does not fit → one small node is added, every replica ready on it;
2. 5 replicas: two do not fit; ``big`` would hold both but is over the budget, so a
   second small node is added; the last replica is held at the maximum of 3 nodes;
3. the app deleted: the added nodes are drained and removed after the scale-down delay,
   one at a time, leaving the static node; no container of the cluster is left.

The figure (from "replicas unplaceable" to "all ready on the new node") is printed.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter

import pytest

from tests.support.cluster import Cluster, wait_for
from tests.support.load import LoadLoop
from tests.support.procs import Proc

pytestmark = pytest.mark.e2e

SPEC = """
name: grow
image: shoal-test/echo:v1
replicas: {replicas}
resources: {{cpu: 400m, memory: 32Mi}}
ports: {{http: 8080}}
health:
  readiness: {{http: /healthz, port: http, interval: 200ms, timeout: 500ms, failures: 1}}
route: {{host: grow.test, path: /, port: http}}
termination: {{drain: 200ms, grace: 2s}}
"""

MAX_NODES = 3


def nodes(cluster: Cluster) -> dict[str, dict[str, object]]:
    return {str(n["node"]): n for n in cluster.get_json("nodes")}


def cpu_of(node: dict[str, object]) -> float:
    capacity = node["capacity"]
    assert isinstance(capacity, dict)
    return float(capacity["cpu"])


def grow(cluster: Cluster) -> dict[str, object]:
    apps = [a for a in cluster.get_json("apps") if a["name"] == "grow"]
    return apps[0] if apps else {}


def unplaceable(cluster: Cluster) -> int:
    placement = grow(cluster).get("placement")
    return int(placement.get("unplaceable", 0)) if isinstance(placement, dict) else 0


def ready_nodes(cluster: Cluster) -> set[str]:
    return {name for name, n in nodes(cluster).items() if n["status"] == "ready"}


def replicas(cluster: Cluster) -> list[dict[str, object]]:
    return [r for r in cluster.get_json("replicas") if r.get("app") == "grow"]


def replicas_of(cluster: Cluster, app: str) -> list[dict[str, object]]:
    """The replicas of ``app`` the agents report running."""
    return [
        r
        for r in cluster.get_json("replicas")
        if r.get("app") == app and r.get("phase") == "running"
    ]


def grow_ready(cluster: Cluster, app: str) -> int:
    for a in cluster.get_json("apps"):
        if a["name"] == app:
            return int(str(a["ready"]))
    return 0


def all_ready(cluster: Cluster, count: int) -> bool:
    app = grow(cluster)
    return bool(app) and app["ready"] == count and app["desired"] == count


def follow_events(cluster: Cluster) -> Proc:
    argv = [sys.executable, "-m", "services.cli", "events", "-f"]
    env = {"SHOAL_BROKER": cluster.broker.url, "SHOAL_PREFIX": cluster.prefix}
    return cluster.procs.spawn("events", argv, env={**os.environ, **env})


def test_nodes_added_on_demand_and_removed_when_empty(cluster: Cluster) -> None:
    cluster.start(agents={})
    cluster.start_agent("static", "127.0.0.2", "--cpus", "1", "--memory", "1Gi")
    events = follow_events(cluster)
    provisioner = cluster.procs.service(
        "provisioner",
        cluster.broker.url,
        "--provider",
        "local",
        "--size",
        "small=500m,256Mi,0.10",
        "--size",
        "big=2,2Gi,1.00",
        "--budget",
        "0.25",
        "--min-nodes",
        "1",
        "--max-nodes",
        str(MAX_NODES),
        "--scale-up-cooldown",
        "1s",
        "--scale-down-cooldown",
        "2s",
        "--scale-down-after",
        "3s",
        "--node-prefix",
        "auto-",
        "--local-first-address",
        "127.0.0.30",
        prefix=cluster.prefix,
    )
    cluster.wait_serving()
    wait_for(lambda: ready_nodes(cluster) == {"static"}, 60, message="the static node ready")
    seen_nodes: set[str] = set()
    most = 0

    def watch() -> set[str]:
        nonlocal most
        current = set(nodes(cluster))
        seen_nodes.update(current)
        most = max(most, len(current))
        return current

    # 1. one replica does not fit: a small node is added and takes it
    cluster.apply_text(SPEC.format(replicas=3))
    started = time.monotonic()  # the static node cannot take the third replica from now on
    wait_for(lambda: all_ready(cluster, 3) and watch() is not None, 180, message="3 ready")
    elapsed = time.monotonic() - started
    added = ready_nodes(cluster) - {"static"}
    assert len(added) == 1, nodes(cluster)
    (first,) = added
    assert first.startswith("auto-")
    info = nodes(cluster)[first]
    assert cpu_of(info) == pytest.approx(0.5), info
    on_new = [r for r in replicas(cluster) if r["node"] == first]
    assert len(on_new) == 1
    assert "unplaceable: 1 of default/grow" in provisioner.output()
    print(f"\nFIGURE unplaceable -> all ready on a new node: {elapsed:.2f} s")

    # 2. two more: big would hold both but is over the budget; a second small node,
    # then the maximum of 3 nodes holds the last one
    cluster.shoal("scale", "grow", "5")
    wait_for(lambda: len(ready_nodes(cluster)) == MAX_NODES, 180, message="a second node")
    wait_for(
        lambda: "at the maximum of 3 nodes" in provisioner.output(),
        120,
        message="the scale-up held at the maximum",
    )
    wait_for(lambda: grow(cluster).get("ready") == 4, 120, message="4 of 5 ready")
    assert len(watch()) == MAX_NODES
    for name in ready_nodes(cluster) - {"static"}:
        assert cpu_of(nodes(cluster)[name]) == pytest.approx(0.5)  # never big
    assert grow(cluster)["ready"] == 4
    assert unplaceable(cluster) == 1

    # 3. the app gone: the added nodes are drained and removed, the static one stays
    cluster.shoal("delete", "app", "grow")
    wait_for(lambda: set(watch()) == {"static"}, 240, message="the added nodes removed")
    wait_for(lambda: not cluster.containers(all_states=True), 120, message="no container left")
    assert most <= MAX_NODES
    log = provisioner.output()
    assert log.count("node asked for") == 2, log[-3000:]
    assert "draining" in log
    assert log.count("node removed") == 2
    wait_for(
        lambda: "asked for" in events.output() and "removed" in events.output(),
        60,
        message="the decisions as events",
    )
    assert "held" in events.output()


MANY = """
name: many
image: shoal-test/echo:v1
replicas: 4
resources: {cpu: 200m, memory: 32Mi}
ports: {http: 8080}
health:
  readiness: {http: /healthz, port: http, interval: 200ms, timeout: 500ms, failures: 1}
route: {host: many.test, path: /, port: http}
termination: {drain: 500ms, grace: 2s}
"""
EXTRA = """
name: extra
image: shoal-test/echo:v1
resources: {cpu: 400m, memory: 32Mi}
ports: {http: 8080}
"""


def test_rebalance_after_a_node_joined_fails_no_request(cluster: Cluster) -> None:
    """``many`` fills the static node; ``extra`` does not fit, so a node is added; the
    provisioner (``--rebalance``) then has the scheduler move one replica of ``many``
    onto it, readiness-gated, under load through the balancer: no request fails."""
    cluster.start(agents={})
    cluster.start_agent("static", "127.0.0.2", "--cpus", "1", "--memory", "1Gi")
    provisioner = cluster.procs.service(
        "provisioner",
        cluster.broker.url,
        "--size",
        "one=1,1Gi,0",
        "--max-nodes",
        "2",
        "--scale-up-cooldown",
        "1s",
        "--scale-down-after",
        "10m",
        "--rebalance",
        "--rebalance-after",
        "2s",
        "--local-first-address",
        "127.0.0.50",
        prefix=cluster.prefix,
    )
    cluster.wait_serving()
    cluster.apply_text(MANY, "--wait")
    assert Counter(str(r["node"]) for r in replicas_of(cluster, "many")) == {"static": 4}
    with LoadLoop("127.0.0.1", cluster.listen_port, vhost="many.test", workers=2) as load:
        wait_for(lambda: load.snapshot().ok > 100, 60, message="traffic flowing")
        cluster.apply_text(EXTRA)
        wait_for(
            lambda: "moves=1 reason='node(s) auto-" in provisioner.output(),
            120,
            message="a rebalance moving one replica",
        )

        def spread() -> Counter[str]:
            return Counter(str(r["node"]) for r in replicas_of(cluster, "many"))

        wait_for(
            lambda: sorted(spread().values()) == [1, 3] and grow_ready(cluster, "many") == 4,
            120,
            message="one replica of many moved to the new node",
        )
        before = load.snapshot().ok
        wait_for(lambda: load.snapshot().ok > before + 100, 60, message="traffic after the move")
        result = load.stop()
    assert result.failed == 0, (result.failed, result.total, result.errors[:5])
    (added,) = set(spread()) - {"static"}
    assert added.startswith("auto-")
