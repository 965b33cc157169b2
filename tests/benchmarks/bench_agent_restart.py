"""Issue 14, part 1: what an agent restart and a real node death cost, under load.

Two nodes on one engine (n1 = 127.0.0.2, n2 = 127.0.0.3), real mosquitto, the whole stack,
two apps of 4 replicas each (``probed``: http readiness every 500 ms, 2 failures;
``plain``: no probe, TCP-checked by health while its agent is away), 2 load workers per
app through the balancer. Prints, for ``ROUNDS`` rounds of ``kill -9`` of n2's agent (down
for 3 s, then restarted): failed requests, containers restarted, replicas replaced. Then
n2 dies for real (agent ``kill -9`` and its containers removed): time from the death to
health finding the replicas gone (detection), to the scheduler's new assignment, and to
all replicas ready (serving) on n1, per app, with the failed requests.

    .venv/bin/python -m tests.benchmarks.bench_agent_restart [ROUNDS]     (default: 3)
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from core.channels import HEALTH, NODE_ASSIGN
from core.codec import Envelope
from core.keys import AppKey
from core.state import AppHealth, NodeAssignment
from tests.support.cluster import Cluster, wait_for
from tests.support.images import ensure_echo_image
from tests.support.load import LoadLoop
from tests.support.observer import Observer
from tests.support.procs import proc_group, start_broker

APPS = {
    "probed": "health:\n  readiness: {http: /healthz, port: http, interval: 500ms, "
    "timeout: 500ms, failures: 2}\n",
    "plain": "",
}
SPEC = """
name: {name}
image: shoal-test/echo:v1
replicas: 4
resources: {{cpu: 0.05, memory: 32Mi}}
ports: {{http: 8080}}
{health}route: {{host: {name}.test, path: /, port: http}}
termination: {{drain: 500ms, grace: 2s}}
"""
NODES = {"n1": "127.0.0.2", "n2": "127.0.0.3"}


def containers(cluster: Cluster, node: str | None = None) -> dict[str, str]:
    argv = ["docker", "ps", "-q", "--filter", f"label=shoal.prefix={cluster.prefix}"]
    if node:
        argv += ["--filter", f"label=shoal.node={node}"]
    ids = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
    if not ids:
        return {}
    out = subprocess.run(
        ["docker", "inspect", "--format", "{{.Id}} {{.State.StartedAt}}", *ids],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def health_of(env: Envelope | None) -> AppHealth | None:
    return env.open(AppHealth, lenient=True) if env is not None else None


def first_after(obs: Observer, t0: float, topic: str, test: object) -> float | None:
    for ts, t, env in obs.seen:
        if ts >= t0 and t == topic and test(env):  # type: ignore[operator]
            return ts - t0
    return None


async def run(rounds: int) -> None:
    with proc_group("shoal-bench-") as procs:
        broker = start_broker(procs, "mosquitto")
        cluster = Cluster(procs, broker)
        cluster.start(agents={})
        try:
            for node, address in NODES.items():
                cluster.start_agent(node, address, "--cpus", "2", "--memory", "2Gi")
            await asyncio.to_thread(
                wait_for, lambda: len(cluster.get_json("nodes")) == 2, 30, 0.2, "2 nodes"
            )
            for name, health in APPS.items():
                spec = SPEC.format(name=name, health=health)
                await asyncio.to_thread(cluster.apply_text, spec, "--wait")
            async with Observer(broker.url, cluster.prefix) as obs:
                await restarts(cluster, obs, rounds)
                await death(cluster, obs)
        finally:
            cluster.close()


def loads(cluster: Cluster) -> dict[str, LoadLoop]:
    port = cluster.listen_port
    return {n: LoadLoop("127.0.0.1", port, vhost=f"{n}.test", workers=2) for n in APPS}


def assigned_ids(obs: Observer) -> set[str]:
    return {r.id for a in obs.values(NODE_ASSIGN).values() for r in a.replicas}


async def restarts(cluster: Cluster, obs: Observer, rounds: int) -> None:
    before, ids = containers(cluster), assigned_ids(obs)
    running = loads(cluster)
    for load in running.values():
        load.__enter__()
    await asyncio.sleep(2)
    for _ in range(rounds):
        cluster.agents["n2"].kill()
        await asyncio.sleep(3)
        cluster.start_agent("n2", NODES["n2"], "--cpus", "2", "--memory", "2Gi")
        await asyncio.sleep(4)
    results = {n: load.stop() for n, load in running.items()}
    after = containers(cluster)
    restarted = sum(1 for cid, started in before.items() if after.get(cid) != started)
    replaced = len(assigned_ids(obs) - ids)
    print(f"agent kill -9 x{rounds} (down 3 s each), 8 replicas on 2 nodes:")
    for name, r in results.items():
        print(f"  {name:>6}: {r.failed} of {r.total} requests failed")
    print(f"  containers restarted: {restarted}; replicas replaced: {replaced}")


async def death(cluster: Cluster, obs: Observer) -> None:
    running = loads(cluster)
    for load in running.values():
        load.__enter__()
    await asyncio.sleep(2)
    doomed = set(containers(cluster, "n2"))
    on_n2 = {r.id for r in obs.values(NODE_ASSIGN).get("n2", NodeAssignment(node="n2")).replicas}
    t0 = time.monotonic()
    cluster.agents["n2"].kill()
    argv = ["docker", "rm", "-f", *doomed]
    await asyncio.to_thread(subprocess.run, argv, capture_output=True, check=True)
    removed = time.monotonic() - t0

    def serving(name: str) -> bool:
        h = obs.value(HEALTH, AppKey("default", name))
        return h is not None and len([r for r in h.ready if r.node == "n1"]) == 4

    await obs.wait_for(lambda: all(serving(n) for n in APPS), 60, "serving on n1")
    await asyncio.sleep(1)
    results = {n: load.stop() for n, load in running.items()}
    print(
        "node n2 dies (agent kill -9, then `docker rm -f` of its containers, which took "
        f"{removed:.2f} s): seconds from the death"
    )
    for name in APPS:
        topic = obs.topic(HEALTH, AppKey("default", name))

        def gone(env: Envelope | None, app: str = name) -> bool:
            h = health_of(env)
            return h is not None and any(r.id in on_n2 and not r.ready for r in h.replicas)

        def ready(env: Envelope | None) -> bool:
            h = health_of(env)
            return h is not None and len([r for r in h.ready if r.node == "n1"]) == 4

        detect = first_after(obs, t0, topic, gone)
        assign = first_after(
            obs,
            t0,
            obs.topic(NODE_ASSIGN, "n1"),
            lambda env, app=name: (
                env is not None
                and sum(r.app == app for r in env.open(NodeAssignment, lenient=True).replicas) == 4
            ),
        )
        serve = first_after(obs, t0, topic, ready)
        r = results[name]
        fmt = lambda v: f"{v:.2f}" if v is not None else "-"  # noqa: E731
        print(
            f"  {name:>6}: detected {fmt(detect)}, re-assigned {fmt(assign)}, "
            f"serving on n1 {fmt(serve)}; {r.failed} of {r.total} requests failed"
        )


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    ensure_echo_image()
    asyncio.run(run(rounds))


if __name__ == "__main__":
    main()
