"""Issue 13, item 2: the bus over TLS, on real mosquitto with a TLS-only listener.

A client that trusts the broker's CA connects and the contract works over it; a client with
another CA is refused (and says it was TLS, not "is shoal up running?"); a broker that requires
client certificates refuses a client without one and accepts one the CA signed; a bad CA file
fails at once with the file named; ``insecure=1`` says at every connect what it gives away.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import structlog

from core.bus import Bus, connect_bus
from core.channels import EVENTS
from core.config import BrokerURL, ConfigError
from core.state import Event
from core.topics import Topics
from tests.support.procs import ProcGroup
from tests.support.tls import Pki, make_pki, start_tls_mosquitto
from tests.support.waiting import eventually

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl missing"),
]


#: paho-mqtt's ``_ssl_wrap_socket`` does not close the socket whose handshake failed
#: (``ssl_sock.do_handshake()`` raises before anything keeps it); a refused handshake then
#: leaves an unclosed-socket warning behind, which is paho's and not a leak of ours.
paho_refusal_leak = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@asynccontextmanager
async def running(url: str, client_id: str) -> AsyncIterator[Bus]:
    bus = connect_bus(BrokerURL.parse(url), Topics("tls"), client_id=client_id)
    task = asyncio.create_task(bus.run())
    try:
        yield bus
    finally:
        bus.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_contract_works_over_tls(procs: ProcGroup, pki: Pki) -> None:
    broker = start_tls_mosquitto(procs, pki)
    got: list[Event] = []
    async with running(broker.url, "a") as a, running(broker.url, "b") as b:
        await a.wait_connected(10)
        await b.wait_connected(10)
        await a.subscribe(EVENTS, lambda kind, e: got.append(e) if e else None)
        await b.publish(EVENTS, Event(kind="hello", message="over TLS"))
        await eventually(lambda: got, 10, "the event over TLS")
    assert got[0].message == "over TLS"


@paho_refusal_leak
async def test_a_client_with_the_wrong_ca_is_refused(procs: ProcGroup, pki: Pki) -> None:
    broker = start_tls_mosquitto(procs, pki)
    with structlog.testing.capture_logs() as logs:
        async with running(broker.url_with(ca=str(pki.other_ca)), "wrong") as bus:
            await eventually(lambda: any("lost" in e["event"] for e in logs), 10, "a refusal")
            assert not bus.connected
    refusals = [e for e in logs if e["event"] == "broker connection lost"]
    assert "certificate verify failed" in refusals[0]["error"].lower()


def test_the_cli_says_a_refusal_was_tls(procs: ProcGroup, pki: Pki) -> None:
    broker = start_tls_mosquitto(procs, pki)
    out = subprocess.run(
        [sys.executable, "-m", "services.cli", "get", "apps", "--timeout", "3"],
        env={"SHOAL_BROKER": broker.url_with(ca=str(pki.other_ca)), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode != 0
    assert "a TLS failure" in out.stderr, out.stderr
    assert "shoal up" not in out.stderr


@paho_refusal_leak
async def test_client_certificates_when_the_broker_requires_them(
    procs: ProcGroup, pki: Pki
) -> None:
    broker = start_tls_mosquitto(procs, pki, require_certificate=True)
    with structlog.testing.capture_logs() as logs:
        async with running(broker.url_with(ca=str(pki.ca)), "no-cert") as bus:
            # TLS 1.3: the broker's "certificate required" alert comes after the client's
            # handshake, so the refusal shows when the MQTT connect gets no CONNACK
            await eventually(lambda: any("lost" in e["event"] for e in logs), 30, "a refusal")
            assert not bus.connected
    async with running(broker.url, "with-cert") as bus:  # cert= and key= of the test CA
        await bus.wait_connected(10)


def test_a_bad_ca_file_fails_at_once_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match="broker TLS files"):
        connect_bus(
            BrokerURL.parse(f"mqtts://127.0.0.1:8883?ca={missing}"), Topics("t"), client_id="x"
        )


async def test_insecure_warns_at_every_connect(procs: ProcGroup, pki: Pki) -> None:
    broker = start_tls_mosquitto(procs, pki)
    with structlog.testing.capture_logs() as logs:
        async with running(broker.url_with(insecure="1"), "insecure") as bus:
            await bus.wait_connected(10)
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert any("insecure=1" in e["event"] for e in warnings)
