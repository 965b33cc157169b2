"""Configuration shared by every service: broker address, topic prefix, identity, logging."""

from __future__ import annotations

import os
import socket
import ssl
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from core.errors import ShoalError

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"


class ConfigError(ShoalError):
    """A configuration value is invalid."""


@dataclass(frozen=True, slots=True)
class BrokerURL:
    """``mqtt://[user:password@]host[:port]`` or ``mqtts://...[?ca=FILE&insecure=1]``."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
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
        return cls(
            host=parts.hostname,
            port=port,
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            ca_file=query.get("ca", [None])[0],
            insecure=query.get("insecure", ["0"])[0] in ("1", "true", "yes"),
        )

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def __str__(self) -> str:  # never print the password
        auth = f"{self.username}:***@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{auth}{self.host}:{self.port}"


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
