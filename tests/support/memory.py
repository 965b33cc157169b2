"""Buses and services on the in-memory broker, for unit tests of service shells."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from core.bus import Bus
from core.memory import MemoryBroker
from core.service import Service
from core.topics import Topics

S = TypeVar("S", bound=Service)


@asynccontextmanager
async def connected(
    broker: MemoryBroker, prefix: str, client_id: str = "test", **kwargs: Any
) -> AsyncIterator[Bus]:
    """A running bus on ``broker`` (a test's own client: it plays the other services)."""
    bus = broker.bus(Topics(prefix), client_id=client_id, **kwargs)
    task = asyncio.create_task(bus.run(), name=f"bus-{client_id}")
    try:
        await bus.wait_connected(5)
        yield bus
    finally:
        bus.close()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        if not done:
            raise AssertionError(f"bus {client_id} did not stop within 5s of cancel()")


@asynccontextmanager
async def serving(service: S, timeout: float = 5.0) -> AsyncIterator[S]:
    """Run ``service`` until the block ends, then stop it cleanly (and re-raise its crash)."""
    task = asyncio.create_task(service.run(), name=f"service-{service.name}")
    try:
        yield service
    finally:
        service.stop()
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
            raise AssertionError(f"{service.name} did not stop within {timeout}s of stop()")
        task.result()
