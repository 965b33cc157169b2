"""Health's HTTP probe: CPU per probe and probes/s, the lean probe against aiohttp's client.

    python -m tests.benchmarks.bench_probes [--probes 5000] [--concurrency 50] [--rounds 3]

A local HTTP server (its own process, so its CPU is not counted) answers ``200`` the way
the fleet benchmark's simulated nodes do. The prober process runs ``--probes`` probes,
``--concurrency`` at a time, each a fresh connection, first with the reference (aiohttp
``ClientSession``, ``force_close``: health's probe before, kept here as the reference) and
then with ``services.health.checks.Checker`` (``http_probe``), alternating for ``--rounds``,
on uvloop (as the services run; ``--loop asyncio`` for the stdlib loop).
Printed per contender: probes/s and CPU µs per probe (the prober's own process time,
``time.process_time``), best of the rounds; nothing is asserted.

Then the same two inside the health service (``--service-apps`` apps of 20 replicas on the
in-memory bus, every replica's readiness probed each second, all against the local
server, 1 s timeout): probes/s the service achieves, its whole process's CPU µs per probe
(bus, reconcile and probe loops included) over 15 s after 5 s of warm-up, and how many
replicas are ready at the end. A health instance that cannot keep up shows as fewer
probes/s than replicas, and as replicas never ready (their probes time out on its own loop).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from core.channels import APPS, HEALTH, NODE_INFO, NODE_REPLICAS  # noqa: E402
from core.config import ServiceConfig  # noqa: E402
from core.memory import MemoryBroker  # noqa: E402
from core.service import install_event_loop_policy  # noqa: E402
from core.spec import AppSpec, Resources  # noqa: E402
from core.state import AppState, AppVersion, NodeInfo, NodeReplicas, ReplicaStatus  # noqa: E402
from services.health.checks import Checker  # noqa: E402
from services.health.logic import http_success  # noqa: E402
from services.health.service import HealthService  # noqa: E402
from tests.support.memory import connected, serving  # noqa: E402

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"

Probe = Callable[[], Awaitable[tuple[bool, str]]]


async def _serve(ready: Connection) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, backlog=1024)
    ready.send(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def serve(ready: Connection) -> None:
    asyncio.run(_serve(ready))


class AiohttpReference:
    """Health's probe before this benchmark: aiohttp, a fresh connection per probe."""

    def __init__(self, user_agent: str) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True),
            headers={"User-Agent": user_agent},
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
        )

    async def http(self, endpoint: str, path: str, timeout: float) -> tuple[bool, str]:
        try:
            async with self.session.get(
                f"http://{endpoint}{path}",
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                await resp.read()
                if http_success(resp.status):
                    return True, ""
                return False, f"HTTP {resp.status} from GET {path}"
        except TimeoutError:
            return False, f"GET {path}: no answer within {timeout:g}s"
        except aiohttp.ClientError as err:
            return False, f"GET {path}: {type(err).__name__}: {err}"

    async def close(self) -> None:
        await self.session.close()


class ReferenceChecker(Checker):
    """Health's checker with the aiohttp probe it had before."""

    async def __aenter__(self) -> ReferenceChecker:
        self.reference = AiohttpReference(self.user_agent)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.reference.close()

    async def http(self, endpoint: str, path: str, timeout: float) -> tuple[bool, str]:
        return await self.reference.http(endpoint, path, timeout)


def fleet_of(apps: int, endpoint: str) -> tuple[list[AppState], NodeReplicas]:
    states, replicas = [], []
    for a in range(apps):
        spec = AppSpec.model_validate(
            {
                "name": f"app{a}",
                "image": "sim/app:1",
                "ports": {"http": 8080},
                "route": {"port": "http"},
                "health": {"readiness": {"http": "/healthz", "port": "http", "interval": "1s"}},
            }
        )
        versions = [AppVersion(revision=1, spec=spec, replicas=20)]
        states.append(
            AppState(
                namespace="default",
                name=f"app{a}",
                revision=1,
                generation=1,
                spec=spec,
                replicas=20,
                versions=versions,
            )
        )
        replicas += [
            ReplicaStatus(
                id=f"default.app{a}.{r:08x}",
                namespace="default",
                app=f"app{a}",
                revision=1,
                node="n1",
                phase="running",
                endpoints={"http": endpoint},
                started_at=1.0,
            )
            for r in range(20)
        ]
    return states, NodeReplicas(node="n1", replicas=replicas)


async def in_service(endpoint: str, apps: int, reference: bool) -> tuple[float, float, int]:
    """(probes/s, the health process's CPU µs per probe, replicas ready at the end) with
    ``apps`` apps of 20, measured over 15 s after 5 s of warm-up."""
    broker = MemoryBroker()
    service = HealthService(ServiceConfig(broker=broker, prefix="bench", instance="h1"))
    if reference:
        service.checker = ReferenceChecker(service.checker.user_agent)
    states, report = fleet_of(apps, endpoint)
    async with serving(service, timeout=30), connected(broker, "bench") as bus:
        health = await bus.view(HEALTH)
        address = endpoint.rpartition(":")[0]
        await bus.publish(NODE_INFO, NodeInfo(node="n1", address=address, capacity=Resources()))
        for state in states:
            await bus.publish(APPS, state)
        await bus.publish(NODE_REPLICAS, report)
        await asyncio.sleep(5)  # every probe task started, the first results in
        probes0 = sum(service.prom.probes.values())
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(15)
        probes = sum(service.prom.probes.values()) - probes0
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        ready = sum(len(h.ready) for h in health.values())
    return probes / wall, cpu / max(1, probes) * 1e6, ready


async def run(probe: Probe, probes: int, concurrency: int) -> tuple[float, float, int]:
    """Run ``probes`` probes ``concurrency`` at a time: (probes/s, CPU µs/probe, failures)."""
    left = probes
    failures = 0

    async def worker() -> None:
        nonlocal left, failures
        while left > 0:
            left -= 1
            ok, _ = await probe()
            failures += not ok

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return probes / wall, cpu / probes * 1e6, failures


async def bench(port: int, probes: int, concurrency: int, rounds: int, service_apps: int) -> None:
    endpoint = f"127.0.0.1:{port}"
    reference = AiohttpReference("shoal-health/bench")
    checker = Checker("shoal-health/bench")
    contenders: dict[str, Probe] = {
        "aiohttp ClientSession (before)": lambda: reference.http(endpoint, "/healthz", 5.0),
        "http_probe (asyncio Protocol + httptools)": lambda: checker.http(
            endpoint, "/healthz", 5.0
        ),
    }
    best: dict[str, tuple[float, float, int]] = {}
    for probe in contenders.values():  # warm up both (imports, first connects)
        await run(probe, 200, concurrency)
    for _ in range(rounds):
        for name, probe in contenders.items():
            figures = await run(probe, probes, concurrency)
            if name not in best or figures[1] < best[name][1]:
                best[name] = figures
    await reference.close()
    print(f"{probes} probes per round, {concurrency} at a time, best of {rounds} rounds")
    print(f"{'probe':<44} {'probes/s':>9} {'CPU µs/probe':>13} {'failed':>7}")
    for name, (rate, cpu_us, failures) in best.items():
        print(f"{name:<44} {rate:>9.0f} {cpu_us:>13.0f} {failures:>7}")
    before, after = (best[name][1] for name in contenders)
    print(f"CPU per probe: {after / before:.2f} of before ({before / after:.1f}x fewer)")
    if not service_apps:
        return
    replicas = service_apps * 20
    print(f"\nin the health service: {replicas:,} replicas, each probed every second")
    print(f"{'checker':<44} {'probes/s':>9} {'CPU µs/probe':>13} {'ready at the end':>17}")
    for name, reference in (("aiohttp (before)", True), ("http_probe", False)):
        rate, cpu_us, ready = await in_service(endpoint, service_apps, reference)
        print(f"{name:<44} {rate:>9.0f} {cpu_us:>13.0f} {ready:>17,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--probes", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--service-apps", type=int, default=200, help="apps of 20 replicas (0: skip)"
    )
    parser.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help="uvloop: as services run"
    )
    args = parser.parse_args()
    here, there = multiprocessing.Pipe()
    server = multiprocessing.Process(target=serve, args=(there,), daemon=True)
    server.start()
    if args.loop == "uvloop":
        install_event_loop_policy()  # after the fork: the server stays on stdlib asyncio
    try:
        port = here.recv()
        print(f"prober on {args.loop}; the server is a process of its own (stdlib asyncio)")
        asyncio.run(bench(port, args.probes, args.concurrency, args.rounds, args.service_apps))
    finally:
        server.terminate()
        server.join(5)


if __name__ == "__main__":
    main()
