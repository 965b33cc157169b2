"""The dashboard's cost to the bus at 100 apps, and what it pushes to a page.

Run by hand (not collected by pytest)::

    .venv/bin/python -m tests.benchmarks.bench_dashboard [--apps 100] [--seconds 20]

On a real mosquitto, a fake cluster publishes the retained state of ``--apps`` apps on three
nodes, then keeps it busy as a real one is: the balancer's ``LB_METRICS`` every second (every
app in it), each node's ``NODE_METRICS`` every 2 s, one app's health changing every 100 ms,
and an event every 100 ms. The same load runs twice in one run:

1. the reference: no dashboard;
2. the dashboard as a process (``python -m services.dashboard``) with one page open on
   ``/api/stream``.

Printed: the messages per second the dashboard publishes (what it adds to the bus), the
messages per second the broker delivers to it (its subscriptions' fan-out), beside the bus
traffic of the reference; the state pushes and bytes per second one page receives; and the
dashboard process's CPU time per second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid

import aiohttp

from core.bus import Bus, connect_bus
from core.channels import (
    APPS,
    EVENTS,
    HEALTH,
    LB_METRICS,
    NODE_ASSIGN,
    NODE_INFO,
    NODE_METRICS,
    NODE_REPLICAS,
    SCHEDULER_STATUS,
)
from core.codec import Envelope
from core.config import BrokerURL
from core.spec import AppSpec, Resources
from core.state import (
    AppHealth,
    AppState,
    AppVersion,
    AssignedReplica,
    Event,
    LbMetrics,
    NodeAssignment,
    NodeInfo,
    NodeMetrics,
    NodeReplicas,
    ReplicaHealth,
    ReplicaStatus,
    ReplicaUsage,
    RouteMetrics,
    SchedulerStatus,
)
from core.topics import Topics
from tests.support.net import free_port, wait_port
from tests.support.procs import proc_group, start_broker

NODES = ("n1", "n2", "n3")


def replica_id(i: int, j: int) -> str:
    return f"default.app{i}.{j:08x}"


class FakeCluster:
    """Publishes what the controller, scheduler, agents, health and balancer would."""

    def __init__(self, bus: Bus, apps: int) -> None:
        self.bus = bus
        self.apps = apps
        self.spec = {i: AppSpec(name=f"app{i}", image="echo:v1") for i in range(apps)}
        self.flip = 0

    def node_of(self, i: int, j: int) -> str:
        return NODES[(i + j) % len(NODES)]

    def health(self, i: int, ready: bool = True) -> AppHealth:
        return AppHealth(
            namespace="default",
            name=f"app{i}",
            replicas=[
                ReplicaHealth(
                    id=replica_id(i, j),
                    revision=1,
                    node=self.node_of(i, j),
                    endpoint=f"127.0.0.1:{30000 + i * 2 + j}",
                    ready=ready or j == 1,
                )
                for j in range(2)
            ],
            ts=time.time(),
        )

    async def publish_state(self) -> None:
        for i, spec in self.spec.items():
            versions = [AppVersion(revision=1, spec=spec, replicas=2)]
            await self.bus.publish(
                APPS,
                AppState(
                    namespace="default",
                    name=f"app{i}",
                    revision=1,
                    generation=1,
                    spec=spec,
                    replicas=2,
                    versions=versions,
                ),
            )
            await self.bus.publish(HEALTH, self.health(i))
            await self.bus.publish(
                SCHEDULER_STATUS,
                SchedulerStatus(namespace="default", name=f"app{i}", desired=2, placed=2),
            )
        for node in NODES:
            await self.bus.publish(
                NODE_INFO,
                NodeInfo(node=node, address="127.0.0.1", capacity=Resources(cpu=64, memory=2**36)),
            )
            mine = [
                (i, j) for i in range(self.apps) for j in range(2) if self.node_of(i, j) == node
            ]
            await self.bus.publish(
                NODE_ASSIGN,
                NodeAssignment(
                    node=node,
                    replicas=[
                        AssignedReplica(
                            id=replica_id(i, j), namespace="default", app=f"app{i}", revision=1
                        )
                        for i, j in mine
                    ],
                    specs={f"default/app{i}@1": self.spec[i] for i in range(self.apps)},
                ),
            )
            await self.bus.publish(
                NODE_REPLICAS,
                NodeReplicas(
                    node=node,
                    replicas=[
                        ReplicaStatus(
                            id=replica_id(i, j),
                            namespace="default",
                            app=f"app{i}",
                            revision=1,
                            node=node,
                            phase="running",
                            container_id="c",
                        )
                        for i, j in mine
                    ],
                ),
            )

    async def churn(self, seconds: float) -> None:
        """The steady load: 1 s balancer figures, 2 s node figures, 10/s health and events."""
        end = time.monotonic() + seconds
        tick = 0
        while time.monotonic() < end:
            if tick % 10 == 0:
                figures = {
                    f"default/app{i}": RouteMetrics(rps=10 + i % 7, p99_ms=3)
                    for i in range(self.apps)
                }
                await self.bus.publish(
                    LB_METRICS, LbMetrics(instance="lb1", apps=figures, ts=time.time())
                )
            if tick % 20 == 0:
                for node in NODES:
                    usage = {
                        replica_id(i, 0): ReplicaUsage(cpu=0.01, memory=2**20)
                        for i in range(self.apps)
                    }
                    await self.bus.publish(
                        NODE_METRICS, NodeMetrics(node=node, replicas=usage, ts=time.time())
                    )
            self.flip += 1
            i = self.flip % self.apps
            await self.bus.publish(HEALTH, self.health(i, ready=(self.flip // self.apps) % 2 == 0))
            await self.bus.publish(
                EVENTS, Event(kind="replica_ready", message=f"tick {tick}", app=f"app{i}")
            )
            tick += 1
            await asyncio.sleep(0.1)


class Counter:
    """Counts every message under the prefix: all of them, and the dashboard's own."""

    def __init__(self) -> None:
        self.total = 0
        self.by_dashboard = 0

    def __call__(self, topic: str, env: Envelope | None) -> None:
        self.total += 1
        if env is not None and env.src.startswith("dashboard/"):
            self.by_dashboard += 1


async def read_page(url: str, stop: asyncio.Event, counts: dict[str, int]) -> None:
    async with aiohttp.ClientSession() as http, http.get(url + "/api/stream") as resp:
        async for line in resp.content:
            counts["bytes"] += len(line)
            if line.startswith(b"event: state"):
                counts["state"] += 1
            if stop.is_set():
                return


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(apps: int, seconds: float) -> None:
    with proc_group("shoal-bench-") as procs:
        broker = start_broker(procs, "mosquitto")
        prefix = f"bd{uuid.uuid4().hex[:6]}"
        topics = Topics(prefix)
        url = BrokerURL.parse(broker.url)
        load = connect_bus(url, topics, client_id="bench-load")
        watch = connect_bus(url, topics, client_id="bench-count")
        counter = Counter()
        await watch.watch(topics.everything, counter)
        tasks = [asyncio.create_task(load.run()), asyncio.create_task(watch.run())]
        try:
            await load.wait_connected(10)
            await watch.wait_connected(10)
            cluster = FakeCluster(load, apps)
            await cluster.publish_state()
            await watch.sync()

            counter.total = 0
            started = time.monotonic()
            await cluster.churn(seconds)
            ref = counter.total / (time.monotonic() - started)
            print(f"reference (no dashboard): {ref:.1f} messages/s on the bus at {apps} apps")

            port = free_port()
            proc = procs.service(
                "dashboard", broker.url, "--listen", f"127.0.0.1:{port}", prefix=prefix
            )
            wait_port("127.0.0.1", port, timeout=20)
            page = f"http://127.0.0.1:{port}"
            stop = asyncio.Event()
            counts = {"bytes": 0, "state": 0}
            reader = asyncio.create_task(read_page(page, stop, counts))
            await asyncio.sleep(2)  # its first retained burst and the page's first push
            counter.total = counter.by_dashboard = 0
            counts.update(bytes=0, state=0)
            cpu0 = cpu_seconds(proc.pid)
            started = time.monotonic()
            await cluster.churn(seconds)
            took = time.monotonic() - started
            cpu = (cpu_seconds(proc.pid) - cpu0) / took
            stop.set()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            published = counter.by_dashboard / took
            delivered = (counter.total - counter.by_dashboard) / took
            print(
                f"with the dashboard: it publishes {published:.2f} messages/s (added to the bus); "
                f"the broker delivers it {delivered:.1f} messages/s "
                f"(reference bus traffic {ref:.1f}/s)"
            )
            print(
                f"one open page: {counts['state'] / took:.1f} state pushes/s, "
                f"{counts['bytes'] / took / 1024:.0f} KiB/s; "
                f"dashboard CPU {cpu * 100:.0f}% of a core"
            )
        finally:
            load.close()
            watch.close()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    asyncio.run(run(args.apps, args.seconds))


if __name__ == "__main__":
    main()
