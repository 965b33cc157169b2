"""Issue 16, regions: what cutting a region's broker link costs under load, against the
same region's nodes becoming unreachable on one broker (the reference, same run).

Two regions (``tests/support/regions.py``: two mosquitto brokers joined by mosquitto's
bridge; eu: the control plane, a balancer ``--region eu``, 2 agents; us: a balancer
``--region us``, 2 agents), one app of 4 replicas with ``min_per_region: 1`` (http
readiness 500 ms x 2), 2 load workers through each region's balancer for the whole run.

1. **bridge cut**: the link between the brokers is cut (each region's clients stay
   connected to their own broker), kept cut until eu serves from the replicas that replace
   us's share, then restored;
2. **reference**: the us agents are killed (``kill -9``: their containers keep running, the
   brokers stay bridged), kept down until eu serves from the replacements, then restarted.

Per round: failed requests through each balancer (fault to settled), the share of us
requests answered in us while the fault lasted, time from the fault to the replacements
serving in eu (the scheduler's ``--lost-grace`` decides it), and, after the repair, the
time until the stale us replicas left rotation (no balancer answers from them) and until
they were stopped, and until the region had its minimum back.

    .venv/bin/python -m tests.benchmarks.bench_regions [--lost-grace 30]
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from tests.support.cluster import wait_for
from tests.support.images import ensure_echo_image
from tests.support.load import LoadLoop, LoadResult
from tests.support.procs import Proc, proc_group
from tests.support.regions import APP, HOST, NODES, TwoRegions


@dataclass
class Round:
    fault: str
    failed_eu: str
    failed_us: str
    local_us: str
    replaced: float
    out_of_rotation: float
    stopped: float
    minimum_back: float


def us_hosts(regions: TwoRegions) -> set[str]:
    return {h for h, n in regions.running().items() if NODES[n][1] == "us"}


def eu_hosts(regions: TwoRegions) -> set[str]:
    return {h for h, n in regions.running().items() if NODES[n][1] == "eu"}


def settled(regions: TwoRegions) -> None:
    wait_for(lambda: len(regions.running()) == 4, 120, message="4 running")
    wait_for(lambda: regions.per_region()["us"] >= 1, 120, message="us has its minimum")
    wait_for(lambda: set(regions.answers("us")) == {"us"}, 60, message="us local")
    wait_for(lambda: set(regions.answers("eu")) == {"eu"}, 60, message="eu local")


def served_since(load: LoadLoop, mark: LoadResult, hosts: set[str]) -> set[str]:
    now = load.snapshot().bodies
    return {h for h in hosts if now[h] > mark.bodies[h]}


def stale_out_of_rotation(loads: tuple[LoadLoop, ...], stale: set[str], timeout: float) -> float:
    """When no balancer answered from a ``stale`` replica any more: the start of the first
    0.5 s window in which every load made progress and none of its answers came from one."""
    deadline = time.monotonic() + timeout
    marks = [load.snapshot() for load in loads]
    start = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = [load.snapshot() for load in loads]
        moved = all(n.ok > m.ok + 5 for n, m in zip(now, marks, strict=True))
        clean = all(
            n.bodies[h] == m.bodies[h] for n, m in zip(now, marks, strict=True) for h in stale
        )
        if moved and clean:
            return start
        marks, start = now, time.monotonic()
    raise TimeoutError("stale replicas still answered")


def one_round(
    regions: TwoRegions,
    fault: str,
    cause: Callable[[], None],
    repair: Callable[[], None],
    timeout: float,
) -> Round:
    settled(regions)
    eu_before, us_before = eu_hosts(regions), us_hosts(regions)
    eu_load = LoadLoop("127.0.0.1", regions.lb_ports["eu"], vhost=HOST, workers=2, body_key=1)
    us_load = LoadLoop("127.0.0.1", regions.lb_ports["us"], vhost=HOST, workers=2, body_key=1)
    with eu_load, us_load:
        wait_for(lambda: us_load.snapshot().ok > 50, 30, message="load running")
        eu_start, us_start = eu_load.snapshot(), us_load.snapshot()
        cause()
        at = time.monotonic()

        def replacements_serve() -> bool:
            fresh = eu_hosts(regions) - eu_before
            return len(fresh) >= len(us_before) and served_since(eu_load, eu_start, fresh) == fresh

        wait_for(replacements_serve, timeout, interval=0.1, message="replacements serving")
        replaced = time.monotonic() - at
        us_cut = us_load.snapshot()
        in_cut = sum(us_cut.bodies[h] - us_start.bodies[h] for h in us_before)
        answered = us_cut.ok - us_start.ok
        repair()
        back = time.monotonic()

        rotation = stale_out_of_rotation((eu_load, us_load), us_before, timeout) - back
        wait_for(lambda: not us_before & us_hosts(regions), timeout, message="stale stopped")
        stopped = time.monotonic() - back
        wait_for(lambda: regions.per_region()["us"] >= 1, timeout, message="minimum back")
        try:
            wait_for(lambda: len(regions.running()) == 4, timeout, message="4 running")
        except TimeoutError:
            print(regions.cluster.shoal("describe", "app", "web", check=False).stdout)
            print(regions.cluster.shoal("get", "replicas", "-o", "wide", check=False).stdout)
            print(regions.cluster.shoal("get", "nodes", check=False).stdout, flush=True)
            raise
        minimum = time.monotonic() - back
        print(f"{fault}: settled, running per region {dict(regions.per_region())}", flush=True)
        eu_end, us_end = eu_load.snapshot(), us_load.snapshot()
    return Round(
        fault,
        f"{eu_end.failed - eu_start.failed} of {eu_end.total - eu_start.total}",
        f"{us_end.failed - us_start.failed} of {us_end.total - us_start.total}",
        f"{in_cut} of {answered}",
        replaced,
        rotation,
        stopped,
        minimum,
    )


def each(procs: list[Proc], action: Callable[[Proc], object]) -> None:
    for proc in procs:
        action(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lost-grace", type=float, default=30.0)
    args = parser.parse_args()
    ensure_echo_image()
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    with proc_group("shoal-bench-regions-") as procs:
        regions = TwoRegions(procs, prefix, lost_grace=args.lost_grace, node_grace=6.0)
        try:
            regions.start()
            regions.cluster.apply_text(APP, "--wait")
            timeout = args.lost_grace * 3 + 60
            us_agents = [regions.agents[n] for n in NODES if NODES[n][1] == "us"]
            rounds = [
                one_round(
                    regions,
                    "bridge cut",
                    regions.regions.link.cut,
                    regions.regions.link.restore,
                    timeout,
                ),
                one_round(
                    regions,
                    "us agents kill -9 (reference)",
                    lambda: each(us_agents, Proc.kill),
                    lambda: each(us_agents, Proc.start),
                    timeout,
                ),
            ]
        finally:
            regions.close()
    print(f"\nregions, --lost-grace {args.lost_grace:g} s, 4 replicas (min 1 per region)")
    print(
        "| fault | failed via eu | failed via us | us answered in us during the fault "
        "| fault -> replacements serving in eu | repair -> stale out of rotation "
        "| repair -> stale stopped | repair -> us minimum back |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rounds:
        print(
            f"| {r.fault} | {r.failed_eu} | {r.failed_us} | {r.local_us} | {r.replaced:.1f} s "
            f"| {r.out_of_rotation:.1f} s | {r.stopped:.1f} s | {r.minimum_back:.1f} s |"
        )


if __name__ == "__main__":
    main()
