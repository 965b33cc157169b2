"""The agent's I/O shell: the bus on one side, the Docker engine on the other.

Inputs: ``nodes/<node>/assign`` (retained NodeAssignment), ``logs/request``.
Outputs: ``nodes/<node>/info`` (retained NodeInfo; the last will says offline),
``nodes/<node>/replicas`` (retained NodeReplicas, one message per burst of changes),
``metrics/nodes/<node>`` (NodeMetrics), ``logs/stream/<id>`` (LogChunk), ``events/...``.

All decisions are in ``plan.py`` (and ``containers.py``, ``stats.py``, ``registry.py``);
this module wires them to aiodocker (through ``engine.Engine``) and to the Bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from core import codec
from core.backoff import Backoff
from core.bus import LastWill
from core.codec import Envelope
from core.config import ServiceConfig
from core.errors import BusError, CodecError, EngineUnavailable, RuntimeFailure, TopicError
from core.probes import ProbeRole, ProbeState, step
from core.runner import Reconciler
from core.service import Service
from core.spec import AppSpec, Resources
from core.state import (
    AppHealth,
    AssignedReplica,
    LogChunk,
    LogsRequest,
    NodeAssignment,
    NodeInfo,
    NodeMetrics,
    NodeReplicas,
    NodeStatus,
    ReplicaUsage,
)
from services.agent.containers import (
    Container,
    container_name,
    create_config,
    owner_filters,
    parse_container,
)
from services.agent.engine import Engine, EngineError, ExecTimeout
from services.agent.plan import (
    Removal,
    ReplicaRecord,
    RestartPolicy,
    Snapshot,
    node_replicas,
    on_exit,
    on_liveness_restart,
    plan,
    remembered,
    retry_delay,
)
from services.agent.probes import (
    ExecTarget,
    Incarnation,
    LivenessRestart,
    NotLive,
    exec_result,
    exec_targets,
    exec_verdict,
    liveness_failed,
    liveness_restarts,
    next_probe_at,
    not_live,
    prune_done,
    seeded_readiness,
)
from services.agent.registry import Credential, credential_for, pull_reference
from services.agent.stats import Sample, cpu_cores, parse_sample

NODE_KEY = "node"


@dataclass(frozen=True, slots=True)
class AgentOptions:
    node_id: str
    address: str
    labels: dict[str, str] = field(default_factory=dict)
    cpus: float | None = None
    memory: int | None = None
    docker: str = "unix:///var/run/docker.sock"
    heartbeat: float = 2.0
    resync: float = 10.0
    stats_interval: float = 5.0
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    registry_auth: dict[str, Credential] = field(default_factory=dict)


class PullFailed(RuntimeFailure):
    """The registry refused or failed a pull; the message is its reason."""


def host_capacity() -> tuple[float, int]:
    """CPUs and memory of this machine, used until the engine answers."""
    memory = 0
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
                break
    return float(os.cpu_count() or 1), memory


class AgentService(Service):
    name = "agent"

    def __init__(self, config: ServiceConfig, options: AgentOptions) -> None:
        self.options = options
        self.node = options.node_id
        super().__init__(config)
        self.engine = Engine(options.docker)
        self.filters = owner_filters(config.prefix, self.node)
        self.assignment: NodeAssignment | None = None
        self.containers: dict[str, Container] = {}
        self.records: dict[str, ReplicaRecord] = {}
        self.actions: dict[str, asyncio.Task[None]] = {}
        self.engine_ready = False
        self.engine_reason = "connecting to the Docker engine"
        self.engine_version = ""
        cpus, memory = host_capacity()
        self.capacity = Resources(cpu=options.cpus or cpus, memory=options.memory or memory)
        self.reconciler: Reconciler[str] = Reconciler(
            "agent", self._reconcile, keys=lambda: [NODE_KEY], resync=options.resync
        )
        self._synced = asyncio.Event()
        self._listed = False
        self._touched: dict[str, float] = {}
        self._report_wake = asyncio.Event()
        self._last_report: dict[str, Any] | None = None
        self._pulls: dict[str, asyncio.Task[None]] = {}
        self._stats_prev: dict[str, Sample] = {}
        self._log_leases: dict[str, float] = {}
        self._log_tasks: dict[str, asyncio.Task[None]] = {}
        self._events: asyncio.Queue[tuple[str, str, dict[str, Any]]] = asyncio.Queue(1000)
        # Probes (core/README.md "Probes"): the health monitor's verdicts per app, the
        # exec probes running per (replica, role), exec liveness failures not acted on yet,
        # and the container starts already restarted for a liveness verdict.
        self.health: dict[tuple[str, str], AppHealth] = {}
        self._probes: dict[tuple[str, ProbeRole], tuple[ExecTarget, asyncio.Task[None]]] = {}
        self._exec_not_live: dict[str, NotLive] = {}
        self._liveness_done: set[Incarnation] = set()
        self._previous_report: NodeReplicas | None = None  # retained, from before a restart
        self.bus.on_connect(self._on_bus_connect)

    # -- identity ------------------------------------------------------------------------

    def node_info(self, status: NodeStatus | None = None) -> NodeInfo:
        if status is None:
            status = "ready" if self.engine_ready else "not_ready"
        return NodeInfo(
            node=self.node,
            address=self.options.address,
            labels=self.options.labels,
            capacity=self.capacity,
            status=status,
            reason="" if status == "ready" else self.engine_reason,
            version=self.engine_version,
            heartbeat=time.time(),
            heartbeat_interval=self.options.heartbeat,
        )

    def last_will(self) -> LastWill:
        """The broker announces this node offline if the agent dies without a goodbye."""
        offline = NodeInfo(
            node=self.node,
            address=self.options.address,
            labels=self.options.labels,
            capacity=Resources(
                cpu=self.options.cpus or host_capacity()[0],
                memory=self.options.memory or host_capacity()[1] or 2**30,
            ),
            status="offline",
            reason="agent connection lost",
            heartbeat_interval=self.options.heartbeat,
        )
        return LastWill(
            self.topics.node_info(self.node),
            codec.encode(codec.make("node", offline, src=f"{self.name}/{self.instance}")),
        )

    async def _publish_info(self, status: NodeStatus | None = None) -> None:
        try:
            await self.bus.publish(
                self.topics.node_info(self.node),
                "node",
                self.node_info(status),
                retain=True,
                timeout=2,
            )
        except BusError as err:
            self.log.debug("node info not published", error=str(err))

    async def _on_bus_connect(self) -> None:
        await self._publish_info()
        self._last_report = None
        self._report_wake.set()

    # -- lifecycle -----------------------------------------------------------------------

    async def setup(self) -> None:
        await self.bus.subscribe(self.topics.node_assign(self.node), self._on_assign)
        await self.bus.subscribe(self.topics.logs_request, self._on_logs_request, qos=0)
        await self.bus.subscribe(self.topics.all_health, self._on_health)
        await self.bus.subscribe(self.topics.node_replicas(self.node), self._on_own_report)

    async def main(self) -> None:
        self.log.info("agent starting", node=self.node, address=self.options.address)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._engine_loop(), name="agent-engine")
                tg.create_task(self._sync_then_reconcile(), name="agent-reconcile")
                tg.create_task(self._heartbeat_loop(), name="agent-heartbeat")
                tg.create_task(self._report_loop(), name="agent-report")
                tg.create_task(self._resync_loop(), name="agent-resync")
                tg.create_task(self._stats_loop(), name="agent-stats")
                tg.create_task(self._event_loop(), name="agent-events")
        finally:
            probes = [task for _, task in self._probes.values()]
            tasks = [*self.actions.values(), *self._log_tasks.values(), *self._pulls.values()]
            for task in [*tasks, *probes]:
                task.cancel()
            await asyncio.gather(*tasks, *probes, return_exceptions=True)
            await self.engine.close()

    async def on_shutdown(self) -> None:
        await self._publish_info("offline")

    async def _sync_then_reconcile(self) -> None:
        """Reconcile only once the retained assignment (if any) has been delivered."""
        while True:
            await self.bus.wait_connected(None)
            if await self.bus.settle():
                break
        for rid, record in remembered(self._previous_report, self.node, time.time()).items():
            self.records.setdefault(rid, record)
        self._synced.set()
        self.reconciler.mark(NODE_KEY)
        await self.reconciler.run()

    # -- inputs from the bus ------------------------------------------------------------

    def _on_assign(self, topic: str, env: Envelope | None) -> None:
        if env is None:
            assignment = NodeAssignment(node=self.node)  # deleted: nothing to run
        else:
            received = self.read(topic, env, NodeAssignment)
            if received is None:
                return
            if received.node != self.node:
                self.log.warning("assignment for another node dropped", node=received.node)
                return
            missing = {r.spec_key for r in received.replicas} - set(received.specs)
            if missing:
                self.log.warning("assignment without specs dropped", missing=sorted(missing))
                return
            assignment = received
        self.assignment = assignment
        self.log.debug(
            "assignment", replicas=len(assignment.replicas), generation=assignment.generation
        )
        self.reconciler.mark(NODE_KEY)
        self._report_wake.set()

    def _on_own_report(self, topic: str, env: Envelope | None) -> None:
        """The retained report of this node from before a restart: exec readiness verdicts
        of container starts still running continue from it (no flap to "no verdict")."""
        if self._synced.is_set() or env is None:
            return  # after the start-up sync these are our own reports coming back
        report = self.read(topic, env, NodeReplicas)
        if report is None:
            return
        if report.node == self.node:
            self._previous_report = report

    def _on_health(self, topic: str, env: Envelope | None) -> None:
        """Keep the health monitor's verdicts; liveness restarts are decided in reconcile."""
        try:
            key = self.topics.app_of(topic)
        except TopicError:
            self.log.warning("health message on an unexpected topic dropped", topic=topic)
            return
        if env is None:
            self.health.pop(key, None)
            return
        health = self.read(topic, env, AppHealth)
        if health is None:
            return
        mine = [r for r in health.replicas if r.node == self.node]
        if not mine:
            self.health.pop(key, None)
            return
        self.health[key] = health.model_copy(update={"replicas": mine})
        if any(not r.live for r in mine):
            self.reconciler.mark(NODE_KEY)

    # -- the engine: connection, list, events -------------------------------------------

    def _apply_info(self, info: dict[str, Any]) -> None:
        cpus = self.options.cpus or float(info.get("NCPU") or self.capacity.cpu)
        memory = self.options.memory or int(info.get("MemTotal") or self.capacity.memory)
        self.capacity = Resources(cpu=cpus, memory=memory)
        self.engine_version = f"docker {info.get('ServerVersion', '?')}"

    async def _engine_loop(self) -> None:
        backoff = Backoff(initial=0.2, cap=5.0)
        while True:
            try:
                info = await self.engine.info()
                self._apply_info(info)
                since = time.time()
                await self._resync_containers()
                self._listed = True
                was_ready = self.engine_ready
                self.engine_ready, self.engine_reason = True, ""
                backoff.reset()
                await self._publish_info()
                self.reconciler.mark(NODE_KEY)
                self._report_wake.set()
                if not was_ready:
                    self.log.info("docker engine ready", version=self.engine_version)
                    self._event("node_ready", f"node {self.node} ready ({self.engine_version})")
                async for event in self.engine.events(self.filters, since - 1):
                    await self._on_docker_event(event)
                raise EngineUnavailable("the Docker event stream ended")
            except RuntimeFailure as err:
                delay = backoff.next()
                if self.engine_ready or backoff.attempts == 1:
                    self.log.warning("docker engine not ready", error=str(err), retry_in=delay)
                    self._event("node_not_ready", f"node {self.node}: {err}", severity="warning")
                self.engine_ready, self.engine_reason = False, f"docker engine: {err}"
                await self._publish_info()
                await self.engine.reset()
                await asyncio.sleep(delay)

    async def _resync_containers(self) -> None:
        """Rebuild the container index from a full list (after connect, periodically)."""
        started = time.monotonic()
        ids = await self.engine.list_ids(self.filters)
        sem = asyncio.Semaphore(20)

        async def one(cid: str) -> Container | None:
            async with sem:
                data = await self.engine.inspect(cid)
            return parse_container(data) if data is not None else None

        found = await asyncio.gather(*(one(cid) for cid in ids))
        fresh = {c.id: c for c in found if c is not None}
        for cid, c in list(self.containers.items()):
            # Keep what an action or event refreshed while the list was running.
            if cid not in fresh and self._touched.get(cid, 0.0) > started:
                fresh[cid] = c
        self.containers = fresh
        self._touched = {k: v for k, v in self._touched.items() if k in fresh}
        self.reconciler.mark(NODE_KEY)
        self._report_wake.set()

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.resync)
            if not self.engine_ready:
                continue
            try:
                await self._resync_containers()
            except RuntimeFailure as err:
                self.log.warning("resync failed", error=str(err))

    async def _refresh(self, cid: str) -> Container | None:
        data = await self.engine.inspect(cid)
        self._touched[cid] = time.monotonic()
        container = parse_container(data) if data is not None else None
        if container is None:
            self.containers.pop(cid, None)
        else:
            self.containers[cid] = container
        self.reconciler.mark(NODE_KEY)
        self._report_wake.set()
        return container

    async def _on_docker_event(self, event: dict[str, Any]) -> None:
        action = str(event.get("Action") or event.get("status") or "")
        cid = str(event.get("id") or (event.get("Actor") or {}).get("ID") or "")
        if not cid or action.startswith(("exec_", "health_status")):
            return
        if action == "destroy":
            self.containers.pop(cid, None)
            self._touched[cid] = time.monotonic()
            self.reconciler.mark(NODE_KEY)
            self._report_wake.set()
            return
        if action in ("create", "start", "die", "oom", "stop", "pause", "unpause", "rename"):
            try:
                await self._refresh(cid)
            except EngineUnavailable:
                raise
            except RuntimeFailure as err:  # one bad inspect is not an engine outage
                self.log.warning("inspect after event failed", container=cid[:12], error=str(err))
                self.reconciler.mark(NODE_KEY)

    # -- reconcile -----------------------------------------------------------------------

    async def _reconcile(self, key: str) -> float | None:
        if not self._synced.is_set():
            return None
        if not self.engine_ready or not self._listed:
            return None  # the engine loop marks the node again once the engine is back
        now = time.time()
        self._account_exits(now)
        self._forget_gone(now)
        decided = plan(
            self.assignment, self.containers.values(), self.records, set(self.actions), now
        )
        steps: dict[str, list[Callable[[], Awaitable[None]]]] = {}
        for removal in decided.remove:
            steps.setdefault(removal.container.replica, []).append(
                lambda r=removal: self._remove(r)  # type: ignore[misc]
            )
        for replica in decided.create:
            spec = self.assignment.spec_for(replica)  # type: ignore[union-attr]
            steps.setdefault(replica.id, []).append(
                lambda r=replica, s=spec: self._create(r, s)  # type: ignore[misc]
            )
        for replica, container in decided.start:
            steps.setdefault(replica.id, []).append(
                lambda r=replica, c=container: self._start(r, c)  # type: ignore[misc]
            )
        # Liveness: restart the current container start of a replica found not live.
        containers = list(self.containers.values())
        self._liveness_done = prune_done(self._liveness_done, containers)
        starts = {(c.replica, c.started_at) for c in containers}
        self._exec_not_live = {
            rid: v for rid, v in self._exec_not_live.items() if v.incarnation in starts
        }
        verdicts = [*not_live(self.health.values(), self.node), *self._exec_not_live.values()]
        # Held: after a failed action (retry_at), or a liveness restart's back-off.
        held = {
            rid: max(r.retry_at or 0.0, r.next_liveness_restart or 0.0)
            for rid, r in self.records.items()
        }
        retrying = {rid: until for rid, until in held.items() if until > now}
        wake_in = decided.wake_in
        for restart in liveness_restarts(
            verdicts,
            assignment=self.assignment,
            containers=containers,
            busy={*self.actions, *steps, *retrying},
            done=self._liveness_done,
        ):
            self._liveness_done.add(restart.verdict.incarnation)
            steps[restart.replica.id] = [functools.partial(self._liveness_restart, restart)]
        for rid, todo in steps.items():
            self._spawn(rid, todo)
        pending = {v.replica for v in verdicts} & retrying.keys()
        if pending:  # a failed restart is tried again after its back-off
            soonest = min(retrying[rid] for rid in pending) - now
            wake_in = soonest if wake_in is None else min(wake_in, soonest)
        self._sync_probes()
        return wake_in

    def _forget_gone(self, now: float) -> None:
        """Drop records of replicas that are neither assigned, present nor being worked on."""
        if self.assignment is None:
            return
        keep = {r.id for r in self.assignment.replicas}
        keep.update(c.replica for c in self.containers.values())
        keep.update(self.actions)
        for rid in [rid for rid in self.records if rid not in keep]:
            del self.records[rid]

    def _account_exits(self, now: float) -> None:
        if self.assignment is None:
            return
        assigned = {r.id: r for r in self.assignment.replicas}
        for c in self.containers.values():
            replica = assigned.get(c.replica)
            if replica is None or not c.exited or c.revision != replica.revision:
                continue
            if c.replica in self.actions:
                continue
            record = self.records.setdefault(c.replica, ReplicaRecord(since=now))
            if on_exit(record, c, now, self.options.restart):
                delay = (record.restart_at or now) - now
                self.log.info(
                    "replica exited",
                    replica=c.replica,
                    exit_code=c.exit_code,
                    reason=c.exit_reason,
                    restart_in=round(delay, 2),
                    attempts=record.attempts,
                )
                self._event(
                    "replica_exited",
                    f"replica {c.replica} exited with code {c.exit_code} ({c.exit_reason}); "
                    f"restart in {delay:.2f}s",
                    severity="warning",
                    namespace=c.namespace,
                    app=c.app,
                    replica=c.replica,
                    data={"exit_code": c.exit_code, "reason": c.exit_reason},
                )
                self._report_wake.set()

    def _spawn(self, rid: str, steps: list[Callable[[], Awaitable[None]]]) -> None:
        async def run() -> None:
            try:
                for step in steps:
                    await step()
            except EngineUnavailable as err:
                self.log.warning("engine unavailable during action", replica=rid, error=str(err))
            except RuntimeFailure as err:
                self._action_failed(rid, err)
            except Exception:
                self.log.exception("action failed", replica=rid)
                self._action_failed(rid, RuntimeFailure("internal error"))

        task = asyncio.create_task(run(), name=f"agent-action-{rid}")
        self.actions[rid] = task

        def done(_: asyncio.Task[None]) -> None:
            if self.actions.get(rid) is task:
                del self.actions[rid]
            self.reconciler.mark(NODE_KEY)
            self._report_wake.set()

        task.add_done_callback(done)

    def _action_failed(self, rid: str, err: RuntimeFailure) -> None:
        now = time.time()
        record = self.records.setdefault(rid, ReplicaRecord(since=now))
        record.failures += 1
        record.retry_at = now + retry_delay(record.failures)
        record.hint = "image_pull_failed" if isinstance(err, PullFailed) else "failed"
        record.hint_reason = str(err)
        record.since = now
        self.log.warning(
            "replica action failed",
            replica=rid,
            phase=record.hint,
            error=str(err),
            retry_in=round(record.retry_at - now, 2),
        )
        self._event(record.hint, f"replica {rid}: {err}", severity="error", replica=rid)

    def _record(self, rid: str) -> ReplicaRecord:
        return self.records.setdefault(rid, ReplicaRecord(since=time.time()))

    def _set_hint(self, rid: str, hint: Any, reason: str = "") -> None:
        record = self._record(rid)
        record.hint, record.hint_reason, record.since = hint, reason, time.time()
        self._report_wake.set()

    def _succeeded(self, rid: str) -> None:
        record = self._record(rid)
        record.hint, record.hint_reason = None, ""
        record.failures, record.retry_at, record.restart_at = 0, None, None
        record.since = time.time()

    async def _create(self, replica: AssignedReplica, spec: AppSpec) -> None:
        self._set_hint(replica.id, "creating")
        config = create_config(
            spec,
            replica,
            prefix=self.config.prefix,
            node=self.node,
            address=self.options.address,
        )
        name = container_name(self.node, replica.id)
        try:
            cid = await self.engine.create(config, name)
        except EngineError as err:
            if err.status == 404 and "no such image" in err.message.lower():
                # Pull it (once per image however many replicas wait), then create.
                self._set_hint(replica.id, "pulling")
                await self._ensure_image(spec.image)
                self._set_hint(replica.id, "creating")
                cid = await self.engine.create(config, name)
            elif err.status == 409:  # the name is taken: something we have not listed yet
                await self._resync_containers()
                return
            else:
                raise
        await self.engine.start(cid)
        await self._refresh(cid)
        self._succeeded(replica.id)
        self.log.debug("replica started", replica=replica.id, container=cid[:12])

    async def _start(self, replica: AssignedReplica, container: Container) -> None:
        restart = container.exited
        await self.engine.start(container.id)
        record = self._record(replica.id)
        if restart:
            record.restarts += 1
            self._event(
                "replica_restarted",
                f"replica {replica.id} restarted (restart {record.restarts})",
                namespace=replica.namespace,
                app=replica.app,
                replica=replica.id,
                data={"restarts": record.restarts},
            )
        await self._refresh(container.id)
        self._succeeded(replica.id)

    async def _liveness_restart(self, restart: LivenessRestart) -> None:
        """Restart a container found not live: SIGTERM, SIGKILL after its grace, start."""
        c, verdict = restart.container, restart.verdict
        self.log.info(
            "restarting a replica that is not live",
            replica=c.replica,
            container=c.id[:12],
            source=verdict.source,
            reason=verdict.reason,
        )
        try:
            await self.engine.restart(c.id, c.grace)
        except BaseException:
            # Not done: tried again after the failure's back-off (``retry_at``).
            self._liveness_done.discard(verdict.incarnation)
            raise
        record = self._record(c.replica)
        record.restarts += 1
        record.exit_code = None
        record.reason = f"liveness: {verdict.reason}"
        self._exec_not_live.pop(c.replica, None)
        self._event(
            "liveness_restart",
            f"replica {c.replica} restarted: not live ({verdict.reason})",
            severity="warning",
            namespace=c.namespace,
            app=c.app,
            replica=c.replica,
            data={
                "restarts": record.restarts,
                "source": verdict.source,
                "reason": verdict.reason,
                "started_at": verdict.started_at,
            },
        )
        await self._refresh(c.id)
        self._succeeded(c.replica)
        now = time.time()
        ran_for = now - c.started_at if c.started_at is not None else 0.0
        on_liveness_restart(record, ran_for, now, self.options.restart)

    # -- exec probes (run by the agent: they run inside the container) -------------------

    def _sync_probes(self) -> None:
        """Run exactly the exec probes of the running container starts; a new start (or a
        changed probe) gets a fresh state machine."""
        wanted = exec_targets(self.assignment, self.containers.values())
        for key, (target, task) in list(self._probes.items()):
            if wanted.get(key) != target:
                task.cancel()
                del self._probes[key]
        for key, target in wanted.items():
            if key not in self._probes:
                seeded = seeded_readiness(self._previous_report, target)
                state = ProbeState.initial(target.role, time.time(), seeded=seeded)
                if seeded is not None:
                    self._set_exec_ready(target, state)
                task = asyncio.create_task(
                    self._probe_loop(target, state), name=f"agent-probe-{key[0]}-{key[1]}"
                )
                self._probes[key] = (target, task)

    async def _probe_loop(self, target: ExecTarget, state: ProbeState) -> None:
        rid, probe = target.replica.id, target.probe
        last: float | None = None
        hung: str | None = None  # a timed-out exec: no second one while it still runs
        try:
            while True:
                delay = next_probe_at(target, last) - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                last = time.time()
                try:
                    if hung is not None and await self.engine.exec_running(hung):
                        success = False
                        reason = f"exec probe timed out after {probe.timeout:g}s, still running"
                    else:
                        hung = None
                        code, output = await self.engine.exec_run(
                            target.container_id, target.command, probe.timeout
                        )
                        success, reason = exec_result(code, output)
                except ExecTimeout as err:
                    hung = err.exec_id
                    success, reason = False, f"exec probe timed out after {probe.timeout:g}s"
                except EngineError as err:
                    if err.status in (404, 409):  # gone or not running: no verdict
                        continue
                    success, reason = False, f"exec probe could not run: {err.message}"
                except EngineUnavailable as err:  # the engine's trouble, not the container's
                    self.log.debug("exec probe skipped", replica=rid, error=str(err))
                    continue
                except RuntimeFailure as err:
                    self.log.warning("exec probe skipped", replica=rid, error=str(err))
                    continue
                except Exception:  # a bug or an unexpected answer: no verdict this round
                    self.log.exception("exec probe round failed", replica=rid, role=target.role)
                    continue
                before, state = state, step(state, probe, success, reason, time.time())
                if target.role == "readiness":
                    self._set_exec_ready(target, state)
                elif liveness_failed(before, state):
                    self.log.info("exec liveness probe failed", replica=rid, reason=state.reason)
                    self._exec_not_live[rid] = NotLive(
                        rid,
                        target.replica.revision,
                        target.started_at,
                        f"exec probe: {state.reason}",
                        "exec",
                    )
                    self.reconciler.mark(NODE_KEY)
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("exec probe loop failed", replica=rid, role=target.role)

    def _set_exec_ready(self, target: ExecTarget, state: ProbeState) -> None:
        verdict = exec_verdict(state)
        if verdict is None:
            return
        record = self._record(target.replica.id)
        value = (target.started_at, verdict)
        if record.exec_ready == value:
            return
        record.exec_ready = value
        self._report_wake.set()
        self.log.info(
            "exec readiness",
            replica=target.replica.id,
            ready=verdict,
            reason=state.reason,
        )

    async def _remove(self, removal: Removal) -> None:
        c = removal.container
        if removal.graceful:
            self._set_hint(c.replica, "terminating", removal.why)
            if c.drain > 0:
                await asyncio.sleep(c.drain)
            await self.engine.stop(c.id, c.grace)
        await self.engine.remove(c.id)
        self.containers.pop(c.id, None)
        self._touched[c.id] = time.monotonic()
        assigned = {r.id for r in self.assignment.replicas} if self.assignment else set()
        if c.replica in assigned:
            record = self._record(c.replica)
            record.hint, record.hint_reason = None, ""
        else:
            self.records.pop(c.replica, None)
        self.log.debug("container removed", replica=c.replica, why=removal.why)

    # -- images --------------------------------------------------------------------------

    async def _ensure_image(self, image: str) -> None:
        """Pull ``image``, sharing one pull among every replica that needs it now."""
        task = self._pulls.get(image)
        if task is None:
            task = asyncio.create_task(self._pull(image), name=f"agent-pull-{image}")
            self._pulls[image] = task
            task.add_done_callback(lambda _: self._pulls.pop(image, None))
        await asyncio.shield(task)

    async def _pull(self, image: str) -> None:
        registry, credential = credential_for(image, self.options.registry_auth)
        reference = pull_reference(image)
        auth = credential.header(registry) if credential is not None else None
        self.log.info("pulling image", image=reference, registry=registry, auth=bool(auth))
        self._event(
            "image_pull", f"pulling {reference}", data={"image": reference, "status": "start"}
        )
        layers: dict[str, str] = {}
        last = time.monotonic()
        started = last
        try:
            async for item in self.engine.pull(reference, auth):
                layer = item.get("id")
                if layer and item.get("status"):
                    layers[str(layer)] = str(item["status"])
                if time.monotonic() - last >= 1.0:
                    last = time.monotonic()
                    done = sum(
                        1 for s in layers.values() if s in ("Pull complete", "Already exists")
                    )
                    self._event(
                        "image_pull",
                        f"pulling {reference}: {done}/{len(layers)} layers",
                        data={
                            "image": reference,
                            "status": "progress",
                            "layers": len(layers),
                            "done": done,
                        },
                    )
        except EngineError as err:
            reason = f"pull {reference} from {registry} failed: {err.message}"
            self._event(
                "image_pull_failed",
                reason,
                severity="error",
                data={"image": reference, "registry": registry},
            )
            raise PullFailed(reason) from err
        self.log.info("image pulled", image=reference, s=round(time.monotonic() - started, 2))
        self._event(
            "image_pull",
            f"pulled {reference}",
            data={"image": reference, "status": "done", "layers": len(layers)},
        )

    # -- outputs: observed state, heartbeats, stats, events ------------------------------

    async def _report_loop(self) -> None:
        while True:
            await self._report_wake.wait()
            await asyncio.sleep(0.02)  # coalesce a burst of changes into one message
            self._report_wake.clear()
            if not self._listed or not self._synced.is_set():
                continue
            snapshot = Snapshot(
                node=self.node,
                address=self.options.address,
                assignment=self.assignment,
                containers=list(self.containers.values()),
                records=self.records,
            )
            try:
                report = node_replicas(snapshot, time.time())
            except Exception:
                self.log.exception("building the report failed")
                continue
            body = report.model_dump(mode="json", exclude={"ts"})
            if body == self._last_report:
                continue
            try:
                await self.bus.publish(
                    self.topics.node_replicas(self.node), "replicas", report, retain=True
                )
                self._last_report = body
            except BusError as err:
                self.log.debug("report not published; will retry", error=str(err))
                await asyncio.sleep(0.5)
                self._report_wake.set()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.heartbeat)
            if self.bus.connected:
                await self._publish_info()

    def _event(self, kind: str, message: str, **fields: Any) -> None:
        fields.setdefault("node", self.node)
        with contextlib.suppress(asyncio.QueueFull):
            self._events.put_nowait((kind, message, fields))

    async def _event_loop(self) -> None:
        while True:
            kind, message, fields = await self._events.get()
            if self.bus.connected:
                await self.emit(kind, message, **fields)

    async def _stats_loop(self) -> None:
        sem = asyncio.Semaphore(10)

        async def sample(c: Container) -> tuple[Container, Sample | None]:
            async with sem:
                data = await self.engine.stats(c.id)
            return c, parse_sample(data) if data else None

        while True:
            await asyncio.sleep(self.options.stats_interval)
            if not self.engine_ready:
                continue
            try:
                await self._publish_stats(sample)
            except RuntimeFailure as err:
                self.log.debug("stats failed", error=str(err))
            except Exception:
                self.log.exception("stats round failed")

    async def _publish_stats(
        self, sample: Callable[[Container], Awaitable[tuple[Container, Sample | None]]]
    ) -> None:
        running = [c for c in self.containers.values() if c.running]
        results = await asyncio.gather(*(sample(c) for c in running))
        usage: dict[str, ReplicaUsage] = {}
        prev, self._stats_prev = self._stats_prev, {}
        for c, s in results:
            if s is None:
                continue
            self._stats_prev[c.id] = s
            usage[c.replica] = ReplicaUsage(
                cpu=cpu_cores(prev.get(c.id), s),
                memory=s.memory,
                memory_limit=s.memory_limit,
                namespace=c.namespace,
                app=c.app,
            )
        metrics = NodeMetrics(node=self.node, replicas=usage, ts=time.time())
        try:
            await self.bus.publish(
                self.topics.metrics_node(self.node), "node_metrics", metrics, qos=0, timeout=2
            )
        except BusError as err:
            self.log.debug("metrics not published", error=str(err))

    # -- logs ----------------------------------------------------------------------------

    def _on_logs_request(self, topic: str, env: Envelope | None) -> None:
        if env is None:
            return
        try:
            request = env.open(LogsRequest)
            stream_topic = self.topics.logs_stream(request.id)
        except (CodecError, ValueError) as err:
            self.log.warning("invalid logs request dropped", error=str(err))
            return
        now = time.monotonic()
        if request.id in self._log_leases:
            self._log_leases[request.id] = now + request.lease
            return
        matches = [
            c
            for c in self.containers.values()
            if c.namespace == request.namespace
            and c.app == request.app
            and (request.replica is None or c.replica == request.replica)
        ]
        if not matches:
            return
        self._log_leases[request.id] = now + request.lease
        for c in matches:
            key = f"{request.id}/{c.id}"
            task = asyncio.create_task(
                self._stream_logs(request, c, stream_topic), name=f"agent-logs-{key}"
            )
            self._log_tasks[key] = task
            task.add_done_callback(self._log_task_done(key))

    def _log_task_done(self, key: str) -> Callable[[asyncio.Task[None]], None]:
        def done(_: asyncio.Task[None]) -> None:
            self._log_tasks.pop(key, None)

        return done

    async def _stream_logs(self, request: LogsRequest, c: Container, topic: str) -> None:
        buffer: list[str] = []
        error = ""

        async def flush(eof: bool = False) -> None:
            if not buffer and not eof:
                return
            chunk = LogChunk(
                request=request.id,
                node=self.node,
                replica=c.replica,
                lines=buffer[:],
                eof=eof,
                error=error,
            )
            buffer.clear()
            with contextlib.suppress(BusError):
                await self.bus.publish(topic, "logs", chunk, qos=1, timeout=5)

        async def read() -> None:
            async for line in self.engine.logs(c.id, follow=request.follow, tail=request.tail):
                buffer.append(line)
                if len(buffer) >= 500:
                    await flush()

        reader = asyncio.create_task(read(), name="agent-logs-read")
        try:
            while not reader.done():
                await asyncio.wait({reader}, timeout=0.1)
                await flush()
                if time.monotonic() > self._log_leases.get(request.id, 0.0):
                    reader.cancel()
                    break
            if reader.done() and not reader.cancelled() and reader.exception() is not None:
                error = str(reader.exception())
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeFailure):
                await reader
            await flush(eof=True)
            if not any(
                k.startswith(f"{request.id}/")
                for k in self._log_tasks
                if k != f"{request.id}/{c.id}"
            ):
                self._log_leases.pop(request.id, None)
