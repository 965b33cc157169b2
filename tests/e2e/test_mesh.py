"""Issue 12 items 1-2 on real Docker: three agents, each with its node's mesh.

A container of ``web`` (prod, on n1) reaches ``db`` (prod, replicas on n2 and n3) by name,
over HTTP and TCP, through n1's mesh; a ``docker kill`` of a ``db`` replica under a client
loop inside ``web`` fails (almost) nothing; a container of namespace ``test`` cannot reach
``db`` until ``db``'s allow rule names ``test``.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading

import pytest

from core.channels import HEALTH
from core.codec import Envelope
from core.keys import AppKey
from core.state import AppHealth
from tests.support.cluster import Cluster, wait_for
from tests.support.observer import Observer

pytestmark = pytest.mark.e2e

NODES = {"n1": ("127.0.0.2", "a"), "n2": ("127.0.0.3", "b"), "n3": ("127.0.0.4", "c")}

DB = """
name: db
namespace: prod
image: shoal-test/echo:v1
replicas: 2
resources: {{cpu: 0.05, memory: 32Mi}}
ports: {{http: 8080, tcp: 9000}}
health:
  readiness: {{http: /healthz, port: http, interval: 200ms, timeout: 500ms, failures: 1}}
placement: {{strategy: spread, spread_by: zone, constraints: {{zone: [b, c]}}}}
termination: {{drain: 500ms, grace: 2s}}
network: {{internal: true{allow}}}
"""

CLIENT = """
name: {name}
namespace: {namespace}
image: shoal-test/echo:v1
resources: {{cpu: 0.05, memory: 32Mi}}
ports: {{http: 8080}}
placement: {{constraints: {{zone: [a]}}}}
"""


@pytest.fixture
def mesh(cluster: Cluster) -> Cluster:
    cluster.start(agents={})
    for node, (address, zone) in NODES.items():
        cluster.start_mesh(node)
        cluster.start_agent(node, address, "--mesh", "--labels", f"zone={zone}")
    wait_for(
        lambda: len([n for n in cluster.get_json("nodes") if n["status"] == "ready"]) == 3,
        30,
        message="3 nodes ready",
    )
    cluster.apply_text(DB.format(allow=""), "--wait")
    cluster.apply_text(CLIENT.format(name="web", namespace="prod"), "--wait")
    cluster.apply_text(CLIENT.format(name="probe", namespace="test"), "--wait")
    return cluster


def container_of(cluster: Cluster, app: str) -> str:
    ids = cluster.containers(app=app)
    assert len(ids) == 1, ids
    return ids[0]


def call(container: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "exec", container, "call", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def db_hostnames(cluster: Cluster) -> dict[str, str]:
    """container hostname (short id) -> node, for every db replica."""
    out: dict[str, str] = {}
    for r in cluster.get_json("replicas"):
        if r["app"] == "db" and r["container_id"]:
            out[str(r["container_id"])[:12]] = str(r["node"])
    return out


def test_names_http_tcp_across_nodes_and_late_apps(mesh: Cluster) -> None:
    web = container_of(mesh, "web")
    hosts = db_hostnames(mesh)
    assert sorted(hosts.values()) == ["n2", "n3"]
    seen: set[str] = set()
    for url in ("http://db:8080/", "http://db.prod:8080/", "http://db.prod.shoal.internal:8080/"):
        for _ in range(4):
            result = call(web, url)
            assert result.returncode == 0, (url, result.stderr)
            version, hostname = result.stdout.split()
            assert version == "v1"
            assert hostname in hosts
            seen.add(hostname)
    assert seen == set(hosts), "both db replicas answer (balanced)"
    for target in ("tcp://db:9000", "tcp://db.prod:9000"):
        result = call(web, target, "hello")
        assert result.returncode == 0, (target, result.stderr)
        version, hostname, text = result.stdout.split()
        assert (version, text) == ("v1", "hello")
        assert hostname in hosts

    # An app created after web's container started resolves too (DNS, not /etc/hosts).
    mesh.apply_text(
        CLIENT.format(name="cache", namespace="prod").replace("zone: [a]", "zone: [b]"), "--wait"
    )
    wait_for(lambda: call(web, "http://cache:8080/").returncode == 0, 20, message="cache by name")


class RotationWatch:
    """Records, on the host's uptime clock, every ``health/prod/db`` seen on the bus."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.changes: list[tuple[float, AppHealth]] = []
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with Observer(self.cluster.broker.url, self.cluster.prefix) as observer:
            topic = observer.topic(HEALTH, AppKey("prod", "db"))

            def record(seen_topic: str, env: Envelope | None) -> None:
                if seen_topic == topic and env is not None:
                    self.changes.append((uptime(), AppHealth.model_validate(env.body)))

            await observer.bus.watch(topic, record)
            self.ready.set()
            await asyncio.to_thread(self.stop.wait)

    def __enter__(self) -> RotationWatch:
        self.thread.start()
        assert self.ready.wait(15), "observer connected"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def left_rotation(self, replica: str, after: float) -> float | None:
        """When ``replica`` was first published not ready (or gone) after ``after``."""
        for at, health in self.changes:
            if at < after:
                continue
            mine = [r for r in health.replicas if r.id == replica]
            if not mine or not mine[0].ready or mine[0].terminating:
                return at
        return None


def uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def test_docker_kill_of_a_db_replica_under_a_client_loop(mesh: Cluster) -> None:
    web = container_of(mesh, "web")
    hosts = db_hostnames(mesh)
    victim = next(h for h, node in hosts.items() if node == "n2")
    replica = next(
        str(r["id"]) for r in mesh.get_json("replicas") if str(r["container_id"]).startswith(victim)
    )
    with RotationWatch(mesh) as watch:
        loop = subprocess.Popen(
            ["docker", "exec", web, "call", "loop", "400", "http://db:8080/"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(lambda: call(web, "http://db:8080/").returncode == 0, 10, message="traffic")
            killed = uptime()
            subprocess.run(["docker", "kill", victim], check=True, capture_output=True)
            wait_for(
                lambda: watch.left_rotation(replica, killed) is not None,
                20,
                interval=0.05,
                message="the killed replica left rotation",
            )
            stdout, _ = loop.communicate(timeout=120)
        finally:
            if loop.poll() is None:
                loop.kill()
    left = watch.left_rotation(replica, killed)
    assert left is not None
    lines = [line.split() for line in stdout.splitlines()]
    assert len(lines) == 400
    failed = [line for line in lines if line[1] != "ok"]
    late = [line for line in failed if float(line[2]) > left]
    print(
        f"\nkill under a client loop: {len(failed)} of {len(lines)} failed, {len(late)} after "
        f"the replica left rotation ({left - killed:.2f} s after the kill)"
    )
    # A handful: those in flight through the killed replica, and those Docker's proxy of its
    # published port accepted (then closed) in the ~0.1-0.2 s before its exit was seen.
    assert len(failed) <= 10, failed
    assert late == [], late
    answered = {line[4] for line in lines if line[1] == "ok"}
    assert answered <= set(hosts)
    assert len(answered) == 2


def test_namespaces_are_isolated_unless_allowed(mesh: Cluster) -> None:
    probe = container_of(mesh, "probe")
    web = container_of(mesh, "web")
    vip = call(web, "resolve", "db.prod").stdout.split()
    assert len(vip) == 1, vip
    assert call(probe, "http://db.prod:8080/").returncode != 0  # no such name for test
    assert call(probe, "resolve", "db.prod").stdout.split() == []
    assert call(probe, f"http://{vip[0]}:8080/").returncode != 0  # the VIP refuses it too
    assert call(probe, f"tcp://{vip[0]}:9000").returncode != 0

    mesh.apply_text(DB.format(allow=", allow_from: [test]"))
    wait_for(
        lambda: call(probe, "http://db.prod:8080/").returncode == 0,
        20,
        message="test may reach db once allowed",
    )
    assert call(probe, "tcp://db.prod:9000", "hi").returncode == 0
    assert call(probe, "http://db:8080/").returncode != 0  # db is prod's, not test's
