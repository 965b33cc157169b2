"""Issue 13 item 5 (first half) on a real cluster, on both balancer engines: HTTPS on the
balancer's ``--tls-listen`` with each route's certificate from secrets, chosen by SNI
(``curl --cacert`` for two hosts), TLS 1.2 and 1.3, an unknown name refused in the
handshake, and a changed certificate served to new connections while an open one keeps
working."""

from __future__ import annotations

import datetime
import http.client
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.cluster import Cluster, wait_for
from tests.support.net import free_port

pytestmark = pytest.mark.e2e

SPEC = """
name: {name}
image: shoal-test/echo:v1
replicas: 1
resources: {{cpu: 0.05, memory: 32Mi}}
ports: {{http: 8080}}
route: {{host: {host}, port: http, tls: {{cert: {name}-cert, key: {name}-key}}}}
termination: {{drain: 0s, grace: 1s}}
"""


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class Authority:
    """A test CA issuing server certificates."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name("shoal test CA"))
            .issuer_name(_name("shoal test CA"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, host: str, serial: int) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(host))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem


def served_serial(port: int, host: str, ca: Path, version: ssl.TLSVersion | None = None) -> int:
    """The serial number of the certificate the listener serves for SNI ``host``."""
    context = ssl.create_default_context(cafile=str(ca))
    if version is not None:
        context.minimum_version = context.maximum_version = version
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number


@pytest.mark.parametrize("engine", ["fast", "aiohttp"])
def test_https_by_sni_with_certificates_from_secrets(
    cluster: Cluster, tmp_path: Path, engine: str
) -> None:
    authority = Authority()
    ca = tmp_path / "ca.pem"
    ca.write_bytes(authority.pem())
    port = free_port()
    cluster.start(balancer_args=["--engine", engine, "--tls-listen", f"127.0.0.1:{port}"])
    hosts = {"one": "one.test", "two": "two.test"}
    for serial, (name, host) in enumerate(hosts.items(), start=1):
        cert, key = authority.issue(host, serial)
        (tmp_path / f"{name}.crt").write_bytes(cert)
        (tmp_path / f"{name}.key").write_bytes(key)
        cluster.shoal(
            "secret", "create", f"{name}-cert", "--from-file", str(tmp_path / f"{name}.crt")
        )
        cluster.shoal(
            "secret", "create", f"{name}-key", "--from-file", str(tmp_path / f"{name}.key")
        )
        cluster.apply_text(SPEC.format(name=name, host=host), "--wait")

    def curl(host: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "curl", "-sS", "--max-time", "5", "--cacert", str(ca),
                "--resolve", f"{host}:{port}:127.0.0.1",
                "-w", "\\n%{http_code} %{ssl_verify_result}", f"https://{host}:{port}/",
            ],
            capture_output=True,
            text=True,
        )  # fmt: skip

    for host in hosts.values():
        answered = wait_for(lambda h=host: curl(h).returncode == 0, message=f"https {host}")
        assert answered
        result = curl(host)
        assert result.stdout.splitlines()[-1] == "200 0", result
    assert served_serial(port, "one.test", ca) == 1
    assert served_serial(port, "two.test", ca) == 2
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        assert served_serial(port, "two.test", ca, version) == 2
    with pytest.raises(ssl.SSLError):
        served_serial(port, "unknown.test", ca)

    # an open keep-alive connection survives a certificate change; new ones get the new one
    context = ssl.create_default_context(cafile=str(ca))
    kept = http.client.HTTPSConnection("one.test", port, context=context, timeout=5)
    kept.sock = context.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="one.test"
    )
    kept.request("GET", "/", headers={"Host": "one.test"})
    first = kept.getresponse()
    first.read()
    assert first.status == 200
    cert, key = authority.issue("one.test", 11)
    (tmp_path / "one.crt").write_bytes(cert)
    (tmp_path / "one.key").write_bytes(key)
    changed = cluster.shoal("secret", "create", "one-key", "--from-file", str(tmp_path / "one.key"))
    assert "route certificate updated" in changed.stdout
    cluster.shoal("secret", "create", "one-cert", "--from-file", str(tmp_path / "one.crt"))
    wait_for(lambda: served_serial(port, "one.test", ca) == 11, message="the new certificate")
    kept.request("GET", "/", headers={"Host": "one.test"})
    again = kept.getresponse()
    again.read()
    assert again.status == 200
    kept.close()
    [app] = [a for a in cluster.get_json("apps") if a["name"] == "one"]
    assert app["revision"] == 1  # a certificate change restarts nothing
