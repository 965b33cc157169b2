"""Controller figures: the pure rollout step, and command round trips on a real mosquitto.

    .venv/bin/python tests/benchmarks/bench_controller.py

Prints: the cost of one ``plan_rollout`` step (1,000 replicas of health); the latency of
an ``apply`` round trip (client -> broker -> controller -> SQLite -> retained state ->
reply), sequential; a batch of 200 apps in one ``apply``; and the controller's restart time
to republish 200 apps.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from core.channels import APPLY, APPS, PRESENCE
from core.commands import ApplyCommand
from core.state import AppHealth, ReplicaHealth
from services.controller.apps import decide_apply
from services.controller.rollout import plan_rollout
from tests.support.observer import Observer
from tests.support.procs import proc_group, start_broker
from tests.unit.controller.helpers import spec


def bench_plan(replicas: int = 1000, rounds: int = 2000) -> None:
    old = decide_apply(None, spec(replicas=replicas), 1, 0.0, "").record
    assert old is not None
    record = decide_apply(old, spec("x:v2", replicas=replicas), 2, 0.0, "").record
    assert record is not None
    health = AppHealth(
        namespace="default",
        name="web",
        replicas=[
            ReplicaHealth(id=f"r{i}", revision=1, node="n", endpoint="127.0.0.1:1", ready=True)
            for i in range(replicas)
        ],
    )
    started = time.perf_counter()
    for i in range(rounds):
        plan_rollout(record.state, record.rollout, health, float(i))
    per = (time.perf_counter() - started) / rounds
    print(f"plan_rollout, {replicas} replicas of health: {per * 1e6:.0f} us per step")


def app(name: str, image: str = "shoal-test/echo:v1") -> dict[str, object]:
    return {"name": name, "image": image, "replicas": 2, "ports": {"http": 8080}}


async def bench_bus() -> None:
    with proc_group("shoal-bench-") as procs:
        broker = start_broker(procs, "mosquitto")
        prefix = f"b{uuid.uuid4().hex[:8]}"
        data = Path(tempfile.mkdtemp(prefix="shoal-bench-controller-"))
        args = ("controller", broker.url, "--data-dir", str(data), "--log-level", "warning")
        controller = procs.service(*args, prefix=prefix)
        async with Observer(broker.url, prefix) as obs:

            def online() -> bool:
                return any(
                    p.status == "online" and p.pid == controller.pid
                    for p in obs.values(PRESENCE, service="controller").values()
                )

            await obs.wait_for(online, 20, "controller online")

            latencies = []
            for i in range(100):
                image = f"shoal-test/echo:v{i}"
                t0 = time.perf_counter()
                reply = await obs.bus.request(APPLY, ApplyCommand(apps=[app("seq", image)]))
                latencies.append(time.perf_counter() - t0)
                assert reply.ok
            latencies.sort()
            print(
                f"apply round trip (new revision each), 100 sequential: "
                f"median {statistics.median(latencies) * 1000:.1f} ms, "
                f"p95 {latencies[94] * 1000:.1f} ms"
            )

            batch = [app(f"a{i}") for i in range(200)]
            t0 = time.perf_counter()
            reply = await obs.bus.request(APPLY, ApplyCommand(apps=batch), timeout=60)
            assert reply.ok
            await obs.wait_for(lambda: len(obs.values(APPS)) >= 201, 60, "201 apps")
            print(f"apply of 200 apps in one command: {time.perf_counter() - t0:.2f} s")

            controller.stop()
            for key in list(obs.values(APPS)):
                await obs.bus.clear(APPS, key)
            await obs.bus.sync()
            t0 = time.perf_counter()
            controller = procs.service(*args, prefix=prefix)
            await obs.wait_for(lambda: len(obs.values(APPS)) >= 201, 60, "republished")
            print(
                f"controller start to 201 apps republished: {time.perf_counter() - t0:.2f} s "
                "(includes Python start-up)"
            )


if __name__ == "__main__":
    bench_plan()
    asyncio.run(bench_bus())
