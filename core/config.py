"""Configuration shared by every service: broker address, topic prefix, identity, logging."""

from __future__ import annotations

import os
import socket
import ssl
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from core.errors import ShoalError

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"


class ConfigError(ShoalError):
    """A configuration value is invalid."""


@dataclass(frozen=True, slots=True)
class BrokerURL:
    """``mqtt://[user:password@]host[:port]`` or
    ``mqtts://...[?ca=FILE][&cert=FILE&key=FILE][&insecure=1]``.

    ``ca``: the CA bundle that signed the broker's certificate (default: the system's);
    ``cert``/``key``: this client's certificate (PEM; ``key`` defaults to ``cert``) for a
    broker that requires one; ``insecure=1`` skips verifying the broker (tests only: the
    bus logs a warning at every connect)."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ConfigError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
        tls = parts.scheme in ("mqtts", "ssl")
        if not parts.hostname:
            raise ConfigError(f"broker URL {url!r} has no host")
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError as err:
            raise ConfigError(f"broker URL {url!r}: {err}") from err
        query = parse_qs(parts.query)
        unknown = set(query) - {"ca", "cert", "key", "insecure"}
        if unknown:
            raise ConfigError(
                f"broker URL {url!r}: unknown option {', '.join(sorted(unknown))} "
                "(known: ca, cert, key, insecure)"
            )
        if not tls and set(query) & {"ca", "cert", "key", "insecure"}:
            raise ConfigError(f"broker URL {url!r}: ca/cert/key/insecure need mqtts://")
        cert = query.get("cert", [None])[0]
        return cls(
            host=parts.hostname,
            port=port,
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            ca_file=query.get("ca", [None])[0],
            cert_file=cert,
            key_file=query.get("key", [cert])[0],
            insecure=query.get("insecure", ["0"])[0] in ("1", "true", "yes"),
        )

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file:
                context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(f"broker TLS files: {err}") from err
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def __str__(self) -> str:  # never print the password
        auth = f"{self.username}:***@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{auth}{self.host}:{self.port}"


def read_credentials(path: str) -> tuple[str, str]:
    """``USERNAME:PASSWORD`` from the first non-blank line of a credentials file (what
    ``shoal auth add-...`` writes), so no password goes on a command line."""
    file = Path(path).expanduser()
    try:
        lines = [line.strip() for line in file.read_text().splitlines() if line.strip()]
    except OSError as err:
        raise ConfigError(f"credentials file {file}: {err.strerror}") from err
    if not lines or ":" not in lines[0]:
        raise ConfigError(f"credentials file {file}: expected one line USERNAME:PASSWORD")
    username, _, password = lines[0].partition(":")
    return username, password


def with_credentials(url: BrokerURL, credentials: str | None) -> BrokerURL:
    """``url`` with the user name and password of a credentials file (None: as it is)."""
    if credentials is None:
        return url
    username, password = read_credentials(credentials)
    return replace(url, username=username, password=password)


class InProcessBroker(Protocol):
    """A broker that lives in this process and makes its own bus clients
    (``core.memory.MemoryBroker``): ``bus(topics, client_id=..., ...)`` returns a ``Bus``."""

    def bus(self, topics: Any, **kwargs: Any) -> Any: ...


def default_instance() -> str:
    return f"{socket.gethostname().split('.')[0]}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    #: where the bus connects: a URL, or a broker in this process (unit tests)
    broker: BrokerURL | InProcessBroker = field(
        default_factory=lambda: BrokerURL.parse(DEFAULT_BROKER)
    )
    prefix: str = "shoal"
    instance: str = field(default_factory=default_instance)
    log_level: str = "info"
    log_format: Literal["console", "json"] = "console"
    #: where ``/metrics`` listens: (host, port), port 0 for any free one; None: nowhere
    metrics: tuple[str, int] | None = None
