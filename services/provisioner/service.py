"""The provisioner's I/O shell: retained state in, ``decide`` in the middle, provider calls
and node commands out.

Every ``interval`` the leader reads what the scheduler could not place
(``status/scheduler``), the nodes (``nodes/+/info``, ``assign``, ``cordon``) and the nodes
its provider made, asks ``decide`` and does what it says: ask the provider for a node,
drain one (``cmd/node``: the scheduler moves each replica readiness-gated, surge then
remove), remove a drained one (the provider deletes it; its retained node records are
then cleared so it leaves ``shoal get nodes``). Each decision is an event on
``events/provisioner`` with its reason. Standbys keep their views warm and act on nothing.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field

from core.channels import (
    APPS,
    NODE,
    NODE_ASSIGN,
    NODE_CORDON,
    NODE_INFO,
    NODE_REPLICAS,
    REBALANCE,
    SCHEDULER_STATUS,
)
from core.commands import NodeCommand, RebalanceCommand, RebalancePlan
from core.config import ServiceConfig
from core.errors import ShoalError
from core.keys import AppKey
from core.service import Service
from core.state import (
    AppState,
    NodeAssignment,
    NodeCordon,
    NodeInfo,
    NodeReplicas,
    SchedulerStatus,
)
from core.view import View
from services.provisioner.decide import (
    Action,
    Drain,
    GiveUp,
    History,
    Hold,
    Joining,
    Limits,
    Provision,
    Rebalance,
    Remove,
    Size,
    decide,
)
from services.provisioner.demand import node_use, pending_demand
from services.provisioner.providers.base import (
    NodeProvider,
    NodeRequest,
    ProviderError,
    ProviderNode,
)

EVENT_KIND = "provisioner"


@dataclass(frozen=True, slots=True)
class ProvisionerSettings:
    sizes: tuple[Size, ...]
    limits: Limits = field(default_factory=Limits)
    interval: float = 1.0
    list_interval: float = 30.0  # how often the provider's list is read again
    node_prefix: str = "auto-"
    request_timeout: float = 10.0


class ProvisionerService(Service):
    name = "provisioner"

    apps: View[AppKey, AppState]
    statuses: View[AppKey, SchedulerStatus]
    infos: View[str, NodeInfo]
    assignments: View[str, NodeAssignment]
    cordons: View[str, NodeCordon]
    reports: View[str, NodeReplicas]

    def __init__(
        self, config: ServiceConfig, settings: ProvisionerSettings, provider: NodeProvider
    ) -> None:
        super().__init__(config)
        if not settings.sizes:
            raise ValueError("the provisioner needs at least one node size")
        self.settings = settings
        self.provider = provider
        self.history = History()
        self.owned: dict[str, ProviderNode] = {}
        self.listed_at = -float("inf")
        self.seen_ready: set[str] = set()
        self.last_hold = ""
        self.leadership = self.elect_leader(on_elected=self._on_elected)

    @property
    def sizes(self) -> dict[str, Size]:
        return {s.name: s for s in self.settings.sizes}

    async def setup(self) -> None:
        self.apps = await self.bus.view(APPS)
        self.statuses = await self.bus.view(SCHEDULER_STATUS)
        self.infos = await self.bus.view(NODE_INFO)
        self.assignments = await self.bus.view(NODE_ASSIGN)
        self.cordons = await self.bus.view(NODE_CORDON)
        self.reports = await self.bus.view(NODE_REPLICAS)
        await self.leadership.setup()

    def _on_elected(self) -> None:
        self.listed_at = -float("inf")  # read the provider's nodes before the first decision
        self.last_hold = ""

    async def main(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            await self.bus.wait_connected()
            await self.bus.settle()
            tasks.create_task(self.leadership.run(), name="provisioner-leadership")
            tasks.create_task(self._loop(), name="provisioner-loop")

    async def on_shutdown(self) -> None:
        try:
            await self.provider.close()
        except Exception:
            self.log.exception("provider close failed")

    async def _loop(self) -> None:
        while True:
            if self.is_leader() and self.bus.connected:
                try:
                    await self.tick(time.time())
                except ShoalError as err:
                    self.log.warning("provisioner pass failed; retrying", error=str(err))
            await asyncio.sleep(self.settings.interval)

    # -- one pass ---------------------------------------------------------------------------

    async def _refresh(self, now: float) -> None:
        if now - self.listed_at < self.settings.list_interval:
            return
        try:
            listed = await self.provider.list()
        except ProviderError as err:
            self.log.warning("provider list failed; keeping the last one", error=str(err))
            return
        self.owned = {n.node: n for n in listed}
        self.listed_at = now

    def _price(self, node: ProviderNode) -> float:
        size = self.sizes.get(node.size)
        return size.price if size is not None else 0.0

    async def tick(self, now: float) -> list[Action]:
        await self._refresh(now)
        infos = dict(self.infos.items())
        for node_id, info in infos.items():
            if info.status == "ready":
                self.seen_ready.add(node_id)
        prices = {node_id: self._price(n) for node_id, n in self.owned.items()}
        nodes = node_use(
            infos,
            dict(self.assignments.items()),
            dict(self.cordons.items()),
            prices,
            dict(self.reports.items()),
        )
        joining = [
            Joining(n.node, n.size, self._price(n), n.created or now)
            for n in self.owned.values()
            if n.node not in self.seen_ready
        ]
        pending = pending_demand(dict(self.statuses.items()), dict(self.apps.items()))
        plan = decide(
            pending,
            nodes,
            joining,
            list(self.settings.sizes),
            self.settings.limits,
            self.history,
            now,
        )
        self.history = plan.history
        if not any(isinstance(a, Hold) for a in plan.actions):
            self.last_hold = ""
        for action in plan.actions:
            await self._act(action, now)
        return plan.actions

    async def _act(self, action: Action, now: float) -> None:
        if isinstance(action, Provision):
            await self._provision(action, now)
        elif isinstance(action, Drain):
            await self._drain(action)
        elif isinstance(action, Remove | GiveUp):
            await self._remove(action)
        elif isinstance(action, Rebalance):
            await self._rebalance(action)
        elif action.reason != self.last_hold:
            self.last_hold = action.reason
            self.log.warning("scale-up held", reason=action.reason)
            await self.emit(
                EVENT_KIND, f"held: {action.reason}", severity="warning", data={"action": "hold"}
            )

    async def _provision(self, action: Provision, now: float) -> None:
        size = action.size
        node_id = f"{self.settings.node_prefix}{secrets.token_hex(3)}"
        request = NodeRequest(
            node=node_id,
            size=size.name,
            cpu=size.cpu,
            memory=size.memory,
            labels=dict(self.settings.limits.labels),
            prefix=self.config.prefix,
        )
        try:
            made = await self.provider.create(request)
        except ProviderError as err:
            self.log.error("provision failed", node=node_id, size=size.name, error=str(err))
            await self.emit(
                EVENT_KIND,
                f"node {node_id} ({size.name}) could not be made: {err}",
                node=node_id,
                severity="error",
                data={"action": "provision_failed", "size": size.name, "error": str(err)},
            )
            return  # ``last_up`` is set: the up-cooldown is the retry delay
        if not made.created:
            made = made.model_copy(update={"created": now})
        self.owned[made.node] = made
        self.log.info("node asked for", node=made.node, size=size.name, reason=action.reason)
        await self.emit(
            EVENT_KIND,
            f"node {made.node} ({size.describe()}) asked for: {action.reason}",
            node=made.node,
            data={"action": "provision", "size": size.name, "price": size.price},
        )

    async def _drain(self, action: Drain) -> None:
        command = NodeCommand(node=action.node, action="drain", reason=action.reason[:500])
        try:
            reply = await self.bus.request(NODE, command, timeout=self.settings.request_timeout)
        except ShoalError as err:
            error = str(err)
        else:
            error = "" if reply.ok else "; ".join(reply.errors) or "refused"
        if error:
            self.log.error("drain refused", node=action.node, error=error)
            await self.emit(
                EVENT_KIND,
                f"node {action.node} not drained: {error}",
                node=action.node,
                severity="error",
                data={"action": "drain_failed", "error": error},
            )
            return
        self.log.info("draining", node=action.node, reason=action.reason)
        await self.emit(
            EVENT_KIND,
            f"draining node {action.node} to remove it: {action.reason}",
            node=action.node,
            data={"action": "drain"},
        )

    async def _rebalance(self, action: Rebalance) -> None:
        command = RebalanceCommand(reason=action.reason[:500])
        try:
            answer = await self.bus.request(
                REBALANCE, command, timeout=self.settings.request_timeout
            )
        except ShoalError as err:
            self.log.warning("rebalance not answered", error=str(err))
            return
        if not isinstance(answer, RebalancePlan):
            self.log.warning("rebalance refused", errors=answer.errors)
            return
        self.log.info("rebalanced", moves=len(answer.moves), reason=action.reason)
        await self.emit(
            EVENT_KIND,
            f"rebalance asked for ({action.reason}): {answer.message}",
            data={"action": "rebalance", "moves": len(answer.moves)},
        )

    async def _remove(self, action: Remove | GiveUp) -> None:
        node_id = action.node
        try:
            await self.provider.delete(node_id)
        except ProviderError as err:
            self.log.error("node not deleted", node=node_id, error=str(err))
            await self.emit(
                EVENT_KIND,
                f"node {node_id} could not be deleted: {err}",
                node=node_id,
                severity="error",
                data={"action": "remove_failed", "error": str(err)},
            )
            return
        self.owned.pop(node_id, None)
        self.seen_ready.discard(node_id)
        await self._forget_node(node_id)
        self.log.info("node removed", node=node_id, reason=action.reason)
        await self.emit(
            EVENT_KIND,
            f"node {node_id} removed: {action.reason}",
            node=node_id,
            data={"action": action.kind},
        )

    async def _forget_node(self, node_id: str) -> None:
        """A deleted node leaves the cluster: its cordon is lifted and its retained node
        records cleared (its agent, their writer, is gone), as the Kubernetes cluster
        autoscaler deletes the Node object of a machine it removed."""
        if node_id in self.cordons:
            command = NodeCommand(node=node_id, action="uncordon", reason="node removed")
            try:
                await self.bus.request(NODE, command, timeout=self.settings.request_timeout)
            except ShoalError as err:
                self.log.warning("cordon of a removed node kept", node=node_id, error=str(err))
        for channel in (NODE_REPLICAS, NODE_INFO):
            try:
                await self.bus.clear(channel, node_id)
            except ShoalError as err:
                self.log.warning("node record kept", node=node_id, error=str(err))
