"""The balancer as a process, on a real broker, in front of local aiohttp backends.

The test publishes the retained state (apps and health) itself, as controller and health
monitor would, and sends traffic through the balancer.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
from collections.abc import Callable

import aiohttp
import pytest

from core.state import LbMetrics, WakeUp
from tests.integration.test_balancer_kit import (
    Publisher,
    app_state,
    backends,
    digest,
    get,
    health_of,
    lone_health,
    wait_until,
)
from tests.support.net import free_port, wait_port
from tests.support.observer import Observer
from tests.support.procs import Broker, Proc, ProcGroup

pytestmark = pytest.mark.integration

StartLb = Callable[..., tuple[str, str, Proc]]


@pytest.fixture(params=["fast", "aiohttp"])
def lb(request: pytest.FixtureRequest, procs: ProcGroup) -> StartLb:
    """Start a balancer process; every test runs against both proxy engines."""
    engine = request.param

    def start(
        broker: Broker, prefix: str, *args: str, env: dict[str, str] | None = None
    ) -> tuple[str, str, Proc]:
        port, admin = free_port(), free_port()
        proc = procs.service(
            "balancer",
            broker.url,
            "--listen",
            f"127.0.0.1:{port}",
            "--admin",
            f"127.0.0.1:{admin}",
            "--engine",
            engine,
            *args,
            prefix=prefix,
            name=f"balancer-{port}",
            env=env,
        )
        wait_port("127.0.0.1", port, timeout=20)
        return f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}", proc

    return start


async def routed(session: aiohttp.ClientSession, admin: str, app: str, n: int) -> None:
    async def ok() -> bool:
        async with session.get(f"{admin}/routes") as r:
            data = await r.json()
        return app in data and len(data[app]["backends"]) == n

    await wait_until(ok, 10, f"{app} routed to {n} replicas")


async def test_round_robin_404_and_503(broker: Broker, lb: StartLb, prefix: str) -> None:
    url, admin, _ = lb(broker, prefix)
    async with (
        backends(3) as bs,
        Publisher(broker.url, prefix) as pub,
        aiohttp.ClientSession() as s,
    ):
        await pub.app(app_state("web", route={"host": "web.test", "port": "http"}))
        await pub.app(app_state("cold", route={"host": "cold.test", "port": "http"}))
        await pub.health(health_of(bs))
        await pub.health(health_of(bs, "cold", ready=[]))
        await routed(s, admin, "default/web", 3)

        counts: collections.Counter[str] = collections.Counter()
        for _ in range(30):
            status, body, _h = await get(s, url, headers={"Host": "web.test"})
            assert status == 200
            counts[body] += 1
        assert counts == {b.id: 10 for b in bs}

        status, body, _h = await get(s, f"{url}/x", headers={"Host": "nothing.test"})
        assert status == 404
        assert "no route for host 'nothing.test'" in body

        status, body, _h = await get(s, url, headers={"Host": "cold.test"})
        assert status == 503
        assert "app default/cold has no ready replica" in body


async def test_host_beats_hostless_and_longest_prefix_wins(
    mosquitto: Broker, lb: StartLb, prefix: str
) -> None:
    url, admin, _ = lb(mosquitto, prefix)
    async with (
        backends(1, "site") as site,
        backends(1, "api", first_host=3) as api,
        backends(1, "v2", first_host=4) as v2,
        Publisher(mosquitto.url, prefix) as pub,
        aiohttp.ClientSession() as s,
    ):
        await pub.app(app_state("site", route={"path": "/", "port": "http"}))
        await pub.app(app_state("api", route={"path": "/api", "port": "http"}))
        await pub.app(app_state("v2", route={"host": "v2.test", "path": "/", "port": "http"}))
        await pub.health(health_of(site, "site"))
        await pub.health(health_of(api, "api"))
        await pub.health(health_of(v2, "v2"))
        await routed(s, admin, "default/v2", 1)
        await routed(s, admin, "default/api", 1)
        await routed(s, admin, "default/site", 1)

        assert (await get(s, f"{url}/api/users"))[1] == api[0].id
        assert (await get(s, f"{url}/apix"))[1] == site[0].id
        assert (await get(s, f"{url}/api/x", headers={"Host": "V2.test:80"}))[1] == v2[0].id


async def test_forwarded_and_hop_by_hop_headers(
    mosquitto: Broker, lb: StartLb, prefix: str
) -> None:
    url, admin, _ = lb(mosquitto, prefix)
    async with (
        backends(1) as bs,
        Publisher(mosquitto.url, prefix) as pub,
        aiohttp.ClientSession() as s,
    ):
        await pub.app(app_state())
        await pub.health(health_of(bs))
        await routed(s, admin, "default/web", 1)
        status, _body, headers = await get(
            s,
            f"{url}/hello?q=1",
            headers={
                "Host": "web.test",
                "Connection": "keep-alive, X-Secret",
                "X-Secret": "hop",
                "Keep-Alive": "timeout=5",
                "X-Forwarded-For": "10.1.1.1",
                "X-Request-Id": "req-42",
                "X-Custom": "kept",
            },
        )
        assert status == 200
        seen = {k.lower(): v for k, v in bs[0].requests[-1]["headers"].items()}
        assert len(bs[0].requests[-1]["headers"].getall("X-Request-Id")) == 1
        assert bs[0].requests[-1]["path"] == "/hello?q=1"
        assert seen["x-forwarded-for"] == "127.0.0.1"  # the client's claim is replaced
        assert seen["x-forwarded-proto"] == "http"
        assert seen["x-forwarded-host"] == "web.test"
        assert seen["x-request-id"] == "req-42"
        assert seen["x-custom"] == "kept"
        assert seen["host"] == "web.test"
        assert "x-secret" not in seen
        assert "keep-alive" not in seen
        # upstream's hop-by-hop headers do not reach the client either
        assert "X-Private" not in headers
        assert headers["X-Request-Id"] == "req-42"
        # without an incoming id the balancer makes one
        _s, _b, headers = await get(s, url)
        assert headers["X-Request-Id"]
        assert bs[0].requests[-1]["headers"]["X-Request-Id"] == headers["X-Request-Id"]


async def test_refused_replica_is_ejected_and_requests_retried(
    mosquitto: Broker, lb: StartLb, prefix: str
) -> None:
    url, admin, _ = lb(mosquitto, prefix, "--eject-seconds", "30")
    async with (
        backends(3) as bs,
        Publisher(mosquitto.url, prefix) as pub,
        aiohttp.ClientSession() as s,
    ):
        await pub.app(app_state())
        await pub.health(health_of(bs))
        await routed(s, admin, "default/web", 3)
        await bs[1].stop()  # health still says ready: the balancer finds out by itself
        answers: collections.Counter[str] = collections.Counter()
        for _ in range(30):
            status, body, _h = await get(s, url)
            assert status == 200, body
            answers[body] += 1
        assert set(answers) == {bs[0].id, bs[2].id}
        async with s.get(f"{admin}/routes") as r:
            assert (await r.json())["default/web"]["ejected"] == [bs[1].id]
        async with s.get(f"{admin}/metrics") as r:
            text = await r.text()
        assert 'shoal_lb_ejections_total{app="web",namespace="default"} 1.0' in text
        assert 'shoal_lb_retries_total{app="web",namespace="default"} 1.0' in text


async def test_502_504_and_413(mosquitto: Broker, lb: StartLb, prefix: str) -> None:
    url, admin, _ = lb(mosquitto, prefix, "--read-timeout", "0.5", "--max-body", "1Ki")

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"this is not HTTP\r\n\r\n")
        await writer.drain()
        writer.close()

    bad_port = free_port()
    server = await asyncio.start_server(garbage, "127.0.0.1", bad_port)
    async with (
        server,
        backends(1) as bs,
        Publisher(mosquitto.url, prefix) as pub,
        aiohttp.ClientSession() as s,
    ):
        await pub.app(app_state("web", route={"host": "web.test", "port": "http"}))
        await pub.app(app_state("bad", route={"host": "bad.test", "port": "http"}))
        await pub.app(app_state("gone", route={"host": "gone.test", "port": "http"}))
        await pub.health(health_of(bs))
        await pub.health(lone_health("bad", "default.bad.0", f"127.0.0.1:{bad_port}"))
        await pub.health(lone_health("gone", "default.gone.0", f"127.0.0.1:{free_port()}"))
        for app in ("web", "bad", "gone"):
            await routed(s, admin, f"default/{app}", 1)

        status, body, _h = await get(s, f"{url}/?sleep=2", headers={"Host": "web.test"})
        assert status == 504
        assert "did not answer within 0.5s" in body

        status, body, _h = await get(s, url, headers={"Host": "bad.test"})
        assert status == 502
        assert "invalid response" in body

        async with s.post(url, data=b"x", headers={"Host": "gone.test"}) as r:
            assert r.status == 502
            assert "refused the connection" in await r.text()

        async with s.post(f"{url}/echo", data=b"x" * 2048, headers={"Host": "web.test"}) as r:
            assert r.status == 413
            assert "exceeds the limit of 1024" in await r.text()

        async def chunked() -> object:
            for _ in range(4):
                yield b"y" * 512

        async with s.post(f"{url}/upload", data=chunked(), headers={"Host": "web.test"}) as r:
            assert r.status == 413
            assert "exceeds the limit of 1024" in await r.text()


async def test_streams_large_bodies_both_ways(mosquitto: Broker, lb: StartLb, prefix: str) -> None:
    url, admin, _ = lb(mosquitto, prefix)
    async with (
        backends(1) as bs,
        Publisher(mosquitto.url, prefix) as pub,
        aiohttp.ClientSession() as s,
    ):
        await pub.app(app_state())
        await pub.health(health_of(bs))
        await routed(s, admin, "default/web", 1)
        block = os.urandom(1024 * 1024)
        total = 64

        async def upload() -> object:
            for _ in range(total):
                yield block

        async with s.post(f"{url}/echo", data=upload()) as r:
            assert r.status == 200
            assert r.headers.get("Transfer-Encoding") == "chunked"
            h = hashlib.sha256()
            size = 0
            async for chunk in r.content.iter_any():
                h.update(chunk)
                size += len(chunk)
        assert size == total * len(block)
        assert h.hexdigest() == digest(block * total)

        async with s.post(f"{url}/upload", data=upload()) as r:
            assert (await r.text()) == f"{total * len(block)} {digest(block * total)}"

        # a chunked response arrives piece by piece, not at the end
        async with s.get(f"{url}/stream?n=5") as r:
            first = await r.content.readline()
            assert first == b"chunk 0\n"
            rest = await r.read()
        assert rest.count(b"chunk") == 4


async def test_websocket_echo(mosquitto: Broker, lb: StartLb, prefix: str) -> None:
    url, admin, _ = lb(mosquitto, prefix)
    async with (
        backends(1) as bs,
        Publisher(mosquitto.url, prefix) as pub,
        aiohttp.ClientSession() as s,
    ):
        await pub.app(app_state())
        await pub.health(health_of(bs))
        await routed(s, admin, "default/web", 1)
        async with s.ws_connect(f"{url}/ws") as ws:
            await ws.send_str("hello")
            assert (await ws.receive_str(timeout=5)) == f"{bs[0].id}:hello"
            await ws.send_bytes(b"\x00\x01")
            assert (await ws.receive_bytes(timeout=5)) == b"\x00\x01"


async def test_sticky_hash_on_header(mosquitto: Broker, lb: StartLb, prefix: str) -> None:
    url, admin, _ = lb(mosquitto, prefix)
    async with (
        backends(3) as bs,
        Publisher(mosquitto.url, prefix) as pub,
        aiohttp.ClientSession() as s,
    ):
        route = {"port": "http", "algorithm": "hash", "hash_on": "header:X-User"}
        await pub.app(app_state(route=route))
        await pub.health(health_of(bs))
        await routed(s, admin, "default/web", 3)
        first: dict[str, str] = {}
        for user in (f"user-{i}" for i in range(30)):
            first[user] = (await get(s, url, headers={"X-User": user}))[1]
        for user, replica in first.items():
            for _ in range(3):
                assert (await get(s, url, headers={"X-User": user}))[1] == replica
        assert set(first.values()) == {b.id for b in bs}
        # one replica leaves: only its users move
        await pub.health(health_of(bs, ready=[bs[0].id, bs[1].id]))
        await routed(s, admin, "default/web", 2)
        for user, replica in first.items():
            now = (await get(s, url, headers={"X-User": user}))[1]
            if replica != bs[2].id:
                assert now == replica


async def test_weighted_canary_and_least_conn(mosquitto: Broker, lb: StartLb, prefix: str) -> None:
    url, admin, _ = lb(mosquitto, prefix)
    async with (
        backends(3) as bs,
        backends(3, "lc", first_host=5) as lcs,
        Publisher(mosquitto.url, prefix) as pub,
        aiohttp.ClientSession() as s,
    ):
        revs = {bs[0].id: 1, bs[1].id: 1, bs[2].id: 2}
        await pub.app(
            app_state(
                route={"host": "w.test", "port": "http", "algorithm": "weighted"},
                versions=[(1, 2, 90), (2, 1, 10)],
                revision=2,
            )
        )
        await pub.health(health_of(bs, revisions=revs))
        await pub.app(
            app_state("lc", route={"host": "lc.test", "port": "http", "algorithm": "least_conn"})
        )
        await pub.health(health_of(lcs, "lc"))
        await routed(s, admin, "default/web", 3)
        await routed(s, admin, "default/lc", 3)

        counts: collections.Counter[str] = collections.Counter()
        for _ in range(100):
            counts[(await get(s, url, headers={"Host": "w.test"}))[1]] += 1
        assert counts[bs[2].id] == 10
        assert counts[bs[0].id] == counts[bs[1].id] == 45

        slow = [
            asyncio.create_task(get(s, f"{url}/?sleep=1.5", headers={"Host": "lc.test"}))
            for _ in range(2)
        ]
        await wait_until(lambda: sum(b.inflight for b in lcs) == 2, 5, "2 slow requests in flight")
        idle = next(b for b in lcs if b.inflight == 0)
        for _ in range(5):
            assert (await get(s, url, headers={"Host": "lc.test"}))[1] == idle.id
        await asyncio.gather(*slow)


async def test_terminating_replica_drains(mosquitto: Broker, lb: StartLb, prefix: str) -> None:
    url, admin, _ = lb(mosquitto, prefix)
    async with (
        backends(2) as bs,
        Publisher(mosquitto.url, prefix) as pub,
        aiohttp.ClientSession() as s,
    ):
        await pub.app(app_state())
        await pub.health(health_of(bs))
        await routed(s, admin, "default/web", 2)
        inflight = asyncio.create_task(get(s, f"{url}/?sleep=1.5"))
        await wait_until(lambda: sum(b.inflight for b in bs) == 1, 5, "one request in flight")
        busy = next(b for b in bs if b.inflight == 1)
        other = next(b for b in bs if b is not busy)
        await pub.health(health_of(bs, terminating=[busy.id]))
        await routed(s, admin, "default/web", 1)
        for _ in range(6):
            assert (await get(s, url))[1] == other.id
        status, body, _h = await inflight
        assert (status, body) == (200, busy.id)


async def test_the_replica_header_can_be_turned_off(
    mosquitto: Broker, lb: StartLb, prefix: str
) -> None:
    """``--no-replica-header``: responses do not name the replica (nor the app's scheme of
    replica ids) to the client; the request is still served by a replica."""
    url, admin, _ = lb(mosquitto, prefix, "--no-replica-header")
    async with (
        backends(2) as bs,
        Publisher(mosquitto.url, prefix) as pub,
        aiohttp.ClientSession() as s,
    ):
        await pub.app(app_state())
        await pub.health(health_of(bs))
        await routed(s, admin, "default/web", 2)
        for _ in range(4):
            status, body, headers = await get(s, url)
            assert (status, body in {b.id for b in bs}) == (200, True)
            assert "X-Shoal-Replica" not in headers


async def test_the_admin_endpoint_asks_for_its_token(
    mosquitto: Broker, lb: StartLb, prefix: str
) -> None:
    token = "t-" + os.urandom(8).hex()
    _url, admin, _ = lb(mosquitto, prefix, env={"SHOAL_BALANCER_ADMIN_TOKEN": token})
    async with aiohttp.ClientSession() as s:
        await wait_port_http(s, f"{admin}/healthz")  # /healthz needs no token
        for path in ("/routes", "/metrics"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
                async with s.get(f"{admin}{path}", headers=headers) as r:
                    assert r.status == 401, (path, headers)
                    assert r.headers["WWW-Authenticate"].startswith("Bearer")
            async with s.get(f"{admin}{path}", headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 200, path


async def wait_port_http(s: aiohttp.ClientSession, url: str) -> None:
    async def up() -> bool:
        try:
            async with s.get(url) as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    await wait_until(up, 20, f"{url} answering")


async def test_two_balancers_and_metrics(mosquitto: Broker, lb: StartLb, prefix: str) -> None:
    url1, admin1, _ = lb(mosquitto, prefix)
    url2, admin2, _ = lb(mosquitto, prefix)
    async with (
        backends(3) as bs,
        Publisher(mosquitto.url, prefix) as pub,
        Observer(mosquitto.url, prefix) as obs,
        aiohttp.ClientSession() as s,
    ):
        await pub.app(app_state())
        await pub.health(health_of(bs))
        await routed(s, admin1, "default/web", 3)
        await routed(s, admin2, "default/web", 3)
        for url in (url1, url2):
            answers = {(await get(s, url))[1] for _ in range(6)}
            assert answers == {b.id for b in bs}

        def lb_metrics() -> list[LbMetrics]:
            found = [
                env.open(LbMetrics)
                for _t, topic, env in obs.seen
                if env is not None and topic.startswith(f"{prefix}/metrics/lb/")
            ]
            return [m for m in found if "default/web" in m.apps]

        def counted() -> dict[str, int]:
            """Requests per balancer, summed over its windows (a window may close between
            two of the six requests)."""
            totals: dict[str, int] = {}
            for metrics in lb_metrics():
                window = metrics.apps["default/web"]
                totals[metrics.instance] = totals.get(metrics.instance, 0) + window.requests
            return totals

        await obs.wait_for(lambda: list(counted().values()) == [6, 6], 5, "metrics")
        windows = [m.apps["default/web"] for m in lb_metrics() if m.apps["default/web"].requests]
        assert all(w.p99_ms > 0 for w in windows)
        assert {r for w in windows for r in w.replicas} == {b.id for b in bs}
        assert {r for w in windows for r in w.per_replica} == {b.id for b in bs}
        assert all(r.p99_ms > 0 for w in windows for r in w.per_replica.values())
        async with s.get(f"{admin1}/metrics") as r:
            text = await r.text()
        assert 'shoal_lb_requests_total{app="web",code="2xx",namespace="default"} 6.0' in text
        assert 'shoal_lb_ready_replicas{app="web",namespace="default"} 3.0' in text


async def test_scale_from_zero_holds_requests_and_wakes_the_app(
    mosquitto: Broker, lb: StartLb, prefix: str
) -> None:
    url, admin, _ = lb(mosquitto, prefix, "--hold-timeout", "10")
    autoscale = {"min": 0, "max": 3, "target": {"rps_per_replica": 10}}
    async with (
        backends(1) as bs,
        Publisher(mosquitto.url, prefix) as pub,
        Observer(mosquitto.url, prefix) as obs,
        aiohttp.ClientSession() as s,
    ):
        await pub.app(app_state(replicas=0, autoscale=autoscale))
        await routed(s, admin, "default/web", 0)
        held = asyncio.create_task(get(s, url))

        def woken() -> list[WakeUp]:
            return [
                env.open(WakeUp)
                for _t, topic, env in obs.seen
                if env is not None and topic == f"{prefix}/wake/default/web"
            ]

        await obs.wait_for(woken, 5, "a wake-up")
        assert woken()[0].name == "web"
        assert not held.done()
        await pub.app(app_state(replicas=1, autoscale=autoscale, generation=2))
        await pub.health(health_of(bs))
        status, body, _h = await asyncio.wait_for(held, 10)
        assert (status, body) == (200, bs[0].id)
