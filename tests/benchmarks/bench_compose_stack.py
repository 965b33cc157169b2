"""Issue 12's "done means" figures: the three-service compose application
(``tests/e2e/compose_stack``: front end x3, API x2, key-value store; each tier healthy
before the next starts) on three agents with their meshes.

- **apply to ready**: seconds from ``shoal apply -f compose.yaml`` to every replica of the
  three apps ready; the reference, in the same run, is ``docker-compose up -d`` of the same
  file on the same engine (one host, no balancer, host ports left to Docker) until every
  container's healthcheck says healthy;
- **failed requests** out of those sent by 4 client loops through the balancer while a
  ``front`` replica is ``docker kill``ed (until it is ready again) and while node n3 is lost
  (its agent ``kill -9`` and its containers removed, until every app is back to its ready
  replicas on n1 and n2: the scheduler's lost grace, 30 s, included).

``python -m tests.benchmarks.bench_compose_stack [--rounds 1]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import time
import uuid
from pathlib import Path

import yaml

from tests.support.cluster import Cluster, wait_for
from tests.support.compose_stack import (
    DESIRED,
    apply_until_ready,
    prepare,
    served,
    start_nodes,
    under_load,
)
from tests.support.images import ensure_echo_image
from tests.support.procs import proc_group, start_broker


def docker_compose_reference(compose: Path, workdir: Path) -> float | None:
    """Seconds for ``docker-compose up -d`` of the same application until every container
    is healthy (None without docker-compose). Host ports are left to Docker (a fixed one
    cannot be published by three replicas); replicas by ``--scale``."""
    binary = shutil.which("docker-compose")
    if binary is None:
        return None
    doc = yaml.safe_load(compose.read_text())
    doc.pop("name", None)  # docker-compose 1.x predates the top-level name; -p gives it
    for body in doc["services"].values():
        body.pop("deploy", None)
        body.pop("container_name", None)  # one name cannot go to scaled containers
        if "ports" in body:
            body["ports"] = [str(p).rsplit(":", 1)[-1] for p in body["ports"]]
    folder = workdir / "reference"
    shutil.copytree(compose.parent, folder)
    (folder / "compose.yaml").write_text(yaml.safe_dump(doc))
    project = f"shoalbench{uuid.uuid4().hex[:8]}"
    base = [binary, "-p", project, "-f", str(folder / "compose.yaml")]
    scale = [f"--scale={name}={n}" for name, n in DESIRED.items()]
    try:
        started = time.monotonic()
        done = subprocess.run(
            [*base, "up", "-d", *scale], capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            print(f"docker-compose up failed: {done.stderr.strip()[-500:]}")
            return None

        def healthy() -> bool:
            ids = subprocess.run(
                ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            if len(ids) != sum(DESIRED.values()):
                return False
            out = subprocess.run(
                ["docker", "inspect", "--format", "{{json .State.Health.Status}}", *ids],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            return all(json.loads(line) == "healthy" for line in out.splitlines())

        wait_for(healthy, 300, interval=0.1, message="docker-compose stack healthy")
        return time.monotonic() - started
    finally:
        subprocess.run([*base, "down", "-v", "-t", "1"], capture_output=True, timeout=300)


def one_round() -> dict[str, tuple[float, str]]:
    """Each figure of one fresh cluster: (value, as shown)."""
    out: dict[str, tuple[float, str]] = {}
    with proc_group("shoal-bench-") as procs:
        broker = start_broker(procs, "mosquitto")
        cluster = Cluster(procs, broker)
        try:
            start_nodes(cluster)
            stack = prepare(cluster)
            seconds = apply_until_ready(cluster, stack)
            out["apply to ready (s)"] = (seconds, f"{seconds:.1f}")
            wait_for(lambda: served(cluster), 30, message="served")
            for fault, key in (
                ("replica", "replica kill: failed / sent"),
                ("node", "node loss: failed / sent"),
            ):
                result = under_load(cluster, fault)
                out[key] = (result.failed, f"{result.failed} / {result.total}")
            reference = docker_compose_reference(stack.compose, procs.workdir)
            if reference is not None:
                out["docker-compose up to healthy (s)"] = (reference, f"{reference:.1f}")
        finally:
            cluster.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    ensure_echo_image()
    keys = (
        "apply to ready (s)",
        "docker-compose up to healthy (s)",
        "replica kill: failed / sent",
        "node loss: failed / sent",
    )
    rounds = [one_round() for _ in range(args.rounds)]
    print(f"\nthree-service compose stack, 3 nodes, {args.rounds} round(s):")
    for key in keys:
        values = [r[key] for r in rounds if key in r]
        median = ""
        if len(values) > 1:
            median = f"  (median {statistics.median(v for v, _ in values):.1f})"
        print(f"  {key:36s} {', '.join(text for _, text in values) or 'n/a'}{median}")


if __name__ == "__main__":
    main()
