"""The balancer's ACME shell with a scripted issuer and a clock passed in, on the in-memory
broker: challenges published while an order runs and withdrawn after, certificates swapped
into the SNI table, renewal when due, failures backed off with events, the stored
certificate loaded by a worker that does not order."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from core.logs import get_logger
from core.memory import MemoryBroker
from core.spec import AppSpec
from core.state import AppState, AppVersion
from services.balancer.acme_issuer import AcmeError, Issued
from services.balancer.acme_manager import AcmeManager, AcmeSettings
from services.balancer.policy import Policy, ProxyOptions
from services.balancer.tls import Certificates
from tests.support.memory import connected

HOST = "web.test"
DAY = 86400.0
START = 2_000_000_000.0


def self_signed(host: str, not_before: float, not_after: float) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime.fromtimestamp(not_before, datetime.UTC))
        .not_valid_after(datetime.datetime.fromtimestamp(not_after, datetime.UTC))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class Scripted:
    """An ``AcmeIssuer`` stand-in: publishes one token, then fails or issues as told."""

    def __init__(self, clock: Clock, policy: Policy) -> None:
        self.clock = clock
        self.policy = policy
        self.fail: str | None = None
        self.calls: list[str] = []
        self.answered_during_order: list[bool] = []

    def issue(
        self, host: str, publish: Callable[[str, str], None], withdraw: Callable[[str], None]
    ) -> Issued:
        self.calls.append(host)
        token = f"tok{len(self.calls)}"
        publish(token, f"{token}.thumb")
        answered = self.policy.challenges.get(token) == (host, f"{token}.thumb")
        self.answered_during_order.append(answered)
        try:
            if self.fail is not None:
                raise AcmeError(self.fail)
            now = self.clock.now
            cert, key = self_signed(host, now - 60, now + 90 * DAY)
            return Issued(cert, key, now - 60, now + 90 * DAY)
        finally:
            withdraw(token)


def acme_app() -> AppState:
    spec = AppSpec.model_validate(
        {
            "name": "web",
            "image": "x:1",
            "ports": {"http": 8080},
            "route": {"host": HOST, "port": "http", "tls": {"acme": True}},
        }
    )
    version = AppVersion(revision=1, spec=spec, replicas=1)
    return AppState(
        namespace="d",
        name="web",
        revision=1,
        generation=1,
        spec=spec,
        replicas=1,
        versions=[version],
    )


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []

    async def __call__(self, kind: str, message: str, **fields: Any) -> None:
        self.seen.append((kind, message, fields))


def manager(
    bus: Any, storage: Path, clock: Clock, *, order: bool = True
) -> tuple[AcmeManager, Scripted, Events]:
    settings = AcmeSettings(
        directory="https://acme.invalid/dir",
        email="ops@test",
        storage=str(storage),
        retry=60,
        retry_max=3600,
        order=order,
    )
    log = get_logger("test")
    policy = Policy(ProxyOptions(), instance="lb1")
    events = Events()
    m = AcmeManager(
        settings, bus, "lb1", log, events, Certificates(bus, "lb1", log), policy, clock=clock
    )
    issuer = Scripted(clock, policy)
    m._issuer = issuer  # type: ignore[assignment]
    return m, issuer, events


async def test_an_order_publishes_its_challenge_then_serves_and_stores_the_certificate(
    tmp_path: Path,
) -> None:
    clock = Clock()
    async with connected(MemoryBroker(), "t") as bus:
        m, issuer, events = manager(bus, tmp_path, clock)
        wait = await m.sync([acme_app()])
        assert issuer.calls == [HOST]
        assert issuer.answered_during_order == [True]
        assert m.policy.challenges == {}  # withdrawn once the order was over
        assert HOST in m.certificates.acme
        assert wait == pytest.approx(60 * DAY, abs=1)  # renewal 30 days before expiry
        assert [e[0] for e in events.seen] == ["acme_issued"]
        assert (tmp_path / f"{HOST}.key").stat().st_mode & 0o777 == 0o600
        first = m.certificates.acme[HOST]

        await m.sync([acme_app()])  # nothing due
        assert issuer.calls == [HOST]
        clock.now += 61 * DAY  # due: renewed, the new context serves the next handshake
        await m.sync([acme_app()])
        assert issuer.calls == [HOST, HOST]
        assert m.certificates.acme[HOST] is not first

        await m.sync([])  # the route is gone: so is its certificate
        assert m.certificates.acme == {}


async def test_failures_back_off_and_say_why(tmp_path: Path) -> None:
    clock = Clock()
    async with connected(MemoryBroker(), "t") as bus:
        m, issuer, events = manager(bus, tmp_path, clock)
        issuer.fail = "validation failed: web.test: connection refused"
        assert await m.sync([acme_app()]) == pytest.approx(60)
        assert HOST not in m.certificates.acme
        kind, message, fields = events.seen[-1]
        assert kind == "acme_failed"
        assert "connection refused" in message
        assert fields["severity"] == "warning"
        assert fields["data"]["attempts"] == 1
        await m.sync([acme_app()])  # not yet
        assert len(issuer.calls) == 1
        clock.now += 60
        assert await m.sync([acme_app()]) == pytest.approx(120)  # doubled
        assert events.seen[-1][2]["data"]["attempts"] == 2
        issuer.fail = None
        clock.now += 120
        await m.sync([acme_app()])
        assert HOST in m.certificates.acme
        assert m.failures == {}


async def test_a_worker_that_does_not_order_loads_what_the_first_one_stored(
    tmp_path: Path,
) -> None:
    clock = Clock()
    async with connected(MemoryBroker(), "t") as bus:
        first, _, _ = manager(bus, tmp_path, clock)
        other, other_issuer, _ = manager(bus, tmp_path, clock, order=False)
        assert await other.sync([acme_app()]) == 10.0  # nothing stored yet: look again
        await first.sync([acme_app()])
        await other.sync([acme_app()])
        assert HOST in other.certificates.acme
        assert other_issuer.calls == []


async def test_challenges_of_other_instances_are_answered_until_they_expire(
    tmp_path: Path,
) -> None:
    from core.state import AcmeChallenge

    clock = Clock()
    async with connected(MemoryBroker(), "t") as bus:
        m, _, _ = manager(bus, tmp_path, clock)
        challenge = AcmeChallenge(
            token="abc", key_authorization="abc.x", host=HOST, instance="lb2", expires=START + 5
        )
        m.on_challenge("abc", challenge)
        assert m.policy.challenges == {"abc": (HOST, "abc.x")}
        m.on_challenge("other", challenge)  # a body naming another topic's token
        assert "other" not in m.policy.challenges
        clock.now += 10
        m.on_challenge("abc", challenge)
        assert m.policy.challenges == {}
        m.on_challenge("abc", None)
        assert m.shared == {}


async def test_a_rate_limited_order_waits_the_longest_backoff_at_once(tmp_path: Path) -> None:
    clock = Clock()
    async with connected(MemoryBroker(), "t") as bus:
        m, issuer, events = manager(bus, tmp_path, clock)

        def limited(*_: Any) -> Issued:
            raise AcmeError("ACME server: too many certificates", rate_limited=True)

        issuer.issue = limited  # type: ignore[method-assign]
        assert await m.sync([acme_app()]) == pytest.approx(3600)
        assert events.seen[-1][2]["data"]["retry_in"] == pytest.approx(3600)
