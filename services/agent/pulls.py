"""Image pulls: one pull per image however many replicas wait for it.

An image is pulled only when the engine answers "no such image" to a create, with the
credentials configured for its registry. Progress is published as ``image_pull`` events
(start, layers done about every second, done); a refusal raises ``PullFailed`` with the
registry's reason, after an ``image_pull_failed`` event.
"""

from __future__ import annotations

import asyncio
import time

from core.errors import RuntimeFailure
from services.agent.engine import Engine, EngineError
from services.agent.node import Node
from services.agent.registry import credential_for, pull_reference

LAYER_DONE = ("Pull complete", "Already exists")


class PullFailed(RuntimeFailure):
    """The registry refused or failed a pull; the message is its reason."""


class Pulls:
    def __init__(self, node: Node, engine: Engine) -> None:
        self.node = node
        self.engine = engine
        self._running: dict[str, asyncio.Task[None]] = {}

    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._running.values())

    async def ensure(self, image: str) -> None:
        """Pull ``image``, sharing one pull among every replica that needs it now."""
        task = self._running.get(image)
        if task is None:
            task = asyncio.create_task(self._pull(image), name=f"agent-pull-{image}")
            self._running[image] = task
            task.add_done_callback(lambda _: self._running.pop(image, None))
        await asyncio.shield(task)

    async def _pull(self, image: str) -> None:
        node = self.node
        registry, credential = credential_for(image, node.options.registry_auth)
        reference = pull_reference(image)
        auth = credential.header(registry) if credential is not None else None
        node.log.info("pulling image", image=reference, registry=registry, auth=bool(auth))
        node.event(
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
                    done = sum(1 for s in layers.values() if s in LAYER_DONE)
                    node.event(
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
            node.event(
                "image_pull_failed",
                reason,
                severity="error",
                data={"image": reference, "registry": registry},
            )
            raise PullFailed(reason) from err
        node.log.info("image pulled", image=reference, s=round(time.monotonic() - started, 2))
        node.event(
            "image_pull",
            f"pulled {reference}",
            data={"image": reference, "status": "done", "layers": len(layers)},
        )
