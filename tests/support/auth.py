"""A cluster's identities for tests, and mosquitto enforcing them (authentication on, no
anonymous clients, the generated ACL), optionally over TLS only."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from core.acl import acl_text, password_file
from core.identities import AuthFile, Identity, dump_auth, hash_password, new_password
from tests.support.net import free_port, wait_port
from tests.support.procs import Broker, ProcGroup
from tests.support.tls import Pki, TlsBroker

SERVICES = ("controller", "scheduler", "health", "balancer", "scaler", "dashboard")


@dataclass
class Identities:
    """The identities file and, per identity, its credentials file and password."""

    prefix: str
    file: Path
    auth: AuthFile
    credentials: dict[str, Path] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)

    def url(self, broker: Broker, user: str) -> str:
        """``broker``'s URL with ``user``'s password in it (for in-process test clients)."""
        scheme, rest = broker.url.split("://", 1)
        return f"{scheme}://{user}:{self.passwords[user]}@{rest}"


def make_identities(
    directory: Path,
    prefix: str,
    *,
    nodes: tuple[str, ...] = ("node-1",),
    users: dict[str, dict[str, list[str]]] | None = None,
    admins: tuple[str, ...] = ("ops",),
    bridges: tuple[str, ...] = (),
) -> Identities:
    """Every service, an agent per node, ``users`` with their grants, ``admins``, and a
    ``bridge-<region>`` identity per region in ``bridges``."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted: dict[str, dict[str, object]] = {s: {"role": s} for s in SERVICES}
    wanted |= {f"agent-{n}": {"role": "agent", "node": n} for n in nodes}
    wanted |= {u: {"role": "user", "grants": g} for u, g in (users or {}).items()}
    wanted |= {a: {"role": "user", "admin": True} for a in admins}
    wanted |= {f"bridge-{r}": {"role": "bridge"} for r in bridges}
    passwords = {name: new_password() for name in wanted}
    auth = AuthFile(
        prefix=prefix,
        identities={
            name: Identity.model_validate({**f, "password_hash": hash_password(passwords[name])})
            for name, f in wanted.items()
        },
    )
    file = directory / "identities.yaml"
    file.write_text(dump_auth(auth))
    credentials = {}
    for name, password in passwords.items():
        credentials[name] = directory / f"{name}.credentials"
        credentials[name].write_text(f"{name}:{password}\n")
    return Identities(prefix, file, auth, credentials, passwords)


def start_auth_mosquitto(
    group: ProcGroup, identities: Identities, pki: Pki | None = None
) -> Broker:
    """mosquitto on a free loopback port: no anonymous clients, the generated password file
    and ACL; with ``pki``, a TLS-only listener (the test CA, no client certificate)."""
    port = free_port()
    directory = identities.file.parent
    (directory / "passwd").write_text(password_file(identities.auth))
    (directory / "acl").write_text(acl_text(identities.auth))
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous false",
        f"password_file {directory / 'passwd'}",
        f"acl_file {directory / 'acl'}",
        "persistence false",
        "set_tcp_nodelay true",
    ]
    if pki is not None:
        lines += [
            f"cafile {pki.ca}",
            f"certfile {pki.server_cert}",
            f"keyfile {pki.server_key}",
            "tls_version tlsv1.2",
        ]
    if os.geteuid() == 0:  # it would drop to the mosquitto user before reading the files
        lines.append("user root")
    conf = group.workdir / f"mosquitto-auth-{port}.conf"
    conf.write_text("\n".join(lines) + "\n")
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = group.spawn(f"mosquitto-auth-{port}", [exe, "-c", str(conf)])
    wait_port("127.0.0.1", port, timeout=15)
    if pki is not None:
        return TlsBroker("mosquitto", "127.0.0.1", port, proc, pki=pki)
    return Broker("mosquitto", "127.0.0.1", port, proc)
