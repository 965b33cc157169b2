"""The health monitor's I/O shell: bus in, probes out, ``AppHealth`` published.

Inputs (retained): ``apps/+/+`` (probes and route port per revision), ``nodes/+/replicas``
(endpoints, phase), ``health/+/+`` (what is published now: seeds a takeover),
``services/health/+`` (live health instances: who probes which app).
Output: ``health/<ns>/<app>`` (retained, kind ``health``) and ``events/replica_*``.

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
from typing import TypeVar

from pydantic import BaseModel

from core.codec import Envelope
from core.config import ServiceConfig
from core.errors import TopicError
from core.probes import ProbeRole, ProbeState, step
from core.runner import Reconciler
from core.service import Service
from core.state import AppHealth, AppState, NodeInfo, NodeReplicas, Presence, ReplicaStatus
from services.health.checks import Checker
from services.health.logic import (
    StateKey,
    Target,
    app_health,
    owner,
    probes_to_run,
    same_health,
    seeded_state,
    targets_for,
    transitions,
)

M = TypeVar("M", bound=BaseModel)


class HealthService(Service):
    name = "health"

    def __init__(self, config: ServiceConfig, *, resync: float = 10.0) -> None:
        super().__init__(config)
        self.apps: dict[str, AppState] = {}
        self.nodes: dict[str, NodeReplicas] = {}
        self.by_app: dict[str, dict[str, ReplicaStatus]] = {}
        self.peers: dict[str, bool] = {}
        self.lost_nodes: set[str] = set()  # nodes whose agent is offline
        self.seen: dict[str, AppHealth] = {}  # retained values, as the bus has them
        self.mine: dict[str, AppHealth] = {}  # what this instance last published
        self.targets: dict[tuple[str, float | None], Target] = {}
        self.states: dict[StateKey, ProbeState] = {}
        self.probe_tasks: dict[StateKey, asyncio.Task[None]] = {}
        self.app_probes: dict[str, set[StateKey]] = {}
        self.synced = False
        self.checker = Checker(f"shoal-health/{self.instance}")
        self.runner: Reconciler[str] = Reconciler(
            "health", self.reconcile, keys=self.keys, resync=resync
        )
        self.bus.on_connect(self._after_connect)

    # -- inputs ------------------------------------------------------------------------

    async def setup(self) -> None:
        t = self.topics
        await self.bus.subscribe(t.all_apps, self._on_app)
        await self.bus.subscribe(t.all_node_replicas, self._on_replicas)
        await self.bus.subscribe(t.all_node_info, self._on_node_info)
        await self.bus.subscribe(t.all_health, self._on_health)
        await self.bus.subscribe(t.all_services(self.name), self._on_peer)

    def _on_app(self, topic: str, env: Envelope | None) -> None:
        key = self.track_app(topic, env, self.apps)
        if key is not None:
            self.runner.mark(key)

    def _on_replicas(self, topic: str, env: Envelope | None) -> None:
        try:
            node = self.topics.node_of(topic)
        except TopicError:
            return
        new: NodeReplicas | None = None
        if env is not None:
            new = self.read(topic, env, NodeReplicas)
            if new is None:
                return
        old = self.nodes.pop(node, None)
        if new is not None:
            self.nodes[node] = new
        touched: set[str] = set()
        for st in old.replicas if old is not None else ():
            key = f"{st.namespace}/{st.app}"
            touched.add(key)
            bucket = self.by_app.get(key)
            if bucket is not None and st.id in bucket and bucket[st.id].node == node:
                del bucket[st.id]
        for st in new.replicas if new is not None else ():
            key = f"{st.namespace}/{st.app}"
            touched.add(key)
            self.by_app.setdefault(key, {})[st.id] = st
        for key in touched:
            if not self.by_app.get(key):
                self.by_app.pop(key, None)
            self.runner.mark(key)

    def _on_node_info(self, topic: str, env: Envelope | None) -> None:
        try:
            node = self.topics.node_of(topic)
        except TopicError:
            return
        info = self.read(topic, env, NodeInfo) if env is not None else None
        lost = info is None or info.status == "offline"
        if lost == (node in self.lost_nodes):
            return
        if lost:
            self.lost_nodes.add(node)
        else:
            self.lost_nodes.discard(node)
        self.log.info(
            "node offline: its replicas leave rotation" if lost else "node back", node=node
        )
        report = self.nodes.get(node)
        for st in report.replicas if report is not None else ():
            self.runner.mark(f"{st.namespace}/{st.app}")

    def _on_health(self, topic: str, env: Envelope | None) -> None:
        try:
            ns, name = self.topics.app_of(topic)
        except TopicError:
            return
        key = f"{ns}/{name}"
        if env is None:
            self.seen.pop(key, None)
            return
        health = self.read(topic, env, AppHealth)
        if health is not None:
            self.seen[key] = health
            if key not in self.apps:
                self.runner.mark(key)  # a stale value: its owner clears it

    def _on_peer(self, topic: str, env: Envelope | None) -> None:
        instance = topic.rsplit("/", 1)[-1]
        online = False
        if env is not None:
            presence = self.read(topic, env, Presence)
            online = presence is not None and presence.status == "online"
        if self.peers.get(instance) != online:
            self.peers[instance] = online
            self.log.info("health instance seen", peer=instance, online=online)
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

    def live_instances(self) -> list[str]:
        live = {inst for inst, online in self.peers.items() if online}
        live.add(self.instance)
        return sorted(live)

    def keys(self) -> Iterable[str]:
        return set(self.apps) | set(self.seen) | set(self.mine) | set(self.by_app)

    async def reconcile(self, key: str) -> float | None:
        if not self.synced:
            return None
        ns, _, name = key.partition("/")
        if owner(key, self.live_instances()) != self.instance:
            if key in self.mine:
                self.log.info("app handed over", app=key)
            self._sync_probes(key, [])
            self.mine.pop(key, None)
            return None
        app = self.apps.get(key)
        if app is None:
            self._sync_probes(key, [])
            if key in self.seen or key in self.mine:
                await self.bus.clear(self.topics.health(ns, name))
                self.seen.pop(key, None)
                self.mine.pop(key, None)
                self.log.info("health cleared", app=key)
            return None
        targets = targets_for(app, self.by_app.get(key, {}).values(), self.lost_nodes)
        previous = self.mine.get(key) or self.seen.get(key)
        self._sync_probes(key, targets, previous)
        health = app_health(app, targets, self.states, previous, time.time())
        if key in self.mine and same_health(health, self.mine[key]):
            return None
        await self.bus.publish(self.topics.health(ns, name), "health", health, retain=True)
        self.mine[key] = health
        for tr in transitions(previous, health):
            await self.emit(
                f"replica_{tr.kind}",
                f"replica {tr.replica} {tr.kind.replace('_', ' ')}"
                + (f": {tr.reason}" if tr.reason else ""),
                namespace=ns,
                app=name,
                replica=tr.replica,
                severity="info" if tr.kind in ("ready", "terminating", "gone") else "warning",
            )
        return None

    # -- probe tasks -------------------------------------------------------------------

    def _sync_probes(
        self, key: str, targets: list[Target], previous: AppHealth | None = None
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

    async def _probe_loop(self, key: str, skey: StateKey) -> None:
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
            started = time.monotonic()
            success, reason = await self.checker.check(probe, endpoint)
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
