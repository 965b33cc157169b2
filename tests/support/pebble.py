"""Debian's ``pebble`` ACME test CA, validating for real on loopback: its HTTP-01
validations go to the balancer's plain port, and names resolve through
``pebble-challtestsrv``'s mock DNS, which answers 127.0.0.1 for every A query (no AAAA),
so no traffic leaves 127.0.0.0/8. Nonces are never rejected on purpose and validation does
not sleep (``PEBBLE_WFE_NONCEREJECT=0``, ``PEBBLE_VA_NOSLEEP=1``); nothing is
``PEBBLE_VA_ALWAYS_VALID``."""

from __future__ import annotations

import json
import ssl
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import free_port, wait_port
from tests.support.procs import ProcGroup
from tests.support.tls import make_pki


@dataclass(frozen=True)
class Pebble:
    directory: str  # the ACME directory URL
    ca_file: Path  # the CA of pebble's own HTTPS (``--acme-ca-file``)
    management: str  # https://127.0.0.1:port of the management API
    dns_management: str  # http://127.0.0.1:port of the mock DNS's management API

    def issuing_root(self) -> bytes:
        """The root pebble signs certificates with (PEM; made anew at each start)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(f"{self.management}/roots/0", context=context) as r:
            return bytes(r.read())

    def resolve(self, host: str, address: str) -> None:
        """Make the mock DNS answer ``address`` for ``host`` (A record)."""
        body = json.dumps({"host": host, "addresses": [address]}).encode()
        request = urllib.request.Request(f"{self.dns_management}/add-a", data=body)
        with urllib.request.urlopen(request, timeout=5) as r:
            r.read()


def start_pebble(group: ProcGroup, directory: Path, http_port: int) -> Pebble:
    """pebble (validating HTTP-01 on ``http_port``) and its mock DNS, in ``group``."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = make_pki(directory)
    dns_port, dns_management, acme_port, management_port, tls_port = (free_port() for _ in range(5))
    group.spawn(
        "pebble-dns",
        [
            "pebble-challtestsrv",
            "-dns01", f"127.0.0.1:{dns_port}",
            "-http01", "", "-https01", "", "-tlsalpn01", "",
            "-management", f"127.0.0.1:{dns_management}",
            "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
        ],
    )  # fmt: skip
    config = directory / "pebble.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{acme_port}",
                    "managementListenAddress": f"127.0.0.1:{management_port}",
                    "certificate": str(pki.server_cert),
                    "privateKey": str(pki.server_key),
                    "httpPort": http_port,
                    "tlsPort": tls_port,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            }
        )
    )
    group.spawn(
        "pebble",
        ["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{dns_port}"],
        env={"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"},
    )
    wait_port("127.0.0.1", dns_management, timeout=20)
    wait_port("127.0.0.1", acme_port, timeout=20)
    wait_port("127.0.0.1", management_port, timeout=20)
    return Pebble(
        directory=f"https://127.0.0.1:{acme_port}/dir",
        ca_file=pki.ca,
        management=f"https://127.0.0.1:{management_port}",
        dns_management=f"http://127.0.0.1:{dns_management}",
    )
