"""Ordering one certificate from an ACME server (RFC 8555, HTTP-01), with the ``acme``
library of the certbot project (the JWS, nonces, account and order resources are its).

Blocking (``requests`` underneath): the balancer runs ``AcmeIssuer.issue`` in a thread.
``publish(token, key_authorization)`` must make every balancer answer the token on plain
HTTP before it returns (``acme_manager.py`` puts it on the bus); ``withdraw(token)`` is
called once the order is over, whatever its outcome.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass

from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwk import JWKRSA

from core.errors import ShoalError

USER_AGENT = "shoal-balancer"


class AcmeError(ShoalError):
    """An order failed; ``rate_limited``: the server said ``rateLimited`` (wait long)."""

    retryable = True

    def __init__(self, message: str, *, rate_limited: bool = False) -> None:
        super().__init__(message)
        self.rate_limited = rate_limited


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its key (PEM) and its validity (wall-clock seconds)."""

    fullchain: bytes
    key: bytes
    not_before: float
    not_after: float


def new_account_key() -> bytes:
    """A new RSA 2048 account key (PEM, PKCS8)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def validity(fullchain: bytes) -> tuple[float, float]:
    """The leaf certificate's not-before and not-after (wall-clock seconds)."""
    leaf = x509.load_pem_x509_certificate(fullchain)
    return leaf.not_valid_before_utc.timestamp(), leaf.not_valid_after_utc.timestamp()


def describe(err: Exception) -> str:
    """One line a person can act on, from what the library raised."""
    if isinstance(err, errors.ValidationError):
        reasons = [
            f"{a.body.identifier.value}: {c.error.detail or c.error.typ}"
            for a in err.failed_authzrs
            for c in a.body.challenges
            if c.error is not None
        ]
        return "validation failed: " + ("; ".join(reasons) or "authorization invalid")
    if isinstance(err, messages.Error):
        return f"ACME server: {err.detail or err.typ}"
    if isinstance(err, errors.TimeoutError | errors.PollError):
        return "the ACME server did not finish the order in time"
    return f"{type(err).__name__}: {err}"


class AcmeIssuer:
    """One ACME account (registered on first use) ordering certificates for hosts."""

    def __init__(
        self,
        directory: str,
        email: str,
        account_key: bytes,
        *,
        ca_file: str | None = None,
        timeout: float = 90.0,
    ) -> None:
        self.directory = directory
        self.email = email
        self.account_key = account_key
        self.ca_file = ca_file
        self.timeout = timeout
        self._client: client.ClientV2 | None = None

    def _connect(self) -> client.ClientV2:
        if self._client is not None:
            return self._client
        key = serialization.load_pem_private_key(self.account_key, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise AcmeError("the ACME account key is not an RSA key")
        # requests takes a CA bundle path where ``verify_ssl`` is passed
        verify: bool = self.ca_file or True  # type: ignore[assignment]
        net = client.ClientNetwork(
            JWKRSA(key=key), user_agent=USER_AGENT, verify_ssl=verify, timeout=30
        )
        acme = client.ClientV2(client.ClientV2.get_directory(self.directory, net), net)
        registration = messages.NewRegistration.from_data(
            email=self.email, terms_of_service_agreed=True
        )
        try:
            acme.new_account(registration)
        except errors.ConflictError as known:  # this key's account exists: use it
            acme.query_registration(
                messages.RegistrationResource(uri=known.location, body=messages.Registration())
            )
        self._client = acme
        return acme

    def issue(
        self,
        host: str,
        publish: Callable[[str, str], None],
        withdraw: Callable[[str], None],
    ) -> Issued:
        """Order, validate (HTTP-01) and download a certificate for ``host``."""
        try:
            return self._issue(host, publish, withdraw)
        except AcmeError:
            raise
        except messages.Error as err:
            if err.typ == "urn:ietf:params:acme:error:badNonce":
                self._client = None
            limited = err.typ == "urn:ietf:params:acme:error:rateLimited"
            raise AcmeError(describe(err), rate_limited=limited) from err
        except Exception as err:  # the library's, josepy's, requests' (OSError), the bus's
            self._client = None  # a new directory and account lookup next time
            raise AcmeError(describe(err)) from err

    def _issue(
        self,
        host: str,
        publish: Callable[[str, str], None],
        withdraw: Callable[[str], None],
    ) -> Issued:
        acme = self._connect()
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        order = acme.new_order(crypto_util.make_csr(key_pem, [host]))
        published: list[str] = []
        try:
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue  # validated recently for this account
                challenge = next(
                    (c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)),
                    None,
                )
                if challenge is None:
                    raise AcmeError(f"the ACME server offers no http-01 challenge for {host}")
                http01 = challenge.chall
                assert isinstance(http01, challenges.HTTP01)
                response, key_authorization = http01.response_and_validation(acme.net.key)
                token = http01.encode("token")
                publish(token, key_authorization)
                published.append(token)
                acme.answer_challenge(challenge, response)
            # the library compares with naive local time (``datetime.now()``)
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=self.timeout)
            done = acme.poll_and_finalize(order, deadline=deadline)
        finally:
            for token in published:
                withdraw(token)
        fullchain = done.fullchain_pem.encode()
        not_before, not_after = validity(fullchain)
        return Issued(fullchain, key_pem, not_before, not_after)
