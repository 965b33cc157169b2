"""ACME in the balancer: certificates for routes with ``tls: {acme: true}``.

An instance started with ``--acme-directory`` and ``--acme-email`` orders a certificate
for every such host it does not hold (``acme_plan.plan``: renewed once a third of its life
is left; failures back off exponentially), through ``AcmeIssuer`` in a thread. Every
HTTP-01 key authorization goes on the bus, retained on ``acme/challenges/<token>``, and
every balancer (with ACME options or not) answers the tokens it sees on its plain
listener: the ACME server's validation request may reach any instance behind the
address. Each ACME instance holds its own certificates (one order per instance and host;
with ``--acme-storage DIR`` they and the account key survive restarts, 0600). A new
certificate is swapped into the SNI table: the next handshake gets it, open connections
keep theirs. Orders and failures are events (``acme_issued``, ``acme_failed`` with the
server's reason and the next attempt).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.bus import Bus
from core.channels import ACME_CHALLENGES
from core.keys import AppKey
from core.state import AcmeChallenge, AppState
from services.balancer.acme_issuer import AcmeError, AcmeIssuer, new_account_key, validity
from services.balancer.acme_plan import Failures, Held, acme_hosts, failed, plan, retry_at
from services.balancer.policy import Policy
from services.balancer.tls import CertificateError, Certificates, load_pem

Emit = Callable[..., Awaitable[None]]


@dataclass(frozen=True, slots=True)
class AcmeSettings:
    directory: str
    email: str
    #: CA bundle for the ACME server's own HTTPS (a test server's); None: the system's
    ca_file: str | None = None
    #: where the account key and certificates are kept; None: in memory only
    storage: str | None = None
    retry: float = 60.0  # first wait after a failure, doubled each time
    retry_max: float = 6 * 3600.0
    challenge_ttl: float = 600.0  # a published token is answered this long at most
    #: False in workers other than the first (``--workers N``): they do not order, they
    #: load what the first worker stored in ``storage``
    order: bool = True


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (0600) through a rename, so a reader sees all or nothing."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class AcmeManager:
    """This instance's ACME certificates, and the challenges every instance answers."""

    def __init__(
        self,
        settings: AcmeSettings | None,
        bus: Bus,
        instance: str,
        log: Any,
        emit: Emit,
        certificates: Certificates,
        policy: Policy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.bus = bus
        self.instance = instance
        self.log = log
        self.emit = emit
        self.certificates = certificates
        self.policy = policy
        self.held: dict[str, Held] = {}
        self.failures: dict[str, Failures] = {}
        self.own: dict[str, tuple[str, str]] = {}  # token -> (host, key authorization)
        self.shared: dict[str, AcmeChallenge] = {}  # every instance's, from the bus
        self._issuer: AcmeIssuer | None = None

    # -- challenges (every instance) ----------------------------------------------------

    def on_challenge(self, token: str, challenge: AcmeChallenge | None) -> None:
        if challenge is None or challenge.token != token:
            self.shared.pop(token, None)
        else:
            self.shared[token] = challenge
        self._refresh()

    def _refresh(self) -> None:
        now = self.clock()
        answers = {
            t: (c.host, c.key_authorization) for t, c in self.shared.items() if c.expires > now
        }
        answers.update(self.own)
        self.policy.challenges = answers

    async def _publish(self, token: str, key_authorization: str, host: str) -> None:
        assert self.settings is not None
        self.own[token] = (host, key_authorization)
        self._refresh()
        challenge = AcmeChallenge(
            token=token,
            key_authorization=key_authorization,
            host=host,
            instance=self.instance,
            expires=self.clock() + self.settings.challenge_ttl,
        )
        await self.bus.publish(ACME_CHALLENGES, challenge, timeout=10)

    async def _withdraw(self, token: str) -> None:
        self.own.pop(token, None)
        self._refresh()
        await self.bus.clear(ACME_CHALLENGES, token)

    async def _clear_expired(self) -> None:
        now = self.clock()
        for token in [t for t, c in self.shared.items() if c.expires <= now]:
            self.shared.pop(token, None)
            await self.bus.clear(ACME_CHALLENGES, token)

    # -- certificates (instances with ACME settings) ------------------------------------

    def _storage(self) -> Path | None:
        if self.settings is None or self.settings.storage is None:
            return None
        path = Path(self.settings.storage)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    def _issuer_for(self, settings: AcmeSettings) -> AcmeIssuer:
        if self._issuer is None:
            storage = self._storage()
            account = storage / "account.pem" if storage is not None else None
            if account is not None and account.exists():
                key = account.read_bytes()
            else:
                key = new_account_key()
                if account is not None:
                    write_private(account, key)
            self._issuer = AcmeIssuer(
                settings.directory, settings.email, key, ca_file=settings.ca_file
            )
        return self._issuer

    def _load_stored(self, host: str) -> None:
        """Serve the stored certificate of ``host`` if it is newer than the one held."""
        storage = self._storage()
        if storage is None:
            return
        crt, key = storage / f"{host}.crt", storage / f"{host}.key"
        if not crt.exists() or not key.exists():
            return
        try:
            fullchain, key_pem = crt.read_bytes(), key.read_bytes()
            context = load_pem(fullchain, key_pem)
            not_before, not_after = validity(fullchain)
        except (OSError, ValueError, CertificateError) as err:
            self.log.warning("stored ACME certificate not loaded", host=host, error=str(err))
            return
        held = self.held.get(host)
        if held is not None and held.not_after >= not_after:
            return
        self.certificates.acme[host] = context
        self.held[host] = Held(not_before, not_after)
        self.log.info("stored ACME certificate loaded", host=host)

    async def sync(self, apps: Iterable[AppState]) -> float | None:
        """Certificates in line with the routes; -> seconds until something is due."""
        await self._clear_expired()
        settings = self.settings
        if settings is None:
            return None
        hosts = acme_hosts(apps)
        for host in [h for h in self.certificates.acme if h not in hosts]:
            del self.certificates.acme[host]
        for gone in [h for h in (*self.held, *self.failures) if h not in hosts]:
            self.held.pop(gone, None)
            self.failures.pop(gone, None)
        for host in hosts:
            if host not in self.held or not settings.order:
                self._load_stored(host)
        if not settings.order:
            return 10.0 if hosts else None  # the ordering worker stores; look again soon
        todo = plan(
            self.clock(),
            hosts,
            self.held,
            self.failures,
            base=settings.retry,
            cap=settings.retry_max,
        )
        for host in todo.issue:
            await self._order(settings, host, hosts[host])
        now = self.clock()
        wake = plan(
            now, hosts, self.held, self.failures, base=settings.retry, cap=settings.retry_max
        ).wake_at
        return None if wake is None else max(1.0, wake - now)

    async def _order(self, settings: AcmeSettings, host: str, app: AppKey) -> None:
        loop = asyncio.get_running_loop()

        def publish(token: str, key_authorization: str) -> None:
            asyncio.run_coroutine_threadsafe(
                self._publish(token, key_authorization, host), loop
            ).result(timeout=30)

        def withdraw(token: str) -> None:
            try:
                asyncio.run_coroutine_threadsafe(self._withdraw(token), loop).result(timeout=30)
            except Exception as err:  # the order's outcome matters more than the clean-up
                self.log.warning("ACME challenge not withdrawn", token=token, error=str(err))

        self.log.info("ordering ACME certificate", host=host, directory=settings.directory)
        try:
            issuer = self._issuer_for(settings)
            issued = await asyncio.to_thread(issuer.issue, host, publish, withdraw)
            context = load_pem(issued.fullchain, issued.key)
        except (AcmeError, CertificateError, OSError) as err:
            now = self.clock()
            limited = isinstance(err, AcmeError) and err.rate_limited
            # rate-limited: wait the longest backoff at once rather than climb to it
            retry_after = now + settings.retry_max if limited else 0.0
            failure = failed(self.failures.get(host), now, str(err), retry_after)
            self.failures[host] = failure
            wait = retry_at(failure, settings.retry, settings.retry_max) - now
            self.log.warning(
                "ACME certificate not issued",
                host=host,
                error=str(err),
                attempts=failure.count,
                retry_in=round(wait, 1),
            )
            await self.emit(
                "acme_failed",
                f"certificate for {host} not issued: {err} (attempt {failure.count}; "
                f"next in {wait:.0f}s)",
                namespace=app.namespace,
                app=app.name,
                severity="warning",
                data={"host": host, "attempts": failure.count, "retry_in": round(wait, 1)},
            )
            return
        self.certificates.acme[host] = context
        self.held[host] = Held(issued.not_before, issued.not_after)
        self.failures.pop(host, None)
        storage = self._storage()
        if storage is not None:
            write_private(storage / f"{host}.key", issued.key)
            write_private(storage / f"{host}.crt", issued.fullchain)
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(issued.not_after))
        self.log.info("ACME certificate issued", host=host, expires=expires)
        await self.emit(
            "acme_issued",
            f"certificate for {host} issued by ACME, valid until {expires}",
            namespace=app.namespace,
            app=app.name,
            data={"host": host, "not_after": issued.not_after},
        )
