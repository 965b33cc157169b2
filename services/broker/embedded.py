"""Run amqtt as Shoal's embedded broker: retained messages, last wills, QoS 0/1."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from core.logs import get_logger, setup_logging

log = get_logger("shoal.broker")


class _Snapshots(dict[str, Any]):
    """amqtt's table of subscriptions, iterated over a copy.

    amqtt 0.12 walks the whole table with an ``await`` inside the loop when a client
    connects (retained messages for a pre-existing session); a subscription from any other
    client in that window raised "dictionary changed size during iteration" and killed the
    connecting client's session (seen with ``shoal up`` starting eight clients at once).
    """

    def __iter__(self) -> Any:
        return iter(list(super().keys()))

    def items(self) -> Any:
        return list(super().items())


def broker_config(host: str, port: int, *, allow_anonymous: bool = True) -> dict[str, Any]:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "timeout_disconnect_delay": 0,
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {
                "allow_anonymous": allow_anonymous
            },
        },
    }


async def serve(host: str, port: int, stop: asyncio.Event | None = None) -> None:
    from amqtt.broker import Broker

    # amqtt logs every packet at INFO; keep it to warnings.
    logging.getLogger("amqtt").setLevel(logging.WARNING)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    broker = Broker(broker_config(host, port))
    if isinstance(getattr(broker, "_subscriptions", None), dict):
        broker._subscriptions = _Snapshots(broker._subscriptions)
    await broker.start()
    log.info("embedded broker listening", address=f"{host}:{port}")
    try:
        await (stop.wait() if stop else asyncio.Event().wait())
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await broker.shutdown()
        log.info("embedded broker stopped")


def run(host: str, port: int, log_level: str = "info", log_format: str = "console") -> None:
    setup_logging(log_level, log_format, service="broker")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(host, port, stop)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
