"""Certificates for TLS tests (made with the ``openssl`` command), and mosquitto with a TLS
listener: a CA, a broker certificate for 127.0.0.1 and localhost, a client certificate the
CA signed, and a second, unrelated CA for "the wrong CA" cases."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import free_port, wait_port
from tests.support.procs import Broker, ProcGroup


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(cwd: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN=Shoal test {name}", cwd=cwd,
    )  # fmt: skip


def _signed(cwd: Path, name: str, cn: str, ext: str) -> None:
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=cwd,
    )  # fmt: skip
    (cwd / f"{name}.ext").write_text(ext)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=cwd,
    )  # fmt: skip


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    _ca(directory, "ca")
    _ca(directory, "other-ca")
    _signed(
        directory,
        "server",
        "broker",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    _signed(directory, "client", "agent-n1", "extendedKeyUsage=clientAuth\n")
    return Pki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.pem",
    )


@dataclass
class TlsBroker(Broker):
    """mosquitto with only a TLS listener; ``url`` trusts the test CA."""

    pki: Pki | None = None
    client_certificate: bool = False

    @property
    def url(self) -> str:
        assert self.pki is not None
        url = f"mqtts://{self.host}:{self.port}?ca={self.pki.ca}"
        if self.client_certificate:
            url += f"&cert={self.pki.client_cert}&key={self.pki.client_key}"
        return url

    def url_with(self, **query: str) -> str:
        options = "&".join(f"{k}={v}" for k, v in query.items())
        return f"mqtts://{self.host}:{self.port}" + (f"?{options}" if options else "")


def start_tls_mosquitto(
    group: ProcGroup, pki: Pki, *, require_certificate: bool = False
) -> TlsBroker:
    port = free_port()
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    conf = group.workdir / f"mosquitto-tls-{port}.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "set_tcp_nodelay true\n"
        f"cafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
        "tls_version tlsv1.2\n"
        f"require_certificate {'true' if require_certificate else 'false'}\n"
        # started as root it would drop to the mosquitto user before reading the key files
        # (which are in the test's private temp dir)
        + ("user root\n" if os.geteuid() == 0 else "")
    )
    proc = group.spawn(f"mosquitto-tls-{port}", [exe, "-c", str(conf)])
    wait_port("127.0.0.1", port, timeout=15)
    return TlsBroker(
        "mosquitto", "127.0.0.1", port, proc, pki=pki, client_certificate=require_certificate
    )
