"""Time from `shoal apply` to all replicas ready (through the health monitor), for N
replicas, on a real mosquitto and the real Docker engine; compared in the same run with
`docker run` of the same N containers in parallel (the engine's own floor).

    .venv/bin/python -m tests.benchmarks.bench_apply [N ...]     (default: 3 20)
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import time
import uuid

from tests.support.cluster import Cluster, wait_for
from tests.support.images import ensure_echo_image
from tests.support.procs import proc_group, start_broker

SPEC = """
name: bench
image: shoal-test/echo:v1
replicas: {n}
resources: {{cpu: 0.01, memory: 16Mi}}
ports: {{http: 8080}}
health:
  readiness: {{http: /healthz, port: http, interval: 200ms, timeout: 500ms, failures: 1}}
route: {{host: bench.test, port: http}}
termination: {{drain: 0s, grace: 2s}}
"""


def raw_docker(n: int) -> float:
    label = f"shoal-bench-raw={uuid.uuid4().hex[:8]}"

    def one(i: int) -> None:
        subprocess.run(
            [
                "docker",
                "run",
                "-d",
                "--label",
                label,
                "-p",
                "127.0.0.1::8080",
                "shoal-test/echo:v1",
            ],
            check=True,
            capture_output=True,
        )

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        list(pool.map(one, range(n)))
    elapsed = time.perf_counter() - t0
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={label}"], capture_output=True, text=True
    ).stdout.split()
    subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
    return elapsed


def shoal_apply(n: int) -> tuple[float, float]:
    with proc_group("shoal-bench-") as procs:
        broker = start_broker(procs, "mosquitto")
        cluster = Cluster(procs, broker).start()
        try:
            wait_for(lambda: cluster.get_json("nodes"), 30, message="node online")
            t0 = time.perf_counter()
            cluster.apply_text(SPEC.format(n=n), "--wait", "--wait-timeout", "300")
            ready = time.perf_counter() - t0

            def all_routed() -> bool:
                names = {cluster.get("/", host="bench.test").body for _ in range(3 * n)}
                return len(names) == n

            wait_for(all_routed, 60, 0.05)
            routed = time.perf_counter() - t0
            return ready, routed
        finally:
            cluster.close()


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [3, 20]
    ensure_echo_image()
    print(
        f"{'replicas':>8}  {'shoal apply->ready':>18}  {'->all routed':>12}  "
        f"{'docker run x N (parallel)':>25}"
    )
    for n in sizes:
        ready, routed = shoal_apply(n)
        raw = raw_docker(n)
        print(f"{n:>8}  {ready:>17.2f}s  {routed:>11.2f}s  {raw:>24.2f}s", flush=True)


if __name__ == "__main__":
    main()
