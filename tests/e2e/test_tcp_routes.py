"""Issue 12 item 3 on real Docker: a TCP route at the balancer's edge, on either HTTP engine.

``db`` (two replicas of the echo image) asks for ``tcp_routes: [{listen: P, port: tcp}]``;
connections to the balancer's port P reach both replicas' TCP echo, a second app asking for
P is refused at apply, a ``docker kill`` of a replica under a connection loop fails at most
a handful of connections and none once the replica left the route, and the balancer counts
the connections and bytes in Prometheus.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request

import pytest

from tests.support.cluster import Cluster, wait_for
from tests.support.net import free_port

pytestmark = pytest.mark.e2e

DB = """
name: db
namespace: tcpe2e
image: shoal-test/echo:v1
replicas: 2
resources: {{cpu: 0.05, memory: 32Mi}}
ports: {{http: 8080, tcp: 9000}}
health:
  readiness: {{http: /healthz, port: http, interval: 200ms, timeout: 500ms, failures: 1}}
termination: {{drain: 500ms, grace: 2s}}
tcp_routes: [{{listen: {listen}, port: tcp}}]
"""

THIEF = """
name: thief
namespace: other
image: shoal-test/echo:v1
ports: {{tcp: 9000}}
tcp_routes: [{{listen: {listen}, port: tcp}}]
"""


def ask(port: int, text: str = "ping", timeout: float = 3.0) -> str:
    """One line to the echo through the balancer; its whole answer ("" when cut)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(f"{text}\n".encode())
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
    except OSError:
        return ""
    return b"".join(chunks).decode(errors="replace").strip()


def tcp_routes(cluster: Cluster) -> dict[str, dict[str, object]]:
    url = f"http://127.0.0.1:{cluster.admin_port}/routes/tcp"
    with urllib.request.urlopen(url, timeout=5) as resp:
        data: dict[str, dict[str, object]] = json.loads(resp.read())
    return data


def backend_count(cluster: Cluster, listen: int) -> int:
    route = tcp_routes(cluster).get(str(listen))
    if route is None or not route["listening"]:
        return -1
    backends = route["backends"]
    assert isinstance(backends, list)
    return len(backends)


def metrics(cluster: Cluster) -> str:
    url = f"http://127.0.0.1:{cluster.admin_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


@pytest.mark.parametrize(
    "balancer_args",
    [("--engine", "fast"), ("--engine", "aiohttp"), ("--engine", "fast", "--workers", "2")],
    ids=["fast", "aiohttp", "fast-2-workers"],
)
def test_a_tcp_route_at_the_edge(cluster: Cluster, balancer_args: tuple[str, ...]) -> None:
    """With two workers each binds the port (SO_REUSEPORT); metrics are per worker."""
    listen = free_port()
    workers = 2 if "--workers" in balancer_args else 1
    cluster.start(balancer_args=list(balancer_args))
    cluster.wait_serving()
    cluster.apply_text(DB.format(listen=listen), "--wait")
    wait_for(lambda: backend_count(cluster, listen) == 2, 30, message="two TCP backends")

    hostnames: set[str] = set()
    for _ in range(6):
        version, hostname, text = ask(listen, "hello").split()
        assert (version, text) == ("v1", "hello")
        hostnames.add(hostname)
    assert len(hostnames) == 2, "both replicas answer (round robin)"

    refused = cluster.apply_text(THIEF.format(listen=listen), check=False)
    assert refused.returncode != 0
    assert f"port {listen} is already used by app tcpe2e/db" in refused.stdout + refused.stderr

    victim = cluster.containers(app="db")[0]
    answers: list[str] = []
    subprocess.run(["docker", "kill", victim], check=True, capture_output=True)
    deadline = time.monotonic() + 30
    left = False
    while not left and time.monotonic() < deadline:
        answers.append(ask(listen))
        left = backend_count(cluster, listen) == 1
    assert left, "the killed replica left the route"
    failed_before = [a for a in answers if not a.endswith(" ping")]
    assert len(failed_before) <= 5, failed_before
    after = [ask(listen) for _ in range(20)]
    assert all(a.endswith(" ping") for a in after), after

    text = metrics(cluster)
    line = next(
        x
        for x in text.splitlines()
        if x.startswith("shoal_lb_tcp_connections_total{") and 'app="db"' in x
    )
    if workers == 1:  # each worker counts its own connections (its own /metrics)
        assert float(line.split()[-1]) >= 6 + len(answers) + 20
    assert 'shoal_lb_tcp_bytes_total{app="db",direction="out",namespace="tcpe2e"}' in text

    cluster.shoal("delete", "app", "db", "-n", "tcpe2e")
    wait_for(lambda: backend_count(cluster, listen) == -1, 30, message="the route gone")
    assert ask(listen) == ""
