"""Issue 14, part 5: a broker restart restarts no container and loses no desired state.

Real mosquitto (restarted with SIGTERM and started again on the same port), real Docker,
the whole stack, an app of 3 ready replicas under light load through the balancer. Without
broker persistence every retained message is gone after the restart: the controller must
republish the app, the scheduler its assignments, the agents and health their reports.
With persistence the broker brings its retained state back itself. Either way no container
is restarted or replaced and the cluster converges by itself. Run with ``-s`` for figures.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.test_agent_restart import containers, node_status, ready_counts
from tests.support.brokers import start_persistent_mosquitto
from tests.support.cluster import Cluster, wait_for
from tests.support.load import LoadLoop
from tests.support.procs import ProcGroup, start_broker

pytestmark = pytest.mark.e2e

SPEC = """
name: web
image: shoal-test/echo:v1
replicas: 3
resources: {cpu: 0.05, memory: 32Mi}
ports: {http: 8080}
health:
  readiness: {http: /healthz, port: http, interval: 500ms, timeout: 500ms, failures: 2}
route: {host: web.test, path: /, port: http}
termination: {drain: 500ms, grace: 2s}
"""

# The desired state of an app, as the controller retains it (what must not be lost).
DESIRED = ("namespace", "name", "revision", "generation", "spec", "replicas", "versions", "phase")


@pytest.fixture(params=["no-persistence", "persistence"])
def broker_cluster(
    request: pytest.FixtureRequest, procs: ProcGroup, echo_image: str
) -> Iterator[Cluster]:
    """The e2e ``cluster``, on mosquitto without or with persistence of retained state."""
    if request.param == "persistence":
        broker = start_persistent_mosquitto(procs)
    else:
        broker = start_broker(procs, "mosquitto")
    c = Cluster(procs, broker)
    try:
        yield c
    finally:
        c.close()


def desired(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """app name -> its retained desired state; {} while the broker does not answer."""
    try:
        apps = cluster.get_json("apps")
    except AssertionError:  # the CLI could not reach the broker
        return {}
    return {str(a["name"]): {k: a[k] for k in DESIRED} for a in apps}


def converged(cluster: Cluster, want: dict[str, dict[str, Any]]) -> bool:
    """Desired state retained again, the node ready, 3 replicas reported running and ready."""
    if desired(cluster) != want or node_status(cluster, "node-1") != "ready":
        return False
    replicas = [r for r in cluster.get_json("replicas") if r["app"] == "web"]
    return (
        len(replicas) == 3
        and all(r["phase"] == "running" for r in replicas)
        and ready_counts(cluster) == {"web": 3}
    )


def test_broker_restart_restarts_no_container_and_loses_no_desired_state(
    broker_cluster: Cluster,
) -> None:
    cluster = broker_cluster
    cluster.start()
    cluster.apply_text(SPEC, "--wait")
    wait_for(lambda: ready_counts(cluster) == {"web": 3}, 30, message="3 ready")
    before = containers(cluster)
    want = desired(cluster)
    replicas_before = {r["id"] for r in cluster.get_json("replicas")}
    assert len(before) == 3
    assert want["web"]["replicas"] == 3

    with LoadLoop("127.0.0.1", cluster.listen_port, vhost="web.test", workers=2) as load:
        wait_for(lambda: load.snapshot().ok > 200, 30, message="traffic before")
        restarted = time.monotonic()
        cluster.broker.restart()
        wait_for(lambda: converged(cluster, want), 60, interval=0.3, message="converged")
        took = time.monotonic() - restarted
        after = load.snapshot().ok
        wait_for(lambda: load.snapshot().ok > after + 500, 60, message="traffic after")
        result = load.stop()

    print(
        f"\nbroker restart: converged after {took:.1f} s; "
        f"{result.failed} of {result.total} requests failed {result.errors[:3]}"
    )
    assert containers(cluster) == before  # same containers, same start times
    assert {r["id"] for r in cluster.get_json("replicas")} == replicas_before
    assert all(int(r["restarts"]) == 0 for r in cluster.get_json("replicas"))  # type: ignore[call-overload]
    assert desired(cluster) == want
    assert result.failed == 0, (result.failed, result.total, result.errors[:5])
