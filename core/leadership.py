"""Leadership among the instances of one service, on the bus (the rule: ``core.election``).

A ``Leadership`` follows the retained presence of its service's instances and re-runs the
election whenever one changes. Winning calls ``on_elected`` (the new leader loads what it
needs to write; if that raises, the claim is dropped and retried a second later), losing
calls ``on_deposed``; either way the instance then re-announces its presence, so the others
see the claim. A claim holds for the connection it was made on: after a reconnect the
broker has published this instance's last will meanwhile, so the claim is given up and
must be won again once the retained state is back (``Bus.sync``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable

from core.bus import Bus
from core.channels import PRESENCE
from core.election import Candidate, candidates, choose_leader
from core.errors import ShoalError
from core.keys import ServiceKey
from core.logs import get_logger
from core.state import Presence
from core.view import View

Callback = Callable[[], Awaitable[None] | None]

log = get_logger("shoal.leadership")


async def _call(callback: Callback | None) -> None:
    if callback is None:
        return
    result = callback()
    if inspect.isawaitable(result):
        await result


class Leadership:
    def __init__(
        self,
        bus: Bus,
        service: str,
        instance: str,
        started: float,
        *,
        announce: Callback,
        on_elected: Callback | None = None,
        on_deposed: Callback | None = None,
    ) -> None:
        self.bus = bus
        self.service = service
        self.instance = instance
        self.started = started
        self._announce = announce
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self._claimed = False
        self._epoch = 0
        self._wake = asyncio.Event()
        self.peers: View[ServiceKey, Presence] | None = None
        self.leader: str | None = None

    @property
    def leading(self) -> bool:
        return self._claimed and self._epoch == self.bus.connects

    async def setup(self) -> None:
        """Subscribe to the service's presence (call in ``Service.setup``)."""
        self.peers = await self.bus.view(
            PRESENCE, service=self.service, on_change=lambda key, value: self._wake.set()
        )
        self.bus.on_connect(self._reconnected)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Elect until cancelled (start once the retained state is loaded)."""
        self._wake.set()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.bus.connected:
                await self._elect()

    async def _elect(self) -> None:
        others = [p for p in (self.peers or {}).values() if p.instance != self.instance]
        pool = [Candidate(self.started, self.instance, self._claimed)]
        pool.extend(candidates(others, self.service))
        self.leader = choose_leader(pool)
        if self.leader == self.instance and not self.leading:
            self._claimed, self._epoch = True, self.bus.connects
            try:
                await _call(self._on_elected)
            except Exception:
                log.exception("taking over failed; retrying", service=self.service)
                await self._step_down()
                await asyncio.sleep(1)
                self._wake.set()
                return
            log.info("leading", service=self.service, instance=self.instance)
        elif self.leader != self.instance and self._claimed:
            log.warning("standing by", service=self.service, leader=self.leader)
            await self._step_down()
        else:
            return
        await self._say()

    async def resign(self) -> None:
        """Give up the claim now (the leader learnt it was deposed, e.g. fenced by its
        store), say so, and run the election again."""
        if self._claimed:
            log.warning("resigning", service=self.service, instance=self.instance)
            await self._step_down()
            await self._say()
        self._wake.set()

    async def _step_down(self) -> None:
        self._claimed = False
        await _call(self._on_deposed)

    async def _say(self) -> None:
        try:
            await _call(self._announce)
        except ShoalError as err:
            log.warning("presence not published", service=self.service, error=str(err))

    async def _reconnected(self) -> None:
        if self.bus.connects <= 1:
            return
        if self._claimed:
            log.warning("connection was lost: leadership given up until re-elected")
            await self._step_down()
            await self._say()
        with contextlib.suppress(ShoalError):
            await self.bus.sync(timeout=30)
        self._wake.set()
