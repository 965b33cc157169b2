"""Leadership on the in-memory bus: one leader, take-over on a crash, the claim per connection."""

from __future__ import annotations

import asyncio

from core import codec
from core.bus import Bus, LastWill
from core.channels import PRESENCE
from core.keys import ServiceKey
from core.leadership import Leadership
from core.memory import MemoryBroker
from core.state import Presence
from core.topics import Topics
from tests.support.waiting import eventually


class Instance:
    """What a service does with a Leadership: announce its presence and claim."""

    def __init__(self, broker: MemoryBroker, name: str, started: float) -> None:
        self.name = name
        self.started = started
        self.tasks: list[asyncio.Task[None]] = []
        will = codec.make("presence", self.presence(status="offline"))
        self.bus: Bus = broker.bus(
            Topics("t"),
            client_id=name,
            will=LastWill(PRESENCE.topic("t", ServiceKey("scaler", name)), codec.encode(will)),
        )
        self.events: list[str] = []
        self.leadership = Leadership(
            self.bus,
            "scaler",
            name,
            started,
            announce=self.announce,
            on_elected=lambda: self.events.append("elected"),
            on_deposed=lambda: self.events.append("deposed"),
        )
        self.bus.on_connect(self.announce)

    def presence(self, status: str = "online") -> Presence:
        leading = status == "online" and bool(self.tasks) and self.leadership.leading
        return Presence(
            service="scaler",
            instance=self.name,
            started=self.started,
            status=status,  # type: ignore[arg-type]
            leader=leading,
        )

    async def announce(self) -> None:
        await self.bus.publish(PRESENCE, self.presence())

    async def start(self) -> None:
        await self.leadership.setup()
        self.tasks.append(asyncio.create_task(self.bus.run()))
        await self.bus.wait_connected(5)
        await self.bus.sync()
        self.tasks.append(asyncio.create_task(self.leadership.run()))

    async def stop(self) -> None:
        self.bus.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_the_oldest_leads_and_the_other_takes_over_when_it_crashes() -> None:
    broker = MemoryBroker()
    old, young = Instance(broker, "s-old", 1.0), Instance(broker, "s-young", 2.0)
    try:
        await old.start()
        await eventually(lambda: old.leadership.leading)
        await young.start()
        await eventually(lambda: young.leadership.leader == "s-old")
        assert not young.leadership.leading
        broker.crash("s-old")  # its last will says offline
        await eventually(lambda: young.leadership.leading)
        assert young.events == ["elected"]
        # the crashed one reconnects: its claim was for the old connection, and it stands by
        await eventually(lambda: old.bus.connected)
        await eventually(lambda: old.leadership.leader == "s-young")
        assert not old.leadership.leading
        assert old.events == ["elected", "deposed"]
    finally:
        await old.stop()
        await young.stop()
