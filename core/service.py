"""The service base: bus connection, presence with last will, clean shutdown.

A service subclasses ``Service``, sets ``name``, subscribes in ``setup`` and runs its
long-lived loops in ``main``. ``run_service`` runs one in the foreground until SIGINT or
SIGTERM, then says goodbye on the bus (presence ``offline``) and disconnects cleanly.
A crash or ``kill -9`` instead lets the broker publish the last will: presence offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from typing import Any, ClassVar, Literal

from core import __version__, codec
from core.bus import LastWill, connect_bus
from core.channels import EVENTS, PRESENCE
from core.config import ServiceConfig
from core.errors import MessageTooLarge
from core.keys import ServiceKey
from core.leadership import Callback, Leadership
from core.logs import get_logger, setup_logging
from core.metrics import MetricsServer, ServiceMetrics
from core.state import Event, Presence
from core.topics import Topics


class Service:
    name: ClassVar[str] = "service"

    def __init__(self, config: ServiceConfig) -> None:
        self._metrics_server: MetricsServer | None = None
        self._leadership: Leadership | None = None
        self.config = config
        self.topics = Topics(config.prefix)
        self.instance = config.instance
        self.started = time.time()
        self.log = get_logger(f"shoal.{self.name}").bind(instance=self.instance)
        self.bus = connect_bus(
            config.broker,
            self.topics,
            client_id=f"{self.name}-{self.instance}",
            src=f"{self.name}/{self.instance}",
            will=self.last_will(),
        )
        self.bus.on_connect(self.announce)
        self._stop = asyncio.Event()
        self.metrics = ServiceMetrics(self.name, self.bus, self.is_leader)

    # -- overridable -----------------------------------------------------------------

    def last_will(self) -> LastWill:
        return LastWill(
            self.presence_topic,
            codec.encode(
                codec.make(
                    PRESENCE.kind, self.presence("offline"), src=f"{self.name}/{self.instance}"
                )
            ),
        )

    async def setup(self) -> None:
        """Subscribe to topics; called once before ``main``."""

    async def main(self) -> None:
        """The service's long-running work; by default, wait for shutdown."""
        await asyncio.Event().wait()

    async def on_shutdown(self) -> None:
        """Called once on a clean stop while the bus is still connected."""

    # -- presence --------------------------------------------------------------------

    @property
    def presence_topic(self) -> str:
        return PRESENCE.topic(self.topics.prefix, ServiceKey(self.name, self.instance))

    def presence(self, status: Literal["online", "offline"] = "online") -> Presence:
        return Presence(
            service=self.name,
            instance=self.instance,
            status=status,
            version=__version__,
            host=socket.gethostname(),
            pid=os.getpid(),
            started=self.started,
            leader=self.is_leader() if status == "online" else False,
            metrics=self._metrics_server.address if self._metrics_server else None,
        )

    def is_leader(self) -> bool:
        return self._leadership is not None and self._leadership.leading

    def elect_leader(
        self,
        *,
        on_elected: Callback | None = None,
        on_deposed: Callback | None = None,
    ) -> Leadership:
        """Take part in electing one leader among this service's instances (a scheduler, a
        scaler): ``is_leader`` and the presence's ``leader`` flag then follow the result."""
        self._leadership = Leadership(
            self.bus,
            self.name,
            self.instance,
            self.started,
            announce=self.announce,
            on_elected=on_elected,
            on_deposed=on_deposed,
        )
        return self._leadership

    async def announce(self) -> None:
        await self.bus.publish(PRESENCE, self.presence())

    async def emit(self, kind: str, message: str, **fields: Any) -> None:
        """Publish a human-readable event (best effort: never fails the caller)."""
        event = Event(kind=kind, message=message, **fields)
        try:
            await self.bus.publish(EVENTS, event, timeout=2)
        except MessageTooLarge as err:  # a bug to fix (events are for people: keep them short)
            self.log.warning("event too large; not published", kind=kind, error=str(err))
        except Exception as err:
            self.log.debug("event not published", kind=kind, error=str(err))

    # -- running ---------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        self.log.info(
            "starting", service=self.name, broker=str(self.config.broker), prefix=self.config.prefix
        )
        await self._serve_metrics()
        bus_task = asyncio.create_task(self.bus.run(), name=f"{self.name}-bus")
        try:
            await self.setup()
            main_task: asyncio.Task[Any] = asyncio.create_task(
                self.main(), name=f"{self.name}-main"
            )
            stop_task: asyncio.Task[Any] = asyncio.create_task(
                self._stop.wait(), name=f"{self.name}-stop"
            )
            done, _ = await asyncio.wait(
                {main_task, stop_task, bus_task}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in (main_task, stop_task):
                task.cancel()
            for task in (main_task, stop_task):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for task in done:
                error = None if task is stop_task or task.cancelled() else task.exception()
                if error is not None:
                    raise error
            await self._goodbye()
        finally:
            self.bus.close()
            bus_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await bus_task
            if self._metrics_server is not None:
                await self._metrics_server.stop()
            self.log.info("stopped", service=self.name)

    async def _serve_metrics(self) -> None:
        """Listen for ``/metrics`` where configured; a busy port is logged, not fatal."""
        if self.config.metrics is None:
            return
        host, port = self.config.metrics
        server = MetricsServer(self.metrics, host, port)
        try:
            address = await server.start()
        except OSError as err:
            self.log.error("metrics cannot listen", listen=f"{host}:{port}", error=str(err))
            return
        self._metrics_server = server
        self.log.info("metrics", url=f"http://{address}/metrics")

    async def _goodbye(self) -> None:
        try:
            async with asyncio.timeout(10):
                await self.on_shutdown()
        except Exception:
            self.log.exception("shutdown hook failed")
        if self.bus.connected:
            with contextlib.suppress(Exception):
                await self.bus.publish(PRESENCE, self.presence("offline"), timeout=2)


def install_event_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_service(service_factory: Any, config: ServiceConfig) -> None:
    """Run one service in the foreground until SIGINT/SIGTERM."""
    setup_logging(config.log_level, config.log_format, service=service_factory.name)
    install_event_loop_policy()

    async def main() -> None:
        service = service_factory(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, service.stop)
        await service.run()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
