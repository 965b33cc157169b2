"""The mesh's host side: node networks on the Docker engine, VIPs on their bridges.

Docker errors become ``RuntimeFailure`` (retried by the reconciler with back-off); an
address that cannot be added is the same. Networks are found and created by the labels
of ``core.mesh`` (prefix, node, namespace), never by name patterns.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from typing import Any

import aiodocker
import aiohttp

from core.errors import EngineUnavailable, RuntimeFailure
from core.mesh import NodeNetwork, create_body, network_filters, parse_network, subnet_candidates


def _failure(err: BaseException, what: str) -> RuntimeFailure:
    if isinstance(err, aiodocker.DockerError):
        return RuntimeFailure(f"{what}: {err.message} (HTTP {err.status})")
    return EngineUnavailable(f"{what}: Docker engine unreachable: {err}")


class Networks:
    """This node's namespace networks on one engine."""

    def __init__(self, docker_url: str, prefix: str, node: str, pool: str) -> None:
        self.url = docker_url
        self.prefix = prefix
        self.node = node
        self.pool = pool
        self._docker: aiodocker.Docker | None = None

    @property
    def docker(self) -> aiodocker.Docker:
        if self._docker is None:
            if self.url.startswith("unix://"):
                connector = aiohttp.UnixConnector(self.url.removeprefix("unix://"))
                self._docker = aiodocker.Docker(url="unix://localhost", connector=connector)
            else:
                self._docker = aiodocker.Docker(url=self.url)
        return self._docker

    async def close(self) -> None:
        if self._docker is not None:
            docker, self._docker = self._docker, None
            await docker.close()
            await docker.connector.close()

    async def _json(self, what: str, path: str, **kw: Any) -> Any:
        try:
            return await self.docker._query_json(path, **kw)
        except (TimeoutError, aiodocker.DockerError, aiohttp.ClientError, OSError) as err:
            raise _failure(err, what) from err

    async def by_namespace(self) -> dict[str, NodeNetwork]:
        """namespace -> network, for every mesh network of this node."""
        filters = json.dumps({"label": network_filters(self.prefix, self.node)})
        items = await self._json("list networks", "networks", params={"filters": filters})
        out: dict[str, NodeNetwork] = {}
        for item in items:
            network = parse_network(item)
            if network is not None:
                out[network.namespace] = network
        return out

    async def ensure(self, namespace: str) -> NodeNetwork:
        """The namespace's network on this node, created on a free /24 if missing."""
        existing = (await self.by_namespace()).get(namespace)
        if existing is not None:
            return existing
        taken = await self._subnets_in_use()
        for subnet in subnet_candidates(self.pool, f"{self.prefix}/{self.node}/{namespace}"):
            if any(subnet.overlaps(t) for t in taken):
                continue
            body = create_body(self.prefix, self.node, namespace, subnet)
            try:
                await self.docker._query_json("networks/create", method="POST", data=body)
            except aiodocker.DockerError as err:
                if err.status == 409:  # created meanwhile (by the agent, or a restart)
                    break
                if err.status == 403 and "overlap" in str(err.message).lower():
                    continue  # another network took this /24 meanwhile
                raise _failure(err, "create network") from err
            except (TimeoutError, aiohttp.ClientError, OSError) as err:
                raise _failure(err, "create network") from err
            break
        else:
            raise RuntimeFailure(f"no free /24 left in the mesh pool {self.pool}")
        network = (await self.by_namespace()).get(namespace)
        if network is None:
            raise RuntimeFailure(f"network of namespace {namespace} vanished after creation")
        return network

    async def remove(self, network: NodeNetwork) -> bool:
        """Remove an unused network; False when containers still use it (or it is gone)."""
        try:
            await self.docker._query_json(f"networks/{network.name}", method="DELETE")
        except aiodocker.DockerError as err:
            if err.status in (403, 404, 409):
                return False
            raise _failure(err, "remove network") from err
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            raise _failure(err, "remove network") from err
        return True

    async def _subnets_in_use(self) -> list[ipaddress.IPv4Network]:
        items = await self._json("list networks", "networks")
        out: list[ipaddress.IPv4Network] = []
        for item in items:
            for config in (item.get("IPAM") or {}).get("Config") or []:
                try:
                    out.append(ipaddress.IPv4Network(config.get("Subnet", ""), strict=False))
                except ValueError:
                    continue
        return out


async def _ip(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "ip", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeFailure(f"ip {' '.join(args)}: {err.decode(errors='replace').strip()}")
    return out.decode()


async def bridge_addresses(bridge: str) -> set[ipaddress.IPv4Address]:
    """The IPv4 addresses on a bridge (empty while the bridge does not exist)."""
    try:
        text = await _ip("-4", "-o", "addr", "show", "dev", bridge)
    except RuntimeFailure:
        return set()
    out: set[ipaddress.IPv4Address] = set()
    for line in text.splitlines():
        parts = line.split()
        if "inet" in parts:
            out.add(ipaddress.IPv4Interface(parts[parts.index("inet") + 1]).ip)
    return out


async def add_address(bridge: str, ip: ipaddress.IPv4Address) -> None:
    await _ip("addr", "replace", f"{ip}/32", "dev", bridge)


async def remove_address(bridge: str, ip: ipaddress.IPv4Address) -> None:
    try:
        await _ip("addr", "del", f"{ip}/32", "dev", bridge)
    except RuntimeFailure as err:
        if "Cannot assign" not in str(err) and "Cannot find" not in str(err):
            raise
