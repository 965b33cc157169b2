"""HTTP/1.x details through the balancer, spoken over raw sockets: pipelining, HEAD,
HTTP/1.0, 100-continue, malformed requests. Both engines."""

from __future__ import annotations

import asyncio
import socket

import pytest

from core.state import Presence
from tests.integration.test_balancer_kit import Publisher, app_state, backends, health_of
from tests.support.net import free_port, wait_port
from tests.support.observer import Observer
from tests.support.procs import Broker, ProcGroup

pytestmark = pytest.mark.integration


@pytest.fixture(params=["fast", "aiohttp"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def exchange(port: int, raw: bytes, *, until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    try:
        if until_close:
            return await asyncio.wait_for(reader.read(), 10)
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


async def test_http_details(mosquitto: Broker, procs: ProcGroup, prefix: str, engine: str) -> None:
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
    async with backends(1) as bs, Publisher(mosquitto.url, prefix) as pub:
        await pub.app(app_state())
        await pub.health(health_of(bs))
        rid = bs[0].id.encode()
        for _ in range(100):
            if rid in await exchange(
                port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            ):
                break
            await asyncio.sleep(0.1)

        # two pipelined requests on one connection: two answers, in order
        out = await exchange(
            port,
            b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /two HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        assert out.count(b"HTTP/1.1 200") == 2
        assert [r["path"] for r in bs[0].requests[-2:]] == ["/one", "/two"]

        # HEAD: headers with the length, no body
        out = await exchange(port, b"HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        head, _, body = out.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert f"content-length: {len(bs[0].id)}".encode() in head.lower()
        assert body == b""

        # HTTP/1.0 without keep-alive: answered, then closed
        out = await exchange(port, b"GET / HTTP/1.0\r\nHost: a\r\n\r\n")
        assert out.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))
        assert out.endswith(rid)

        # a POST with Expect: 100-continue gets its body through
        out = await exchange(
            port,
            b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\nhello",
        )
        assert b"HTTP/1.1 200" in out
        assert out.rstrip().split(b"\r\n\r\n")[-1].startswith(b"5 ")

        # garbage is a 400, and the balancer keeps serving
        out = await exchange(port, b"NOT HTTP AT ALL\r\n\r\n")
        assert out.startswith(b"HTTP/1.")
        assert b" 400 " in out.split(b"\r\n")[0]
        out = await exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert out.endswith(rid)


async def read_response(reader: asyncio.StreamReader, *, slow: bool = False) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    got = 0
    while got < length:
        chunk = await asyncio.wait_for(reader.read(min(65536, length - got)), 10)
        assert chunk, "connection closed mid-body"
        got += len(chunk)
        if slow:
            await asyncio.sleep(0.005)
    return head


async def test_slow_client_and_reuse_after_backpressure(
    mosquitto: Broker, procs: ProcGroup, prefix: str, engine: str
) -> None:
    port = free_port()
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
    async with backends(1) as bs, Publisher(mosquitto.url, prefix) as pub:
        await pub.app(app_state())
        await pub.health(health_of(bs))
        rid = bs[0].id.encode()
        for _ in range(100):
            if rid in await exchange(
                port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            ):
                break
            await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(2):  # a slow reader of 8 MiB, then the same connections again
                writer.write(b"GET /big?mb=8 HTTP/1.1\r\nHost: a\r\n\r\n")
                head = await read_response(reader, slow=True)
                assert head.startswith(b"HTTP/1.1 200")
                writer.write(b"GET /big?mb=1 HTTP/1.1\r\nHost: a\r\n\r\n")
                assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
        finally:
            writer.close()


def free_port_pair() -> int:
    """A port p with p + 1 free too (worker i serves admin on admin + i)."""
    for _ in range(50):
        p = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 1))
            except OSError:
                continue
        return p
    raise RuntimeError("no two consecutive free ports")


async def test_workers_share_one_port(mosquitto: Broker, procs: ProcGroup, prefix: str) -> None:
    port, admin = free_port(), free_port_pair()
    procs.service(
        "balancer",
        mosquitto.url,
        "--listen",
        f"127.0.0.1:{port}",
        "--admin",
        f"127.0.0.1:{admin}",
        "--workers",
        "2",
        "--instance",
        f"lb-{prefix}",
        prefix=prefix,
    )
    wait_port("127.0.0.1", port, 30)
    async with (
        backends(1) as bs,
        Publisher(mosquitto.url, prefix) as pub,
        Observer(mosquitto.url, prefix) as obs,
    ):
        await pub.app(app_state())
        await pub.health(health_of(bs))

        def online() -> set[str]:
            return {
                p.instance
                for p in obs.all(f"{prefix}/services/balancer/+", Presence).values()
                if p.status == "online"
            }

        await obs.wait_for(lambda: online() == {f"lb-{prefix}-w0", f"lb-{prefix}-w1"}, 20, "2")
        wait_port("127.0.0.1", admin + 1, 20)
        rid = bs[0].id.encode()
        served = 0
        for _ in range(200):
            out = await exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            served += out.endswith(rid)
            if served >= 40:
                break
        assert served >= 40

        # each worker counted its own share (fresh connections spread over both); a worker
        # may account a request a moment after answering it, so read until all are counted
        async def counted() -> list[float]:
            counts = []
            for a in (admin, admin + 1):
                out = await exchange(
                    a, b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
                )
                # one series per app and status class: add them all up
                series = [
                    ln for ln in out.split(b"\n") if ln.startswith(b"shoal_lb_requests_total")
                ]
                counts.append(sum(float(ln.rsplit(b" ", 1)[-1]) for ln in series))
            return counts

        counts = await counted()
        for _ in range(50):
            if sum(counts) >= served:
                break
            await asyncio.sleep(0.1)
            counts = await counted()
        assert sum(counts) >= 40
        assert all(c > 0 for c in counts), counts
