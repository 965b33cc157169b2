"""A bus client for tests: watch retained state and send commands like any MQTT client."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from core import codec, paging
from core.bus import Bus, connect_bus
from core.channels import Channel
from core.codec import Envelope
from core.config import BrokerURL
from core.memory import MemoryBroker
from core.topics import Topics, matches

K = TypeVar("K")
M = TypeVar("M", bound=BaseModel)


class Observer:
    """Caches every message under ``<prefix>/#`` and offers polling helpers."""

    def __init__(self, broker_url: str | MemoryBroker, prefix: str = "shoal") -> None:
        self.topics = Topics(prefix)
        self.prefix = prefix
        broker = BrokerURL.parse(broker_url) if isinstance(broker_url, str) else broker_url
        self.bus: Bus = connect_bus(
            broker, self.topics, client_id=f"observer-{uuid.uuid4().hex[:8]}"
        )
        self.cache: dict[str, Envelope] = {}
        self.seen: list[tuple[float, str, Envelope | None]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Observer:
        await self.bus.watch(self.topics.everything, self._record)
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
        if env is None:
            self.cache.pop(topic, None)
        else:
            self.cache[topic] = env

    # -- typed reads (through the contract) -----------------------------------------------

    def topic(self, channel: Channel[Any, K], key: K) -> str:
        return channel.topic(self.prefix, key)

    def value(self, channel: Channel[M, K], key: K) -> M | None:
        """The latest value of one key of ``channel``, or None (also while the pages of a
        paged value are not all in)."""
        topic = channel.topic(self.prefix, key)
        env = self._whole(topic, self.cache.get(topic))
        return env.open(channel.model, lenient=True) if env is not None else None

    def values(self, channel: Channel[M, K], **fixed: str) -> dict[K, M]:
        """Every cached value of ``channel`` (optionally with some levels fixed), by key;
        paged values assembled from their pages."""
        pattern = channel.pattern(self.prefix, **fixed)
        out: dict[K, M] = {}
        for topic, env in self.cache.items():
            if matches(pattern, topic):
                whole = self._whole(topic, env)
                if whole is not None:
                    out[channel.parse(self.prefix, topic)] = whole.open(channel.model, lenient=True)
        return out

    def _whole(self, topic: str, env: Envelope | None) -> Envelope | None:
        """``env``, or the value its pages make when it is a paged value's head (None while
        a page is missing)."""
        if env is None or env.kind != paging.HEAD_KIND:
            return env
        head = env.open(paging.PageHead, lenient=True)
        pages = paging.Assembler()
        payload = pages.head(topic, head)
        for index in range(head.pages):
            page = self.cache.get(paging.page_topic(topic, index))
            if page is None:
                return None
            payload = pages.page(topic, index, page.open(paging.Page)) or payload
        if payload is None:
            return None
        return codec.decode(payload, allow_json=False, limit=paging.MAX_ASSEMBLED)

    # -- raw reads ------------------------------------------------------------------------

    def get(self, topic: str, model: type[M]) -> M | None:
        env = self.cache.get(topic)
        return env.open(model, lenient=True) if env is not None else None

    def all(self, pattern: str, model: type[M]) -> dict[str, M]:
        return {
            t: e.open(model, lenient=True) for t, e in self.cache.items() if matches(pattern, t)
        }

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
