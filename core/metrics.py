"""``/metrics`` for every service, in the Prometheus text format.

Each service owns a ``ServiceMetrics``: a registry with the process collector (CPU, memory,
file descriptors), ``shoal_build_info``, the bus's counters (messages and bytes in and out,
messages dropped, failed publishes, reconnects, connection state, leadership) and the
commands it answered (``shoal_commands_total{command,result}`` and a
``shoal_command_duration_seconds`` histogram). A service adds its own collectors with
``register``: collectors read the service's state when scraped, so the hot paths only bump
plain integers (as the balancer's ``Stats`` do).

``MetricsServer`` serves the registry over HTTP on the event loop (aiohttp), on the address
the service was given (``--metrics HOST:PORT``; port 0 picks a free one). The bound address
goes into the service's presence, which is how Prometheus finds it: the dashboard's
``/sd/prometheus`` lists every live instance's address.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from core import __version__
from core.durations import Durations
from core.runner import RUNNERS, Reconciler

if TYPE_CHECKING:
    from core.bus import Bus


def histogram(
    name: str, documentation: str, labels: list[str], series: dict[tuple[str, ...], Durations]
) -> HistogramMetricFamily:
    """One Prometheus histogram family from ``Durations`` by label values."""
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for values, durations in series.items():
        family.add_metric(list(values), durations.cumulative(), durations.total)
    return family


class BusCollector(Collector):
    """The bus's counters and the service's identity, read at scrape time."""

    def __init__(self, service: str, bus: Bus, leading: Callable[[], bool]) -> None:
        self.service = service
        self.bus = bus
        self.leading = leading

    def collect(self) -> Iterator[Metric]:
        c = self.bus.counters
        info = GaugeMetricFamily(
            "shoal_build_info",
            "Shoal's version and the Python it runs on (always 1)",
            labels=["service", "version", "python"],
        )
        info.add_metric([self.service, __version__, platform.python_version()], 1)
        yield info
        for name, doc, value in (
            ("shoal_bus_messages_received", "Messages received from the broker", c.received),
            (
                "shoal_bus_received_bytes",
                "Payload bytes received from the broker",
                c.received_bytes,
            ),
            ("shoal_bus_messages_published", "Messages published to the broker", c.published),
            ("shoal_bus_published_bytes", "Payload bytes published", c.published_bytes),
            ("shoal_bus_messages_dropped", "Messages dropped: malformed or unhandled", c.dropped),
            (
                "shoal_bus_publish_failures",
                "Publishes that failed or timed out",
                c.publish_failures,
            ),
            (
                "shoal_bus_paged_values",
                "Values larger than a broker message, sent in pages",
                c.paged,
            ),
            ("shoal_bus_pages_published", "Pages of paged values published", c.pages),
            ("shoal_bus_connects", "Sessions started with the broker", self.bus.connects),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily(
            "shoal_bus_connected", "1 while connected to the broker", value=int(self.bus.connected)
        )
        yield GaugeMetricFamily(
            "shoal_leader", "1 while this instance leads its service", value=int(self.leading())
        )
        answered = CounterMetricFamily(
            "shoal_commands", "Commands answered, by result", labels=["command", "result"]
        )
        for (command, result), n in sorted(c.answered.items()):
            answered.add_metric([command, result], n)
        yield answered
        yield histogram(
            "shoal_command_duration_seconds",
            "Time from a command's arrival to its answer",
            ["command"],
            {(command,): d for command, d in c.answer_seconds.items()},
        )


class RunnerCollector(Collector):
    """Every reconcile runner of the process (``core.runner``), summed by runner name."""

    def collect(self) -> Iterator[Metric]:
        runs = CounterMetricFamily("shoal_reconciles", "Reconciles run", labels=["runner"])
        failures = CounterMetricFamily(
            "shoal_reconcile_failures",
            "Reconciles that raised (retried or dropped)",
            labels=["runner"],
        )
        queued = GaugeMetricFamily(
            "shoal_reconcile_queue", "Keys waiting to be reconciled", labels=["runner"]
        )
        by_name: dict[str, list[Reconciler[Any]]] = {}
        for runner in list(RUNNERS):
            by_name.setdefault(runner.name, []).append(runner)
        durations: dict[tuple[str, ...], Durations] = {}
        for name, runners in sorted(by_name.items()):
            runs.add_metric([name], sum(r.runs for r in runners))
            failures.add_metric([name], sum(r.failures for r in runners))
            queued.add_metric([name], sum(r.queued for r in runners))
            durations[name,] = sum((r.durations for r in runners), Durations())
        yield from (runs, failures, queued)
        yield histogram(
            "shoal_reconcile_duration_seconds", "Time one reconcile took", ["runner"], durations
        )


class ServiceMetrics:
    def __init__(self, service: str, bus: Bus, leading: Callable[[], bool]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        self.register(BusCollector(service, bus, leading))
        self.register(RunnerCollector())

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """``GET /metrics`` on the service's own event loop."""

    def __init__(self, metrics: ServiceMetrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self.address: str | None = None  # "host:port" once listening
        self._runner: web.AppRunner | None = None

    async def _serve(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/metrics", self._serve)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        await site.start()
        self._runner = runner
        port = runner.addresses[0][1] if runner.addresses else self.port
        self.address = f"{self.host}:{port}"
        return self.address

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def parse_listen(value: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (port 0: any free one), or ``off``/empty for none."""
    value = value.strip()
    if value in ("", "off", "none"):
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT or 'off', got {value!r}")
    return (host.strip("[]") or "127.0.0.1", int(port))


__all__ = [
    "BusCollector",
    "MetricsServer",
    "RunnerCollector",
    "ServiceMetrics",
    "histogram",
    "parse_listen",
]
