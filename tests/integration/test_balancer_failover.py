"""Under continuous load, through health + balancer processes: a replica killed with
SIGKILL fails (almost) no request, a planned stop (terminating, drain, SIGTERM) fails none.

Replicas are real processes (a tiny aiohttp server each) so a kill is a real kill.
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import pytest

from tests.integration.test_balancer_kit import (
    Backend,
    Publisher,
    app_state,
    statuses,
    wait_until,
)
from tests.support.net import free_port, wait_port
from tests.support.procs import Broker, Proc, ProcGroup

pytestmark = pytest.mark.integration

REPLICA = """
import sys
from aiohttp import web
host, port, rid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
async def hello(request):
    return web.Response(text=rid)
app = web.Application()
app.router.add_get("/", hello)
app.router.add_get("/healthz", hello)
web.run_app(app, host=host, port=port, print=None, access_log=None, shutdown_timeout=5)
"""

FAST_HTTP = {"http": "/healthz", "port": "http", "interval": "200ms", "timeout": "500ms"}


@pytest.fixture(params=["fast", "aiohttp"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Load:
    """Client loops sending GETs until stopped; counts answers and failures."""

    def __init__(self, url: str, workers: int = 4) -> None:
        self.url = url
        self.workers = workers
        self.ok = 0
        self.failed: list[str] = []
        self.answers: dict[str, int] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _loop(self, session: aiohttp.ClientSession) -> None:
        while not self._stop.is_set():
            try:
                async with session.get(self.url) as r:
                    body = await r.text()
                    if r.status == 200:
                        self.ok += 1
                        self.answers[body] = self.answers.get(body, 0) + 1
                    else:
                        self.failed.append(f"{r.status} {body.strip()}")
            except aiohttp.ClientError as err:
                self.failed.append(f"{type(err).__name__}: {err}")

    async def __aenter__(self) -> Load:
        self.session = aiohttp.ClientSession()
        self._tasks = [asyncio.create_task(self._loop(self.session)) for _ in range(self.workers)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self.session.close()

    @property
    def total(self) -> int:
        return self.ok + len(self.failed)


def start_replicas(procs: ProcGroup, n: int) -> tuple[list[Backend], list[Proc]]:
    """``n`` replicas of node n1, all on its address (health routes no replica whose
    endpoint is off its node's address)."""
    bs, ps = [], []
    for i in range(n):
        b = Backend(f"default.web.{i:08x}", "127.0.0.2", free_port("127.0.0.2"))
        ps.append(
            procs.spawn(f"replica-{i}", [sys.executable, "-c", REPLICA, b.host, str(b.port), b.id])
        )
        bs.append(b)
    for b in bs:
        wait_port(b.host, b.port, 20)
    return bs, ps


async def test_kill_and_planned_stop_under_load(
    mosquitto: Broker, procs: ProcGroup, prefix: str, engine: str
) -> None:
    port = free_port()
    bs, replicas = start_replicas(procs, 3)
    procs.service("health", mosquitto.url, prefix=prefix)
    procs.service(
        "balancer",
        mosquitto.url,
        "--listen",
        f"127.0.0.1:{port}",
        "--engine",
        engine,
        prefix=prefix,
    )
    wait_port("127.0.0.1", port, 20)
    url = f"http://127.0.0.1:{port}/"
    async with Publisher(mosquitto.url, prefix) as pub:
        await pub.app(app_state(health={"readiness": {**FAST_HTTP, "failures": 1}}))
        await pub.replicas(statuses(bs))

        async with Load(url) as warm:
            await wait_until(lambda: len(warm.answers) == 3, 20, "3 replicas answering")

        # unplanned: SIGKILL one replica mid-load
        async with Load(url) as load:
            await asyncio.sleep(1.0)
            replicas[0].kill()
            killed_at = load.total
            await asyncio.sleep(2.0)
        assert load.total > killed_at > 0
        assert len(load.failed) <= max(0, load.total // 1000), load.failed[:5]
        print(f"kill: {load.total} requests, {len(load.failed)} failed")

        # planned: terminating first (health takes it out), drain, then SIGTERM
        async with Load(url) as load:
            await asyncio.sleep(0.5)
            await pub.replicas(
                statuses(bs[1:], phases={bs[1].id: "terminating"}),
            )
            await asyncio.sleep(1.0)  # termination.drain
            before_stop = load.answers.get(bs[1].id, 0)
            replicas[1].stop()
            await asyncio.sleep(1.0)
        assert load.failed == []
        assert load.answers.get(bs[1].id, 0) == before_stop  # nothing after the drain
        assert load.answers[bs[2].id] > 0
        print(f"planned stop: {load.total} requests, {len(load.failed)} failed")
