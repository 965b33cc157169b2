"""The three-service compose application of ``tests/e2e/compose_stack`` on three nodes: set
up, applied, and the two faults it must survive (a replica killed, a node lost), each
under a client loop through the balancer. Shared by the e2e test and its benchmark."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.cluster import Cluster, wait_for
from tests.support.load import LoadLoop, LoadResult
from tests.support.net import free_port
from tests.support.procs import ROOT

APP = ROOT / "tests" / "e2e" / "compose_stack"
NAMESPACE = "stack"
#: node -> (address, zone)
NODES = {"n1": ("127.0.0.2", "a"), "n2": ("127.0.0.3", "b"), "n3": ("127.0.0.4", "c")}
DESIRED = {"front": 3, "api": 2, "kv": 1}


@dataclass(frozen=True)
class Stack:
    compose: Path
    kv_port: int  # the balancer's TCP listen port for kv


def start_nodes(cluster: Cluster) -> None:
    """The control plane and three agents, each with its node's mesh."""
    cluster.start(agents={})
    for node, (address, zone) in NODES.items():
        cluster.start_mesh(node)
        cluster.start_agent(node, address, "--mesh", "--labels", f"zone={zone}")
    wait_for(
        lambda: len([n for n in cluster.get_json("nodes") if n["status"] == "ready"]) == 3,
        60,
        message="3 nodes ready",
    )
    cluster.wait_serving()


def prepare(cluster: Cluster) -> Stack:
    """The application copied to the test's folder, with a ``.env`` naming a free port
    for kv's TCP route."""
    folder = cluster.procs.workdir / "compose_stack"
    shutil.copytree(APP, folder)
    kv_port = free_port()
    (folder / ".env").write_text(f"KV_PORT={kv_port}\n")
    return Stack(folder / "compose.yaml", kv_port)


def ready_counts(cluster: Cluster) -> dict[str, int]:
    return {
        str(app["name"]): int(app["ready"])  # type: ignore[call-overload]
        for app in cluster.get_json("apps")
        if app["namespace"] == NAMESPACE
    }


def all_ready(cluster: Cluster) -> bool:
    counts = ready_counts(cluster)
    return all(counts.get(name, 0) >= n for name, n in DESIRED.items())


def ready_off(cluster: Cluster, node: str) -> bool:
    """Every app has its desired replicas ready on nodes other than ``node``."""
    counts: dict[str, int] = {}
    for r in cluster.get_json("replicas"):
        if r["namespace"] == NAMESPACE and r["ready"] and r["node"] != node:
            counts[str(r["app"])] = counts.get(str(r["app"]), 0) + 1
    return all(counts.get(name, 0) >= n for name, n in DESIRED.items())


def replica_of(cluster: Cluster, container: str) -> dict[str, object] | None:
    """The replica (``get replicas``) running in ``container`` (a short or long id)."""
    for r in cluster.get_json("replicas"):
        if str(r["container_id"]).startswith(container[:12]):
            return r
    return None


def apply_until_ready(cluster: Cluster, stack: Stack, timeout: float = 180) -> float:
    """Seconds from ``shoal apply -f`` to every replica of the three apps ready."""
    started = time.monotonic()
    cluster.shoal("apply", "-f", str(stack.compose))
    wait_for(lambda: all_ready(cluster), timeout, interval=0.1, message="the stack ready")
    return time.monotonic() - started


def served(cluster: Cluster) -> bool:
    r = cluster.get("/")
    return r.status == 200 and r.body.startswith("v1 ")


def ask_tcp(port: int, text: str = "ping", timeout: float = 3.0) -> str:
    """One line to kv's echo through the balancer's TCP route; the answer ("" when cut)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(f"{text}\n".encode())
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
    except OSError:
        return ""
    return b"".join(chunks).decode(errors="replace").strip()


def containers_on(cluster: Cluster, node: str, app: str | None = None) -> list[str]:
    argv = ["docker", "ps", "-q", "--filter", f"label=shoal.prefix={cluster.prefix}"]
    argv += ["--filter", f"label=shoal.node={node}"]
    if app is not None:
        argv += ["--filter", f"label=shoal.app={app}"]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()


def under_load(cluster: Cluster, fault: str, timeout: float = 120) -> LoadResult:
    """``fault`` ("replica": ``docker kill`` of a front replica on n1; "node": n3's agent
    ``kill -9`` and its containers removed) under 4 client loops through the balancer,
    until every app is back to its desired ready replicas (the lost node's on n1, n2)."""
    with LoadLoop("127.0.0.1", cluster.listen_port, workers=4, max_seconds=timeout + 60) as load:
        wait_for(lambda: load.snapshot().ok > 50, 30, message="traffic flowing")
        if fault == "replica":
            [victim, *_] = containers_on(cluster, "n1", "front")
            before = replica_of(cluster, victim)
            assert before is not None, victim
            subprocess.run(["docker", "kill", victim], check=True, capture_output=True)

            def replaced() -> bool:  # restarted in place, or replaced by another replica
                now = replica_of(cluster, victim)
                return now is None or int(now["restarts"]) > int(before["restarts"])  # type: ignore[call-overload]

            wait_for(replaced, timeout, interval=0.2, message="the killed replica restarted")
        else:
            cluster.agents["n3"].kill()
            gone = containers_on(cluster, "n3")
            if gone:
                subprocess.run(["docker", "rm", "-f", *gone], capture_output=True, check=True)
        wait_for(
            lambda: all_ready(cluster) if fault == "replica" else ready_off(cluster, "n3"),
            timeout,
            interval=0.2,
            message=f"the stack recovered from the {fault} fault",
        )
        return load.stop()
