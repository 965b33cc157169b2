"""HTTPS at the edge: one TLS context per route host, chosen by SNI.

A route with ``tls: {cert: SECRET, key: SECRET}`` names two secrets of its app's namespace
(PEM: the certificate chain, and its private key), pinned to versions by the controller.
``wanted_certs`` (pure) lists host -> ``CertRef`` over the apps; ``Certificates.sync``
asks the controller for the versions it does not hold yet (``cmd/secret_values`` with
``role: balancer``; the values come sealed to this instance's key, ``core/sealing.py``),
builds an ``ssl.SSLContext`` per host (TLS 1.2 and 1.3) and swaps it into the table that
the listener's SNI callback reads. A new certificate serves the next handshake; open
connections keep theirs (nothing is dropped). PEM text is handed to OpenSSL through an
anonymous in-memory file (``memfd``), never a file on disk. A client asking for a host no
route serves over TLS (or for no host) is refused in the handshake (unrecognized_name).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core.bus import Bus
from core.channels import SECRET_VALUES
from core.commands import Reply
from core.errors import BusError, ShoalError
from core.sealing import Opener, SealError, label
from core.secrets import SecretValuesRequest, SecretWant
from core.state import AppState


class CertificateError(ShoalError):
    """A route's certificate cannot be had or loaded."""

    retryable = True


@dataclass(frozen=True, slots=True)
class CertRef:
    """The secrets one host is served with (pinned versions)."""

    namespace: str
    cert: str
    cert_version: int
    key: str
    key_version: int


def wanted_certs(apps: Iterable[AppState]) -> dict[str, CertRef]:
    """Host -> the certificate its route pins (routes without pinned versions wait).
    One host belongs to one namespace (admission), so one app's route names it; among
    several apps of that namespace the first by key wins, as routing does."""
    out: dict[str, CertRef] = {}
    for app in sorted(apps, key=lambda a: (a.namespace, a.name)):
        route = app.spec.route
        tls = route.tls if route is not None else None
        if route is None or tls is None or route.host is None:
            continue
        if tls.cert is None or tls.key is None or route.host in out:
            continue  # an ACME route: ``acme_manager.py``
        if tls.cert_version is None or tls.key_version is None:
            continue
        out[route.host] = CertRef(
            app.namespace, tls.cert, tls.cert_version, tls.key, tls.key_version
        )
    return out


def lookup(table: Mapping[str, ssl.SSLContext], server_name: str | None) -> ssl.SSLContext | None:
    """The context for an SNI name: the exact host, else a wildcard ``*.rest``."""
    if not server_name:
        return None
    name = server_name.lower().rstrip(".")
    found = table.get(name)
    if found is None and "." in name:
        found = table.get("*." + name.split(".", 1)[1])
    return found


def server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


def load_pem(cert: bytes, key: bytes) -> ssl.SSLContext:
    """A server context from PEM bytes, through an anonymous in-memory file."""
    context = server_context()
    fd = os.memfd_create("shoal-tls", os.MFD_CLOEXEC)
    try:
        os.write(fd, cert.rstrip(b"\n") + b"\n" + key)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    except (ssl.SSLError, OSError) as err:
        raise CertificateError(f"certificate and key do not load: {err}") from err
    finally:
        os.close(fd)
    return context


class Certificates:
    """This instance's TLS contexts by host, and the listener context choosing among them."""

    def __init__(self, bus: Bus, instance: str, log: Any) -> None:
        self.bus = bus
        self.instance = instance
        self.log = log
        self.opener = Opener()
        self.table: dict[str, ssl.SSLContext] = {}
        self.loaded: dict[str, CertRef] = {}
        #: hosts whose certificate this instance got by ACME (``acme_manager.py``)
        self.acme: dict[str, ssl.SSLContext] = {}
        self.listener = server_context()
        self.listener.sni_callback = self._sni

    def _sni(self, sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> int | None:
        context = lookup(self.table, server_name) or lookup(self.acme, server_name)
        if context is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sslobj.context = context
        return None

    async def sync(self, apps: Iterable[AppState]) -> bool:
        """Load what the routes pin and is not loaded; drop hosts no route serves. False
        when a host could not be loaded (its old certificate, if any, is kept)."""
        wanted = wanted_certs(apps)
        for host in [h for h in self.table if h not in wanted]:
            del self.table[host]
            self.loaded.pop(host, None)
        ok = True
        for host, ref in sorted(wanted.items()):
            if self.loaded.get(host) == ref:
                continue
            try:
                self.table[host] = await self._fetch(ref)
            except CertificateError as err:
                ok = False
                self.log.warning("route certificate not loaded", host=host, error=str(err))
                continue
            self.loaded[host] = ref
            self.log.info(
                "route certificate loaded",
                host=host,
                cert=f"{ref.namespace}/{ref.cert}@{ref.cert_version}",
            )
        return ok

    async def _fetch(self, ref: CertRef) -> ssl.SSLContext:
        wants = [
            SecretWant(namespace=ref.namespace, name=ref.cert, version=ref.cert_version),
            SecretWant(namespace=ref.namespace, name=ref.key, version=ref.key_version),
        ]
        request = SecretValuesRequest(
            node=self.instance, public_key=self.opener.public_key, wants=wants, role="balancer"
        )
        try:
            answer = await self.bus.request(SECRET_VALUES, request, timeout=10)
        except BusError as err:
            raise CertificateError(str(err)) from err
        if isinstance(answer, Reply):
            raise CertificateError("; ".join(answer.errors) or "refused")
        values: dict[tuple[str, int], bytes] = {}
        for item in answer.values:
            if item.namespace != ref.namespace:
                continue  # not what was asked for
            try:
                values[(item.name, item.version)] = self.opener.open(
                    answer.public_key, item.sealed, label(item.namespace, item.name, item.version)
                )
            except SealError as err:
                raise CertificateError(str(err)) from err
        cert = values.get((ref.cert, ref.cert_version))
        key = values.get((ref.key, ref.key_version))
        if cert is None or key is None:
            raise CertificateError("the controller did not deliver the certificate and key")
        return load_pem(cert, key)
