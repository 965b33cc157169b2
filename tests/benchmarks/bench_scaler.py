"""Autoscaler figures: decision cost, and latency from a metric (or wake-up) to the scale command.

Run by hand (not collected by pytest)::

    python tests/benchmarks/bench_scaler.py [--rounds 20]

1. ``decide`` throughput: evaluations per second of the pure decision over many apps.
2. On a real mosquitto, the scaler as a process with its default policy except the
   cooldowns, a fake controller and fake balancer samples:
   - wake-up latency: ``WakeUp`` published -> ``scale`` command received (cold start's
     share of the scaler; the rest is the container start and readiness);
   - step latency: first balancer sample with high load -> first ``scale`` command;
   - follow time: a step from 1 to N replicas' worth of load -> desired count N
     (step cap 4 and up-cooldown 3 s: the default policy).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from core.channels import LB_METRICS, WAKE
from core.spec import AppSpec
from core.state import AppState, AppVersion, LbMetrics, RouteMetrics, WakeUp
from services.scaler.decide import History, Observation, Policy, decide, observe_app, record
from tests.integration.test_scaler import FakeCluster, web
from tests.support.procs import ProcGroup, proc_group, start_broker


def bench_decide(apps: int = 2000, rounds: int = 10) -> None:
    spec = AppSpec.model_validate(web(max=50))
    versions = [AppVersion(revision=1, spec=spec, replicas=4)]
    state = AppState(
        namespace="default", name="web", revision=1, generation=1, spec=spec, replicas=4,
        versions=versions,
    )  # fmt: skip
    policy = Policy()
    histories = [History.start(0.0) for _ in range(apps)]
    started = time.perf_counter()
    n = 0
    for r in range(rounds):
        now = float(r)
        for i in range(apps):
            obs = Observation(rps=100.0 + (i * 7 + r * 13) % 400, requests=100, lb_fresh=True)
            h = observe_app(histories[i], state, now, policy)
            d = decide(state, obs, 4, h, now, policy)
            histories[i] = record(h, d, now, policy, applied=False)
            n += 1
    took = time.perf_counter() - started
    print(f"decide: {n / took:,.0f} evaluations/s ({took / n * 1e6:.1f} us each, {apps} apps)")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(name: str, values: list[float]) -> None:
    ms = [v * 1000 for v in values]
    print(
        f"{name}: n={len(ms)} median {statistics.median(ms):.1f} ms, "
        f"p95 {pct(ms, 0.95):.1f} ms, max {max(ms):.1f} ms"
    )


async def wait_for(predicate: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.002)


async def bench_bus(procs: ProcGroup, rounds: int) -> None:
    broker = start_broker(procs, "mosquitto")
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    fake = FakeCluster(broker, prefix, web(min=0, max=8), 0)
    await fake.start(balancer=False)
    procs.service(
        "scaler",
        broker.url,
        "--up-cooldown", "0s",
        "--cooldown", "0s",
        "--idle-after", "600s",
        prefix=prefix,
    )  # fmt: skip
    key = str(fake.key)  # balancer samples name apps "ns/name"
    try:
        # let the scaler read the retained app record
        await asyncio.sleep(2.0)

        wake_latency: list[float] = []
        for _ in range(rounds):
            fake.replicas, fake.generation = 0, fake.generation + 1
            await fake.publish_app()
            await asyncio.sleep(0.3)
            before = len(fake.commands)
            sent = time.monotonic()
            await fake.bus.publish(WAKE, WakeUp(namespace="default", name="web", held=1))
            await wait_for(lambda b=before: len(fake.commands) > b)
            wake_latency.append(fake.commands[-1][0] - sent)
        summary("wake-up -> scale command", wake_latency)

        step_latency: list[float] = []
        idle = LbMetrics(instance="lb1", apps={key: RouteMetrics()})
        busy = LbMetrics(instance="lb1", apps={key: RouteMetrics(rps=400, requests=400)})
        for _ in range(rounds):
            # quiet samples flush the metrics window, then the app is set back to 1
            for _ in range(4):
                await fake.bus.publish(LB_METRICS, idle)
                await asyncio.sleep(1.0)
            fake.replicas, fake.generation = 1, fake.generation + 1
            await fake.publish_app()
            await asyncio.sleep(0.3)
            before = len(fake.commands)
            sent = time.monotonic()
            await fake.bus.publish(LB_METRICS, busy)
            await wait_for(lambda b=before: len(fake.commands) > b)
            step_latency.append(fake.commands[-1][0] - sent)
        summary("load step sample -> scale command", step_latency)
    finally:
        await fake.stop()


async def bench_follow(procs: ProcGroup, target: int) -> None:
    broker = start_broker(procs, "mosquitto")
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    fake = FakeCluster(broker, prefix, web(min=1, max=50), 1)
    await fake.start(balancer=True)
    procs.service("scaler", broker.url, "--log-level", "info", prefix=prefix)
    try:
        await asyncio.sleep(2.0)
        fake.rps = 100.0 * target
        step = time.monotonic()
        await wait_for(lambda: fake.replicas >= target, 60)
        took = time.monotonic() - step
        path = " -> ".join(str(c.replicas) for _, c in fake.commands)
        print(f"follow a step 1 -> {target} replicas (default policy): {took:.2f} s (1 -> {path})")
    finally:
        await fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--target", type=int, default=12)
    args = parser.parse_args()
    bench_decide()
    with proc_group("shoal-bench-") as procs:
        asyncio.run(bench_bus(procs, args.rounds))
    with proc_group("shoal-bench-") as procs:
        asyncio.run(bench_follow(procs, args.target))


if __name__ == "__main__":
    main()
