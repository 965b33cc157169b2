"""Autoscaling end to end: cold start from zero, and following a step in load from 1 to N.

Run by hand (not collected by pytest)::

    python -m tests.benchmarks.bench_autoscale [--runs 5] [--steps 4,8] [--start-delay 0]

A whole cluster of real processes on mosquitto and Docker (``shoal-test/echo``, readiness
probed every 200 ms), the scaler with its default policy for scaling *up* (up-cooldown 3 s,
step cap max(4, 100 %)); only the scale-down side is shortened (window 5 s, cooldown 2 s,
idle-after 2 s) so the runs can follow each other quickly.

1. Cold start: an app at zero replicas (``min: 0``), one request sent through the balancer;
   request sent -> response received, with when the controller's record went to 1 and the
   replica was ready (health) along the way.
2. Step: an app at 1 replica (``inflight_per_replica: 2``, ``max: N``) and, from nothing,
   ``2N + 2`` clients each with a slow request (300 ms) in flight: load start -> desired N
   (controller record) and -> N ready (health).
"""

from __future__ import annotations

import argparse
import statistics
import time

from tests.e2e.test_autoscale import APP, BusWatch, timed_get, wait_at_zero
from tests.support.cluster import Cluster, wait_for
from tests.support.images import ensure_echo_image
from tests.support.load import LoadLoop
from tests.support.procs import proc_group, start_broker

SCALER_ARGS = [
    "--scale-down-window", "5s",
    "--cooldown", "2s",
    "--idle-after", "2s",
    "--max-step-down-percent", "100",
]  # fmt: skip


def line(name: str, values: list[float]) -> str:
    return (
        f"{name}: median {statistics.median(values):.2f} s, min {min(values):.2f} s, "
        f"max {max(values):.2f} s"
    )


def first_time(history: list[tuple[float, int]], since: float, pred: object) -> float | None:
    for ts, n in history:
        if ts >= since and pred(n):  # type: ignore[operator]
            return ts - since
    return None


def bench_cold_start(cluster: Cluster, watch: BusWatch, runs: int, start_delay: float) -> None:
    spec = APP.format(name="sleepy", autoscale="{min: 0, max: 2, target: {rps_per_replica: 50}}")
    if start_delay:
        spec += f'env: {{START_DELAY: "{start_delay:g}"}}\n'
    cluster.apply_text(spec, "--wait")
    total: list[float] = []
    scaled: list[float] = []
    ready: list[float] = []
    for i in range(runs):
        wait_at_zero(cluster, watch, "sleepy", timeout=60)
        time.sleep(0.5)
        sent = time.monotonic()
        took, answer = timed_get(cluster, "sleepy.test")
        if answer.status != 200:
            raise RuntimeError(f"cold request answered {answer.status}: {answer.body}")
        at_one = first_time(watch.history("sleepy"), sent, lambda n: n >= 1)
        total.append(took)
        if at_one is not None:
            scaled.append(at_one)
        print(
            f"  run {i + 1}: response after {took:.2f} s"
            + (f" (controller record at 1 after {at_one:.2f} s)" if at_one is not None else "")
        )
        wait_for(lambda: watch.ready("sleepy") >= 1, 10)
        ready_at = watch.ready_since("sleepy", sent)
        if ready_at is not None:
            ready.append(ready_at)
    print(line("cold start (request sent -> response)", total))
    if scaled:
        print(line("  request sent -> desired 1 (controller)", scaled))
    if ready:
        print(line("  request sent -> replica ready (health)", ready))
    cluster.shoal("delete", "app", "sleepy")


def bench_step(cluster: Cluster, watch: BusWatch, n: int, runs: int) -> None:
    name = f"step{n}"
    cluster.apply_text(
        APP.format(
            name=name, autoscale=f"{{min: 1, max: {n}, target: {{inflight_per_replica: 2}}}}"
        ),
        "--wait",
    )
    to_desired: list[float] = []
    to_ready: list[float] = []
    for i in range(runs):
        wait_for(
            lambda: watch.replicas(name) == 1 and len(cluster.containers(app=name)) == 1,
            90,
            message=f"{name} back at 1",
        )
        time.sleep(1.0)
        load = LoadLoop(
            "127.0.0.1",
            cluster.listen_port,
            vhost=f"{name}.test",
            path="/cgi-bin/sleep?ms=300",
            workers=2 * n + 2,
        )
        with load:
            started = time.monotonic()
            wait_for(lambda: watch.ready(name) >= n, 120, message=f"{n} ready")
            ready_after = time.monotonic() - started
            result = load.stop()
        desired_after = first_time(watch.history(name), started, lambda k: k >= n)
        steps = [k for ts, k in watch.history(name) if ts >= started]
        to_ready.append(ready_after)
        if desired_after is not None:
            to_desired.append(desired_after)
        print(
            f"  run {i + 1}: counts {[1, *steps]}, desired {n} after "
            f"{desired_after if desired_after is not None else float('nan'):.2f} s, "
            f"{n} ready after {ready_after:.2f} s ({result.failed} of {result.total} failed)"
        )
    print(line(f"step 1 -> {n}: load start -> desired {n}", to_desired))
    print(line(f"step 1 -> {n}: load start -> {n} ready", to_ready))
    cluster.shoal("delete", "app", name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="cold starts")
    parser.add_argument(
        "--start-delay", type=float, default=0.0, help="seconds the app takes to listen"
    )
    parser.add_argument("--step-runs", type=int, default=3, help="runs per step size")
    parser.add_argument("--steps", default="4,8", help="N for the 1 -> N step, comma separated")
    args = parser.parse_args()
    ensure_echo_image()
    with proc_group("shoal-bench-") as procs:
        broker = start_broker(procs, "mosquitto")
        cluster = Cluster(procs, broker)
        try:
            cluster.start(scaler_args=SCALER_ARGS)
            with BusWatch(cluster) as watch:
                print(
                    f"cold start from zero ({args.runs} runs, app start delay "
                    f"{args.start_delay:g} s):"
                )
                bench_cold_start(cluster, watch, args.runs, args.start_delay)
                for n in (int(x) for x in args.steps.split(",")):
                    print(f"step in load 1 -> {n} replicas ({args.step_runs} runs):")
                    bench_step(cluster, watch, n, args.step_runs)
        finally:
            cluster.close()


if __name__ == "__main__":
    main()
