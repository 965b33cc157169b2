"""Two regions for tests: two real mosquitto brokers joined by mosquitto's own bridge, and
a link between them the test can cut and restore.

The bridge (``connection``/``address``/``topic <prefix>/# both 1`` in the second broker's
configuration, as in ``configs/mosquitto-bridge.conf``) dials the first broker through
``Link``, a plain TCP pass-through on a loopback port: ``cut()`` closes every connection
across it and refuses new ones, as a dropped WAN link or a firewall rule would, while each
region's own clients stay connected to their own broker; ``restore()`` lets the bridge's
next attempt (``restart_timeout``) through again.
"""

from __future__ import annotations

import contextlib
import selectors
import shutil
import socket
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass

from tests.support.cluster import Cluster, http_get
from tests.support.net import free_port, wait_port
from tests.support.procs import Broker, Proc, ProcGroup

#: the bridge's reconnect backoff, base and cap in seconds (``restart_timeout``)
BRIDGE_RESTART = "1 3"
#: the bridge's MQTT keepalive: a link that drops packets silently is found within 1.5x
BRIDGE_KEEPALIVE = 5


class Link:
    """A TCP pass-through ``127.0.0.1:port -> target`` that can be cut and restored."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._open = threading.Event()
        self._thread = threading.Thread(target=self._run, name="link", daemon=True)
        self.restore()
        self._thread.start()

    def restore(self) -> None:
        with self._lock:
            if self._listener is None:
                listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(("127.0.0.1", self.port))
                listener.listen(16)
                listener.setblocking(False)
                self._listener = listener
            self._open.set()

    def cut(self) -> None:
        """Close every connection across the link and refuse new ones."""
        with self._lock:
            self._open.clear()
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for a, b in self._pairs:
                for s in (a, b):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
                    s.close()
            self._pairs.clear()

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                listener = self._listener
                pairs = list(self._pairs)
            sel = selectors.DefaultSelector()
            try:
                if listener is not None:
                    sel.register(listener, selectors.EVENT_READ, None)
                for a, b in pairs:
                    sel.register(a, selectors.EVENT_READ, b)
                    sel.register(b, selectors.EVENT_READ, a)
                events = sel.select(timeout=0.05)
            except (OSError, ValueError):
                sel.close()
                continue
            for key, _ in events:
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if key.data is None:
                    self._accept(sock)
                else:
                    self._relay(sock, key.data)
            sel.close()

    def _accept(self, listener: socket.socket) -> None:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        try:
            upstream = socket.create_connection(self.target, timeout=2)
        except OSError:
            client.close()
            return
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(True)
        with self._lock:
            if not self._open.is_set():
                client.close()
                upstream.close()
                return
            self._pairs.append((client, upstream))

    def _relay(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            data = src.recv(65536)
            if data:
                dst.sendall(data)
                return
        except OSError:
            pass
        with self._lock:
            self._pairs = [p for p in self._pairs if src not in p]
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


#: Retained topics the home region's control plane alone writes: bridged ``in`` only, so
#: the copies a cut region kept are never replayed over newer ones when the link returns.
HOME_WRITTEN = (
    "apps/#",
    "status/#",
    "health/#",
    "nodes/+/assign",
    "nodes/+/assign/page/+",  # an assignment too large for one message (core/paging.py)
    "nodes/+/cordon",
)
#: Retained topics each region's own agents and services write: bridged ``out`` only, so
#: a region holds no copy of another region's (which it would replay, stale, on return).
REGION_WRITTEN = ("nodes/+/info", "services/#")
#: Retained, written in each region, and read in every region: both ways. The agents'
#: reports (each node's mesh relays to replicas anywhere): their writer republishes over a
#: stale replay. ACME challenges (the CA may ask any region's balancer): each carries its
#: own expiry, so a stale replay is answered only until then.
GUARDED = ("nodes/+/replicas", "nodes/+/replicas/page/+", "acme/challenges/#")
#: Messages that are not retained (commands and their replies, events, metrics, wake-ups,
#: logs): nothing to replay, bridged both ways.
SHARED = ("cmd/#", "reply/#", "events/#", "metrics/#", "wake/#", "logs/#")


def bridge_conf(name: str, address: str, prefix: str) -> str:
    """The bridge section of an away region broker's mosquitto.conf, as in
    ``configs/mosquitto-bridge.conf`` (which adds TLS and a user)."""
    topics = [f"topic {prefix}/{t} in 1\n" for t in HOME_WRITTEN]
    topics += [f"topic {prefix}/{t} out 1\n" for t in REGION_WRITTEN]
    topics += [f"topic {prefix}/{t} both 1\n" for t in (*GUARDED, *SHARED)]
    return (
        f"connection {name}\n"
        f"address {address}\n" + "".join(topics) + "cleansession true\n"
        "try_private true\n"
        f"restart_timeout {BRIDGE_RESTART}\n"
        f"keepalive_interval {BRIDGE_KEEPALIVE}\n"
        "notifications false\n"
    )


@dataclass
class Regions:
    """Broker ``home`` (the first region) and ``away`` bridged to it through ``link``."""

    home: Broker
    away: Broker
    link: Link

    def close(self) -> None:
        self.link.close()


def start_regions(group: ProcGroup, prefix: str, away_name: str = "us") -> Regions:
    """Two mosquitto brokers; the ``away`` one bridges ``<prefix>/#`` both ways to ``home``."""
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    home_port, away_port = free_port(), free_port()
    base = "allow_anonymous true\npersistence false\nset_tcp_nodelay true\n"
    home_conf = group.workdir / f"mosquitto-home-{home_port}.conf"
    home_conf.write_text(f"listener {home_port} 127.0.0.1\n{base}")
    home_proc = group.spawn(f"mosquitto-home-{home_port}", [exe, "-c", str(home_conf)])
    wait_port("127.0.0.1", home_port, timeout=15)
    link = Link(("127.0.0.1", home_port))
    away_conf = group.workdir / f"mosquitto-{away_name}-{away_port}.conf"
    away_conf.write_text(
        f"listener {away_port} 127.0.0.1\n{base}"
        + bridge_conf(f"{prefix}-{away_name}", f"127.0.0.1:{link.port}", prefix)
    )
    away_proc = group.spawn(f"mosquitto-{away_name}-{away_port}", [exe, "-c", str(away_conf)])
    wait_port("127.0.0.1", away_port, timeout=15)
    return Regions(
        Broker("mosquitto", "127.0.0.1", home_port, home_proc),
        Broker("mosquitto", "127.0.0.1", away_port, away_proc),
        link,
    )


#: node -> (address, region): two nodes per region on loopback addresses
NODES = {
    "eu-1": ("127.0.0.2", "eu"),
    "eu-2": ("127.0.0.3", "eu"),
    "us-1": ("127.0.0.4", "us"),
    "us-2": ("127.0.0.5", "us"),
}
HOST = "web.regions.test"
#: four replicas, at least one per region, an http readiness probe
APP = f"""
name: web
image: shoal-test/echo:v1
replicas: 4
resources: {{cpu: 0.05, memory: 32Mi}}
ports: {{http: 8080}}
placement: {{regions: {{min_per_region: 1}}}}
health:
  readiness: {{http: /healthz, port: http, interval: 500ms, timeout: 500ms, failures: 2}}
route: {{host: {HOST}, path: /, port: http}}
termination: {{drain: 500ms, grace: 2s}}
"""


class TwoRegions:
    """A cluster over two bridged brokers: the control plane (controller, scheduler,
    health), a balancer (``--region eu``) and the ``eu`` agents on the home broker; a
    balancer (``--region us``) and the ``us`` agents on the away broker."""

    def __init__(
        self, procs: ProcGroup, prefix: str, *, lost_grace: float = 6.0, node_grace: float = 4.0
    ) -> None:
        self.procs = procs
        self.prefix = prefix
        self.lost_grace = lost_grace
        self.node_grace = node_grace
        self.regions = start_regions(procs, prefix)
        self.cluster = Cluster(procs, self.regions.home, prefix)
        self.lb_ports = {"eu": free_port(), "us": free_port()}
        self.agents: dict[str, Proc] = {}

    def broker(self, region: str) -> Broker:
        return self.regions.home if region == "eu" else self.regions.away

    def start(self) -> TwoRegions:
        home = self.regions.home.url
        data = str(self.procs.workdir / "data")
        self.procs.service("controller", home, "--data-dir", data, prefix=self.prefix)
        self.procs.service(
            "scheduler",
            home,
            "--node-grace",
            str(self.node_grace),
            "--lost-grace",
            str(self.lost_grace),
            prefix=self.prefix,
        )
        self.procs.service("health", home, prefix=self.prefix)
        for region, port in self.lb_ports.items():
            self.procs.service(
                "balancer",
                self.broker(region).url,
                "--listen",
                f"127.0.0.1:{port}",
                "--region",
                region,
                prefix=self.prefix,
                name=f"balancer-{region}",
            )
        for node, (address, region) in NODES.items():
            self.agents[node] = self.procs.service(
                "agent",
                self.broker(region).url,
                "--node-id",
                node,
                "--address",
                address,
                "--labels",
                f"region={region}",
                "--cpus",
                "2",
                "--memory",
                "2Gi",
                prefix=self.prefix,
                name=f"agent-{node}",
            )
        for port in self.lb_ports.values():
            wait_port("127.0.0.1", port, timeout=30)
        self.cluster.wait_serving(60)
        return self

    def running(self) -> dict[str, str]:
        """Running containers of this cluster: container hostname -> node."""
        ids = self.cluster.containers()
        if not ids:
            return {}
        out = subprocess.run(
            [
                "docker",
                "inspect",
                "--format",
                '{{.Config.Hostname}} {{index .Config.Labels "shoal.node"}} {{.State.Running}}',
                *ids,
            ],
            capture_output=True,
            text=True,
        ).stdout
        found = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[2] == "true":
                found[parts[0]] = parts[1]
        return found

    def per_region(self) -> Counter[str]:
        return Counter(NODES[node][1] for node in self.running().values() if node in NODES)

    def answers(self, region: str, count: int = 12) -> Counter[str]:
        """The region each of ``count`` requests through ``region``'s balancer was
        answered from ("failed" for anything but a 200)."""
        running = self.running()
        got: Counter[str] = Counter()
        for _ in range(count):
            try:
                res = http_get(f"http://127.0.0.1:{self.lb_ports[region]}/", HOST, timeout=5)
            except OSError:
                got["failed"] += 1
                continue
            words = res.body.split()
            if res.status != 200 or len(words) < 2:
                got["failed"] += 1
                continue
            node = running.get(words[1])
            got[NODES[node][1] if node in NODES else "unknown"] += 1
        return got

    def close(self) -> None:
        self.cluster.close()
        self.regions.close()
