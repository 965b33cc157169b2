"""Probes the agent owns (core/README.md, "Probes"), on a real broker and real Docker.

- liveness verdicts of the health monitor (``health/<ns>/<app>``, ``live=False``) restart
  the current container start, once; stale verdicts and other nodes' verdicts do nothing;
- exec probes run inside the container: readiness reported as ``exec_ready``, liveness
  failure restarts the container; probe state resets with the restart;
- the whole stack: an http liveness probe on ``/healthz`` judged by the health monitor,
  ``/cgi-bin/unhealthy`` on one replica, the agent restarts it and it is healthy again.

The echo image empties ``/tmp`` and rewrites ``/www/healthz`` at every start, so a marker
lasts until the container restarts (configs/images/echo/README.md).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from core.channels import HEALTH, NODE_REPLICAS
from core.spec import AppSpec
from core.state import AppHealth, NodeReplicas, ReplicaHealth, ReplicaStatus
from tests.e2e.test_agent import (
    Rig,
    docker,
    echo_spec,
    http_get,
    new_replicas,
    remove_prefix_containers,
)
from tests.support.cluster import Cluster
from tests.support.images import BUILD_SCRIPT
from tests.support.observer import Observer
from tests.support.procs import ProcGroup, start_broker

pytestmark = pytest.mark.e2e


def ensure_per_start_image(image: str) -> None:
    """An echo image built before ``start.sh`` emptied ``/tmp`` at start is rebuilt."""
    probe = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--entrypoint",
            "/bin/grep",
            image,
            "-q",
            "rm -rf /tmp/",
            "/start.sh",
        ],
        capture_output=True,
        timeout=60,
    )
    if probe.returncode != 0:
        subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, timeout=300)


@pytest.fixture
async def rig(procs: ProcGroup, prefix: str, echo_image: str) -> AsyncIterator[Rig]:
    ensure_per_start_image(f"{echo_image}:v1")
    broker = start_broker(procs, "mosquitto")
    try:
        async with Observer(broker.url, prefix) as obs:
            yield Rig(procs, broker, prefix, obs)
            procs.close()
    finally:
        remove_prefix_containers(prefix)


def exec_in(container_id: str, *command: str) -> None:
    docker("exec", container_id, *command)


async def publish_health(rig: Rig, spec: AppSpec, *replicas: ReplicaHealth) -> None:
    """Act as the health monitor: the retained ``health/<ns>/<app>`` value."""
    value = AppHealth(
        namespace=spec.namespace, name=spec.name, replicas=list(replicas), ts=time.time()
    )
    await rig.obs.bus.publish(HEALTH, value)


def not_live(
    status: ReplicaStatus, *, node: str = "n1", started_at: float | None = None
) -> ReplicaHealth:
    return ReplicaHealth(
        id=status.id,
        revision=status.revision,
        node=node,
        endpoint=status.endpoints.get("http", ""),
        ready=False,
        live=False,
        started_at=status.started_at if started_at is None else started_at,
        reason="liveness: HTTP 404",
    )


async def restarted_once(rig: Rig, rid: str, before: ReplicaStatus) -> ReplicaStatus:
    def check() -> ReplicaStatus | None:
        s = rig.report().get(rid)
        if s is not None and s.phase == "running" and s.started_at != before.started_at:
            return s
        return None

    status: ReplicaStatus = await rig.wait(check, 20, f"{rid} restarted")
    return status


# -- liveness verdicts from the health monitor -----------------------------------------


async def test_a_not_live_verdict_restarts_the_current_start_once(rig: Rig) -> None:
    rig.start_agent()
    spec = echo_spec("lv", termination={"drain": "0s", "grace": "1s"})
    a, b = new_replicas(spec, 2)
    await rig.assign("n1", [a, b], spec)
    first = await rig.wait_phases("n1", [a.id, b.id], "running")
    sa, sb = first[a.id], first[b.id]

    # A verdict about another node's replica of the same id, and one about a start that
    # is not the current one: nothing happens.
    await publish_health(
        rig, spec, not_live(sa, node="n2"), not_live(sb, started_at=(sb.started_at or 0) - 60)
    )
    await asyncio.sleep(1.0)
    report = rig.report()
    assert (report[a.id].restarts, report[a.id].started_at) == (0, sa.started_at)
    assert (report[b.id].restarts, report[b.id].started_at) == (0, sb.started_at)

    # live=False about a's current start: restarted in place, counted, an event.
    await publish_health(rig, spec, not_live(sa))
    now = await restarted_once(rig, a.id, sa)
    assert now.restarts == 1
    assert now.container_id == sa.container_id  # restarted, not replaced
    assert now.reason.startswith("last exit: liveness")
    code, _ = await asyncio.to_thread(http_get, now.endpoints["http"], "/healthz")
    assert code == 200
    (event,) = await rig.wait(lambda: rig.events("liveness_restart"), 5, "liveness event")
    assert (event.replica, event.node, event.app) == (a.id, "n1", "lv")
    assert event.data["source"] == "health"
    assert event.data["restarts"] == 1
    assert event.data["started_at"] == sa.started_at

    # The stale verdict (still retained, about the previous start) never restarts the new
    # start; nor does re-publishing it.
    await publish_health(rig, spec, not_live(sa))
    await asyncio.sleep(1.5)
    report = rig.report()
    assert (report[a.id].restarts, report[a.id].started_at) == (1, now.started_at)
    assert report[b.id].restarts == 0
    assert len(rig.events("liveness_restart")) == 1

    # A new verdict about the new start restarts it again.
    await publish_health(rig, spec, not_live(now))
    again = await restarted_once(rig, a.id, now)
    assert again.restarts == 2


# -- exec probes -----------------------------------------------------------------------


def exec_spec(name: str = "ex", **probes: Any) -> AppSpec:
    return echo_spec(
        name,
        termination={"drain": "0s", "grace": "1s"},
        health={
            "readiness": {
                "exec": ["/bin/sh", "-c", "test -f /tmp/ready"],
                "interval": "200ms",
                "timeout": "2s",
            },
            "liveness": {
                "exec": ["/bin/sh", "-c", "test ! -f /tmp/dead"],
                "interval": "200ms",
                "timeout": "2s",
                "failures": 2,
                "initial_delay": "300ms",
            },
            **probes,
        },
    )


async def test_exec_readiness_and_exec_liveness(rig: Rig) -> None:
    rig.start_agent()
    spec = exec_spec()
    a, b = new_replicas(spec, 2)
    await rig.assign("n1", [a, b], spec)
    await rig.wait_phases("n1", [a.id, b.id], "running")

    def exec_ready(rid: str, value: bool | None) -> ReplicaStatus | None:
        s = rig.report().get(rid)
        return s if s is not None and s.phase == "running" and s.exec_ready is value else None

    # A verdict after the first probe: not ready until /tmp/ready exists.
    sa = await rig.wait(lambda: exec_ready(a.id, False), 10, "a exec_ready False")
    await rig.wait(lambda: exec_ready(b.id, False), 10, "b exec_ready False")
    exec_in(sa.container_id, "touch", "/tmp/ready")
    await rig.wait(lambda: exec_ready(a.id, True), 5, "a exec_ready True")
    assert rig.report()[b.id].exec_ready is False
    exec_in(sa.container_id, "rm", "/tmp/ready")
    await rig.wait(lambda: exec_ready(a.id, False), 5, "a not ready again")
    exec_in(sa.container_id, "touch", "/tmp/ready")
    sa = await rig.wait(lambda: exec_ready(a.id, True), 5, "a ready again")

    # The exec liveness probe fails twice: the agent restarts the container in place.
    exec_in(sa.container_id, "touch", "/tmp/dead")
    now = await restarted_once(rig, a.id, sa)
    assert now.restarts == 1
    assert now.container_id == sa.container_id
    (event,) = await rig.wait(lambda: rig.events("liveness_restart"), 5, "liveness event")
    assert event.replica == a.id
    assert event.data["source"] == "exec"
    assert "exec probe" in str(event.data["reason"])

    # Probe state belongs to the container start: the new one has no /tmp/ready (the
    # image empties /tmp at start), so it is judged afresh and reported not ready.
    await rig.wait(lambda: exec_ready(a.id, False), 5, "a judged afresh")
    exec_in(now.container_id, "touch", "/tmp/ready")
    await rig.wait(lambda: exec_ready(a.id, True), 5, "a ready after the restart")
    await asyncio.sleep(1.0)  # /tmp/dead went with the restart: no second restart
    report = rig.report()
    assert (report[a.id].restarts, report[a.id].started_at) == (1, now.started_at)
    assert (report[b.id].restarts, report[b.id].exec_ready) == (0, False)


async def test_exec_readiness_survives_an_agent_restart(rig: Rig) -> None:
    """A restarted agent continues from its retained verdict: no flap to "no verdict"."""
    agent = rig.start_agent()
    spec = exec_spec("keep")
    (a,) = new_replicas(spec, 1)
    await rig.assign("n1", [a], spec)
    first = (await rig.wait_phases("n1", [a.id], "running"))[a.id]
    exec_in(first.container_id, "touch", "/tmp/ready")
    await rig.wait(lambda: (s := rig.report().get(a.id)) and s.exec_ready is True, 10, "exec ready")
    agent.kill()  # kill -9
    restarted_at = time.monotonic()
    rig.start_agent()
    await rig.wait(
        lambda: (i := rig.info()) and i.status == "ready" and i.heartbeat > time.time() - 1,
        20,
        "agent back",
    )
    await asyncio.sleep(1.0)
    topic = rig.obs.topic(NODE_REPLICAS, "n1")
    after = [
        env.open(NodeReplicas)
        for t0, t, env in rig.obs.seen
        if t == topic and env is not None and t0 > restarted_at
    ]
    assert after, "the restarted agent reported"
    verdicts = [r.exec_ready for report in after for r in report.replicas if r.id == a.id]
    assert verdicts
    assert set(verdicts) == {True}
    assert rig.report()[a.id].restarts == 0


async def test_exec_probe_timeout_counts_as_failure(rig: Rig) -> None:
    rig.start_agent()
    spec = exec_spec(
        "slow",
        readiness={"exec": ["/bin/sleep", "5"], "interval": "300ms", "timeout": "300ms"},
        liveness={
            "exec": ["/bin/sh", "-c", "test ! -f /tmp/hang || sleep 5"],
            "interval": "200ms",
            "timeout": "300ms",
            "failures": 2,
        },
    )
    (a,) = new_replicas(spec, 1)
    await rig.assign("n1", [a], spec)
    first = (await rig.wait_phases("n1", [a.id], "running"))[a.id]
    await rig.wait(
        lambda: (s := rig.report().get(a.id)) and s.exec_ready is False, 10, "timed out: unready"
    )
    # The engine cannot kill a timed-out exec: no second one starts while it still runs.
    await asyncio.sleep(1.5)
    top = docker("top", first.container_id).splitlines()
    assert len([line for line in top if "sleep 5" in line]) == 1, top
    assert rig.report()[a.id].exec_ready is False
    exec_in(first.container_id, "touch", "/tmp/hang")
    now = await restarted_once(rig, a.id, first)
    assert now.restarts == 1
    (event,) = await rig.wait(lambda: rig.events("liveness_restart"), 5, "liveness event")
    assert "timed out after 0.3s" in str(event.data["reason"])


# -- the whole stack: http liveness judged by the health monitor -----------------------

LIVE_APP = """
name: lively
image: shoal-test/echo:v1
replicas: 2
resources: {cpu: 0.05, memory: 32Mi}
ports: {http: 8080}
termination: {drain: 0s, grace: 1s}
health:
  readiness: {http: /healthz, port: http, interval: 300ms, timeout: 1s, failures: 1}
  liveness: {http: /healthz, port: http, interval: 300ms, timeout: 1s, failures: 2}
route: {host: lively.test, path: /, port: http}
"""


def replicas_json(cluster: Cluster) -> dict[str, dict[str, Any]]:
    out = cluster.shoal("get", "replicas", "-o", "json").stdout
    return {r["id"]: r for r in json.loads(out) if r["app"] == "lively"}


def test_http_liveness_failure_restarts_the_replica(
    procs: ProcGroup, cluster: Cluster, echo_image: str
) -> None:
    ensure_per_start_image(f"{echo_image}:v1")
    cluster.start()
    cluster.apply_text(LIVE_APP, "--wait")
    before = replicas_json(cluster)
    assert len(before) == 2
    assert all(r["restarts"] == 0 and r["ready"] for r in before.values())
    victim_id, other_id = sorted(before)
    victim = before[victim_id]
    endpoint = victim["endpoints"]["http"]
    assert http_get(endpoint, "/healthz")[0] == 200

    assert http_get(endpoint, "/cgi-bin/unhealthy")[0] == 200
    assert http_get(endpoint, "/healthz")[0] == 404
    unhealthy_at = time.monotonic()

    def restarted() -> dict[str, Any] | None:
        r = replicas_json(cluster).get(victim_id)
        if r and r["restarts"] >= 1 and r["phase"] == "running" and r["ready"]:
            return r
        return None

    deadline = time.monotonic() + 30
    after: dict[str, Any] | None = None
    while after is None and time.monotonic() < deadline:
        after = restarted()
        time.sleep(0.2)
    assert after is not None, "the unhealthy replica was not restarted and ready again"
    took = time.monotonic() - unhealthy_at
    assert after["restarts"] == 1
    assert after["started_at"] != victim["started_at"]
    assert after["container_id"] == victim["container_id"]
    assert http_get(after["endpoints"]["http"], "/healthz")[0] == 200

    # Health judges the new start afresh: no second restart from the old verdict, and
    # the other replica was never touched.
    time.sleep(2.0)
    now = replicas_json(cluster)
    assert now[victim_id]["restarts"] == 1
    assert now[victim_id]["started_at"] == after["started_at"]
    assert now[other_id]["restarts"] == 0
    assert now[other_id]["started_at"] == before[other_id]["started_at"]
    assert cluster.get("/", host="lively.test").status == 200
    print(f"unhealthy -> restarted and ready in {took:.2f}s")
