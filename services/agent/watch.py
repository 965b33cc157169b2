"""The container index kept true to the Docker engine.

The engine loop connects (``info``: capacity and version), lists every container of this
agent into the index, marks the node ready, then follows the engine's event stream,
inspecting a container whenever it changes. When the engine goes away the node is
``not_ready`` with the reason, and the loop reconnects with back-off. A full list is
taken again every ``--resync`` seconds, so a lost event is repaired in bounded time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from core.backoff import Backoff
from core.errors import EngineUnavailable, RuntimeFailure
from core.spec import Resources
from services.agent.containers import Container, owner_filters, parse_container
from services.agent.engine import Engine
from services.agent.node import Node

#: Docker event actions after which a container is inspected again.
REFRESH_ON = ("create", "start", "die", "oom", "stop", "pause", "unpause", "rename")


class EngineWatch:
    def __init__(
        self, node: Node, engine: Engine, publish_info: Callable[[], Awaitable[None]]
    ) -> None:
        self.node = node
        self.engine = engine
        self.publish_info = publish_info
        self.filters = owner_filters(node.prefix, node.id)

    async def run(self) -> None:
        node, log = self.node, self.node.log
        backoff = Backoff(initial=0.2, cap=5.0)
        while True:
            try:
                self.apply_info(await self.engine.info())
                since = time.time()
                await self.resync()
                node.listed = True
                was_ready = node.engine_ready
                node.engine_ready, node.engine_reason = True, ""
                backoff.reset()
                await self.publish_info()
                node.changed()
                if not was_ready:
                    log.info("docker engine ready", version=node.engine_version)
                    node.event("node_ready", f"node {node.id} ready ({node.engine_version})")
                async for event in self.engine.events(self.filters, since - 1):
                    await self._on_event(event)
                raise EngineUnavailable("the Docker event stream ended")
            except RuntimeFailure as err:
                delay = backoff.next()
                if node.engine_ready or backoff.attempts == 1:
                    log.warning("docker engine not ready", error=str(err), retry_in=delay)
                    node.event("node_not_ready", f"node {node.id}: {err}", severity="warning")
                node.engine_ready, node.engine_reason = False, f"docker engine: {err}"
                await self.publish_info()
                await self.engine.reset()
                await asyncio.sleep(delay)

    def apply_info(self, info: dict[str, Any]) -> None:
        """Capacity (unless given by flags) and version from the engine's ``info``."""
        node, options = self.node, self.node.options
        cpus = options.cpus or float(info.get("NCPU") or node.capacity.cpu)
        memory = options.memory or int(info.get("MemTotal") or node.capacity.memory)
        node.capacity = Resources(cpu=cpus, memory=memory)
        node.engine_version = f"docker {info.get('ServerVersion', '?')}"

    async def resync(self) -> None:
        """Rebuild the container index from a full list (after connect, periodically)."""
        started = time.monotonic()
        ids = await self.engine.list_ids(self.filters)
        sem = asyncio.Semaphore(20)

        async def one(cid: str) -> Container | None:
            async with sem:
                data = await self.engine.inspect(cid)
            return parse_container(data) if data is not None else None

        found = await asyncio.gather(*(one(cid) for cid in ids))
        self.node.relist({c.id: c for c in found if c is not None}, started)

    async def resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.node.options.resync)
            if not self.node.engine_ready:
                continue
            try:
                await self.resync()
            except RuntimeFailure as err:
                self.node.log.warning("resync failed", error=str(err))

    async def refresh(self, cid: str) -> Container | None:
        """Inspect one container into the index."""
        data = await self.engine.inspect(cid)
        container = parse_container(data) if data is not None else None
        self.node.put(cid, container)
        return container

    async def _on_event(self, event: dict[str, Any]) -> None:
        action = str(event.get("Action") or event.get("status") or "")
        cid = str(event.get("id") or (event.get("Actor") or {}).get("ID") or "")
        if not cid or action.startswith(("exec_", "health_status")):
            return
        if action == "destroy":
            self.node.put(cid, None)
        elif action in REFRESH_ON:
            try:
                await self.refresh(cid)
            except EngineUnavailable:
                raise
            except RuntimeFailure as err:  # one bad inspect is not an engine outage
                self.node.log.warning(
                    "inspect after event failed", container=cid[:12], error=str(err)
                )
                self.node.look()
