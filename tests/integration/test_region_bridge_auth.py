"""The shipped region bridge (``configs/mosquitto-bridge.conf``) against a home broker that
is secured as shipped: TLS only, no anonymous clients, the generated password file and ACL.
The bridge logs in as its ``bridge-us`` identity over TLS with the test CA: what the region
writes ("out") reaches home, what home's control plane writes ("in") reaches the region, and
with a wrong password nothing crosses."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from tests.support.auth import Identities, make_identities, start_auth_mosquitto
from tests.support.net import free_port, wait_port
from tests.support.procs import Broker, ProcGroup, proc_group
from tests.support.tls import Pki, TlsBroker, make_pki
from tests.support.waiting import eventually

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto")

ROOT = Path(__file__).resolve().parents[2]
STATE = "$SYS/broker/connection/shoal-bridge-us/state"


@pytest.fixture
def procs() -> Iterator[ProcGroup]:
    with proc_group("shoal-bridge-auth-") as group:
        yield group


def region_conf(home: Broker, password: str, pki: Pki, port: int) -> str:
    """The shipped file with this machine's paths and ports: the region's own listener
    local and anonymous (its clients are the test), the bridge section as shipped but for
    the home broker's address, the bridge's password and the CA file."""
    lines = []
    for line in (ROOT / "configs/mosquitto-bridge.conf").read_text().splitlines():
        key = line.split(" ", 1)[0]
        if key in ("password_file", "acl_file", "persistence_location"):
            continue
        line = {
            "listener": f"listener {port} 127.0.0.1",
            "allow_anonymous": "allow_anonymous true",
            "persistence": "persistence false",
            "address": f"address {home.host}:{home.port}",
            "remote_password": f"remote_password {password}",
            "bridge_cafile": f"bridge_cafile {pki.ca}",
        }.get(key, line)
        lines.append(line)
    if os.geteuid() == 0:  # it would drop to the mosquitto user before reading the CA
        lines.insert(0, "user root")
    return "\n".join(lines) + "\n"


def start_region(procs: ProcGroup, home: Broker, password: str, pki: Pki) -> Broker:
    port = free_port()
    conf = procs.workdir / f"mosquitto-us-{port}.conf"
    conf.write_text(region_conf(home, password, pki, port))
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = procs.spawn(f"mosquitto-us-{port}", [exe, "-c", str(conf)])
    wait_port("127.0.0.1", port, timeout=15)
    return Broker("mosquitto", "127.0.0.1", port, proc)


def home_client(home: TlsBroker, identities: Identities, user: str) -> aiomqtt.Client:
    assert home.pki is not None
    tls = ssl.create_default_context(cafile=str(home.pki.ca))
    return aiomqtt.Client(
        home.host,
        home.port,
        username=user,
        password=identities.passwords[user],
        tls_context=tls,
        identifier=f"test-{user}",
    )


@pytest.fixture
def secured(tmp_path: Path, procs: ProcGroup) -> tuple[TlsBroker, Identities, Pki]:
    pki = make_pki(tmp_path / "pki")
    identities = make_identities(tmp_path / "auth", "shoal", nodes=("us-1",), bridges=("us",))
    home = start_auth_mosquitto(procs, identities, pki)
    assert isinstance(home, TlsBroker)
    return home, identities, pki


async def test_the_shipped_bridge_crosses_a_secured_home_broker(
    procs: ProcGroup, secured: tuple[TlsBroker, Identities, Pki]
) -> None:
    home, identities, pki = secured
    region = start_region(procs, home, identities.passwords["bridge-us"], pki)
    got_home: dict[str, bytes] = {}
    got_region: dict[str, bytes] = {}
    async with (
        home_client(home, identities, "scheduler") as scheduler,  # reads nodes/+/info
        home_client(home, identities, "controller") as controller,  # writes apps/
        aiomqtt.Client(region.host, region.port, identifier="test-region") as local,
    ):
        await scheduler.subscribe("shoal/nodes/+/info")
        await local.subscribe("shoal/apps/#")
        await local.subscribe(STATE)

        async def drain(client: aiomqtt.Client, into: dict[str, bytes]) -> None:
            async for message in client.messages:
                into[str(message.topic)] = bytes(message.payload)  # type: ignore[arg-type]

        tasks = [
            asyncio.create_task(drain(scheduler, got_home)),
            asyncio.create_task(drain(local, got_region)),
        ]
        try:
            await eventually(lambda: got_region.get(STATE) == b"1", timeout=20)
            # out: a region's node info reaches home; in: home's app state reaches the region
            await local.publish("shoal/nodes/us-1/info", b"from-us", qos=1, retain=True)
            await controller.publish("shoal/apps/default/web", b"from-eu", qos=1, retain=True)
            await eventually(lambda: got_home.get("shoal/nodes/us-1/info") == b"from-us")
            await eventually(lambda: got_region.get("shoal/apps/default/web") == b"from-eu")
        finally:
            for task in tasks:
                task.cancel()


async def test_a_wrong_bridge_password_crosses_nothing(
    procs: ProcGroup, secured: tuple[TlsBroker, Identities, Pki]
) -> None:
    home, identities, pki = secured
    region = start_region(procs, home, "not-the-password", pki)
    async with aiomqtt.Client(region.host, region.port, identifier="test-region") as local:
        await local.publish("shoal/nodes/us-1/info", b"from-us", qos=1, retain=True)
    [log] = procs.workdir.glob("mosquitto-us-*.log")
    await eventually(
        lambda: "Connection Refused: not authorised" in log.read_text(errors="replace"),
        timeout=20,
    )
    async with home_client(home, identities, "scheduler") as scheduler:
        await scheduler.subscribe("shoal/nodes/+/info")  # a retained copy would come first
        await scheduler.subscribe("shoal/nodes/+/assign")
        await scheduler.publish("shoal/nodes/barrier/assign", b"", qos=1)
        topics = []
        async for message in scheduler.messages:
            topics.append(str(message.topic))
            if topics[-1] == "shoal/nodes/barrier/assign":
                break
        assert topics == ["shoal/nodes/barrier/assign"]
