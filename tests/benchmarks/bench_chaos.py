"""Issue 14, part 6: a chaos benchmark. Faults in turn on a three-node cluster under load.

Three agents on one engine (n1 = 127.0.0.1, n2 = 127.0.0.2, n3 = 127.0.0.3, zones a/b/c),
real mosquitto, the whole stack (controller, scheduler, health, scaler, balancer), one app
of 3 replicas spread across the zones with an http readiness probe, and 2 load workers
sending GETs through the balancer for the whole run. Then, in turn:

- ``kill -9`` of the controller, scheduler, health, scaler (each started again at once, as
  ``shoal up`` does), of the balancer's worker (its master starts a new one), of each agent
  (started again at once);
- a broker restart (mosquitto without persistence: every retained message is lost);
- a dockerd restart (SIGTERM, started again the same way; without the engine's
  ``live-restore`` every container on it dies, all three nodes' at once since they share
  it): only with ``--faults dockerd``, as
  it disturbs anything else using the engine;
- a node lost with its containers (n3's agent ``kill -9`` and its containers removed; its
  agent comes back empty afterwards);
- a node partitioned and returning (n2's agent SIGSTOPped past the scheduler's lost grace,
  then SIGCONT);
- a soak: a random replica's container ``docker kill``ed every ``--soak-interval`` s for
  ``--soak`` s.

For each fault it prints: requests sent and failed (from the fault to convergence plus a
short window of traffic after it), the time until converged (desired == 3 == ready ==
serving == running containers, every expected node ready, a killed service's new process
online), desired state lost (the retained
app before and after, field by field: must be 0), containers restarted or replaced that
did not need it (every container not hit by the fault keeps its id and start time),
duplicates left (replicas in rotation or containers running beyond desired, sampled for 2 s
after convergence), the time in which no request succeeded (0.1 s samples: a balancer's
instant 503 makes a tight client loop count many failures per second of outage), and the
failures by kind. The state is read from the bus by an observer (no CLI in the loop).
``--lost-grace`` is the scheduler's (default 30 s, its own default); ``--faults WORD ...``
runs only the faults whose names contain one of the words.

    .venv/bin/python -m tests.benchmarks.bench_chaos [--soak 120] [--soak-interval 3]
        [--lost-grace 30] [--faults WORD ...]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import random
import signal
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from core.channels import APPS, HEALTH, NODE_INFO, PRESENCE
from core.keys import AppKey
from tests.support.cluster import Cluster, wait_for
from tests.support.dockerd import Dockerd
from tests.support.images import ensure_echo_image
from tests.support.load import LoadLoop, LoadResult
from tests.support.observer import Observer
from tests.support.procs import Proc, proc_group, start_broker

NODES = {"n1": ("127.0.0.1", "a"), "n2": ("127.0.0.2", "b"), "n3": ("127.0.0.3", "c")}
DESIRED = 3
KEY = AppKey("default", "chaos")
SPEC = """
name: chaos
image: shoal-test/echo:v1
replicas: 3
resources: {cpu: 0.05, memory: 32Mi}
ports: {http: 8080}
health:
  readiness: {http: /healthz, port: http, interval: 500ms, timeout: 500ms, failures: 2}
route: {host: chaos.test, path: /, port: http}
placement: {strategy: spread, spread_by: zone}
termination: {drain: 500ms, grace: 2s}
"""
# The desired state the controller retains for the app: what must survive every fault.
DESIRED_FIELDS = ("revision", "generation", "spec", "replicas", "versions", "phase")

T = TypeVar("T")


class Watch:
    """An ``Observer`` on a loop of its own thread; ``call(fn)`` runs ``fn(observer)`` there."""

    def __init__(self, url: str, prefix: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.observer = Observer(url, prefix)
        self._submit(self.observer.__aenter__()).result(30)

    def _submit(self, coro: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, fn: Callable[[Observer], T]) -> T:
        async def run() -> T:
            return fn(self.observer)

        result: T = self._submit(run()).result(10)
        return result

    def forget(self) -> None:
        """Drop the cache (after a broker restart: only what is published again counts)."""
        self.call(lambda obs: obs.cache.clear())

    def close(self) -> None:
        self._submit(self.observer.__aexit__(None, None, None)).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@dataclass
class State:
    desired: dict[str, Any] | None  # the retained app, its desired fields
    replicas: int  # desired replica count
    ready: int  # ready replicas of the app's revision
    serving: int  # replicas in rotation (ready, not terminating)
    nodes: dict[str, str]  # node -> status
    containers: dict[str, str]  # running container id -> start time


def read_bus(obs: Observer) -> tuple[dict[str, Any] | None, int, int, int, dict[str, str]]:
    app = obs.value(APPS, KEY)
    health = obs.value(HEALTH, KEY)
    nodes = {n: str(info.status) for n, info in obs.values(NODE_INFO).items()}
    if app is None:
        return None, 0, 0, 0, nodes
    dump = app.model_dump(mode="json")
    desired = {k: dump[k] for k in DESIRED_FIELDS}
    ready = [r for r in health.ready if r.revision == app.revision] if health else []
    serving = len(health.ready) if health else 0
    return desired, app.replicas, len(ready), serving, nodes


def replaced_off(obs: Observer, node: str) -> bool:
    """The app is fully ready with no replica of ``node`` in rotation."""
    app, health = obs.value(APPS, KEY), obs.value(HEALTH, KEY)
    if app is None or health is None:
        return False
    ready = [r for r in health.ready if r.revision == app.revision]
    return len(ready) == app.replicas and not any(r.node == node for r in health.ready)


def containers(prefix: str, node: str | None = None) -> dict[str, str]:
    argv = ["docker", "ps", "-q", "--filter", f"label=shoal.prefix={prefix}"]
    if node is not None:
        argv += ["--filter", f"label=shoal.node={node}"]
    ids = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
    if not ids:
        return {}
    out = subprocess.run(
        ["docker", "inspect", "--format", "{{.Id}} {{.State.StartedAt}} {{.State.Running}}", *ids],
        capture_output=True,
        text=True,
    ).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return {row[0]: row[1] for row in rows if len(row) == 3 and row[2] == "true"}


@dataclass
class Row:
    fault: str
    sent: int = 0
    failed: int = 0
    converged: float | None = None
    lost: int = 0
    unneeded: int = 0
    duplicates: int = 0
    note: str = ""
    failures: str = ""  # the failures by status or error, most frequent first
    outage: float = 0.0  # seconds in which no request succeeded


class Outage:
    """Counts the 0.1 s intervals in which no request succeeded (while in the block)."""

    STEP = 0.1

    def __init__(self, load: LoadLoop) -> None:
        self.load = load
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Outage:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _sample(self) -> None:
        ok = self.load.snapshot().ok
        while not self._stop.wait(self.STEP):
            now = self.load.snapshot().ok
            if now == ok:
                self.seconds += self.STEP
            ok = now


class Chaos:
    def __init__(self, cluster: Cluster, watch: Watch, load: LoadLoop) -> None:
        self.cluster, self.watch, self.load = cluster, watch, load
        self.rows: list[Row] = []

    def state(self) -> State:
        desired, replicas, ready, serving, nodes = self.watch.call(read_bus)
        return State(desired, replicas, ready, serving, nodes, containers(self.cluster.prefix))

    def converged(self, s: State, nodes: set[str]) -> bool:
        return (
            s.desired is not None
            and s.replicas == s.ready == s.serving == len(s.containers) == DESIRED
            and all(s.nodes.get(n) == "ready" for n in nodes)
        )

    def wait_converged(
        self, nodes: set[str], back: Callable[[], bool] = lambda: True, timeout: float = 120
    ) -> tuple[State, float]:
        """Poll until converged (and ``back()``); returns the state and when it was seen."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.state()
            if self.converged(s, nodes) and back():
                return s, time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"not converged within {timeout}s: {s}")
            time.sleep(0.1)

    def fault(
        self,
        name: str,
        act: Callable[[], set[str]],
        nodes: set[str] = frozenset(NODES),  # type: ignore[assignment]
        back: Callable[[], bool] = lambda: True,
        note: str = "",
    ) -> Row:
        """Run ``act`` (it returns the containers it was meant to hit) and measure."""
        before = self.state()
        assert self.converged(before, set(NODES)), before
        load0 = self.load.snapshot()
        t0 = time.monotonic()
        with Outage(self.load) as outage:
            victims = act()
            after, t1 = self.wait_converged(nodes, back)
        # duplicates left: replicas in rotation or running beyond desired, just after
        most = max(after.serving, len(after.containers))
        until = time.monotonic() + 2
        while time.monotonic() < until:
            s = self.state()
            most = max(most, s.serving, len(s.containers))
            time.sleep(0.2)
        # a short window of traffic after convergence, then count
        ok = self.load.snapshot().ok
        wait_for(lambda: self.load.snapshot().ok > ok + 200, 60, message="traffic after")
        load1 = self.load.snapshot()
        final = self.state()
        lost = sum(
            1
            for k in DESIRED_FIELDS
            if before.desired is None
            or final.desired is None
            or before.desired[k] != final.desired[k]
        )
        unneeded = sum(
            1
            for cid, started in before.containers.items()
            if cid not in victims and final.containers.get(cid) != started
        )
        row = Row(
            name,
            sent=load1.total - load0.total,
            failed=load1.failed - load0.failed,
            converged=t1 - t0,
            lost=lost,
            unneeded=unneeded,
            duplicates=max(0, most - DESIRED),
            note=note,
            failures=breakdown(load0, load1),
            outage=outage.seconds,
        )
        self.rows.append(row)
        print(format_row(row), flush=True)
        return row

    # -- the faults -------------------------------------------------------------------

    def kill_and_restart(self, proc: Proc) -> Callable[[], set[str]]:
        def act() -> set[str]:
            proc.kill()  # kill -9
            proc.start()  # the supervisor (shoal up) starts it again
            return set()

        return act

    def online(self, proc: Proc) -> Callable[[], bool]:
        """The process ``proc`` runs now says it is online (its presence, with its pid)."""

        def check() -> bool:
            pid = proc.pid
            return self.watch.call(
                lambda obs: any(
                    p.pid == pid and p.status == "online" for p in obs.values(PRESENCE).values()
                )
            )

        return check

    def worker_pid(self) -> int:
        url = f"http://127.0.0.1:{self.cluster.admin_port}/healthz"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(json.loads(resp.read())["pid"])

    def new_worker(self, old: int) -> Callable[[], bool]:
        def check() -> bool:
            try:
                return self.worker_pid() != old
            except OSError:
                return False

        return check

    def kill_balancer_worker(self) -> set[str]:
        os.kill(self.worker_pid(), signal.SIGKILL)
        return set()

    def restart_broker(self) -> set[str]:
        self.cluster.broker.restart()
        self.watch.forget()  # only what is published again (or retained) counts from here
        return set()

    def restart_dockerd(self) -> set[str]:
        hit = set(containers(self.cluster.prefix))
        engine = Dockerd()
        engine.stop()
        engine.start()
        return hit

    def lose_node(self, node: str) -> set[str]:
        self.cluster.agents[node].kill()
        gone = containers(self.cluster.prefix, node)
        subprocess.run(["docker", "rm", "-f", *gone], capture_output=True, check=True)
        return set(gone)

    def partition(self, node: str, grace: float) -> set[str]:
        agent = self.cluster.agents[node]
        hit = set(containers(self.cluster.prefix, node))
        os.kill(agent.pid, signal.SIGSTOP)
        try:
            # past the lost grace: its replica is replaced elsewhere and leaves rotation
            elsewhere = set(NODES) - {node}
            wait_for(
                lambda: (
                    self.watch.call(lambda obs: replaced_off(obs, node))
                    and sum(len(containers(self.cluster.prefix, n)) for n in elsewhere) == DESIRED
                ),
                grace + 60,
                interval=0.2,
                message=f"{node}'s replica replaced",
            )
        finally:
            os.kill(agent.pid, signal.SIGCONT)
        return hit

    def soak(self, seconds: float, interval: float) -> set[str]:
        killed: set[str] = set()
        rng = random.Random(14)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            running = sorted(containers(self.cluster.prefix))
            if running:
                victim = rng.choice(running)
                subprocess.run(["docker", "kill", victim], capture_output=True)
                killed.add(victim)
            next_at = min(end, time.monotonic() + interval)
            while time.monotonic() < next_at:
                time.sleep(0.1)
        return killed


def breakdown(before: LoadResult, after: LoadResult) -> str:
    failed = Counter(after.statuses)
    failed.subtract(before.statuses)
    return ", ".join(f"{k}: {n}" for k, n in failed.most_common() if k != 200 and n > 0)


def format_row(row: Row) -> str:
    converged = f"{row.converged:.1f}" if row.converged is not None else "-"
    rate = f"{100 * (1 - row.failed / row.sent):.2f}%" if row.sent else "-"
    return (
        f"| {row.fault} | {row.sent} | {row.failed} ({rate} ok) | {converged} | {row.lost} "
        f"| {row.unneeded} | {row.duplicates} | {row.outage:.1f} | {row.failures} |"
    )


HEADER = (
    "| fault | requests | failed | converged (s) | desired lost | needless restarts "
    "| duplicates | no request served (s) | failures by kind |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


#: faults run only when named in ``--faults`` (they disturb everything else on the machine)
OPT_IN = {"dockerd restart"}


def faults(
    chaos: Chaos, soak: float, soak_interval: float, lost_grace: float
) -> list[tuple[str, Callable[[], object]]]:
    """Every fault, in order: its name and what runs it (and measures it)."""
    cluster = chaos.cluster
    done: list[tuple[str, Callable[[], object]]] = []

    def service(name: str) -> None:
        proc = cluster.services[name]
        chaos.fault(f"kill -9 {name}", chaos.kill_and_restart(proc), back=chaos.online(proc))

    def agent(node: str) -> None:
        proc = cluster.agents[node]
        chaos.fault(f"kill -9 agent {node}", chaos.kill_and_restart(proc), back=chaos.online(proc))

    def worker() -> None:
        old = chaos.worker_pid()
        chaos.fault(
            "kill -9 balancer worker", chaos.kill_balancer_worker, back=chaos.new_worker(old)
        )

    def lose() -> None:
        chaos.fault("node n3 lost with its containers", lambda: chaos.lose_node("n3"), {"n1", "n2"})
        # n3 comes back, empty: the cluster is whole again for what follows
        cluster.agents["n3"].start()
        wait_for(lambda: chaos.state().nodes.get("n3") == "ready", 60, message="n3 back")

    for name in ("controller", "scheduler", "health", "scaler"):
        done.append((f"kill -9 {name}", functools.partial(service, name)))
    done.append(("kill -9 balancer worker", worker))
    for node in NODES:
        done.append((f"kill -9 agent {node}", functools.partial(agent, node)))
    done.append(
        (
            "broker restart",
            lambda: chaos.fault("broker restart (no persistence)", chaos.restart_broker),
        )
    )
    done.append(
        (
            "partition",
            lambda: chaos.fault(
                f"node n2 partitioned > lost grace ({lost_grace:g} s), returns",
                lambda: chaos.partition("n2", lost_grace),
            ),
        )
    )
    done.append(("node lost", lose))
    done.append(
        (
            "dockerd restart",
            lambda: chaos.fault("dockerd restart", chaos.restart_dockerd),
        )
    )
    done.append(
        (
            "soak",
            lambda: chaos.fault(
                f"soak: docker kill every {soak_interval:g} s for {soak:g} s",
                lambda: chaos.soak(soak, soak_interval),
            ),
        )
    )
    return done


def run(
    soak: float, soak_interval: float, lost_grace: float, only: list[str] | None = None
) -> list[Row]:
    ensure_echo_image()
    with proc_group("shoal-chaos-") as procs:
        broker = start_broker(procs, "mosquitto")
        cluster = Cluster(procs, broker)
        watch: Watch | None = None
        try:
            cluster.start(agents={}, scaler=True)
            sched = cluster.services["scheduler"]
            sched.stop()  # the same scheduler, with the lost grace of this run
            cluster.services["scheduler"] = procs.service(
                "scheduler", broker.url, "--lost-grace", str(lost_grace), prefix=cluster.prefix
            )
            for node, (address, zone) in NODES.items():
                cluster.start_agent(
                    node, address, "--labels", f"zone={zone}", "--cpus", "2", "--memory", "2Gi"
                )
            watch = Watch(broker.url, cluster.prefix)
            w = watch
            wait_for(
                lambda: w.call(read_bus)[4] == dict.fromkeys(NODES, "ready"),
                60,
                message="3 nodes ready",
            )  # before the apply, so the replicas spread over the three zones
            cluster.apply_text(SPEC, "--wait")
            load = LoadLoop(
                "127.0.0.1", cluster.listen_port, vhost="chaos.test", workers=2, max_seconds=3600
            )
            with load:
                chaos = Chaos(cluster, watch, load)
                chaos.wait_converged(set(NODES), timeout=60)
                spread = {n: len(containers(cluster.prefix, n)) for n in NODES}
                assert spread == dict.fromkeys(NODES, 1), spread
                wait_for(lambda: load.snapshot().ok > 200, 30, message="traffic")
                print(HEADER, flush=True)
                for name, fault in faults(chaos, soak, soak_interval, lost_grace):
                    asked = bool(only) and any(word in name for word in only or ())
                    if asked or (not only and name not in OPT_IN):
                        fault()
            return chaos.rows
        finally:
            if watch is not None:
                watch.close()
            cluster.close()  # every process by pid, every container by shoal.prefix


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--soak", type=float, default=120.0, help="soak duration, s")
    parser.add_argument("--soak-interval", type=float, default=3.0, help="s between kills")
    parser.add_argument(
        "--lost-grace", type=float, default=30.0, help="the scheduler's --lost-grace, s"
    )
    parser.add_argument(
        "--faults", nargs="*", default=None, help="run only the faults whose names contain these"
    )
    args = parser.parse_args()
    started = time.monotonic()
    rows = run(args.soak, args.soak_interval, args.lost_grace, args.faults)
    print(f"\n{HEADER}")
    for row in rows:
        print(format_row(row))
    if not args.faults:
        print("| dockerd restart | not run: only with --faults dockerd (it stops the engine) |")
    print(f"\nwhole run: {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
