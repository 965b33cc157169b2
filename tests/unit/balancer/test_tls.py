"""HTTPS at the edge, the pure parts: which certificate each host is served with, SNI
lookup (exact, then wildcard), and PEM loaded from memory into a TLS 1.2+ context."""

from __future__ import annotations

import datetime
import ssl
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from core.spec import AppSpec
from core.state import AppState, AppVersion
from services.balancer.tls import CertificateError, CertRef, load_pem, lookup, wanted_certs


def app(
    name: str, host: str | None, tls: dict[str, Any] | None, namespace: str = "default"
) -> AppState:
    route: dict[str, Any] = {"host": host, "port": "http"}
    if tls is not None:
        route["tls"] = tls
    spec = AppSpec.model_validate(
        {"name": name, "namespace": namespace, "image": "i", "ports": {"http": 80}, "route": route}
    )
    return AppState(
        namespace=namespace,
        name=name,
        revision=1,
        generation=1,
        spec=spec,
        replicas=1,
        versions=[AppVersion(revision=1, spec=spec, replicas=1)],
    )


PINNED = {"cert": "c", "key": "k", "cert_version": 2, "key_version": 3}


def test_each_host_is_served_with_the_pinned_certificate_of_its_route() -> None:
    apps = [
        app("web", "web.test", PINNED),
        app("api", "api.test", {"cert": "c", "key": "k"}),  # not pinned yet: waits
        app("plain", "plain.test", None),
        app("web", "other.test", PINNED, "prod"),
    ]
    assert wanted_certs(apps) == {
        "web.test": CertRef("default", "c", 2, "k", 3),
        "other.test": CertRef("prod", "c", 2, "k", 3),
    }


def test_a_route_with_tls_needs_a_host() -> None:
    with pytest.raises(ValueError, match="route tls needs a host"):
        app("web", None, PINNED)


def test_sni_finds_the_exact_host_then_a_wildcard() -> None:
    exact, wild = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    table = {"web.test": exact, "*.apps.test": wild}
    assert lookup(table, "web.test") is exact
    assert lookup(table, "WEB.test.") is exact
    assert lookup(table, "a.apps.test") is wild
    assert lookup(table, "a.b.apps.test") is None  # a wildcard covers one level
    assert lookup(table, "other.test") is None
    assert lookup(table, None) is None


def self_signed(host: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def test_pem_loads_from_memory_into_a_tls_12_and_13_context() -> None:
    cert, key = self_signed("web.test")
    context = load_pem(cert, key)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    _, other_key = self_signed("web.test")
    with pytest.raises(CertificateError, match="do not load"):
        load_pem(cert, other_key)  # a key that is not the certificate's
