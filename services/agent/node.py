"""The node's state, which every room of the agent reads and updates.

``Node`` is what the agent knows and remembers about its node: its id and options, the
assignment it was given, the container index (its containers as last inspected), each
replica's record (restart counters, an in-progress or failed step, exec readiness), what
it knows of the engine, and the two wake-ups every change ends in: reconcile again
(``look``) and report again (``report_due``). Human-readable events queue here until the
shell publishes them. Nothing here talks to the engine or to the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.spec import Resources
from core.state import NodeAssignment, NodeReplicas
from services.agent.containers import DEFAULT_LIMITS, Container, ContainerLimits
from services.agent.plan import Hint, ReplicaRecord, RestartPolicy, remembered
from services.agent.registry import Credential

#: One queued event: (kind, message, fields of ``core.state.Event``).
QueuedEvent = tuple[str, str, dict[str, Any]]


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
    limits: ContainerLimits = DEFAULT_LIMITS
    #: where replicas' secret files are kept: in memory (None: /run or /dev/shm)
    secrets_dir: Path | None = None
    #: Attach containers to their namespace's network of the node's mesh (``--mesh``).
    mesh: bool = False


def host_capacity() -> tuple[float, int]:
    """CPUs and memory of this machine, used until the engine answers."""
    memory = 0
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
                break
    return float(os.cpu_count() or 1), memory


class Node:
    def __init__(
        self, options: AgentOptions, prefix: str, *, look: Callable[[], None], log: Any
    ) -> None:
        self.options = options
        self.id = options.node_id
        self.prefix = prefix
        self.log = log
        self.assignment: NodeAssignment | None = None  # None until the retained one is seen
        self.containers: dict[str, Container] = {}
        self.records: dict[str, ReplicaRecord] = {}
        self.previous_report: NodeReplicas | None = None  # retained, from before a restart
        self.synced = False  # the retained assignment (if any) has been delivered
        self.listed = False  # the container index has been filled from a full list
        self.engine_ready = False
        self.engine_reason = "connecting to the Docker engine"
        self.engine_version = ""
        cpus, memory = host_capacity()
        self.capacity = Resources(cpu=options.cpus or cpus, memory=options.memory or memory)
        self.report_due = asyncio.Event()
        self.events: asyncio.Queue[QueuedEvent] = asyncio.Queue(1000)
        self._look = look
        self._touched: dict[str, float] = {}  # container id -> when an action or event saw it

    # -- wake-ups ------------------------------------------------------------------------

    def look(self) -> None:
        """Reconcile again soon."""
        self._look()

    def changed(self) -> None:
        """Something both the reconcile and the report depend on changed."""
        self._look()
        self.report_due.set()

    def event(self, kind: str, message: str, **fields: Any) -> None:
        """Queue a human-readable event about this node (dropped when the queue is full)."""
        fields.setdefault("node", self.id)
        with contextlib.suppress(asyncio.QueueFull):
            self.events.put_nowait((kind, message, fields))

    # -- start-up ------------------------------------------------------------------------

    def resume(self, now: float) -> None:
        """The retained state has been delivered: seed the restart counters from this
        node's report of before a restart, and let the reconcile begin."""
        for rid, record in remembered(self.previous_report, self.id, now).items():
            self.records.setdefault(rid, record)
        self.synced = True

    # -- the container index -------------------------------------------------------------

    def put(self, cid: str, container: Container | None) -> None:
        """One container as just inspected (None: it is gone)."""
        self._touched[cid] = time.monotonic()
        if container is None:
            self.containers.pop(cid, None)
        else:
            self.containers[cid] = container
        self.changed()

    def relist(self, fresh: dict[str, Container], started: float) -> None:
        """The index from a full list begun at ``started`` (monotonic); what an action or
        an event refreshed while the list was running is kept."""
        for cid, c in self.containers.items():
            if cid not in fresh and self._touched.get(cid, 0.0) > started:
                fresh[cid] = c
        self.containers = fresh
        self._touched = {k: v for k, v in self._touched.items() if k in fresh}
        self.changed()

    # -- replica records -----------------------------------------------------------------

    def assigned(self) -> set[str]:
        return {r.id for r in self.assignment.replicas} if self.assignment is not None else set()

    def record(self, rid: str) -> ReplicaRecord:
        return self.records.setdefault(rid, ReplicaRecord(since=time.time()))

    def set_hint(self, rid: str, hint: Hint | None, reason: str = "") -> None:
        record = self.record(rid)
        record.hint, record.hint_reason, record.since = hint, reason, time.time()
        self.report_due.set()

    def succeeded(self, rid: str) -> None:
        record = self.record(rid)
        record.hint, record.hint_reason = None, ""
        record.failures, record.retry_at, record.restart_at = 0, None, None
        record.since = time.time()
