"""East-west path vs a direct container-to-container request, in one run (issue 12).

Two nodes (n1, n2) with their agents (``--mesh``) and meshes; app ``db`` (prod) on n2 and a
client app on n1. From inside the client container:

- latency, name to first byte: ``call loop N URL`` (a fresh ``wget`` per request: name
  resolution, connect, request, answer) to ``http://db:8080/`` (the mesh's DNS and relay,
  crossing to n2's published port), to the VIP (the relay alone), and directly to a
  plain ``db`` twin container on a Docker network shared with a twin client (the
  reference: bridge to bridge, no hop), by container name and by address;
- throughput: one ``wget`` of a 256 MiB file served by busybox httpd, through the mesh by
  name, and directly between the twins.

Each figure is the best of ``--rounds`` rounds. ``python -m tests.benchmarks.bench_mesh``.
"""

from __future__ import annotations

import argparse
import subprocess
import time

from tests.support.cluster import Cluster, wait_for
from tests.support.images import ensure_echo_image
from tests.support.procs import proc_group, start_broker

DB = """
name: db
namespace: prod
image: shoal-test/echo:v1
resources: {cpu: 0.1, memory: 320Mi}
ports: {http: 8080}
placement: {constraints: {zone: [b]}}
"""
CLIENT = """
name: client
namespace: prod
image: shoal-test/echo:v1
resources: {cpu: 0.1, memory: 64Mi}
ports: {http: 8080}
placement: {constraints: {zone: [a]}}
"""
BLOB_MB = 256


def sh(*argv: str, timeout: float = 300) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=timeout).stdout


def timed_loop(container: str, n: int, url: str) -> float:
    """Seconds per request of ``call loop n url`` inside ``container`` (all must succeed)."""
    start = time.perf_counter()
    out = sh("docker", "exec", container, "call", "loop", str(n), url)
    elapsed = time.perf_counter() - start
    failed = [line for line in out.splitlines() if " ok " not in line]
    if failed:
        raise RuntimeError(f"{len(failed)} requests to {url} failed: {failed[:3]}")
    # Less the cost of one docker exec, measured with a loop of one request.
    start = time.perf_counter()
    sh("docker", "exec", container, "call", "loop", "1", url)
    one = time.perf_counter() - start
    return (elapsed - one) / (n - 1)


def download(container: str, url: str) -> float:
    """MiB/s of one download of the blob inside ``container``."""
    now = "$(cut -d' ' -f1 /proc/uptime)"
    script = f"s={now}; wget -O /dev/null {url} 2>/dev/null || exit 1; echo $s {now}"
    start, end = (float(x) for x in sh("docker", "exec", container, "sh", "-c", script).split())
    return BLOB_MB / max(end - start, 0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ensure_echo_image()
    twins_net = f"shoal-bench-direct-{int(time.time())}"
    label = "shoal.bench=mesh"
    with proc_group("shoal-bench-") as procs:
        broker = start_broker(procs, "mosquitto")
        cluster = Cluster(procs, broker)
        try:
            cluster.start(agents={})
            for node, address, zone in (("n1", "127.0.0.2", "a"), ("n2", "127.0.0.3", "b")):
                cluster.start_mesh(node)
                cluster.start_agent(node, address, "--mesh", "--labels", f"zone={zone}")
            wait_for(lambda: len(cluster.get_json("nodes")) == 2, 30, message="2 nodes")
            cluster.apply_text(DB, "--wait")
            cluster.apply_text(CLIENT, "--wait")
            (db,) = cluster.containers(app="db")
            (client,) = cluster.containers(app="client")
            sh("docker", "exec", db, "sh", "-c", f"head -c {BLOB_MB}m /dev/zero > /www/blob")
            vip = sh("docker", "exec", client, "call", "resolve", "db").split()[0]
            wait_for(
                lambda: (
                    subprocess.run(
                        ["docker", "exec", client, "call", "http://db:8080/"], capture_output=True
                    ).returncode
                    == 0
                ),
                20,
                message="db by name",
            )

            # The reference: two plain containers on one Docker network.
            sh("docker", "network", "create", "--label", label, twins_net)
            for name in ("twin-db", "twin-client"):
                sh(
                    "docker",
                    "run",
                    "-d",
                    "--rm",
                    "--label",
                    label,
                    "--network",
                    twins_net,
                    "--name",
                    f"{twins_net}-{name}",
                    "shoal-test/echo:v1",
                )
            twin_db, twin_client = f"{twins_net}-twin-db", f"{twins_net}-twin-client"
            sh("docker", "exec", twin_db, "sh", "-c", f"head -c {BLOB_MB}m /dev/zero > /www/blob")
            twin_ip = sh(
                "docker",
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                twin_db,
            ).strip()
            wait_for(
                lambda: (
                    subprocess.run(
                        ["docker", "exec", twin_client, "call", f"http://{twin_ip}:8080/"],
                        capture_output=True,
                    ).returncode
                    == 0
                ),
                20,
                message="twin db",
            )

            n = args.requests
            cases = {
                "mesh, by name (db)": (client, "http://db:8080/"),
                "mesh, by VIP": (client, f"http://{vip}:8080/"),
                "direct, by container name (Docker DNS)": (twin_client, f"http://{twin_db}:8080/"),
                "direct, by address": (twin_client, f"http://{twin_ip}:8080/"),
            }
            latency = {
                k: min(timed_loop(c, n, u) for _ in range(args.rounds))
                for k, (c, u) in cases.items()
            }
            throughput = {
                "mesh, by name": max(
                    download(client, "http://db:8080/blob") for _ in range(args.rounds)
                ),
                "direct, by address": max(
                    download(twin_client, f"http://{twin_ip}:8080/blob") for _ in range(args.rounds)
                ),
            }
        finally:
            subprocess.run(
                ["docker", "rm", "-f", f"{twins_net}-twin-db", f"{twins_net}-twin-client"],
                capture_output=True,
            )
            subprocess.run(["docker", "network", "rm", twins_net], capture_output=True)
            cluster.close()
    base = latency["direct, by address"]
    print(f"\nname to first byte, {n} requests x {args.rounds} rounds (best), per request:")
    for name, value in latency.items():
        print(f"  {name:42s} {value * 1000:7.2f} ms   (+{(value - base) * 1000:.2f} ms vs direct)")
    print(f"throughput, one {BLOB_MB} MiB download (best of {args.rounds}):")
    ref = throughput["direct, by address"]
    for name, value in throughput.items():
        print(f"  {name:42s} {value:7.0f} MiB/s ({value / ref:.0%} of direct)")


if __name__ == "__main__":
    main()
