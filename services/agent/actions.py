"""What the reconcile decided, done on the engine: create, start, remove.

Each replica's steps run as one task (so 50 creates go in parallel, and a replica is
never worked on twice at once: it is ``busy`` while its task runs). A failed step is
recorded on the replica with the engine's or registry's reason (``failed``,
``image_pull_failed``) and retried after a back-off; when a task ends the node is
reconciled again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from core.errors import EngineUnavailable, RuntimeFailure
from core.mesh import LABEL_NS, NodeNetwork, network_filters, parse_network
from core.spec import AppSpec
from core.state import AssignedReplica
from services.agent.containers import Container, container_name, create_config
from services.agent.engine import Engine, EngineError
from services.agent.node import Node
from services.agent.plan import Removal, ReplicaRecord, retry_delay
from services.agent.pulls import PullFailed, Pulls
from services.agent.secrets import SecretFetcher, SecretFiles, SecretMounts
from services.agent.watch import EngineWatch

Step = Callable[[], Awaitable[None]]

#: With ``--mesh``, how many times (every 100 ms) a create looks for its namespace's
#: network before failing (and being retried with back-off).
MESH_WAIT_TRIES = 30


class Actions:
    def __init__(
        self,
        node: Node,
        engine: Engine,
        watch: EngineWatch,
        pulls: Pulls,
        secrets: tuple[SecretFetcher, SecretFiles] | None = None,
    ) -> None:
        self.node = node
        self.engine = engine
        self.watch = watch
        self.pulls = pulls
        #: where a replica's secrets come from and where they are kept (None: no bus)
        self.secrets = secrets
        self.running: dict[str, asyncio.Task[None]] = {}  # replica id -> its steps

    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self.running.values())

    def spawn(self, rid: str, steps: list[Step]) -> None:
        """Run one replica's steps in order, as one task."""
        log = self.node.log

        async def run() -> None:
            try:
                for step in steps:
                    await step()
            except EngineUnavailable as err:
                log.warning("engine unavailable during action", replica=rid, error=str(err))
            except RuntimeFailure as err:
                self._failed(rid, err)
            except Exception:
                log.exception("action failed", replica=rid)
                self._failed(rid, RuntimeFailure("internal error"))

        task = asyncio.create_task(run(), name=f"agent-action-{rid}")
        self.running[rid] = task

        def done(_: asyncio.Task[None]) -> None:
            if self.running.get(rid) is task:
                del self.running[rid]
            self.node.changed()

        task.add_done_callback(done)

    def _failed(self, rid: str, err: RuntimeFailure) -> None:
        now = time.time()
        record = self.node.records.setdefault(rid, ReplicaRecord(since=now))
        record.failures += 1
        record.retry_at = now + retry_delay(record.failures)
        record.hint = "image_pull_failed" if isinstance(err, PullFailed) else "failed"
        record.hint_reason = str(err)
        record.since = now
        self.node.log.warning(
            "replica action failed",
            replica=rid,
            phase=record.hint,
            error=str(err),
            retry_in=round(record.retry_at - now, 2),
        )
        self.node.event(record.hint, f"replica {rid}: {err}", severity="error", replica=rid)

    async def _secrets(self, replica: AssignedReplica, spec: AppSpec) -> SecretMounts:
        """The replica's secrets asked for and put in place, before any container exists:
        a secret that cannot be had fails the replica (retried), nothing half-started."""
        if not spec.secrets:
            return SecretMounts()
        if self.secrets is None:
            raise RuntimeFailure("this agent cannot fetch secrets (no controller connection)")
        fetcher, files = self.secrets
        values = await fetcher.fetch(spec)
        return files.put(replica.id, spec, values)

    def release(self, rid: str) -> None:
        """Forget a replica's secret files once none of its containers is left."""
        if self.secrets is not None and not any(
            c.replica == rid for c in self.node.containers.values()
        ):
            self.secrets[1].remove(rid)

    async def create(self, replica: AssignedReplica, spec: AppSpec) -> None:
        node = self.node
        node.set_hint(replica.id, "creating")
        mounts = await self._secrets(replica, spec)
        config = create_config(
            spec,
            replica,
            prefix=node.prefix,
            node=node.id,
            address=node.options.address,
            limits=node.options.limits,
            secrets=mounts,
            network=await self.mesh_network(replica.namespace),
        )
        name = container_name(node.id, replica.id)
        try:
            cid = await self.engine.create(config, name)
        except EngineError as err:
            if err.status == 404 and "no such image" in err.message.lower():
                # Pull it (once per image however many replicas wait), then create.
                node.set_hint(replica.id, "pulling")
                await self.pulls.ensure(spec.image)
                node.set_hint(replica.id, "creating")
                cid = await self.engine.create(config, name)
            elif err.status == 409:  # the name is taken: something we have not listed yet
                await self.watch.resync()
                return
            else:
                raise
        await self.engine.start(cid)
        await self.watch.refresh(cid)
        node.succeeded(replica.id)
        node.log.debug("replica started", replica=replica.id, container=cid[:12])

    async def mesh_network(self, namespace: str) -> NodeNetwork | None:
        """With ``--mesh``: the namespace's network, which the node's mesh service creates
        as soon as the namespace has an app; until it exists the create fails (retried)."""
        if not self.node.options.mesh:
            return None
        filters = [*network_filters(self.node.prefix, self.node.id), f"{LABEL_NS}={namespace}"]
        for _ in range(MESH_WAIT_TRIES):  # the mesh usually creates it within a few 100 ms
            for item in await self.engine.list_networks(filters):
                network = parse_network(item)
                if network is not None and network.namespace == namespace:
                    return network
            await asyncio.sleep(0.1)
        raise RuntimeFailure(
            f"namespace {namespace} has no network on this node yet (is the node's mesh running?)"
        )

    async def start(self, replica: AssignedReplica, container: Container) -> None:
        """Start a created container, or an exited one again (a restart, counted)."""
        restart = container.exited
        assignment = self.node.assignment
        spec = assignment.specs.get(replica.spec_key) if assignment is not None else None
        if (
            spec is not None
            and self.secrets is not None
            and not self.secrets[1].has(replica.id, spec)
        ):
            # the files are in memory: gone after a node reboot, written again first
            await self._secrets(replica, spec)
        await self.engine.start(container.id)
        record = self.node.record(replica.id)
        if restart:
            record.restarts += 1
            self.node.event(
                "replica_restarted",
                f"replica {replica.id} restarted (restart {record.restarts})",
                namespace=replica.namespace,
                app=replica.app,
                replica=replica.id,
                data={"restarts": record.restarts, "backoff": record.delay},
            )
        await self.watch.refresh(container.id)
        self.node.succeeded(replica.id)

    async def remove(self, removal: Removal) -> None:
        """Remove a container; a running one gracefully: drain, SIGTERM, SIGKILL after grace."""
        node, c = self.node, removal.container
        if removal.graceful:
            node.set_hint(c.replica, "terminating", removal.why)
            if c.drain > 0:
                await asyncio.sleep(c.drain)
            await self.engine.stop(c.id, c.grace)
        await self.engine.remove(c.id)
        node.put(c.id, None)
        if c.replica in node.assigned():
            record = node.record(c.replica)
            record.hint, record.hint_reason = None, ""
        else:
            node.records.pop(c.replica, None)
            self.release(c.replica)
        node.log.debug("container removed", replica=c.replica, why=removal.why)
