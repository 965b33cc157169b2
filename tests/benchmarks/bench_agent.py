"""Benchmark: one assignment of N replicas to all N running, on this machine's engine.

Three ways, in one run, on the same engine and image:
- Shoal: a NodeAssignment of N replicas published to a running agent (a process), until
  the agent's retained NodeReplicas report shows N ``running`` (so bus latency counts);
- raw: N parallel aiodocker create+start calls with the same container config (the limit);
- docker-compose (Debian's): ``up -d --scale web=N``.

Run: ``python tests/benchmarks/bench_agent.py [-n 50] [--rounds 2]``. Prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import aiodocker  # noqa: E402

from core.channels import NODE_ASSIGN, NODE_INFO, NODE_REPLICAS  # noqa: E402
from core.spec import AppSpec  # noqa: E402
from core.state import AssignedReplica, NodeAssignment  # noqa: E402
from services.agent.containers import container_name, create_config  # noqa: E402
from tests.support.images import ensure_echo_image  # noqa: E402
from tests.support.observer import Observer  # noqa: E402
from tests.support.procs import proc_group, start_broker  # noqa: E402

IMAGE = "shoal-test/echo:v1"
SPEC = AppSpec.model_validate(
    {
        "name": "web",
        "image": IMAGE,
        "ports": {"http": 8080},
        "resources": {"cpu": 0.05, "memory": "16Mi"},
        "termination": {"drain": 0, "grace": "2s"},
    }
)


def cleanup(prefix: str) -> None:
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=shoal.prefix={prefix}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def replicas(n: int) -> list[AssignedReplica]:
    return [
        AssignedReplica(
            id=f"default.web.{uuid.uuid4().hex[:8]}", namespace="default", app="web", revision=1
        )
        for _ in range(n)
    ]


async def bench_shoal(obs: Observer, n: int, generation: int) -> float:
    reps = replicas(n)
    assignment = NodeAssignment(
        node="bench", replicas=reps, specs={"default/web@1": SPEC}, generation=generation
    )
    ids = {r.id for r in reps}

    def all_running() -> bool:
        report = obs.value(NODE_REPLICAS, "bench")
        if report is None:
            return False
        return sum(1 for s in report.replicas if s.id in ids and s.phase == "running") == n

    started = time.perf_counter()
    await obs.bus.publish(NODE_ASSIGN, assignment)
    await obs.wait_for(all_running, 120, "all running")
    took = time.perf_counter() - started
    empty = NodeAssignment(node="bench", generation=generation + 1)
    await obs.bus.publish(NODE_ASSIGN, empty)
    await obs.wait_for(
        lambda: (r := obs.value(NODE_REPLICAS, "bench")) is not None and not r.replicas,
        120,
        "removed",
    )
    return took


async def bench_raw(n: int, prefix: str) -> float:
    reps = replicas(n)
    async with aiodocker.Docker() as docker:

        async def one(r: AssignedReplica) -> None:
            config = create_config(SPEC, r, prefix=prefix, node="raw", address="127.0.0.5")
            container = await docker.containers.create(config, name=container_name("raw", r.id))
            await container.start()

        started = time.perf_counter()
        await asyncio.gather(*(one(r) for r in reps))
        took = time.perf_counter() - started
    await asyncio.to_thread(cleanup, prefix)
    return took


def bench_compose(n: int, prefix: str, workdir: Path) -> float | None:
    exe = shutil.which("docker-compose")
    if exe is None:
        return None
    compose = workdir / "compose.yml"
    compose.write_text(
        "services:\n"
        "  web:\n"
        f"    image: {IMAGE}\n"
        "    ports: ['127.0.0.6::8080']\n"
        f"    labels: {{shoal.prefix: {prefix}}}\n"
        "    mem_limit: 16m\n"
    )
    project = f"bench{uuid.uuid4().hex[:6]}"
    base = [exe, "-p", project, "-f", str(compose)]
    started = time.perf_counter()
    subprocess.run([*base, "up", "-d", "--scale", f"web={n}"], check=True, capture_output=True)
    took = time.perf_counter() - started
    subprocess.run([*base, "down", "-t", "1"], capture_output=True)
    cleanup(prefix)
    return took


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    ensure_echo_image()
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    shoal: list[float] = []
    raw: list[float] = []
    compose: list[float] = []
    with proc_group("shoal-bench-") as procs:
        broker = start_broker(procs, "mosquitto")
        procs.service(
            "agent",
            broker.url,
            "--node-id",
            "bench",
            "--address",
            "127.0.0.4",
            prefix=prefix,
        )
        try:
            async with Observer(broker.url, prefix) as obs:
                await obs.wait_for(lambda: obs.value(NODE_INFO, "bench"), 30, "agent up")
                for i in range(args.rounds):
                    raw.append(await bench_raw(args.n, prefix))
                    shoal.append(await bench_shoal(obs, args.n, 2 * i + 1))
                    c = await asyncio.to_thread(
                        bench_compose, args.n, prefix, Path(tempfile.mkdtemp())
                    )
                    if c is not None:
                        compose.append(c)
                    print(
                        f"round {i + 1}: raw {raw[-1]:.2f}s  shoal {shoal[-1]:.2f}s  "
                        f"compose {compose[-1] if compose else float('nan'):.2f}s",
                        flush=True,
                    )
        finally:
            cleanup(prefix)

    def fmt(xs: list[float]) -> str:
        return f"median {statistics.median(xs):.2f}s (runs: {', '.join(f'{x:.2f}' for x in xs)})"

    print(f"\nN={args.n} replicas, one assignment -> all running, {args.rounds} rounds")
    print(f"  raw parallel aiodocker create+start : {fmt(raw)}")
    print(f"  shoal agent (assignment -> report)  : {fmt(shoal)}")
    if compose:
        print(f"  docker-compose up --scale web={args.n}  : {fmt(compose)}")
    ratio = statistics.median(shoal) / statistics.median(raw)
    print(f"  shoal / raw = {ratio:.2f}x (target <= 1.2x)")


if __name__ == "__main__":
    asyncio.run(main())
