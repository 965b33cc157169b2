"""The scheduler service: the bus shell around ``cluster.Cluster``.

Handlers decode a message, feed it to the cluster and mark keys dirty; three reconcile
runners do the work: ``apps`` (place one app), ``assign`` (publish one node's whole set,
debounced so a burst becomes one message per node) and ``status`` (publish one app's
placement status). A liveness tick declares silent nodes lost. Only the elected leader
holds a ``Cluster`` and writes; a standby keeps the retained caches warm and rebuilds
from them when it takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel

from core.codec import Envelope
from core.commands import NodeCommand, Reply
from core.config import ServiceConfig
from core.election import Candidate, candidates, choose_leader
from core.errors import CodecError, ShoalError, TopicError
from core.runner import Reconciler
from core.service import Service
from core.state import (
    AppHealth,
    AppState,
    NodeAssignment,
    NodeCordon,
    NodeInfo,
    Presence,
    SchedulerStatus,
)
from services.scheduler.cluster import Cluster, Outcome

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class SchedulerOptions:
    #: a node not heard from for this long is lost and its replicas placed elsewhere
    node_grace: float = 6.0
    #: node assignments are published this long after their first change (batching)
    debounce: float = 0.05
    #: seed of the walk order and replica ids (replayable placements)
    seed: int = 0
    #: feasible nodes scored per placement (None: max(8, log2 n))
    candidates: int | None = None
    #: replicas of apps never seen since taking over are kept this long (a broker that
    #: lost its retained apps must not make the scheduler delete everything)
    orphan_grace: float = 5.0
    #: how often node liveness is checked
    tick: float = 0.5
    #: every app is reconciled again this often (repairs anything missed)
    resync: float = 30.0


class SchedulerService(Service):
    name = "scheduler"

    def __init__(self, config: ServiceConfig, options: SchedulerOptions | None = None) -> None:
        self._leading = False
        self._lead_epoch = 0
        super().__init__(config)
        self.options = options or SchedulerOptions()
        self.cluster: Cluster | None = None
        self._synced = False
        self._seen: dict[str, float] = {}
        self._elect_wake = asyncio.Event()
        self._status_sent: dict[str, SchedulerStatus] = {}
        self._unplaceable_said: dict[str, str] = {}
        self._drained_said: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._cordons_to_write: list[NodeCordon] = []
        self.apps: Reconciler[str] = Reconciler(
            "scheduler-apps",
            self._reconcile_app,
            keys=lambda: list(self.cluster.apps) if self.cluster is not None else [],
            resync=self.options.resync,
        )
        self.assign: Reconciler[str] = Reconciler("scheduler-assign", self._publish_node)
        self.status: Reconciler[str] = Reconciler("scheduler-status", self._publish_status)

    # -- wiring -------------------------------------------------------------------------

    async def setup(self) -> None:
        t = self.topics
        await self.bus.subscribe(t.all_node_cordon, self._ignore, cache=True)
        await self.bus.subscribe(t.all_node_assign, self._on_assign, cache=True)
        await self.bus.subscribe(t.all_node_info, self._on_node, cache=True)
        await self.bus.subscribe(t.all_apps, self._on_app, cache=True)
        await self.bus.subscribe(t.all_health, self._on_health, cache=True)
        await self.bus.subscribe(t.all_services(self.name), self._on_presence, cache=True)
        await self.bus.subscribe(t.cmd("node"), self._on_command, allow_json=True)
        self.bus.on_connect(self._on_reconnect)

    async def main(self) -> None:
        while True:
            await self.bus.wait_connected(None)
            if await self.bus.settle(timeout=30):
                break
        self._synced = True
        self.log.info(
            "retained state loaded",
            nodes=len(self.bus.cached(self.topics.all_node_info)),
            apps=len(self.bus.cached(self.topics.all_apps)),
            assignments=len(self.bus.cached(self.topics.all_node_assign)),
        )
        self._elect_wake.set()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.apps.run(), name="scheduler-apps")
            tasks.create_task(self.assign.run(), name="scheduler-assign")
            tasks.create_task(self.status.run(), name="scheduler-status")
            tasks.create_task(self._election_loop(), name="scheduler-election")
            tasks.create_task(self._liveness_loop(), name="scheduler-liveness")

    def is_leader(self) -> bool:
        # A claim holds for the connection it was made on: after a reconnect, the broker
        # has published our last will meanwhile and the claim must be won again.
        return self._leading and self._lead_epoch == self.bus.connects

    # -- leadership ---------------------------------------------------------------------

    async def _election_loop(self) -> None:
        while True:
            await self._elect_wake.wait()
            self._elect_wake.clear()
            if not self.bus.connected:
                continue  # the reconnect hook wakes us again
            pool = [Candidate(self.started, self.instance, self._leading)]
            others = [
                p
                for p in self._cached_models(self.topics.all_services(self.name), Presence)
                if p.instance != self.instance
            ]
            pool.extend(candidates(others, self.name))
            leader = choose_leader(pool)
            if leader == self.instance and not self._leading:
                try:
                    self._take_over()
                except Exception:
                    self.log.exception("taking over failed; retrying")
                    self._step_down()
                    await asyncio.sleep(1)
                    self._elect_wake.set()
                    continue
                while self._cordons_to_write:
                    cordon = self._cordons_to_write.pop()
                    with contextlib.suppress(ShoalError):
                        topic = self.topics.node_cordon(cordon.node)
                        await self.bus.publish(topic, "cordon", cordon, retain=True)
            elif leader != self.instance and self._leading:
                self.log.warning("stepping down", leader=leader)
                self._step_down()
            else:
                continue
            with contextlib.suppress(ShoalError):
                await self.announce()

    def _step_down(self) -> None:
        self._leading = False
        self.cluster = None

    def _take_over(self) -> None:
        """Become the writer: rebuild placements from the retained assignments."""
        now = time.monotonic()
        o = self.options
        cluster = Cluster(
            seed=o.seed, candidates=o.candidates, orphan_grace=o.orphan_grace, now=now
        )
        t = self.topics
        for cordon in self._cached_models(t.all_node_cordon, NodeCordon):
            cluster.set_cordon(cordon.node, True, cordon.drain)
        for assignment in self._cached_models(t.all_node_assign, NodeAssignment):
            cluster.load(assignment, seen=now)
        for info in self._cached_models(t.all_node_info, NodeInfo):
            cluster.upsert_node(info, seen=self._seen.get(info.node, now))
        for state in self._cached_models(t.all_apps, AppState):
            cluster.set_app(state.key, state)
        for health in self._cached_models(t.all_health, AppHealth):
            cluster.set_ready(f"{health.namespace}/{health.name}", {r.id for r in health.ready})
        self.cluster = cluster
        self._leading = True
        self._lead_epoch = self.bus.connects
        self._status_sent = {
            f"{s.namespace}/{s.name}": s
            for s in self._cached_models(t.all_scheduler_status, SchedulerStatus)
        }
        self.log.info(
            "leading",
            nodes=len(cluster.nodes),
            apps=len(cluster.apps),
            replicas=len(cluster.replicas),
        )
        self._flush()
        if self.bus.connects > 1:
            # A broker that restarted may have lost every retained message: write ours.
            for node_id in cluster.nodes:
                self.assign.mark_later(node_id, self.options.debounce)
            for cordon in self._cached_models(t.all_node_cordon, NodeCordon):
                self._cordons_to_write.append(cordon)
        for key in list(cluster.apps):
            self.apps.mark(key)
        for key in self._status_sent:
            self.status.mark(key)

    async def _on_reconnect(self) -> None:
        """After a lost connection: the broker has published our last will and another
        instance may lead by now. Give up the claim, reload the retained state and take
        part in the election again (a lone scheduler simply takes over once more)."""
        if self.bus.connects <= 1:
            return
        # We could not hear the nodes, and they may still be reconnecting themselves:
        # a double grace from now before any of them counts as lost.
        later = time.monotonic() + self.options.node_grace
        for node_id, seen in self._seen.items():
            self._seen[node_id] = max(seen, later)
        if self._leading:
            self.log.warning("connection was lost: leadership given up until re-elected")
            self._step_down()
            with contextlib.suppress(ShoalError):
                await self.announce()
        with contextlib.suppress(ShoalError):
            await self.bus.sync(timeout=30)
        self._elect_wake.set()

    # -- inputs -------------------------------------------------------------------------

    def _ignore(self, topic: str, env: Envelope | None) -> None:
        """Cached for taking over; the leader itself is the only writer."""

    def _on_presence(self, topic: str, env: Envelope | None) -> None:
        self._elect_wake.set()

    def _on_app(self, topic: str, env: Envelope | None) -> None:
        namespace, name = self.topics.app_of(topic)
        key = f"{namespace}/{name}"
        state = self.read(topic, env, AppState) if env is not None else None
        if env is not None and state is None:
            return
        if state is not None and (state.namespace, state.name) != (namespace, name):
            self.log.warning("app state on the wrong topic dropped", topic=topic, app=state.key)
            return
        if self.cluster is not None:
            self.cluster.set_app(key, state)
            self.apps.mark(key)

    def _on_node(self, topic: str, env: Envelope | None) -> None:
        try:
            node_id = self.topics.node_of(topic)
        except TopicError:
            return
        cluster = self.cluster
        if env is None:
            self._seen.pop(node_id, None)
            if cluster is not None:
                self._mark_apps(cluster.remove_node(node_id))
                self._flush()
            return
        info = self.read(topic, env, NodeInfo)
        if info is None:
            return
        if info.node != node_id:
            self.log.warning("node info on the wrong topic dropped", topic=topic, node=info.node)
            return
        now = time.monotonic()
        if info.status != "offline":
            self._seen[node_id] = now
        if cluster is None:
            return
        before = cluster.nodes.get(node_id)
        was_lost = before.lost if before is not None else False
        self._mark_apps(cluster.upsert_node(info, seen=now))
        node = cluster.nodes[node_id]
        if node.lost and not was_lost:
            self._node_lost(node_id, "offline")
        elif was_lost and not node.lost:
            self.log.info("node back; its stale replicas will be stopped", node=node_id)
        self._flush()

    def _on_assign(self, topic: str, env: Envelope | None) -> None:
        cluster = self.cluster
        if cluster is None or (env is not None and env.src == self.bus.src):
            return
        try:
            node_id = self.topics.node_of(topic)
        except TopicError:
            return
        # Another writer (a deposed leader, a stray client): our view wins.
        if node_id in cluster.nodes:
            self.log.warning("assignment written by someone else; rewriting", node=node_id)
            self.assign.mark_later(node_id, self.options.debounce)

    def _on_health(self, topic: str, env: Envelope | None) -> None:
        if self.cluster is None:
            return
        namespace, name = self.topics.app_of(topic)
        key = f"{namespace}/{name}"
        if env is None:
            ready = None
        else:
            health = self.read(topic, env, AppHealth)
            if health is None:
                return
            ready = {r.id for r in health.ready}
        if self.cluster.set_ready(key, ready):
            self.apps.mark(key)

    async def _on_command(self, topic: str, env: Envelope | None) -> None:
        if env is None or self.cluster is None:
            return  # only the leader answers
        try:
            command = env.open(NodeCommand)
        except CodecError as err:
            await self.bus.reply(env, "reply", Reply(ok=False, errors=[str(err)]))
            return
        reply = await self._node_command(command)
        await self.bus.reply(env, "reply", reply)

    async def _node_command(self, command: NodeCommand) -> Reply:
        cluster = self.cluster
        assert cluster is not None
        node_id = command.node
        if node_id not in cluster.nodes:
            known = ", ".join(sorted(cluster.nodes)[:20]) or "none"
            return Reply(ok=False, errors=[f"unknown node {node_id!r} (known: {known})"])
        cordoned = command.action != "uncordon"
        drain = command.action == "drain"
        try:
            if cordoned:
                await self._write_cordon(node_id, drain, command.reason)
            else:
                await self.bus.clear(self.topics.node_cordon(node_id))
        except ShoalError as err:
            return Reply(ok=False, errors=[f"could not record the cordon: {err}"])
        self._drained_said.discard(node_id)
        self._mark_apps(cluster.set_cordon(node_id, cordoned, drain))
        self._flush()
        if drain:
            self.assign.mark_later(node_id, self.options.debounce)
        done = {"cordon": "cordoned", "uncordon": "uncordoned", "drain": "draining"}
        await self.emit(
            f"node_{done[command.action]}",
            f"node {node_id} {done[command.action]}"
            + (f": {command.reason}" if command.reason else ""),
            node=node_id,
        )
        self.log.info("node " + done[command.action], node=node_id)
        return Reply(ok=True)

    async def _write_cordon(self, node_id: str, drain: bool, reason: str) -> None:
        cordon = NodeCordon(node=node_id, drain=drain, reason=reason, since=time.time())
        await self.bus.publish(self.topics.node_cordon(node_id), "cordon", cordon, retain=True)

    # -- work ---------------------------------------------------------------------------

    async def _reconcile_app(self, key: str) -> float | None:
        cluster = self.cluster
        if cluster is None:
            return None
        if cluster.waiting_for_ready(key):
            # A drain waits on readiness: read the latest health even if it arrived
            # before the app did (handlers drop health of apps not known yet).
            cluster.set_ready(key, self._cached_ready(key))
        out = cluster.reconcile(key, time.monotonic())
        if out.freed:
            self._mark_apps(k for k in cluster.pending if k != key)
        self._flush()
        self.status.mark(key)
        await self._report(out)
        return out.requeue

    async def _report(self, out: Outcome) -> None:
        if out.placed or out.removed:
            self.log.info(
                "app placed",
                app=out.key,
                placed=len(out.placed),
                removed=len(out.removed),
                unplaceable=sum(p.count for p in out.unplaceable),
            )
        message = "; ".join(p.message for p in out.unplaceable)
        said = self._unplaceable_said.get(out.key, "")
        if message and message != said:
            namespace, _, name = out.key.partition("/")
            reasons: dict[str, object] = {}
            for problem in out.unplaceable:
                reasons.update(problem.reasons)
            await self.emit(
                "unplaceable",
                f"{out.key}: {message}",
                namespace=namespace,
                app=name,
                severity="warning",
                data={"reasons": reasons, "count": sum(p.count for p in out.unplaceable)},
            )
            self.log.warning("replicas unplaceable", app=out.key, message=message)
        if message:
            self._unplaceable_said[out.key] = message
        else:
            self._unplaceable_said.pop(out.key, None)

    async def _publish_node(self, node_id: str) -> None:
        cluster = self.cluster
        if cluster is None:
            return
        node = cluster.nodes.get(node_id)
        message = cluster.assignment(node_id)
        await self.bus.publish(self.topics.node_assign(node_id), "assign", message, retain=True)
        if node is not None and node.draining and not node.replicas:
            if node_id not in self._drained_said:
                self._drained_said.add(node_id)
                await self.emit("node_drained", f"node {node_id} drained", node=node_id)
        elif node_id in self._drained_said and node is not None and node.replicas:
            self._drained_said.discard(node_id)

    async def _publish_status(self, key: str) -> None:
        cluster = self.cluster
        if cluster is None:
            return
        namespace, _, name = key.partition("/")
        topic = self.topics.scheduler_status(namespace, name)
        status = cluster.status(key, ts=time.time())
        sent = self._status_sent.get(key)
        if status is None:
            if sent is not None:
                await self.bus.clear(topic)
                del self._status_sent[key]
            return
        if sent is not None and sent.model_copy(update={"ts": 0.0}) == status.model_copy(
            update={"ts": 0.0}
        ):
            return
        await self.bus.publish(topic, "scheduler_status", status, retain=True)
        self._status_sent[key] = status

    async def _liveness_loop(self) -> None:
        silent = False
        while True:
            await asyncio.sleep(self.options.tick)
            cluster = self.cluster
            if cluster is None:
                continue
            if not self.bus.connected:
                # Silence from every node is our own disconnection, not theirs.
                cluster.refresh(time.monotonic())
                continue
            lost, affected = cluster.expire(time.monotonic(), self.options.node_grace)
            if cluster.all_silent and not silent:
                self.log.warning("no node heard from: assuming a broker problem, moving nothing")
            silent = cluster.all_silent
            for node_id in lost:
                self._node_lost(node_id, f"no heartbeat for {self.options.node_grace:g}s")
            self._mark_apps(affected)
            self._flush()

    def _node_lost(self, node_id: str, why: str) -> None:
        self.log.warning("node lost; replacing its replicas", node=node_id, reason=why)
        task = asyncio.get_running_loop().create_task(
            self.emit("node_lost", f"node {node_id} lost: {why}", node=node_id, severity="warning")
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- helpers ------------------------------------------------------------------------

    def _flush(self) -> None:
        if self.cluster is None:
            return
        for node_id in self.cluster.take_dirty():
            self.assign.mark_later(node_id, self.options.debounce)

    def _mark_apps(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.apps.mark(key)

    def _cached_ready(self, key: str) -> set[str] | None:
        namespace, _, name = key.partition("/")
        env = self.bus.cache.get(self.topics.health(namespace, name))
        health = self.read("health", env, AppHealth) if env is not None else None
        return {r.id for r in health.ready} if health is not None else None

    def _cached_models(self, pattern: str, model: type[M]) -> list[M]:
        out = []
        for topic, env in sorted(self.bus.cached(pattern).items()):
            value = self.read(topic, env, model)
            if value is not None:
                out.append(value)
        return out
