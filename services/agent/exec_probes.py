"""exec probes: the readiness and liveness probes only the agent can run (inside the
container, with Docker exec).

One task per (replica, role) of a running container start, started and cancelled by
``sync`` after every reconcile; a new start (or a changed probe) gets a fresh state
machine. Readiness verdicts are recorded for the report (``exec_ready``); a liveness
probe reaching its failure threshold hands a verdict to ``Liveness``. Which probes run
where, the schedule and the state machine are decided in ``probes.py``.
"""

from __future__ import annotations

import asyncio
import time

from core.errors import EngineUnavailable, RuntimeFailure
from core.probes import ProbeRole, ProbeState, step
from services.agent.engine import Engine, EngineError, ExecTimeout
from services.agent.liveness import Liveness
from services.agent.node import Node
from services.agent.probes import (
    ExecTarget,
    NotLive,
    exec_result,
    exec_targets,
    exec_verdict,
    liveness_failed,
    next_probe_at,
    seeded_readiness,
)

ProbeKey = tuple[str, ProbeRole]


class ExecProbes:
    def __init__(self, node: Node, engine: Engine, liveness: Liveness) -> None:
        self.node = node
        self.engine = engine
        self.liveness = liveness
        self.running: dict[ProbeKey, tuple[ExecTarget, asyncio.Task[None]]] = {}

    def tasks(self) -> list[asyncio.Task[None]]:
        return [task for _, task in self.running.values()]

    def sync(self) -> None:
        """Run exactly the exec probes of the running container starts."""
        wanted = exec_targets(self.node.assignment, self.node.containers.values())
        for key, (target, task) in list(self.running.items()):
            if wanted.get(key) != target:
                task.cancel()
                del self.running[key]
        for key, target in wanted.items():
            if key not in self.running:
                seeded = seeded_readiness(self.node.previous_report, target)
                state = ProbeState.initial(target.role, time.time(), seeded=seeded)
                if seeded is not None:
                    self._set_ready(target, state)
                task = asyncio.create_task(
                    self._loop(target, state), name=f"agent-probe-{key[0]}-{key[1]}"
                )
                self.running[key] = (target, task)

    async def _loop(self, target: ExecTarget, state: ProbeState) -> None:
        rid, probe, log = target.replica.id, target.probe, self.node.log
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
                    log.debug("exec probe skipped", replica=rid, error=str(err))
                    continue
                except RuntimeFailure as err:
                    log.warning("exec probe skipped", replica=rid, error=str(err))
                    continue
                except Exception:  # a bug or an unexpected answer: no verdict this round
                    log.exception("exec probe round failed", replica=rid, role=target.role)
                    continue
                before, state = state, step(state, probe, success, reason, time.time())
                if target.role == "readiness":
                    self._set_ready(target, state)
                elif liveness_failed(before, state):
                    log.info("exec liveness probe failed", replica=rid, reason=state.reason)
                    self.liveness.exec_failed(
                        NotLive(
                            rid,
                            target.replica.revision,
                            target.started_at,
                            f"exec probe: {state.reason}",
                            "exec",
                        )
                    )
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("exec probe loop failed", replica=rid, role=target.role)

    def _set_ready(self, target: ExecTarget, state: ProbeState) -> None:
        verdict = exec_verdict(state)
        if verdict is None:
            return
        record = self.node.record(target.replica.id)
        value = (target.started_at, verdict)
        if record.exec_ready == value:
            return
        record.exec_ready = value
        self.node.report_due.set()
        self.node.log.info(
            "exec readiness", replica=target.replica.id, ready=verdict, reason=state.reason
        )
