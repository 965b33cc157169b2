"""The health monitor's I/O shell: bus in, probes out, ``AppHealth`` published.

Inputs (retained): ``APPS`` (probes and route port per revision), ``NODE_REPLICAS``
(endpoints, phase), ``NODE_INFO`` (an offline node's replicas are checked by endpoint),
``NODE_ASSIGN`` (a replica its node is no longer assigned leaves rotation), ``HEALTH``
(what is published now: seeds a takeover), ``PRESENCE`` of the health instances (who
probes which app). Output: ``HEALTH`` (retained) and ``events/replica_*``.

Each app key is reconciled by ``core.runner.Reconciler``: rebuild targets, start or stop
probe tasks, build the ``AppHealth`` and publish it when it differs from what this
instance last published. A probe task only updates its state and marks the key dirty when
``ok`` flips.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable

from core.channels import APPS, HEALTH, NODE_ASSIGN, NODE_INFO, NODE_REPLICAS, PRESENCE
from core.config import ServiceConfig
from core.keys import AppKey, ServiceKey
from core.probes import ProbeRole, ProbeState, step
from core.runner import Reconciler
from core.service import Service
from core.state import AppHealth, AppState, NodeAssignment, NodeInfo, NodeReplicas, Presence
from core.view import View
from services.health.checks import Checker
from services.health.logic import (
    ReplicaIndex,
    StateKey,
    Target,
    app_health,
    foreign_endpoints,
    owner,
    probes_to_run,
    same_health,
    seeded_state,
    targets_for,
    transition_events,
    transitions,
)
from services.health.prom import HealthCollector

#: probes in flight at once per instance; the others wait for a slot (their timeout and
#: interval not yet running). Without it an apply's first probes all start in the same
#: instant: 20,000 connects at once overflow listen backlogs, and SYN retries (1 s, 3 s)
#: time them out; and every later round stays one herd, anchored to the same instant.
MAX_PROBES_IN_FLIGHT = 1024


class HealthService(Service):
    name = "health"

    apps: View[AppKey, AppState]
    seen: View[AppKey, AppHealth]  # retained values, as the bus has them
    peers: View[ServiceKey, Presence]

    def __init__(self, config: ServiceConfig, *, resync: float = 10.0) -> None:
        super().__init__(config)
        self.replicas = ReplicaIndex()
        self.offline_nodes: set[str] = set()  # nodes whose agent is offline (last will)
        #: node -> the replicas it must run (their ids) -> their apps
        self.assigned: dict[str, dict[str, AppKey]] = {}
        self.live: list[str] = [self.instance]  # online health instances, self included
        self.mine: dict[AppKey, AppHealth] = {}  # what this instance last published
        self.targets: dict[tuple[str, float | None], Target] = {}
        self.states: dict[StateKey, ProbeState] = {}
        self.probe_tasks: dict[StateKey, asyncio.Task[None]] = {}
        self.app_probes: dict[AppKey, set[StateKey]] = {}
        self.synced = False
        #: node -> the address its agent advertises (a replica's endpoints must be on it)
        self.addresses: dict[str, str] = {}
        self.checker = Checker(f"shoal-health/{self.instance}")
        self.probe_slots = asyncio.Semaphore(MAX_PROBES_IN_FLIGHT)
        self.runner: Reconciler[AppKey] = Reconciler(
            "health", self.reconcile, keys=self.keys, resync=resync
        )
        self.bus.on_connect(self._after_connect)
        self.prom = HealthCollector(self)
        self.metrics.register(self.prom)

    # -- inputs ------------------------------------------------------------------------

    async def setup(self) -> None:
        self.apps = await self.bus.view(APPS, on_change=self._on_app)
        await self.bus.subscribe(NODE_REPLICAS, self._on_replicas)
        await self.bus.subscribe(NODE_INFO, self._on_node_info)
        await self.bus.subscribe(NODE_ASSIGN, self._on_assign)
        self.seen = await self.bus.view(HEALTH, on_change=self._on_health)
        self.peers = await self.bus.view(PRESENCE, on_change=self._on_peer, service=self.name)

    def _on_app(self, key: AppKey, app: AppState | None) -> None:
        self.runner.mark(key)

    def _on_replicas(self, node: str, report: NodeReplicas | None) -> None:
        for st in report.replicas if report is not None else ():
            foreign = foreign_endpoints(st, self.addresses.get(node))
            if foreign and node in self.addresses:
                self.log.warning(
                    "replica endpoints off its node's address: never probed nor routed",
                    node=node,
                    address=self.addresses[node],
                    replica=st.id,
                    endpoints=foreign[:4],
                )
        for key in self.replicas.update(node, report):
            self.runner.mark(key)

    def _on_node_info(self, node: str, info: NodeInfo | None) -> None:
        address = info.address if info is not None else None
        if address != self.addresses.get(node):
            if address is None:
                self.addresses.pop(node, None)
            else:
                self.addresses[node] = address
            for key in self.replicas.apps_on(node):
                self.runner.mark(key)
        offline = info is None or info.status == "offline"
        if offline == (node in self.offline_nodes):
            return
        if offline:
            self.offline_nodes.add(node)
        else:
            self.offline_nodes.discard(node)
        self.log.info(
            "node offline: its replicas are checked by endpoint" if offline else "node back",
            node=node,
        )
        for key in self.replicas.apps_on(node):
            self.runner.mark(key)

    def _on_assign(self, node: str, assignment: NodeAssignment | None) -> None:
        before = self.assigned.pop(node, None)
        if assignment is not None:
            self.assigned[node] = {r.id: AppKey(r.namespace, r.app) for r in assignment.replicas}
        after = self.assigned.get(node)
        if after == before:
            return
        if before is None or after is None:  # known from now on, or no longer: every app
            touched = self.replicas.apps_on(node) | set((after or {}).values())
        else:  # the apps of the replicas that came or went
            touched = {after.get(r) or before[r] for r in before.keys() ^ after.keys()}
        for key in touched:
            self.runner.mark(key)

    def _on_health(self, key: AppKey, health: AppHealth | None) -> None:
        if health is not None and key not in self.apps:
            self.runner.mark(key)  # a stale value: its owner clears it

    def _on_peer(self, key: ServiceKey, presence: Presence | None) -> None:
        online = {k.instance for k, p in self.peers.items() if p.status == "online"}
        live = sorted(online | {self.instance})
        if live != self.live:
            self.live = live
            self.log.info("health instance seen", peer=key.instance, online=key.instance in online)
            self.runner.mark_all()

    async def _after_connect(self) -> None:
        # Level-triggered: after every (re)connect republish everything this instance owns,
        # once the retained state is in (sync), so nothing is cleared or seeded too early.
        if not await self.bus.settle():
            return  # the connection dropped: the next connect runs this hook again
        self.mine.clear()
        self.synced = True
        self.runner.mark_all()

    # -- reconcile ---------------------------------------------------------------------

    def keys(self) -> Iterable[AppKey]:
        return set(self.apps) | set(self.seen) | set(self.mine) | self.replicas.apps()

    async def reconcile(self, key: AppKey) -> float | None:
        if not self.synced:
            return None
        if owner(key, self.live) != self.instance:
            if key in self.mine:
                self.log.info("app handed over", app=str(key))
            self._sync_probes(key, [])
            self.mine.pop(key, None)
            return None
        app = self.apps.get(key)
        if app is None:
            self._sync_probes(key, [])
            if key in self.seen or key in self.mine:
                await self.bus.clear(HEALTH, key)
                self.mine.pop(key, None)
                self.log.info("health cleared", app=str(key))
            return None
        targets = targets_for(
            app, self.replicas.of(key), self.offline_nodes, self.assigned, self.addresses
        )
        previous = self.mine.get(key) or self.seen.get(key)
        self._sync_probes(key, targets, previous)
        health = app_health(app, targets, self.states, previous, time.time())
        if key in self.mine and same_health(health, self.mine[key]):
            return None
        await self.bus.publish(HEALTH, health)
        self.mine[key] = health
        for event in transition_events(transitions(previous, health)):
            await self.emit(
                event.kind,
                event.message,
                namespace=key.namespace,
                app=key.name,
                replica=event.replica,
                severity=event.severity,
                data=event.data,
            )
        return None

    # -- probe tasks -------------------------------------------------------------------

    def _sync_probes(
        self, key: AppKey, targets: list[Target], previous: AppHealth | None = None
    ) -> None:
        wanted: dict[StateKey, Target] = {}
        for target in targets:
            for role in probes_to_run(target):
                wanted[(target.replica, target.started_at, role)] = target
        current = self.app_probes.get(key, set())
        for skey in current - wanted.keys():
            task = self.probe_tasks.pop(skey, None)
            if task is not None:
                task.cancel()
            self.states.pop(skey, None)
            self.targets.pop((skey[0], skey[1]), None)
        now = time.time()
        for skey, target in wanted.items():
            self.targets[(skey[0], skey[1])] = target
            if skey in self.probe_tasks:
                continue
            role = skey[2]
            self.states[skey] = ProbeState.initial(
                role, now, seeded=seeded_state(previous, target, role)
            )
            self.probe_tasks[skey] = asyncio.create_task(
                self._probe_loop(key, skey), name=f"probe-{skey[0]}-{role}"
            )
        if wanted:
            self.app_probes[key] = set(wanted)
        else:
            self.app_probes.pop(key, None)

    async def _probe_loop(self, key: AppKey, skey: StateKey) -> None:
        replica, started_at, role = skey
        target = self.targets.get((replica, started_at))
        if target is None:
            return
        probe, _ = target.probe(role)
        if probe is None:
            return
        delay = probe.initial_delay
        if started_at is not None:
            delay = max(0.0, started_at + probe.initial_delay - time.time())
        if delay > 0:
            await asyncio.sleep(delay)
        while True:
            target = self.targets.get((replica, started_at))
            if target is None:
                return
            probe, endpoint = target.probe(role)
            if probe is None:
                return
            async with self.probe_slots:
                # the next probe is one interval after this one got its slot, so a burst
                # of first probes spreads out and stays spread
                started = time.monotonic()
                success, reason = await self.checker.check(probe, endpoint)
            self.prom.probed(role, probe.kind, success, time.monotonic() - started)
            old = self.states.get(skey)
            if old is None:  # stopped meanwhile
                return
            new = step(old, probe, success, reason, time.time())
            self.states[skey] = new
            if new.ok != old.ok:
                self._log_flip(target, role, new)
                self.runner.mark(key)
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, probe.interval - elapsed))

    def _log_flip(self, target: Target, role: ProbeRole, state: ProbeState) -> None:
        self.log.info(
            f"{role} changed",
            replica=target.replica,
            ok=state.ok,
            reason=state.reason,
            endpoint=target.endpoint,
        )

    # -- running -----------------------------------------------------------------------

    async def main(self) -> None:
        async with self.checker:
            try:
                await self.runner.run()
            finally:
                tasks = list(self.probe_tasks.values())
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                self.probe_tasks.clear()
