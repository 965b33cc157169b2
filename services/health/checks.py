"""The probes themselves (I/O): an HTTP GET or a TCP connect against an endpoint.

Each returns ``(success, reason)`` and never raises for a failing replica.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from core.spec import Probe
from services.health.logic import http_success


def split_endpoint(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)


class Checker:
    """Runs probes; one shared HTTP client (no keep-alive: each probe is a fresh connect,
    as a new client would see the replica)."""

    def __init__(self, user_agent: str) -> None:
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Checker:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True),
            headers={"User-Agent": self.user_agent},
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

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
        assert self._session is not None, "use Checker as an async context manager"
        url = f"http://{endpoint}{path}"
        try:
            async with self._session.get(
                url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                await resp.read()
                if http_success(resp.status):
                    return True, ""
                return False, f"HTTP {resp.status} from GET {path}"
        except TimeoutError:
            return False, f"GET {path}: no answer within {timeout:g}s"
        except aiohttp.ClientError as err:
            return False, f"GET {path}: {type(err).__name__}: {err}"

    async def tcp(self, endpoint: str, timeout: float) -> tuple[bool, str]:
        host, port = split_endpoint(endpoint)
        try:
            async with asyncio.timeout(timeout):
                _, writer = await asyncio.open_connection(host, port)
        except TimeoutError:
            return False, f"TCP connect to {endpoint}: no answer within {timeout:g}s"
        except OSError as err:
            return False, f"TCP connect to {endpoint}: {err.strerror or err}"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True, ""
