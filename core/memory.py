"""An in-process broker with MQTT's semantics, for unit tests of service shells.

``MemoryBroker`` keeps retained values, matches wildcards, sends a new subscription the
retained values it matches, publishes a client's last will when it "crashes"
(``crash(client_id)``) and not when it closes cleanly, and can go down and come back
(``stop()``/``start()``) so reconnects are exercised. ``MemoryBus`` is a ``core.bus.Bus``
on it: services run on it unchanged, given ``ServiceConfig(broker=MemoryBroker())``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from core.bus import Bus
from core.errors import BusError
from core.topics import Topics, matches


class MemoryBroker:
    def __init__(self) -> None:
        self.retained: dict[str, bytes] = {}
        self.up = True
        self._clients: dict[str, MemoryBus] = {}
        self._subs: dict[str, list[str]] = {}
        self.published = 0

    def __str__(self) -> str:
        return "memory://"

    def bus(self, topics: Topics, **kwargs: Any) -> MemoryBus:
        return MemoryBus(self, topics, **kwargs)

    @property
    def clients(self) -> list[str]:
        return sorted(self._clients)

    # -- the broker's side of a session ---------------------------------------------------

    def connect(self, bus: MemoryBus) -> None:
        if not self.up:
            raise ConnectionError("the memory broker is down")
        old = self._clients.get(bus.client_id)
        if old is not None and old is not bus:
            old.lose("session taken over")
        self._clients[bus.client_id] = bus
        self._subs[bus.client_id] = []

    def disconnect(self, bus: MemoryBus, *, clean: bool) -> None:
        if self._clients.get(bus.client_id) is not bus:
            return
        del self._clients[bus.client_id]
        self._subs.pop(bus.client_id, None)
        if not clean and bus.will is not None:
            self.publish(bus.will.topic, bus.will.payload, retain=bus.will.retain)

    def subscribe(self, bus: MemoryBus, pattern: str) -> None:
        if self._clients.get(bus.client_id) is not bus:
            raise BusError("not connected")
        self._subs[bus.client_id].append(pattern)
        for topic, payload in list(self.retained.items()):
            if matches(pattern, topic):
                bus.deliver(topic, payload)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.published += 1
        if retain:
            if payload:
                self.retained[topic] = payload
            else:
                self.retained.pop(topic, None)
        for client_id, bus in list(self._clients.items()):
            if any(matches(p, topic) for p in self._subs.get(client_id, ())):
                bus.deliver(topic, payload)

    # -- faults ------------------------------------------------------------------------------

    def crash(self, client_id: str) -> None:
        """The client's connection dies uncleanly (``kill -9``): its last will is published."""
        bus = self._clients.get(client_id)
        if bus is not None:
            self.disconnect(bus, clean=False)
            bus.lose("connection lost")

    def stop(self) -> None:
        """The broker goes away: every client loses its connection (no wills: no broker)."""
        self.up = False
        for bus in list(self._clients.values()):
            self._clients.pop(bus.client_id, None)
            bus.lose("broker stopped")
        self._subs.clear()

    def start(self) -> None:
        self.up = True


class MemoryBus(Bus):
    def __init__(self, broker: MemoryBroker, topics: Topics, **kwargs: Any) -> None:
        super().__init__(topics, **kwargs)
        self.broker = broker
        self._lost: asyncio.Event | None = None
        self._lost_reason = ""

    def describe(self) -> str:
        return str(self.broker)

    def deliver(self, topic: str, payload: bytes) -> None:
        self._receive(topic, payload)

    def lose(self, reason: str) -> None:
        self._lost_reason = reason
        if self._lost is not None:
            self._lost.set()

    async def _session(self) -> None:
        await asyncio.sleep(0)  # connecting takes a turn of the loop, as on a socket
        self.broker.connect(self)
        self._lost = asyncio.Event()
        clean = True
        try:
            for pattern, _qos in self.patterns():
                self.broker.subscribe(self, pattern)
            self._on_session_start()
            await self._lost.wait()
            clean = False
            raise ConnectionError(self._lost_reason)
        finally:
            self._on_session_end()
            self.broker.disconnect(self, clean=clean)
            self._lost = None

    async def _send(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> None:
        if not self.connected:
            raise BusError(f"publish to {topic} failed: not connected")
        self.broker.publish(topic, payload, retain=retain)

    async def _subscribe_now(self, pattern: str, qos: int) -> None:
        if self.connected:
            self.broker.subscribe(self, pattern)
