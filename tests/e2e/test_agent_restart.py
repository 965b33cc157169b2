"""Issue 14, part 1: an agent restart is invisible; real node loss still moves replicas.

Real mosquitto + Docker, the whole stack, traffic through the balancer. Run with ``-s`` to
see the figures (failed requests, time from node death to replicas serving elsewhere).
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter

import pytest

from tests.support.cluster import Cluster, wait_for
from tests.support.load import LoadLoop, LoadResult

pytestmark = pytest.mark.e2e

# One app with an http readiness probe, one without any (health checks its endpoint by
# TCP while the agent is away).
PROBED = """
name: probed
image: shoal-test/echo:v1
replicas: {replicas}
resources: {{cpu: 0.05, memory: 32Mi}}
ports: {{http: 8080}}
health:
  readiness: {{http: /healthz, port: http, interval: 500ms, timeout: 500ms, failures: 2}}
route: {{host: probed.test, path: /, port: http}}
termination: {{drain: 500ms, grace: 2s}}
"""

PLAIN = """
name: plain
image: shoal-test/echo:v1
replicas: {replicas}
resources: {{cpu: 0.05, memory: 32Mi}}
ports: {{http: 8080}}
route: {{host: plain.test, path: /, port: http}}
termination: {{drain: 500ms, grace: 2s}}
"""


def containers(cluster: Cluster, node: str | None = None) -> dict[str, tuple[str, str]]:
    """container id -> (replica id, start time), of this cluster's running containers."""
    argv = ["docker", "ps", "-q", "--filter", f"label=shoal.prefix={cluster.prefix}"]
    if node is not None:
        argv += ["--filter", f"label=shoal.node={node}"]
    ids = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
    if not ids:
        return {}
    fmt = '{{.Id}} {{index .Config.Labels "shoal.replica"}} {{.State.StartedAt}}'
    out = subprocess.run(
        ["docker", "inspect", "--format", fmt, *ids], capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return {cid: (replica, started) for cid, replica, started in rows}


def node_status(cluster: Cluster, node: str) -> str:
    return next((str(n["status"]) for n in cluster.get_json("nodes") if n["node"] == node), "")


def ready_counts(cluster: Cluster) -> dict[str, int]:
    return {str(a["name"]): int(a["ready"]) for a in cluster.get_json("apps")}  # type: ignore[call-overload]


def serving_nodes(cluster: Cluster, app: str) -> Counter[str]:
    """Nodes of the replicas health finds ready (what the balancer routes to)."""
    return Counter(
        str(r["node"]) for r in cluster.get_json("replicas") if r["app"] == app and r["ready"]
    )


def report(what: str, result: LoadResult) -> None:
    print(f"\n{what}: {result.failed} of {result.total} requests failed {result.errors[:3]}")


def test_agent_kill_9_under_load_fails_no_request_and_restarts_no_container(
    cluster: Cluster,
) -> None:
    cluster.start()
    cluster.apply_text(PROBED.format(replicas=3), "--wait")
    cluster.apply_text(PLAIN.format(replicas=3), "--wait")
    wait_for(lambda: ready_counts(cluster) == {"probed": 3, "plain": 3}, 30, message="6 ready")
    before = containers(cluster)
    replicas_before = {r["id"] for r in cluster.get_json("replicas")}
    assert len(before) == 6

    lb = ("127.0.0.1", cluster.listen_port)
    with (
        LoadLoop(*lb, vhost="probed.test", workers=2) as probed,
        LoadLoop(*lb, vhost="plain.test", workers=2) as plain,
    ):
        wait_for(lambda: probed.snapshot().ok > 200 and plain.snapshot().ok > 200, 30)
        cluster.agents["node-1"].kill()  # kill -9: the broker publishes its last will
        wait_for(lambda: node_status(cluster, "node-1") == "offline", 30, message="last will")
        # While the agent is away traffic keeps flowing to the same replicas: health
        # probes them (the plain ones by TCP) and the scheduler replaces nothing.
        down = probed.snapshot().total + plain.snapshot().total
        wait_for(
            lambda: probed.snapshot().total + plain.snapshot().total > down + 1000,
            60,
            message="1000 requests while the agent is away",
        )
        assert ready_counts(cluster) == {"probed": 3, "plain": 3}
        assert {r["id"] for r in cluster.get_json("replicas")} == replicas_before

        cluster.start_agent("node-1", "127.0.0.1")
        wait_for(lambda: node_status(cluster, "node-1") == "ready", 30, message="agent back")
        wait_for(
            lambda: (
                all(r["phase"] == "running" for r in cluster.get_json("replicas"))
                and ready_counts(cluster) == {"probed": 3, "plain": 3}
            ),
            30,
            message="re-reported",
        )
        back = probed.snapshot().total + plain.snapshot().total
        wait_for(lambda: probed.snapshot().total + plain.snapshot().total > back + 500, 60)
        results = probed.stop(), plain.stop()

    for name, result in zip(("probed", "plain"), results, strict=True):
        report(f"agent kill -9, app {name}", result)
        assert result.failed == 0, (result.failed, result.total, result.errors[:5])
    assert containers(cluster) == before  # same containers, same start times: no restart
    assert {r["id"] for r in cluster.get_json("replicas")} == replicas_before
    assert all(int(r["restarts"]) == 0 for r in cluster.get_json("replicas"))  # type: ignore[call-overload]


def two_nodes(cluster: Cluster, *scheduler_args: str) -> None:
    cluster.start(agents={})
    if scheduler_args:
        # the same scheduler with a short lost grace (a restarted scheduler moves nothing)
        cluster.services["scheduler"].stop()
        cluster.services["scheduler"] = cluster.procs.service(
            "scheduler", cluster.broker.url, *scheduler_args, prefix=cluster.prefix
        )
    for node, address in (("n1", "127.0.0.2"), ("n2", "127.0.0.3")):
        cluster.start_agent(node, address, "--cpus", "2", "--memory", "2Gi")
    wait_for(
        lambda: [n["status"] for n in cluster.get_json("nodes")] == ["ready", "ready"],
        30,
        message="2 nodes ready",
    )


@pytest.mark.parametrize("spec", [PROBED, PLAIN], ids=["readiness-probe", "no-probe"])
def test_real_node_loss_moves_replicas(cluster: Cluster, spec: str) -> None:
    two_nodes(cluster)
    name = "probed" if spec is PROBED else "plain"
    cluster.apply_text(spec.format(replicas=2), "--wait")
    wait_for(lambda: serving_nodes(cluster, name) == Counter({"n1": 1, "n2": 1}), 30)

    with LoadLoop("127.0.0.1", cluster.listen_port, vhost=f"{name}.test", workers=2) as load:
        wait_for(lambda: load.snapshot().ok > 200, 30)
        # the node dies: its agent and its containers
        cluster.agents["n2"].kill()
        died = time.monotonic()
        subprocess.run(
            ["docker", "rm", "-f", *containers(cluster, "n2")], capture_output=True, check=True
        )
        wait_for(
            lambda: serving_nodes(cluster, name) == Counter({"n1": 2}),
            30,
            interval=0.1,
            message="replicas serving on n1",
        )
        moved = time.monotonic() - died
        result = load.stop()
    report(f"node loss ({name}): replicas serving elsewhere after {moved:.1f} s", result)
    assert len(containers(cluster, "n1")) == 2
    assert [r["node"] for r in cluster.get_json("replicas") if r["app"] == name].count("n1") == 2


def test_a_node_silent_past_the_grace_is_replaced_and_its_return_leaves_no_duplicate(
    cluster: Cluster,
) -> None:
    two_nodes(cluster, "--lost-grace", "3")
    cluster.apply_text(PROBED.format(replicas=2), "--wait")
    wait_for(lambda: serving_nodes(cluster, "probed") == Counter({"n1": 1, "n2": 1}), 30)
    [(stale, _)] = containers(cluster, "n2").values()

    # n2's agent is gone but its container runs on: after the 3 s lost grace the
    # scheduler replaces it, and it leaves rotation though its probes still pass
    most = 0
    cluster.agents["n2"].kill()
    deadline = time.monotonic() + 60
    while serving_nodes(cluster, "probed") != Counter({"n1": 2}):
        most = max(most, sum(serving_nodes(cluster, "probed").values()))
        assert time.monotonic() < deadline, "n2's replica was not replaced"
    assert stale in {replica for replica, _ in containers(cluster, "n2").values()}

    # the node comes back: its agent removes what it is no longer assigned
    cluster.start_agent("n2", "127.0.0.3", "--cpus", "2", "--memory", "2Gi")
    deadline = time.monotonic() + 60
    while containers(cluster, "n2"):
        most = max(most, sum(serving_nodes(cluster, "probed").values()))
        assert time.monotonic() < deadline, "stale replica on n2 not removed"
    assert most <= 2  # never more replicas in rotation than desired
    assert serving_nodes(cluster, "probed") == Counter({"n1": 2})
