"""A bus client for tests: watch retained state and send commands like any MQTT client."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from core.bus import Bus
from core.codec import Envelope
from core.config import BrokerURL
from core.topics import Topics

M = TypeVar("M", bound=BaseModel)


class Observer:
    """Caches every message under ``<prefix>/#`` and offers polling helpers."""

    def __init__(self, broker_url: str, prefix: str = "shoal") -> None:
        self.topics = Topics(prefix)
        self.bus = Bus(
            BrokerURL.parse(broker_url), self.topics, client_id=f"observer-{uuid.uuid4().hex[:8]}"
        )
        self.seen: list[tuple[float, str, Envelope | None]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Observer:
        await self.bus.subscribe(f"{self.topics.prefix}/#", self._record, cache=True)
        self._task = asyncio.create_task(self.bus.run())
        await self.bus.wait_connected(10)
        await self.bus.sync()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.bus.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def _record(self, topic: str, env: Envelope | None) -> None:
        self.seen.append((time.monotonic(), topic, env))

    def get(self, topic: str, model: type[M]) -> M | None:
        env = self.bus.cache.get(topic)
        return env.open(model) if env is not None else None

    def all(self, pattern: str, model: type[M]) -> dict[str, M]:
        return {t: e.open(model) for t, e in self.bus.cached(pattern).items()}

    async def wait_for(
        self, predicate: Callable[[], Any], timeout: float = 10.0, message: str = "condition"
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{message} not met within {timeout}s")
            await asyncio.sleep(0.05)
