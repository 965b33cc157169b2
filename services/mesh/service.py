"""The mesh's I/O shell: one per node, east-west traffic between the cluster's containers.

Inputs (retained): ``APPS`` (names, ports, allow rules), ``HEALTH`` (which replicas are
ready), ``NODE_REPLICAS`` (every port's endpoint). It keeps, on its node: one Docker
network per namespace (created ahead of the agent's containers), one VIP per app on that
network's bridge, a relay per ``VIP:port`` and a DNS server on each gateway. The routing
table is rebuilt on every change (a pure function, ``table.build_table``); networks,
addresses and listeners are converged by one reconcile (``core.runner.Reconciler``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from core.channels import APPS, HEALTH, NODE_REPLICAS
from core.config import ServiceConfig
from core.keys import AppKey
from core.mesh import DEFAULT_POOL, DOMAIN, NodeNetwork, may_reach, vip_range
from core.runner import Reconciler
from core.service import Service
from core.state import AppHealth, AppState, NodeReplicas
from core.view import View
from services.mesh import host
from services.mesh.relay import (
    Chooser,
    DnsServer,
    Relay,
    RelayCounters,
    start_dns,
    upstream_servers,
)
from services.mesh.table import (
    Backends,
    Listener,
    build_table,
    lookup,
    plan_listeners,
    plan_vips,
    source_namespace,
)

NODE = "node"  # the reconciler's one key: everything this mesh keeps on its node


class MeshService(Service):
    name = "mesh"

    apps: View[AppKey, AppState]
    health: View[AppKey, AppHealth]
    reports: View[str, NodeReplicas]

    def __init__(
        self,
        config: ServiceConfig,
        *,
        node: str,
        docker: str = "unix:///var/run/docker.sock",
        pool: str = DEFAULT_POOL,
        resync: float = 10.0,
    ) -> None:
        super().__init__(config)
        self.node = node
        self.networks_api = host.Networks(docker, config.prefix, node, pool)
        self.networks: dict[str, NodeNetwork] = {}
        self.vips: dict[AppKey, ipaddress.IPv4Address] = {}
        self.table: dict[AppKey, Backends] = {}
        self.relays: dict[tuple[ipaddress.IPv4Address, int], tuple[Listener, Relay]] = {}
        self.dns: dict[str, tuple[ipaddress.IPv4Address, DnsServer]] = {}
        self.rotation: dict[tuple[AppKey, str], int] = {}
        self.counters = RelayCounters()
        self.upstream = [s for s in upstream_servers() if s]
        self.runner: Reconciler[str] = Reconciler(
            "mesh", self.reconcile, keys=lambda: [NODE], resync=resync
        )

    async def setup(self) -> None:
        self.apps = await self.bus.view(APPS, on_change=self._changed)
        self.health = await self.bus.view(HEALTH, on_change=self._changed)
        self.reports = await self.bus.view(NODE_REPLICAS, on_change=self._changed)

    def _changed(self, _key: object, _value: object) -> None:
        self.table = build_table(self.apps, self.health, self.reports.values())
        self.runner.mark(NODE)

    async def main(self) -> None:
        await self.bus.sync()
        self.table = build_table(self.apps, self.health, self.reports.values())
        self.runner.mark(NODE)
        await self.runner.run()

    async def on_shutdown(self) -> None:
        await self._close_listeners()
        await self.networks_api.close()

    async def _close_listeners(self) -> None:
        for _, relay in self.relays.values():
            await relay.stop()
        self.relays.clear()
        for _, server in self.dns.values():
            server.close()
        self.dns.clear()

    # -- the data path's decisions -------------------------------------------------------

    def resolve(self, qname: str, querier: str) -> list[ipaddress.IPv4Address] | None:
        return lookup(qname, querier, self.apps, self.vips, DOMAIN)

    def chooser(self, listener: Listener) -> Chooser:
        def choose(source: str) -> Sequence[str] | None:
            ns = source_namespace(source, self.networks.values())
            backends = self.table.get(listener.app)
            if ns is None or backends is None or not may_reach(ns, backends.spec):
                return None
            endpoints = backends.endpoints.get(listener.port_name, ())
            if not endpoints:
                return ()
            key = (listener.app, listener.port_name)
            start = self.rotation.get(key, 0) % len(endpoints)
            self.rotation[key] = start + 1
            return endpoints[start:] + endpoints[:start]

        return choose

    # -- converging the node ---------------------------------------------------------------

    async def reconcile(self, _key: str) -> float | None:
        namespaces = {k.namespace for k in self.apps}
        self.networks = await self.networks_api.by_namespace()
        for ns in sorted(namespaces - set(self.networks)):
            self.networks[ns] = await self.networks_api.ensure(ns)
            self.log.info("namespace network created", namespace=ns, network=self.networks[ns].name)
        for ns in sorted(set(self.networks) - namespaces):
            if await self.networks_api.remove(self.networks[ns]):
                self.log.info("namespace network removed", namespace=ns)
                dns = self.dns.pop(ns, None)
                if dns is not None:
                    dns[1].close()
                del self.networks[ns]
        self.vips = plan_vips(self.apps, self.networks, self.vips)
        await self._converge_addresses()
        await self._converge_dns()
        await self._converge_relays()
        return None

    async def _converge_addresses(self) -> None:
        for ns, network in self.networks.items():
            wanted = {ip for key, ip in self.vips.items() if key.namespace == ns}
            present = await host.bridge_addresses(network.bridge)
            in_range = set(vip_range(network.subnet))
            for ip in sorted(wanted - present):
                await host.add_address(network.bridge, ip)
            for ip in sorted((present & in_range) - wanted):
                await self._drop_relays(ip)
                await host.remove_address(network.bridge, ip)

    async def _converge_dns(self) -> None:
        for ns in list(self.dns):
            gateway, server = self.dns[ns]
            network = self.networks.get(ns)
            if network is None or network.gateway != gateway:
                server.close()
                del self.dns[ns]
        for ns, network in self.networks.items():
            if ns not in self.dns:
                server = await start_dns(network.gateway, ns, self.resolve, self.upstream)
                self.dns[ns] = (network.gateway, server)

    async def _drop_relays(self, ip: ipaddress.IPv4Address) -> None:
        for where in [w for w in self.relays if w[0] == ip]:
            await self.relays.pop(where)[1].stop()

    async def _converge_relays(self) -> None:
        wanted = plan_listeners(self.apps, self.vips)
        for where in list(self.relays):
            listener, relay = self.relays[where]
            if wanted.get(where) != listener:
                await relay.stop()
                del self.relays[where]
        failed: list[str] = []
        for where, listener in wanted.items():
            if where in self.relays:
                continue
            relay = Relay(listener.vip, listener.port, self.chooser(listener), self.counters)
            try:
                await relay.start()
            except OSError as err:
                failed.append(f"{listener.vip}:{listener.port} ({listener.app}): {err}")
                continue
            self.relays[where] = (listener, relay)
        if failed:
            self.log.warning("relays not listening yet", failed=failed)
            self.runner.mark_later(NODE, 1.0)
