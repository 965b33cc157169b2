"""The probes themselves (I/O): an HTTP GET or a TCP connect against an endpoint.

Each returns ``(success, reason)`` and never raises for a failing replica. HTTP probes are
``http_probe.http_probe`` (a bare protocol on a fresh connection, not an HTTP client).
"""

from __future__ import annotations

import asyncio
import functools

from core.spec import Probe
from services.health.http_probe import http_probe, os_reason


@functools.lru_cache(maxsize=65536)
def split_endpoint(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)


class Checker:
    """Runs probes: each one a fresh connection, as a new client would see the replica."""

    def __init__(self, user_agent: str) -> None:
        self.user_agent = user_agent

    async def __aenter__(self) -> Checker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def check(self, probe: Probe, endpoint: str) -> tuple[bool, str]:
        try:
            if probe.kind == "http":
                return await self.http(endpoint, probe.http or "/", probe.timeout)
            if probe.kind == "tcp":
                return await self.tcp(endpoint, probe.timeout)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            return False, f"{type(err).__name__}: {err}"
        return False, f"{probe.kind} probes are run by the agent"

    async def http(self, endpoint: str, path: str, timeout: float) -> tuple[bool, str]:
        host, port = split_endpoint(endpoint)
        return await http_probe(
            host, port, path, timeout, host_header=endpoint, user_agent=self.user_agent
        )

    async def tcp(self, endpoint: str, timeout: float) -> tuple[bool, str]:
        host, port = split_endpoint(endpoint)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, _ = await loop.create_connection(asyncio.Protocol, host, port)
        except TimeoutError:
            return False, f"TCP connect to {endpoint}: no answer within {timeout:g}s"
        except OSError as err:
            return False, f"TCP connect to {endpoint}: {os_reason(err)}"
        transport.close()
        return True, ""
