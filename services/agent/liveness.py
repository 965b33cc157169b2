"""Liveness restarts: a replica found not live is restarted in place, once per verdict.

Verdicts come from the health monitor (``health/<ns>/<app>``, followed as a view: only
``live=False`` about this node's replicas matters) and from this agent's exec liveness
probes (``exec_failed``). The reconcile asks ``due`` which restarts to run; a restart is
Docker's ``restart?t=grace`` (SIGTERM, SIGKILL after the grace, start), counted in the
replica's record, and backs off like a crash loop. Which verdict restarts what is
decided in ``probes.py``.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping

from core.keys import AppKey
from core.state import AppHealth
from services.agent.engine import Engine
from services.agent.node import Node
from services.agent.plan import on_liveness_restart
from services.agent.probes import (
    Incarnation,
    LivenessRestart,
    NotLive,
    liveness_restarts,
    not_live,
    prune_done,
)
from services.agent.watch import EngineWatch


class Liveness:
    def __init__(self, node: Node, engine: Engine, watch: EngineWatch) -> None:
        self.node = node
        self.engine = engine
        self.watch = watch
        #: The health monitor's verdicts per app (the shell sets the bus's view).
        self.health: Mapping[AppKey, AppHealth] = {}
        self.exec_failures: dict[str, NotLive] = {}  # exec liveness verdicts not acted on
        self.done: set[Incarnation] = set()  # container starts restarted for a verdict

    def on_health(self, key: AppKey, health: AppHealth | None) -> None:
        """A new health verdict: remember which container starts were found ready (an exit
        after serving is not a crash loop), and reconcile if it says one of this node's
        replicas is not live (whether to restart is decided there, level-triggered)."""
        if health is None:
            return
        mine = [r for r in health.replicas if r.node == self.node.id]
        probed = self._probed_for_readiness(key)
        for r in mine:
            record = self.node.records.get(r.id)
            if probed and r.ready and r.started_at is not None and record is not None:
                record.served = r.started_at
        if any(not r.live for r in mine):
            self.node.look()

    def _probed_for_readiness(self, key: AppKey) -> bool:
        """Whether this node runs ``key`` with a readiness probe: only a probe's verdict
        says a start served (a probe-less replica is "ready" as soon as it runs)."""
        assignment = self.node.assignment
        if assignment is None:
            return False
        return any(
            spec.health.readiness is not None
            for spec in assignment.specs.values()
            if (spec.namespace, spec.name) == key
        )

    def exec_failed(self, verdict: NotLive) -> None:
        self.exec_failures[verdict.replica] = verdict
        self.node.look()

    def verdicts(self) -> list[NotLive]:
        """Every not-live verdict about a container start still present."""
        containers = self.node.containers.values()
        self.done = prune_done(self.done, containers)
        starts = {(c.replica, c.started_at) for c in containers}
        self.exec_failures = {
            rid: v for rid, v in self.exec_failures.items() if v.incarnation in starts
        }
        return [*not_live(self.health.values(), self.node.id), *self.exec_failures.values()]

    def due(self, verdicts: list[NotLive], busy: Collection[str]) -> list[LivenessRestart]:
        """The restarts to run now (each verdict is acted on once)."""
        restarts = liveness_restarts(
            verdicts,
            assignment=self.node.assignment,
            containers=self.node.containers.values(),
            busy=busy,
            done=self.done,
        )
        self.done.update(r.verdict.incarnation for r in restarts)
        return restarts

    async def restart(self, restart: LivenessRestart) -> None:
        """Restart a container found not live: SIGTERM, SIGKILL after its grace, start."""
        node, c, verdict = self.node, restart.container, restart.verdict
        node.log.info(
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
            self.done.discard(verdict.incarnation)
            raise
        record = node.record(c.replica)
        record.restarts += 1
        record.exit_code = None
        record.reason = f"liveness: {verdict.reason}"
        self.exec_failures.pop(c.replica, None)
        node.event(
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
        await self.watch.refresh(c.id)
        node.succeeded(c.replica)
        now = time.time()
        ran_for = now - c.started_at if c.started_at is not None else 0.0
        on_liveness_restart(record, ran_for, now, node.options.restart)
