"""Fleet benchmark: the whole control plane at N simulated nodes, through real mosquitto.

Real processes: mosquitto (with the shipped 1 MiB ``message_size_limit``), the controller,
the scheduler, ``--health`` health instances and the balancer; the nodes are simulated
(``tests/benchmarks/fleet_nodes.py``: each one a real MQTT client with its own id, the
agent's last will, heartbeats, and a report of every assigned replica ``running``, served
by a tiny HTTP server on the node's own loopback address, which health probes for
readiness). Per size: N nodes, N/2 apps, 10·N replicas (2,000 nodes: 1,000 apps, 20,000
replicas), every app with an HTTP readiness probe and a route.

Figures per size, measured on the bus by a client of the benchmark's own:
- apply of every app (batches of 100 per ``apply``) -> every replica ready in ``health/``;
- one node lost (its last will) -> its replicas ready elsewhere, none left on it;
- a rollout of 100 apps at once -> every replica of them ready at the new revision;
- bus messages per second in steady state (everything under the prefix, 10 s);
- CPU seconds (whole run) and peak RSS (``VmHWM``) of each service, from ``/proc``;
- requests through the balancer to a sample of apps (all must answer 200).

    python tests/benchmarks/bench_fleet.py [--sizes 500,1000,2000] [--health 2]
        [--timeout 900] [--profile health-0,scheduler --profile-dir DIR]

A phase that does not finish within ``--timeout`` ends that size's run: what was reached is
reported (``apply: 9,120 of 10,000 replicas ready after 300 s``) and the CPU and memory
figures are still taken. ``--profile``: those services run under pyinstrument (sampling
every 10 ms), each writing a text profile to ``--profile-dir`` when it stops.

The default size is small (``make bench``). The machine's cores are shared: the figures are
noisy and include the simulated nodes' own CPU (they run on the same cores).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from core.bus import Bus, connect_bus  # noqa: E402
from core.channels import APPLY, APPS, HEALTH, NODE_ASSIGN  # noqa: E402
from core.commands import ApplyCommand, Reply  # noqa: E402
from core.config import BrokerURL  # noqa: E402
from core.errors import RequestTimeout  # noqa: E402
from core.keys import AppKey  # noqa: E402
from core.topics import Topics  # noqa: E402
from tests.support.net import free_port, wait_port  # noqa: E402
from tests.support.procs import Proc, ProcGroup, proc_group, start_broker  # noqa: E402

NODES_PER_PROCESS = 250
BROKER_CONF = ["message_size_limit 1048576", "max_queued_messages 10000"]  # as shipped
CLK_TCK = os.sysconf("SC_CLK_TCK")


def app_spec(i: int, replicas: int, rev: int = 1) -> dict[str, Any]:
    return {
        "name": f"app{i:04d}",
        "image": "sim/app:1",
        "replicas": replicas,
        "resources": {"cpu": 0.01, "memory": "8Mi"},
        "ports": {"http": 8080},
        "env": {"ROLLOUT": str(rev)},
        "health": {
            "readiness": {
                "http": "/healthz",
                "port": "http",
                # Kubernetes' defaults (periodSeconds 10, failureThreshold 3); 5 s timeout
                # as the cores are shared (at 1 s replicas flap on a loaded machine)
                "interval": "10s",
                "timeout": "5s",
                "failures": 3,
            }
        },
        "route": {"host": f"app{i:04d}.fleet", "path": "/", "port": "http"},
        "termination": {"drain": 0, "grace": "1s"},
        "update": {
            "max_surge": max(1, replicas // 4),  # Kubernetes' default: 25 %
            # Kubernetes' default progressDeadlineSeconds; Shoal's default (60 s) rolls
            # back a fleet-wide rollout whose steps wait for cores the fleet's steady
            # state already uses (see the README's Fleet section)
            "progress_deadline": "600s",
        },
    }


# -- process figures ----------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def with_children(pid: int) -> list[int]:
    """``pid`` and its children (the balancer's workers run under its master)."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    return [pid, *(int(k) for k in kids)]


# -- simulated node hosts -------------------------------------------------------------


class NodeHosts:
    """Processes of simulated nodes (``fleet_nodes.py``), driven over stdin/stdout."""

    def __init__(self, url: str, prefix: str, nodes: int, workdir: Path) -> None:
        self.hosts: list[subprocess.Popen[str]] = []
        self.owner: dict[str, int] = {}
        for first in range(0, nodes, NODES_PER_PROCESS):
            count = min(NODES_PER_PROCESS, nodes - first)
            log = (workdir / f"nodes-{first}.log").open("w")
            self.hosts.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.benchmarks.fleet_nodes",
                        "--broker",
                        url,
                        "--prefix",
                        prefix,
                        "--first",
                        str(first),
                        "--count",
                        str(count),
                    ],
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    start_new_session=True,
                )
            )
            for i in range(first, first + count):
                self.owner[f"sim{i:05d}"] = len(self.hosts) - 1

    def wait_ready(self) -> None:
        for host in self.hosts:
            assert host.stdout is not None
            line = host.stdout.readline()
            if not line.startswith("ready"):
                raise RuntimeError(f"a node host did not start: {line!r}")

    def lose(self, node: str) -> None:
        host = self.hosts[self.owner[node]]
        assert host.stdin is not None
        assert host.stdout is not None
        host.stdin.write(f"lose {node}\n")
        host.stdin.flush()
        if host.stdout.readline().strip() != f"lost {node}":
            raise RuntimeError(f"{node} was not lost")

    @property
    def pids(self) -> list[int]:
        return [h.pid for h in self.hosts]

    def close(self) -> None:
        for host in self.hosts:
            if host.poll() is None:
                host.terminate()
        for host in self.hosts:
            try:
                host.wait(10)
            except subprocess.TimeoutExpired:
                host.kill()
                host.wait(5)


# -- the benchmark's own view of the bus ---------------------------------------------


@dataclass
class Watch:
    bus: Bus
    health: Any = None
    apps: Any = None
    assigns: Any = None
    messages: int = 0
    task: asyncio.Task[None] | None = None
    counter: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str, prefix: str) -> Watch:
        bus = connect_bus(
            BrokerURL.parse(url), Topics(prefix), client_id=f"bench-{uuid.uuid4().hex[:6]}"
        )
        watch = cls(bus)
        watch.task = asyncio.create_task(bus.run())
        await bus.wait_connected(30)
        watch.health = await bus.view(HEALTH)
        watch.apps = await bus.view(APPS)
        watch.assigns = await bus.view(NODE_ASSIGN)

        watch.counter = asyncio.create_task(watch._count(BrokerURL.parse(url), prefix))
        return watch

    async def _count(self, broker: BrokerURL, prefix: str) -> None:
        """Count every message under ``prefix``, undecoded (on a client of its own: the
        benchmark's watch must not be the slowest reader of the bus)."""
        async with aiomqtt.Client(broker.host, broker.port, identifier=f"count-{prefix}") as c:
            await c.subscribe(f"{prefix}/#")
            async for _ in c.messages:
                self.messages += 1

    def ready(self, key: AppKey, want: int, revision: int | None = None) -> bool:
        h = self.health.get(key)
        if h is None:
            return False
        ready = h.ready
        if revision is not None and any(r.revision != revision for r in h.replicas):
            return False
        return len(ready) >= want

    async def close(self) -> None:
        self.bus.close()
        for task in (self.task, self.counter):
            if task is not None:
                task.cancel()
                await asyncio.wait({task}, timeout=10)


class PhaseTimeout(Exception):
    """A phase did not finish in time; the message says how far it got."""


async def until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    progress: Callable[[], str] | None = None,
) -> float:
    """Seconds until ``check()`` holds (polled every 0.2 s), or ``PhaseTimeout`` after
    ``timeout``; ``progress()`` (how far it got) is printed every 30 s and in the error."""
    started = time.monotonic()
    shown = started
    while not check():
        now = time.monotonic()
        if now - started > timeout:
            got = f" ({progress()})" if progress else ""
            raise PhaseTimeout(f"{what}: not within {timeout:.0f}s{got}")
        if progress is not None and now - shown >= 30:
            shown = now
            print(f"    {now - started:.0f}s: {progress()}", flush=True)
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def controller_answering(bus: Bus, timeout: float) -> None:
    """Until the controller answers (a command sent before it subscribed is lost)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await bus.request(APPLY, ApplyCommand(apps=[], dry_run=True), timeout=2)
            return
        except RequestTimeout:
            if time.monotonic() > deadline:
                raise


async def apply_all(bus: Bus, specs: list[dict[str, Any]]) -> None:
    for batch in range(0, len(specs), 100):
        reply = await bus.request(APPLY, ApplyCommand(apps=specs[batch : batch + 100]), timeout=120)
        if isinstance(reply, Reply) and not reply.ok:
            raise RuntimeError(f"apply refused: {reply.errors[:3]}")


# -- one size ---------------------------------------------------------------------------


@dataclass
class Figures:
    nodes: int
    apps: int
    replicas: int
    health: int
    apply_ready: float = 0.0
    node_lost: float = 0.0
    lost_replicas: int = 0
    rollout: float = 0.0
    rolled_back: int = 0
    msgs_per_s: float = 0.0
    served: str = ""
    cpu: dict[str, float] = field(default_factory=dict)
    #: share of one core each service used in steady state (the 10 s of msgs/s)
    steady_cpu: dict[str, float] = field(default_factory=dict)
    rss: dict[str, float] = field(default_factory=dict)
    failed: str = ""  # the phase that did not finish in time, and how far it got


def profiled(
    procs: ProcGroup, service: str, url: str, *args: str, prefix: str, name: str, out: Path
) -> Proc:
    """``procs.service`` under pyinstrument: a text profile in ``out`` when it stops."""
    argv = [
        sys.executable,
        "-m",
        "pyinstrument",
        "--interval",
        "0.01",
        "--renderer",
        "text",
        "--outfile",
        str(out),
        "-m",
        f"services.{service}",
        "--broker",
        url,
        "--prefix",
        prefix,
        *args,
    ]
    return procs.spawn(name, argv)


@dataclass
class RunOptions:
    services: frozenset[str] = frozenset()  # names as in the CPU table: health-0, scheduler
    out: Path = Path(".")
    lost_grace: float = 10.0  # the scheduler's --lost-grace


@contextmanager
def control_plane(
    procs: ProcGroup,
    url: str,
    prefix: str,
    health: int,
    listen: int,
    options: RunOptions,
    nodes: int,
) -> Iterator[dict[str, Proc]]:
    quiet = ("--log-level", "info")  # procs.service asks for debug; the last one counts

    def start(service: str, name: str, *args: str) -> Proc:
        if name in options.services:
            out = options.out / f"{name}-{nodes}-nodes.txt"
            return profiled(procs, service, url, *args, *quiet, prefix=prefix, name=name, out=out)
        return procs.service(service, url, *args, *quiet, prefix=prefix, name=name)

    services = {
        "controller": start("controller", "controller", "--data-dir", str(procs.workdir / "data")),
        "scheduler": start(
            "scheduler",
            "scheduler",
            "--node-grace",
            "15",
            "--lost-grace",
            f"{options.lost_grace:g}",
        ),
        "balancer": start("balancer", "balancer", "--listen", f"127.0.0.1:{listen}"),
    }
    for i in range(health):
        services[f"health-{i}"] = start("health", f"health-{i}", "--instance", f"h{i}")
    try:
        yield services
    finally:
        for name in options.services & services.keys():
            services[name].stop(timeout=120)  # rendering a long profile takes a while


async def run_size(nodes: int, health: int, timeout: float, options: RunOptions) -> Figures:
    apps, per_app = max(1, nodes // 2), 20
    fig = Figures(nodes, apps, apps * per_app, health)
    prefix = f"fleet{uuid.uuid4().hex[:8]}"
    with proc_group("shoal-fleet-") as procs:
        broker = start_broker(procs, "mosquitto", conf_lines=BROKER_CONF)
        listen = free_port()
        hosts = NodeHosts(broker.url, prefix, nodes, procs.workdir)
        try:
            with control_plane(
                procs, broker.url, prefix, health, listen, options, nodes
            ) as services:
                wait_port("127.0.0.1", listen, timeout=60)
                hosts.wait_ready()
                watch = await Watch.open(broker.url, prefix)
                try:

                    def pids() -> dict[str, list[int]]:
                        """Each figure's processes (a service's children included)."""
                        out = {name: with_children(p.pid) for name, p in services.items()}
                        out["broker"] = [broker.proc.pid]
                        out["nodes (sim)"] = hosts.pids
                        return out

                    def cpu_now() -> dict[str, float]:
                        return {n: sum(map(cpu_seconds, ps)) for n, ps in pids().items()}

                    await run_phases(fig, watch, hosts, apps, per_app, listen, timeout, cpu_now)
                except PhaseTimeout as err:
                    fig.failed = str(err)
                    print(f"  {nodes} nodes: {err}", flush=True)
                finally:
                    fig.cpu = cpu_now()
                    fig.rss = {n: sum(map(peak_rss_mb, ps)) for n, ps in pids().items()}
                    await watch.close()
        except Exception:
            print(procs.dump()[-8000:], file=sys.stderr)
            raise
        finally:
            hosts.close()
    return fig


async def run_phases(
    fig: Figures,
    watch: Watch,
    hosts: NodeHosts,
    apps: int,
    per_app: int,
    listen: int,
    timeout: float,
    cpu_now: Callable[[], dict[str, float]],
) -> None:
    keys = [AppKey("default", f"app{i:04d}") for i in range(apps)]
    specs = [app_spec(i, per_app) for i in range(apps)]

    def all_ready() -> bool:
        return all(watch.ready(k, per_app) for k in keys)

    def ready_count() -> str:
        ready = sum(len(h.ready) for k in keys if (h := watch.health.get(k)) is not None)
        return f"{ready:,} of {len(keys) * per_app:,} replicas ready"

    await controller_answering(watch.bus, timeout)
    started = time.monotonic()
    await apply_all(watch.bus, specs)
    await until(all_ready, timeout, "apply -> every replica ready", ready_count)
    fig.apply_ready = time.monotonic() - started
    print(f"  {fig.nodes} nodes: apply -> all ready {fig.apply_ready:.1f}s", flush=True)

    # steady state: nothing changes, heartbeats and probes go on
    await asyncio.sleep(2)
    before, t0, cpu0 = watch.messages, time.monotonic(), cpu_now()
    await asyncio.sleep(10)
    elapsed = time.monotonic() - t0
    fig.msgs_per_s = (watch.messages - before) / elapsed
    fig.steady_cpu = {
        name: (used - cpu0.get(name, 0.0)) / elapsed for name, used in cpu_now().items()
    }

    # through the balancer: a sample of apps answer
    ok = 0
    sample = keys[:: max(1, len(keys) // 20)]
    for key in sample:
        req = urllib.request.Request(
            f"http://127.0.0.1:{listen}/", headers={"Host": f"{key.name}.fleet"}
        )
        try:
            with await asyncio.to_thread(urllib.request.urlopen, req, timeout=10) as resp:
                ok += resp.status == 200
        except OSError:
            pass
    fig.served = f"{ok}/{len(sample)}"

    # one node lost: the one with the most replicas of the first host
    victim = max(
        (n for n in watch.assigns if hosts.owner.get(n) == 0),
        key=lambda n: len(watch.assigns[n].replicas),
    )
    fig.lost_replicas = len(watch.assigns[victim].replicas)
    started = time.monotonic()
    hosts.lose(victim)

    def replaced() -> bool:
        for k in keys:
            h = watch.health.get(k)
            if h is None or any(r.node == victim for r in h.replicas):
                return False
        return all_ready()

    await until(replaced, timeout, f"{victim}'s replicas ready elsewhere", ready_count)
    fig.node_lost = time.monotonic() - started
    print(f"  {fig.nodes} nodes: node lost -> replaced {fig.node_lost:.1f}s", flush=True)

    # a rollout of 100 apps at once
    rolled = list(range(min(100, apps)))
    generations = {i: watch.apps[keys[i]].generation for i in rolled}
    started = time.monotonic()
    await apply_all(watch.bus, [app_spec(i, per_app, rev=2) for i in rolled])

    def settled() -> bool:
        """Every rolled app ready at its newest revision: the new spec, or the old one
        again when the controller rolled it back (its progress deadline, 60 s)."""
        for i in rolled:
            state = watch.apps.get(keys[i])
            if state is None or state.generation <= generations[i] or len(state.versions) != 1:
                return False
            if not watch.ready(keys[i], per_app, state.revision):
                return False
        return True

    def rolled_count() -> str:
        done = sum(
            1
            for i in rolled
            if (state := watch.apps.get(keys[i])) is not None
            and state.generation > generations[i]
            and len(state.versions) == 1
            and watch.ready(keys[i], per_app, state.revision)
        )
        return f"{done} of {len(rolled)} apps rolled and ready"

    await until(settled, timeout, "100 apps rolled out", rolled_count)
    fig.rollout = time.monotonic() - started
    fig.rolled_back = sum(
        1 for i in rolled if str(watch.apps[keys[i]].spec.env.get("ROLLOUT")) != "2"
    )
    print(
        f"  {fig.nodes} nodes: rollout of {len(rolled)} apps {fig.rollout:.1f}s "
        f"({fig.rolled_back} rolled back)",
        flush=True,
    )


def table(figures: list[Figures]) -> str:
    services = sorted({s for f in figures for s in f.cpu})
    head = (
        "| nodes | apps | replicas | health instances | apply -> all ready | node lost -> "
        "replaced | rollout of 100 apps | bus msgs/s steady | served via balancer |"
    )
    rows = [head, "|" + "---|" * 9]

    def sec(value: float, extra: str = "") -> str:
        return f"{value:.1f} s{extra}" if value else "—"

    for f in figures:
        rows.append(
            f"| {f.nodes:,} | {f.apps:,} | {f.replicas:,} | {f.health} | {sec(f.apply_ready)} "
            f"| {sec(f.node_lost, f' ({f.lost_replicas} replicas)')} "
            f"| {sec(f.rollout, f' ({f.rolled_back} rolled back)')} "
            f"| {f.msgs_per_s:,.0f} | {f.served or '—'} |"
        )
    rows += [f"- {f.nodes:,} nodes: {f.failed}" for f in figures if f.failed]
    rows += ["", "| nodes | " + " | ".join(services) + " |", "|" + "---|" * (len(services) + 1)]
    for f in figures:
        cells = [f"{f.cpu.get(s, 0):.0f} s, {f.rss.get(s, 0):.0f} MB" for s in services]
        rows.append(f"| {f.nodes:,} | " + " | ".join(cells) + " |")
    rows += ["", "Steady state, share of one core (10 s after apply -> all ready):", ""]
    rows += ["| nodes | " + " | ".join(services) + " |", "|" + "---|" * (len(services) + 1)]
    for f in figures:
        cells = [f"{100 * f.steady_cpu[s]:.0f} %" if s in f.steady_cpu else "—" for s in services]
        rows.append(f"| {f.nodes:,} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100", help="node counts, comma-separated")
    parser.add_argument("--health", type=int, default=1, help="health instances")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per phase")
    parser.add_argument("--profile", default="", help="services under pyinstrument: health-0,...")
    parser.add_argument("--profile-dir", type=Path, default=Path("."), help="for the profiles")
    parser.add_argument("--lost-grace", type=float, default=10.0, help="the scheduler's")
    args = parser.parse_args()
    options = RunOptions(
        frozenset(filter(None, args.profile.split(","))), args.profile_dir, args.lost_grace
    )
    if options.services:
        args.profile_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    for size in (int(s) for s in args.sizes.split(",")):
        print(f"fleet: {size} nodes ...", flush=True)
        figures.append(asyncio.run(run_size(size, args.health, args.timeout, options)))
    print(
        "\nCPU seconds over the whole run and peak RSS per service (its processes summed; "
        "shared 2-core machine):"
    )
    print(table(figures))


if __name__ == "__main__":
    main()
