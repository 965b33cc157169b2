"""Simulated nodes for the fleet benchmark: many node agents' bus clients in one process.

Each simulated node is what the control plane sees of an agent, through the real broker:
its own MQTT client (client id ``agent-<node>``) with the agent's last will (``info`` with
``status=offline``), its retained ``nodes/<node>/info`` and heartbeats, a subscription to
its own ``nodes/<node>/assign``, and a retained ``nodes/<node>/replicas`` report in which
every assigned replica is ``running`` at once (an in-memory engine: no Docker). Every node
listens with a tiny HTTP server on its own loopback address (``127.0.x.y``), which is every
replica's endpoint there: health's readiness probes reach a real socket.

    python -m tests.benchmarks.fleet_nodes --broker mqtt://127.0.0.1:1883 --prefix p \
        --first 0 --count 500

Prints ``ready <count>`` once every node is online. Reads commands on stdin:
``lose <node>`` (the node goes away: its server closes, its last will is published, its
client disconnects) answered ``lost <node>``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from core import codec  # noqa: E402
from core.bus import Bus, LastWill, connect_bus  # noqa: E402
from core.channels import NODE_ASSIGN, NODE_INFO, NODE_REPLICAS  # noqa: E402
from core.config import BrokerURL  # noqa: E402
from core.logs import setup_logging  # noqa: E402
from core.service import install_event_loop_policy  # noqa: E402
from core.state import NodeAssignment, NodeInfo, NodeReplicas, ReplicaStatus  # noqa: E402
from core.topics import Topics  # noqa: E402

GI = 1024**3
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


def node_id(index: int) -> str:
    return f"sim{index:05d}"


def node_address(index: int) -> str:
    """A loopback address of its own per node: 127.1.0.1, 127.1.0.2, ..."""
    n = index + 1
    return f"127.{1 + n // 65536}.{(n // 256) % 256}.{n % 256}"


async def serve_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer every request with 200 (keep-alive) until the peer closes."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                break
            writer.write(RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


class SimNode:
    def __init__(self, index: int, broker: BrokerURL, prefix: str, heartbeat: float) -> None:
        self.node = node_id(index)
        self.address = node_address(index)
        self.prefix = prefix
        self.heartbeat = heartbeat
        self.info = NodeInfo(
            node=self.node,
            address=self.address,
            labels={"zone": f"z{index % 4}"},
            capacity={"cpu": 64.0, "memory": 256 * GI},
            heartbeat_interval=heartbeat,
            version="sim",
        )
        offline = self.info.model_copy(update={"status": "offline"})
        topic = NODE_INFO.topic(prefix, self.node)
        will = LastWill(topic, codec.encode(codec.make("node", offline, src=f"agent/{self.node}")))
        self.bus: Bus = connect_bus(
            broker,
            Topics(prefix),
            client_id=f"agent-{self.node}",
            src=f"agent/{self.node}",
            will=will,
            keepalive=30,
        )
        self.port = 0
        self.server: asyncio.Server | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.assignment: NodeAssignment | None = None
        self.started: dict[str, float] = {}
        self._dirty = asyncio.Event()

    async def start(self) -> None:
        self.server = await asyncio.start_server(serve_http, self.address, 0, backlog=512)
        self.port = self.server.sockets[0].getsockname()[1]
        self.tasks.append(asyncio.create_task(self.bus.run()))
        await self.bus.subscribe(NODE_ASSIGN, self.on_assign, key=self.node)
        await self.bus.wait_connected(60)
        await self.bus.publish(NODE_INFO, self.beat(), timeout=60)
        self.tasks.append(asyncio.create_task(self.beating()))
        self.tasks.append(asyncio.create_task(self.reporting()))

    def beat(self) -> NodeInfo:
        return self.info.model_copy(update={"heartbeat": time.time()})

    async def beating(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                await self.bus.publish(NODE_INFO, self.beat())
            except Exception as err:
                print(f"{self.node}: heartbeat failed: {err}", file=sys.stderr, flush=True)

    def on_assign(self, _: str, assignment: NodeAssignment | None) -> None:
        self.assignment = assignment
        self._dirty.set()

    async def reporting(self) -> None:
        """One report per burst of assignment changes (as the agent coalesces, 20 ms)."""
        while True:
            await self._dirty.wait()
            await asyncio.sleep(0.02)
            self._dirty.clear()
            try:
                await self.bus.publish(NODE_REPLICAS, self.report())
            except Exception as err:
                print(f"{self.node}: report failed: {err}", file=sys.stderr, flush=True)
                self._dirty.set()
                await asyncio.sleep(1)

    def report(self) -> NodeReplicas:
        now = time.time()
        replicas = self.assignment.replicas if self.assignment is not None else []
        started = {r.id: self.started.get(r.id, now) for r in replicas}
        self.started = started
        endpoint = f"{self.address}:{self.port}"
        return NodeReplicas(
            node=self.node,
            ts=now,
            replicas=[
                ReplicaStatus(
                    id=r.id,
                    namespace=r.namespace,
                    app=r.app,
                    revision=r.revision,
                    node=self.node,
                    phase="running",
                    container_id=f"sim-{r.id}",
                    endpoints={"http": endpoint},
                    started_at=started[r.id],
                    since=started[r.id],
                )
                for r in replicas
            ],
        )

    async def lose(self) -> None:
        """The node is gone: no server, the last will's word, no client."""
        if self.server is not None:
            self.server.close()
        for task in self.tasks[1:]:
            task.cancel()
        offline = self.info.model_copy(update={"status": "offline", "heartbeat": time.time()})
        await self.bus.publish(NODE_INFO, offline)
        self.bus.close()
        self.tasks[0].cancel()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--heartbeat", type=float, default=5.0)
    args = parser.parse_args()
    setup_logging("warning")  # to stderr: stdout is the benchmark's protocol
    broker = BrokerURL.parse(args.broker)
    nodes = {
        node_id(i): SimNode(i, broker, args.prefix, args.heartbeat)
        for i in range(args.first, args.first + args.count)
    }
    for chunk in range(0, len(nodes), 50):  # connect in waves, not 2,000 at once
        await asyncio.gather(*(n.start() for n in list(nodes.values())[chunk : chunk + 50]))
    print(f"ready {len(nodes)}", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().split():
        if line[0] == "lose" and len(line) == 2 and line[1] in nodes:
            await nodes[line[1]].lose()
            print(f"lost {line[1]}", flush=True)


if __name__ == "__main__":
    install_event_loop_policy()  # uvloop, as the real agent runs
    asyncio.run(main())
