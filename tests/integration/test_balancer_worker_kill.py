"""`kill -9` of a balancer worker under load: the master keeps the listening socket, so only
the requests that worker had in flight fail; the replacement worker takes the queued
connections and service resumes. Both engines, the default configuration (one worker)."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import threading
from collections import Counter
from typing import Any

import aiohttp
import pytest

from tests.integration.test_balancer_kit import (
    Publisher,
    app_state,
    backends,
    health_of,
    wait_until,
)
from tests.support import pids
from tests.support.cluster import wait_for
from tests.support.net import free_port, wait_port
from tests.support.procs import Broker, ProcGroup

pytestmark = pytest.mark.integration

CONCURRENCY = 8


class FreshConnections:
    """``CONCURRENCY`` threads, each sending one GET per new connection until stopped: at
    any moment each has at most one request in flight."""

    def __init__(self, port: int, concurrency: int = CONCURRENCY) -> None:
        self.port = port
        self.concurrency = concurrency
        self.ok = 0
        self.failures: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, daemon=True) for _ in range(concurrency)
        ]

    async def __aenter__(self) -> FreshConnections:
        for t in self._threads:
            t.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        # joined off the event loop: the backends answering the last requests run on it
        self._stop.set()
        for t in self._threads:
            await asyncio.to_thread(t.join, 60)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def _loop(self) -> None:
        while not self._stop.is_set():
            # long enough for a worker to restart: a queued connection waits, it does not fail
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                conn.request("GET", "/", headers={"Connection": "close"})
                resp = conn.getresponse()
                resp.read()
                outcome = "ok" if resp.status == 200 else f"HTTP {resp.status}"
            except (OSError, http.client.HTTPException) as err:
                outcome = type(err).__name__
            finally:
                conn.close()
            with self._lock:
                if outcome == "ok":
                    self.ok += 1
                else:
                    self.failures[outcome] += 1


@pytest.fixture(params=["fast", "aiohttp"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_kill_9_of_a_worker_fails_at_most_its_requests_in_flight(
    mosquitto: Broker, procs: ProcGroup, prefix: str, engine: str
) -> None:
    port, admin = free_port(), free_port()
    procs.service(
        "balancer",
        mosquitto.url,
        "--listen",
        f"127.0.0.1:{port}",
        "--admin",
        f"127.0.0.1:{admin}",
        "--engine",
        engine,
        prefix=prefix,
    )
    wait_port("127.0.0.1", port, 20)
    async with (
        backends(3) as bs,
        Publisher(mosquitto.url, prefix) as pub,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s,
    ):
        await pub.app(app_state())
        await pub.health(health_of(bs))

        async def admin_get(path: str) -> Any:
            async with s.get(f"http://127.0.0.1:{admin}{path}") as r:
                return await r.json()

        async def routed() -> bool:
            return len((await admin_get("/routes")).get("default/web", {}).get("backends", [])) == 3

        await wait_until(routed, 20, "3 replicas routed")
        first = await admin_get("/healthz")
        assert first["master"] != first["pid"]

        async with FreshConnections(port) as load:
            await wait_until(lambda: load.ok >= 200, 60, "steady load")
            os.kill(first["pid"], signal.SIGKILL)

            async def replaced() -> bool:
                health = await admin_get("/healthz")
                return bool(health["pid"] != first["pid"] and health["bus"])

            await wait_until(replaced, 60, "a new worker")
            resumed_from = load.ok
            await wait_until(lambda: load.ok >= resumed_from + 200, 60, "service resumed")
        second = await admin_get("/healthz")
        assert second["master"] == first["master"]  # the master owns the socket throughout

    print(f"{engine}: worker kill -9 under load: {load.ok} ok, {dict(load.failures)} failed")
    # each client thread had at most one request in flight on the killed worker
    assert load.failed <= CONCURRENCY, load.failures
    # the listening socket never went away: no connection was refused
    assert "ConnectionRefusedError" not in load.failures, load.failures


def test_workers_die_with_a_killed_master(mosquitto: Broker, procs: ProcGroup, prefix: str) -> None:
    """SIGKILL of the master leaves no worker behind (parent-death signal, lifeline pipe)."""
    port = free_port()
    master = procs.service(
        "balancer", mosquitto.url, "--listen", f"127.0.0.1:{port}", "--workers", "2", prefix=prefix
    )
    wait_port("127.0.0.1", port, 20)
    workers = wait_for(
        lambda: len(pids.children(master.pid)) == 2 and pids.children(master.pid), 30
    )
    assert isinstance(workers, list)
    master.kill()
    wait_for(lambda: not any(pids.alive(w) for w in workers), 30, message="workers gone")
